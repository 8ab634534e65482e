package http

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// requireNoPiece fails when s holds a piece of secret n bytes or longer.
func requireNoPiece(t *testing.T, s, secret string, n int, msgAndArgs ...any) {
	t.Helper()
	pieces := map[string]bool{}
	for i := 0; i+n <= len(secret); i++ {
		pieces[secret[i:i+n]] = true
	}
	for i := 0; i+n <= len(s); i++ {
		if pieces[s[i:i+n]] {
			require.Failf(t, "a piece of the secret is quoted", "%q holds %q; %v", s, s[i:i+n], msgAndArgs)
		}
	}
}

func TestRedactorQuote(t *testing.T) {
	t.Parallel()
	const tok = "Zk7Q-m2xV9pL4wR8nT1s"
	tests := []struct {
		name, body, want string
	}{
		{"no secret", `{"error":"bad"}`, `{"error":"bad"}`},
		{"whole", `{"auth":"Bearer ` + tok + `"}`, `{"auth":"Bearer [REDACTED]"}`},
		{"twice, adjacent", tok + tok + "!", "[REDACTED]!"},
		{"cut off where the read stopped", "seen: " + tok[:7], "seen: [REDACTED]"},
		{"shortened by the remote", "seen: Bearer " + tok[:9] + "…", "seen: Bearer [REDACTED]…"},
		{"its end only", "seen: …" + tok[12:], "seen: …[REDACTED]"},
		{"a piece shorter than a fragment stays", "Zk7 m2x", "Zk7 m2x"},
		{"invalid UTF-8 inside is dropped first", "x " + tok[:5] + "\xff" + tok[5:] + " y", "x [REDACTED] y"},
	}
	r := newRedactor(tok)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, r.quote([]byte(tt.body), maxErrorBody))
		})
	}
	require.Equal(t, "a", (*redactor)(nil).quote([]byte(" a "), maxErrorBody))
	require.Equal(t, maxErrorBody+len(tok), r.readLimit(maxErrorBody))
	require.Equal(t, maxErrorBody, (*redactor)(nil).readLimit(maxErrorBody))
}

// TestRedactorQuoteEveryOffset moves a secret across the point where the
// body's reading stops and the quote is cut: no piece of it of 4 bytes or
// more is ever quoted, the quote is at most 512 bytes of valid UTF-8, and
// a marker is never cut.
func TestRedactorQuoteEveryOffset(t *testing.T) {
	t.Parallel()
	tokens := []string{
		"s3cr3t-t0ken-4f9a",                          // short
		"Lq8Zt2Vw9Xk4Rm7Nc3Hb6Jf1Gd5Ys0Ue8Ta2Wq4E",   // 40: cut by the old reader
		strings.Repeat("Kx7Vb2Nq9Wm4Zr8Tc1Hy6J", 10), // 220, JWT-sized
	}
	for _, tok := range tokens {
		r := newRedactor(tok)
		limit := r.readLimit(maxErrorBody)
		for _, filler := range []string{"p", "é", "."} {
			for off := 0; off <= limit+1; off++ {
				pad := strings.Repeat(filler, off/len(filler)+1)[:off]
				pad = strings.ToValidUTF8(pad, "")
				bodies := []string{
					pad + tok + strings.Repeat(filler, 600),
					tok + pad + tok + strings.Repeat(filler, 600),
					pad + "Bearer " + tok[:len(tok)/2] + "…" + strings.Repeat(filler, 600),
				}
				for i, body := range bodies {
					b := []byte(body)
					if len(b) > limit {
						b = b[:limit] // what the writer reads
					}
					q := r.quote(b, maxErrorBody)
					require.LessOrEqual(t, len(q), maxErrorBody)
					require.True(t, utf8.ValidString(q))
					requireNoPiece(t, q, tok, minFragment, "token %d bytes, filler %q, offset %d, body %d", len(tok), filler, off, i)
					if k := strings.LastIndex(q, "["); k >= 0 && strings.HasPrefix(redactedMarker, q[k:]) {
						require.True(t, strings.HasSuffix(q, redactedMarker), "cut marker: %q", q[k:])
					}
				}
			}
		}
	}
}

// TestRedactorQuoteOldLeak is the layout that leaked 25 bytes of a 40-byte
// token: the token, 477 bytes, the token again, read up to 512+40 bytes,
// masked with a shorter marker and only then cut to 512.
func TestRedactorQuoteOldLeak(t *testing.T) {
	t.Parallel()
	const tok = "Lq8Zt2Vw9Xk4Rm7Nc3Hb6Jf1Gd5Ys0Ue8Ta2Wq4E"
	r := newRedactor(tok)
	body := []byte(tok + strings.Repeat("p", 477) + tok)
	q := r.quote(body[:r.readLimit(maxErrorBody)], maxErrorBody)
	requireNoPiece(t, q, tok, minFragment)
	require.Equal(t, "[REDACTED]"+strings.Repeat("p", 477)+"[REDACTED]", q)
}

func TestSecretHeader(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"Authorization", "authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "api_key",
		"Ocp-Apim-Subscription-Key", "X-APIKEY", "X-Auth-Token", "Token", "X-Client-Secret", "X-Password"} {
		require.True(t, secretHeader(name), name)
	}
	for _, name := range []string{"X-Source", "X-Tenant", "Accept", "Keyboard", "X-Monkey-Type"} {
		require.False(t, secretHeader(name), name)
	}
}

func TestHeaderSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, value string
		want        []string
	}{
		{"Authorization", "Basic dXNlcjpwYXNz", []string{"dXNlcjpwYXNz"}},
		{"authorization", "Bearer  abc.def ", []string{"abc.def"}},
		{"Authorization", "abc.def", []string{"abc.def"}},
		{"Cookie", `session=Zk7Q9x; theme="dark"`, []string{"Zk7Q9x", "dark"}},
		{"X-Api-Key", " k-123456 ", []string{"k-123456"}},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, headerSecrets(tt.name, tt.value), "%s: %s", tt.name, tt.value)
	}
}
