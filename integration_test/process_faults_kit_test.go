package integration_test

// Helpers of the process-level fault tests (process_faults_test.go): an
// in-memory REST remote that records and delays requests, configurations
// edited per test, the worker's HTTP probes and metrics, and control of the
// broker application and the PostgreSQL server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// ---------------------------------------------------------------------------
// The remote: an in-memory REST server.

// memRemote is a REST remote held in memory, like json-server, except that
// PUT creates a missing item (so one export is one request) and that it
// records every request and can delay or hang chosen ones.
type memRemote struct {
	URL string

	// Delay, when set, says how long to hold a request before answering
	// it: 0 answers at once, a negative duration holds it until the client
	// goes away (a hanging remote). Set it before the worker starts.
	Delay func(r *http.Request) time.Duration
	// OnRequest, when set, is called as each request arrives, before any
	// delay, from the request's goroutine.
	OnRequest func(req remoteRequest)

	srv     *httptest.Server
	closing chan struct{}

	mu       sync.Mutex
	items    map[string]map[string]json.RawMessage // collection → id → body
	requests []remoteRequest
	inFlight int
}

// remoteRequest is one request the remote saw.
type remoteRequest struct {
	Method  string
	Path    string
	Replica string // the X-Replica header
	At      time.Time
	// Answered is false for a request whose client went away first (it
	// changed nothing).
	Answered bool
}

// startMemRemote starts a remote on 127.0.0.1:0; it is stopped at cleanup,
// releasing any request it still holds.
func startMemRemote(t *testing.T) *memRemote {
	t.Helper()
	m := &memRemote{closing: make(chan struct{}), items: map[string]map[string]json.RawMessage{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.URL = m.srv.URL
	t.Cleanup(func() {
		close(m.closing)
		m.srv.CloseClientConnections()
		m.srv.Close()
	})
	return m
}

func (m *memRemote) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := remoteRequest{Method: r.Method, Path: r.URL.Path, Replica: r.Header.Get("X-Replica"), At: time.Now()}
	m.mu.Lock()
	idx := len(m.requests)
	m.requests = append(m.requests, req)
	m.inFlight++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inFlight--
		m.mu.Unlock()
	}()
	if m.OnRequest != nil {
		m.OnRequest(req)
	}
	if m.Delay != nil {
		if d := m.Delay(r); d != 0 {
			var timer <-chan time.Time
			if d > 0 {
				t := time.NewTimer(d)
				defer t.Stop()
				timer = t.C
			}
			select {
			case <-timer:
			case <-r.Context().Done():
				return // the client gave up: nothing changes
			case <-m.closing:
				http.Error(w, "remote closing", http.StatusServiceUnavailable)
				return
			}
		}
	}
	status, out := m.apply(r.Method, r.URL.Path, body)
	m.mu.Lock()
	m.requests[idx].Answered = true
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// apply performs a request on the items and returns the answer.
func (m *memRemote) apply(method, path string, body []byte) (int, []byte) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	m.mu.Lock()
	defer m.mu.Unlock()
	coll := m.items[parts[0]]
	if coll == nil {
		coll = map[string]json.RawMessage{}
		m.items[parts[0]] = coll
	}
	idOf := func() (string, bool) {
		var v struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(body, &v) != nil || v.ID == nil {
			return "", false
		}
		return fmt.Sprint(v.ID), true
	}
	switch {
	case len(parts) == 1 && method == http.MethodGet:
		ids := make([]string, 0, len(coll))
		for id := range coll {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		list := make([]json.RawMessage, 0, len(ids))
		for _, id := range ids {
			list = append(list, coll[id])
		}
		out, _ := json.Marshal(list)
		return http.StatusOK, out
	case len(parts) == 1 && method == http.MethodPost:
		id, ok := idOf()
		if !ok {
			return http.StatusBadRequest, []byte(`{"error":"no id"}`)
		}
		if _, dup := coll[id]; dup {
			return http.StatusConflict, []byte(`{"error":"exists"}`)
		}
		coll[id] = append(json.RawMessage(nil), body...)
		return http.StatusCreated, body
	case len(parts) == 2:
		id, err := url.PathUnescape(parts[1])
		if err != nil {
			return http.StatusBadRequest, []byte(`{"error":"bad id"}`)
		}
		switch method {
		case http.MethodGet:
			if item, ok := coll[id]; ok {
				return http.StatusOK, item
			}
			return http.StatusNotFound, []byte(`{}`)
		case http.MethodPut, http.MethodPatch:
			coll[id] = append(json.RawMessage(nil), body...)
			return http.StatusOK, body
		case http.MethodDelete:
			if _, ok := coll[id]; !ok {
				return http.StatusNotFound, []byte(`{}`)
			}
			delete(coll, id)
			return http.StatusOK, []byte(`{}`)
		}
	}
	return http.StatusMethodNotAllowed, []byte(`{"error":"unsupported"}`)
}

// Items returns a collection's items by id, decoded as a client would.
func (m *memRemote) Items(collection string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]any{}
	for id, raw := range m.items[collection] {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			out[id] = v
		}
	}
	return out
}

// Requests returns every request seen so far, in arrival order.
func (m *memRemote) Requests() []remoteRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]remoteRequest(nil), m.requests...)
}

// InFlight is the number of requests being held or served now.
func (m *memRemote) InFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inFlight
}

// subsetOf returns the entries of want whose key is in ids.
func subsetOf(want map[string]any, ids []string) map[string]any {
	out := make(map[string]any, len(ids))
	for _, id := range ids {
		if v, ok := want[id]; ok {
			out[id] = v
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Configuration edited per test.

// faultSetup is a setup whose integration has a name of its own. Entity
// locks are PostgreSQL advisory locks keyed by integration, connector and
// ID, database-wide: tests that run side by side on the same database and
// export the same customers under the same integration name would wait for
// each other's locks.
type faultSetup struct {
	*setup
	Integration string
}

// newFaultSetup is newSetup with an integration named after the prefix.
func newFaultSetup(t *testing.T, svc services, b *broker, schema, remoteURL string) *faultSetup {
	t.Helper()
	s := newSetup(t, svc, b, schema, remoteURL)
	return &faultSetup{setup: s, Integration: strings.ReplaceAll(s.Prefix, "-", "_")}
}

// WriteConfigEdited writes the standard configuration (WriteConfig) with
// the integration renamed and edit (which may be nil) applied to its
// decoded form, and returns the file's path. Use cfgSet to change keys.
func (fs *faultSetup) WriteConfigEdited(t *testing.T, edit func(cfg map[string]any)) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, configTemplate.Execute(&buf, fs.setup))
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(buf.Bytes(), &cfg))
	cfgSet(cfg, "integration.name", fs.Integration)
	if edit != nil {
		edit(cfg)
	}
	data, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	dir := t.TempDir()
	path := filepath.Join(dir, "revsync.yaml")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "jobs.yaml"), []byte(jobsYAML), 0o600))
	return path
}

// CustomerRoutingKey is the routing key of the integration's customer
// events.
func (fs *faultSetup) CustomerRoutingKey() string { return fs.Integration + ".customer" }

// cfgSet sets a dotted key ("worker.retry.max_attempts") in a decoded
// configuration, creating the maps on the way. A segment "integration"
// stands for the first (only) integration.
func cfgSet(cfg map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	m := cfg
	for _, p := range parts[:len(parts)-1] {
		if p == "integration" {
			m = m["integrations"].([]any)[0].(map[string]any)
			continue
		}
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// withApplicationName returns a PostgreSQL URL that reports name as its
// application_name, so that a test can find its worker's sessions.
func withApplicationName(t *testing.T, databaseURL, name string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	require.NoError(t, err, "DATABASE_URL is not a URL")
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// ---------------------------------------------------------------------------
// Events.

// publishCustomerEvent publishes an upsert of one customer, with a fresh
// message id, and returns that id.
func publishCustomerEvent(t *testing.T, b *broker, fs *faultSetup, customerID string) string {
	t.Helper()
	id := "ev-" + customerID + "-" + uniqueSuffix(t)
	body, err := json.Marshal(map[string]any{
		"version":     1,
		"integration": fs.Integration,
		"connector":   "customer",
		"id":          map[string]any{"customer_id": customerID},
		"op":          "upsert",
		"occurred_at": time.Now().UTC().Format(time.RFC3339),
	})
	require.NoError(t, err)
	b.Publish(t, fs.Exchange, fs.CustomerRoutingKey(), amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    id,
		Timestamp:    time.Now(),
		Body:         body,
	})
	return id
}

// messageIDs returns the message ids of deliveries, sorted.
func messageIDs(ds []amqp.Delivery) []string {
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.MessageId)
	}
	sort.Strings(ids)
	return ids
}

// sorted returns a sorted copy of ss.
func sorted(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	return out
}

// waitQueueSettled waits until a queue has 0 ready and 0 unacknowledged
// messages, as rabbitmqctl counts them (or, without rabbitmqctl, 0 ready).
func waitQueueSettled(t *testing.T, b *broker, queue string, timeout time.Duration, alive func()) {
	t.Helper()
	waitFor(t, timeout, queue+" empty (0 ready, 0 unacked)", func() (bool, string) {
		if alive != nil {
			alive()
		}
		q, err := b.Inspect(queue)
		if err != nil {
			return false, err.Error()
		}
		if q.Messages != 0 {
			return false, fmt.Sprintf("%d ready", q.Messages)
		}
		c, ok, err := b.Counts(queue)
		if !ok {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return c.Ready == 0 && c.Unacked == 0, fmt.Sprintf("rabbitmqctl: %d ready, %d unacked", c.Ready, c.Unacked)
	})
}

// ---------------------------------------------------------------------------
// Worker processes: start without a *testing.T (for supervisors), probes,
// metrics and logs.

// startWorkerProcess starts `revsync worker --config cfg` with output to
// files in dir named after tag. Unlike setup.StartWorker it registers no
// cleanup and may be called from any goroutine.
func startWorkerProcess(s *setup, cfg, dir, tag string) (*worker, error) {
	w := &worker{
		stdoutPath: filepath.Join(dir, tag+".stdout"),
		stderrPath: filepath.Join(dir, tag+".stderr"),
		done:       make(chan struct{}),
	}
	stdout, err := os.Create(w.stdoutPath)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(w.stderrPath)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	w.cmd = exec.Command(revsyncBin, "worker", "--config", cfg)
	w.cmd.Env = s.revsyncEnv()
	w.cmd.Stdout, w.cmd.Stderr = stdout, stderr
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start revsync worker: %w", err)
	}
	go func() {
		_ = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// logLines returns the worker's JSON log lines (stderr) decoded; lines
// that are not JSON (the final "revsync: ..." error) are skipped.
func logLines(path string) []map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// countLogs counts the log lines whose "msg" is msg and whose fields
// include every key/value in match.
func countLogs(path, msg string, match map[string]any) int {
	n := 0
lines:
	for _, l := range logLines(path) {
		if l["msg"] != msg {
			continue
		}
		for k, v := range match {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				continue lines
			}
		}
		n++
	}
	return n
}

// listenerAddr returns the address the worker's HTTP listener is bound to,
// from its log, or "" when it has not logged it yet.
func listenerAddr(w *worker) string {
	for _, l := range logLines(w.stderrPath) {
		if l["msg"] == "http listener started" {
			if a, ok := l["addr"].(string); ok {
				return a
			}
		}
	}
	return ""
}

// probeClient is the client of the worker's probes: every call has a
// deadline.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// readyz asks a worker's /readyz: the status code and the "checks" object.
func readyz(w *worker) (int, map[string]any, error) {
	addr := listenerAddr(w)
	if addr == "" {
		return 0, nil, fmt.Errorf("no http listener logged yet")
	}
	resp, err := probeClient.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]any `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decode /readyz: %w", err)
	}
	return resp.StatusCode, body.Checks, nil
}

// waitReady waits until the worker's /readyz answers 200.
func waitReady(t *testing.T, w *worker, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the worker ready (/readyz 200)", func() (bool, string) {
		w.RequireRunning(t)
		code, checks, err := readyz(w)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("/readyz %d %v", code, checks)
	})
}

// metricSum scrapes the worker's /metrics and sums the samples of a
// metric (every label set); -1 when the metric has no sample yet.
func metricSum(w *worker, name string) (float64, error) {
	addr := listenerAddr(w)
	if addr == "" {
		return 0, fmt.Errorf("no http listener logged yet")
	}
	resp, err := probeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum, seen := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric sharing the prefix
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, seen = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !seen {
		return -1, nil
	}
	return sum, nil
}

// ---------------------------------------------------------------------------
// The broker application.

// dialBrokerForFaults is dialBroker for tests that stop the broker: the
// connection it closes at cleanup is the current one, after redial.
func dialBrokerForFaults(t *testing.T, svc services) *broker {
	t.Helper()
	b := &broker{svc: svc}
	b.conn = dialAMQP(t, svc.AMQPURL)
	t.Cleanup(func() { _ = b.conn.Close() })
	return b
}

func dialAMQP(t *testing.T, amqpURL string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	require.NoError(t, err, "connect to RabbitMQ")
	return conn
}

// redial replaces the test's broker connection, lost when the broker
// application stopped.
func (b *broker) redial(t *testing.T) {
	t.Helper()
	old := b.conn
	b.conn = dialAMQP(t, b.svc.AMQPURL)
	_ = old.Close()
}

// brokerApp stops and starts the RabbitMQ application with rabbitmqctl.
type brokerApp struct {
	b       *broker
	mu      sync.Mutex
	stopped bool
}

// controlBrokerApp returns the control of the broker application, skipping
// the test when rabbitmqctl cannot reach the broker's node. At cleanup it
// starts the application again if it is stopped, and reconnects b. Call
// it after rabbittest.Exclusive and after newSetup, so that the broker is
// back before the test's queues are deleted and before the lock is
// released.
func controlBrokerApp(t *testing.T, b *broker) *brokerApp {
	t.Helper()
	if b.svc.rabbitmqctl == nil {
		t.Skip("needs rabbitmqctl on the broker's node (a loopback AMQP_URL)")
	}
	a := &brokerApp{b: b}
	t.Cleanup(func() {
		a.mu.Lock()
		stopped := a.stopped
		a.mu.Unlock()
		if stopped {
			if err := a.start(); err != nil {
				t.Errorf("restore RabbitMQ: %v", err)
				return
			}
			conn, err := amqp.DialConfig(b.svc.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
			if err != nil {
				t.Errorf("reconnect to RabbitMQ after restoring it: %v", err)
				return
			}
			_ = b.conn.Close()
			b.conn = conn
		}
	})
	return a
}

func (a *brokerApp) ctl(timeout time.Duration, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := a.b.svc.rabbitmqctl(ctx, args...)
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Stop stops the RabbitMQ application (the Erlang node stays up).
func (a *brokerApp) Stop(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	a.stopped = true // even if the command fails half-way: restore at cleanup
	a.mu.Unlock()
	start := time.Now()
	require.NoError(t, a.ctl(2*time.Minute, "stop_app"))
	t.Logf("rabbitmqctl stop_app took %s", time.Since(start).Round(100*time.Millisecond))
}

// Start starts the RabbitMQ application, waits for it, and reconnects the
// test's broker connection.
func (a *brokerApp) Start(t *testing.T) {
	t.Helper()
	start := time.Now()
	require.NoError(t, a.start())
	t.Logf("rabbitmqctl start_app and await_startup took %s", time.Since(start).Round(100*time.Millisecond))
	a.b.redial(t)
}

func (a *brokerApp) start() error {
	if err := a.ctl(2*time.Minute, "start_app"); err != nil {
		return err
	}
	if err := a.ctl(2*time.Minute, "await_startup"); err != nil {
		return err
	}
	a.mu.Lock()
	a.stopped = false
	a.mu.Unlock()
	return nil
}

// ---------------------------------------------------------------------------
// The PostgreSQL server.

// postgresCluster controls the local PostgreSQL cluster with pg_ctlcluster.
type postgresCluster struct {
	version string // the folder under /etc/postgresql
	name    string
	host    string
	port    string
}

// localPostgres returns the control of the PostgreSQL cluster behind
// databaseURL, skipping the test when it is not a local cluster that
// pg_ctlcluster manages. At cleanup it makes sure the server is up.
func localPostgres(t *testing.T, databaseURL string) *postgresCluster {
	t.Helper()
	if !isLoopbackURL(databaseURL) {
		t.Skip("needs a local PostgreSQL (a loopback DATABASE_URL) to restart")
	}
	for _, tool := range []string{"pg_ctlcluster", "pg_isready"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to restart PostgreSQL", tool)
		}
	}
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(versions) != 1 {
		t.Skipf("needs exactly one PostgreSQL version under /etc/postgresql (%v)", err)
	}
	u, err := url.Parse(databaseURL)
	require.NoError(t, err)
	pg := &postgresCluster{version: versions[0].Name(), name: "main", host: u.Hostname(), port: u.Port()}
	if pg.port == "" {
		pg.port = "5432"
	}
	t.Cleanup(func() {
		if pg.ready() {
			return
		}
		t.Log("PostgreSQL is down at cleanup: starting it")
		if err := pg.ctl("start"); err != nil {
			t.Errorf("restore PostgreSQL: %v", err)
		}
		if err := pg.awaitReady(time.Minute); err != nil {
			t.Errorf("restore PostgreSQL: %v", err)
		}
	})
	return pg
}

func (pg *postgresCluster) ctl(action string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", pg.version, pg.name, action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s %s %s: %w: %s", pg.version, pg.name, action, err, out)
	}
	return nil
}

func (pg *postgresCluster) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "pg_isready", "-q", "-h", pg.host, "-p", pg.port).Run() == nil
}

func (pg *postgresCluster) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !pg.ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL not ready within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Restart restarts the server (every session is disconnected) and waits
// until it accepts connections again.
func (pg *postgresCluster) Restart(t *testing.T) {
	t.Helper()
	require.NoError(t, pg.ctl("restart"))
	require.NoError(t, pg.awaitReady(time.Minute))
}
