package http

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/revsync/revsync/jobs"
)

// MaxRetryAfter caps the Retry-After hint a remote can give.
const MaxRetryAfter = time.Hour

// StatusError is a response the writer did not take as success. It is
// wrapped in a *jobs.TransientError or a jobs.PermanentError; errors.As
// finds it through both.
type StatusError struct {
	Method     string
	Path       string // the escaped URL path, never the query
	StatusCode int
	Body       string // at most 512 bytes of the response body, secrets masked
}

// Error renders the error as "PUT /customers/A: 400 Bad Request: "body"".
func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		s += fmt.Sprintf(": %q", e.Body)
	}
	return s
}

// response is what send keeps of an HTTP response.
type response struct {
	Method     string
	Path       string
	StatusCode int
	Header     http.Header
	Body       []byte    // the start of a non-2xx body
	redact     *redactor // masks the writer's secrets in Body; nil: none
}

// err classifies the response: nil for 2xx; a *jobs.TransientError for 408,
// 429 and 5xx, with the Retry-After hint relative to now; a permanent error
// for anything else.
func (r *response) err(now time.Time) error {
	switch code := r.StatusCode; {
	case code >= 200 && code <= 299:
		return nil
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500 && code <= 599:
		return &jobs.TransientError{
			RetryAfter: parseRetryAfter(r.Header.Get("Retry-After"), now),
			Err:        r.statusError(),
		}
	}
	return jobs.Permanent(r.statusError())
}

func (r *response) statusError() *StatusError {
	return &StatusError{
		Method:     r.Method,
		Path:       r.Path,
		StatusCode: r.StatusCode,
		Body:       r.redact.quote(r.Body, maxErrorBody),
	}
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// as a duration from now, between zero and MaxRetryAfter. A value it cannot
// read gives zero: no hint.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		switch {
		case secs <= 0:
			return 0
		case secs >= int64(MaxRetryAfter/time.Second):
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter)
}
