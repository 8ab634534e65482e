package worker_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	const valid = `{"version":1,"integration":"crm","connector":"customer","id":{"customer_id":"ALFKI"},"op":"upsert","occurred_at":"2026-12-03T15:00:00Z"}`
	tests := []struct {
		name     string
		body     string
		id       string
		maxBytes int
		want     string // substring of the error; "" for success
	}{
		{name: "valid", body: valid},
		{name: "valid without version, with parameters and an integer id",
			body: `{"integration":"crm","connector":"order_line","id":{"order_id":10248,"product_id":11},"op":"delete","parameters":{"force":true,"n":2},"occurred_at":"2026-12-03T15:00:00.123+01:00"}`},
		{name: "over size before parsing", body: `{"not json` + strings.Repeat("x", 300), maxBytes: 100,
			want: "body is 310 bytes, over the 100-byte limit"},
		{name: "over the default size", body: `"` + strings.Repeat("x", 300000) + `"`,
			want: "body is 300002 bytes, over the 262144-byte limit"},
		{name: "missing message_id", body: valid, id: "-", want: "missing message_id property"},
		{name: "empty body", body: "", want: "empty body"},
		{name: "truncated JSON", body: valid[:40], want: "truncated JSON: unexpected end of input"},
		{name: "syntax error", body: `{"integration" "crm"}`, want: "invalid JSON at byte 16: invalid character '\"' after object key"},
		{name: "trailing data", body: valid + ` {}`, want: "invalid JSON: unexpected data after the top-level value"},
		{name: "not an object", body: `[1,2]`, want: "event: must be an object, got an array"},
		{name: "bad op", body: strings.Replace(valid, `"upsert"`, `"merge"`, 1),
			want: `field "op": value must be one of "upsert", "delete", got "merge"`},
		{name: "extra field", body: strings.Replace(valid, `"op"`, `"extra":1,"op"`, 1),
			want: `unknown field "extra"`},
		{name: "missing fields", body: `{"integration":"crm","connector":"customer","id":{"customer_id":"A"}}`,
			want: `missing fields "op", "occurred_at"`},
		{name: "id value of the wrong type", body: strings.Replace(valid, `"ALFKI"`, `true`, 1),
			want: `field "id.customer_id": must be an integer or a string, got a boolean`},
		{name: "id value a fraction", body: strings.Replace(valid, `"ALFKI"`, `1.5`, 1),
			want: `field "id.customer_id": must be an integer or a string, got a number`},
		{name: "empty id", body: strings.Replace(valid, `{"customer_id":"ALFKI"}`, `{}`, 1),
			want: `field "id": must have at least 1 property`},
		{name: "id not an object", body: strings.Replace(valid, `{"customer_id":"ALFKI"}`, `"ALFKI"`, 1),
			want: `field "id": must be an object, got a string`},
		{name: "wrong version", body: strings.Replace(valid, `"version":1`, `"version":2`, 1),
			want: `field "version": value must be 1, got 2`},
		{name: "empty connector", body: strings.Replace(valid, `"customer"`, `""`, 1),
			want: `field "connector": must not be empty`},
		{name: "bad occurred_at", body: strings.Replace(valid, `2026-12-03T15:00:00Z`, `yesterday`, 1),
			want: `field "occurred_at": "yesterday" is not a valid date-time`},
		{name: "parameters not an object", body: strings.Replace(valid, `"op"`, `"parameters":[1],"op"`, 1),
			want: `field "parameters": must be an object, got an array`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := tt.id
			switch id {
			case "":
				id = "m-1"
			case "-":
				id = ""
			}
			ev, err := worker.Decode([]byte(tt.body), id, tt.maxBytes)
			if tt.want == "" {
				require.NoError(t, err)
				require.Equal(t, id, ev.MessageID)
				require.NotEmpty(t, ev.Integration)
				require.True(t, ev.Op.Valid())
				require.False(t, ev.OccurredAt.IsZero())
				return
			}
			require.Error(t, err)
			require.Nil(t, ev)
			require.Contains(t, err.Error(), tt.want)
			require.Equal(t, jobs.ClassInvalidMessage, jobs.ClassOf(err))
			require.True(t, jobs.IsPermanent(err))
		})
	}
}

func TestDecodeFields(t *testing.T) {
	t.Parallel()
	body := `{"integration":"crm","connector":"order_line","id":{"order_id":10248,"product_id":11},"op":"delete","parameters":{"force":true,"n":2},"occurred_at":"2026-12-03T15:00:00.5+01:00"}`
	ev, err := worker.Decode([]byte(body), "m-1", 0)
	require.NoError(t, err)
	require.Equal(t, &worker.Event{
		Integration: "crm",
		Connector:   "order_line",
		ID:          map[string]any{"order_id": json.Number("10248"), "product_id": json.Number("11")},
		Op:          jobs.OpDelete,
		Parameters:  map[string]any{"force": true, "n": json.Number("2")},
		OccurredAt:  time.Date(2026, 12, 3, 15, 0, 0, 5e8, time.FixedZone("", 3600)),
		MessageID:   "m-1",
	}, ev)

	// An Event marshals to a body Decode accepts.
	out, err := json.Marshal(ev)
	require.NoError(t, err)
	again, err := worker.Decode(out, "m-1", 0)
	require.NoError(t, err)
	require.Equal(t, ev.ID, again.ID)
	require.True(t, ev.OccurredAt.Equal(again.OccurredAt))
}

func TestSchemaIsEmbedded(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(worker.SchemaV1, &doc))
	require.Equal(t, false, doc["additionalProperties"])
	require.ElementsMatch(t, []any{"integration", "connector", "id", "op", "occurred_at"}, doc["required"])
}
