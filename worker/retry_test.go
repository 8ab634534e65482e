package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/workertest"
)

// metric returns the value of a counter or gauge, or the sample count of a
// histogram, with exactly the given labels; 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func failTransiently(retryAfter time.Duration) func(context.Context, *jobs.Context) error {
	return func(context.Context, *jobs.Context) error {
		return &jobs.TransientError{RetryAfter: retryAfter, Err: errors.New("remote answered 503")}
	}
}

// runOne runs w on one delivery and returns its settler's calls.
func runOne(t *testing.T, w *worker.Worker, d worker.Delivery, s *workertest.Settler) workertest.Calls {
	t.Helper()
	src := workertest.NewSource(1)
	require.True(t, src.Send(d))
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())
	return s.Calls()
}

func TestTransientFailureIsRetried(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name            string
		attempt         any // the header
		retryAfter      time.Duration
		min, max        time.Duration
		wantAttempt     int
		wantNextAttempt int
	}{
		{name: "first attempt", min: 800 * time.Millisecond, max: time.Second, wantAttempt: 1, wantNextAttempt: 2},
		{name: "third attempt", attempt: int32(3), min: 24 * time.Second, max: 30 * time.Second, wantAttempt: 3, wantNextAttempt: 4},
		{name: "Retry-After floor", attempt: int64(2), retryAfter: 42 * time.Second, min: 42 * time.Second, max: 42 * time.Second,
			wantAttempt: 2, wantNextAttempt: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{fail: failTransiently(tt.retryAfter)}
			w, logs := newWorker(t, rec, nil)
			d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
			if tt.attempt != nil {
				d.Headers = map[string]any{worker.HeaderAttempt: tt.attempt}
			}
			calls := runOne(t, w, d, s)
			require.Zero(t, calls.Acks, "Retry acks the original itself")
			require.Empty(t, calls.DeadLetters)
			require.Len(t, calls.Retries, 1)
			r := calls.Retries[0]
			require.Equal(t, tt.wantNextAttempt, r.Attempt)
			require.Equal(t, jobs.ClassTransient, r.Class)
			require.Contains(t, r.Reason, "remote answered 503")
			require.GreaterOrEqual(t, r.Delay, tt.min)
			require.LessOrEqual(t, r.Delay, tt.max)
			require.Equal(t, tt.wantAttempt, rec.reads[0].Attempt)

			lines := outcomeLines(logs, "m-1")
			require.Len(t, lines, 1)
			f := lines[0].ContextMap()
			require.Equal(t, "retried", f["status"])
			require.Equal(t, "transient", f["class"])
			require.Equal(t, int64(tt.wantAttempt), f["attempt"])
			require.Equal(t, int64(tt.wantNextAttempt), f["next_attempt"])
			require.Equal(t, zapcore.InfoLevel, lines[0].Level)
		})
	}
}

// TestConnectorMaxAttempts: a connector's own max_attempts wins.
func TestConnectorMaxAttempts(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: failTransiently(0)}
	conn := workertest.CustomerConnector()
	conn.Retry = &jobs.RetryPolicy{MaxAttempts: 2, Schedule: []jobs.Duration{jobs.Duration(100 * time.Millisecond)}}
	cat := workertest.CatalogOf(t, rec, rec, jobs.Integration{Name: workertest.Integration, Connectors: []jobs.Connector{conn}})
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Catalog = cat })

	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	calls := runOne(t, w, d, s)
	require.Len(t, calls.Retries, 1)
	require.Equal(t, 2, calls.Retries[0].Attempt)
	require.LessOrEqual(t, calls.Retries[0].Delay, 100*time.Millisecond)

	d, s = workertest.NewDelivery(workertest.CustomerBody("A"), "m-2", "crm.customer")
	d.Headers = map[string]any{worker.HeaderAttempt: int32(2)}
	calls = runOne(t, w, d, s)
	require.Empty(t, calls.Retries)
	require.Len(t, calls.DeadLetters, 1)
	require.Equal(t, jobs.ClassRetriesExhausted, calls.DeadLetters[0].Class)
	require.Equal(t, 2, calls.DeadLetters[0].Attempt)
	require.Contains(t, calls.DeadLetters[0].Reason, "2 attempts failed, the last with: ")
}

// TestRetryPublishFailure: a retry copy that is not confirmed leaves the
// original unacknowledged and is published again with backoff, like a
// dead-letter copy (F08's rule).
func TestRetryPublishFailure(t *testing.T) {
	t.Parallel()
	w, logs := newWorker(t, &recorder{fail: failTransiently(0)}, nil)
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	var tries atomic.Int32
	s.RetryFunc = func(context.Context, worker.Retry) error {
		if tries.Add(1) <= 2 {
			return errors.New("publish returned: no route")
		}
		return nil
	}
	s.AckFunc = func(context.Context) error {
		t.Error("the original must not be acked outside Retry")
		return nil
	}
	calls := runOne(t, w, d, s)
	require.Equal(t, 3, calls.RetryTries)
	require.Len(t, calls.Retries, 1)
	require.Empty(t, calls.DeadLetters)
	require.Equal(t, 2, logs.FilterMessageSnippet("retry publish failed").Len())
}

func TestRetryPublishFailureOnShutdownRequeues(t *testing.T) {
	t.Parallel()
	w, logs := newWorker(t, &recorder{fail: failTransiently(0)}, nil)
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	s.RetryFunc = func(context.Context, worker.Retry) error { return errors.New("not confirmed") }
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	require.Eventually(t, func() bool { return s.Calls().RetryTries >= 2 }, 5*time.Second, time.Millisecond)
	require.NoError(t, stop())
	calls := s.Calls()
	require.Equal(t, 1, calls.Requeues)
	require.Equal(t, 1, calls.Settled())
	require.Equal(t, "requeued", outcomeLines(logs, "m-1")[0].ContextMap()["status"])
}

// TestBreakerDefersWithoutBurningAttempts: once an integration's breaker
// is open, its messages are deferred with their attempt unchanged and never
// run; another integration keeps flowing.
func TestBreakerDefersWithoutBurningAttempts(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: func(_ context.Context, jc *jobs.Context) error {
		if jc.Integration == workertest.Integration {
			return &jobs.TransientError{Err: errors.New("remote answered 503")}
		}
		return nil
	}}
	cat := workertest.CatalogOf(t, rec, rec,
		jobs.Integration{Name: workertest.Integration, Connectors: []jobs.Connector{workertest.CustomerConnector()}},
		jobs.Integration{Name: "erp", Connectors: []jobs.Connector{workertest.CustomerConnector()}},
	)
	reg := prometheus.NewRegistry()
	w, logs := newWorker(t, rec, func(c *worker.Config) {
		c.Catalog = cat
		c.Concurrency = 1 // in order: the breaker has opened when the third arrives
		c.Breaker = worker.BreakerConfig{MinCalls: 2, WindowCalls: 2, CoolDown: time.Hour}
		c.Metrics = worker.NewMetrics(reg)
	})
	require.Equal(t, float64(0), metric(t, reg, "revsync_breaker_state", "integration", "erp"), "exported from the start")

	src := workertest.NewSource(4)
	var settlers []*workertest.Settler
	for i, m := range []struct {
		integration string
		attempt     int32
	}{{"crm", 1}, {"crm", 1}, {"crm", 3}, {"erp", 1}} {
		d, s := workertest.NewDelivery(workertest.Body(m.integration, workertest.Customer, map[string]any{"customer_id": "A"}),
			fmt.Sprintf("m-%d", i+1), m.integration+".customer")
		d.Headers = map[string]any{worker.HeaderAttempt: m.attempt}
		require.True(t, src.Send(d))
		settlers = append(settlers, s)
	}
	stop := started(t, w, src)
	for _, s := range settlers {
		waitSettled(t, s)
	}
	require.NoError(t, stop())

	for _, s := range settlers[:2] {
		c := s.Calls()
		require.Len(t, c.Retries, 1)
		require.Equal(t, jobs.ClassTransient, c.Retries[0].Class)
		require.Equal(t, 2, c.Retries[0].Attempt)
	}
	deferred := settlers[2].Calls()
	require.Len(t, deferred.Retries, 1)
	require.Equal(t, worker.ClassBreakerOpen, deferred.Retries[0].Class)
	require.Equal(t, 3, deferred.Retries[0].Attempt, "deferral does not burn an attempt")
	require.Greater(t, deferred.Retries[0].Delay, 59*time.Minute, "the rest of the cool-down")
	require.LessOrEqual(t, deferred.Retries[0].Delay, time.Hour)
	require.Equal(t, 1, settlers[3].Calls().Acks, "the other integration keeps flowing")
	reads, _ := rec.counts()
	require.Equal(t, 3, reads, "the deferred message never ran")

	line := outcomeLines(logs, "m-3")
	require.Len(t, line, 1)
	require.Equal(t, "deferred", line[0].ContextMap()["status"])
	require.Equal(t, 1, logs.FilterMessageSnippet("circuit breaker opened").Len())

	require.Equal(t, float64(2), metric(t, reg, "revsync_breaker_state", "integration", "crm"))
	require.Equal(t, float64(0), metric(t, reg, "revsync_breaker_state", "integration", "erp"))
	require.Equal(t, float64(2), metric(t, reg, "revsync_messages_retried_total", "integration", "crm", "reason", "transient"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_messages_retried_total", "integration", "crm", "reason", "breaker_open"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_messages_acked_total", "integration", "erp", "connector", "customer"))
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: func(_ context.Context, jc *jobs.Context) error {
		if jc.MessageID == "fails" {
			return jobs.Permanent(errors.New("remote answered 422"))
		}
		return nil
	}}
	reg := prometheus.NewRegistry()
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Metrics = worker.NewMetrics(reg) })
	src := workertest.NewSource(3)
	var settlers []*workertest.Settler
	for id, body := range map[string][]byte{
		"ok":      workertest.CustomerBody("A"),
		"fails":   workertest.CustomerBody("B"),
		"invalid": []byte(`{"truncated`),
	} {
		d, s := workertest.NewDelivery(body, id, "crm.customer")
		src.Send(d)
		settlers = append(settlers, s)
	}
	stop := started(t, w, src)
	for _, s := range settlers {
		waitSettled(t, s)
	}
	require.NoError(t, stop())

	require.Equal(t, float64(3), metric(t, reg, "revsync_messages_received_total"))
	require.Equal(t, float64(0), metric(t, reg, "revsync_messages_in_flight"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_messages_acked_total", "integration", "crm", "connector", "customer"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_messages_dead_lettered_total", "class", "permanent"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_messages_dead_lettered_total", "class", "invalid_message"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_job_duration_seconds", "integration", "crm", "connector", "customer", "status", "completed"))
	require.Equal(t, float64(1), metric(t, reg, "revsync_job_duration_seconds", "integration", "crm", "connector", "customer", "status", "failed"))
	require.Equal(t, float64(0), metric(t, reg, "revsync_breaker_state", "integration", "crm"))
}

// TestRetryAfterIsAFloorEvenPastTheDelayQueues: a Retry-After longer than
// any delay queue is kept on the copy as its not-before time; a copy that
// comes back before it waits again for the rest, without running and
// without spending an attempt.
func TestRetryAfterIsAFloorEvenPastTheDelayQueues(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: failTransiently(time.Hour)}
	w, _ := newWorker(t, rec, nil)
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	before := time.Now()
	calls := runOne(t, w, d, s)
	require.Len(t, calls.Retries, 1)
	r := calls.Retries[0]
	require.Equal(t, time.Hour, r.Delay)
	require.WithinRange(t, r.NotBefore, before.Add(time.Hour), time.Now().Add(time.Hour))

	// Back early, as from a delay queue shorter than an hour.
	rec2 := &recorder{}
	w2, _ := newWorker(t, rec2, nil)
	d2, s2 := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	d2.Headers = map[string]any{worker.HeaderAttempt: int32(2), worker.HeaderNotBefore: r.NotBefore.UnixMilli(),
		worker.HeaderRetryClass: "transient", worker.HeaderRetryReason: "remote answered 429"}
	calls = runOne(t, w2, d2, s2)
	reads, _ := rec2.counts()
	require.Zero(t, reads, "a copy back before its Retry-After must not run")
	require.Len(t, calls.Retries, 1)
	again := calls.Retries[0]
	require.Equal(t, 2, again.Attempt, "waiting again spends no attempt")
	require.Equal(t, r.NotBefore.UnixMilli(), again.NotBefore.UnixMilli())
	require.Greater(t, again.Delay, 59*time.Minute)
	require.Equal(t, jobs.ClassTransient, again.Class)

	// Back on time: it runs.
	rec3 := &recorder{}
	w3, _ := newWorker(t, rec3, nil)
	d3, s3 := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	d3.Headers = map[string]any{worker.HeaderAttempt: int32(2), worker.HeaderNotBefore: time.Now().UnixMilli()}
	calls = runOne(t, w3, d3, s3)
	reads, _ = rec3.counts()
	require.Equal(t, 1, reads)
	require.Equal(t, 1, calls.Acks)
}

// TestFarFutureNotBeforeIsIgnored: a not-before further ahead than any
// Retry-After revsync honours (a wrong clock, a stray header) must not keep
// a message cycling through the delay queues: it runs.
func TestFarFutureNotBeforeIsIgnored(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	w, _ := newWorker(t, rec, nil)
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	d.Headers = map[string]any{worker.HeaderNotBefore: int64(32503680000000)} // the year 3000
	calls := runOne(t, w, d, s)
	reads, _ := rec.counts()
	require.Equal(t, 1, reads)
	require.Equal(t, 1, calls.Acks)
}

// TestRetriesDoNotOpenTheBreaker: one entity failing again and again on
// its retries must not open the breaker for its whole integration; fresh
// events still run.
func TestRetriesDoNotOpenTheBreaker(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: failTransiently(0)}
	w, _ := newWorker(t, rec, func(c *worker.Config) {
		c.Breaker = worker.BreakerConfig{MinCalls: 2, WindowCalls: 4, FailureRatio: 0.5, CoolDown: time.Minute}
	})
	src := workertest.NewSource(8)
	var settlers []*workertest.Settler
	for attempt := range int32(4) {
		d, s := workertest.NewDelivery(workertest.CustomerBody("BAD"), fmt.Sprintf("retry-%d", attempt), "crm.customer")
		d.Headers = map[string]any{worker.HeaderAttempt: attempt + 2}
		require.True(t, src.Send(d))
		settlers = append(settlers, s)
	}
	stop := started(t, w, src)
	for _, s := range settlers {
		waitSettled(t, s)
	}
	fresh, s := workertest.NewDelivery(workertest.CustomerBody("GOOD"), "fresh", "crm.customer")
	require.True(t, src.Send(fresh))
	waitSettled(t, s)
	require.NoError(t, stop())
	retries := s.Calls().Retries
	require.Len(t, retries, 1)
	require.NotEqual(t, worker.ClassBreakerOpen, retries[0].Class, "the fresh event ran: the breaker stayed closed")
	reads, _ := rec.counts()
	require.Equal(t, 5, reads)
}

// TestDatabaseFailuresDoNotOpenTheBreaker: the breaker watches the remote.
// Transient failures of the reader (the database) are retried but do not
// count against the integration's remote.
func TestDatabaseFailuresDoNotOpenTheBreaker(t *testing.T) {
	t.Parallel()
	rec := &recorder{failRead: failTransiently(0)}
	w, _ := newWorker(t, rec, func(c *worker.Config) {
		c.Breaker = worker.BreakerConfig{MinCalls: 2, WindowCalls: 4, FailureRatio: 0.5, CoolDown: time.Minute}
	})
	src, settlers := queued(t, 5)
	stop := started(t, w, src)
	for _, s := range settlers {
		waitSettled(t, s)
	}
	require.NoError(t, stop())
	for _, s := range settlers {
		retries := s.Calls().Retries
		require.Len(t, retries, 1)
		require.Equal(t, jobs.ClassTransient, retries[0].Class, "every event ran: the breaker stayed closed")
	}
	reads, _ := rec.counts()
	require.Equal(t, 5, reads)
}
