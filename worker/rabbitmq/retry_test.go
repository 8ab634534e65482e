package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
	"github.com/revsync/revsync/worker/workertest"
)

// placement is where the messages of a test are: ready in the work queue,
// ready in each delay queue, ready in the dead-letter queue, and in flight
// in the worker (received and not yet settled).
type placement struct {
	work, dlq, inFlight int
	retry               []int // by delay queue
}

func (p placement) total() int {
	n := p.work + p.dlq + p.inFlight
	for _, r := range p.retry {
		n += r
	}
	return n
}

func (p placement) String() string {
	return fmt.Sprintf("work=%d retry=%v dlq=%d in_flight=%d", p.work, p.retry, p.dlq, p.inFlight)
}

// place reads where the messages are. The reads are not atomic: a message
// moving meanwhile may be counted twice or not at all; see stablePlace.
func (e *env) place(reg *prometheus.Registry) placement {
	e.t.Helper()
	p := placement{inFlight: int(metricValue(e.t, reg, "revsync_messages_in_flight"))}
	p.work, _ = e.depth(e.cfg.Queue)
	for _, q := range rabbitmq.RetryQueues(e.cfg) {
		n, _ := e.depth(q)
		p.retry = append(p.retry, n)
	}
	p.dlq, _ = e.depth(e.cfg.DeadLetterQueue)
	return p
}

// stablePlace reads the placement until three reads in a row agree — a
// message did not move while it was read — and returns it.
func (e *env) stablePlace(reg *prometheus.Registry) placement {
	e.t.Helper()
	prev, same := e.place(reg), 1
	for same < 3 {
		p := e.place(reg)
		if p.String() == prev.String() {
			same++
			continue
		}
		prev, same = p, 1
	}
	return prev
}

// attemptLog records the attempts the writer saw, by message ID.
type attemptLog struct {
	mu sync.Mutex
	at map[string][]time.Time
	n  map[string][]int // jc.Attempt of each
}

func newAttemptLog() *attemptLog {
	return &attemptLog{at: map[string][]time.Time{}, n: map[string][]int{}}
}

func (a *attemptLog) add(jc *jobs.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[jc.MessageID] = append(a.at[jc.MessageID], time.Now())
	a.n[jc.MessageID] = append(a.n[jc.MessageID], jc.Attempt)
}

func (a *attemptLog) get(id string) ([]time.Time, []int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.at[id]), slices.Clone(a.n[id])
}

// TestRetriesExhausted is F09: the remote always answers 503 for one
// entity; max attempts 5. Exactly 5 attempts, each after a longer delay,
// then the dead-letter queue with class retries_exhausted and the worker's
// own attempt count; at every stable reading the event is in exactly one
// of the work queue, a delay queue, the dead-letter queue or in flight.
func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	schedule := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	attempts := newAttemptLog()
	x := newExporter()
	x.write = func(_ context.Context, jc *jobs.Context) error {
		attempts.add(jc)
		if v, _ := jc.IDFilter.Value("customer_id"); v == "POISON" {
			return &jobs.TransientError{Err: errors.New("remote answered 503 Service Unavailable")}
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	w := e.worker(x, func(c *worker.Config) {
		c.Retry = worker.RetryPolicy{Schedule: schedule, MaxAttempts: 5}
		c.Metrics = worker.NewMetrics(reg)
	})
	e.cfg.RetryDelays = w.RetryDelays()
	c := e.dial()
	body := workertest.CustomerBody("POISON")
	require.NoError(t, c.Publisher().Publish(context.Background(), customerKey, rabbitmq.EventPublishing(body, "poison")))
	stop := running(t, c, w)

	// Watch where the event is until it reaches the dead-letter queue.
	var readings []placement
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := e.stablePlace(reg)
		readings = append(readings, p)
		require.Equal(t, 1, p.total(), "the event is in exactly one place: %s", p)
		if p.dlq == 1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "not dead-lettered in time; readings: %v", readings)
	}
	require.NoError(t, stop())
	require.Equal(t, 1, e.stablePlace(reg).total())
	var inRetry int
	for _, p := range readings {
		if slices.ContainsFunc(p.retry, func(n int) bool { return n > 0 }) {
			inRetry++
		}
	}
	require.Positive(t, inRetry, "seen waiting in a delay queue: %v", readings)
	t.Logf("%d stable readings, %d with the event in a delay queue", len(readings), inRetry)

	times, seen := attempts.get("poison")
	require.Equal(t, []int{1, 2, 3, 4, 5}, seen, "exactly 5 attempts, numbered by the worker")
	for i := 1; i < len(times); i++ {
		gap, sched := times[i].Sub(times[i-1]), schedule[i-1]
		require.GreaterOrEqual(t, gap, sched-sched/5, "gap %d: at least its delay less the jitter", i)
		require.Less(t, gap, sched+5*time.Second, "gap %d: not stuck", i)
	}
	require.Greater(t, times[4].Sub(times[3]), times[1].Sub(times[0]), "delays grow")

	dead := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, dead, 1)
	d := dead[0]
	require.Equal(t, body, d.Body, "byte for byte")
	require.Equal(t, "poison", d.MessageId)
	require.Equal(t, customerKey, d.RoutingKey, "dead-lettered with the original routing key, not the work queue's")
	require.Equal(t, string(jobs.ClassRetriesExhausted), d.Headers[worker.HeaderErrorClass])
	require.Contains(t, d.Headers[worker.HeaderError], "5 attempts failed, the last with: ")
	require.Contains(t, d.Headers[worker.HeaderError], "503 Service Unavailable")
	require.Equal(t, int32(5), d.Headers[worker.HeaderAttempt], "the worker's own count")
	require.Equal(t, e.cfg.Exchange, d.Headers[worker.HeaderOriginalExchange])
	require.Equal(t, customerKey, d.Headers[worker.HeaderOriginalRoutingKey])
	require.Equal(t, "application/json", d.ContentType)
	// The broker's x-death counts deaths per queue — 1 per delay queue
	// here, whatever the attempt — which is why the count is revsync's own.
	deaths, ok := d.Headers["x-death"].([]any)
	require.True(t, ok, "x-death: %v", d.Headers["x-death"])
	require.Len(t, deaths, len(schedule))
	for _, death := range deaths {
		require.Equal(t, int64(1), death.(amqp.Table)["count"])
	}

	_, writes := x.totals()
	require.Zero(t, writes)
	require.Equal(t, 1, e.logs.FilterMessage("message dead-lettered").Len())
	require.Equal(t, 4, e.logs.FilterMessageSnippet("retrying after a delay").Len())
}

// TestRetrySurvivesWorkerRestart: a retry waits in its delay queue while
// no worker runs, returns to the work queue, and the next worker exports
// it as the second attempt.
func TestRetrySurvivesWorkerRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := newExporter()
	first.write = func(context.Context, *jobs.Context) error {
		return &jobs.TransientError{Err: errors.New("remote answered 503")}
	}
	policy := worker.RetryPolicy{Schedule: []time.Duration{time.Second}, Jitter: -1}
	w1 := e.worker(first, func(c *worker.Config) { c.Retry = policy })
	e.cfg.RetryDelays = w1.RetryDelays()
	retryQueue := rabbitmq.RetryQueueName(e.cfg.Queue, time.Second)

	c1 := e.dial()
	require.NoError(t, c1.Publisher().Publish(context.Background(), customerKey,
		rabbitmq.EventPublishing(workertest.CustomerBody("ALFKI"), "restart")))
	stop1 := running(t, c1, w1)
	e.waitDepth(retryQueue, 1)
	require.NoError(t, stop1())
	require.NoError(t, c1.Close())
	n, _ := e.depth(retryQueue)
	require.Equal(t, 1, n, "still waiting in the delay queue after the worker stopped")
	reads, _ := first.totals()
	require.Equal(t, 1, reads)

	// No worker runs: the delay queue hands it back to the work queue.
	e.waitDepth(e.cfg.Queue, 1)
	n, _ = e.depth(retryQueue)
	require.Zero(t, n)

	second := newExporter()
	attempts := newAttemptLog()
	second.write = func(_ context.Context, jc *jobs.Context) error { attempts.add(jc); return nil }
	c2 := e.dial()
	stop2 := running(t, c2, e.worker(second, func(c *worker.Config) { c.Retry = policy }))
	require.Eventually(t, func() bool { _, w := second.totals(); return w == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop2())
	_, seen := attempts.get("restart")
	require.Equal(t, []int{2}, seen, "exported as the second attempt")
	n, _ = e.depth(e.cfg.Queue)
	require.Zero(t, n)
	n, _ = e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)
}

// TestRemoteOutage: integration crm's remote is down for a while. Its
// breaker opens; its messages are deferred, not dead-lettered and not
// retried to exhaustion; integration erp keeps exporting; after recovery
// every crm event is exported and the dead-letter queue is empty.
func TestRemoteOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const events = 10
	var (
		mu     sync.Mutex
		down   = true
		failed int // crm writes that failed
	)
	x := newExporter()
	x.write = func(_ context.Context, jc *jobs.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if jc.Integration == workertest.Integration && down {
			failed++
			return &jobs.TransientError{Err: errors.New("dial tcp: connection refused")}
		}
		return nil
	}
	cat := workertest.CatalogOf(t, x.reader(), x.writer(),
		jobs.Integration{Name: workertest.Integration, Connectors: []jobs.Connector{workertest.CustomerConnector()}},
		jobs.Integration{Name: "erp", Connectors: []jobs.Connector{workertest.CustomerConnector()}},
	)
	reg := prometheus.NewRegistry()
	metrics := worker.NewMetrics(reg)
	const minCalls, concurrency = 4, 2
	w := e.worker(x, func(c *worker.Config) {
		c.Catalog = cat
		c.Concurrency = concurrency
		c.Metrics = metrics
		c.Retry = worker.RetryPolicy{Schedule: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}}
		c.Breaker = worker.BreakerConfig{MinCalls: minCalls, WindowCalls: 10, CoolDown: 300 * time.Millisecond}
	})
	e.cfg.RetryDelays = w.RetryDelays()
	c := e.dial()
	pub := c.Publisher()
	for i := range events {
		for _, in := range []string{workertest.Integration, "erp"} {
			id := fmt.Sprintf("%s-%d", in, i)
			body := workertest.Body(in, workertest.Customer, map[string]any{"customer_id": id})
			require.NoError(t, pub.Publish(context.Background(), in+"."+workertest.Customer, rabbitmq.EventPublishing(body, id)))
		}
	}
	stop := running(t, c, w)

	deferred := func() float64 {
		return metricValue(t, reg, "revsync_messages_retried_total", "integration", workertest.Integration, "reason", "breaker_open")
	}
	exported := func(in string) int {
		x.mu.Lock()
		defer x.mu.Unlock()
		n := 0
		for i := range events {
			if x.writes[fmt.Sprintf("%s-%d", in, i)] > 0 {
				n++
			}
		}
		return n
	}
	// During the outage: erp flows, crm is deferred, and a probe failed
	// (the breaker opened a second time).
	require.Eventually(t, func() bool {
		return exported("erp") == events && deferred() >= 2*events &&
			e.logs.FilterMessageSnippet("circuit breaker opened").Len() >= 2
	}, 20*time.Second, 10*time.Millisecond)
	n, _ := e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n, "the work queue is not drained into the dead-letter queue")
	require.Zero(t, exported(workertest.Integration))
	mu.Lock()
	down = false
	opened := e.logs.FilterMessageSnippet("circuit breaker opened").Len()
	// Runs that failed: those that opened the breaker (and at most the
	// others in flight then), and one probe per reopening.
	require.LessOrEqual(t, failed, minCalls+concurrency-1+opened, "retries were not burned while the breaker was open")
	mu.Unlock()

	// After recovery every event is exported and nothing is left.
	require.Eventually(t, func() bool { return exported(workertest.Integration) == events }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		p := e.place(reg)
		return p.total() == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())
	require.Equal(t, 1, e.logs.FilterMessageSnippet("circuit breaker closed").Len())
	require.Equal(t, float64(0), metricValue(t, reg, "revsync_breaker_state", "integration", workertest.Integration))
	n, _ = e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)
}

// metricValue reads a counter or gauge with exactly the given labels (name,
// value pairs); 0 when absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
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
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if !maps.Equal(got, want) {
				continue
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestRetryTopology: Dial declares one delay queue per retry delay, with
// a TTL and dead-lettering back to the work queue; a pre-existing delay
// queue with other arguments fails Dial with a TopologyError and is left
// alone.
func TestRetryTopology(t *testing.T) {
	t.Parallel()
	t.Run("declared", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.cfg.RetryDelays = []time.Duration{250 * time.Millisecond, time.Minute}
		e.dial()
		e.dial() // idempotent
		ch := e.channel()
		for _, d := range e.cfg.RetryDelays {
			name := rabbitmq.RetryQueueName(e.cfg.Queue, d)
			// Redeclaring with the same arguments succeeds; any other
			// argument would be refused with 406.
			_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
				"x-queue-type": "quorum", "x-message-ttl": d.Milliseconds(),
				"x-dead-letter-exchange": "", "x-dead-letter-routing-key": e.cfg.Queue,
				"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
			})
			require.NoError(t, err, name)
		}
	})
	t.Run("mismatch", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.cfg.RetryDelays = []time.Duration{time.Second}
		name := rabbitmq.RetryQueueName(e.cfg.Queue, time.Second)
		ch := e.channel()
		_, err := ch.QueueDeclare(name, true, false, false, false, nil) // classic, no TTL
		require.NoError(t, err)
		require.NoError(t, ch.PublishWithContext(context.Background(), "", name, false, false,
			amqp.Publishing{Body: []byte("left alone")}))
		e.waitDepth(name, 1)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := rabbitmq.Dial(ctx, e.cfg)
		require.Nil(t, c)
		var te *rabbitmq.TopologyError
		require.ErrorAs(t, err, &te)
		require.Equal(t, name, te.Queue)
		require.NotEmpty(t, te.Argument)
		require.Contains(t, err.Error(), "x-message-ttl=1000")
		require.Len(t, e.drain(name), 1, "the existing queue keeps its message")
	})
}
