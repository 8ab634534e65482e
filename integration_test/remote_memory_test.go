package integration_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memoryRemote is a REST remote held in memory, answering like json-server
// (GET, POST to a collection, PUT, PATCH and DELETE of an item; PUT of a
// missing item is 404 unless SetPutCreates, POST of an existing one 409),
// that misbehaves on demand (per-request delay, hang, status with
// Retry-After, latency) and records every request it sees, headers
// included. The tests read its state and its logs directly, never over
// HTTP, so that they add no requests of their own. It can be taken down
// (connection refused) and brought back on the same address.
type memoryRemote struct {
	URL     string
	addr    string
	stopped chan struct{} // closed at cleanup: releases held requests

	mu          sync.Mutex
	collections map[string]map[string]json.RawMessage
	requests    []*seenRequest
	writes      []*seenRequest // requests that changed an item, in the order they did
	inFlight    int
	fault       func(seenRequest) remoteFault
	latency     time.Duration
	putCreates  bool
	srv         *http.Server // nil while down
}

// seenRequest is one request as the remote saw it.
type seenRequest struct {
	Seq        int // 1 for the first request the remote received
	At         time.Time
	Answered   time.Time
	Method     string
	Path       string
	Collection string
	ID         string // the item's id: from the path, or a POST's body
	Header     http.Header
	Body       json.RawMessage
	Status     int  // 0: not answered (yet), or the client went away first
	Faulted    bool // answered by the injected fault
	WriteSeq   int  // > 0: the write changed the item, the WriteSeq-th to change any item
}

// remoteFault is what the remote does to one request instead of (Status)
// or before (Delay, Hang) answering it normally.
type remoteFault struct {
	Delay      time.Duration
	Hang       bool   // hold the request until the client goes away: it changes nothing
	Status     int    // non-zero: answer with this status and apply nothing
	RetryAfter string // the Retry-After header of a faulted answer
}

// startMemoryRemote starts a memory remote on a free 127.0.0.1 port, with
// empty collections. It is stopped at cleanup.
func startMemoryRemote(t *testing.T, collections ...string) *memoryRemote {
	t.Helper()
	m := &memoryRemote{addr: "127.0.0.1:0", stopped: make(chan struct{}), collections: map[string]map[string]json.RawMessage{}}
	for _, c := range collections {
		m.collections[c] = map[string]json.RawMessage{}
	}
	m.Up(t)
	m.URL = "http://" + m.addr
	t.Cleanup(func() {
		close(m.stopped)
		m.Down()
	})
	return m
}

// SetFault sets the function deciding each request's fault; it is called
// with the remote's lock held and must not call the remote.
func (m *memoryRemote) SetFault(f func(seenRequest) remoteFault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault = f
}

// SetPutCreates makes a PUT of a missing item create it, so that one
// export (update first, POST on 404) is one request.
func (m *memoryRemote) SetPutCreates(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putCreates = on
}

// SetLatency delays every answer by d.
func (m *memoryRemote) SetLatency(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.latency = d
}

// Up starts serving on the remote's address (a free port the first time).
func (m *memoryRemote) Up(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Nil(t, m.srv, "memory remote already up")
	var ln net.Listener
	var err error
	// The port was ours a moment ago; a connection of the last life in
	// TIME_WAIT does not stop a listener (Go sets SO_REUSEADDR).
	for range 50 {
		if ln, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err, "memory remote: listen on %s", m.addr)
	m.addr = ln.Addr().String()
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(ln) }(m.srv)
}

// Down stops serving and closes every connection: requests are refused
// until Up.
func (m *memoryRemote) Down() {
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Seed stores an item as if it had been created.
func (m *memoryRemote) Seed(t *testing.T, collection string, item map[string]any) {
	t.Helper()
	data, err := json.Marshal(item)
	require.NoError(t, err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.collections[collection][fmt.Sprint(item["id"])] = data
}

// Items returns a collection's items by id, decoded as a JSON client
// would (numbers are float64).
func (m *memoryRemote) Items(collection string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]any, len(m.collections[collection]))
	for id, raw := range m.collections[collection] {
		var v any
		_ = json.Unmarshal(raw, &v)
		out[id] = v
	}
	return out
}

// Requests returns the requests received so far, in order, that match
// (every request when match is nil).
func (m *memoryRemote) Requests(match func(seenRequest) bool) []seenRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []seenRequest
	for _, r := range m.requests {
		if match == nil || match(*r) {
			out = append(out, *r)
		}
	}
	return out
}

// Writes returns the requests that changed the item collection/id, in the
// order they changed it.
func (m *memoryRemote) Writes(collection, id string) []seenRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []seenRequest
	for _, r := range m.writes {
		if r.Collection == collection && r.ID == id {
			out = append(out, *r)
		}
	}
	return out
}

// InFlight is the number of requests being held or served now.
func (m *memoryRemote) InFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inFlight
}

// forItem matches the requests about one item.
func forItem(collection, id string) func(seenRequest) bool {
	return func(r seenRequest) bool { return r.Collection == collection && r.ID == id }
}

// ServeHTTP records the request, injects its fault and answers it.
func (m *memoryRemote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	rec := &seenRequest{At: time.Now(), Method: r.Method, Path: r.URL.Path, Collection: parts[0],
		Header: r.Header.Clone(), Body: body}
	if len(parts) > 1 {
		rec.ID = strings.Join(parts[1:], "/")
	} else if r.Method == http.MethodPost {
		var item map[string]any
		if json.Unmarshal(body, &item) == nil && item["id"] != nil {
			rec.ID = fmt.Sprint(item["id"])
		}
	}

	m.mu.Lock()
	rec.Seq = len(m.requests) + 1
	m.requests = append(m.requests, rec)
	m.inFlight++
	var fault remoteFault
	if m.fault != nil {
		fault = m.fault(*rec)
	}
	delay := fault.Delay + m.latency
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inFlight--
		m.mu.Unlock()
	}()

	if delay > 0 || fault.Hang {
		var timer <-chan time.Time
		if !fault.Hang {
			tm := time.NewTimer(delay)
			defer tm.Stop()
			timer = tm.C
		}
		select {
		case <-timer:
		case <-r.Context().Done():
			m.answered(rec, 0, false)
			return
		case <-m.stopped:
			m.answered(rec, 0, false)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "remote stopping"})
			return
		}
	}
	if fault.Status != 0 {
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		m.answered(rec, fault.Status, true)
		writeJSON(w, fault.Status, map[string]string{"error": "injected: " + http.StatusText(fault.Status)})
		return
	}
	status, answer := m.apply(rec)
	writeJSON(w, status, answer)
}

// answered records how a request was answered.
func (m *memoryRemote) answered(rec *seenRequest, status int, faulted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec.Answered, rec.Status, rec.Faulted = time.Now(), status, faulted
}

// apply carries out a request like json-server and returns the answer.
func (m *memoryRemote) apply(rec *seenRequest) (int, any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	status, answer := m.applyLocked(rec)
	rec.Answered, rec.Status = time.Now(), status
	return status, answer
}

func (m *memoryRemote) applyLocked(rec *seenRequest) (int, any) {
	coll, ok := m.collections[rec.Collection]
	if !ok {
		return http.StatusNotFound, map[string]string{"error": "no collection " + strconv.Quote(rec.Collection)}
	}
	write := func(id string, item map[string]any) json.RawMessage {
		if item["id"] == nil {
			item["id"] = id
		}
		data, _ := json.Marshal(item)
		coll[id] = data
		m.writes = append(m.writes, rec)
		rec.WriteSeq = len(m.writes)
		return data
	}
	decode := func() (map[string]any, error) {
		var item map[string]any
		if err := json.Unmarshal(rec.Body, &item); err != nil || item == nil {
			return nil, errors.New("body is not a JSON object")
		}
		return item, nil
	}
	switch {
	case rec.Method == http.MethodGet && rec.ID == "":
		ids := make([]string, 0, len(coll))
		for id := range coll {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		list := make([]json.RawMessage, 0, len(ids))
		for _, id := range ids {
			list = append(list, coll[id])
		}
		return http.StatusOK, list
	case rec.Method == http.MethodGet:
		if raw, ok := coll[rec.ID]; ok {
			return http.StatusOK, raw
		}
		return http.StatusNotFound, map[string]string{}
	case rec.Method == http.MethodPost:
		item, err := decode()
		if err != nil || rec.ID == "" {
			return http.StatusBadRequest, map[string]string{"error": "want a JSON object with an id"}
		}
		if _, exists := coll[rec.ID]; exists {
			return http.StatusConflict, map[string]string{"error": "duplicate id " + rec.ID}
		}
		return http.StatusCreated, write(rec.ID, item)
	case rec.Method == http.MethodPut, rec.Method == http.MethodPatch:
		old, exists := coll[rec.ID]
		if !exists && !(rec.Method == http.MethodPut && m.putCreates) {
			return http.StatusNotFound, map[string]string{}
		}
		item, err := decode()
		if err != nil {
			return http.StatusBadRequest, map[string]string{"error": err.Error()}
		}
		if rec.Method == http.MethodPatch {
			var merged map[string]any
			_ = json.Unmarshal(old, &merged)
			for k, v := range item {
				merged[k] = v
			}
			item = merged
		}
		return http.StatusOK, write(rec.ID, item)
	case rec.Method == http.MethodDelete:
		if _, exists := coll[rec.ID]; !exists {
			return http.StatusNotFound, map[string]string{}
		}
		delete(coll, rec.ID)
		m.writes = append(m.writes, rec)
		rec.WriteSeq = len(m.writes)
		return http.StatusOK, map[string]string{}
	}
	return http.StatusMethodNotAllowed, map[string]string{"error": rec.Method}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// waitForItems waits until a remote collection holds n items, failing at
// once when a worker has exited.
func waitForItems(t *testing.T, remote *memoryRemote, collection string, n int, timeout time.Duration, ws ...*worker) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d items in remote /%s", n, collection), func() (bool, string) {
		requireRunning(t, ws...)
		got := len(remote.Items(collection))
		return got >= n, fmt.Sprintf("%d items", got)
	})
}
