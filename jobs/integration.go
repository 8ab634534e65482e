package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Integration is one remote system revsync keeps in step: how to reach it
// and one connector per entity type.
type Integration struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // free-form, e.g. "rest"; for operators
	// Enabled: a disabled integration's events are parked in the DLQ with
	// class integration_disabled, to be replayed later. Default true.
	Enabled *bool `yaml:"enabled"`
	// TwoWaySync: with it off, events are parked as for a disabled
	// integration. Default true.
	TwoWaySync *bool       `yaml:"two_way_sync"`
	Transport  Transport   `yaml:"transport"`
	Connectors []Connector `yaml:"connectors"`
}

// IsEnabled reports whether the integration takes events: enabled and with
// two-way sync on (both default to true).
func (in *Integration) IsEnabled() bool {
	return (in.Enabled == nil || *in.Enabled) && (in.TwoWaySync == nil || *in.TwoWaySync)
}

// Connector returns the connector called name.
func (in *Integration) Connector(name string) (*Connector, bool) {
	for i := range in.Connectors {
		if in.Connectors[i].Name == name {
			return &in.Connectors[i], true
		}
	}
	return nil, false
}

// Transport is how an integration reaches its remote.
type Transport struct {
	BaseURL string            `yaml:"base_url"`
	Headers map[string]string `yaml:"headers"`
	// AuthTokenEnv names the environment variable holding a bearer token.
	// The token itself never appears in configuration, logs or errors.
	AuthTokenEnv string `yaml:"auth_token_env"`
	// Timeout bounds one request to the remote. Default 10s.
	Timeout Duration `yaml:"timeout"`
}

// Connector ties one entity type of the application to an export job.
type Connector struct {
	Name      string `yaml:"name"`
	Entity    Entity `yaml:"entity"`
	ExportJob string `yaml:"export_job"`
	// OnMissing is what an upsert does when the row no longer exists:
	// "delete" (default) exports a deletion, "skip" does nothing.
	OnMissing string `yaml:"on_missing"`
	// Parameters are defaults for the job context; an event's own
	// parameters win.
	Parameters map[string]any `yaml:"parameters"`
	// Retry overrides the worker's retry policy for this connector's
	// transient failures. Nil: the worker's policy.
	Retry *RetryPolicy `yaml:"retry"`
	// Sections holds the services' own settings (e.g. "mapping", "remote"),
	// decoded by each service through Binding.Section.
	Sections map[string]yaml.Node `yaml:",inline"`
}

// RetryPolicy is a connector's own retry policy (key "retry").
type RetryPolicy struct {
	// MaxAttempts is how many times an event is tried in all before a
	// transient failure dead-letters it with class retries_exhausted.
	// Required, at least 1 (1: never retried).
	MaxAttempts int `yaml:"max_attempts"`
	// Schedule is the delay before each retry: the first entry after the
	// first attempt, and so on; the last entry repeats. Empty: the
	// worker's schedule.
	Schedule []Duration `yaml:"schedule"`
}

// OnMissing values.
const (
	OnMissingDelete = "delete"
	OnMissingSkip   = "skip"
)

// Entity is the table a connector exports and how its rows are identified.
type Entity struct {
	// Table is the table, optionally schema-qualified ("northwind.customers").
	Table string `yaml:"table"`
	// Key lists the identifier columns; several make a composite key.
	Key []KeyColumn `yaml:"key"`
	// Columns are the columns read; empty means all.
	Columns []string `yaml:"columns"`
}

// KeyColumn is one identifier column and the type of its values.
type KeyColumn struct {
	Column string  `yaml:"column"`
	Type   KeyType `yaml:"type"`
}

// KeyType is the type of an identifier column's values in events.
type KeyType string

// The identifier types.
const (
	KeyText    KeyType = "text"
	KeyInteger KeyType = "integer"
)

// identRe is what a configured SQL identifier may look like. Identifiers are
// quoted when used; this only keeps configuration honest.
var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// SchemaTable splits Table into schema (possibly empty) and table name.
func (e *Entity) SchemaTable() (schema, table string) {
	if i := strings.IndexByte(e.Table, '.'); i >= 0 {
		return e.Table[:i], e.Table[i+1:]
	}
	return "", e.Table
}

// IDFilter checks an event's identifier object against the key: exactly the
// key's columns, each value of the column's type. It returns the filter in
// key order. Numbers must be json.Number or an integer type. A text value
// must be non-empty valid UTF-8 without a NUL character, as PostgreSQL
// text holds no NUL and an entity key is never empty: a value it would
// refuse is refused here, before any SQL runs.
func (e *Entity) IDFilter(id map[string]any) (IDFilter, error) {
	var errs []string
	for col := range id {
		if !slices.ContainsFunc(e.Key, func(k KeyColumn) bool { return k.Column == col }) {
			errs = append(errs, fmt.Sprintf("unknown identifier column %q", col))
		}
	}
	filter := make(IDFilter, 0, len(e.Key))
	for _, k := range e.Key {
		raw, ok := id[k.Column]
		if !ok {
			errs = append(errs, fmt.Sprintf("missing identifier column %q", k.Column))
			continue
		}
		v, err := k.Type.convert(raw)
		if err != nil {
			errs = append(errs, fmt.Sprintf("identifier column %q: %v", k.Column, err))
			continue
		}
		filter = append(filter, KeyPart{Column: k.Column, Value: v})
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return filter, nil
}

func (t KeyType) convert(raw any) (any, error) {
	switch t {
	case KeyText:
		s, ok := raw.(string)
		switch {
		case !ok:
			return nil, fmt.Errorf("want a string, got %s", jsonType(raw))
		case s == "":
			return nil, errors.New("must not be empty")
		case strings.IndexByte(s, 0) >= 0:
			return nil, errors.New("contains a NUL character")
		case !utf8.ValidString(s):
			return nil, errors.New("is not valid UTF-8")
		}
		return s, nil
	case KeyInteger:
		switch v := raw.(type) {
		case json.Number:
			n, err := v.Int64()
			if err != nil {
				return nil, fmt.Errorf("want an integer, got %s", v)
			}
			return n, nil
		case int64:
			return v, nil
		case int:
			return int64(v), nil
		case float64:
			if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
				return nil, fmt.Errorf("want an integer, got %v", v)
			}
			return int64(v), nil
		}
		return nil, fmt.Errorf("want an integer, got %s", jsonType(raw))
	}
	return nil, fmt.Errorf("unknown key type %q", t)
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, int, int64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// ValidateIntegrations checks the integrations of the configuration file
// named file: unique names, connectors with a table, a key, a known export
// job (when jobs is not nil), a valid on_missing and, when present, a retry
// policy with max_attempts of at least 1 and positive schedule delays.
func ValidateIntegrations(file string, integrations []Integration, jobs []*Job) error {
	var errs []error
	known := map[string]bool{}
	for _, j := range jobs {
		known[j.Name] = true
	}
	seen := map[string]bool{}
	for i := range integrations {
		in := &integrations[i]
		bad := func(path, format string, args ...any) {
			errs = append(errs, &DefinitionError{File: file, Path: path, Cause: fmt.Sprintf(format, args...)})
		}
		if in.Name == "" {
			bad(fmt.Sprintf("integrations[%d]", i), `missing key "name"`)
			continue
		}
		ip := fmt.Sprintf("integration %q", in.Name)
		if seen[in.Name] {
			bad(ip, "duplicate integration name")
		}
		seen[in.Name] = true
		if len(in.Connectors) == 0 {
			bad(ip, `missing key "connectors"`)
		}
		conns := map[string]bool{}
		for k := range in.Connectors {
			c := &in.Connectors[k]
			if c.Name == "" {
				bad(fmt.Sprintf("%s connectors[%d]", ip, k), `missing key "name"`)
				continue
			}
			cp := fmt.Sprintf("%s connector %q", ip, c.Name)
			if conns[c.Name] {
				bad(cp, "duplicate connector name")
			}
			conns[c.Name] = true
			switch {
			case c.ExportJob == "":
				bad(cp, `missing key "export_job"`)
			case jobs != nil && !known[c.ExportJob]:
				bad(cp, `key "export_job": unknown job %q`, c.ExportJob)
			}
			switch c.OnMissing {
			case "":
				c.OnMissing = OnMissingDelete
			case OnMissingDelete, OnMissingSkip:
			default:
				bad(cp, `key "on_missing": want %q or %q, got %q`, OnMissingDelete, OnMissingSkip, c.OnMissing)
			}
			if err := c.Entity.validate(); err != nil {
				bad(cp, "key \"entity.%v", err)
			}
			if r := c.Retry; r != nil {
				if r.MaxAttempts < 1 {
					bad(cp, `key "retry.max_attempts": must be at least 1, got %d`, r.MaxAttempts)
				}
				for i, d := range r.Schedule {
					if d <= 0 || time.Duration(d) > MaxRetryDelay {
						bad(cp, `key "retry.schedule[%d]": must be between 0 and %s, got %s`, i, MaxRetryDelay, time.Duration(d))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// validate returns an error starting with the key below "entity." that is
// wrong, closing the quote the caller opened.
func (e *Entity) validate() error {
	if e.Table == "" {
		return errors.New(`table": missing`)
	}
	schema, table := e.SchemaTable()
	if (schema != "" && !identRe.MatchString(schema)) || !identRe.MatchString(table) {
		return fmt.Errorf(`table": %q is not a [schema.]table name`, e.Table)
	}
	if len(e.Key) == 0 {
		return errors.New(`key": missing: at least one identifier column`)
	}
	seen := map[string]bool{}
	for i, k := range e.Key {
		switch {
		case !identRe.MatchString(k.Column):
			return fmt.Errorf(`key[%d].column": %q is not a column name`, i, k.Column)
		case seen[k.Column]:
			return fmt.Errorf(`key[%d].column": duplicate column %q`, i, k.Column)
		case k.Type != KeyText && k.Type != KeyInteger:
			return fmt.Errorf(`key[%d].type": want %q or %q, got %q`, i, KeyText, KeyInteger, k.Type)
		}
		seen[k.Column] = true
	}
	for i, c := range e.Columns {
		if !identRe.MatchString(c) {
			return fmt.Errorf(`columns[%d]": %q is not a column name`, i, c)
		}
	}
	return nil
}

// MaxRetryDelay is the longest step a retry schedule may have: a delayed
// retry waits on the broker, and a day is already far past any outage a
// retry should ride out.
const MaxRetryDelay = 24 * time.Hour

// Duration is a time.Duration that decodes from YAML strings like "10s".
type Duration time.Duration

// UnmarshalYAML decodes "1m30s" style durations.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML encodes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// decodeNode decodes a YAML node strictly into v. yaml.v3 refuses unknown
// keys only through a Decoder, so strictness is checked on a scratch value
// decoded from the re-encoded node; v itself is decoded from the node, which
// keeps its nulls and line numbers.
func decodeNode(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	scratch := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	if err := decodeStrict(data, scratch); err != nil {
		return err
	}
	return n.Decode(v)
}
