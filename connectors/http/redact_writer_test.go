package http_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	httpwriter "github.com/revsync/revsync/connectors/http"
)

// newEcho starts a remote that answers every request with status and the
// body body(r) returns: a remote that echoes the request's credentials in
// its error page.
func newEcho(t *testing.T, status int, body func(r *http.Request) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body(r)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// bearer is the token of the request's Authorization header.
func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// requireNoPiece fails when s holds a piece of secret n bytes or longer.
func requireNoPiece(t *testing.T, s, secret string, n int, msgAndArgs ...any) {
	t.Helper()
	for i := 0; i+n <= len(secret); i++ {
		require.NotContains(t, s, secret[i:i+n], msgAndArgs...)
	}
}

// TestEchoedTokenOldLeakLayout: the token, 477 bytes, the token again.
// The writer used to read 512+len(token) bytes, mask the first copy with a
// shorter marker and cut to 512 only then, quoting 25 bytes of the second
// copy in the error (and so in the log and the dead-letter header).
func TestEchoedTokenOldLeakLayout(t *testing.T) {
	t.Parallel()
	for _, status := range []int{401, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			srv := newEcho(t, status, func(r *http.Request) string {
				return bearer(r) + strings.Repeat("p", 477) + bearer(r)
			})
			w := mustBuild(t, transport(srv.URL, "auth_token_env: "+longTokenEnv), customers)
			err := write(w, upsert("A", nil))
			require.Error(t, err)
			requireNoPiece(t, err.Error(), longToken, 6)
			var se *httpwriter.StatusError
			require.ErrorAs(t, err, &se)
			require.LessOrEqual(t, len(se.Body), 512)
			require.Equal(t, "[REDACTED]"+strings.Repeat("p", 477)+"[REDACTED]", se.Body)
		})
	}
}

// TestEchoedTokenAtEveryOffset moves the echoed token across the points
// where the writer stops reading the body and where the quote is cut.
func TestEchoedTokenAtEveryOffset(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ env, token string }{{tokenEnv, token}, {longTokenEnv, longToken}} {
		t.Run(tt.env, func(t *testing.T) {
			t.Parallel()
			// The entity id is the offset at which the remote echoes the
			// token, after a first copy of it.
			srv := newEcho(t, 400, func(r *http.Request) string {
				off, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/c/"))
				if err != nil {
					return "bad offset"
				}
				return bearer(r) + strings.Repeat("p", max(off-len(tt.token), 0)) + bearer(r) + strings.Repeat("q", 600)
			})
			w := mustBuild(t, transport(srv.URL, "auth_token_env: "+tt.env), "{item: '/c/{id}', strategy: put}")
			for off := 480; off <= 512+2*len(tt.token)+2; off++ {
				err := write(w, upsert(strconv.Itoa(off), nil))
				require.Error(t, err)
				requireNoPiece(t, err.Error(), tt.token, 6, "offset %d", off)
				var se *httpwriter.StatusError
				require.ErrorAs(t, err, &se)
				require.LessOrEqual(t, len(se.Body), 512)
				require.True(t, strings.HasPrefix(se.Body, "[REDACTED]pp"), "offset %d: %q", off, se.Body[:20])
			}
		})
	}
}

// TestEchoedSecretHeaders: the values of configured headers that look
// secret are masked like the bearer token; the others are quoted.
func TestEchoedSecretHeaders(t *testing.T) {
	t.Parallel()
	const (
		apiKey  = "Kx7Vb2Nq9Wm4Zr8Tc1Hy"
		basic   = "dXNlcjpQdzlYcTJWbTRa"
		session = "Sx4Ld8Pq2Vn6Zt0Rb3Wc"
		tenant  = "tenant-one-visible"
	)
	for _, tt := range []struct {
		name    string
		headers string
		secret  string
	}{
		{"api key", "headers: {X-Api-Key: " + apiKey + ", X-Tenant: " + tenant + "}", apiKey},
		{"authorization", "headers: {Authorization: 'Basic " + basic + "', X-Tenant: " + tenant + "}", basic},
		{"cookie", "headers: {Cookie: 'theme=light; session=" + session + "', X-Tenant: " + tenant + "}", session},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newEcho(t, 403, func(r *http.Request) string {
				var b strings.Builder
				for _, name := range []string{"X-Api-Key", "Authorization", "Cookie", "X-Tenant"} {
					fmt.Fprintf(&b, "%s: %s\n", name, r.Header.Get(name))
				}
				// And a copy cut by the end of what the writer reads.
				b.WriteString(strings.Repeat("p", 512-b.Len()-7))
				b.WriteString(r.Header.Get("X-Api-Key") + r.Header.Get("Authorization") + r.Header.Get("Cookie"))
				return b.String()
			})
			w := mustBuild(t, transport(srv.URL, tt.headers), customers)
			err := write(w, upsert("A", nil))
			require.Error(t, err)
			requireNoPiece(t, err.Error(), tt.secret, 4)
			require.Contains(t, err.Error(), "[REDACTED]")
			require.Contains(t, err.Error(), tenant)
		})
	}
}
