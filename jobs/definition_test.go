package jobs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/revsync/revsync/jobs"
)

func registry() *jobs.Registry {
	var reg jobs.Registry
	reg.RegisterReader("entity_by_id", func(*jobs.Binding) (jobs.Reader, error) { return items(0), nil })
	reg.RegisterProcessor("mapping", func(b *jobs.Binding) (jobs.Processor, error) {
		var cfg struct {
			Fields map[string]string `yaml:"fields"`
		}
		if _, err := b.Section("mapping", &cfg); err != nil {
			return nil, err
		}
		return nil, nil
	})
	reg.RegisterWriter("http", func(*jobs.Binding) (jobs.Writer, error) { return nil, nil })
	return &reg
}

func TestLoadJobFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "jobs.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
jobs:
  - name: rest_export
    title: Export
    type: export
    steps:
      - {name: read, reader: entity_by_id, writer: http}
      - {name: export, reader: entity_by_id, processor: mapping, writer: http, parameters: {batch_size: 7}}
`), 0o644))
	got, err := jobs.LoadJobFiles(registry(), file)
	require.NoError(t, err)
	require.Len(t, got, 1)
	j := got[0]
	require.Equal(t, "rest_export", j.Name)
	require.Equal(t, file, j.File())
	require.Equal(t, []string{"read", "export"}, []string{j.Steps[0].Name, j.Steps[1].Name}, "steps keep their order")
	require.Equal(t, jobs.DefaultBatchSize, j.Steps[0].Parameters.BatchSize)
	require.Equal(t, 7, j.Steps[1].Parameters.BatchSize)
}

func TestJobDefinitionErrorsNameFileJobStepAndKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown reader", `jobs: [{name: j, type: export, steps: [{name: s, reader: nope, writer: http}]}]`,
			[]string{`job "j" step "s"`, `key "reader"`, `unknown reader service "nope"`, "entity_by_id"}},
		{"unknown writer", `jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: smtp}]}]`,
			[]string{`job "j" step "s"`, `key "writer"`, `"smtp"`}},
		{"missing writer", `jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id}]}]`,
			[]string{`job "j" step "s"`, `missing key "writer"`}},
		{"missing name", `jobs: [{type: export, steps: [{name: s, reader: entity_by_id, writer: http}]}]`,
			[]string{`jobs[0]`, `missing key "name"`}},
		{"missing type", `jobs: [{name: j, steps: [{name: s, reader: entity_by_id, writer: http}]}]`,
			[]string{`job "j"`, `missing key "type"`}},
		{"unknown type", `jobs: [{name: j, type: import, steps: [{name: s, reader: entity_by_id, writer: http}]}]`,
			[]string{`key "type"`, `"import"`}},
		{"no steps", `jobs: [{name: j, type: export}]`, []string{`job "j"`, `missing key "steps"`}},
		{"duplicate job", `jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http}]}, {name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http}]}]`,
			[]string{`job "j"`, "duplicate job name"}},
		{"duplicate step", `jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http}, {name: s, reader: entity_by_id, writer: http}]}]`,
			[]string{`step "s"`, "duplicate step name"}},
		{"negative batch", `jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http, parameters: {batch_size: -1}}]}]`,
			[]string{`key "parameters.batch_size"`, "-1"}},
		{"unknown key", `jobs: [{name: j, type: export, stepz: []}]`, []string{"stepz"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "jobs.yaml")
			require.NoError(t, os.WriteFile(file, []byte(tt.yaml), 0o644))
			_, err := jobs.LoadJobFiles(registry(), file)
			require.Error(t, err)
			var de *jobs.DefinitionError
			require.ErrorAs(t, err, &de)
			require.Contains(t, err.Error(), file, "the error names the file")
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestCatalogResolves(t *testing.T) {
	t.Parallel()
	jobList, err := jobs.ParseJobs("jobs.yaml", []byte(`jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, processor: mapping, writer: http}]}]`))
	require.NoError(t, err)
	var integrations []jobs.Integration
	require.NoError(t, yaml.Unmarshal([]byte(`
- name: crm
  connectors:
    - name: customer
      export_job: j
      entity: {table: nw.customers, key: [{column: customer_id, type: text}]}
      mapping: {fields: {id: customer_id}}
- name: erp
  enabled: false
  connectors:
    - name: customer
      export_job: j
      entity: {table: nw.customers, key: [{column: customer_id, type: text}]}
`), &integrations))
	cat, err := jobs.NewCatalog("revsync.yaml", registry(), jobList, integrations)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cat.Close() })

	r, err := cat.Resolve("crm", "customer")
	require.NoError(t, err)
	require.Equal(t, "j", r.Job.Name)
	require.Equal(t, jobs.OnMissingDelete, r.Connector.OnMissing, "on_missing defaults to delete")

	for _, tt := range []struct {
		integration, connector string
		class                  jobs.Class
	}{
		{"nope", "customer", jobs.ClassUnknownRoute},
		{"crm", "nope", jobs.ClassUnknownRoute},
		{"erp", "customer", jobs.ClassIntegrationDisabled},
	} {
		_, err := cat.Resolve(tt.integration, tt.connector)
		require.Equal(t, tt.class, jobs.ClassOf(err), "%s.%s", tt.integration, tt.connector)
	}
}

func TestCatalogRefusesAnUnreadSection(t *testing.T) {
	t.Parallel()
	jobList, err := jobs.ParseJobs("jobs.yaml", []byte(`jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http}]}]`))
	require.NoError(t, err)
	var integrations []jobs.Integration
	require.NoError(t, yaml.Unmarshal([]byte(`
- name: crm
  connectors:
    - name: customer
      export_job: j
      entity: {table: nw.customers, key: [{column: customer_id, type: text}]}
      maping: {fields: {}}
`), &integrations))
	_, err = jobs.NewCatalog("revsync.yaml", registry(), jobList, integrations)
	require.ErrorContains(t, err, `revsync.yaml: integration "crm" connector "customer": unknown key "maping"`)
}

func TestIntegrationErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	jobList, err := jobs.ParseJobs("jobs.yaml", []byte(`jobs: [{name: j, type: export, steps: [{name: s, reader: entity_by_id, writer: http}]}]`))
	require.NoError(t, err)
	for _, tt := range []struct {
		name, connector, want string
	}{
		{"hostile table", `{name: c, export_job: j, entity: {table: "x; DROP TABLE y", key: [{column: id, type: text}]}}`, `key "entity.table"`},
		{"three-part table", `{name: c, export_job: j, entity: {table: a.b.c, key: [{column: id, type: text}]}}`, `key "entity.table"`},
		{"no key", `{name: c, export_job: j, entity: {table: t}}`, `key "entity.key"`},
		{"bad key type", `{name: c, export_job: j, entity: {table: t, key: [{column: id, type: uuid}]}}`, `key "entity.key[0].type"`},
		{"duplicate key column", `{name: c, export_job: j, entity: {table: t, key: [{column: id, type: text}, {column: id, type: text}]}}`, `duplicate column "id"`},
		{"bad column", `{name: c, export_job: j, entity: {table: t, key: [{column: id, type: text}], columns: ["a b"]}}`, `key "entity.columns[0]"`},
		{"bad on_missing", `{name: c, export_job: j, on_missing: ignore, entity: {table: t, key: [{column: id, type: text}]}}`, `key "on_missing"`},
		{"missing export job", `{name: c, entity: {table: t, key: [{column: id, type: text}]}}`, `missing key "export_job"`},
		{"retry without attempts", `{name: c, export_job: j, retry: {schedule: [1s]}, entity: {table: t, key: [{column: id, type: text}]}}`, `key "retry.max_attempts"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var integrations []jobs.Integration
			require.NoError(t, yaml.Unmarshal([]byte("- name: crm\n  connectors: ["+tt.connector+"]\n"), &integrations))
			err := jobs.ValidateIntegrations("revsync.yaml", integrations, jobList)
			require.Error(t, err)
			require.Contains(t, err.Error(), `revsync.yaml: integration "crm" connector "c"`)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}
