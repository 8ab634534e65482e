package worker_test

import (
	"encoding/json"
	"fmt"
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
	// withID is valid with id replaced; withParams is valid with parameters.
	withID := func(id string) string { return strings.Replace(valid, `{"customer_id":"ALFKI"}`, id, 1) }
	withParams := func(p string) string { return strings.Replace(valid, `"op"`, `"parameters":`+p+`,"op"`, 1) }
	idColumns := func(n int) string {
		cols := make([]string, n)
		for i := range cols {
			cols[i] = fmt.Sprintf(`"c%d":%d`, i, i)
		}
		return "{" + strings.Join(cols, ",") + "}"
	}
	// nested is parameters {"a": v} with v n arrays deep: the value of "a"
	// is at depth 3, so n = MaxDepth-2 is the deepest accepted.
	nested := func(n int) string {
		return withParams(`{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
	}
	long := "1" + strings.Repeat("0", worker.MaxNumberLength-1) // 64 characters
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

		// What encoding/json would silently alter is refused.
		{name: "duplicate key, last would win", body: strings.Replace(valid, `"occurred_at"`, `"op":"delete","occurred_at"`, 1),
			want: `duplicate key "op"`},
		{name: "duplicate key in id", body: withID(`{"customer_id":"A","customer_id":"B"}`),
			want: `field "id": duplicate key "customer_id"`},
		{name: "duplicate key spelled with an escape", body: withID(`{"customer_id":"A","customer_\u0069d":"B"}`),
			want: `field "id": duplicate key "customer_id"`},
		{name: "duplicate key deep in parameters", body: withParams(`{"a":[{"x":1},{"x":1,"y":2,"x":3}]}`),
			want: `field "parameters.a.1": duplicate key "x"`},
		{name: "same key in different objects", body: withParams(`{"x":{"x":1},"y":[{"x":1},{"x":2}],"id":{"id":1}}`)},
		{name: "invalid UTF-8", body: withID("{\"customer_id\":\"AL\xffKI\"}"),
			want: "body is not valid UTF-8: invalid byte at offset 79"},
		{name: "invalid UTF-8 outside strings", body: valid + "\xc3",
			want: "body is not valid UTF-8: invalid byte at offset 136"},
		{name: "unpaired high surrogate", body: withID(`{"customer_id":"A\ud800"}`),
			want: `invalid JSON at byte 78: \ud800 is an unpaired UTF-16 surrogate`},
		{name: "unpaired low surrogate", body: withID(`{"customer_id":"A\uDC00\ud800"}`),
			want: `\uDC00 is an unpaired UTF-16 surrogate`},
		{name: "high surrogate before another escape", body: withID(`{"customer_id":"\ud800\u0041"}`),
			want: `\ud800 is an unpaired UTF-16 surrogate`},
		{name: "surrogate pair and escaped backslashes", body: withID(`{"customer_id":"\ud83d\ude00 \\ud800 \\\u00e9"}`)},

		// Bounds that keep validation linear in the body's size.
		{name: "exponent too large in id", body: withID(`{"customer_id":1e999999}`),
			want: `field "id.customer_id": number 1e999999 is out of range: its exponent must be between -400 and 400`},
		{name: "exponent too small in parameters", body: withParams(`{"n":[0.5E-401]}`),
			want: `field "parameters.n.0": number 0.5E-401 is out of range`},
		{name: "exponent overflowing an int", body: withParams(`{"n":1e99999999999999999999999}`),
			want: `field "parameters.n": number 1e99999999999999999999999 is out of range`},
		{name: "exponent too large in an unknown field", body: strings.Replace(valid, `"op"`, `"x":1e+401,"op"`, 1),
			want: `field "x": number 1e+401 is out of range`},
		{name: "exponent too large at the top level", body: `1e999999`,
			want: `number 1e999999 is out of range`},
		{name: "largest exponents", body: withParams(`{"a":1e400,"b":-1E-400,"c":1e+0400}`)},
		{name: "number too long", body: withParams(`{"n":` + long + `0}`),
			want: `field "parameters.n": number ` + long[:32] + `… is 65 characters long, over the limit of 64`},
		{name: "longest number", body: withParams(`{"n":` + long + `}`)},
		{name: "too many id columns", body: withID(idColumns(worker.MaxIDColumns + 1)),
			want: `field "id": has more than 16 properties`},
		{name: "most id columns", body: withID(idColumns(worker.MaxIDColumns))},
		{name: "nested too deep", body: nested(worker.MaxDepth - 1),
			want: `field "parameters.a` + strings.Repeat(".0", worker.MaxDepth-2) + `": nested deeper than 32 levels`},
		{name: "nested deepest", body: nested(worker.MaxDepth - 2)},
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
	id := doc["properties"].(map[string]any)["id"].(map[string]any)
	require.Equal(t, float64(worker.MaxIDColumns), id["maxProperties"], "the schema documents MaxIDColumns")
}

// TestDecodeRefusesHugeExponents: numbers like 1e999999 are refused before
// schema validation, which would compute each one exactly (tens of
// milliseconds apiece: such a body pinned a handler for minutes).
func TestDecodeRefusesHugeExponents(t *testing.T) {
	t.Parallel()
	values := func(n int) string {
		kv := make([]string, n)
		for i := range kv {
			kv[i] = fmt.Sprintf(`"k%d":1e999999`, i)
		}
		return "{" + strings.Join(kv, ",") + "}"
	}
	for name, body := range map[string]string{
		"in id": `{"integration":"crm","connector":"customer","id":` + values(2000) +
			`,"op":"upsert","occurred_at":"2026-12-03T15:00:00Z"}`,
		"in parameters": `{"integration":"crm","connector":"customer","id":{"customer_id":"A"},"parameters":` + values(2000) +
			`,"op":"upsert","occurred_at":"2026-12-03T15:00:00Z"}`,
		"in an array": `{"integration":"crm","connector":"customer","id":{"customer_id":"A"},"parameters":{"a":[` +
			strings.TrimSuffix(strings.Repeat("1e999999,", 3000), ",") + `]},"op":"upsert","occurred_at":"2026-12-03T15:00:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.Less(t, len(body), worker.DefaultMaxMessageBytes)
			ev, err := worker.Decode([]byte(body), "m-1", 0)
			require.Nil(t, ev)
			require.Error(t, err)
			require.Equal(t, jobs.ClassInvalidMessage, jobs.ClassOf(err))
			require.Contains(t, err.Error(), "number 1e999999 is out of range")
		})
	}
}
