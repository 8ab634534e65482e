package http_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	httpwriter "github.com/revsync/revsync/connectors/http"
	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/jobs/jobstest"
)

const (
	tokenEnv = "REVSYNC_TEST_TOKEN"
	token    = "s3cr3t-t0ken-4f9a"
	// longTokenEnv holds a token longer than 35 bytes, the length from
	// which the layout of TestEchoedTokenOldLeakLayout leaked a piece.
	longTokenEnv = "REVSYNC_TEST_LONG_TOKEN"
	longToken    = "Lq8Zt2Vw9Xk4Rm7Nc3Hb6Jf1Gd5Ys0Ue8Ta2Wq4E"
)

// env is the environment the writers under test see.
func env(name string) (string, bool) {
	switch name {
	case tokenEnv:
		return token, true
	case longTokenEnv:
		return longToken, true
	}
	return "", false
}

// build builds the writer for an integration with the given transport and
// remote sections (YAML flow mappings).
func build(t *testing.T, transport, remote string) (jobs.Writer, error) {
	t.Helper()
	doc := fmt.Sprintf(`name: crm
transport: %s
connectors:
  - name: customer
    export_job: rest_export
    entity: {table: customers, key: [{column: id, type: text}]}
`, transport)
	if remote != "" {
		doc += "    remote: " + remote + "\n"
	}
	var in jobs.Integration
	require.NoError(t, yaml.Unmarshal([]byte(doc), &in))
	b := &jobs.Binding{File: "revsync.yaml", Integration: &in, Connector: &in.Connectors[0]}
	w, err := httpwriter.WriterFactory(httpwriter.FactoryConfig{LookupEnv: env})(b)
	if err == nil {
		t.Cleanup(func() { _ = w.(*httpwriter.Writer).Close() })
	}
	return w, err
}

func mustBuild(t *testing.T, transport, remote string) jobs.Writer {
	t.Helper()
	w, err := build(t, transport, remote)
	require.NoError(t, err)
	return w
}

const customers = "{collection: /customers, item: '/customers/{id}'}"

func transport(url string, extra ...string) string {
	return "{" + strings.Join(append([]string{"base_url: " + url}, extra...), ", ") + "}"
}

func upsert(id string, fields map[string]any) jobs.Item {
	f := map[string]any{"id": id}
	for k, v := range fields {
		f[k] = v
	}
	return jobs.Item{Key: jobs.IDFilter{{Column: "id", Value: id}}, Op: jobs.OpUpsert, Fields: f}
}

func deletion(id string) jobs.Item {
	return jobs.Item{Key: jobs.IDFilter{{Column: "id", Value: id}}, Op: jobs.OpDelete, Fields: map[string]any{"id": id}}
}

func write(w jobs.Writer, items ...jobs.Item) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.Write(ctx, &jobs.Context{MessageID: "msg-1", Op: items[0].Op, IDFilter: items[0].Key}, items)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		remote     string
		putCreates bool
	}{
		{"post_then_put with PUT", "{collection: /customers, item: '/customers/{id}'}", false},
		{"post_then_put with PATCH", "{collection: /customers, item: '/customers/{id}', update_method: PATCH}", false},
		{"put", "{item: '/customers/{id}', strategy: put}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newRESTServer(t, tt.putCreates)
			jobstest.RunWriterConformance(t, jobstest.WriterHarness{
				NewWriter: func(t *testing.T) jobs.Writer { return mustBuild(t, transport(srv.URL), tt.remote) },
				Get: func(_ *testing.T, key jobs.IDFilter) (map[string]any, bool) {
					id, _ := key.Value("id")
					return srv.lookup("customers", id.(string))
				},
			})
		})
	}
}

func TestRequestHeaders(t *testing.T) {
	t.Parallel()
	srv := newRESTServer(t, false)
	w := mustBuild(t, transport(srv.URL, "auth_token_env: "+tokenEnv, "headers: {X-Source: revsync, x-tenant: t1}"), customers)
	require.NoError(t, write(w, upsert("ALFKI", map[string]any{"name": "Alfreds"})))

	reqs := srv.recordedRequests()
	require.Len(t, reqs, 2, "PUT (404), then POST")
	for _, r := range reqs {
		require.Equal(t, "Bearer "+token, r.Header.Get("Authorization"))
		require.Equal(t, "revsync", r.Header.Get("X-Source"))
		require.Equal(t, "t1", r.Header.Get("X-Tenant"))
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.JSONEq(t, `{"id":"ALFKI","name":"Alfreds"}`, r.Body)
	}
	require.Empty(t, reqs[0].Header.Get("Idempotency-Key"), "the update is idempotent by itself")
	require.Equal(t, "msg-1:id=ALFKI", reqs[1].Header.Get("Idempotency-Key"))
}

func TestStrategies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		remote string
		seed   bool
		item   jobs.Item
		want   []string
	}{
		{"update of an existing entity", customers, true, upsert("A", nil),
			[]string{"PUT /customers/A 200"}},
		{"404 on update creates with POST", customers, false, upsert("A", nil),
			[]string{"PUT /customers/A 404", "POST /customers 201"}},
		{"PATCH update", "{collection: /customers, item: '/customers/{id}', update_method: patch}", false, upsert("A", nil),
			[]string{"PATCH /customers/A 404", "POST /customers 201"}},
		{"put strategy", "{item: '/customers/{id}', strategy: put}", false, upsert("A", nil),
			[]string{"PUT /customers/A 404"}},
		{"delete", customers, true, deletion("A"),
			[]string{"DELETE /customers/A 200"}},
		{"delete of a missing entity", customers, false, deletion("A"),
			[]string{"DELETE /customers/A 404"}},
		{"key is path-escaped", customers, false, upsert("A/B C", nil),
			[]string{"PUT /customers/A%2FB%20C 404", "POST /customers 201"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newRESTServer(t, false)
			if tt.seed {
				srv.seed("customers", "A", map[string]any{"id": "A"})
			}
			err := write(mustBuild(t, transport(srv.URL), tt.remote), tt.item)
			if strings.Contains(tt.name, "put strategy") {
				require.True(t, jobs.IsPermanent(err), "404 on PUT with strategy put: %v", err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.want, srv.calls())
		})
	}
}

func TestKeyIsEscapedAndStored(t *testing.T) {
	t.Parallel()
	srv := newRESTServer(t, false)
	w := mustBuild(t, transport(srv.URL), customers)
	require.NoError(t, write(w, upsert("A/B C", map[string]any{"v": 1})))
	require.NoError(t, write(w, upsert("A/B C", map[string]any{"v": 2})))
	obj, ok := srv.lookup("customers", "A/B C")
	require.True(t, ok)
	require.Equal(t, float64(2), obj["v"])
	require.NoError(t, write(w, deletion("A/B C")))
	_, ok = srv.lookup("customers", "A/B C")
	require.False(t, ok)
}

// scripted is a server answering with the given responses in turn and
// recording "METHOD path" for each request.
type scripted struct {
	*httptest.Server
	mu    sync.Mutex
	calls []string
}

type answer struct {
	status int
	header map[string]string
	body   string
}

func newScripted(t *testing.T, answers ...answer) *scripted {
	s := &scripted{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.calls)
		s.calls = append(s.calls, r.Method+" "+r.URL.EscapedPath())
		s.mu.Unlock()
		if n >= len(answers) {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		a := answers[n]
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		body := strings.ReplaceAll(a.body, "$AUTH", r.Header.Get("Authorization"))
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *scripted) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func TestConflictOnCreateUpdatesAgain(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 404}, answer{status: 409}, answer{status: 204})
	require.NoError(t, write(mustBuild(t, transport(srv.URL), customers), upsert("A", nil)))
	require.Equal(t, []string{"PUT /customers/A", "POST /customers", "PUT /customers/A"}, srv.requests())
}

func TestVanishedAfterConflictIsTransient(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 404}, answer{status: 409}, answer{status: 404})
	err := write(mustBuild(t, transport(srv.URL), customers), upsert("A", nil))
	require.Error(t, err)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	require.Contains(t, err.Error(), "changed concurrently")
}

func TestDeleteGoneIsSuccess(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 410})
	require.NoError(t, write(mustBuild(t, transport(srv.URL), customers), deletion("A")))
}

func TestStatusClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     answer
		class      jobs.Class
		retryAfter time.Duration
		contains   []string
	}{
		{"400 is permanent", answer{status: 400, body: `{"error":"name is required"}`}, jobs.ClassPermanent, 0,
			[]string{"PUT /customers/A: 400 Bad Request", `name is required`, "id=A"}},
		{"422 is permanent", answer{status: 422}, jobs.ClassPermanent, 0, []string{"422 Unprocessable Entity"}},
		{"429 with Retry-After is transient", answer{status: 429, header: map[string]string{"Retry-After": "7"}}, jobs.ClassTransient, 7 * time.Second,
			[]string{"429 Too Many Requests"}},
		{"503 is transient", answer{status: 503, body: "down for maintenance"}, jobs.ClassTransient, 0,
			[]string{"503 Service Unavailable", "down for maintenance"}},
		{"408 is transient", answer{status: 408}, jobs.ClassTransient, 0, []string{"408"}},
		{"a redirect is not followed", answer{status: 302, header: map[string]string{"Location": "/elsewhere"}}, jobs.ClassPermanent, 0,
			[]string{"302 Found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, tt.answer)
			err := write(mustBuild(t, transport(srv.URL), customers), upsert("A", nil))
			require.Error(t, err)
			require.Equal(t, tt.class, jobs.ClassOf(err), "%v", err)
			require.Equal(t, tt.retryAfter, jobs.RetryAfter(err))
			var se *httpwriter.StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tt.answer.status, se.StatusCode)
			for _, c := range tt.contains {
				require.Contains(t, err.Error(), c)
			}
			require.Len(t, srv.requests(), 1)
		})
	}
}

func TestErrorBodyIsTruncated(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 400, body: strings.Repeat("x", 5000)})
	err := write(mustBuild(t, transport(srv.URL), customers), upsert("A", nil))
	var se *httpwriter.StatusError
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Body, 512)
	require.Less(t, len(err.Error()), 700)
}

func TestTokenNeverInErrors(t *testing.T) {
	t.Parallel()
	for _, status := range []int{401, 500} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			// The remote echoes the Authorization header, at the start and
			// across the point where the quoted body is cut.
			head := `{"error":"bad credentials $AUTH"}`
			echoed := len(head) - len("$AUTH") + len("Bearer "+token)
			body := head + strings.Repeat(".", 505-echoed-len("Bearer ")) + "$AUTH" // the token starts at byte 505

			srv := newScripted(t, answer{status: status, body: body})
			w := mustBuild(t, transport(srv.URL, "auth_token_env: "+tokenEnv), customers)
			err := write(w, upsert("A", nil))
			require.Error(t, err)
			require.NotContains(t, err.Error(), token)
			require.NotContains(t, err.Error(), token[:5])
			require.Contains(t, err.Error(), "[REDACTED]")
			var se *httpwriter.StatusError
			require.ErrorAs(t, err, &se)
			require.LessOrEqual(t, len(se.Body), 512)
		})
	}
}

func TestTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets a hung handler return

	w := mustBuild(t, transport(srv.URL, "timeout: 200ms"), customers)
	start := time.Now()
	err := write(w, upsert("A", nil))
	elapsed := time.Since(start)
	require.Error(t, err)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "PUT /customers/A: no response within 200ms")
	require.GreaterOrEqual(t, elapsed, 200*time.Millisecond)
	require.Less(t, elapsed, 2*time.Second)
}

func TestCancelledContext(t *testing.T) {
	t.Parallel()
	srv := newRESTServer(t, false)
	w := mustBuild(t, transport(srv.URL), customers)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := w.Write(ctx, &jobs.Context{}, []jobs.Item{upsert("A", nil)})
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, jobs.IsPermanent(err))
	require.Empty(t, srv.calls())
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	w := mustBuild(t, transport("http://"+addr), customers)
	err = write(w, upsert("A", nil))
	require.Error(t, err)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	require.Contains(t, err.Error(), "PUT /customers/A")
	require.Contains(t, err.Error(), "connection refused")
	require.NotContains(t, err.Error(), "http://", "the URL's host and scheme are not repeated")
}

func TestBatchStopsAtFirstError(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 200}, answer{status: 400})
	err := write(mustBuild(t, transport(srv.URL), customers), upsert("a", nil), upsert("b", nil), upsert("c", nil))
	require.Error(t, err)
	require.True(t, jobs.IsPermanent(err))
	require.True(t, strings.HasPrefix(err.Error(), "write id=b: "), err.Error())
	require.Equal(t, []string{"PUT /customers/a", "PUT /customers/b"}, srv.requests())
}

func TestURLPlaceholders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		remote string
		item   jobs.Item
		want   string // path requested, or the error's text
		err    bool
	}{
		{"field", "{item: '/c/{id}', strategy: put}", upsert("7", nil), "PUT /c/7", false},
		{"number field", "{item: '/c/{n}', strategy: put}", upsert("7", map[string]any{"n": 10248}), "PUT /c/10248", false},
		{"key column when the field is absent", "{item: '/o/{order_id}/{product_id}', strategy: put}",
			jobs.Item{Key: jobs.IDFilter{{Column: "order_id", Value: int64(1)}, {Column: "product_id", Value: int64(2)}}, Op: jobs.OpUpsert, Fields: map[string]any{}},
			"PUT /o/1/2", false},
		{"base path and relative template", "{item: 'c/{id}', strategy: put}", upsert("x", nil), "PUT /c/x", false},
		{"missing field", "{item: '/c/{code}', strategy: put}", upsert("7", nil), `URL template "/c/{code}": no field or key column "code" in the item`, true},
		{"null field", "{item: '/c/{code}', strategy: put}", upsert("7", map[string]any{"code": nil}), `no field or key column "code"`, true},
		{"empty field", "{item: '/c/{code}', strategy: put}", upsert("7", map[string]any{"code": ""}), `field "code" is empty`, true},
		{"dot-dot field", "{item: '/c/{code}', strategy: put}", upsert("7", map[string]any{"code": ".."}), `field "code" is ".."`, true},
		{"object field", "{item: '/c/{code}', strategy: put}", upsert("7", map[string]any{"code": map[string]any{}}), `field "code": value of type map[string]interface {} is not a scalar`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, answer{status: 200})
			err := write(mustBuild(t, transport(srv.URL), tt.remote), tt.item)
			if tt.err {
				require.Error(t, err)
				require.True(t, jobs.IsPermanent(err))
				require.Contains(t, err.Error(), tt.want)
				require.Empty(t, srv.requests())
				return
			}
			require.NoError(t, err)
			require.Equal(t, []string{tt.want}, srv.requests())
		})
	}
}

func TestBaseURLPath(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, answer{status: 200})
	w := mustBuild(t, transport(srv.URL+"/api/v1/"), "{item: '/c/{id}', strategy: put}")
	require.NoError(t, write(w, upsert("x", nil)))
	require.Equal(t, []string{"PUT /api/v1/c/x"}, srv.requests())
}

func TestFactoryErrors(t *testing.T) {
	t.Parallel()
	const base = "http://127.0.0.1:3000"
	tests := []struct {
		name      string
		transport string
		remote    string
		want      []string
	}{
		{"missing base_url", "{}", customers, []string{`key "transport.base_url": missing`}},
		{"not http", transport("ftp://h/x"), customers, []string{`key "transport.base_url": want an http or https URL, got scheme "ftp"`}},
		{"no host", transport("http:///x"), customers, []string{`key "transport.base_url": missing host`}},
		{"credentials in URL", transport("http://user:pw@h"), customers, []string{`key "transport.base_url": credentials in the URL are not allowed`}},
		{"query in URL", transport("'http://h/?k=v'"), customers, []string{`key "transport.base_url": want no query or fragment`}},
		{"token variable not set", transport(base, "auth_token_env: REVSYNC_NOT_SET"), customers,
			[]string{`key "transport.auth_token_env": environment variable REVSYNC_NOT_SET is not set or empty`}},
		{"bad header name", transport(base, "headers: {'X Bad': v}"), customers, []string{`key "transport.headers": "X Bad" is not a header name`}},
		{"two Authorizations", transport(base, "auth_token_env: "+tokenEnv, "headers: {authorization: x}"), customers,
			[]string{`key "transport.headers": Authorization is set by auth_token_env`}},
		{"negative timeout", transport(base, "timeout: -1s"), customers, []string{`key "transport.timeout": must be positive`}},
		{"no remote", transport(base), "", []string{`missing key "remote"`}},
		{"unknown remote key", transport(base), "{item: '/c/{id}', colection: /c}", []string{`key "remote"`, "colection"}},
		{"unknown strategy", transport(base), "{collection: /c, item: '/c/{id}', strategy: upsert}", []string{`key "remote.strategy": want "post_then_put" or "put", got "upsert"`}},
		{"bad update method", transport(base), "{collection: /c, item: '/c/{id}', update_method: POST}", []string{`key "remote.update_method": want PUT or PATCH, got "POST"`}},
		{"PATCH with put", transport(base), "{item: '/c/{id}', strategy: put, update_method: PATCH}", []string{`key "remote.update_method": strategy "put" always sends PUT`}},
		{"bad delete method", transport(base), "{collection: /c, item: '/c/{id}', delete_method: GET}", []string{`key "remote.delete_method"`}},
		{"no item", transport(base), "{collection: /c}", []string{`key "remote.item": missing`}},
		{"no collection for post_then_put", transport(base), "{item: '/c/{id}'}", []string{`key "remote.collection": missing`}},
		{"unclosed brace", transport(base), "{collection: /c, item: '/c/{id'}", []string{`key "remote.item": "/c/{id": unclosed "{"`}},
		{"nested brace", transport(base), "{collection: /c, item: '/c/{i{d}}'}", []string{`key "remote.item"`, "unclosed"}},
		{"stray brace", transport(base), "{collection: /c, item: '/c/id}'}", []string{`key "remote.item"`, `unmatched "}"`}},
		{"empty placeholder", transport(base), "{collection: /c, item: '/c/{}'}", []string{`key "remote.item"`, "placeholder {} is not a field name"}},
		{"absolute URL", transport(base), "{collection: 'http://evil/c', item: '/c/{id}'}", []string{`key "remote.collection"`, "relative to base_url"}},
		{"scheme-relative URL", transport(base), "{collection: '//evil/c', item: '/c/{id}'}", []string{`key "remote.collection"`, "relative to base_url"}},
		{"query in template", transport(base), "{collection: /c, item: '/c/{id}?token=x'}", []string{`key "remote.item"`, "without query or fragment"}},
		{"every problem is reported", "{}", "{item: '/c/{id}', strategy: x}", []string{`key "transport.base_url"`, `key "remote.strategy"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := build(t, tt.transport, tt.remote)
			require.Error(t, err)
			var de *jobs.DefinitionError
			require.ErrorAs(t, err, &de)
			require.Contains(t, err.Error(), `revsync.yaml: integration "crm" connector "customer"`)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "pw", "no credentials in errors")
		})
	}
}

func TestFactoryReadsTokenAtConstruction(t *testing.T) {
	t.Parallel()
	var asked []string
	lookup := func(name string) (string, bool) {
		asked = append(asked, name)
		return " tok ", true
	}
	var in jobs.Integration
	require.NoError(t, yaml.Unmarshal([]byte(`name: crm
transport: {base_url: "http://h", auth_token_env: MY_TOKEN}
connectors: [{name: c, remote: {collection: /c, item: "/c/{id}"}}]
`), &in))
	b := &jobs.Binding{Integration: &in, Connector: &in.Connectors[0]}
	_, err := httpwriter.WriterFactory(httpwriter.FactoryConfig{LookupEnv: lookup})(b)
	require.NoError(t, err)
	require.Equal(t, []string{"MY_TOKEN"}, asked)
}

func TestUnknownOpIsPermanent(t *testing.T) {
	t.Parallel()
	srv := newScripted(t)
	err := write(mustBuild(t, transport(srv.URL), customers), jobs.Item{Op: "merge", Fields: map[string]any{"id": "a"}})
	require.True(t, jobs.IsPermanent(err))
	require.True(t, errors.Is(err, err))
	require.Empty(t, srv.requests())
}

func TestDeleteRequests(t *testing.T) {
	t.Parallel()
	srv := newRESTServer(t, false)
	srv.seed("customers", "A", map[string]any{"id": "A", "name": "x"})
	item := deletion("A")
	item.Fields["active"] = false

	require.NoError(t, write(mustBuild(t, transport(srv.URL), customers), item))
	srv.seed("customers", "A", map[string]any{"id": "A", "name": "x"})
	soft := "{collection: /customers, item: '/customers/{id}', delete_method: PATCH}"
	require.NoError(t, write(mustBuild(t, transport(srv.URL), soft), item))

	reqs := srv.recordedRequests()
	require.Len(t, reqs, 2)
	require.Equal(t, "DELETE", reqs[0].Method)
	require.Empty(t, reqs[0].Body)
	require.Empty(t, reqs[0].Header.Get("Content-Type"))
	require.Equal(t, "PATCH", reqs[1].Method)
	require.JSONEq(t, `{"id":"A","active":false}`, reqs[1].Body)
	obj, ok := srv.lookup("customers", "A")
	require.True(t, ok)
	require.Equal(t, map[string]any{"id": "A", "name": "x", "active": false}, obj)
}
