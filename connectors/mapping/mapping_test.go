package mapping_test

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/revsync/revsync/connectors/mapping"
	"github.com/revsync/revsync/jobs"
)

// newProcessor builds the processor from a connector's YAML, as the catalog
// would.
func newProcessor(t *testing.T, connectorYAML string) (jobs.Processor, error) {
	t.Helper()
	var c jobs.Connector
	require.NoError(t, yaml.Unmarshal([]byte(connectorYAML), &c))
	b := &jobs.Binding{File: "revsync.yaml", Integration: &jobs.Integration{Name: "crm"}, Connector: &c}
	return mapping.ProcessorFactory()(b)
}

func mustProcessor(t *testing.T, connectorYAML string) jobs.Processor {
	t.Helper()
	p, err := newProcessor(t, connectorYAML)
	require.NoError(t, err)
	return p
}

// connector wraps a mapping's fields in a connector whose entity lists no
// columns (any column may be read).
func connector(fields string) string {
	return "name: c\nentity: {table: t, key: [{column: id, type: text}]}\nmapping:\n  fields:\n" + fields
}

// numeric is a stand-in for pgtype.Numeric: a driver.Valuer rendering text.
type numeric struct {
	text  string
	valid bool
}

func (n numeric) Value() (driver.Value, error) {
	if !n.valid {
		return nil, nil
	}
	return n.text, nil
}

type brokenValuer struct{}

func (brokenValuer) Value() (driver.Value, error) { return nil, errors.New("cannot read") }

type code string // a named string type, as some drivers return

func TestProcess(t *testing.T) {
	t.Parallel()
	berlin := time.FixedZone("CET", 3600)
	str := "ptr"
	var nilPtr *string
	key := jobs.IDFilter{{Column: "id", Value: "K1"}}

	tests := []struct {
		name   string
		fields string // YAML, indented by four spaces
		op     jobs.Op
		row    map[string]any
		want   string // the output as JSON, keys sorted
	}{
		{
			name:   "from copies values unchanged",
			fields: "    a: {from: s}\n    b: {from: n}\n    c: {from: f}\n    d: {from: nothing}\n    e: {from: p}",
			row:    map[string]any{"s": "x", "n": int64(7), "f": float32(9.8), "nothing": nil, "p": &str},
			want:   `{"a":"x","b":7,"c":9.8,"d":null,"e":"ptr"}`,
		},
		{
			name:   "const of every YAML kind",
			fields: "    s: {const: northwind}\n    n: {const: 3}\n    o: {const: {a: [1, two]}}\n    z: {const: null}",
			row:    map[string]any{},
			want:   `{"n":3,"o":{"a":[1,"two"]},"s":"northwind","z":null}`,
		},
		{
			name:   "template interpolates and renders numbers as text",
			fields: `    id: {template: "{order_id}-{product_id}"}` + "\n" + `    b: {template: "{{{name}}} {price}"}`,
			row:    map[string]any{"order_id": int64(10248), "product_id": int32(11), "name": code("x"), "price": float32(9.8)},
			want:   `{"b":"{x} 9.8","id":"10248-11"}`,
		},
		{
			name:   "template with a null column is null",
			fields: `    id: {template: "{a}-{b}"}` + "\n" + `    d: {template: "{a}-{b}", default: none}` + "\n" + `    o: {template: "{a}-{b}", omit_null: true}`,
			row:    map[string]any{"a": "x", "b": nil},
			want:   `{"d":"none","id":null}`,
		},
		{
			name:   "nested objects",
			fields: "    contact: {object: {name: {from: n}, address: {object: {city: {from: c}}}}}",
			row:    map[string]any{"n": "Maria", "c": "Berlin"},
			want:   `{"contact":{"address":{"city":"Berlin"},"name":"Maria"}}`,
		},
		{
			name: "format string",
			fields: "    i: {from: i, format: string}\n    f: {from: f, format: string}\n    b: {from: b, format: string}\n" +
				"    t: {from: t, format: string}\n    y: {from: y, format: string}\n    v: {from: v, format: string}",
			row: map[string]any{"i": int16(-4), "f": float32(0.1), "b": true, "t": time.Date(2026, 12, 3, 16, 0, 0, 0, berlin),
				"y": []byte("bytes"), "v": numeric{"1.50", true}},
			want: `{"b":"true","f":"0.1","i":"-4","t":"2026-12-03T15:00:00Z","v":"1.50","y":"bytes"}`,
		},
		{
			name:   "format integer",
			fields: "    a: {from: a, format: integer}\n    b: {from: b, format: integer}\n    c: {from: c, format: integer}\n    d: {from: d, format: integer}",
			row:    map[string]any{"a": " 42 ", "b": 3.0, "c": uint8(200), "d": "18446744073709551616"},
			want:   `{"a":42,"b":3,"c":200,"d":18446744073709551616}`,
		},
		{
			name: "format decimal rounds half away from zero on the exact decimal",
			fields: "    real: {from: real, format: decimal, scale: 2}\n    tie: {from: tie, format: decimal, scale: 2}\n" +
				"    neg: {from: neg, format: decimal, scale: 2}\n    f64: {from: f64, format: decimal, scale: 2}\n" +
				"    f32: {from: f32, format: decimal, scale: 1}\n    s0: {from: s0, format: decimal, scale: 0}\n" +
				"    raw: {from: raw, format: decimal}\n    num: {from: num, format: decimal, scale: 2}\n" +
				"    int: {from: int, format: decimal, scale: 2}\n    exp: {from: exp, format: decimal}",
			row: map[string]any{
				"real": float32(9.80000019), "tie": "2.345", "neg": "-2.345", "f64": 1.005,
				"f32": float32(0.15), "s0": -2.5, "raw": "0012.3400", "num": numeric{"12.50", true},
				"int": int64(5), "exp": json.Number("1.5e3"),
			},
			want: `{"exp":1500,"f32":0.2,"f64":1.01,"int":5,"neg":-2.35,"num":12.5,"raw":12.34,"real":9.8,"s0":-3,"tie":2.35}`,
		},
		{
			name: "format timestamp",
			fields: "    a: {from: t, format: timestamp}\n    b: {from: t, format: timestamp, layout: date}\n" +
				"    c: {from: t, format: timestamp, layout: \"02/01/2006 15:04\"}\n    d: {from: s, format: timestamp}\n" +
				"    e: {from: d, format: timestamp, layout: date}",
			row:  map[string]any{"t": time.Date(2026, 12, 3, 16, 0, 0, 500, berlin), "s": "2026-12-03 15:00:00+01", "d": "2026-12-03"},
			want: `{"a":"2026-12-03T15:00:00.0000005Z","b":"2026-12-03","c":"03/12/2026 15:00","d":"2026-12-03T14:00:00Z","e":"2026-12-03"}`,
		},
		{
			name:   "format boolean",
			fields: "    a: {from: a, format: boolean}\n    b: {from: b, format: boolean}\n    c: {from: c, format: boolean}",
			row:    map[string]any{"a": "TRUE", "b": int64(0), "c": true},
			want:   `{"a":true,"b":false,"c":true}`,
		},
		{
			name: "null: default, omit_null or null",
			fields: "    a: {from: x, default: unknown}\n    b: {from: x, omit_null: true}\n    c: {from: x, format: decimal, scale: 2}\n" +
				"    d: {from: p, default: 0}\n    e: {from: v, omit_null: true, format: decimal}\n    f: {from: absent, default: [1]}",
			row:  map[string]any{"x": nil, "p": nilPtr, "v": numeric{}},
			want: `{"a":"unknown","c":null,"d":0,"f":[1]}`,
		},
		{
			name: "deletion maps what its key allows",
			fields: "    id: {template: \"{id}\"}\n    key: {from: id}\n    name: {from: name}\n    source: {const: crm}\n" +
				"    contact: {object: {name: {from: name}}}\n    meta: {object: {kind: {const: c}, name: {from: name}}}\n" +
				"    d: {from: name, default: x}",
			op:   jobs.OpDelete,
			row:  map[string]any{"id": "K1"},
			want: `{"id":"K1","key":"K1","meta":{"kind":"c"},"source":"crm"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustProcessor(t, connector(tt.fields))
			op := tt.op
			if op == "" {
				op = jobs.OpUpsert
			}
			in := jobs.Item{Key: key, Op: op, Fields: tt.row}
			out, keep, err := p.Process(context.Background(), &jobs.Context{}, in)
			require.NoError(t, err)
			require.True(t, keep)
			require.Equal(t, key, out.Key)
			require.Equal(t, op, out.Op)
			got, err := json.Marshal(out.Fields)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
		})
	}
}

func TestProcessConstantsAreNotShared(t *testing.T) {
	t.Parallel()
	p := mustProcessor(t, connector("    o: {const: {a: 1}}"))
	out, _, err := p.Process(context.Background(), &jobs.Context{}, jobs.Item{Op: jobs.OpUpsert})
	require.NoError(t, err)
	out.Fields["o"].(map[string]any)["a"] = 2
	out, _, err = p.Process(context.Background(), &jobs.Context{}, jobs.Item{Op: jobs.OpUpsert})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"o": map[string]any{"a": 1}}, out.Fields)
}

func TestProcessErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fields string
		row    map[string]any
		want   []string // substrings of the error
	}{
		{"from column missing", "    c: {object: {n: {from: contact_name}}}", map[string]any{},
			[]string{`mapping field "c.n"`, `column "contact_name" is not in the row`}},
		{"template column missing", `    id: {template: "{a}-{b}"}`, map[string]any{"a": 1},
			[]string{`mapping field "id"`, `template column "b" is not in the row`}},
		{"text as integer", "    q: {from: q, format: integer}", map[string]any{"q": "abc"},
			[]string{`mapping field "q"`, `value "abc" (string) is not an integer`}},
		{"fraction as integer", "    q: {from: q, format: integer}", map[string]any{"q": 3.5},
			[]string{`mapping field "q"`, `value 3.5 (float64) is not an integer`}},
		{"text as decimal", "    p: {from: p, format: decimal, scale: 2}", map[string]any{"p": "1/3"},
			[]string{`mapping field "p"`, `"1/3"`, "not a decimal"}},
		{"huge exponent", "    p: {from: p, format: decimal}", map[string]any{"p": "1e9999"},
			[]string{`mapping field "p"`, "not a decimal"}},
		{"boolean as decimal", "    p: {from: p, format: decimal}", map[string]any{"p": true},
			[]string{`mapping field "p"`, "not a decimal"}},
		{"text as boolean", "    b: {from: b, format: boolean}", map[string]any{"b": "nope"},
			[]string{`mapping field "b"`, `"nope"`, "not a boolean"}},
		{"2 as boolean", "    b: {from: b, format: boolean}", map[string]any{"b": 2},
			[]string{`mapping field "b"`, "not a boolean"}},
		{"text as timestamp", "    t: {from: t, format: timestamp}", map[string]any{"t": "yesterday"},
			[]string{`mapping field "t"`, `"yesterday"`, "not a timestamp"}},
		{"infinite date as timestamp", "    t: {from: t, format: timestamp, layout: date}", map[string]any{"t": "-infinity"},
			[]string{`mapping field "t"`, `"-infinity"`, "infinity is not a timestamp"}},
		{"object as string", "    s: {from: s, format: string}", map[string]any{"s": map[string]any{"a": 1}},
			[]string{`mapping field "s"`, "cannot be rendered as a string"}},
		{"invalid UTF-8", "    s: {from: s, format: string}", map[string]any{"s": []byte{0xff}},
			[]string{`mapping field "s"`, "not UTF-8"}},
		{"object in a template", `    s: {template: "x{s}"}`, map[string]any{"s": []any{1}},
			[]string{`mapping field "s"`, `template column "s"`}},
		{"valuer fails", "    v: {from: v}", map[string]any{"v": brokenValuer{}},
			[]string{`mapping field "v"`, "cannot read"}},
		{"long value is shortened", "    q: {from: q, format: integer}", map[string]any{"q": fmt.Sprintf("%0100d", 0) + "x"},
			[]string{`mapping field "q"`, "…"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustProcessor(t, connector(tt.fields))
			_, keep, err := p.Process(context.Background(), &jobs.Context{}, jobs.Item{Op: jobs.OpUpsert, Fields: tt.row})
			require.Error(t, err)
			require.False(t, keep)
			require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "error %v", err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.Less(t, len(err.Error()), 200)
		})
	}
}

func TestFactoryErrors(t *testing.T) {
	t.Parallel()
	const entity = "name: customer\nentity: {table: t, key: [{column: customer_id, type: text}], columns: [company_name, contact_name]}\n"
	tests := []struct {
		name    string
		mapping string // the connector's YAML after the entity
		want    []string
	}{
		{"no mapping section", "", []string{`missing key "mapping"`}},
		{"no fields", "mapping: {fields: {}}", []string{`key "mapping.fields": missing`}},
		{"unknown section key", "mapping: {feilds: {}}", []string{`key "mapping"`, "feilds"}},
		{"no source", "mapping: {fields: {a: {format: string}}}", []string{`key "mapping.fields.a": no source`}},
		{"null spec", "mapping: {fields: {a: }}", []string{`key "mapping.fields.a": missing spec`}},
		{"two sources", "mapping: {fields: {a: {from: company_name, const: 1}}}", []string{`key "mapping.fields.a": from and const are exclusive`}},
		{"const null and template", "mapping: {fields: {a: {const: null, template: '{company_name}'}}}", []string{`key "mapping.fields.a": const and template are exclusive`}},
		{"unknown format", "mapping: {fields: {a: {from: company_name, format: money}}}", []string{`key "mapping.fields.a": format: unknown format "money"`}},
		{"scale without decimal", "mapping: {fields: {a: {from: company_name, format: integer, scale: 2}}}", []string{`key "mapping.fields.a": scale: only allowed with format "decimal"`}},
		{"scale out of range", "mapping: {fields: {a: {from: company_name, format: decimal, scale: -1}}}", []string{`key "mapping.fields.a": scale: want 0 to 30, got -1`}},
		{"layout without timestamp", "mapping: {fields: {a: {from: company_name, layout: date}}}", []string{`key "mapping.fields.a": layout: only allowed with format "timestamp"`}},
		{"layout without elements", "mapping: {fields: {a: {from: company_name, format: timestamp, layout: iso}}}", []string{`key "mapping.fields.a": layout: "iso" has no date or time element`}},
		{"template referencing nothing", "mapping: {fields: {a: {template: fixed}}}", []string{`key "mapping.fields.a": template "fixed": references no column`}},
		{"template unclosed", "mapping: {fields: {a: {template: '{company_name'}}}", []string{`key "mapping.fields.a": template "{company_name": unclosed "{"`}},
		{"template stray brace", "mapping: {fields: {a: {template: '{company_name}}x'}}}", []string{`key "mapping.fields.a"`, `unmatched "}"`}},
		{"template bad placeholder", "mapping: {fields: {a: {template: '{}'}}}", []string{`key "mapping.fields.a"`, "placeholder {} at offset 0 is not a column name"}},
		{"from unknown column", "mapping: {fields: {c: {object: {name: {from: contact}}}}}", []string{`key "mapping.fields.c.name": from: column "contact" is not one of the entity's columns`}},
		{"template unknown column", "mapping: {fields: {id: {template: '{customer_id}-{x}'}}}", []string{`key "mapping.fields.id": template: column "x" is not one`}},
		{"from not a column name", "mapping: {fields: {a: {from: 'a b'}}}", []string{`key "mapping.fields.a": from: "a b" is not a column name`}},
		{"format on const", "mapping: {fields: {a: {const: 1, format: string, omit_null: true}}}", []string{`key "mapping.fields.a": format: only allowed with from or template`, `key "mapping.fields.a": omit_null: only allowed`}},
		{"default on object", "mapping: {fields: {a: {object: {b: {const: 1}}, default: 1}}}", []string{`key "mapping.fields.a": default: only allowed with from or template`}},
		{"default with omit_null", "mapping: {fields: {a: {from: company_name, default: x, omit_null: true}}}", []string{`key "mapping.fields.a": omit_null: has no effect together with default`}},
		{"empty object", "mapping: {fields: {a: {object: {}}}}", []string{`key "mapping.fields.a": object: no fields`}},
		{"unknown key, nested", "mapping: {fields: {contact: {object: {name: {fromm: contact_name}}}}}", []string{`key "mapping.fields.contact.name": unknown key "fromm"`}},
		{"spec is not a mapping", "mapping: {fields: {a: company_name}}", []string{`key "mapping"`, "a field spec is a mapping"}},
		{"every problem is reported", "mapping: {fields: {a: {format: x}, b: {from: nope}}}", []string{`key "mapping.fields.a"`, `key "mapping.fields.b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := newProcessor(t, entity+tt.mapping)
			require.Error(t, err)
			var de *jobs.DefinitionError
			require.ErrorAs(t, err, &de)
			require.Contains(t, err.Error(), `revsync.yaml: integration "crm" connector "customer"`)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestFactoryAcceptsKeyColumnsAndListedColumns(t *testing.T) {
	t.Parallel()
	_, err := newProcessor(t, `name: customer
entity: {table: t, key: [{column: customer_id, type: text}], columns: [company_name]}
mapping:
  fields:
    id: {from: customer_id}
    name: {from: company_name}
    ref: {template: "{customer_id}/{company_name}"}
`)
	require.NoError(t, err)
}

// TestConfigExample maps rows through the connectors of the documented
// example configuration.
func TestConfigExample(t *testing.T) {
	t.Parallel()
	customer := mustProcessor(t, `name: customer
entity:
  table: northwind.customers
  key: [{column: customer_id, type: text}]
  columns: [customer_id, company_name, contact_name, city, country, phone]
mapping:
  fields:
    id: {from: customer_id}
    name: {from: company_name}
    contact: {object: {name: {from: contact_name}, phone: {from: phone}}}
    address: {object: {city: {from: city}, country: {from: country}}}
    source: {const: northwind}
`)
	orderLine := mustProcessor(t, `name: order_line
entity:
  table: northwind.order_details
  key: [{column: order_id, type: integer}, {column: product_id, type: integer}]
mapping:
  fields:
    id: {template: "{order_id}-{product_id}"}
    order_id: {from: order_id}
    product_id: {from: product_id}
    unit_price: {from: unit_price, format: decimal, scale: 2}
    quantity: {from: quantity}
    discount: {from: discount, format: decimal, scale: 2}
`)
	tests := []struct {
		name string
		p    jobs.Processor
		item jobs.Item
		want string
	}{
		{"customer upsert", customer, jobs.Item{Op: jobs.OpUpsert, Fields: map[string]any{
			"customer_id": "ALFKI", "company_name": "Alfreds Futterkiste", "contact_name": "Maria Anders",
			"city": "Berlin", "country": "Germany", "phone": "030-0074321",
		}}, `{"address":{"city":"Berlin","country":"Germany"},"contact":{"name":"Maria Anders","phone":"030-0074321"},"id":"ALFKI","name":"Alfreds Futterkiste","source":"northwind"}`},
		{"customer delete", customer, jobs.Item{Op: jobs.OpDelete, Fields: map[string]any{"customer_id": "ALFKI"}},
			`{"id":"ALFKI","source":"northwind"}`},
		{"order line upsert", orderLine, jobs.Item{Op: jobs.OpUpsert, Fields: map[string]any{
			"order_id": int16(10248), "product_id": int16(11), "unit_price": float32(14), "quantity": int16(12), "discount": float32(0.15),
		}}, `{"discount":0.15,"id":"10248-11","order_id":10248,"product_id":11,"quantity":12,"unit_price":14}`},
		{"order line delete", orderLine, jobs.Item{Op: jobs.OpDelete, Fields: map[string]any{"order_id": int64(10248), "product_id": int64(11)}},
			`{"id":"10248-11","order_id":10248,"product_id":11}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, keep, err := tt.p.Process(context.Background(), &jobs.Context{}, tt.item)
			require.NoError(t, err)
			require.True(t, keep)
			got, err := json.Marshal(out.Fields)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
		})
	}
}
