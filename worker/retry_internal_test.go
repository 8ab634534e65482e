package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

// testWorker returns a worker over an empty catalog whose jitter draws u.
func testWorker(t *testing.T, cfg Config, u float64) *Worker {
	t.Helper()
	if cfg.Catalog == nil {
		cat, err := jobs.NewCatalog("revsync.yaml", &jobs.Registry{}, nil, nil)
		require.NoError(t, err)
		cfg.Catalog = cat
	}
	cfg.Host = "h1"
	w, err := New(cfg)
	require.NoError(t, err)
	w.rand = func() float64 { return u }
	return w
}

// failedRun is a run of connector conn, at attempt, that failed with err.
func failedRun(conn *jobs.Connector, attempt int, err error) *run {
	return &run{
		attempt: attempt,
		event:   &Event{Integration: "crm", Connector: "customer"},
		route:   &jobs.Route{Connector: conn},
		err:     err,
	}
}

func transient(retryAfter time.Duration) error {
	return fmt.Errorf("job \"export\": %w", &jobs.TransientError{RetryAfter: retryAfter, Err: errors.New("remote answered 503")})
}

func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 15, 0, 0, 0, time.FixedZone("", 3600))
	own := &jobs.Connector{Name: "customer", Retry: &jobs.RetryPolicy{
		MaxAttempts: 3, Schedule: []jobs.Duration{jobs.Duration(100 * time.Millisecond), jobs.Duration(400 * time.Millisecond)},
	}}
	maxOnly := &jobs.Connector{Name: "customer", Retry: &jobs.RetryPolicy{MaxAttempts: 7}}
	tests := []struct {
		name    string
		conn    *jobs.Connector
		attempt int
		err     error
		u       float64 // the jitter draw
		retry   *Retry  // nil: dead-lettered
		class   jobs.Class
	}{
		{name: "attempt 1", attempt: 1, err: transient(0),
			retry: &Retry{Delay: time.Second, Attempt: 2, Class: jobs.ClassTransient}},
		{name: "attempt 2", attempt: 2, err: transient(0),
			retry: &Retry{Delay: 5 * time.Second, Attempt: 3, Class: jobs.ClassTransient}},
		{name: "attempt 3", attempt: 3, err: transient(0),
			retry: &Retry{Delay: 30 * time.Second, Attempt: 4, Class: jobs.ClassTransient}},
		{name: "attempt 4", attempt: 4, err: transient(0),
			retry: &Retry{Delay: 2 * time.Minute, Attempt: 5, Class: jobs.ClassTransient}},
		{name: "attempt 5 is the last", attempt: 5, err: transient(0), class: jobs.ClassRetriesExhausted},
		{name: "past the last", attempt: 9, err: transient(0), class: jobs.ClassRetriesExhausted},
		{name: "largest jitter", attempt: 3, err: transient(0), u: 0.999999,
			retry: &Retry{Delay: 24*time.Second + 6*time.Microsecond, Attempt: 4, Class: jobs.ClassTransient}},
		{name: "half jitter", attempt: 2, err: transient(0), u: 0.5,
			retry: &Retry{Delay: 4500 * time.Millisecond, Attempt: 3, Class: jobs.ClassTransient}},
		{name: "Retry-After above the schedule is a floor", attempt: 1, err: transient(45 * time.Second), u: 0.5,
			retry: &Retry{Delay: 45 * time.Second, Attempt: 2, Class: jobs.ClassTransient}},
		{name: "Retry-After below the schedule", attempt: 3, err: transient(2 * time.Second),
			retry: &Retry{Delay: 30 * time.Second, Attempt: 4, Class: jobs.ClassTransient}},
		{name: "Retry-After on the last attempt", attempt: 5, err: transient(time.Second), class: jobs.ClassRetriesExhausted},
		{name: "connector schedule", conn: own, attempt: 1, err: transient(0),
			retry: &Retry{Delay: 100 * time.Millisecond, Attempt: 2, Class: jobs.ClassTransient}},
		{name: "connector schedule, last entry", conn: own, attempt: 2, err: transient(0),
			retry: &Retry{Delay: 400 * time.Millisecond, Attempt: 3, Class: jobs.ClassTransient}},
		{name: "connector max attempts", conn: own, attempt: 3, err: transient(0), class: jobs.ClassRetriesExhausted},
		{name: "connector max, worker schedule repeated", conn: maxOnly, attempt: 6, err: transient(0),
			retry: &Retry{Delay: 10 * time.Minute, Attempt: 7, Class: jobs.ClassTransient}},
		{name: "connector max, last", conn: maxOnly, attempt: 7, err: transient(0), class: jobs.ClassRetriesExhausted},
		{name: "permanent", attempt: 1, err: jobs.Permanent(errors.New("remote answered 422")), class: jobs.ClassPermanent},
		{name: "invalid message", attempt: 2, err: jobs.PermanentClass(jobs.ClassInvalidMessage, errors.New("bad")), class: jobs.ClassInvalidMessage},
		{name: "panic", attempt: 1, err: &jobs.PanicError{Service: "writer", Value: "boom"}, class: jobs.ClassPanic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := testWorker(t, Config{}, tt.u)
			conn := tt.conn
			if conn == nil {
				conn = &jobs.Connector{Name: "customer"}
			}
			dec := w.decide(failedRun(conn, tt.attempt, tt.err), now)
			if tt.retry != nil {
				require.Nil(t, dec.dl)
				require.NotNil(t, dec.retry)
				require.Equal(t, tt.retry.Delay, dec.retry.Delay)
				require.Equal(t, tt.retry.Attempt, dec.retry.Attempt)
				require.Equal(t, tt.retry.Class, dec.retry.Class)
				require.Equal(t, tt.err.Error(), dec.retry.Reason)
				return
			}
			require.Nil(t, dec.retry)
			require.Equal(t, &DeadLetter{
				Class: tt.class, Reason: dec.dl.Reason, Attempt: tt.attempt, FailedAt: now.UTC(), Host: "h1",
			}, dec.dl)
			require.Contains(t, dec.dl.Reason, tt.err.Error())
			if tt.class == jobs.ClassRetriesExhausted {
				require.Equal(t, fmt.Sprintf("%d attempts failed, the last with: %v", tt.attempt, tt.err), dec.dl.Reason)
			}
		})
	}
}

// TestRetryDelaysGrow: whatever the jitter, each scheduled delay of the
// default schedule is longer than the one before, and within its bounds.
func TestRetryDelaysGrow(t *testing.T) {
	t.Parallel()
	w := testWorker(t, Config{}, 0)
	w.rand = defaultRand
	conn := &jobs.Connector{Name: "customer"}
	for range 200 {
		var prev time.Duration
		for attempt := 1; attempt < DefaultMaxAttempts; attempt++ {
			dec := w.decide(failedRun(conn, attempt, transient(0)), time.Now())
			require.NotNil(t, dec.retry)
			d, sched := dec.retry.Delay, DefaultRetrySchedule[attempt-1]
			require.LessOrEqual(t, d, sched, "jitter never lengthens a delay")
			require.GreaterOrEqual(t, d, sched-sched/5, "jitter takes at most 20%% off")
			require.Greater(t, d, prev, "attempt %d", attempt)
			prev = d
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	p, err := RetryPolicy{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, RetryPolicy{Schedule: DefaultRetrySchedule, Jitter: 0.2, MaxAttempts: 5}, p)
	for attempt, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 5 * time.Second, 5: 10 * time.Minute, 50: 10 * time.Minute} {
		require.Equal(t, want, p.Delay(attempt), "attempt %d", attempt)
	}
	none, err := RetryPolicy{Jitter: -1}.withDefaults()
	require.NoError(t, err)
	require.Zero(t, none.Jitter, "a negative jitter means none")

	require.Equal(t, p, p.For(nil))
	require.Equal(t, p, p.For(&jobs.Connector{}))
	got := p.For(&jobs.Connector{Retry: &jobs.RetryPolicy{MaxAttempts: 2, Schedule: []jobs.Duration{jobs.Duration(time.Minute)}}})
	require.Equal(t, RetryPolicy{Schedule: []time.Duration{time.Minute}, Jitter: 0.2, MaxAttempts: 2}, got)
	require.Equal(t, DefaultRetrySchedule[0], time.Second, "the default schedule is not modified")

	for p, want := range map[*RetryPolicy]string{
		{Schedule: []time.Duration{time.Second, 0}}:              "Config.Retry.Schedule[1] must be between 0 and 24h0m0s, got 0s",
		{Schedule: []time.Duration{time.Second, 25 * time.Hour}}: "Config.Retry.Schedule[1] must be between 0 and 24h0m0s, got 25h0m0s",
		{Jitter: 1}:       "Config.Retry.Jitter must be below 1",
		{MaxAttempts: -1}: "Config.Retry.MaxAttempts must not be negative",
	} {
		_, err := p.withDefaults()
		require.ErrorContains(t, err, want)
	}
}

func TestRetryDelays(t *testing.T) {
	t.Parallel()
	reg := &jobs.Registry{}
	reg.RegisterReader("r", func(*jobs.Binding) (jobs.Reader, error) { return jobs.ReaderFunc(nil), nil })
	reg.RegisterWriter("w", func(*jobs.Binding) (jobs.Writer, error) { return jobs.WriterFunc(nil), nil })
	jobList, err := jobs.ParseJobs("jobs.yaml", []byte("jobs: [{name: j, type: export, steps: [{name: s, reader: r, writer: w}]}]"))
	require.NoError(t, err)
	conn := func(name string, retry *jobs.RetryPolicy) jobs.Connector {
		return jobs.Connector{Name: name, ExportJob: "j", Retry: retry,
			Entity: jobs.Entity{Table: "t", Key: []jobs.KeyColumn{{Column: "id", Type: jobs.KeyText}}}}
	}
	cat, err := jobs.NewCatalog("revsync.yaml", reg, jobList, []jobs.Integration{{Name: "crm", Connectors: []jobs.Connector{
		conn("a", nil),
		conn("b", &jobs.RetryPolicy{MaxAttempts: 3, Schedule: []jobs.Duration{jobs.Duration(5 * time.Second), jobs.Duration(time.Hour)}}),
	}}})
	require.NoError(t, err)
	w := testWorker(t, Config{Catalog: cat, Breaker: BreakerConfig{CoolDown: 45 * time.Second}}, 0)
	require.Equal(t, []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 45 * time.Second,
		2 * time.Minute, 10 * time.Minute, time.Hour}, w.RetryDelays())
	w = testWorker(t, Config{Catalog: cat, Breaker: BreakerConfig{Disabled: true}}, 0)
	require.Equal(t, []time.Duration{time.Second, 5 * time.Second, 30 * time.Second,
		2 * time.Minute, 10 * time.Minute, time.Hour}, w.RetryDelays())

	// Without a worker, from the configuration alone.
	integrations := []jobs.Integration{{Name: "crm", Connectors: []jobs.Connector{
		conn("b", &jobs.RetryPolicy{MaxAttempts: 3, Schedule: []jobs.Duration{jobs.Duration(7 * time.Second)}}),
	}}}
	got, err := RetryDelays(RetryPolicy{Schedule: []time.Duration{time.Second}}, BreakerConfig{}, integrations)
	require.NoError(t, err)
	require.Equal(t, []time.Duration{time.Second, 7 * time.Second, 30 * time.Second}, got)
	_, err = RetryDelays(RetryPolicy{Jitter: 2}, BreakerConfig{}, nil)
	require.ErrorContains(t, err, "Config.Retry.Jitter")
}

func TestDecideDeferred(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		wait, want time.Duration
		u          float64
	}{
		{wait: 10 * time.Second, u: 0, want: 10 * time.Second},
		{wait: 10 * time.Second, u: 0.5, want: 11 * time.Second},
		{wait: 29 * time.Second, u: 0.9, want: 30 * time.Second}, // never past the cool-down
		{wait: 30 * time.Second, u: 0.9, want: 30 * time.Second},
	} {
		w := testWorker(t, Config{}, tt.u)
		r := failedRun(&jobs.Connector{Name: "customer"}, 3, nil)
		r.deferFor = tt.wait
		dec := w.decide(r, time.Now())
		require.Nil(t, dec.dl)
		require.Equal(t, &Retry{Delay: tt.want, Attempt: 3, Class: ClassBreakerOpen,
			Reason: `circuit breaker of integration "crm" is open`}, dec.retry, "wait %s u %v", tt.wait, tt.u)
	}
}
