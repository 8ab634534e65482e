package postgres

import (
	"encoding/json"
	"math"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

func TestFieldValue(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"string", "ALFKI", "ALFKI"},
		{"bool", true, true},
		{"bytes", []byte{1, 2}, []byte{1, 2}},
		{"int16", int16(12), int64(12)},
		{"int32", int32(-7), int64(-7)},
		{"int64", int64(1) << 40, int64(1) << 40},
		{"uint32 oid", uint32(25), int64(25)},
		{"float64", 1.5, 1.5},
		{"float32 shortest decimal", float32(0.15), 0.15},
		{"float32 42.4", float32(42.4), 42.4},
		{"float32 whole", float32(14), 14.0},
		{"time", at, at},
		{"infinite date or timestamp", pgtype.Infinity, "infinity"},
		{"-infinite date or timestamp", pgtype.NegativeInfinity, "-infinity"},
		{"date struct", pgtype.Date{Time: at, Valid: true}, at},
		{"date struct infinity", pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true}, "infinity"},
		{"date struct null", pgtype.Date{}, nil},
		{"timestamp struct -infinity", pgtype.Timestamp{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-infinity"},
		{"timestamptz struct", pgtype.Timestamptz{Time: at, Valid: true}, at},
		{"timestamptz struct infinity", pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}, "infinity"},
		{"array of infinite dates", []any{pgtype.Infinity, at, pgtype.NegativeInfinity}, []any{"infinity", at, "-infinity"}},
		{"numeric keeps scale", pgtype.Numeric{Int: big.NewInt(1250), Exp: -2, Valid: true}, json.Number("12.50")},
		{"numeric negative", pgtype.Numeric{Int: big.NewInt(-5), Exp: -1, Valid: true}, json.Number("-0.5")},
		{"numeric exponent", pgtype.Numeric{Int: big.NewInt(12), Exp: 3, Valid: true}, json.Number("12000")},
		{"numeric null", pgtype.Numeric{}, nil},
		{"numeric NaN", pgtype.Numeric{NaN: true, Valid: true}, "NaN"},
		{"numeric infinity", pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}, "Infinity"},
		{"numeric -infinity", pgtype.Numeric{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-Infinity"},
		{"uuid", [16]byte{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00}, "123e4567-e89b-12d3-a456-426614174000"},
		{"inet", netip.MustParsePrefix("10.0.0.1/32"), "10.0.0.1/32"},
		{"array", []any{int16(1), float32(0.25), nil}, []any{int64(1), 0.25, nil}},
		{"json object", map[string]any{"a": 1.0}, map[string]any{"a": 1.0}},
		{"interval via driver.Valuer", pgtype.Interval{Microseconds: 90 * 1e6, Valid: true}, "00:01:30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, fieldValue(tt.in))
		})
	}
}

func TestFieldValueEncodesAsJSON(t *testing.T) {
	t.Parallel()
	row := map[string]any{
		"price":    fieldValue(pgtype.Numeric{Int: big.NewInt(1999), Exp: -2, Valid: true}),
		"discount": fieldValue(float32(0.15)),
		"nan":      fieldValue(pgtype.Numeric{NaN: true, Valid: true}),
	}
	b, err := json.Marshal(row)
	require.NoError(t, err)
	require.JSONEq(t, `{"price": 19.99, "discount": 0.15, "nan": "NaN"}`, string(b))
	require.Contains(t, string(b), `"price":19.99`, "numeric is written as a number, exactly")
}

func TestFloat32To64Specials(t *testing.T) {
	t.Parallel()
	require.True(t, math.IsNaN(fieldValue(float32(math.NaN())).(float64)))
	require.True(t, math.IsInf(fieldValue(float32(math.Inf(1))).(float64), 1))
}
