package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/revsync/revsync/jobs"
)

// DefaultRetrySchedule is the delay before each retry of a transient
// failure when neither Config.Retry nor the connector names one: 1s after
// the first attempt, then 5s, 30s, 2m and 10m (repeated past the end).
var DefaultRetrySchedule = []time.Duration{
	time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute,
}

// Defaults of RetryPolicy.
const (
	DefaultMaxAttempts = 5
	DefaultRetryJitter = 0.2
)

// ClassBreakerOpen is the Retry.Class (and the metrics reason) of a message
// deferred by an open circuit breaker without being run. It is not an
// error class: it never appears on a dead-letter copy.
const ClassBreakerOpen jobs.Class = "breaker_open"

// RetryPolicy decides what happens to a message whose job failed
// transiently: tried again after a delay from Schedule, or, once it has
// been tried MaxAttempts times, dead-lettered with class
// jobs.ClassRetriesExhausted. A connector's jobs.RetryPolicy overrides
// MaxAttempts and, when it names one, Schedule.
type RetryPolicy struct {
	// Schedule is the delay before each retry: Schedule[0] after the first
	// attempt failed, Schedule[1] after the second, the last entry for
	// every later one. Default DefaultRetrySchedule.
	Schedule []time.Duration
	// Jitter is the largest fraction randomly taken off each delay, so
	// that messages that failed together do not all come back together:
	// with 0.2 (the default) a 30s step waits between 24s and 30s. Jitter
	// only shortens a delay: the broker's delay queue for a step holds
	// messages for at most that step (see worker/rabbitmq), and a longer
	// delay would land in the next, much longer step. Must be below 1; a
	// negative value means no jitter.
	Jitter float64
	// MaxAttempts is how many times a message is tried in all, the first
	// delivery included. Default DefaultMaxAttempts (5).
	MaxAttempts int
}

// withDefaults validates p and fills in its defaults. Errors name the field
// below Config.Retry.
func (p RetryPolicy) withDefaults() (RetryPolicy, error) {
	var errs []string
	for i, d := range p.Schedule {
		if d <= 0 || d > jobs.MaxRetryDelay {
			errs = append(errs, fmt.Sprintf("Config.Retry.Schedule[%d] must be between 0 and %v, got %v", i, jobs.MaxRetryDelay, d))
		}
	}
	if p.Jitter >= 1 {
		errs = append(errs, fmt.Sprintf("Config.Retry.Jitter must be below 1, got %v", p.Jitter))
	}
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Sprintf("Config.Retry.MaxAttempts must not be negative, got %d", p.MaxAttempts))
	}
	if len(errs) > 0 {
		return p, errors.New("worker: " + strings.Join(errs, "; "))
	}
	if len(p.Schedule) == 0 {
		p.Schedule = DefaultRetrySchedule
	}
	p.Schedule = slices.Clone(p.Schedule)
	switch {
	case p.Jitter == 0:
		p.Jitter = DefaultRetryJitter
	case p.Jitter < 0:
		p.Jitter = 0
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	return p, nil
}

// For returns the policy of a connector: p overridden by the connector's
// own retry policy, if it has one.
func (p RetryPolicy) For(conn *jobs.Connector) RetryPolicy {
	if conn == nil || conn.Retry == nil {
		return p
	}
	if conn.Retry.MaxAttempts > 0 {
		p.MaxAttempts = conn.Retry.MaxAttempts
	}
	if len(conn.Retry.Schedule) > 0 {
		p.Schedule = make([]time.Duration, len(conn.Retry.Schedule))
		for i, d := range conn.Retry.Schedule {
			p.Schedule[i] = time.Duration(d)
		}
	}
	return p
}

// Delay returns the scheduled delay, before jitter, of the retry that
// follows the failed attempt (1 for the first delivery): Schedule[attempt-1],
// the last entry past the end of the schedule.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	if len(p.Schedule) == 0 {
		return 0
	}
	i := min(max(attempt, 1), len(p.Schedule)) - 1
	return p.Schedule[i]
}

// Retry describes a message sent to wait in a delay queue before it is
// delivered to the work queue again. The adapter writes Attempt into the
// copy's x-revsync-attempt header, and Class and Reason into
// x-revsync-retry-class and x-revsync-retry-reason.
type Retry struct {
	// Delay is how long the message should wait at least. The adapter may
	// round it up to the delay queue that can hold it.
	Delay time.Duration
	// Attempt is the attempt the copy will be when it comes back: one
	// more than the failed attempt for a retry; unchanged for a message
	// deferred without being run.
	Attempt int
	// Class is why: jobs.ClassTransient for a transient failure,
	// ClassBreakerOpen for a message deferred by an open circuit breaker.
	Class jobs.Class
	// Reason is the error text, or why the message was deferred; at most
	// MaxReasonBytes.
	Reason string
	// NotBefore, when set, is the earliest time the copy may run again
	// (HeaderNotBefore); zero means as soon as Delay has passed.
	NotBefore time.Time
}

// decision is what settle does with a message whose run did not complete.
type decision struct {
	retry *Retry      // send to a delay queue; nil: dead-letter
	dl    *DeadLetter // dead-letter; nil: retry
}

// decide turns the outcome of a run that failed, or was deferred by the
// breaker, into a retry or a dead-letter. It is the one place that makes
// that choice:
//
//   - back early from a delay queue (before its not-before time): wait
//     again for the rest, attempt unchanged;
//   - deferred by the breaker: retry after the breaker's wait, attempt
//     unchanged;
//   - transient failure, attempt < the connector's MaxAttempts: retry after
//     the scheduled delay for the attempt, jittered, and no shorter than a
//     remote's Retry-After (kept on the copy as its not-before time); the
//     copy is the next attempt;
//   - transient failure on the last attempt: dead-letter with class
//     retries_exhausted;
//   - any other failure: dead-letter with its class.
func (w *Worker) decide(r *run, now time.Time) decision {
	if !r.notBefore.IsZero() {
		class, _ := r.d.Headers[HeaderRetryClass].(string)
		reason, _ := r.d.Headers[HeaderRetryReason].(string)
		return decision{retry: &Retry{Delay: r.deferFor, Attempt: r.attempt, NotBefore: r.notBefore,
			Class: jobs.Class(class), Reason: reason}}
	}
	if r.deferFor > 0 {
		return decision{retry: &Retry{
			Delay:   w.breakerJitter(r.deferFor),
			Attempt: r.attempt,
			Class:   ClassBreakerOpen,
			Reason:  fmt.Sprintf("circuit breaker of integration %q is open", r.integration()),
		}}
	}
	class := jobs.ClassOf(r.err)
	reason := truncate(r.err.Error(), MaxReasonBytes)
	if errors.Is(r.err, jobs.ErrEntityLocked) {
		// Another run of the entity held its lock: nothing failed, so
		// wait for the first step of the schedule without spending an
		// attempt. A lock is never held for ever (the locker bounds an
		// idle holder), so this ends.
		p := w.cfg.Retry.For(routeConnector(r))
		return decision{retry: &Retry{Delay: w.jitter(p.Delay(1), p.Jitter), Attempt: r.attempt, Class: class, Reason: reason}}
	}
	if class == jobs.ClassTransient {
		p := w.cfg.Retry.For(routeConnector(r))
		if r.attempt < p.MaxAttempts {
			retry := &Retry{Delay: w.jitter(p.Delay(r.attempt), p.Jitter), Attempt: r.attempt + 1, Class: class, Reason: reason}
			if after := jobs.RetryAfter(r.err); after > retry.Delay {
				// The remote's Retry-After is a floor, kept on the copy:
				// a delay queue holds it at most its own delay.
				retry.Delay, retry.NotBefore = after, now.Add(after)
			}
			return decision{retry: retry}
		}
		class = jobs.ClassRetriesExhausted
		reason = truncate(fmt.Sprintf("%d attempts failed, the last with: %v", r.attempt, r.err), MaxReasonBytes)
	}
	return decision{dl: &DeadLetter{Class: class, Reason: reason, Attempt: r.attempt, FailedAt: now.UTC(), Host: w.cfg.Host}}
}

// routeConnector is the connector r ran for, or nil.
func routeConnector(r *run) *jobs.Connector {
	if r.route == nil {
		return nil
	}
	return r.route.Connector
}

// jitter takes a random fraction of up to j off d.
func (w *Worker) jitter(d time.Duration, j float64) time.Duration {
	if j <= 0 || d <= 0 {
		return d
	}
	return d - time.Duration(j*w.rand()*float64(d))
}

// breakerJitter spreads the return of deferred messages: d lengthened by a
// random fraction of up to the retry jitter, but never past the breaker's
// cool-down, so that it stays within the cool-down's delay queue.
func (w *Worker) breakerJitter(d time.Duration) time.Duration {
	j := d + time.Duration(w.cfg.Retry.Jitter*w.rand()*float64(d))
	return max(min(j, w.cfg.Breaker.CoolDown), d)
}

// RetryDelays returns, sorted and without duplicates, every delay the
// worker may ask a message to wait: the retry schedule, the schedules of
// every connector of the catalog, and the breaker's cool-down. The broker
// adapter needs a delay queue for each (rabbitmq.Config.RetryDelays).
func (w *Worker) RetryDelays() []time.Duration {
	var conns []*jobs.Connector
	for _, route := range w.cfg.Catalog.Routes() {
		conns = append(conns, route.Connector)
	}
	return retryDelays(w.cfg.Retry, w.cfg.Breaker, conns)
}

// RetryDelays is Worker.RetryDelays for a worker not built yet: the delays
// a worker configured with policy and breaker may ask for, serving the
// connectors of integrations. It is for commands that only publish but
// declare the same topology. Errors are those New would return.
func RetryDelays(policy RetryPolicy, breaker BreakerConfig, integrations []jobs.Integration) ([]time.Duration, error) {
	policy, err := policy.withDefaults()
	if err != nil {
		return nil, err
	}
	if breaker, err = breaker.withDefaults(); err != nil {
		return nil, err
	}
	var conns []*jobs.Connector
	for i := range integrations {
		for k := range integrations[i].Connectors {
			conns = append(conns, &integrations[i].Connectors[k])
		}
	}
	return retryDelays(policy, breaker, conns), nil
}

func retryDelays(policy RetryPolicy, breaker BreakerConfig, conns []*jobs.Connector) []time.Duration {
	delays := slices.Clone(policy.Schedule)
	for _, c := range conns {
		if c.Retry != nil {
			for _, d := range c.Retry.Schedule {
				delays = append(delays, time.Duration(d))
			}
		}
	}
	if !breaker.Disabled {
		delays = append(delays, breaker.CoolDown)
	}
	slices.Sort(delays)
	return slices.Compact(delays)
}

// defaultRand is the source of jitter.
func defaultRand() float64 { return rand.Float64() }
