package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/revsync/revsync/worker"
)

func TestProbesAndMetrics(t *testing.T) {
	t.Parallel()
	var brokerDown, dbDown atomic.Bool
	p := &probes{
		brokerReady: func() bool { return !brokerDown.Load() },
		pingDB: func(context.Context) error {
			if dbDown.Load() {
				return errors.New("connection refused")
			}
			return nil
		},
	}
	reg := prometheus.NewRegistry()
	worker.NewMetrics(reg).Received()
	obs, err := startObserver("127.0.0.1:0", p, reg, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = obs.stop(context.Background()) })
	base := "http://" + obs.Addr()

	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	readyz := func() (int, map[string]string) {
		code, body := get("/readyz")
		var r struct {
			Ready  bool
			Checks map[string]string
		}
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		require.Equal(t, code == http.StatusOK, r.Ready)
		return code, r.Checks
	}

	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, checks := readyz()
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, map[string]string{"broker": "ok", "database": "ok", "draining": "no"}, checks)

	brokerDown.Store(true)
	code, checks = readyz()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "disconnected", checks["broker"])

	brokerDown.Store(false)
	dbDown.Store(true)
	code, checks = readyz()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "unreachable", checks["database"])

	dbDown.Store(false)
	p.draining.Store(true)
	code, checks = readyz()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "yes", checks["draining"])

	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.Contains(body, "revsync_messages_received_total 1"), body)
}

func TestObserverAddressInUseIsAConfigError(t *testing.T) {
	t.Parallel()
	first, err := startObserver("127.0.0.1:0", &probes{}, prometheus.NewRegistry(), zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = first.stop(context.Background()) })
	_, err = startObserver(first.Addr(), &probes{}, prometheus.NewRegistry(), zap.NewNop())
	require.Error(t, err)
	require.Equal(t, exitConfig, exitCode(err))
	require.Contains(t, err.Error(), "http.listen")
}
