package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// probes answers /readyz: ready means connected to the broker, the
// database answering, and not draining.
type probes struct {
	brokerReady func() bool
	pingDB      func(ctx context.Context) error
	draining    atomic.Bool
}

// readiness reports whether the worker should receive work and, if not,
// why.
func (p *probes) readiness(ctx context.Context) (bool, map[string]string) {
	checks := map[string]string{"broker": "ok", "database": "ok", "draining": "no"}
	ready := true
	if p.draining.Load() {
		checks["draining"] = "yes"
		ready = false
	}
	if p.brokerReady != nil && !p.brokerReady() {
		checks["broker"] = "disconnected"
		ready = false
	}
	if p.pingDB != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := p.pingDB(ctx); err != nil {
			checks["database"] = "unreachable"
			ready = false
		}
	}
	return ready, checks
}

// observer is the HTTP listener for probes and metrics.
type observer struct {
	srv *http.Server
	ln  net.Listener
}

// startObserver listens on addr and serves /healthz, /readyz and /metrics
// until stopped.
func startObserver(addr string, p *probes, gatherer prometheus.Gatherer, logger *zap.Logger) (*observer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, checks := p.readiness(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": checks})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configErrorf("http.listen %q: %w", addr, err)
	}
	o := &observer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second},
		ln:  ln,
	}
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http listener stopped", zap.Error(err))
		}
	}()
	logger.Info("http listener started", zap.String("addr", ln.Addr().String()))
	return o, nil
}

// Addr is the address the listener is bound to.
func (o *observer) Addr() string { return o.ln.Addr().String() }

// stop shuts the listener down, waiting at most until ctx is done.
func (o *observer) stop(ctx context.Context) error { return o.srv.Shutdown(ctx) }
