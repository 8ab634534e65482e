package mapping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/revsync/revsync/jobs"
)

// Name is the service name the mapping processor is registered under.
const Name = "mapping"

// Config is the connector's "mapping" section.
type Config struct {
	// Fields are the output object's fields, by name. Required.
	Fields map[string]*Spec `yaml:"fields"`
}

// Spec describes where one output field's value comes from. Exactly one of
// From, Const, Template and Object is set; the others refine From and
// Template.
type Spec struct {
	// From names the row column whose value is copied.
	From string `yaml:"from"`
	// Const is a fixed value. HasConst reports it was given, so that
	// "const: null" is a constant too.
	Const    any  `yaml:"const"`
	HasConst bool `yaml:"-"`
	// Template is a string with {column} placeholders; "{{" and "}}" are
	// literal braces.
	Template string `yaml:"template"`
	// Object is a nested object, by field name.
	Object map[string]*Spec `yaml:"object"`

	// Format converts the value: "string", "integer", "decimal",
	// "timestamp" or "boolean". Default: none, the value passes unchanged.
	Format string `yaml:"format"`
	// Scale is the number of decimals a "decimal" is rounded to, half away
	// from zero. Default: no rounding.
	Scale *int `yaml:"scale"`
	// Layout is how a "timestamp" is rendered: "rfc3339" (the default),
	// "date" (2006-01-02) or a Go time layout.
	Layout string `yaml:"layout"`
	// Default replaces a null value (and, on an upsert, a column missing
	// from the row). It is used as written, not formatted.
	Default any `yaml:"default"`
	// OmitNull leaves the field out of the object when its value is null.
	OmitNull bool `yaml:"omit_null"`

	unknown []string // keys the YAML had that Spec does not know
}

var specKeys = []string{"from", "const", "template", "object", "format", "scale", "layout", "default", "omit_null"}

// UnmarshalYAML decodes a spec, remembering whether "const" was given and
// which keys are unknown, so that the factory can report them with the
// field's full key.
func (s *Spec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!null" || n.Value == "") {
		return nil // an empty spec, reported as having no source
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a field spec is a mapping such as {from: column}, got %q", n.Line, n.Value)
	}
	type plain Spec // plain has no UnmarshalYAML: no recursion
	if err := n.Decode((*plain)(s)); err != nil {
		return err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch k := n.Content[i].Value; {
		case k == "const":
			s.HasConst = true
		case !slices.Contains(specKeys, k):
			s.unknown = append(s.unknown, k)
		}
	}
	return nil
}

// Processor maps an item's row to the remote's object. Build it with the
// factory returned by ProcessorFactory.
type Processor struct {
	fields []*field
}

var _ jobs.Processor = (*Processor)(nil)

// ProcessorFactory returns the factory of the "mapping" processor: it decodes
// and checks the connector's "mapping" section.
func ProcessorFactory() jobs.ProcessorFactory {
	return func(b *jobs.Binding) (jobs.Processor, error) {
		var cfg Config
		ok, err := b.Section(Name, &cfg)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, b.Errorf("missing key %q: the mapping processor needs the output fields", Name)
		}
		fields, problems := compile(&cfg, knownColumns(&b.Connector.Entity))
		if len(problems) > 0 {
			errs := make([]error, len(problems))
			for i, p := range problems {
				errs[i] = b.Errorf("key %q: %s", Name+"."+p.key, p.msg)
			}
			return nil, errors.Join(errs...)
		}
		return &Processor{fields: fields}, nil
	}
}

// Process replaces item.Fields with the mapped object. It always keeps the
// item. Errors are permanent: the same row maps the same way next time.
func (p *Processor) Process(_ context.Context, _ *jobs.Context, item jobs.Item) (jobs.Item, bool, error) {
	out, err := mapObject(p.fields, item.Fields, item.Op == jobs.OpDelete)
	if err != nil {
		return item, false, jobs.Permanent(err)
	}
	item.Fields = out
	return item, true, nil
}

// knownColumns returns a check for column names, or nil when the entity
// does not list its columns (then any column may be read).
func knownColumns(e *jobs.Entity) func(string) bool {
	if len(e.Columns) == 0 {
		return nil
	}
	known := map[string]bool{}
	for _, c := range e.Columns {
		known[c] = true
	}
	for _, k := range e.Key {
		known[k.Column] = true
	}
	return func(c string) bool { return known[c] }
}

type kind int

const (
	kindFrom kind = iota + 1
	kindConst
	kindTemplate
	kindObject
)

// field is a compiled Spec.
type field struct {
	name     string // key in the output object
	path     string // dotted path from the top, for errors
	kind     kind
	column   string    // kindFrom
	constant any       // kindConst
	tmpl     *template // kindTemplate
	object   []*field  // kindObject
	convert  converter // nil: pass the value through

	def      any
	hasDef   bool
	omitNull bool
}

type problem struct{ key, msg string }

// compile checks cfg and builds the fields in name order. known is nil when
// every column name is acceptable.
func compile(cfg *Config, known func(string) bool) ([]*field, []problem) {
	if len(cfg.Fields) == 0 {
		return nil, []problem{{"fields", "missing: at least one output field"}}
	}
	var problems []problem
	fields := compileObject("", cfg.Fields, known, &problems)
	return fields, problems
}

func compileObject(prefix string, specs map[string]*Spec, known func(string) bool, problems *[]problem) []*field {
	var fields []*field
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		bad := func(format string, args ...any) {
			*problems = append(*problems, problem{"fields." + path, fmt.Sprintf(format, args...)})
		}
		if name == "" {
			bad("empty field name")
			continue
		}
		s := specs[name]
		if s == nil {
			bad("missing spec: want one of from, const, template or object")
			continue
		}
		f := &field{name: name, path: path}
		ok := compileSpec(f, s, known, bad)
		if f.kind == kindObject {
			f.object = compileObject(path, s.Object, known, problems)
		}
		if ok {
			fields = append(fields, f)
		}
	}
	return fields
}

// compileSpec fills f from s, reporting problems with bad. It returns false
// when the spec is unusable.
func compileSpec(f *field, s *Spec, known func(string) bool, bad func(string, ...any)) bool {
	ok := true
	for _, k := range s.unknown {
		bad("unknown key %q (want %s)", k, strings.Join(specKeys, ", "))
		ok = false
	}
	var sources []string
	if s.From != "" {
		sources = append(sources, "from")
		f.kind = kindFrom
	}
	if s.HasConst || s.Const != nil {
		sources = append(sources, "const")
		f.kind = kindConst
	}
	if s.Template != "" {
		sources = append(sources, "template")
		f.kind = kindTemplate
	}
	if s.Object != nil {
		sources = append(sources, "object")
		f.kind = kindObject
	}
	switch len(sources) {
	case 0:
		bad("no source: want one of from, const, template or object")
		return false
	case 1:
	default:
		bad("%s are exclusive: want exactly one source", strings.Join(sources, " and "))
		return false
	}

	checkColumn := func(col, key string) {
		if known != nil && !known(col) {
			bad("%s: column %q is not one of the entity's columns or key columns", key, col)
			ok = false
		}
	}
	switch f.kind {
	case kindFrom:
		f.column = s.From
		if !identRe.MatchString(s.From) {
			bad("from: %q is not a column name", s.From)
			ok = false
		} else {
			checkColumn(s.From, "from")
		}
	case kindConst:
		if _, err := json.Marshal(s.Const); err != nil {
			bad("const: not representable as JSON: %v", err)
			ok = false
		}
		f.constant = s.Const
	case kindTemplate:
		t, err := parseTemplate(s.Template)
		if err != nil {
			bad("template %q: %v", s.Template, err)
			return false
		}
		for _, col := range t.columns() {
			checkColumn(col, "template")
		}
		f.tmpl = t
	case kindObject:
		if len(s.Object) == 0 {
			bad("object: no fields")
			ok = false
		}
	}

	if f.kind == kindConst || f.kind == kindObject {
		// Refinements only make sense on a value read from the row.
		for _, r := range []struct {
			key string
			set bool
		}{
			{"format", s.Format != ""}, {"scale", s.Scale != nil}, {"layout", s.Layout != ""},
			{"default", s.Default != nil}, {"omit_null", s.OmitNull},
		} {
			if r.set {
				bad("%s: only allowed with from or template", r.key)
				ok = false
			}
		}
		return ok
	}

	conv, err := newConverter(s.Format, s.Scale, s.Layout)
	if err != nil {
		bad("%v", err)
		ok = false
	}
	f.convert = conv
	if s.Default != nil {
		if _, err := json.Marshal(s.Default); err != nil {
			bad("default: not representable as JSON: %v", err)
			ok = false
		}
		if s.OmitNull {
			bad("omit_null: has no effect together with default")
			ok = false
		}
	}
	f.def, f.hasDef, f.omitNull = s.Default, s.Default != nil, s.OmitNull
	return ok
}

// mapObject maps row through fields. On a deletion, fields whose sources
// are absent are left out; on an upsert they are an error (unless the field
// has a default).
func mapObject(fields []*field, row map[string]any, deletion bool) (map[string]any, error) {
	out := make(map[string]any, len(fields))
	for _, f := range fields {
		v, present, err := f.value(row, deletion)
		if err != nil {
			return nil, err
		}
		if present {
			out[f.name] = v
		}
	}
	return out, nil
}

// value returns the field's value and whether the field is in the output.
func (f *field) value(row map[string]any, deletion bool) (any, bool, error) {
	var raw any
	switch f.kind {
	case kindConst:
		return clone(f.constant), true, nil
	case kindObject:
		m, err := mapObject(f.object, row, deletion)
		if err != nil {
			return nil, false, err
		}
		if deletion && len(m) == 0 {
			return nil, false, nil
		}
		return m, true, nil
	case kindFrom:
		v, ok := row[f.column]
		if !ok {
			return f.absent(deletion, fmt.Sprintf("column %q is not in the row", f.column))
		}
		raw = v
	case kindTemplate:
		s, null, missing, err := f.tmpl.render(row)
		switch {
		case err != nil:
			return nil, false, fmt.Errorf("mapping field %q: %w", f.path, err)
		case missing != "":
			return f.absent(deletion, fmt.Sprintf("template column %q is not in the row", missing))
		case null:
			raw = nil
		default:
			raw = s
		}
	}
	norm, err := normalize(raw)
	if err != nil {
		return nil, false, fmt.Errorf("mapping field %q: read value: %w", f.path, err)
	}
	if norm == nil {
		switch {
		case f.hasDef:
			return clone(f.def), true, nil
		case f.omitNull:
			return nil, false, nil
		}
		return nil, true, nil
	}
	if f.convert == nil {
		return raw, true, nil
	}
	v, err := f.convert(norm)
	if err != nil {
		return nil, false, fmt.Errorf("mapping field %q: %w", f.path, err)
	}
	return v, true, nil
}

// absent handles a source missing from the row: left out of a deletion,
// the default or an error for an upsert.
func (f *field) absent(deletion bool, why string) (any, bool, error) {
	switch {
	case deletion:
		return nil, false, nil
	case f.hasDef:
		return clone(f.def), true, nil
	}
	return nil, false, fmt.Errorf("mapping field %q: %s", f.path, why)
}

// clone copies the maps and slices a constant decoded from YAML may hold,
// so that no output shares them.
func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = clone(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = clone(e)
		}
		return s
	}
	return v
}
