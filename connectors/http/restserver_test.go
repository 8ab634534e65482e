package http_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// restServer is a small in-memory REST resource that behaves like
// json-server: collections of JSON objects with an "id", where
//
//	GET    /{collection}/{id}  200 or 404
//	POST   /{collection}       201; 409 when the id exists
//	PUT    /{collection}/{id}  200 replace; 404 when missing (201 create with putCreates)
//	PATCH  /{collection}/{id}  200 merge; 404 when missing
//	DELETE /{collection}/{id}  200; 404 when missing
//
// json-server 0.17 answers a duplicate POST with 500 ("Insert failed,
// duplicate id"); this server answers 409, what a well-behaved REST API
// says and what the post_then_put strategy relies on.
type restServer struct {
	*httptest.Server
	putCreates bool

	mu       sync.Mutex
	data     map[string]map[string]map[string]any // collection → id → object
	requests []recorded
}

// recorded is one request the server received.
type recorded struct {
	Method string
	Path   string // escaped, as sent
	Header http.Header
	Body   string
	Status int
}

func newRESTServer(t *testing.T, putCreates bool) *restServer {
	s := &restServer{putCreates: putCreates, data: map[string]map[string]map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{coll}/{id}", s.get)
	mux.HandleFunc("POST /{coll}", s.post)
	mux.HandleFunc("PUT /{coll}/{id}", s.put)
	mux.HandleFunc("PATCH /{coll}/{id}", s.patch)
	mux.HandleFunc("DELETE /{coll}/{id}", s.delete)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		mux.ServeHTTP(rec, r)
		s.mu.Lock()
		s.requests = append(s.requests, recorded{r.Method, r.URL.EscapedPath(), r.Header.Clone(), string(body), rec.status})
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

// lookup returns a copy of the object, and whether it exists.
func (s *restServer) lookup(coll, id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.data[coll][id]
	return maps.Clone(obj), ok
}

// seed stores an object directly.
func (s *restServer) seed(coll, id string, obj map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data[coll] == nil {
		s.data[coll] = map[string]map[string]any{}
	}
	s.data[coll][id] = obj
}

// calls returns "METHOD path status" for every request, in order.
func (s *restServer) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.requests))
	for i, r := range s.requests {
		out[i] = fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status)
	}
	return out
}

func (s *restServer) recordedRequests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.requests...)
}

func (s *restServer) get(w http.ResponseWriter, r *http.Request) {
	obj, ok := s.lookup(r.PathValue("coll"), r.PathValue("id"))
	if !ok {
		reply(w, http.StatusNotFound, map[string]any{})
		return
	}
	reply(w, http.StatusOK, obj)
}

func (s *restServer) post(w http.ResponseWriter, r *http.Request) {
	obj, ok := decode(w, r)
	if !ok {
		return
	}
	id, ok := obj["id"]
	if !ok {
		reply(w, http.StatusBadRequest, map[string]any{"error": "id required"})
		return
	}
	key := fmt.Sprint(id)
	coll := r.PathValue("coll")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.data[coll][key]; exists {
		reply(w, http.StatusConflict, map[string]any{"error": "duplicate id"})
		return
	}
	if s.data[coll] == nil {
		s.data[coll] = map[string]map[string]any{}
	}
	s.data[coll][key] = obj
	reply(w, http.StatusCreated, obj)
}

func (s *restServer) put(w http.ResponseWriter, r *http.Request) {
	obj, ok := decode(w, r)
	if !ok {
		return
	}
	coll, id := r.PathValue("coll"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	status := http.StatusOK
	if _, exists := s.data[coll][id]; !exists {
		if !s.putCreates {
			reply(w, http.StatusNotFound, map[string]any{})
			return
		}
		status = http.StatusCreated
	}
	if s.data[coll] == nil {
		s.data[coll] = map[string]map[string]any{}
	}
	obj["id"] = id
	s.data[coll][id] = obj
	reply(w, status, obj)
}

func (s *restServer) patch(w http.ResponseWriter, r *http.Request) {
	obj, ok := decode(w, r)
	if !ok {
		return
	}
	coll, id := r.PathValue("coll"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.data[coll][id]
	if !exists {
		reply(w, http.StatusNotFound, map[string]any{})
		return
	}
	maps.Copy(cur, obj)
	cur["id"] = id
	reply(w, http.StatusOK, cur)
}

func (s *restServer) delete(w http.ResponseWriter, r *http.Request) {
	coll, id := r.PathValue("coll"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.data[coll][id]; !exists {
		reply(w, http.StatusNotFound, map[string]any{})
		return
	}
	delete(s.data[coll], id)
	reply(w, http.StatusOK, map[string]any{})
}

func decode(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	if r.Header.Get("Content-Type") != "application/json" {
		reply(w, http.StatusUnsupportedMediaType, map[string]any{"error": "want application/json"})
		return nil, false
	}
	var obj map[string]any
	if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
		reply(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
		return nil, false
	}
	return obj, true
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}
