package worker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// testBreakers returns breakers on a fake clock, their logs, and a function
// reading the exported state of an integration.
func testBreakers(t *testing.T, cfg BreakerConfig) (*breakers, *clock, *observer.ObservedLogs, func(string) float64) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	require.NoError(t, err)
	clk := &clock{t: time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	b := newBreakers(cfg, clk.now, zap.New(core), NewMetrics(reg))
	gauge := func(integration string) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() != "revsync_breaker_state" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if labelValue(m, "integration") == integration {
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	return b, clk, logs, gauge
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// step is one event in a breaker sequence: a call's outcome ("ok", "fail"),
// a probe's outcome ("probe-ok", "probe-fail"), time passing ("wait"), or
// a check of what admit says ("admit").
type step struct {
	do    string
	d     time.Duration // for wait
	state breakerState  // the state after the step
	// for admit:
	run   bool
	probe bool
	wait  time.Duration
}

func TestBreakerSequences(t *testing.T) {
	t.Parallel()
	cfg := BreakerConfig{Window: time.Minute, WindowCalls: 6, MinCalls: 4, FailureRatio: 0.5, CoolDown: 30 * time.Second}
	fails := func(n int) []step {
		s := make([]step, n)
		for i := range s {
			s[i] = step{do: "fail"}
		}
		return s
	}
	seq := func(parts ...[]step) []step {
		var out []step
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		steps []step
		final breakerState
	}{
		{name: "below MinCalls stays closed", final: stateClosed,
			steps: seq(fails(3), []step{{do: "admit", run: true}})},
		{name: "MinCalls failures open it", final: stateOpen,
			steps: seq(fails(3), []step{{do: "fail", state: stateOpen}, {do: "admit", wait: 30 * time.Second}})},
		{name: "exactly the ratio opens it", final: stateOpen,
			steps: []step{{do: "ok"}, {do: "fail"}, {do: "ok"}, {do: "fail", state: stateOpen}}},
		{name: "below the ratio stays closed", final: stateClosed,
			steps: []step{{do: "ok"}, {do: "fail"}, {do: "ok"}, {do: "ok"}, {do: "fail"}, {do: "ok"}, {do: "ok"}}},
		{name: "only the last WindowCalls count", final: stateOpen,
			// 3 failures of 7 calls, but 3 of the last 6.
			steps: seq([]step{{do: "ok"}, {do: "ok"}, {do: "ok"}, {do: "ok"}, {do: "fail"}, {do: "fail"}, {do: "admit", run: true}},
				[]step{{do: "fail", state: stateOpen}})},
		{name: "outcomes older than Window do not count", final: stateClosed,
			steps: seq(fails(3), []step{{do: "wait", d: time.Minute + time.Second}}, fails(1), []step{{do: "admit", run: true}})},
		{name: "deferral is the rest of the cool-down", final: stateOpen,
			steps: seq(fails(4), []step{{do: "wait", d: 10 * time.Second}, {do: "admit", wait: 20 * time.Second}})},
		{name: "half-open lets one probe through", final: stateHalfOpen,
			steps: seq(fails(4), []step{
				{do: "wait", d: 30 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
				{do: "admit", wait: 3 * time.Second, state: stateHalfOpen},
				{do: "admit", wait: 3 * time.Second, state: stateHalfOpen},
			})},
		{name: "probe success closes it, with a fresh window", final: stateClosed,
			steps: seq(fails(4), []step{
				{do: "wait", d: 31 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
				{do: "probe-ok", state: stateClosed},
				{do: "admit", run: true},
			}, fails(3), []step{{do: "admit", run: true}})},
		{name: "probe failure reopens it for a full cool-down", final: stateHalfOpen,
			steps: seq(fails(4), []step{
				{do: "wait", d: 30 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
				{do: "wait", d: 2 * time.Second},
				{do: "probe-fail", state: stateOpen},
				{do: "admit", wait: 30 * time.Second},
				{do: "wait", d: 30 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
			})},
		{name: "a late outcome of a call admitted before opening is ignored", final: stateHalfOpen,
			steps: seq(fails(4), []step{
				{do: "fail", state: stateOpen}, // while open
				{do: "wait", d: 30 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
				{do: "ok", state: stateHalfOpen}, // not the probe
				{do: "fail", state: stateHalfOpen},
				{do: "admit", wait: 3 * time.Second, state: stateHalfOpen},
			})},
		{name: "a released probe lets another through", final: stateHalfOpen,
			steps: seq(fails(4), []step{
				{do: "wait", d: 30 * time.Second},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
				{do: "release", state: stateHalfOpen},
				{do: "admit", run: true, probe: true, state: stateHalfOpen},
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, clk, _, gauge := testBreakers(t, cfg)
			for i, s := range tt.steps {
				switch s.do {
				case "ok", "fail":
					b.record("crm", false, s.do == "fail")
				case "probe-ok", "probe-fail":
					b.record("crm", true, s.do == "probe-fail")
				case "release":
					b.release("crm", true)
				case "wait":
					clk.advance(s.d)
				case "admit":
					got := b.admit("crm")
					require.Equal(t, admission{run: s.run, probe: s.probe, wait: s.wait}, got, "step %d", i)
				}
				if s.state != stateClosed {
					require.Equal(t, s.state, b.state("crm"), "step %d (%s)", i, s.do)
				}
			}
			require.Equal(t, tt.final, b.state("crm"))
			require.Equal(t, float64(tt.final), gauge("crm"), "exported state")
		})
	}
}

func TestBreakerIntegrationsAreIndependent(t *testing.T) {
	t.Parallel()
	b, _, _, gauge := testBreakers(t, BreakerConfig{MinCalls: 2, WindowCalls: 2})
	b.track("erp")
	require.Equal(t, float64(0), gauge("erp"), "exported before its first message")
	b.record("crm", false, true)
	b.record("crm", false, true)
	require.Equal(t, stateOpen, b.state("crm"))
	require.Equal(t, admission{run: true}, b.admit("erp"))
	require.Equal(t, stateClosed, b.state("erp"))
	require.Equal(t, float64(2), gauge("crm"))
	require.Equal(t, float64(0), gauge("erp"))
}

// TestBreakerLogsStateChangesOnce: one line per transition, none per call.
func TestBreakerLogsStateChangesOnce(t *testing.T) {
	t.Parallel()
	b, clk, logs, _ := testBreakers(t, BreakerConfig{MinCalls: 2, WindowCalls: 2, CoolDown: time.Second})
	for range 2 {
		b.record("crm", false, true)
	}
	for range 5 {
		b.admit("crm")
		b.record("crm", false, true) // late outcomes while open
	}
	clk.advance(time.Second)
	require.True(t, b.admit("crm").probe)
	for range 5 {
		require.False(t, b.admit("crm").run)
	}
	b.record("crm", true, false)
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Level.String()+" "+e.ContextMap()["breaker"].(string))
		require.Equal(t, "crm", e.ContextMap()["integration"])
	}
	require.Equal(t, []string{"warn open", "info half-open", "info closed"}, got)
	open := logs.All()[0].ContextMap()
	require.Equal(t, int64(2), open["calls"])
	require.Equal(t, int64(2), open["transient_failures"])
}

func TestBreakerConfig(t *testing.T) {
	t.Parallel()
	c, err := BreakerConfig{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, BreakerConfig{Window: time.Minute, WindowCalls: 20, MinCalls: 10, FailureRatio: 0.5, CoolDown: 30 * time.Second}, c)
	c, err = BreakerConfig{MinCalls: 30}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 30, c.WindowCalls, "the window holds at least MinCalls")
	c, err = BreakerConfig{WindowCalls: 4}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 4, c.MinCalls)
	for cfg, want := range map[*BreakerConfig]string{
		{Window: -1}:                   "Config.Breaker.Window must not be negative",
		{CoolDown: -1}:                 "Config.Breaker.CoolDown must not be negative",
		{FailureRatio: 1.5}:            "Config.Breaker.FailureRatio must be in (0, 1]",
		{MinCalls: 5, WindowCalls: 3}:  "Config.Breaker.MinCalls (5) must not exceed Config.Breaker.WindowCalls (3)",
		{MinCalls: -1, WindowCalls: 3}: "Config.Breaker.MinCalls must not be negative",
	} {
		_, err := cfg.withDefaults()
		require.ErrorContains(t, err, want)
	}
}
