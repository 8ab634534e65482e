package mapping

import (
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The formats a from or template spec may convert its value to.
const (
	FormatString    = "string"
	FormatInteger   = "integer"
	FormatDecimal   = "decimal"
	FormatTimestamp = "timestamp"
	FormatBoolean   = "boolean"
)

// The named timestamp layouts.
const (
	LayoutRFC3339 = "rfc3339" // 2006-01-02T15:04:05.999999999Z07:00, the default
	LayoutDate    = "date"    // 2006-01-02
)

// maxScale bounds a decimal's scale; more decimals than this is a typo.
const maxScale = 30

// converter turns a non-null, normalized value into the output value.
type converter func(v any) (any, error)

// newConverter checks a spec's format settings and returns its converter,
// nil for no format.
func newConverter(format string, scale *int, layout string) (converter, error) {
	if scale != nil && format != FormatDecimal {
		return nil, fmt.Errorf("scale: only allowed with format %q", FormatDecimal)
	}
	if layout != "" && format != FormatTimestamp {
		return nil, fmt.Errorf("layout: only allowed with format %q", FormatTimestamp)
	}
	switch format {
	case "":
		return nil, nil
	case FormatString:
		return func(v any) (any, error) { return toString(v) }, nil
	case FormatInteger:
		return toInteger, nil
	case FormatDecimal:
		if scale != nil && (*scale < 0 || *scale > maxScale) {
			return nil, fmt.Errorf("scale: want 0 to %d, got %d", maxScale, *scale)
		}
		return func(v any) (any, error) { return toDecimalNumber(v, scale) }, nil
	case FormatBoolean:
		return toBoolean, nil
	case FormatTimestamp:
		goLayout, err := timeLayout(layout)
		if err != nil {
			return nil, err
		}
		return func(v any) (any, error) { return toTimestamp(v, goLayout) }, nil
	}
	return nil, fmt.Errorf("format: unknown format %q (want %s, %s, %s, %s or %s)", format,
		FormatString, FormatInteger, FormatDecimal, FormatTimestamp, FormatBoolean)
}

// timeLayout resolves a layout name to a Go layout, checking that a Go
// layout has at least one date or time element.
func timeLayout(layout string) (string, error) {
	switch layout {
	case "", LayoutRFC3339:
		return time.RFC3339Nano, nil
	case LayoutDate:
		return time.DateOnly, nil
	}
	probe := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if probe.Format(layout) == layout {
		return "", fmt.Errorf("layout: %q has no date or time element (want %q, %q or a Go layout such as %q)",
			layout, LayoutRFC3339, LayoutDate, time.DateTime)
	}
	return layout, nil
}

// normalize reduces a row value to nil, string, []byte, bool, int64,
// uint64 (only above MaxInt64), float32, float64, json.Number or time.Time
// where it can: named types become their underlying kind, pointers are
// followed, and driver.Valuer values (pgtype.Numeric and friends) are asked
// for their value. Anything else is returned unchanged.
func normalize(v any) (any, error) {
	for range 8 { // a Valuer may return another Valuer; stop eventually
		switch x := v.(type) {
		case nil, string, bool, int64, float32, float64, json.Number, time.Time:
			return x, nil
		case []byte:
			if x == nil {
				return nil, nil
			}
			return x, nil
		case int:
			return int64(x), nil
		case int32:
			return int64(x), nil
		case int16:
			return int64(x), nil
		case int8:
			return int64(x), nil
		case uint64:
			if x <= math.MaxInt64 {
				return int64(x), nil
			}
			return x, nil
		case uint:
			return normalize(uint64(x))
		case uint32:
			return int64(x), nil
		case uint16:
			return int64(x), nil
		case uint8:
			return int64(x), nil
		case driver.Valuer:
			if rv := reflect.ValueOf(x); rv.Kind() == reflect.Pointer && rv.IsNil() {
				return nil, nil
			}
			dv, err := x.Value()
			if err != nil {
				return nil, err
			}
			v = dv
			continue
		}
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Pointer, reflect.Interface:
			if rv.IsNil() {
				return nil, nil
			}
			v = rv.Elem().Interface()
			continue
		case reflect.Map, reflect.Slice:
			if rv.IsNil() {
				return nil, nil
			}
		case reflect.String:
			return rv.String(), nil
		case reflect.Bool:
			return rv.Bool(), nil
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return rv.Int(), nil
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			return normalize(rv.Uint())
		case reflect.Float32:
			return float32(rv.Float()), nil
		case reflect.Float64:
			return rv.Float(), nil
		}
		return v, nil
	}
	return v, nil
}

// describe renders a value for an error message, shortened.
func describe(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = strconv.Quote(x)
	case []byte:
		s = strconv.Quote(string(x))
	default:
		s = fmt.Sprintf("%v", x)
	}
	const limit = 64
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return fmt.Sprintf("%s (%T)", s, v)
}

// toString renders a normalized value as text.
func toString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		if !utf8.Valid(x) {
			return "", fmt.Errorf("value %s is not UTF-8 text", describe(v))
		}
		return string(x), nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float32, float64:
		d, err := toDecimal(x)
		if err != nil {
			return "", err
		}
		return d.String(), nil
	case json.Number:
		return x.String(), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case fmt.Stringer:
		return x.String(), nil
	}
	return "", fmt.Errorf("value %s cannot be rendered as a string", describe(v))
}

// toInteger renders a whole number as a JSON number. A fraction is an
// error, not truncated.
func toInteger(v any) (any, error) {
	d, err := toDecimal(v)
	if err != nil {
		return nil, fmt.Errorf("value %s is not an integer", describe(v))
	}
	s := d.String()
	if strings.Contains(s, ".") {
		return nil, fmt.Errorf("value %s is not an integer", describe(v))
	}
	return json.Number(s), nil
}

// toDecimalNumber renders a number as a JSON number, rounded to scale when
// it is set.
func toDecimalNumber(v any, scale *int) (any, error) {
	d, err := toDecimal(v)
	if err != nil {
		return nil, fmt.Errorf("value %s is not a decimal number", describe(v))
	}
	if scale != nil {
		d = d.round(*scale)
	}
	return json.Number(d.String()), nil
}

// toBoolean accepts booleans, the strings strconv.ParseBool knows and the
// integers 0 and 1.
func toBoolean(v any) (any, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(strings.TrimSpace(x)); err == nil {
			return b, nil
		}
	case int64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	}
	return nil, fmt.Errorf("value %s is not a boolean", describe(v))
}

// timeInputLayouts are the text forms a timestamp value may arrive in;
// those without a zone are taken as UTC. PostgreSQL's own output is among
// them.
var timeInputLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999",
	time.DateOnly,
}

// toTimestamp renders a time (or a string holding one) in layout, in UTC.
func toTimestamp(v any, layout string) (any, error) {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(layout), nil
	case string:
		s := strings.TrimSpace(x)
		switch strings.ToLower(s) {
		case "infinity", "+infinity", "-infinity":
			// PostgreSQL's infinite dates and timestamps, which the
			// reader passes on as these strings: no layout can render them.
			return nil, fmt.Errorf("value %s: infinity is not a timestamp (an infinite PostgreSQL date or timestamp cannot be formatted)", describe(v))
		}
		for _, l := range append(timeInputLayouts, layout) {
			if t, err := time.Parse(l, s); err == nil {
				return t.UTC().Format(layout), nil
			}
		}
	}
	return nil, fmt.Errorf("value %s is not a timestamp", describe(v))
}

// decimal is an exact decimal number: (-1)^neg × unscaled × 10^-scale.
type decimal struct {
	neg      bool
	unscaled *big.Int // magnitude, ≥ 0
	scale    int      // ≥ 0
}

// decimalRe is a decimal number in text: sign, digits with an optional
// point, optional exponent.
var decimalRe = regexp.MustCompile(`^([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]{1,4}))?$`)

// maxExponent bounds the exponent of a decimal in text, so that "1e9999"
// cannot make a huge number.
const maxExponent = 400

var errNotDecimal = errors.New("not a decimal number")

// parseDecimal parses decimal text such as "-12.50", "1e3" or ".5".
func parseDecimal(s string) (decimal, error) {
	m := decimalRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil || m[2]+m[3] == "" {
		return decimal{}, errNotDecimal
	}
	exp := 0
	if m[4] != "" {
		exp, _ = strconv.Atoi(m[4]) // at most 4 digits: fits
		if exp > maxExponent || exp < -maxExponent {
			return decimal{}, errNotDecimal
		}
	}
	u, ok := new(big.Int).SetString(m[2]+m[3], 10)
	if !ok {
		return decimal{}, errNotDecimal
	}
	d := decimal{neg: m[1] == "-", unscaled: u, scale: len(m[3]) - exp}
	if d.scale < 0 {
		d.unscaled.Mul(d.unscaled, pow10(-d.scale))
		d.scale = 0
	}
	return d, nil
}

// toDecimal converts a normalized number (or numeric text) exactly. A float
// becomes the shortest decimal that reads back as the same float of its
// own size, so a float32 9.80000019 is 9.8.
func toDecimal(v any) (decimal, error) {
	switch x := v.(type) {
	case int64:
		return parseDecimal(strconv.FormatInt(x, 10))
	case uint64:
		return parseDecimal(strconv.FormatUint(x, 10))
	case float32:
		return floatDecimal(float64(x), 32)
	case float64:
		return floatDecimal(x, 64)
	case json.Number:
		return parseDecimal(string(x))
	case string:
		return parseDecimal(x)
	case []byte:
		return parseDecimal(string(x))
	}
	return decimal{}, errNotDecimal
}

func floatDecimal(f float64, bits int) (decimal, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return decimal{}, errNotDecimal
	}
	return parseDecimal(strconv.FormatFloat(f, 'e', -1, bits))
}

// round rounds d to scale decimals, half away from zero.
func (d decimal) round(scale int) decimal {
	if d.scale <= scale {
		return d
	}
	div := pow10(d.scale - scale)
	q, r := new(big.Int).QuoRem(d.unscaled, div, new(big.Int))
	if r.Lsh(r, 1).Cmp(div) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	return decimal{neg: d.neg, unscaled: q, scale: scale}
}

// String renders d without trailing fractional zeros and without a sign
// on zero: "9.8", "-0.05", "100".
func (d decimal) String() string {
	digits := d.unscaled.String()
	if d.scale > 0 {
		if len(digits) <= d.scale {
			digits = strings.Repeat("0", d.scale-len(digits)+1) + digits
		}
		point := len(digits) - d.scale
		frac := strings.TrimRight(digits[point:], "0")
		digits = digits[:point]
		if frac != "" {
			digits += "." + frac
		}
	}
	if d.neg && d.unscaled.Sign() != 0 {
		return "-" + digits
	}
	return digits
}

func pow10(n int) *big.Int {
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
}
