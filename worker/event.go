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
	"unicode/utf8"

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

// Limits Decode enforces on a body before validating it against SchemaV1,
// so that checking any body under the size limit takes time linear in its
// size: the schema validator turns each number into an exact rational, and
// one like 1e999999 alone costs tens of milliseconds.
const (
	// MaxIDColumns is the most properties an event's "id" may have; an
	// entity key has a handful of columns.
	MaxIDColumns = 16
	// MaxDepth is the deepest nesting of objects and arrays in a body; the
	// event object itself is at depth 1, its "id" at depth 2.
	MaxDepth = 32
	// MaxNumberLength is the longest number literal in a body, in
	// characters.
	MaxNumberLength = 64
	// MaxNumberExponent is the largest magnitude of a number literal's
	// exponent: 1e400 and 1e-400 are accepted, 1e401 is not.
	MaxNumberExponent = 400
)

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
// the message must have an ID, the body must be valid UTF-8 and one JSON
// value (numbers are kept as json.Number) with no \u escape of an unpaired
// UTF-16 surrogate, no object with a duplicate key, no nesting deeper than
// MaxDepth, no number literal longer than MaxNumberLength or with an
// exponent beyond ±MaxNumberExponent and no more than MaxIDColumns
// properties in "id"; and that value must satisfy SchemaV1. The checks
// before the schema's take time linear in the body's size; none of them
// alters the body: what encoding/json would silently replace (invalid
// UTF-8, unpaired surrogates) or drop (all but the last of duplicate keys)
// is rejected instead.
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
	if !utf8.Valid(body) {
		return nil, invalid("body is not valid UTF-8: invalid byte at offset %d", invalidUTF8At(body))
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
	// body is now known to be one syntactically valid JSON value.
	if at, esc, ok := unpairedSurrogate(body); ok {
		return nil, invalid("invalid JSON at byte %d: %s is an unpaired UTF-16 surrogate", at, esc)
	}
	if problem := checkTokens(body); problem != "" {
		return nil, invalid("%s", problem)
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

// invalidUTF8At returns the offset of the first byte of b that does not
// start a valid UTF-8 sequence; len(b) when there is none.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// unpairedSurrogate finds the first \u escape of a UTF-16 surrogate that is
// not part of a pair, which encoding/json silently replaces with U+FFFD. It
// returns its offset and text. body must be valid JSON: a backslash then
// only occurs in a string, starting an escape.
func unpairedSurrogate(body []byte) (at int, esc string, ok bool) {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if body[i+1] != 'u' {
			i++ // \", \\, \n, ...: skip the escaped character
			continue
		}
		r := hex4(body[i+2 : i+6])
		switch {
		case 0xD800 <= r && r < 0xDC00:
			if i+12 <= len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
				if lo := hex4(body[i+8 : i+12]); 0xDC00 <= lo && lo < 0xE000 {
					i += 11
					continue
				}
			}
			return i, string(body[i : i+6]), true
		case 0xDC00 <= r && r < 0xE000:
			return i, string(body[i : i+6]), true
		}
		i += 5
	}
	return 0, "", false
}

// hex4 decodes four hexadecimal digits, which valid JSON guarantees.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// container is an object or array checkTokens is inside.
type container struct {
	keys  map[string]struct{} // the keys seen so far; nil for an array
	key   string              // object: the key whose value comes next
	index int                 // array: the index of the next element
}

// checkTokens walks body, one syntactically valid JSON value, in one pass
// and describes the first thing in it Decode does not accept before schema
// validation: a duplicate key, nesting deeper than MaxDepth, a number
// literal over MaxNumberLength or with an exponent beyond
// ±MaxNumberExponent, or more than MaxIDColumns properties in "id". It
// returns "" when there is none.
func checkTokens(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []container
	wantKey := false // the next string is an object key
	// path is where the next value goes, as SchemaV1's errors name it.
	path := func() []string {
		p := make([]string, len(stack))
		for i, c := range stack {
			if c.keys != nil {
				p[i] = c.key
			} else {
				p[i] = strconv.Itoa(c.index)
			}
		}
		return p
	}
	// valueDone moves past a complete value in the enclosing container.
	valueDone := func() {
		if len(stack) == 0 {
			wantKey = false
			return
		}
		top := &stack[len(stack)-1]
		wantKey = top.keys != nil
		if !wantKey {
			top.index++
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return ""
		}
		if err != nil {
			return jsonProblem(err) // not reached: body was decoded already
		}
		if wantKey {
			if _, ok := tok.(json.Delim); ok { // '}': the object ends
				stack = stack[:len(stack)-1]
				valueDone()
				continue
			}
			key := tok.(string)
			top := &stack[len(stack)-1]
			if _, dup := top.keys[key]; dup {
				return prefix(path()[:len(stack)-1], fmt.Sprintf("duplicate key %q", key))
			}
			top.keys[key] = struct{}{}
			top.key = key
			if len(stack) == 2 && stack[0].keys != nil && stack[0].key == "id" && len(top.keys) > MaxIDColumns {
				return prefix([]string{"id"}, fmt.Sprintf("has more than %d properties: an entity key has at most %d columns", MaxIDColumns, MaxIDColumns))
			}
			wantKey = false
			continue
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if len(stack) == MaxDepth {
					return prefix(path(), fmt.Sprintf("nested deeper than %d levels", MaxDepth))
				}
				c := container{}
				if v == '{' {
					c.keys = map[string]struct{}{}
					wantKey = true
				}
				stack = append(stack, c)
			default: // ']'
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case json.Number:
			if problem := numberProblem(string(v)); problem != "" {
				return prefix(path(), problem)
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// numberProblem says why a number literal is refused; "" when it is not.
func numberProblem(n string) string {
	if len(n) > MaxNumberLength {
		return fmt.Sprintf("number %s… is %d characters long, over the limit of %d", n[:MaxNumberLength/2], len(n), MaxNumberLength)
	}
	i := strings.IndexAny(n, "eE")
	if i < 0 {
		return ""
	}
	if exp, err := strconv.Atoi(n[i+1:]); err != nil || exp > MaxNumberExponent || exp < -MaxNumberExponent {
		return fmt.Sprintf("number %s is out of range: its exponent must be between -%d and %d", n, MaxNumberExponent, MaxNumberExponent)
	}
	return ""
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
	case *kind.MaxProperties:
		what = fmt.Sprintf("must have at most %d propert%s", k.Want, plural(k.Want, "y", "ies"))
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
