package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/revsync/revsync/jobs"
)

// Defaults of Config.
const (
	DefaultConcurrency    = 4
	DefaultMessageTimeout = 60 * time.Second
	DefaultShutdownGrace  = 30 * time.Second
	DefaultSettleTimeout  = 15 * time.Second
)

// Config configures a Worker. The zero value of every field but Catalog
// means its default.
type Config struct {
	// Catalog resolves an event's integration and connector to the route
	// to run. Required.
	Catalog *jobs.Catalog
	// Runner runs the route's job. Default &jobs.Runner{}.
	Runner *jobs.Runner
	// Logger receives one line per message outcome. Default zap.NewNop().
	Logger *zap.Logger
	// Concurrency is how many messages are handled at once. Default 4. The
	// broker's prefetch should be at least this.
	Concurrency int
	// MaxMessageBytes is the largest body accepted; a larger one is
	// dead-lettered as invalid_message without being parsed. Default
	// DefaultMaxMessageBytes (256 KiB).
	MaxMessageBytes int
	// MessageTimeout bounds one job run. Default 60s. It must stay well
	// below RabbitMQ's consumer_timeout (30 minutes unless configured):
	// a delivery left unacknowledged longer than that makes the broker close
	// the channel, and every message in flight on it is redelivered.
	MessageTimeout time.Duration
	// ShutdownGrace is how long in-flight messages may take to finish once
	// Run's context is cancelled. Past it their jobs are cancelled, the
	// messages requeued and Run returns an error. Default 30s.
	ShutdownGrace time.Duration
	// SettleTimeout bounds one Ack, DeadLetter or Requeue call, including
	// waiting for the broker's confirm. It should exceed the adapter's
	// publish timeout. Default 15s.
	SettleTimeout time.Duration
	// DeadLetterBackoff spaces the retries of a dead-letter or retry
	// publish that failed (not confirmed, returned as unroutable, timed
	// out). Default DefaultBackoff: 200ms doubling up to 5s.
	DeadLetterBackoff Backoff
	// Host names this worker in dead-letter copies. Default os.Hostname().
	Host string
	// Locker, when set, makes runs of the same entity take turns across
	// every worker: the lock is taken before the job runs and released
	// after it, whatever its outcome. Default nil: no locking.
	Locker jobs.EntityLocker
	// Retry is the retry policy of transient failures; a connector's own
	// jobs.RetryPolicy overrides it. Default: DefaultRetrySchedule,
	// DefaultRetryJitter, DefaultMaxAttempts.
	Retry RetryPolicy
	// Breaker configures the circuit breaker of each integration.
	// Defaults: see BreakerConfig.
	Breaker BreakerConfig
	// Metrics records what the worker does. Default nil: nothing recorded.
	Metrics *Metrics
}

// Outcome is how the worker settled a message. It is the "status" field of
// the message's log line.
type Outcome string

// The outcomes.
const (
	// OutcomeExported: the job completed and the message was acknowledged.
	OutcomeExported Outcome = "exported"
	// OutcomeDeadLettered: the job failed, or the message was invalid; its
	// copy is confirmed in the dead-letter queue and the original acked.
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeRetried: the job failed transiently; a copy, the next
	// attempt, is confirmed in a delay queue and the original acked.
	OutcomeRetried Outcome = "retried"
	// OutcomeDeferred: the integration's circuit breaker is open, or a
	// retry came back before its Retry-After; the message was not run and
	// waits in a delay queue, its attempt unchanged.
	OutcomeDeferred Outcome = "deferred"
	// OutcomeRequeued: the worker stopped before the message could be
	// finished or dead-lettered; it was returned to its queue.
	OutcomeRequeued Outcome = "requeued"
	// OutcomeUnsettled: settling failed, typically because the channel the
	// message came on is closed; the broker redelivers it.
	OutcomeUnsettled Outcome = "unsettled"
)

// Worker handles deliveries: decode and validate, run the connector's
// export job, then ack, dead-letter or requeue. It holds no per-run state;
// Run may be called again after it returns.
type Worker struct {
	cfg      Config
	log      *zap.Logger
	breakers *breakers // nil when Config.Breaker.Disabled
	rand     func() float64
}

// New returns a Worker for cfg, with defaults filled in. It returns an error
// naming the field when cfg is invalid.
func New(cfg Config) (*Worker, error) {
	if cfg.Catalog == nil {
		return nil, errors.New("worker: Config.Catalog is required")
	}
	for _, f := range []struct {
		name string
		bad  bool
		val  any
	}{
		{"Concurrency", cfg.Concurrency < 0, cfg.Concurrency},
		{"MaxMessageBytes", cfg.MaxMessageBytes < 0, cfg.MaxMessageBytes},
		{"MessageTimeout", cfg.MessageTimeout < 0, cfg.MessageTimeout},
		{"ShutdownGrace", cfg.ShutdownGrace < 0, cfg.ShutdownGrace},
		{"SettleTimeout", cfg.SettleTimeout < 0, cfg.SettleTimeout},
		{"DeadLetterBackoff.Initial", cfg.DeadLetterBackoff.Initial < 0, cfg.DeadLetterBackoff.Initial},
		{"DeadLetterBackoff.Max", cfg.DeadLetterBackoff.Max < 0, cfg.DeadLetterBackoff.Max},
	} {
		if f.bad {
			return nil, fmt.Errorf("worker: Config.%s must not be negative, got %v", f.name, f.val)
		}
	}
	if cfg.Runner == nil {
		cfg.Runner = &jobs.Runner{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MessageTimeout == 0 {
		cfg.MessageTimeout = DefaultMessageTimeout
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.SettleTimeout == 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	cfg.DeadLetterBackoff = cfg.DeadLetterBackoff.withDefaults()
	if cfg.Host == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		cfg.Host = host
	}
	var err error
	if cfg.Retry, err = cfg.Retry.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.Breaker, err = cfg.Breaker.withDefaults(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, rand: defaultRand}
	if !cfg.Breaker.Disabled {
		w.breakers = newBreakers(cfg.Breaker, time.Now, cfg.Logger, cfg.Metrics)
		for _, route := range cfg.Catalog.Routes() {
			w.breakers.track(route.Integration.Name)
		}
	}
	return w, nil
}

// Config returns the worker's configuration with defaults filled in.
func (w *Worker) Config() Config { return w.cfg }

// ErrShutdownTimeout is wrapped by Run's error when in-flight messages did
// not finish within Config.ShutdownGrace and were cancelled and requeued.
var ErrShutdownTimeout = errors.New("shutdown grace period exceeded")

// ErrUnsettled is wrapped by Run's error when a requested shutdown let
// every in-flight message finish but could not settle some of them (their
// ack, dead-letter, retry or requeue failed, typically because the
// connection was lost): the broker redelivers them, so the shutdown was not
// clean.
var ErrUnsettled = errors.New("could not be settled before shutdown")

// ErrSourceClosed is wrapped by Run's error when the source stopped
// delivering without being cancelled (for example the connection was lost).
var ErrSourceClosed = errors.New("delivery source closed")

// Run handles deliveries from src with Config.Concurrency goroutines until
// ctx is cancelled or src ends.
//
// When ctx is cancelled (a requested shutdown) Run stops taking deliveries,
// cancels src at once, requeues every delivery received but not started,
// and lets the in-flight ones finish and settle within Config.ShutdownGrace;
// it then returns nil, or an error wrapping ErrUnsettled when a message
// handled or requeued after the cancellation could not be settled. Past the
// grace period it cancels the in-flight jobs, requeues their messages and
// returns an error wrapping ErrShutdownTimeout.
//
// When src closes its deliveries on its own, Run waits for the in-flight
// messages and returns an error wrapping ErrSourceClosed and src.Err().
func (w *Worker) Run(ctx context.Context, src Source) error {
	// Jobs run on a context that the shutdown does not cancel: only the
	// grace period running out does (hardStop).
	jobCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	stopping := ctx.Done()

	var busy atomic.Int64
	var unsettled atomic.Int64 // messages left unsettled once stopping
	work := make(chan Delivery)
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Go(func() {
			for d := range work {
				busy.Add(1)
				if w.handle(jobCtx, stopping, d) == OutcomeUnsettled && isClosed(stopping) {
					unsettled.Add(1)
				}
				busy.Add(-1)
			}
		})
	}
	handlersDone := make(chan struct{})

	deliveries := src.Deliveries()
	var held *Delivery // received, not started
	var srcErr error
dispatch:
	for {
		select {
		case <-stopping:
			break dispatch
		case d, ok := <-deliveries:
			if !ok {
				srcErr = src.Err()
				if srcErr == nil {
					srcErr = errors.New("deliveries channel closed")
				}
				break dispatch
			}
			select {
			case work <- d:
			case <-stopping:
				held = &d
				break dispatch
			}
		}
	}
	close(work)
	go func() { wg.Wait(); close(handlersDone) }()

	if srcErr != nil {
		w.log.Info("delivery source closed; waiting for in-flight messages", zap.NamedError("cause", srcErr))
		select {
		case <-handlersDone:
			return fmt.Errorf("worker: %w: %w", ErrSourceClosed, srcErr)
		case <-stopping:
			// A shutdown while waiting: the grace period applies.
		}
	}

	graceEnd := time.Now().Add(w.cfg.ShutdownGrace)
	grace := time.NewTimer(w.cfg.ShutdownGrace)
	defer grace.Stop()
	if srcErr == nil {
		w.log.Info("worker stopping: cancelling consumption, letting in-flight messages finish",
			zap.Int64("in_flight", busy.Load()), zap.Duration("grace", w.cfg.ShutdownGrace))
		unsettled.Add(int64(w.stopSource(ctx, src, held, graceEnd)))
	}

	select {
	case <-handlersDone:
		if srcErr != nil {
			return fmt.Errorf("worker: %w: %w", ErrSourceClosed, srcErr)
		}
		if n := unsettled.Load(); n > 0 {
			return unsettledError(n)
		}
		w.log.Info("worker stopped")
		return nil
	case <-grace.C:
	}
	n := busy.Load()
	w.log.Warn("shutdown grace period exceeded: cancelling in-flight jobs",
		zap.Int64("in_flight", n), zap.Duration("grace", w.cfg.ShutdownGrace))
	hardStop()
	wait := time.NewTimer(w.cfg.SettleTimeout)
	defer wait.Stop()
	select {
	case <-handlersDone:
	case <-wait.C:
		w.log.Error("in-flight jobs did not return after being cancelled; their messages are redelivered when the connection closes",
			zap.Int64("in_flight", busy.Load()))
	}
	err := fmt.Errorf("worker: %w (%s): %d in-flight messages cancelled and requeued", ErrShutdownTimeout, w.cfg.ShutdownGrace, n)
	if u := unsettled.Load(); u > 0 {
		err = errors.Join(err, unsettledError(u))
	}
	return err
}

// unsettledError is Run's error when n messages were left unsettled while
// stopping.
func unsettledError(n int64) error {
	return fmt.Errorf("worker: %d message%s %w; the broker will redeliver them", n, plural(int(n), "", "s"), ErrUnsettled)
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// stopSource cancels consuming, then requeues held and every delivery the
// source still hands over, until it closes its channel or graceEnd. It
// returns how many of them could not be requeued.
func (w *Worker) stopSource(ctx context.Context, src Source, held *Delivery, graceEnd time.Time) (unsettled int) {
	requeue := func(d Delivery) {
		if !w.requeueUnstarted(ctx, d) {
			unsettled++
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(w.cfg.SettleTimeout, time.Until(graceEnd)))
	err := src.Cancel(cctx)
	cancel()
	if err != nil {
		// Requeueing while the broker still delivers to us would only
		// bounce the messages back: leave them unacknowledged; the broker
		// requeues them when the channel closes.
		w.log.Warn("cancelling the consumer failed; messages received but not started are requeued when the channel closes",
			zap.Error(err))
		if held != nil {
			requeue(*held)
		}
		return unsettled
	}
	if held != nil {
		requeue(*held)
	}
	deadline := time.NewTimer(time.Until(graceEnd))
	defer deadline.Stop()
	for {
		select {
		case d, ok := <-src.Deliveries():
			if !ok {
				return unsettled
			}
			requeue(d)
		case <-deadline.C:
			return unsettled
		}
	}
}

// requeueUnstarted returns a delivery the worker never started. It reports
// whether the requeue succeeded.
func (w *Worker) requeueUnstarted(ctx context.Context, d Delivery) bool {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.SettleTimeout)
	defer cancel()
	err := w.safely(func() error { return d.Settler.Requeue(sctx) })
	fields := []zap.Field{
		zap.String("message_id", d.MessageID),
		zap.String("routing_key", routingKeyOf(d)),
		zap.Int("attempt", attemptOf(d.Headers)),
	}
	if err != nil {
		w.log.Warn("message not started and not requeued: it will be redelivered",
			append(fields, zap.String("status", string(OutcomeUnsettled)), zap.Error(err))...)
		return false
	}
	w.cfg.Metrics.Requeued()
	w.log.Info("message requeued: worker stopping before it started",
		append(fields, zap.String("status", string(OutcomeRequeued)))...)
	return true
}

// run is what handling one delivery found out.
type run struct {
	d       Delivery
	attempt int
	started time.Time
	event   *Event
	route   *jobs.Route
	jc      *jobs.Context
	exec    *jobs.Execution
	err     error

	admitted bool          // the breaker let it run
	probe    bool          // as the half-open breaker's probe
	deferFor time.Duration // > 0: the breaker deferred it for this long
	// notBefore is when a retry copy that came back early may run; set
	// with deferFor when it must wait again.
	notBefore time.Time
	class     jobs.Class // the class it was dead-lettered or retried with
}

// integration is the integration the message names; "" when it could not
// be decoded.
func (r *run) integration() string {
	if r.event == nil {
		return ""
	}
	return r.event.Integration
}

// handle processes one delivery, settles it and returns the outcome. Nothing
// in it can take the process down: panics in the worker's own code are
// recovered too.
func (w *Worker) handle(jobCtx context.Context, stopping <-chan struct{}, d Delivery) Outcome {
	w.cfg.Metrics.Received()
	defer w.cfg.Metrics.Done()
	r := &run{d: d, started: time.Now(), attempt: attemptOf(d.Headers)}
	w.process(jobCtx, r)
	if r.admitted {
		transient := jobs.ClassOf(r.err) == jobs.ClassTransient
		switch {
		case jobCtx.Err() != nil || (transient && jobs.FailedRole(r.err) != jobs.RoleWriter):
			// Neither a shutdown nor a transient failure before the remote
			// was called (the database, waiting for the entity's lock)
			// says anything about the remote's health.
			w.breakers.release(r.event.Integration, r.probe)
		case r.probe || r.attempt == 1:
			// Retries are not counted: one failing entity retried five
			// times must not weigh like five failing calls and open the
			// breaker for the whole integration.
			w.breakers.record(r.event.Integration, r.probe, transient)
		}
	}
	var outcome Outcome
	if err := w.safely(func() error { outcome = w.settle(jobCtx, stopping, r); return nil }); err != nil {
		w.log.Error("settling a message panicked; it will be redelivered when the channel closes",
			append(w.fields(r, OutcomeUnsettled), zap.Error(err))...)
		return OutcomeUnsettled
	}
	return outcome
}

// process decodes the delivery, resolves its route and runs the job,
// recording everything in r.
func (w *Worker) process(ctx context.Context, r *run) {
	defer func() {
		if v := recover(); v != nil {
			r.err = &jobs.PanicError{Service: "worker", Value: v, Stack: debug.Stack()}
		}
	}()
	ev, err := Decode(r.d.Body, r.d.MessageID, w.cfg.MaxMessageBytes)
	if err != nil {
		r.err = err
		return
	}
	r.event = ev
	route, err := w.cfg.Catalog.Resolve(ev.Integration, ev.Connector)
	if err != nil {
		r.err = err
		return
	}
	r.route = route
	filter, err := route.Connector.Entity.IDFilter(ev.ID)
	if err != nil {
		r.err = jobs.PermanentClass(jobs.ClassInvalidMessage,
			fmt.Errorf("field \"id\" does not match the key of connector %q: %w", ev.Connector, err))
		return
	}
	r.jc = &jobs.Context{
		Integration: ev.Integration,
		Connector:   ev.Connector,
		Job:         route.Job.Name,
		Entity:      route.Connector.Entity.Table,
		IDFilter:    filter,
		Op:          ev.Op,
		Parameters:  jobs.MergeParameters(route.Connector.Parameters, ev.Parameters),
		MessageID:   r.d.MessageID,
		Attempt:     r.attempt,
	}
	if nb := notBeforeOf(r.d.Headers); time.Until(nb) > notBeforeSlack {
		// Back from a delay queue shorter than a Retry-After: wait again
		// for the rest, without spending an attempt.
		r.notBefore, r.deferFor = nb, time.Until(nb)
		return
	}
	adm := w.breakers.admit(ev.Integration)
	if !adm.run {
		r.deferFor = adm.wait
		return
	}
	r.admitted, r.probe = true, adm.probe
	runCtx, cancel := context.WithTimeout(ctx, w.cfg.MessageTimeout)
	defer cancel()
	if w.cfg.Locker != nil {
		// Runs of one entity take turns, across replicas, so that a slow
		// write of an older read never lands after a newer one (F14).
		unlock, err := w.cfg.Locker.LockEntity(runCtx, r.jc)
		if err != nil {
			r.err = err
			return
		}
		defer unlock()
	}
	r.exec, r.err = w.cfg.Runner.Run(runCtx, route, r.jc)
	if r.exec != nil {
		w.cfg.Metrics.JobDuration(ev.Integration, ev.Connector, r.exec.Status, r.exec.Duration())
	}
	if r.err != nil && ctx.Err() == nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		r.err = fmt.Errorf("message timeout %s exceeded: %w", w.cfg.MessageTimeout, r.err)
	}
}

// settle acks, retries, dead-letters or requeues the delivery, logs the
// outcome and returns it.
func (w *Worker) settle(jobCtx context.Context, stopping <-chan struct{}, r *run) Outcome {
	d := r.d
	switch {
	case r.err == nil && r.deferFor == 0:
		err := w.settleOnce(jobCtx, d.Settler.Ack)
		if err != nil {
			w.log.Warn("message exported but not acknowledged: it will be redelivered",
				append(w.fields(r, OutcomeUnsettled), zap.NamedError("settle_error", err))...)
			return OutcomeUnsettled
		}
		w.cfg.Metrics.Exported(r.event.Integration, r.event.Connector)
		w.log.Info("message exported", w.fields(r, OutcomeExported)...)
		return OutcomeExported
	case jobCtx.Err() != nil:
		// The grace period ran out and the job was cancelled: the
		// message did not fail, it was interrupted.
		err := w.settleOnce(jobCtx, d.Settler.Requeue)
		if err != nil {
			w.log.Warn("message interrupted by shutdown and not requeued: it will be redelivered",
				append(w.fields(r, OutcomeUnsettled), zap.NamedError("settle_error", err))...)
			return OutcomeUnsettled
		}
		w.cfg.Metrics.Requeued()
		w.log.Warn("message interrupted by shutdown and requeued", w.fields(r, OutcomeRequeued)...)
		return OutcomeRequeued
	}

	dec := w.decide(r, time.Now())
	what, publish := "dead-letter", func(ctx context.Context) error { return d.Settler.DeadLetter(ctx, *dec.dl) }
	if dec.retry != nil {
		r.class = dec.retry.Class
		what, publish = "retry", func(ctx context.Context) error { return d.Settler.Retry(ctx, *dec.retry) }
	} else {
		r.class = dec.dl.Class
	}
	for try := 1; ; try++ {
		err := w.settleOnce(jobCtx, publish)
		if err == nil {
			return w.settled(r, dec)
		}
		if errors.Is(err, ErrDeliveryLost) {
			w.log.Warn("message not settled: its "+what+" publish failed and it will be redelivered",
				append(w.fields(r, OutcomeUnsettled), zap.NamedError("settle_error", err))...)
			return OutcomeUnsettled
		}
		select {
		case <-stopping:
			rqErr := w.settleOnce(jobCtx, d.Settler.Requeue)
			if rqErr != nil {
				w.log.Warn("message not settled: its "+what+" publish failed and requeueing failed: it will be redelivered",
					append(w.fields(r, OutcomeUnsettled), zap.NamedError(what+"_error", err), zap.NamedError("settle_error", rqErr))...)
				return OutcomeUnsettled
			}
			w.cfg.Metrics.Requeued()
			w.log.Warn("message requeued: its "+what+" publish failed while stopping",
				append(w.fields(r, OutcomeRequeued), zap.NamedError(what+"_error", err))...)
			return OutcomeRequeued
		default:
		}
		delay := w.cfg.DeadLetterBackoff.Delay(try)
		w.log.Warn(what+" publish failed; the message stays unacknowledged and is retried",
			zap.String("message_id", d.MessageID), zap.Int("try", try), zap.Duration("retry_in", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stopping:
			t.Stop()
			// One last try above, then requeue.
		}
	}
}

// settled records and logs a message whose retry or dead-letter copy the
// broker confirmed, and returns its outcome.
func (w *Worker) settled(r *run, dec decision) Outcome {
	if rt := dec.retry; rt != nil {
		if !r.notBefore.IsZero() {
			// Back early for its Retry-After: neither a new retry nor a
			// failure, so neither counted nor logged above debug.
			w.log.Debug("message back before its Retry-After: waiting again",
				append(w.fields(r, OutcomeDeferred), zap.Duration("retry_in", rt.Delay))...)
			return OutcomeDeferred
		}
		w.cfg.Metrics.Retried(r.integration(), string(rt.Class))
		if rt.Class == ClassBreakerOpen {
			// Logged at debug level: the breaker logged its opening once.
			w.log.Debug("message deferred: the integration's circuit breaker is open",
				append(w.fields(r, OutcomeDeferred), zap.Duration("retry_in", rt.Delay))...)
			return OutcomeDeferred
		}
		w.log.Info("message failed transiently: retrying after a delay",
			append(w.fields(r, OutcomeRetried), zap.Duration("retry_in", rt.Delay), zap.Int("next_attempt", rt.Attempt))...)
		return OutcomeRetried
	}
	w.cfg.Metrics.DeadLettered(dec.dl.Class)
	level := zap.WarnLevel
	if dec.dl.Class == jobs.ClassPanic {
		level = zap.ErrorLevel
	}
	if ce := w.log.Check(level, "message dead-lettered"); ce != nil {
		ce.Write(w.fields(r, OutcomeDeadLettered)...)
	}
	return OutcomeDeadLettered
}

// settleOnce runs one settle call on a context detached from the job's,
// with its own timeout, recovering a panic.
func (w *Worker) settleOnce(jobCtx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(jobCtx), w.cfg.SettleTimeout)
	defer cancel()
	return w.safely(func() error { return f(ctx) })
}

// safely runs f, turning a panic into an error.
func (w *Worker) safely(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &jobs.PanicError{Service: "worker", Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}

// fields are the fields of a message's outcome line.
func (w *Worker) fields(r *run, outcome Outcome) []zap.Field {
	var integration, connector, job, entityKey string
	if r.event != nil {
		integration, connector = r.event.Integration, r.event.Connector
		entityKey = rawKey(r.event.ID)
	}
	if r.jc != nil {
		entityKey = r.jc.IDFilter.String()
	}
	if r.route != nil {
		job = r.route.Job.Name
	}
	var read, written, skipped int
	if r.exec != nil {
		read, written, skipped = r.exec.Counts()
	}
	fs := []zap.Field{
		zap.String("integration", integration),
		zap.String("connector", connector),
		zap.String("entity_key", entityKey),
		zap.String("message_id", r.d.MessageID),
		zap.String("routing_key", routingKeyOf(r.d)),
		zap.Int("attempt", r.attempt),
		zap.String("job", job),
		zap.String("status", string(outcome)),
		zap.Int("read", read),
		zap.Int("written", written),
		zap.Int("skipped", skipped),
		zap.Duration("duration", time.Since(r.started)),
	}
	if r.err != nil {
		class := r.class
		if class == "" {
			class = jobs.ClassOf(r.err)
		}
		fs = append(fs, zap.String("class", string(class)), zap.Error(r.err))
		var pe *jobs.PanicError
		if errors.As(r.err, &pe) {
			fs = append(fs, zap.ByteString("stack", pe.Stack))
		}
	}
	return fs
}

// rawKey renders an undecoded identifier like jobs.IDFilter.String, with
// columns sorted.
func rawKey(id map[string]any) string {
	cols := make([]string, 0, len(id))
	for c := range id {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	f := make(jobs.IDFilter, len(cols))
	for i, c := range cols {
		f[i] = jobs.KeyPart{Column: c, Value: id[c]}
	}
	return f.String()
}

// routingKeyOf returns the routing key the delivery was first published
// with: HeaderOriginalRoutingKey for a message back from a delay queue.
func routingKeyOf(d Delivery) string {
	if rk, ok := d.Headers[HeaderOriginalRoutingKey].(string); ok && rk != "" {
		return rk
	}
	return d.RoutingKey
}

// attemptOf reads HeaderAttempt: 1 when absent or not a positive integer.
// notBeforeSlack is how early a retry copy may come back and still run:
// delay queues expire messages to the millisecond, but clocks and the
// broker's expiry sweep are not that exact.
const notBeforeSlack = 100 * time.Millisecond

// MaxNotBefore is how far ahead a retry copy's not-before time may be; a
// later one (a wrong clock, a stray header) is ignored rather than kept
// waiting for. It matches the longest Retry-After a connector honours.
const MaxNotBefore = time.Hour

// notBeforeOf returns HeaderNotBefore, or the zero time when absent or
// more than MaxNotBefore ahead.
func notBeforeOf(h map[string]any) time.Time {
	var ms int64
	switch v := h[HeaderNotBefore].(type) {
	case int64:
		ms = v
	case int32:
		ms = int64(v)
	case int:
		ms = int64(v)
	default:
		return time.Time{}
	}
	nb := time.UnixMilli(ms)
	if time.Until(nb) > MaxNotBefore+notBeforeSlack {
		return time.Time{}
	}
	return nb
}

func attemptOf(h map[string]any) int {
	var n int64
	switch v := h[HeaderAttempt].(type) {
	case int:
		n = int64(v)
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case string:
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	if n < 1 || n > 1<<31 {
		return 1
	}
	return int(n)
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "… (truncated)"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}
