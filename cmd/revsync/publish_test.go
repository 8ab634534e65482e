package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

func TestEventFromFlagsUsesTheConnectorKeyTypes(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(filepath.Join("..", "..", defaultConfigPath), func(string) string { return "" })
	require.NoError(t, err)

	body, err := eventFromFlags(cfg, "northwind_crm", "order_line", jobs.OpDelete,
		pairs{"order_id=10248", "product_id=11"}, pairs{"reason=price"})
	require.NoError(t, err)
	ev, err := worker.Decode(body, "m1", 0)
	require.NoError(t, err, "the CLI's event must pass the worker's own checks")
	require.Equal(t, jobs.OpDelete, ev.Op)
	require.Equal(t, "10248", ev.ID["order_id"].(interface{ String() string }).String())
	require.Equal(t, "price", ev.Parameters["reason"])

	for _, tt := range []struct {
		name, integration, connector string
		ids                          pairs
		want                         string
	}{
		{"integer column given text", "northwind_crm", "order_line", pairs{"order_id=abc", "product_id=1"}, `column "order_id" is an integer`},
		{"missing key column", "northwind_crm", "order_line", pairs{"order_id=1"}, `missing identifier column "product_id"`},
		{"unknown column", "northwind_crm", "customer", pairs{"customer_id=A", "x=1"}, `unknown identifier column "x"`},
		{"column given twice", "northwind_crm", "customer", pairs{"customer_id=A", "customer_id=B"}, `"customer_id" given twice`},
		{"unknown connector", "northwind_crm", "nope", pairs{"id=1"}, `no connector "nope"`},
		{"unknown integration", "nope", "customer", pairs{"id=1"}, `no integration "nope"`},
	} {
		_, err := eventFromFlags(cfg, tt.integration, tt.connector, jobs.OpUpsert, tt.ids, nil)
		require.Error(t, err, tt.name)
		require.Equal(t, exitUsage, exitCode(err), tt.name)
		require.Contains(t, err.Error(), tt.want, tt.name)
	}
}

func TestReadEventFileNamesTheBadLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	good := `{"integration":"i","connector":"c","id":{"k":1},"op":"upsert","occurred_at":"2026-12-03T15:00:00Z"}`
	require.NoError(t, os.WriteFile(path, []byte(good+"\n\n"+good+"\n"), 0o644))
	bodies, err := readEventFile(path, 0)
	require.NoError(t, err)
	require.Len(t, bodies, 2)

	require.NoError(t, os.WriteFile(path, []byte(good+"\n"+`{"integration":"i","connector":"c","id":{"k":1},"op":"merge","occurred_at":"2026-12-03T15:00:00Z"}`+"\n"), 0o644))
	_, err = readEventFile(path, 0)
	require.Error(t, err)
	require.Equal(t, exitUsage, exitCode(err))
	require.Contains(t, err.Error(), "events.jsonl:2")
	require.Contains(t, err.Error(), `"op"`)
}

func TestDLQReplayRefusesAnUnknownClass(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	err := run(t.Context(), []string{"dlq", "replay", "--config", filepath.Join("..", "..", defaultConfigPath),
		"--class", "retrys_exhausted"}, &stdout, &stderr)
	require.Error(t, err)
	require.Equal(t, exitUsage, exitCode(err))
	require.Contains(t, err.Error(), `unknown class "retrys_exhausted"`)
	require.Contains(t, err.Error(), "retries_exhausted")
}
