package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest/observer"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
	"github.com/revsync/revsync/worker/workertest"
)

// Fault tests: they inject broker faults for real with rabbitmqctl, so they
// need the broker to be local (AMQP_URL set and rabbitmqctl on the PATH),
// hold the exclusive broker lock, and restore the broker in t.Cleanup.

// faultEnv takes the exclusive broker lock, makes sure the broker is
// restored when the test ends, and returns the test's env with a fast
// reconnect backoff.
func faultEnv(t *testing.T) *env {
	t.Helper()
	if os.Getenv("AMQP_URL") == "" {
		t.Skip("set AMQP_URL to a local broker (with rabbitmqctl) to run the broker fault tests")
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl is needed to run the broker fault tests")
	}
	rabbittest.Exclusive(t)
	once := &sync.Once{}
	restoreOnce.Store(t, once)
	t.Cleanup(func() {
		once.Do(func() { restoreBroker(t) })
		restoreOnce.Delete(t)
	})
	e := newEnv(t)
	e.cfg.ReconnectBackoff = worker.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	t.Cleanup(func() { dumpLogs(t, e) })
	return e
}

// dumpLogs writes the client's and worker's logs to the test's output when
// it failed.
func dumpLogs(t *testing.T, e *env) {
	if !t.Failed() {
		return
	}
	for _, le := range e.logs.All() {
		t.Logf("log: %s %s %v", le.Level, le.Message, le.ContextMap())
	}
}

// ctl runs rabbitmqctl and returns its output.
func ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ctlErr(args...)
	require.NoError(t, err, "rabbitmqctl %s: %s", strings.Join(args, " "), out)
	return out
}

func ctlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	return string(out), err
}

// restoreOnce holds, for each running fault test, the *sync.Once that
// restores the broker: the first cleanup that needs the broker (an env's,
// deleting its queues) restores it.
var restoreOnce sync.Map

// restoreBroker starts the broker application (a no-op when it runs) and
// waits for it to be up.
func restoreBroker(t *testing.T) {
	if out, err := ctlErr("start_app"); err != nil {
		t.Errorf("restore the broker: rabbitmqctl start_app: %v: %s", err, out)
	}
	if out, err := ctlErr("await_startup"); err != nil {
		t.Errorf("restore the broker: rabbitmqctl await_startup: %v: %s", err, out)
	}
}

// counts returns the ready and unacknowledged messages of queue as
// rabbitmqctl reports them; ok is false when the queue is not listed.
func counts(t *testing.T, queue string) (ready, unacked int, ok bool) {
	t.Helper()
	out := ctl(t, "list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == queue {
			ready, _ = strconv.Atoi(f[1])
			unacked, _ = strconv.Atoi(f[2])
			return ready, unacked, true
		}
	}
	return 0, 0, false
}

// waitSettled waits until queue holds nothing, ready or unacknowledged.
// rabbitmqctl reports quorum queue counters with a delay of a few seconds.
func waitSettled(t *testing.T, queue string) {
	t.Helper()
	var ready, unacked int
	require.Eventually(t, func() bool {
		var ok bool
		ready, unacked, ok = counts(t, queue)
		return ok && ready == 0 && unacked == 0
	}, 45*time.Second, 500*time.Millisecond, "queue %s never 0/0 (last %d/%d)", queue, ready, unacked)
}

var connNameRe = regexp.MustCompile(`\{"connection_name","([^"]*)"\}`)

// connectionPIDs returns the broker's pids of the connections whose
// client-provided name is name.
func connectionPIDs(t *testing.T, name string) []string {
	t.Helper()
	out := ctl(t, "list_connections", "-q", "--no-table-headers", "pid", "client_properties")
	var pids []string
	for _, line := range strings.Split(out, "\n") {
		pid, props, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		if m := connNameRe.FindStringSubmatch(props); m != nil && m[1] == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// connectionPID returns the pid of the one connection named name.
func connectionPID(t *testing.T, name string) string {
	t.Helper()
	var pids []string
	require.Eventually(t, func() bool {
		pids = connectionPIDs(t, name)
		return len(pids) == 1
	}, 30*time.Second, 200*time.Millisecond, "connections named %q: %v", name, pids)
	return pids[0]
}

// publishEventually publishes an event with message ID id, retrying while
// the client reconnects.
func publishEventually(t *testing.T, pub *rabbitmq.Publisher, id string) {
	t.Helper()
	var err error
	require.Eventually(t, func() bool {
		err = pub.Publish(context.Background(), customerKey, rabbitmq.EventPublishing(workertest.CustomerBody(id), id))
		return err == nil
	}, 60*time.Second, 100*time.Millisecond, "publish %s: %v", id, err)
}

// unique returns the message IDs written at least once.
func (x *exporter) unique() map[string]int {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[string]int, len(x.writes))
	for id, n := range x.writes {
		out[id] = n
	}
	return out
}

// states records the readiness reported to Config.OnState.
type states struct {
	mu   sync.Mutex
	seen []bool
}

func (s *states) record(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, ready)
}

func (s *states) get() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.seen...)
}

// counter returns the value of the counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitConsuming waits until the worker running on c consumes.
func waitConsuming(t *testing.T, e *env, c *rabbitmq.Client) {
	t.Helper()
	require.Eventually(t, func() bool { return e.logs.FilterMessage("consuming").Len() >= 1 && c.Ready() },
		10*time.Second, 10*time.Millisecond, "consuming")
}

func messages(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

// unsettled returns the worker's log lines for messages it could not
// settle because their channel was lost: "... will be redelivered", status
// unsettled (the wording varies with the outcome; the status does not).
func unsettled(logs *observer.ObservedLogs) []observer.LoggedEntry {
	return logs.Filter(func(le observer.LoggedEntry) bool {
		return strings.HasSuffix(le.Message, "will be redelivered") &&
			le.ContextMap()["status"] == string(worker.OutcomeUnsettled)
	}).All()
}

const lostMsg = "connection to RabbitMQ lost; reconnecting"

// losses returns the lines logging the loss of the client's connection with
// role "publish" or "consume".
func losses(logs *observer.ObservedLogs, role string) []observer.LoggedEntry {
	return logs.Filter(func(le observer.LoggedEntry) bool {
		return le.Message == lostMsg && le.ContextMap()["connection"] == role
	}).All()
}

// closeConnections closes the named connections on the broker, at the same
// time.
func closeConnections(t *testing.T, reason string, pids ...string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(pids))
	outs := make([]string, len(pids))
	for i, pid := range pids {
		wg.Go(func() { outs[i], errs[i] = ctlErr("close_connection", pid, reason) })
	}
	wg.Wait()
	for i := range pids {
		require.NoError(t, errs[i], "rabbitmqctl close_connection %s: %s", pids[i], outs[i])
	}
}

// TestReconnectAfterBrokerRestart is F01: the broker application restarts
// under a consuming worker. The loss is logged, the client is not ready
// while disconnected, reconnects, declares the topology again, consumes
// again; all 8 events are exported and the queue ends 0/0.
func TestReconnectAfterBrokerRestart(t *testing.T) {
	e := faultEnv(t)
	var st states
	e.cfg.OnState = st.record
	reg := prometheus.NewRegistry()
	e.cfg.Metrics = worker.NewMetrics(reg)
	e.cfg.Prefetch = 5
	c := e.dial()
	x := newExporter()
	stop := running(t, c, e.worker(x, nil))
	waitConsuming(t, e, c)
	require.Equal(t, 1.0, gauge(t, reg, "revsync_broker_connected"))

	for i := 1; i <= 3; i++ {
		publishEventually(t, c.Publisher(), fmt.Sprintf("f01-%d", i))
	}
	require.Eventually(t, func() bool { return len(x.unique()) == 3 }, 10*time.Second, 10*time.Millisecond)

	ctl(t, "stop_app")
	require.Eventually(t, func() bool { return !c.Ready() }, 10*time.Second, 10*time.Millisecond,
		"not ready within seconds of the loss")
	require.Eventually(t, func() bool { return len(messages(e.logs, lostMsg)) == 2 }, 10*time.Second, 10*time.Millisecond,
		"the loss of both connections is logged")
	require.Equal(t, 0.0, gauge(t, reg, "revsync_broker_connected"))
	// Still down: still not ready.
	require.Eventually(t, func() bool {
		return e.logs.FilterMessage("still cannot connect to RabbitMQ; retrying").Len() >= 2
	}, 20*time.Second, 10*time.Millisecond)
	require.False(t, c.Ready())

	ctl(t, "start_app")
	ctl(t, "await_startup")
	for i := 4; i <= 8; i++ {
		publishEventually(t, c.Publisher(), fmt.Sprintf("f01-%d", i))
	}
	require.Eventually(t, func() bool { return len(x.unique()) == 8 }, 60*time.Second, 50*time.Millisecond,
		"all 8 exported; got %v", x.unique())
	require.Eventually(t, c.Ready, 10*time.Second, 10*time.Millisecond)
	waitSettled(t, e.cfg.Queue)
	require.NoError(t, stop())

	var reasons []string
	for _, role := range []string{"publish", "consume"} {
		lost := losses(e.logs, role)
		require.Len(t, lost, 1, "logged once")
		reason := lost[0].ContextMap()["reason"].(string)
		require.NotEmpty(t, reason)
		require.NotContains(t, fmt.Sprint(lost[0].ContextMap()), "guest:guest@", "no password")
		reasons = append(reasons, reason)
	}
	// The broker says why; a connection writing at that moment may see its
	// socket reset first.
	require.Contains(t, strings.Join(reasons, "|"), "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
	require.Equal(t, 2, e.logs.FilterMessage("reconnected to RabbitMQ").Len())
	require.Equal(t, 2, e.logs.FilterMessage("consuming").Len(), "consumed again after reconnecting")
	require.Equal(t, 2.0, counter(t, reg, "revsync_broker_reconnects_total"))
	require.Subset(t, st.get(), []bool{true, false})
	seen := st.get()
	require.Equal(t, true, seen[len(seen)-1], "ready again at the end: %v", seen)
	i := strings.Index(fmt.Sprint(seen), "true false")
	require.GreaterOrEqual(t, i, 0, "not ready while disconnected: %v", seen)
	n, _ := e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)
}

// TestReconnectBudget is F02 at the package level: with the broker
// application stopped, (a) a client with a reconnect budget gives up and Run
// returns an error naming the broker as unreachable, and so does Dial; (b)
// with the default budget a client stays up, not ready, retrying with capped
// backoff, and a Dial waits; once the broker is back both recover and
// consume.
func TestReconnectBudget(t *testing.T) {
	bounded := faultEnv(t)
	bounded.cfg.ReconnectTimeout = 2 * time.Second
	forever := newEnv(t)
	forever.cfg.ReconnectBackoff = worker.Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	later := newEnv(t)
	later.cfg.ReconnectBackoff = forever.cfg.ReconnectBackoff
	t.Cleanup(func() { dumpLogs(t, forever); dumpLogs(t, later) })

	cb := bounded.dial()
	boundedDone := make(chan error, 1)
	go func() { boundedDone <- cb.Run(context.Background(), bounded.worker(newExporter(), nil)) }()
	cf := forever.dial()
	xf := newExporter()
	stopForever := running(t, cf, forever.worker(xf, nil))
	waitConsuming(t, bounded, cb)
	waitConsuming(t, forever, cf)

	downAt := time.Now()
	ctl(t, "stop_app")

	// (a) The budget runs out: Run returns, naming the broker.
	var err error
	select {
	case err = <-boundedDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not give up within its reconnect budget")
	}
	require.ErrorIs(t, err, rabbitmq.ErrUnreachable)
	require.ErrorIs(t, err, worker.ErrSourceClosed)
	require.Contains(t, err.Error(), "127.0.0.1:5672")
	require.NotContains(t, err.Error(), "guest:guest@", "no password")
	require.GreaterOrEqual(t, time.Since(downAt), 2*time.Second)
	require.False(t, cb.Ready())
	require.ErrorIs(t, cb.Err(), rabbitmq.ErrUnreachable)
	require.Equal(t, 1, bounded.logs.FilterMessage("giving up on RabbitMQ").Len())
	perr := cb.Publisher().Publish(context.Background(), customerKey, rabbitmq.EventPublishing([]byte("{}"), "x"))
	require.ErrorIs(t, perr, rabbitmq.ErrUnreachable)

	// Dial at start-up, with a budget: gives up too.
	dialCfg := bounded.cfg
	dialCfg.ReconnectTimeout = 500 * time.Millisecond
	_, err = rabbitmq.Dial(context.Background(), dialCfg)
	require.ErrorIs(t, err, rabbitmq.ErrUnreachable)
	require.Contains(t, err.Error(), "127.0.0.1:5672")

	// (b) Without a budget: a Dial at start-up waits for the broker...
	type dialed struct {
		c   *rabbitmq.Client
		err error
	}
	laterDone := make(chan dialed, 1)
	go func() {
		c, err := rabbitmq.Dial(context.Background(), later.cfg)
		laterDone <- dialed{c, err}
	}()
	// ... and a running client stays up, not ready, retrying with capped
	// backoff.
	retries := func() []observer.LoggedEntry {
		return messages(forever.logs, "still cannot connect to RabbitMQ; retrying")
	}
	require.Eventually(t, func() bool { return len(retries()) >= 5 }, 30*time.Second, 10*time.Millisecond)
	require.False(t, cf.Ready())
	for _, le := range retries() {
		require.LessOrEqual(t, le.ContextMap()["retry_in"], 400*time.Millisecond, "capped")
	}
	select {
	case d := <-laterDone:
		t.Fatalf("Dial without a budget returned while the broker is down: %v", d.err)
	default:
	}
	require.Eventually(t, func() bool {
		return later.logs.FilterMessage("still cannot connect to RabbitMQ; retrying").Len() >= 2
	}, 10*time.Second, 10*time.Millisecond, "Dial retries")
	select {
	case d := <-laterDone:
		t.Fatalf("Dial without a budget returned while the broker is down: %v", d.err)
	default:
	}

	ctl(t, "start_app")
	ctl(t, "await_startup")
	require.Eventually(t, cf.Ready, 30*time.Second, 10*time.Millisecond)
	publishEventually(t, cf.Publisher(), "f02-after")
	require.Eventually(t, func() bool { return xf.unique()["f02-after"] == 1 }, 30*time.Second, 10*time.Millisecond)

	var d dialed
	select {
	case d = <-laterDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Dial did not connect once the broker was back")
	}
	require.NoError(t, d.err)
	require.True(t, d.c.Ready())
	require.NoError(t, d.c.Close())

	waitSettled(t, forever.cfg.Queue)
	require.NoError(t, stopForever())
	require.NoError(t, cf.Err())
}

// TestAckOnLostChannel is F03: the connection is closed on the broker while
// a message is being exported. The export then succeeds, but its ack cannot
// be sent: it is logged as "will be redelivered" and never attempted on the
// new channel. The message, redelivered on the new connection, is exported
// again; a later message is exported too; the queues end empty.
func TestAckOnLostChannel(t *testing.T) {
	e := faultEnv(t)
	c := e.dial()
	x := newExporter()
	const slow = "f03-slow"
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	x.write = func(ctx context.Context, jc *jobs.Context) error {
		first := false
		if jc.MessageID == slow {
			once.Do(func() { first = true })
		}
		if !first {
			return nil
		}
		// The first export of the slow message: a slow remote.
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stop := running(t, c, e.worker(x, nil))
	waitConsuming(t, e, c)
	pid := connectionPID(t, e.cfg.ConnectionName)

	publishEventually(t, c.Publisher(), slow)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the export never started")
	}
	closeConnections(t, "revsync fault test F03", pid)
	// Redelivered on the new connection and exported there, while the
	// first export still runs.
	require.Eventually(t, func() bool { return x.unique()[slow] == 1 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, e.logs.FilterMessage("message exported").Len())
	close(release) // the remote answers the first export: 200

	require.Eventually(t, func() bool { return len(unsettled(e.logs)) == 1 }, 10*time.Second, 10*time.Millisecond)
	u := unsettled(e.logs)[0].ContextMap()
	require.Equal(t, slow, u["message_id"])
	require.Contains(t, u["settle_error"], worker.ErrDeliveryLost.Error())

	publishEventually(t, c.Publisher(), "f03-next")
	require.Eventually(t, func() bool { return x.unique()["f03-next"] == 1 }, 10*time.Second, 10*time.Millisecond)
	waitSettled(t, e.cfg.Queue)
	require.NoError(t, stop())

	require.Equal(t, map[string]int{slow: 2, "f03-next": 1}, x.unique(), "the slow one exported twice, same result")
	lost := messages(e.logs, lostMsg)
	require.Len(t, lost, 1)
	require.Equal(t, "consume", lost[0].ContextMap()["connection"])
	require.Contains(t, lost[0].ContextMap()["reason"], "revsync fault test F03")
	// An ack of the old delivery tag on the new channel would have made
	// the broker close it (406 PRECONDITION_FAILED - unknown delivery tag).
	require.Zero(t, e.logs.FilterMessage("consuming channel closed by the broker; its unacknowledged deliveries will be redelivered; consuming again").Len())
	require.Equal(t, 2, e.logs.FilterMessage("message exported").Len())
	n, _ := e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n, "DLQ 0")
	ready, unacked, ok := counts(t, e.cfg.DeadLetterQueue)
	require.True(t, ok)
	require.Zero(t, ready+unacked)
}

// TestDeadLetterAcrossConnectionLoss is F11: 20 events fail permanently and
// the connection is closed on the broker while their dead-letter copies are
// being published. Every publish waits for its confirm; an original whose
// copy was not confirmed stays unacknowledged and is dead-lettered again
// after the reconnection. All 20 message IDs end in the DLQ, and Q 0/0.
//
// Duplicates are allowed, and only these: a copy the broker enqueued whose
// confirm, or whose original's ack, was lost with the connection. Each such
// original comes back and is dead-lettered again; the worker has then
// logged "message failed and could not be dead-lettered: it will be
// redelivered" (status unsettled) for it, which bounds the duplicates.
func TestDeadLetterAcrossConnectionLoss(t *testing.T) {
	e := faultEnv(t)
	e.cfg.Prefetch = 10
	c := e.dial()
	x := newExporter()
	gate := make(chan struct{})
	x.write = func(ctx context.Context, jc *jobs.Context) error {
		<-gate // opened once the test knows the connections' pids
		// A remote that takes a moment to reject every event: the 20
		// dead-letterings take about 2.5s, longer than rabbitmqctl takes
		// to close the connection, so that the close lands among them.
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return jobs.Permanent(errors.New("remote answered 422"))
	}
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("f11-%02d", i)
		publishEventually(t, c.Publisher(), ids[i])
	}
	stop := running(t, c, e.worker(x, func(c *worker.Config) { c.Concurrency = 2 }))
	pids := []string{connectionPID(t, e.cfg.ConnectionName), connectionPID(t, e.cfg.ConnectionName+rabbitmq.PublisherSuffix)}
	close(gate)

	require.Eventually(t, func() bool { m, _ := e.depth(e.cfg.DeadLetterQueue); return m >= 3 },
		30*time.Second, 5*time.Millisecond)
	before, _ := e.depth(e.cfg.DeadLetterQueue)
	closeConnections(t, "revsync fault test F11", pids...) // both: consuming and publishing
	require.Eventually(t, func() bool { return len(messages(e.logs, lostMsg)) == 2 }, 10*time.Second, 10*time.Millisecond)

	deadLettered := func() map[string]bool {
		got := map[string]bool{}
		for _, le := range messages(e.logs, "message dead-lettered") {
			got[le.ContextMap()["message_id"].(string)] = true
		}
		return got
	}
	require.Eventually(t, func() bool { return len(deadLettered()) == n }, 60*time.Second, 20*time.Millisecond,
		"every original acked after its confirmed copy")
	waitSettled(t, e.cfg.Queue)
	require.NoError(t, stop())

	dead := e.drain(e.cfg.DeadLetterQueue)
	seen := map[string]int{}
	for _, d := range dead {
		seen[d.MessageId]++
		require.Equal(t, string(jobs.ClassPermanent), d.Headers[worker.HeaderErrorClass])
	}
	for _, id := range ids {
		require.GreaterOrEqual(t, seen[id], 1, "%s in the DLQ", id)
	}
	require.Len(t, seen, n)
	redelivered := len(unsettled(e.logs))
	duplicates := len(dead) - n
	require.LessOrEqual(t, duplicates, redelivered, "duplicates only for originals whose settlement was lost")
	notConfirmed := e.logs.Filter(func(le observer.LoggedEntry) bool {
		return strings.HasSuffix(le.Message, "publish failed; the message stays unacknowledged and is retried") &&
			strings.Contains(le.ContextMap()["error"].(string), rabbitmq.ErrNotConfirmed.Error())
	}).Len()
	t.Logf("dead-lettered before the close: %d; publishes not confirmed: %d; originals lost with the channel: %d; duplicates: %d",
		before, notConfirmed, redelivered, duplicates)
}

// TestConnectionBlocked: a memory alarm makes the broker block the
// publishing connection once it publishes. The client logs it with the
// broker's reason and is not ready; publishes fail by their deadline instead
// of waiting; meanwhile the consumer, on its own connection, keeps exporting
// and acknowledging, and only the message whose dead-letter copy cannot be
// published waits, unacknowledged. Once the alarm clears, everything ends
// exported or dead-lettered.
func TestConnectionBlocked(t *testing.T) {
	e := faultEnv(t)
	e.cfg.PublishTimeout = time.Second
	c := e.dial()
	require.True(t, c.Ready())
	x := newExporter()
	x.write = func(_ context.Context, jc *jobs.Context) error {
		if strings.HasPrefix(jc.MessageID, "bad") {
			return jobs.Permanent(errors.New("remote answered 422"))
		}
		return nil
	}
	for _, id := range []string{"pre-1", "pre-2", "bad-1"} {
		publishEventually(t, c.Publisher(), id)
	}

	orig := strings.TrimSpace(ctl(t, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."))
	restore := []string{"set_vm_memory_high_watermark"}
	if m := regexp.MustCompile(`^\{absolute,(\d+)\}$`).FindStringSubmatch(orig); m != nil {
		restore = append(restore, "absolute", m[1])
	} else {
		_, err := strconv.ParseFloat(orig, 64)
		require.NoError(t, err, "unexpected watermark %q", orig)
		restore = append(restore, orig)
	}
	t.Cleanup(func() {
		// Always, even when the test failed half-way; before the
		// broker is used by anything else.
		if out, err := ctlErr(restore...); err != nil {
			t.Errorf("restore the memory watermark: rabbitmqctl %v: %v: %s", restore, err, out)
		}
	})
	ctl(t, "set_vm_memory_high_watermark", "0.0000001")

	// The broker blocks the connection on its first publish: that one
	// fails by its deadline (the broker may enqueue it once unblocked).
	start := time.Now()
	err := c.Publisher().Publish(context.Background(), customerKey,
		rabbitmq.EventPublishing(workertest.CustomerBody("blocked-1"), "blocked-1"))
	require.ErrorIs(t, err, rabbitmq.ErrNotConfirmed)
	require.Less(t, time.Since(start), 3*time.Second, "by its deadline")
	blocked := func() []observer.LoggedEntry {
		return e.logs.Filter(func(le observer.LoggedEntry) bool {
			return strings.HasPrefix(le.Message, "connection blocked by the broker: ")
		}).All()
	}
	require.Eventually(t, func() bool { return len(blocked()) == 1 }, 30*time.Second, 10*time.Millisecond)
	require.Contains(t, blocked()[0].Message, "memory")
	require.Equal(t, "publish", blocked()[0].ContextMap()["connection"])
	require.False(t, c.Ready())

	// Later publishes send nothing and fail by their deadline.
	start = time.Now()
	err = c.Publisher().Publish(context.Background(), customerKey,
		rabbitmq.EventPublishing(workertest.CustomerBody("blocked-2"), "blocked-2"))
	require.ErrorIs(t, err, rabbitmq.ErrNotConfirmed)
	require.Contains(t, err.Error(), "blocked by the broker (low on memory)")
	require.Less(t, time.Since(start), 3*time.Second, "by its deadline")

	// The consumer is not blocked: the two good messages are exported and
	// acknowledged; the bad one waits for its dead-letter copy.
	stop := running(t, c, e.worker(x, nil))
	require.Eventually(t, func() bool { u := x.unique(); return u["pre-1"] == 1 && u["pre-2"] == 1 },
		30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		r, u, ok := counts(t, e.cfg.Queue)
		return ok && r == 0 && u == 1
	}, 30*time.Second, 200*time.Millisecond, "acks flow while the publisher is blocked: only bad-1 is unacked")
	require.Eventually(t, func() bool {
		return e.logs.Filter(func(le observer.LoggedEntry) bool {
			return strings.HasSuffix(le.Message, "publish failed; the message stays unacknowledged and is retried") &&
				strings.Contains(le.ContextMap()["error"].(string), "blocked")
		}).Len() >= 1
	}, 10*time.Second, 10*time.Millisecond)
	require.False(t, c.Ready())

	ctl(t, restore...)
	require.Eventually(t, func() bool { return e.logs.FilterMessage("connection unblocked by the broker").Len() == 1 },
		30*time.Second, 10*time.Millisecond)
	require.Eventually(t, c.Ready, 10*time.Second, 10*time.Millisecond)
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	// blocked-1 reached the broker before the block and is enqueued
	// once unblocked; blocked-2 was never sent.
	require.Eventually(t, func() bool { return x.unique()["blocked-1"] == 1 }, 30*time.Second, 10*time.Millisecond)
	waitSettled(t, e.cfg.Queue)
	require.NoError(t, stop())
	require.Equal(t, map[string]int{"pre-1": 1, "pre-2": 1, "blocked-1": 1}, x.unique())
	dead := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, dead, 1)
	require.Equal(t, "bad-1", dead[0].MessageId)
}

// TestDeadLetterInFlightWhenConnectionDrops is F11 with the fault placed
// exactly, through a proxy: the dead-letter copy of a failed message reaches
// the broker, which enqueues it and confirms it, but the confirm never
// arrives: the connection drops first. The publish fails at once with
// ErrNotConfirmed (it does not wait for its timeout), the original stays
// unacknowledged and is redelivered after the reconnection, and is
// dead-lettered again: the DLQ holds it twice, the documented duplicate,
// and the work queue ends empty. A plain publish in flight when the
// connection drops fails the same way.
func TestDeadLetterInFlightWhenConnectionDrops(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(func() { dumpLogs(t, e) })
	p, proxied := startProxy(t, e.cfg.URL)
	e.cfg.URL = proxied
	e.cfg.PublishTimeout = 20 * time.Second
	e.cfg.ReconnectBackoff = worker.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	c := e.dial()
	x := newExporter()
	var attempts atomic.Int32
	x.write = func(context.Context, *jobs.Context) error {
		if attempts.Add(1) == 1 {
			// From now on the broker's answers, the confirm of the
			// dead-letter copy included, are held back.
			p.freeze()
		}
		return jobs.Permanent(errors.New("remote answered 422"))
	}
	e.publish(customerKey, rabbitmq.EventPublishing(workertest.CustomerBody("INFLIGHT"), "f11-inflight"))
	stop := running(t, c, e.worker(x, nil))

	// The copy is in the dead-letter queue: the broker has it and has
	// confirmed it, but the worker has not seen the confirm.
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	cutAt := time.Now()
	p.cut()

	notConfirmed := func() []observer.LoggedEntry {
		return e.logs.Filter(func(le observer.LoggedEntry) bool {
			return strings.HasSuffix(le.Message, "publish failed; the message stays unacknowledged and is retried")
		}).All()
	}
	require.Eventually(t, func() bool { return len(notConfirmed()) >= 1 }, 10*time.Second, time.Millisecond)
	require.Less(t, time.Since(cutAt), 5*time.Second, "failed at once, not after the publish timeout")
	require.Contains(t, notConfirmed()[0].ContextMap()["error"], rabbitmq.ErrNotConfirmed.Error())
	require.Eventually(t, func() bool { return len(unsettled(e.logs)) == 1 }, 10*time.Second, time.Millisecond,
		"the retry finds the delivery's channel gone and does not publish again")
	require.Contains(t, unsettled(e.logs)[0].ContextMap()["settle_error"], worker.ErrDeliveryLost.Error())

	// Redelivered on the new connection, dead-lettered again.
	require.Eventually(t, func() bool { return e.logs.FilterMessage("message dead-lettered").Len() == 1 },
		30*time.Second, 10*time.Millisecond)
	require.Equal(t, int32(2), attempts.Load())
	require.Equal(t, 2, e.logs.FilterMessage(lostMsg).Len(), "both connections went through the proxy")

	// A plain publish in flight when the connection drops (to the
	// dead-letter exchange, where no consumer takes it).
	e.waitDepth(e.cfg.DeadLetterQueue, 2)
	p.freeze()
	errc := make(chan error, 1)
	go func() {
		errc <- c.Publisher().PublishTo(context.Background(), e.cfg.DeadLetterExchange, customerKey,
			rabbitmq.EventPublishing(workertest.CustomerBody("PLAIN"), "f11-plain"))
	}()
	e.waitDepth(e.cfg.DeadLetterQueue, 3)
	p.cut()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, rabbitmq.ErrNotConfirmed)
	case <-time.After(5 * time.Second):
		t.Fatal("the publish in flight did not fail when the connection dropped")
	}
	require.Eventually(t, c.Ready, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n)
	if e.unacked(e.cfg.Queue) >= 0 {
		require.Eventually(t, func() bool { return e.unacked(e.cfg.Queue) == 0 }, 30*time.Second, 200*time.Millisecond)
	}
	dead := e.drain(e.cfg.DeadLetterQueue)
	ids := map[string]int{}
	for _, d := range dead {
		ids[d.MessageId]++
	}
	require.Equal(t, map[string]int{"f11-inflight": 2, "f11-plain": 1}, ids,
		"the copy confirmed too late and the one after the redelivery; the plain publish, enqueued but not confirmed")
}

// TestConsumerCancelledByBroker: the work queue is deleted under the
// consumer, so the broker cancels it while the connection lives on. The
// consumer logs it, declares the topology again and consumes again, on the
// same worker.Source; the worker keeps running and exports what comes next.
func TestConsumerCancelledByBroker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	t.Cleanup(func() { dumpLogs(t, e) })
	e.cfg.ReconnectBackoff = worker.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	c := e.dial()
	x := newExporter()
	stop := running(t, c, e.worker(x, nil))
	waitConsuming(t, e, c)
	publishEventually(t, c.Publisher(), "before")
	require.Eventually(t, func() bool { return x.unique()["before"] == 1 }, 10*time.Second, 10*time.Millisecond)

	_, err := e.channel().QueueDelete(e.cfg.Queue, false, false, false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return e.logs.FilterMessage("consumer cancelled by the broker; declaring the topology again and consuming again").Len() == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return e.logs.FilterMessage("consuming").Len() == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, c.Ready, 10*time.Second, 10*time.Millisecond)

	publishEventually(t, c.Publisher(), "after")
	require.Eventually(t, func() bool { return x.unique()["after"] == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())
	require.Zero(t, e.logs.FilterMessage(lostMsg).Len(), "the connection lived on")
}
