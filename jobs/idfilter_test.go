package jobs_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

func TestIDFilter(t *testing.T) {
	t.Parallel()
	text := jobs.Entity{Table: "customers", Key: []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}}}
	composite := jobs.Entity{Table: "order_lines", Key: []jobs.KeyColumn{
		{Column: "order_id", Type: jobs.KeyInteger}, {Column: "product_id", Type: jobs.KeyInteger},
	}}
	tests := []struct {
		name   string
		entity jobs.Entity
		id     map[string]any
		want   jobs.IDFilter
		err    string // the whole error text; "" for success
	}{
		{name: "text", entity: text, id: map[string]any{"customer_id": "ALFKI"},
			want: jobs.IDFilter{{Column: "customer_id", Value: "ALFKI"}}},
		{name: "text with any other character", entity: text, id: map[string]any{"customer_id": "a b\t\u00e9\U0001F600'\""},
			want: jobs.IDFilter{{Column: "customer_id", Value: "a b\t\u00e9\U0001F600'\""}}},
		{name: "composite in key order", entity: composite,
			id:   map[string]any{"product_id": json.Number("11"), "order_id": 10248},
			want: jobs.IDFilter{{Column: "order_id", Value: int64(10248)}, {Column: "product_id", Value: int64(11)}}},
		{name: "integer as float64", entity: composite, id: map[string]any{"order_id": float64(1), "product_id": int64(2)},
			want: jobs.IDFilter{{Column: "order_id", Value: int64(1)}, {Column: "product_id", Value: int64(2)}}},
		{name: "text key given a number", entity: text, id: map[string]any{"customer_id": json.Number("42")},
			err: `identifier column "customer_id": want a string, got a number`},
		{name: "empty text", entity: text, id: map[string]any{"customer_id": ""},
			err: `identifier column "customer_id": must not be empty`},
		{name: "NUL in text", entity: text, id: map[string]any{"customer_id": "AL\x00FKI"},
			err: `identifier column "customer_id": contains a NUL character`},
		{name: "NUL alone", entity: text, id: map[string]any{"customer_id": "\x00"},
			err: `identifier column "customer_id": contains a NUL character`},
		{name: "invalid UTF-8 in text", entity: text, id: map[string]any{"customer_id": "AL\xffKI"},
			err: `identifier column "customer_id": is not valid UTF-8`},
		{name: "integer key given a fraction", entity: composite,
			id:  map[string]any{"order_id": json.Number("1.5"), "product_id": json.Number("1e3")},
			err: `identifier column "order_id": want an integer, got 1.5; identifier column "product_id": want an integer, got 1e3`},
		{name: "integer key given a string", entity: composite, id: map[string]any{"order_id": "1", "product_id": 2},
			err: `identifier column "order_id": want an integer, got a string`},
		{name: "missing and unknown columns", entity: composite, id: map[string]any{"order_id": 1, "line": 2},
			err: `missing identifier column "product_id"; unknown identifier column "line"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.entity.IDFilter(tt.id)
			if tt.err != "" {
				require.EqualError(t, err, tt.err)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
