package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecimalRound(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		scale int // -1: no rounding
		want  string
	}{
		{"0", 2, "0"},
		{"-0.00", -1, "0"},
		{"-0.004", 2, "0"},
		{"-0.005", 2, "-0.01"},
		{"0.125", 2, "0.13"},
		{"0.135", 2, "0.14"},
		{"-0.125", 2, "-0.13"},
		{"0.1249999", 2, "0.12"},
		{"9.999", 2, "10"},
		{"-9.995", 2, "-10"},
		{"2.5", 0, "3"},
		{"1.5", 0, "2"},
		{"0.5", 0, "1"},
		{"0.49", 0, "0"},
		{"100", 2, "100"},
		{"1200", 0, "1200"},
		{"1.2e2", -1, "120"},
		{"1.25e-3", -1, "0.00125"},
		{"1.25e-3", 3, "0.001"},
		{".5", -1, "0.5"},
		{"5.", -1, "5"},
		{"+007.10", -1, "7.1"},
		{"123456789012345678901234567890.123456789", 3, "123456789012345678901234567890.123"},
	}
	for _, tt := range tests {
		d, err := parseDecimal(tt.in)
		require.NoError(t, err, tt.in)
		if tt.scale >= 0 {
			d = d.round(tt.scale)
		}
		require.Equal(t, tt.want, d.String(), "%s scale %d", tt.in, tt.scale)
	}
}

func TestParseDecimalRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", ".", "-", "e5", "1e", "1.2.3", "1,5", "NaN", "Inf", "0x10", "1/3", "1e401", "1e99999"} {
		_, err := parseDecimal(in)
		require.Error(t, err, in)
	}
}

func TestFloatDecimal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   any
		want string
	}{
		{float32(9.80000019), "9.8"},
		{float32(0.15), "0.15"},
		{float32(1e-7), "0.0000001"},
		{float64(float32(9.8)), "9.800000190734863"}, // a float32 widened too early keeps its error
		{1.005, "1.005"},
		{1e21, "1000000000000000000000"},
		{int64(-3), "-3"},
		{uint64(18446744073709551615), "18446744073709551615"},
	}
	for _, tt := range tests {
		d, err := toDecimal(tt.in)
		require.NoError(t, err)
		require.Equal(t, tt.want, d.String(), "%v", tt.in)
	}
}

// TestToTimestampInfinity: PostgreSQL's infinite dates and timestamps,
// which the postgres reader passes on as "infinity" and "-infinity", are
// reported as such, not as unreadable text.
func TestToTimestampInfinity(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"infinity", "-infinity", " Infinity "} {
		_, err := toTimestamp(in, "2006-01-02")
		require.ErrorContains(t, err, "infinity is not a timestamp", "%q", in)
	}
}
