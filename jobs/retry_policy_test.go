package jobs_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/revsync/revsync/jobs"
)

func TestConnectorRetryPolicy(t *testing.T) {
	t.Parallel()
	var in jobs.Integration
	require.NoError(t, yaml.Unmarshal([]byte(`
name: crm
connectors:
  - name: customer
    export_job: rest_export
    entity: {table: customers, key: [{column: id, type: text}]}
    retry: {max_attempts: 3, schedule: [100ms, 2s]}
    remote: {collection: /customers}
  - name: plain
    export_job: rest_export
    entity: {table: plain, key: [{column: id, type: text}]}
`), &in))
	c, _ := in.Connector("customer")
	require.Equal(t, &jobs.RetryPolicy{MaxAttempts: 3, Schedule: []jobs.Duration{
		jobs.Duration(100 * time.Millisecond), jobs.Duration(2 * time.Second)}}, c.Retry)
	require.NotContains(t, c.Sections, "retry", "not a service's section")
	require.Contains(t, c.Sections, "remote")
	plain, _ := in.Connector("plain")
	require.Nil(t, plain.Retry)
	require.NoError(t, jobs.ValidateIntegrations("revsync.yaml", []jobs.Integration{in}, nil))

	c.Retry = &jobs.RetryPolicy{Schedule: []jobs.Duration{jobs.Duration(time.Second), 0}}
	err := jobs.ValidateIntegrations("revsync.yaml", []jobs.Integration{in}, nil)
	require.ErrorContains(t, err, `revsync.yaml: integration "crm" connector "customer": key "retry.max_attempts": must be at least 1, got 0`)
	require.ErrorContains(t, err, `key "retry.schedule[1]": must be between 0 and 24h0m0s, got 0s`)
}
