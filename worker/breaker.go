package worker

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of BreakerConfig.
const (
	DefaultBreakerWindow       = 60 * time.Second
	DefaultBreakerWindowCalls  = 20
	DefaultBreakerMinCalls     = 10
	DefaultBreakerFailureRatio = 0.5
	DefaultBreakerCoolDown     = 30 * time.Second
)

// BreakerConfig configures the circuit breakers, one per integration.
//
// A breaker is closed while its integration's remote works. It opens when,
// among the integration's last WindowCalls job runs that ended within
// Window, at least MinCalls ran and at least FailureRatio of them failed
// transiently. Only transient failures count: a permanent one is the
// message's fault, not the remote's. While it is open, the integration's
// messages are not run: each is sent to wait in a delay queue for the rest
// of the cool-down, its attempt count unchanged, so an outage neither
// drains the work queue into the dead-letter queue nor burns retries.
// Other integrations keep flowing. Once CoolDown has passed the breaker is
// half-open: one message is let through as a probe (while it runs, the
// others wait a tenth of the cool-down); its success closes the breaker,
// its transient failure opens it again for another cool-down. A probe is a
// real attempt: its failure counts against its message's MaxAttempts,
// which keeps a message that always fails from holding the breaker open.
type BreakerConfig struct {
	// Disabled turns the breakers off: every message is run.
	Disabled bool
	// Window is how far back outcomes count. Default 60s.
	Window time.Duration
	// WindowCalls is how many of the latest outcomes are kept.
	// Default 20.
	WindowCalls int
	// MinCalls is how many outcomes within Window it takes before the
	// breaker may open. Default 10; at most WindowCalls.
	MinCalls int
	// FailureRatio is the share of transient failures among them that
	// opens the breaker, in (0, 1]. Default 0.5.
	FailureRatio float64
	// CoolDown is how long the breaker stays open before it lets a probe
	// through. Default 30s.
	CoolDown time.Duration
}

// withDefaults validates c and fills in its defaults. Errors name the
// field below Config.Breaker.
func (c BreakerConfig) withDefaults() (BreakerConfig, error) {
	var errs []string
	neg := func(name string, bad bool, v any) {
		if bad {
			errs = append(errs, fmt.Sprintf("Config.Breaker.%s must not be negative, got %v", name, v))
		}
	}
	neg("Window", c.Window < 0, c.Window)
	neg("WindowCalls", c.WindowCalls < 0, c.WindowCalls)
	neg("MinCalls", c.MinCalls < 0, c.MinCalls)
	neg("CoolDown", c.CoolDown < 0, c.CoolDown)
	if c.FailureRatio < 0 || c.FailureRatio > 1 {
		errs = append(errs, fmt.Sprintf("Config.Breaker.FailureRatio must be in (0, 1], got %v", c.FailureRatio))
	}
	if len(errs) > 0 {
		return c, errors.New("worker: " + strings.Join(errs, "; "))
	}
	if c.Window == 0 {
		c.Window = DefaultBreakerWindow
	}
	if c.WindowCalls == 0 {
		c.WindowCalls = max(DefaultBreakerWindowCalls, c.MinCalls)
	}
	if c.MinCalls == 0 {
		c.MinCalls = min(DefaultBreakerMinCalls, c.WindowCalls)
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultBreakerFailureRatio
	}
	if c.CoolDown == 0 {
		c.CoolDown = DefaultBreakerCoolDown
	}
	if c.MinCalls > c.WindowCalls {
		return c, fmt.Errorf("worker: Config.Breaker.MinCalls (%d) must not exceed Config.Breaker.WindowCalls (%d)", c.MinCalls, c.WindowCalls)
	}
	return c, nil
}

// breakerState is a breaker's state; its value is the one
// Metrics.BreakerState records.
type breakerState int

const (
	stateClosed   breakerState = 0
	stateHalfOpen breakerState = 1
	stateOpen     breakerState = 2
)

func (s breakerState) String() string {
	switch s {
	case stateClosed:
		return "closed"
	case stateHalfOpen:
		return "half-open"
	case stateOpen:
		return "open"
	}
	return fmt.Sprintf("breakerState(%d)", int(s))
}

// outcome is one job run's result as a breaker counts it.
type outcome struct {
	at     time.Time
	failed bool // failed transiently
}

// circuit is the breaker of one integration.
type circuit struct {
	state    breakerState
	recent   []outcome // oldest first, at most WindowCalls
	until    time.Time // when an open breaker half-opens
	probing  bool      // half-open and the probe is running
	failures int       // of the window that opened it, for the log
	calls    int
}

// admission is what a breaker lets a message do.
type admission struct {
	run   bool          // run it
	probe bool          // it is the half-open breaker's probe
	wait  time.Duration // when not run: how long to defer it
}

// breakers holds the circuit breakers of every integration. It is safe for
// concurrent use.
type breakers struct {
	cfg     BreakerConfig
	now     func() time.Time
	log     *zap.Logger
	metrics *Metrics

	mu       sync.Mutex
	circuits map[string]*circuit
}

func newBreakers(cfg BreakerConfig, now func() time.Time, log *zap.Logger, m *Metrics) *breakers {
	return &breakers{cfg: cfg, now: now, log: log, metrics: m, circuits: map[string]*circuit{}}
}

// circuit returns the integration's breaker, closed when first seen.
// Called with mu held.
func (b *breakers) circuit(integration string) *circuit {
	c, ok := b.circuits[integration]
	if !ok {
		c = &circuit{}
		b.circuits[integration] = c
		b.metrics.BreakerState(integration, int(stateClosed))
	}
	return c
}

// track makes the integration's breaker known, closed, so that its state
// is exported before its first message.
func (b *breakers) track(integration string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.circuit(integration)
}

// admit says whether a message of the integration may run now.
func (b *breakers) admit(integration string) admission {
	if b == nil {
		return admission{run: true}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuit(integration)
	now := b.now()
	if c.state == stateOpen {
		if now.Before(c.until) {
			return admission{wait: c.until.Sub(now)}
		}
		b.set(integration, c, stateHalfOpen)
		b.log.Info("circuit breaker half-open: letting one message through as a probe",
			zap.String("integration", integration), zap.String("breaker", stateHalfOpen.String()))
	}
	if c.state == stateHalfOpen {
		if c.probing {
			return admission{wait: b.probeWait()}
		}
		c.probing = true
		return admission{run: true, probe: true}
	}
	return admission{run: true}
}

// probeWait is how long a message is deferred while the probe runs.
func (b *breakers) probeWait() time.Duration { return max(b.cfg.CoolDown/10, time.Millisecond) }

// record counts the outcome of a run that admit let through; failed means
// it failed transiently.
func (b *breakers) record(integration string, probe, failed bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuit(integration)
	now := b.now()
	switch c.state {
	case stateClosed:
		if probe {
			return // the breaker closed meanwhile (cannot happen: only the probe closes it)
		}
		c.recent = append(c.recent, outcome{at: now, failed: failed})
		if n := len(c.recent) - b.cfg.WindowCalls; n > 0 {
			c.recent = append(c.recent[:0], c.recent[n:]...)
		}
		calls, failures := c.count(now, b.cfg.Window)
		if calls >= b.cfg.MinCalls && float64(failures) >= b.cfg.FailureRatio*float64(calls) {
			c.calls, c.failures = calls, failures
			b.open(integration, c, now, "recent calls failed")
		}
	case stateHalfOpen:
		if !probe {
			return // admitted before the breaker opened: its outcome is stale
		}
		c.probing = false
		if failed {
			c.calls, c.failures = 1, 1
			b.open(integration, c, now, "the probe failed")
			return
		}
		c.recent = c.recent[:0]
		b.set(integration, c, stateClosed)
		b.log.Info("circuit breaker closed: the probe did not fail transiently, resuming the integration's messages",
			zap.String("integration", integration), zap.String("breaker", stateClosed.String()))
	case stateOpen:
		// A run admitted while the breaker was closed, ending late.
	}
}

// release gives back the probe slot of a run whose outcome says nothing
// about the remote (it was interrupted by a shutdown).
func (b *breakers) release(integration string, probe bool) {
	if b == nil || !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.circuit(integration); c.state == stateHalfOpen {
		c.probing = false
	}
}

// open opens c for a cool-down. Called with mu held.
func (b *breakers) open(integration string, c *circuit, now time.Time, why string) {
	c.until = now.Add(b.cfg.CoolDown)
	c.probing = false
	c.recent = c.recent[:0]
	b.set(integration, c, stateOpen)
	b.log.Warn("circuit breaker opened: "+why+"; deferring the integration's messages for the cool-down",
		zap.String("integration", integration), zap.String("breaker", stateOpen.String()),
		zap.Int("calls", c.calls), zap.Int("transient_failures", c.failures),
		zap.Duration("cool_down", b.cfg.CoolDown))
}

// set changes c's state and exports it. Called with mu held.
func (b *breakers) set(integration string, c *circuit, s breakerState) {
	c.state = s
	b.metrics.BreakerState(integration, int(s))
}

// state returns the integration's breaker state, for tests.
func (b *breakers) state(integration string) breakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.circuit(integration).state
}

// count returns the outcomes within window of now and how many failed.
func (c *circuit) count(now time.Time, window time.Duration) (calls, failures int) {
	for _, o := range c.recent {
		if now.Sub(o.at) > window {
			continue
		}
		calls++
		if o.failed {
			failures++
		}
	}
	return calls, failures
}
