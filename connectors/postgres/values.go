package postgres

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// fieldValue turns a value decoded by pgx into a plain Go value that
// encodes to JSON without surprises, so processors see one small set of
// types:
//
//   - NULL → nil; text types → string; bool → bool; bytea → []byte.
//   - every integer type (smallint, integer, bigint, oid) → int64, the type
//     integer key values have too.
//   - double precision → float64; real (float4) → float64 holding the
//     shortest decimal that round-trips the float32, so a stored 0.15 reads
//     as 0.15, not 0.15000000596046448.
//   - numeric → json.Number holding the exact decimal text with its scale
//     ("12.50"): no float rounding, encodes as a JSON number, and is a
//     string underneath for processors that format decimals. NaN and
//     ±Infinity, which are not JSON numbers, become the strings "NaN",
//     "Infinity" and "-Infinity".
//   - date, timestamp, timestamptz → time.Time; 'infinity' and
//     '-infinity', which no time.Time can hold, → the strings "infinity"
//     and "-infinity" (PostgreSQL's own spelling), never a number.
//   - uuid → its canonical string; inet/cidr → their text.
//   - json/jsonb stay as decoded (maps, slices, float64, string…); arrays
//     become []any with every element converted.
//   - anything else that implements driver.Valuer (interval, time of day,
//     ranges…) → its driver value, usually its text form; otherwise the
//     value as pgx decoded it.
func fieldValue(v any) any {
	switch v := v.(type) {
	case nil, string, bool, int64, float64, time.Time, []byte, json.Number:
		return v
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case int:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case float32:
		return float32To64(v)
	case pgtype.Numeric:
		return numericValue(v)
	case pgtype.InfinityModifier:
		// pgx decodes an infinite date, timestamp or timestamptz as
		// the bare modifier, an int8 that would encode as 1 or -1.
		return infinityValue(v)
	case pgtype.Date:
		return temporalValue(v.Valid, v.InfinityModifier, v.Time)
	case pgtype.Timestamp:
		return temporalValue(v.Valid, v.InfinityModifier, v.Time)
	case pgtype.Timestamptz:
		return temporalValue(v.Valid, v.InfinityModifier, v.Time)
	case [16]byte:
		return uuidString(v)
	case netip.Prefix:
		return v.String()
	case netip.Addr:
		return v.String()
	case map[string]any:
		return v
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = fieldValue(e)
		}
		return out
	case driver.Valuer:
		dv, err := v.Value()
		if err != nil {
			return fmt.Sprint(v)
		}
		return fieldValue(dv)
	}
	return v
}

// float32To64 widens f to the float64 nearest its shortest decimal form.
func float32To64(f float32) float64 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return float64(f)
	}
	d, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	if err != nil {
		return float64(f)
	}
	return d
}

// numericValue converts a numeric; see fieldValue.
func numericValue(n pgtype.Numeric) any {
	switch {
	case !n.Valid:
		return nil
	case n.NaN:
		return "NaN"
	case n.InfinityModifier == pgtype.Infinity:
		return "Infinity"
	case n.InfinityModifier == pgtype.NegativeInfinity:
		return "-Infinity"
	}
	v, err := n.Value()
	if err != nil {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return v
	}
	return json.Number(s)
}

// infinityValue converts the infinity of a date or timestamp; see
// fieldValue. A finite modifier has no value of its own: nil.
func infinityValue(m pgtype.InfinityModifier) any {
	switch {
	case m > pgtype.Finite:
		return "infinity"
	case m < pgtype.Finite:
		return "-infinity"
	}
	return nil
}

// temporalValue converts a date or timestamp held in a pgtype struct.
func temporalValue(valid bool, m pgtype.InfinityModifier, t time.Time) any {
	switch {
	case !valid:
		return nil
	case m != pgtype.Finite:
		return infinityValue(m)
	}
	return t
}

// uuidString formats a uuid as 8-4-4-4-12 lowercase hex.
func uuidString(b [16]byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0x0f])
	}
	return string(out)
}
