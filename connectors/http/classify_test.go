package http

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

func TestClassifyStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		status     int
		retryAfter string
		class      jobs.Class // "" for success
		wantAfter  time.Duration
	}{
		{200, "", "", 0},
		{201, "", "", 0},
		{204, "", "", 0},
		{299, "", "", 0},
		{100, "", jobs.ClassPermanent, 0},
		{301, "", jobs.ClassPermanent, 0},
		{304, "", jobs.ClassPermanent, 0},
		{400, "", jobs.ClassPermanent, 0},
		{401, "", jobs.ClassPermanent, 0},
		{403, "", jobs.ClassPermanent, 0},
		{404, "", jobs.ClassPermanent, 0},
		{405, "", jobs.ClassPermanent, 0},
		{409, "", jobs.ClassPermanent, 0},
		{413, "", jobs.ClassPermanent, 0},
		{422, "5", jobs.ClassPermanent, 0},
		{408, "", jobs.ClassTransient, 0},
		{429, "7", jobs.ClassTransient, 7 * time.Second},
		{429, "Thu, 03 Dec 2026 15:00:30 GMT", jobs.ClassTransient, 30 * time.Second},
		{500, "", jobs.ClassTransient, 0},
		{502, "", jobs.ClassTransient, 0},
		{503, "120", jobs.ClassTransient, 2 * time.Minute},
		{504, "", jobs.ClassTransient, 0},
		{599, "", jobs.ClassTransient, 0},
	}
	for _, tt := range tests {
		r := &response{Method: "PUT", Path: "/c/1", StatusCode: tt.status, Header: http.Header{}}
		if tt.retryAfter != "" {
			r.Header.Set("Retry-After", tt.retryAfter)
		}
		err := r.err(now)
		require.Equal(t, tt.class, jobs.ClassOf(err), "status %d", tt.status)
		require.Equal(t, tt.wantAfter, jobs.RetryAfter(err), "status %d", tt.status)
		if err != nil {
			var se *StatusError
			require.True(t, errors.As(err, &se))
			require.Equal(t, tt.status, se.StatusCode)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"3600", time.Hour},
		{"3601", MaxRetryAfter},
		{"99999999999999999999", 0}, // does not parse as int64
		{"9223372036854775807", MaxRetryAfter},
		{"Thu, 03 Dec 2026 15:01:00 GMT", time.Minute},
		{"Thursday, 03-Dec-26 15:01:00 GMT", time.Minute}, // RFC 850
		{"Thu Dec  3 15:01:00 2026", time.Minute},         // ANSI C
		{"Thu, 03 Dec 2026 14:00:00 GMT", 0},              // in the past
		{"Fri, 03 Dec 2027 15:00:00 GMT", MaxRetryAfter},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, parseRetryAfter(tt.in, now), "%q", tt.in)
	}
}

func TestStatusErrorText(t *testing.T) {
	t.Parallel()
	r := &response{Method: "POST", Path: "/c", StatusCode: 400, Body: []byte("bad \xff token=abc\n"), redact: newRedactor("abc")}
	require.Equal(t, `POST /c: 400 Bad Request: "bad  token=[REDACTED]"`, r.statusError().Error())
	r = &response{Method: "DELETE", Path: "/c/1", StatusCode: 500}
	require.Equal(t, "DELETE /c/1: 500 Internal Server Error", r.statusError().Error())
}

func TestParsePathTemplate(t *testing.T) {
	t.Parallel()
	ok := []struct{ in, want string }{
		{"/customers/{id}", "/customers/{id}"},
		{"customers/{id}", "/customers/{id}"},
		{"/customers", "/customers"},
		{"/o/{order_id}-{product_id}/x", "/o/{order_id}-{product_id}/x"},
		{"/a%20b/{id}", "/a%20b/{id}"},
	}
	for _, tt := range ok {
		pt, err := parsePathTemplate(tt.in)
		require.NoError(t, err, tt.in)
		var got string
		for _, p := range pt.parts {
			if p.name != "" {
				got += "{" + p.name + "}"
			} else {
				got += p.literal
			}
		}
		require.Equal(t, tt.want, got)
	}
	for _, in := range []string{"", " ", "/c/{", "/c/}", "/c/{}", "/c/{a b}", "/c/{a{b}}", "http://h/c", "//h/c",
		"/c?x=1", "/c#f", "/c/{id}?", "/%zz"} {
		_, err := parsePathTemplate(in)
		require.Error(t, err, "%q", in)
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	pt, err := parsePathTemplate("/o/{order_id}/{product_id}/{name}")
	require.NoError(t, err)
	item := &jobs.Item{
		Key:    jobs.IDFilter{{Column: "order_id", Value: int64(1)}, {Column: "product_id", Value: int64(2)}},
		Fields: map[string]any{"order_id": "10248", "name": "ä?#/%"},
	}
	got, err := pt.expand(item)
	require.NoError(t, err)
	require.Equal(t, "/o/10248/2/%C3%A4%3F%23%2F%25", got)
}
