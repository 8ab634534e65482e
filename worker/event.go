package worker

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/revsync/revsync/jobs"
)

// SchemaV1 is the JSON Schema (draft 2020-12) of an entity-changed event
// body, version 1, as shipped in schema/entity-changed.v1.json.
//
//go:embed schema/entity-changed.v1.json
var SchemaV1 []byte

// schemaV1ID is the $id of SchemaV1.
const schemaV1ID = "https://github.com/revsync/revsync/worker/schema/entity-changed.v1.json"

// DefaultMaxMessageBytes is the largest body Decode accepts when Config
// names no limit: 256 KiB.
const DefaultMaxMessageBytes = 256 << 10

// eventSchema is SchemaV1 compiled, with "format" asserted so that
// occurred_at must be an RFC 3339 date-time.
var eventSchema = func() *jsonschema.Schema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(SchemaV1))
	if err != nil {
		panic(fmt.Sprintf("worker: embedded schema: %v", err))
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(schemaV1ID, doc); err != nil {
		panic(fmt.Sprintf("worker: embedded schema: %v", err))
	}
	return c.MustCompile(schemaV1ID)
}()

// Event is a decoded entity-changed event: which integration's connector,
// which entity, what happened to it and when. Marshalled with
// encoding/json it is a valid version 1 body.
type Event struct {
	// Version is the schema version; 0 when the body did not name it.
	Version     int    `json:"version,omitempty"`
	Integration string `json:"integration"`
	Connector   string `json:"connector"`
	// ID is the entity identifier by key column. Values are strings or
	// json.Number; jobs.Entity.IDFilter checks them against the key.
	ID map[string]any `json:"id"`
	Op jobs.Op        `json:"op"`
	// Parameters override the connector's parameters for this run.
	// Numbers are json.Number.
	Parameters map[string]any `json:"parameters,omitempty"`
	OccurredAt time.Time      `json:"occurred_at"`
	// MessageID is the AMQP message_id of the message that carried the
	// event. It is not part of the body.
	MessageID string `json:"-"`
}

// Decode checks and decodes an entity-changed event body carried by the
// message messageID. In order: the body must be at most maxBytes long
// (checked before any parsing; maxBytes <= 0 means DefaultMaxMessageBytes),
// the message must have an ID, the body must be one JSON value (numbers are
// kept as json.Number) and that value must satisfy SchemaV1.
//
// Every error is a jobs.PermanentError of class jobs.ClassInvalidMessage
// whose text says what is wrong, e.g.
// `field "op": value must be one of "upsert", "delete", got "merge"`.
// Decode does not check the identifier against a connector's key; that is
// jobs.Entity.IDFilter's job once the route is known.
func Decode(body []byte, messageID string, maxBytes int) (*Event, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	if len(body) > maxBytes {
		return nil, invalid("body is %d bytes, over the %d-byte limit", len(body), maxBytes)
	}
	if messageID == "" {
		return nil, invalid("missing message_id property: every event message needs a message ID")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, invalid("%s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("invalid JSON: unexpected data after the top-level value at byte %d", dec.InputOffset())
	}
	if err := eventSchema.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, invalid("%s", schemaProblem(ve))
		}
		return nil, invalid("%v", err)
	}
	obj := doc.(map[string]any) // the schema guarantees the shapes below
	ev := &Event{
		Integration: obj["integration"].(string),
		Connector:   obj["connector"].(string),
		ID:          obj["id"].(map[string]any),
		Op:          jobs.Op(obj["op"].(string)),
		MessageID:   messageID,
	}
	if v, ok := obj["version"].(json.Number); ok {
		n, _ := v.Int64()
		ev.Version = int(n)
	}
	if p, ok := obj["parameters"].(map[string]any); ok {
		ev.Parameters = p
	}
	at := obj["occurred_at"].(string)
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, invalid("field %q: %q is not an RFC 3339 date-time", "occurred_at", at)
	}
	ev.OccurredAt = t
	return ev, nil
}

func invalid(format string, args ...any) error {
	return jobs.PermanentClass(jobs.ClassInvalidMessage, fmt.Errorf(format, args...))
}

// jsonProblem describes why a body is not JSON.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return "empty body: want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON: unexpected end of input"
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syn.Offset, syn)
	}
	return fmt.Sprintf("invalid JSON: %v", err)
}

// schemaProblem renders the leaf errors of a validation error, one clause
// per problem, sorted: `field "op": value must be one of ...`.
func schemaProblem(ve *jsonschema.ValidationError) string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, describe(e))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	slices.Sort(out)
	out = slices.Compact(out)
	return strings.Join(out, "; ")
}

var printer = message.NewPrinter(language.English)

// describe renders one validation error with the field it is about.
func describe(e *jsonschema.ValidationError) string {
	var what string
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		return prefix(e.InstanceLocation, "missing "+fieldList(k.Missing))
	case *kind.AdditionalProperties:
		return prefix(e.InstanceLocation, "unknown "+fieldList(k.Properties))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = jsonText(w)
		}
		what = fmt.Sprintf("value must be one of %s, got %s", strings.Join(want, ", "), jsonText(k.Got))
	case *kind.Const:
		what = fmt.Sprintf("value must be %s, got %s", jsonText(k.Want), jsonText(k.Got))
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		what = fmt.Sprintf("must be %s, got %s", strings.Join(want, " or "), article(k.Got))
	case *kind.Format:
		what = fmt.Sprintf("%s is not a valid %s", jsonText(k.Got), k.Want)
	case *kind.MinProperties:
		what = fmt.Sprintf("must have at least %d propert%s", k.Want, plural(k.Want, "y", "ies"))
	case *kind.MinLength:
		what = "must not be empty"
		if k.Want > 1 {
			what = fmt.Sprintf("must be at least %d characters long", k.Want)
		}
	default:
		what = e.ErrorKind.LocalizedString(printer)
	}
	if len(e.InstanceLocation) == 0 {
		return "event: " + what
	}
	return prefix(e.InstanceLocation, what)
}

// prefix names the field at loc, if any, before what.
func prefix(loc []string, what string) string {
	if len(loc) == 0 {
		return what
	}
	return fmt.Sprintf("field %q: %s", strings.Join(loc, "."), what)
}

// fieldList renders `field "a"` or `fields "a", "b"`.
func fieldList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return plural(len(q), "field ", "fields ") + strings.Join(q, ", ")
}

func jsonText(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// article prefixes a JSON type name with its article: "an object".
func article(typ string) string {
	switch typ {
	case "null":
		return typ
	case "object", "array", "integer":
		return "an " + typ
	}
	return "a " + typ
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
