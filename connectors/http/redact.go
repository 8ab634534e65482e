package http

import (
	"net/http"
	"strings"
	"unicode/utf8"
)

// redactedMarker stands in for a secret in a quoted response body.
const redactedMarker = "[REDACTED]"

// minFragment is the shortest piece of a secret that is masked wherever it
// appears in a quoted body. Shorter pieces would mask ordinary words; a
// whole secret is masked whatever its length.
const minFragment = 4

// redactor masks the writer's secrets (the bearer token, the values of
// secret-looking configured headers) in the response bodies its errors
// quote: remotes echo requests, headers included, in their error pages.
// A nil *redactor masks nothing.
type redactor struct {
	secrets   []string            // whole secrets
	fragments map[string]struct{} // every minFragment-byte piece of every secret
	maxLen    int                 // the longest secret
}

// newRedactor returns a redactor of secrets; empty ones are ignored.
func newRedactor(secrets ...string) *redactor {
	r := &redactor{fragments: map[string]struct{}{}}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.secrets = append(r.secrets, s)
		r.maxLen = max(r.maxLen, len(s))
		for i := 0; i+minFragment <= len(s); i++ {
			r.fragments[s[i:i+minFragment]] = struct{}{}
		}
	}
	return r
}

// readLimit is how much of a body to read to quote limit bytes of it: a
// secret that starts before the limit is read whole, so that it is masked
// as a whole rather than as a fragment cut by the limit.
func (r *redactor) readLimit(limit int) int {
	if r == nil {
		return limit
	}
	return limit + r.maxLen
}

// quote returns the body start b, which may be cut anywhere, as text to
// quote in an error: invalid UTF-8 dropped, every secret masked, at most
// limit bytes, trimmed. Masked are every whole occurrence of a secret and
// every piece of one at least minFragment bytes long, wherever it appears:
// the start of a secret cut off where the read stopped, or one the remote
// echoed shortened. Masking happens before the quote is cut to limit, and
// a marker is never cut (the quote stops before it), so the result holds
// no piece of a secret of minFragment bytes or more.
func (r *redactor) quote(b []byte, limit int) string {
	s := strings.ToValidUTF8(string(b), "")
	if r == nil || len(r.secrets) == 0 {
		return strings.TrimSpace(cutUTF8(s, limit))
	}
	masked := make([]bool, len(s))
	mark := func(from, to int) {
		for i := from; i < to; i++ {
			masked[i] = true
		}
	}
	for _, secret := range r.secrets {
		for from := 0; ; {
			i := strings.Index(s[from:], secret)
			if i < 0 {
				break
			}
			mark(from+i, from+i+len(secret))
			from += i + 1
		}
	}
	for i := 0; i+minFragment <= len(s); i++ {
		if _, ok := r.fragments[s[i:i+minFragment]]; ok {
			mark(i, i+minFragment)
		}
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		if masked[i] {
			if out.Len()+len(redactedMarker) > limit {
				break
			}
			out.WriteString(redactedMarker)
			for i < len(s) && masked[i] {
				i++
			}
			continue
		}
		j := i
		for j < len(s) && !masked[j] {
			j++
		}
		room := limit - out.Len()
		if j-i > room {
			out.WriteString(cutUTF8(s[i:j], room))
			break
		}
		out.WriteString(s[i:j])
		i = j
	}
	return strings.TrimSpace(out.String())
}

// cutUTF8 returns at most n bytes of s, not splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// secretHeader reports whether a header's value is a credential:
// Authorization and Proxy-Authorization, Cookie, API keys (a name that is
// or ends in "key") and any name holding "token", "secret" or "password".
func secretHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "key", "apikey":
		return true
	}
	return strings.HasSuffix(n, "-key") || strings.HasSuffix(n, "_key") || strings.HasSuffix(n, "apikey") ||
		strings.Contains(n, "token") || strings.Contains(n, "secret") || strings.Contains(n, "password")
}

// headerSecrets returns the secrets a header value holds: the credentials
// of an authorization value ("Basic dXNlcjpw": the part after the scheme,
// which is not secret), the value of each cookie of a Cookie header, the
// whole value otherwise.
func headerSecrets(name, value string) []string {
	value = strings.TrimSpace(value)
	switch http.CanonicalHeaderKey(name) {
	case "Authorization", "Proxy-Authorization":
		if scheme, cred, ok := strings.Cut(value, " "); ok && scheme != "" && !strings.ContainsAny(scheme, "=,") {
			return []string{strings.TrimSpace(cred)}
		}
	case "Cookie":
		var out []string
		for _, c := range strings.Split(value, ";") {
			if _, v, ok := strings.Cut(c, "="); ok {
				out = append(out, strings.Trim(strings.TrimSpace(v), `"`))
			} else {
				out = append(out, strings.TrimSpace(c))
			}
		}
		return out
	}
	return []string{value}
}
