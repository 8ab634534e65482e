package postgres

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted stands in for a password in redacted text.
const redacted = "xxxxx"

var (
	// urlPrefixRe is the scheme of a URL, "postgres://", "amqp://"….
	urlPrefixRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)
	// plainUserRe is a user name that cannot hold a misplaced piece of a
	// password or of the rest of the URL.
	plainUserRe = regexp.MustCompile(`^[A-Za-z0-9._~%+-]*$`)
	// dsnKeyRe is a keyword of a key=value DSN.
	dsnKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	// password=... in a key=value DSN or free text, quoted or not.
	kvSecretRe = regexp.MustCompile(`(?i)\b((?:ssl)?password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]*)`)
	// scheme://user:password@ in text that does not parse as a URL; greedy
	// up to the last @ of the run, so a password containing @ or / is
	// covered too (at worst the host is masked as well).
	userinfoRe = regexp.MustCompile(`(://[^:/@\s"'` + "`" + `]*):[^\s"'` + "`" + `]*@`)
)

// RedactURL returns s, a connection URL (postgres://, amqp://, http://…) or
// a key=value DSN, with every password replaced by "xxxxx": the password of
// the URL's user info, password-like query parameters (password,
// sslpassword, passwd, pwd, and any name containing "secret" or "token"),
// and the values of password-like keys of a DSN (quoted or not, with
// backslash escapes, read the way libpq and pgx read them).
//
// The user info of a URL is everything between "://" and the last "@", so
// a password holding an unescaped "@", "/", "?" or "#" is masked whole
// even though the URL does not parse (at worst more than the password is
// masked). A DSN that does not read as key=value pairs is masked by
// pattern, erring on the side of masking too much.
func RedactURL(s string) string {
	return redactConnString(s).text
}

// redaction is a connection string with its secrets masked.
type redaction struct {
	// text is the connection string with every secret replaced by
	// "xxxxx".
	text string
	// secrets are the raw texts that were masked.
	secrets []string
	// reliable reports that the string's syntax leaves no doubt about
	// where its secrets are, so that text certainly holds none of them.
	// When false, text is a best effort.
	reliable bool
}

// redactConnString masks the secrets of a connection string: a URL when
// it starts with a scheme and "://", a key=value DSN otherwise.
func redactConnString(s string) redaction {
	if prefix := urlPrefixRe.FindString(s); prefix != "" {
		return redactURLString(prefix, s[len(prefix):])
	}
	return redactDSN(s)
}

// redactURLString masks the user info and password-like query parameters
// of the URL prefix+rest without parsing it, so that a URL whose password
// holds unescaped delimiters is masked as well as a valid one.
func redactURLString(prefix, rest string) redaction {
	r := redaction{reliable: true}
	var b strings.Builder
	b.WriteString(prefix)
	tail := rest
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		// Whatever the password holds, it ends before the last "@".
		userinfo := rest[:at]
		tail = rest[at+1:]
		if q := strings.IndexByte(userinfo, '?'); q >= 0 && strings.Contains(userinfo[q:], "=") {
			// The last "@" is in a query, in a value that may be a secret
			// going on past it: mask everything.
			r.secrets = append(r.secrets, rest)
			r.text = prefix + redacted
			return r
		}
		user, password, hasPassword := strings.Cut(userinfo, ":")
		switch {
		case !plainUserRe.MatchString(user):
			// A path, query or fragment before the "@": no telling
			// where a password is.
			r.secrets = append(r.secrets, userinfo)
			b.WriteString(redacted)
		case hasPassword:
			r.secrets = append(r.secrets, password)
			b.WriteString(user + ":" + redacted)
		default:
			b.WriteString(user)
		}
		b.WriteByte('@')
	} else if _, err := url.Parse(prefix + rest); err != nil {
		// With no "@", a password may be where host:port is expected
		// ("postgres://user:pa#ss/db", host forgotten) and is not masked.
		r.reliable = false
	}
	hostPath, query, hasQuery := strings.Cut(tail, "?")
	b.WriteString(hostPath)
	if hasQuery {
		b.WriteByte('?')
		for i, pair := range strings.Split(query, "&") {
			if i > 0 {
				b.WriteByte('&')
			}
			k, v, _ := strings.Cut(pair, "=")
			if uk, err := url.QueryUnescape(k); err == nil {
				k = uk
			}
			if !secretKey(k) || v == "" {
				b.WriteString(pair)
				continue
			}
			r.secrets = append(r.secrets, v)
			// The value ends at the next "&", which may have been part
			// of it.
			r.reliable = false
			b.WriteString(pair[:len(pair)-len(v)] + redacted)
		}
	}
	r.text = b.String()
	return r
}

// redactDSN masks the values of password-like keys of a key=value DSN,
// reading it as pgx does: "key = value" pairs separated by whitespace,
// values unquoted up to the next whitespace or in single quotes, "\"
// escaping the next character. A string that does not read that way, or
// whose keys are not plain keywords (a sign that a value held an unquoted
// space), is masked by pattern and is not reliable.
func redactDSN(s string) redaction {
	r := redaction{reliable: true}
	var b strings.Builder
	for i := 0; i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			if strings.TrimLeft(s[i:], dsnSpace) == "" {
				b.WriteString(s[i:])
				break
			}
			return redaction{text: redactText(s)}
		}
		key := strings.Trim(s[i:i+eq], dsnSpace)
		if !dsnKeyRe.MatchString(key) {
			return redaction{text: redactText(s)}
		}
		start := i + eq + 1
		for start < len(s) && strings.IndexByte(dsnSpace, s[start]) >= 0 {
			start++
		}
		end := start
		next := start
		if start < len(s) && s[start] == '\'' {
			end++
			for end < len(s) && s[end] != '\'' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return redaction{text: redactText(s)} // unterminated quote
			}
			end++ // the closing quote
			next = end
		} else {
			for end < len(s) && strings.IndexByte(dsnSpace, s[end]) < 0 {
				if s[end] == '\\' {
					end++
					if end == len(s) {
						return redaction{text: redactText(s)} // a lone trailing backslash
					}
				}
				end++
			}
			next = min(end+1, len(s)) // the space that ends the value
		}
		b.WriteString(s[i:start])
		if secretKey(key) && end > start {
			r.secrets = append(r.secrets, strings.Trim(s[start:end], "'"))
			b.WriteString(redacted)
		} else {
			b.WriteString(s[start:end])
		}
		b.WriteString(s[end:next])
		i = next
	}
	r.text = b.String()
	return r
}

// dsnSpace is the whitespace separating the pairs of a key=value DSN.
const dsnSpace = " \t\n\r\v\f"

// secretKey reports whether a query parameter or DSN key holds a secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	switch k {
	case "password", "sslpassword", "passwd", "pwd":
		return true
	}
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// minSecretFragment is the length from which a secret, or a piece of one,
// is masked in free text; shorter ones would mask ordinary characters.
const minSecretFragment = 3

// redactText masks passwords in free text, such as a driver error that
// quotes a connection string: URL user info, password=… pairs, and literal
// occurrences of each secret, and of the pieces of it between URL
// delimiters (a driver that misread a URL quotes such pieces as a host, a
// port or a database name), when at least 3 characters long (a shorter
// one would mask ordinary characters; the patterns still cover it where
// it appears as part of a connection string).
func redactText(s string, secrets ...string) string {
	for _, secret := range secrets {
		if len(secret) < minSecretFragment {
			continue
		}
		s = strings.ReplaceAll(s, secret, redacted)
		if esc := url.QueryEscape(secret); esc != secret {
			s = strings.ReplaceAll(s, esc, redacted)
		}
		for _, piece := range strings.FieldsFunc(secret, func(r rune) bool { return strings.ContainsRune(":/?#@&=", r) }) {
			if len(piece) >= minSecretFragment {
				s = strings.ReplaceAll(s, piece, redacted)
			}
		}
	}
	s = userinfoRe.ReplaceAllString(s, "${1}:"+redacted+"@")
	return kvSecretRe.ReplaceAllString(s, "${1}${2}"+redacted)
}
