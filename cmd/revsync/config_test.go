package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/connectors/postgres"
)

func TestShippedConfigLoads(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(filepath.Join("..", "..", defaultConfigPath), func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, 20, *cfg.AMQP.Prefetch)
	require.Equal(t, "revsync.work", cfg.AMQP.Queue)
	require.Len(t, cfg.Integrations, 1)

	pool, err := postgres.NewPool(t.Context(), poolConfig(cfg, true))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	catalog, err := buildCatalog(cfg, pool, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = catalog.Close() })
	require.Len(t, catalog.Routes(), 2)
}

func TestEnvironmentOverridesURLs(t *testing.T) {
	t.Parallel()
	env := map[string]string{"AMQP_URL": "amqp://u:p@broker:5672/", "DATABASE_URL": "postgres://db/app"}
	cfg, err := loadConfig(filepath.Join("..", "..", defaultConfigPath), func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, env["AMQP_URL"], cfg.AMQP.URL)
	require.Equal(t, env["DATABASE_URL"], cfg.Database.URL)
}

func TestConfigErrorsNameFileAndKey(t *testing.T) {
	t.Parallel()
	const jobsYAML = `
jobs:
  - name: rest_export
    type: export
    steps:
      - {name: export, reader: entity_by_id, processor: mapping, writer: http}
`
	const integration = `
integrations:
  - name: crm
    transport: {base_url: "http://127.0.0.1:1"}
    connectors:
      - name: customer
        export_job: %s
        entity: {table: public.customers, key: [{column: id, type: integer}]}
        remote: {collection: /c, item: "/c/{id}"}
`
	tests := []struct {
		name, config string
		want         []string
	}{
		{"prefetch zero is refused", "amqp: {prefetch: 0}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{"revsync.yaml", `"amqp.prefetch"`, "between 1 and 65535", "unlimited"}},
		{"prefetch over 16 bits", "amqp: {prefetch: 65536}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"amqp.prefetch"`, "65535"}},
		{"reserved queue name", "amqp: {queue: amq.work}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"amqp.queue"`, "reserved"}},
		{"dead-letter queue is the work queue", "amqp: {queue: q, dead_letter_queue: q}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"amqp.dead_letter_queue"`}},
		{"negative message timeout", "worker: {message_timeout: -5s}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"worker.message_timeout"`}},
		{"too few database connections", "worker: {concurrency: 8}\ndatabase: {max_conns: 8}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"database.max_conns"`, "twice"}},
		{"unknown top-level key", "amqp: {prefetsh: 3}\n", []string{"revsync.yaml", "prefetsh"}},
		{"unknown job", "jobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "nope", 1),
			[]string{"revsync.yaml", `integration "crm" connector "customer"`, `"export_job"`, `"nope"`}},
		{"unknown connector section", "jobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1) + "        mapin: {}\n",
			[]string{`connector "customer"`, `"mapin"`}},
		{"bad log level", "log: {level: loud}\njobs: [jobs.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{`"log.level"`, "loud"}},
		{"missing job file", "jobs: [missing.yaml]\n" + strings.Replace(integration, "%s", "rest_export", 1),
			[]string{"missing.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "jobs.yaml"), []byte(jobsYAML), 0o644))
			path := filepath.Join(dir, "revsync.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tt.config), 0o644))
			var stdout, stderr strings.Builder
			err := run(t.Context(), []string{"config", "validate", "--config", path}, &stdout, &stderr)
			require.Error(t, err)
			require.Equal(t, exitConfig, exitCode(err), "error: %v", err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"frobnicate"}, {"config"}, {"worker", "--nope"}, {"publish", "--config", "x", "extra"}} {
		var stdout, stderr strings.Builder
		err := run(t.Context(), args, &stdout, &stderr)
		require.Error(t, err, "args %v", args)
		require.Equal(t, exitUsage, exitCode(err), "args %v: %v", args, err)
	}
}
