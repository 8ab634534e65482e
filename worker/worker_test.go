package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/workertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a reader and writer pair that records the job contexts it
// sees; fail, when set, decides the writer's result.
type recorder struct {
	mu     sync.Mutex
	reads  []jobs.Context
	writes [][]jobs.Item
	fail   func(ctx context.Context, jc *jobs.Context) error
	// failRead, when set, decides the reader's result.
	failRead func(ctx context.Context, jc *jobs.Context) error
}

func (r *recorder) Read(ctx context.Context, jc *jobs.Context) ([]jobs.Item, error) {
	r.mu.Lock()
	r.reads = append(r.reads, *jc)
	r.mu.Unlock()
	if r.failRead != nil {
		if err := r.failRead(ctx, jc); err != nil {
			return nil, err
		}
	}
	return workertest.EchoReader.Read(ctx, jc)
}

func (r *recorder) Write(ctx context.Context, jc *jobs.Context, items []jobs.Item) error {
	if r.fail != nil {
		if err := r.fail(ctx, jc); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.writes = append(r.writes, items)
	r.mu.Unlock()
	return nil
}

func (r *recorder) counts() (reads, writes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reads), len(r.writes)
}

// queued returns a source holding n customer events, all for customer A
// (message ids m-0, m-1, ...), and their settlers.
func queued(t *testing.T, n int) (*workertest.Source, []*workertest.Settler) {
	t.Helper()
	src := workertest.NewSource(n)
	settlers := make([]*workertest.Settler, n)
	for i := range n {
		d, s := workertest.NewDelivery(workertest.CustomerBody("A"), fmt.Sprintf("m-%d", i), "crm.customer")
		require.True(t, src.Send(d))
		settlers[i] = s
	}
	return src, settlers
}

// started runs w on src in the background; stop cancels it and returns
// Run's error.
func started(t *testing.T, w *worker.Worker, src worker.Source) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, src) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newWorker(t *testing.T, rec *recorder, mod func(*worker.Config)) (*worker.Worker, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	cfg := worker.Config{
		Catalog:           workertest.Catalog(t, rec, rec),
		Logger:            zap.New(core),
		Concurrency:       2,
		Host:              "test-host",
		DeadLetterBackoff: worker.Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond},
		SettleTimeout:     time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(cfg)
	require.NoError(t, err)
	return w, logs
}

// outcomeLines returns the outcome lines (those with a status) of a message.
func outcomeLines(logs *observer.ObservedLogs, messageID string) []observer.LoggedEntry {
	return logs.Filter(func(e observer.LoggedEntry) bool {
		m := e.ContextMap()
		_, ok := m["status"]
		return ok && m["message_id"] == messageID
	}).All()
}

func waitSettled(t *testing.T, s *workertest.Settler) {
	t.Helper()
	select {
	case <-s.Settled():
	case <-time.After(5 * time.Second):
		t.Fatalf("delivery not settled: %+v", s.Calls())
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	valid := workertest.CustomerBody("ALFKI")
	tests := []struct {
		name      string
		body      []byte
		messageID string
		headers   map[string]any
		fail      func(ctx context.Context, jc *jobs.Context) error
		class     jobs.Class // "" → acked
		reason    string     // substring of the dead-letter reason
		reads     int
		attempt   int
	}{
		{name: "exported", body: valid, reads: 1, attempt: 1},
		{name: "attempt header", body: valid, headers: map[string]any{worker.HeaderAttempt: int32(3)}, reads: 1, attempt: 3},
		{name: "composite integer key", body: workertest.Body(workertest.Integration, workertest.OrderLine,
			map[string]any{"order_id": 10248, "product_id": 11}), reads: 1, attempt: 1},
		{name: "truncated JSON", body: valid[:30], class: jobs.ClassInvalidMessage,
			reason: "truncated JSON: unexpected end of input", attempt: 1},
		{name: "over size", body: []byte(`{"x":"` + strings.Repeat("a", worker.DefaultMaxMessageBytes) + `"}`),
			class: jobs.ClassInvalidMessage, reason: "over the 262144-byte limit", attempt: 1},
		{name: "missing message_id", body: valid, messageID: "-", class: jobs.ClassInvalidMessage,
			reason: "missing message_id", attempt: 1},
		{name: "bad op", body: []byte(strings.Replace(string(valid), `"upsert"`, `"merge"`, 1)),
			class: jobs.ClassInvalidMessage, reason: `field "op": value must be one of "upsert", "delete"`, attempt: 1},
		{name: "extra field", body: []byte(strings.Replace(string(valid), `"op"`, `"extra":1,"op"`, 1)),
			class: jobs.ClassInvalidMessage, reason: `unknown field "extra"`, attempt: 1},
		{name: "id of the wrong type for the key",
			body:  workertest.Body(workertest.Integration, workertest.Customer, map[string]any{"customer_id": 42}),
			class: jobs.ClassInvalidMessage, reason: `identifier column "customer_id": want a string, got a number`, attempt: 1},
		{name: "NUL in a text id: no SQL runs",
			body:  workertest.Body(workertest.Integration, workertest.Customer, map[string]any{"customer_id": "AL\x00FKI"}),
			class: jobs.ClassInvalidMessage, reason: `identifier column "customer_id": contains a NUL character`, attempt: 1},
		{name: "empty text id",
			body:  workertest.Body(workertest.Integration, workertest.Customer, map[string]any{"customer_id": ""}),
			class: jobs.ClassInvalidMessage, reason: `identifier column "customer_id": must not be empty`, attempt: 1},
		{name: "duplicate op: last does not win",
			body:  []byte(strings.Replace(string(valid), `"op":"upsert"`, `"op":"upsert","op":"delete"`, 1)),
			class: jobs.ClassInvalidMessage, reason: `duplicate key "op"`, attempt: 1},
		{name: "id with the wrong columns",
			body:  workertest.Body(workertest.Integration, workertest.OrderLine, map[string]any{"order_id": 1}),
			class: jobs.ClassInvalidMessage, reason: `missing identifier column "product_id"`, attempt: 1},
		{name: "unknown connector", body: workertest.Body(workertest.Integration, "invoice", map[string]any{"id": "1"}),
			class: jobs.ClassUnknownRoute, reason: `integration "crm" has no connector "invoice"`, attempt: 1},
		{name: "unknown integration", body: workertest.Body("erp", "customer", map[string]any{"id": "1"}),
			class: jobs.ClassUnknownRoute, reason: `unknown integration "erp"`, attempt: 1},
		{name: "disabled integration", body: workertest.Body(workertest.Dormant, workertest.Customer, map[string]any{"customer_id": "A"}),
			class: jobs.ClassIntegrationDisabled, reason: "disabled", attempt: 1},
		{name: "permanent failure", body: valid, reads: 1, attempt: 2,
			headers: map[string]any{worker.HeaderAttempt: int64(2)},
			fail: func(context.Context, *jobs.Context) error {
				return jobs.Permanent(errors.New("remote answered 422"))
			},
			class: jobs.ClassPermanent, reason: "remote answered 422"},
		{name: "transient failure on the last attempt", body: valid, reads: 1, attempt: 5,
			headers: map[string]any{worker.HeaderAttempt: int32(5)},
			fail: func(context.Context, *jobs.Context) error {
				return &jobs.TransientError{Err: errors.New("remote answered 503")}
			},
			class: jobs.ClassRetriesExhausted, reason: "remote answered 503"},
		{name: "panic in a writer", body: valid, reads: 1, attempt: 1,
			fail:  func(context.Context, *jobs.Context) error { panic("boom") },
			class: jobs.ClassPanic, reason: "panic in writer fake: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{fail: tt.fail}
			w, logs := newWorker(t, rec, nil)
			id := tt.messageID
			switch id {
			case "":
				id = "m-" + tt.name
			case "-":
				id = ""
			}
			d, s := workertest.NewDelivery(tt.body, id, "crm.customer")
			d.Headers = tt.headers
			src := workertest.NewSource(1)
			require.True(t, src.Send(d))
			stop := started(t, w, src)
			waitSettled(t, s)
			require.NoError(t, stop())

			calls := s.Calls()
			reads, _ := rec.counts()
			require.Equal(t, tt.reads, reads, "reader calls")
			require.Equal(t, 1, calls.Settled(), "settled once: %+v", calls)
			require.Zero(t, calls.Requeues)
			if tt.class == "" {
				require.Equal(t, 1, calls.Acks)
				require.Equal(t, tt.attempt, rec.reads[0].Attempt)
			} else {
				require.Zero(t, calls.Acks, "dead-lettering acks the original itself")
				require.Len(t, calls.DeadLetters, 1)
				dl := calls.DeadLetters[0]
				require.Equal(t, tt.class, dl.Class)
				require.Contains(t, dl.Reason, tt.reason)
				require.Equal(t, tt.attempt, dl.Attempt)
				require.Equal(t, "test-host", dl.Host)
				require.WithinDuration(t, time.Now(), dl.FailedAt, time.Minute)
			}

			// Exactly one line for the message, at the right level.
			lines := outcomeLines(logs, id)
			require.Len(t, logs.FilterField(zap.String("message_id", id)).All(), 1, "nothing else logged about it")
			require.Len(t, lines, 1, "one log line per outcome")
			line := lines[0]
			fields := line.ContextMap()
			for _, k := range []string{"integration", "connector", "entity_key", "message_id", "attempt", "job",
				"status", "read", "written", "skipped", "duration"} {
				require.Contains(t, fields, k)
			}
			if tt.class == "" {
				require.Equal(t, zapcore.InfoLevel, line.Level)
				require.Equal(t, "exported", fields["status"])
				require.Equal(t, int64(1), fields["written"])
				require.Equal(t, workertest.Job, fields["job"])
			} else {
				require.Equal(t, "dead_lettered", fields["status"])
				require.Equal(t, string(tt.class), fields["class"])
				require.Contains(t, fields["error"], tt.reason)
				if tt.class == jobs.ClassPanic {
					require.Equal(t, zapcore.ErrorLevel, line.Level)
					require.Contains(t, fields, "stack")
				} else {
					require.Equal(t, zapcore.WarnLevel, line.Level)
				}
			}
		})
	}
}

func TestJobContext(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	w, _ := newWorker(t, rec, nil)
	body := []byte(`{"integration":"crm","connector":"customer","id":{"customer_id":"ALFKI"},"op":"delete",
		"parameters":{"source":"event","extra":1},"occurred_at":"2026-12-03T15:00:00Z"}`)
	d, s := workertest.NewDelivery(body, "m-1", "crm.customer")
	d.Headers = map[string]any{worker.HeaderAttempt: int16(4)}
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())

	require.Len(t, rec.reads, 1)
	jc := rec.reads[0]
	require.Equal(t, "crm", jc.Integration)
	require.Equal(t, "customer", jc.Connector)
	require.Equal(t, workertest.Job, jc.Job)
	require.Equal(t, "public.customers", jc.Entity)
	require.Equal(t, jobs.IDFilter{{Column: "customer_id", Value: "ALFKI"}}, jc.IDFilter)
	require.Equal(t, jobs.OpDelete, jc.Op)
	require.Equal(t, "m-1", jc.MessageID)
	require.Equal(t, 4, jc.Attempt)
	// The event's parameters win over the connector's.
	require.Equal(t, "event", jc.Parameters["source"])
	require.Equal(t, false, jc.Parameters["dry_run"])
	require.NotNil(t, jc.Parameters["extra"])
}

func TestDeadLetterFailureIsRetriedThenSettledOnce(t *testing.T) {
	t.Parallel()
	w, logs := newWorker(t, &recorder{}, nil)
	d, s := workertest.NewDelivery([]byte(`{"truncated`), "m-1", "crm.customer")
	var tries atomic.Int32
	s.DeadLetterFunc = func(context.Context, worker.DeadLetter) error {
		if tries.Add(1) <= 2 {
			return errors.New("publish returned: no route")
		}
		return nil
	}
	s.AckFunc = func(context.Context) error {
		t.Error("the original must not be acked outside DeadLetter")
		return nil
	}
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())

	calls := s.Calls()
	require.Equal(t, 3, calls.DeadLetterTries)
	require.Len(t, calls.DeadLetters, 1)
	require.Zero(t, calls.Requeues)
	require.Len(t, logs.FilterMessageSnippet("dead-letter publish failed").All(), 2)
	require.Len(t, logs.FilterMessage("message dead-lettered").All(), 1)
}

func TestDeadLetterFailureOnShutdownRequeues(t *testing.T) {
	t.Parallel()
	w, logs := newWorker(t, &recorder{}, nil)
	d, s := workertest.NewDelivery([]byte(`{"truncated`), "m-1", "crm.customer")
	s.DeadLetterFunc = func(context.Context, worker.DeadLetter) error { return errors.New("not confirmed") }
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	require.Eventually(t, func() bool { return s.Calls().DeadLetterTries >= 3 }, 5*time.Second, time.Millisecond)
	require.NoError(t, stop())

	calls := s.Calls()
	require.Equal(t, 1, calls.Requeues, "requeued on shutdown")
	require.Empty(t, calls.DeadLetters)
	require.Zero(t, calls.Acks)
	line := outcomeLines(logs, "m-1")
	require.Len(t, line, 1)
	require.Equal(t, "requeued", line[0].ContextMap()["status"])
}

func TestDeadLetterOnLostDeliveryIsNotRetried(t *testing.T) {
	t.Parallel()
	w, logs := newWorker(t, &recorder{}, nil)
	d, s := workertest.NewDelivery([]byte(`{"truncated`), "m-1", "crm.customer")
	s.DeadLetterFunc = func(context.Context, worker.DeadLetter) error {
		return errors.Join(errors.New("dead-letter m-1"), worker.ErrDeliveryLost)
	}
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	require.Eventually(t, func() bool {
		return logs.FilterMessageSnippet("will be redelivered").Len() == 1
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, stop())
	calls := s.Calls()
	require.Equal(t, 1, calls.DeadLetterTries)
	require.Zero(t, calls.Settled())
	require.Equal(t, "unsettled", outcomeLines(logs, "m-1")[0].ContextMap()["status"])
}

func TestMessageTimeout(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: func(ctx context.Context, _ *jobs.Context) error {
		<-ctx.Done()
		return &jobs.TransientError{Err: ctx.Err()}
	}}
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.MessageTimeout = 20 * time.Millisecond })
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())
	retries := s.Calls().Retries
	require.Len(t, retries, 1, "a timeout is transient: retried")
	require.Equal(t, jobs.ClassTransient, retries[0].Class)
	require.Equal(t, 2, retries[0].Attempt)
	require.Contains(t, retries[0].Reason, "message timeout 20ms exceeded")
}

func TestSettlePanicDoesNotKillTheWorker(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	w, logs := newWorker(t, rec, func(c *worker.Config) { c.Concurrency = 1 })
	bad, s1 := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	s1.AckFunc = func(context.Context) error { panic("ack exploded") }
	good, s2 := workertest.NewDelivery(workertest.CustomerBody("B"), "m-2", "crm.customer")
	src := workertest.NewSource(2)
	src.Send(bad)
	src.Send(good)
	stop := started(t, w, src)
	waitSettled(t, s2)
	require.NoError(t, stop())
	require.Equal(t, 1, s2.Calls().Acks)
	require.Zero(t, s1.Calls().Settled())
	line := outcomeLines(logs, "m-1")
	require.Len(t, line, 1)
	require.Contains(t, line[0].ContextMap()["settle_error"], "ack exploded")
}

func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	var cur, peak atomic.Int32
	rec := &recorder{fail: func(context.Context, *jobs.Context) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond) // hold the slot so overlaps happen
		cur.Add(-1)
		return nil
	}}
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Concurrency = 3 })
	src, settlers := queued(t, 30)
	stop := started(t, w, src)
	for _, s := range settlers {
		waitSettled(t, s)
	}
	require.NoError(t, stop())
	require.LessOrEqual(t, peak.Load(), int32(3))
	require.Greater(t, peak.Load(), int32(1))
}

// TestShutdown is F13: in-flight messages finish and are acked, the ones
// received but not started are requeued, consuming is cancelled at once.
func TestShutdown(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var entered atomic.Int32
	rec := &recorder{fail: func(context.Context, *jobs.Context) error {
		entered.Add(1)
		<-release
		return nil
	}}
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Concurrency = 2 })
	src, settlers := queued(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, src) }()
	require.Eventually(t, func() bool { return entered.Load() == 2 }, 5*time.Second, time.Millisecond)

	cancel()
	select {
	case <-src.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("consumer not cancelled at once")
	}
	// The three not started are requeued while the two run.
	require.Eventually(t, func() bool {
		n := 0
		for _, s := range settlers {
			n += s.Calls().Requeues
		}
		return n == 3
	}, 5*time.Second, time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Run returned before in-flight work finished: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-done)

	var acks, requeues int
	for _, s := range settlers {
		c := s.Calls()
		require.Equal(t, 1, c.Settled(), "%+v", c)
		require.Empty(t, c.DeadLetters)
		acks += c.Acks
		requeues += c.Requeues
	}
	require.Equal(t, 2, acks)
	require.Equal(t, 3, requeues)
	_, writes := rec.counts()
	require.Equal(t, 2, writes, "the writer ran exactly twice")
}

// TestShutdownGraceExceeded: past the grace period in-flight jobs are
// cancelled and requeued, not dead-lettered, and Run reports it.
func TestShutdownGraceExceeded(t *testing.T) {
	t.Parallel()
	var entered atomic.Int32
	rec := &recorder{fail: func(ctx context.Context, _ *jobs.Context) error {
		entered.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}}
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.ShutdownGrace = 50 * time.Millisecond })
	src, settlers := queued(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, src) }()
	require.Eventually(t, func() bool { return entered.Load() == 2 }, 5*time.Second, time.Millisecond)
	cancel()
	err := <-done
	require.ErrorIs(t, err, worker.ErrShutdownTimeout)
	require.Contains(t, err.Error(), "2 in-flight messages cancelled and requeued")
	for _, s := range settlers {
		c := s.Calls()
		require.Equal(t, 1, c.Requeues, "%+v", c)
		require.Equal(t, 1, c.Settled())
	}
}

// TestShutdownUnsettled: a requested shutdown during which a message could
// not be settled (the connection was lost: the broker redelivers it) is not
// a clean one, so Run reports it, whether the message was in flight or not
// started.
func TestShutdownUnsettled(t *testing.T) {
	t.Parallel()
	lost := func(context.Context) error { return fmt.Errorf("ack: %w", worker.ErrDeliveryLost) }
	tests := []struct {
		name string
		// lose makes the settler of the i-th of three deliveries fail.
		lose func(i int, s *workertest.Settler)
		want string // Run's error; "" for none
	}{
		{name: "ack of an in-flight message fails",
			lose: func(i int, s *workertest.Settler) {
				if i == 0 {
					s.AckFunc = lost
				}
			},
			want: "worker: 1 message could not be settled before shutdown; the broker will redeliver them"},
		{name: "requeue of a message not started fails",
			lose: func(i int, s *workertest.Settler) {
				if i == 2 {
					s.RequeueFunc = lost
				}
			},
			want: "worker: 1 message could not be settled before shutdown; the broker will redeliver them"},
		{name: "every settle fails",
			lose: func(_ int, s *workertest.Settler) { s.AckFunc, s.RequeueFunc = lost, lost },
			want: "worker: 3 messages could not be settled before shutdown; the broker will redeliver them"},
		{name: "clean", lose: func(int, *workertest.Settler) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			var entered atomic.Int32
			rec := &recorder{fail: func(context.Context, *jobs.Context) error {
				entered.Add(1)
				<-release
				return nil
			}}
			w, logs := newWorker(t, rec, func(c *worker.Config) { c.Concurrency = 2 })
			src := workertest.NewSource(3)
			var settlers []*workertest.Settler
			for i := range 3 {
				d, s := workertest.NewDelivery(workertest.CustomerBody("A"), fmt.Sprintf("m-%d", i), "crm.customer")
				tt.lose(i, s)
				require.True(t, src.Send(d))
				settlers = append(settlers, s)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx, src) }()
			// m-0 and m-1 run; m-2 waits.
			require.Eventually(t, func() bool { return entered.Load() == 2 }, 5*time.Second, time.Millisecond)
			cancel()
			require.Eventually(t, func() bool {
				c := settlers[2].Calls()
				return c.Requeues+c.Failed == 1
			}, 5*time.Second, time.Millisecond, "the message not started is requeued, or tried")
			close(release)
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}

			unsettled := logs.FilterField(zap.String("status", string(worker.OutcomeUnsettled))).Len()
			if tt.want == "" {
				require.NoError(t, err)
				require.Zero(t, unsettled)
				return
			}
			require.EqualError(t, err, tt.want)
			require.ErrorIs(t, err, worker.ErrUnsettled)
			var failed int
			for _, s := range settlers {
				failed += s.Calls().Failed
			}
			require.Equal(t, failed, unsettled, "one unsettled line per message the error counts")
		})
	}
}

func TestShutdownWhenCancelFails(t *testing.T) {
	t.Parallel()
	w, _ := newWorker(t, &recorder{}, nil)
	src := workertest.NewSource(1)
	src.CancelFunc = func(context.Context) error { return errors.New("channel closed") }
	stop := started(t, w, src)
	require.NoError(t, stop())
}

func TestSourceClosed(t *testing.T) {
	t.Parallel()
	w, _ := newWorker(t, &recorder{}, nil)
	src := workertest.NewSource(1)
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	src.Send(d)
	lost := errors.New("connection lost")
	src.ErrValue = lost
	src.Close()
	err := w.Run(context.Background(), src)
	require.ErrorIs(t, err, worker.ErrSourceClosed)
	require.ErrorIs(t, err, lost)
	require.Equal(t, 1, s.Calls().Acks, "what was received is still handled")
}

func TestNew(t *testing.T) {
	t.Parallel()
	cat := workertest.Catalog(t, workertest.EchoReader, jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error { return nil }))
	_, err := worker.New(worker.Config{})
	require.ErrorContains(t, err, "Config.Catalog is required")
	_, err = worker.New(worker.Config{Catalog: cat, Concurrency: -1})
	require.ErrorContains(t, err, "Config.Concurrency must not be negative")
	_, err = worker.New(worker.Config{Catalog: cat, MessageTimeout: -time.Second})
	require.ErrorContains(t, err, "Config.MessageTimeout")

	w, err := worker.New(worker.Config{Catalog: cat})
	require.NoError(t, err)
	cfg := w.Config()
	require.Equal(t, 4, cfg.Concurrency)
	require.Equal(t, 256<<10, cfg.MaxMessageBytes)
	require.Equal(t, 60*time.Second, cfg.MessageTimeout)
	require.Equal(t, 30*time.Second, cfg.ShutdownGrace)
	require.Equal(t, worker.DefaultBackoff, cfg.DeadLetterBackoff)
	require.NotEmpty(t, cfg.Host)
	require.NotNil(t, cfg.Logger)
	require.NotNil(t, cfg.Runner)
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := worker.Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second}
	for n, want := range map[int]time.Duration{
		1: 200 * time.Millisecond, 2: 400 * time.Millisecond, 3: 800 * time.Millisecond,
		5: 3200 * time.Millisecond, 6: 5 * time.Second, 100: 5 * time.Second,
	} {
		require.Equal(t, want, b.Delay(n), "try %d", n)
	}
	require.Equal(t, 200*time.Millisecond, worker.Backoff{}.Delay(1))
}

func TestEntityLockIsHeldAroundTheRun(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		events []string
	)
	log := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	rec := &recorder{fail: func(context.Context, *jobs.Context) error { log("run"); return nil }}
	locker := jobs.EntityLockerFunc(func(_ context.Context, jc *jobs.Context) (func(), error) {
		log("lock " + jobs.EntityLockKey(jc))
		return func() { log("unlock") }, nil
	})
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Locker = locker })
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 3)
	require.Contains(t, events[0], "lock ")
	require.Contains(t, events[0], "customer_id")
	require.Equal(t, []string{"run", "unlock"}, events[1:])
	require.Equal(t, 1, s.Calls().Acks)
}

func TestEntityLockTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	locker := jobs.EntityLockerFunc(func(context.Context, *jobs.Context) (func(), error) {
		return nil, &jobs.TransientError{Err: fmt.Errorf("another run holds its lock: %w", jobs.ErrEntityLocked)}
	})
	w, _ := newWorker(t, rec, func(c *worker.Config) { c.Locker = locker })
	d, s := workertest.NewDelivery(workertest.CustomerBody("A"), "m-1", "crm.customer")
	src := workertest.NewSource(1)
	src.Send(d)
	stop := started(t, w, src)
	waitSettled(t, s)
	require.NoError(t, stop())
	reads, _ := rec.counts()
	require.Zero(t, reads, "the job must not run without its lock")
	retries := s.Calls().Retries
	require.Len(t, retries, 1)
	require.Equal(t, jobs.ClassTransient, retries[0].Class)
	require.Equal(t, 1, retries[0].Attempt, "waiting for another run of the entity spends no attempt")
}
