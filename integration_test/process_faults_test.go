package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

// ---------------------------------------------------------------------------
// F13: SIGTERM with work in flight.

// shutdownRun is the F13 scenario up to the SIGTERM: a remote that takes 8 s
// per write, a worker with prefetch 5 and concurrency 2, 5 events of 5
// customers published, SIGTERM once 2 are in flight, then a 6th event.
type shutdownRun struct {
	s        *workerConfig
	b        *broker
	nw       *northwind
	remote   *memoryRemote
	w        *worker
	byPath   map[string]string // remote item path → message id
	all      []string          // the 6 message ids
	sixth    string
	sigterm  time.Time
	customer map[string]string // message id → customer id
}

func startShutdownRun(t *testing.T, grace string) *shutdownRun {
	t.Helper()
	rabbittest.Shared(t)
	svc := requireServices(t)
	remote := startMemoryRemote(t, "customers", "order_lines")
	remote.SetPutCreates(true)
	remote.SetFault(func(r seenRequest) remoteFault {
		if r.Method == http.MethodGet {
			return remoteFault{}
		}
		return remoteFault{Delay: 8 * time.Second}
	})
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newConfig(newSetup(t, svc, b, nw.Schema, remote.URL))
	s.Prefetch, s.Concurrency, s.ShutdownGrace = 5, 2, grace
	w := s.StartWorker(t, s.Write(t))
	waitReady(t, w, 30*time.Second)

	run := &shutdownRun{s: s, b: b, nw: nw, remote: remote, w: w,
		byPath: map[string]string{}, customer: map[string]string{}}
	customers := nw.CustomerIDs(t)[:6]
	for _, c := range customers[:5] {
		id := publishCustomerEvent(t, b, s, c)
		run.all = append(run.all, id)
		run.byPath["/customers/"+c] = id
		run.customer[id] = c
	}
	waitFor(t, 20*time.Second, "2 requests in flight at the remote", func() (bool, string) {
		w.RequireRunning(t)
		n := remote.InFlight()
		return n == 2, fmt.Sprintf("%d in flight, %d requests", n, len(remote.Requests(nil)))
	})
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	run.sigterm = time.Now()
	// Published after SIGTERM: it must stay in the queue.
	run.sixth = publishCustomerEvent(t, b, s, customers[5])
	run.all = append(run.all, run.sixth)
	run.customer[run.sixth] = customers[5]
	return run
}

// requireRemoteSawTwo checks the remote saw exactly the 2 writes that were
// in flight, and returns their message ids.
func (run *shutdownRun) requireRemoteSawTwo(t *testing.T, answered bool) []string {
	t.Helper()
	reqs := run.remote.Requests(nil)
	require.Len(t, reqs, 2, "requests the remote saw: %+v", reqs)
	var ids []string
	for _, r := range reqs {
		require.Equal(t, http.MethodPut, r.Method, "request %+v", r)
		id, ok := run.byPath[r.Path]
		require.True(t, ok, "request for %s, not one of the 5 events", r.Path)
		require.Equal(t, answered, r.Status != 0, "request %+v answered", r)
		ids = append(ids, id)
	}
	return ids
}

// TestGracefulShutdownFinishesInFlightWork is F13: on SIGTERM the worker
// cancels its consumer at once, the 2 exports in flight finish and are
// acknowledged within the 20 s grace period, the 3 prefetched messages that
// never started go back to the work queue (ready, not dead-lettered), an
// event published after SIGTERM is not consumed, and the exit code is 0.
func TestGracefulShutdownFinishesInFlightWork(t *testing.T) {
	t.Parallel()
	run := startShutdownRun(t, "20s")
	s, b, w := run.s, run.b, run.w

	// Consuming was cancelled at once: the 3 unstarted messages and the
	// 6th are ready in the queue while the 2 exports still run.
	waitFor(t, 20*time.Second, "3 requeued + the 6th ready in "+s.Queue, func() (bool, string) {
		q, err := b.Inspect(s.Queue)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages == 4, fmt.Sprintf("%d ready, %d in flight at the remote", q.Messages, run.remote.InFlight())
	})
	require.Equal(t, 2, run.remote.InFlight(), "the 2 exports still run once the others are back in the queue")
	require.False(t, w.Exited(), "the worker waits for its in-flight exports")

	code := w.Wait(t, 40*time.Second)
	t.Logf("exited %s after SIGTERM", time.Since(run.sigterm).Round(100*time.Millisecond))
	require.Equal(t, 0, code, "exit code of a shutdown that finished within the grace period")

	exported := run.requireRemoteSawTwo(t, true)
	var exportedCustomers []string
	for _, id := range exported {
		exportedCustomers = append(exportedCustomers, run.customer[id])
	}
	require.Empty(t, diffItems(subsetOf(run.nw.ExpectedCustomers(t), exportedCustomers), run.remote.Items("customers")),
		"the remote holds exactly the 2 exported customers")

	// With the worker gone, anything it had not acknowledged would be
	// ready again: 4 ready means the 2 exports were acknowledged.
	waitMessagesReady(t, b, s.Queue, 4, 10*time.Second)
	left := b.Drain(t, s.Queue)
	var want []string
	for _, id := range run.all {
		if id != exported[0] && id != exported[1] {
			want = append(want, id)
		}
	}
	require.Equal(t, sorted(want), messageIDs(left), "the 3 unstarted and the 6th are back in the queue; lost = 0")
	for _, d := range left {
		if d.MessageId == run.sixth {
			require.False(t, d.Redelivered, "the 6th event, published after SIGTERM, was never delivered")
		}
	}
	require.Equal(t, 0, dlqMessages(t, b, s.setup), "nothing dead-lettered")

	require.Equal(t, 3, countLogs(w.stderrPath, "message requeued: worker stopping before it started", nil),
		"each unstarted message is requeued once")
	require.Equal(t, 2, countLogs(w.stderrPath, "message exported", nil))
}

// TestShutdownGraceExceededRequeuesInFlightWork is F13 past the grace
// period: with shutdown_grace 1s the 2 exports in flight are cancelled and
// their messages requeued; the work queue ends with all 6 events, nothing is
// dead-lettered, and the exit code is not 0.
func TestShutdownGraceExceededRequeuesInFlightWork(t *testing.T) {
	t.Parallel()
	run := startShutdownRun(t, "1s")
	s, b, w := run.s, run.b, run.w

	code := w.Wait(t, 30*time.Second)
	t.Logf("exited %s after SIGTERM with code %d", time.Since(run.sigterm).Round(100*time.Millisecond), code)
	require.NotEqual(t, 0, code, "exit code of a shutdown that ran out of grace")
	require.Contains(t, w.Stderr(t), "shutdown grace period exceeded")

	run.requireRemoteSawTwo(t, false)
	require.Empty(t, run.remote.Items("customers"), "a cancelled export changed nothing at the remote")

	waitMessagesReady(t, b, s.Queue, 6, 10*time.Second)
	left := b.Drain(t, s.Queue)
	require.Equal(t, sorted(run.all), messageIDs(left), "every event is back in the queue; lost = 0")
	require.Equal(t, 0, dlqMessages(t, b, s.setup), "nothing dead-lettered")
	require.Equal(t, 2, countLogs(w.stderrPath, "message interrupted by shutdown and requeued", nil),
		"the 2 cancelled exports are requeued")
}

// ---------------------------------------------------------------------------
// F02: the broker is gone.

// requireNoPassword fails when output holds the AMQP URL's password in
// clear ("user:password@").
func requireNoPassword(t *testing.T, amqpURL, output string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	require.NoError(t, err)
	if pw, ok := u.User.Password(); ok {
		require.NotContains(t, output, u.User.Username()+":"+pw+"@", "the AMQP password appears in the output")
	}
}

// TestBrokerGoneWithReconnectBudgetExitsNonZero is F02 (a): with
// amqp.reconnect_timeout 3s, stopping the broker application makes the
// worker exit non-zero, saying the broker is unreachable and naming it
// without its password.
func TestBrokerGoneWithReconnectBudgetExitsNonZero(t *testing.T) {
	rabbittest.Exclusive(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newConfig(newSetup(t, svc, b, nw.Schema, "http://127.0.0.1:9")) // nothing is exported
	app := controlBrokerApp(t, b)

	s.ReconnectTimeout = "3s"
	w := s.StartWorker(t, s.Write(t))
	waitReady(t, w, 30*time.Second)

	app.Stop(t)
	stopped := time.Now()
	code := w.Wait(t, 60*time.Second)
	t.Logf("exited with code %d %s after the broker application stopped", code, time.Since(stopped).Round(100*time.Millisecond))
	app.Start(t)

	stderr := w.Stderr(t)
	require.Equal(t, 1, code, "exit code of a worker that gave up on the broker; stderr:\n%s", stderr)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	require.True(t, strings.HasPrefix(last, "revsync: "), "the last line is the error: %q", last)
	t.Logf("stderr's last line: %s", last)
	require.Contains(t, last, "broker unreachable", "the error says the broker is unreachable")
	u, err := url.Parse(svc.AMQPURL)
	require.NoError(t, err)
	require.Contains(t, last, u.Host, "the error names the broker")
	require.Contains(t, last, "3s", "the error names the reconnect budget")
	requireNoPassword(t, svc.AMQPURL, stderr)
	require.GreaterOrEqual(t, countLogs(w.stderrPath, "connection to RabbitMQ lost; reconnecting", nil), 1,
		"the loss is logged")
}

// TestBrokerGoneByDefaultWorkerWaitsNotReady is F02 (b): without a
// reconnect budget a worker whose broker stops stays up, not ready (the
// broker check failing), and retries with backoff; a worker started while
// the broker is down waits the same way. Once the broker is back both
// become ready, an event published then is exported, and SIGTERM ends each
// with exit code 0.
func TestBrokerGoneByDefaultWorkerWaitsNotReady(t *testing.T) {
	rabbittest.Exclusive(t)
	svc := requireServices(t)
	remote := startMemoryRemote(t, "customers", "order_lines")
	remote.SetPutCreates(true)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newConfig(newSetup(t, svc, b, nw.Schema, remote.URL))
	app := controlBrokerApp(t, b)
	cfg := s.Write(t) // amqp.reconnect_timeout unset: retry for ever
	customers := nw.CustomerIDs(t)

	w1 := s.StartWorker(t, cfg)
	waitReady(t, w1, 30*time.Second)
	publishCustomerEvent(t, b, s, customers[0])
	waitForItems(t, remote, "customers", 1, 20*time.Second, w1)

	app.Stop(t)
	notReady := func(w *worker, logMsg string, n int) func() (bool, string) {
		return func() (bool, string) {
			w.RequireRunning(t)
			code, checks, err := readyz(w)
			if err != nil {
				return false, err.Error()
			}
			retries := countLogs(w.stderrPath, logMsg, nil)
			return code == http.StatusServiceUnavailable && checks["broker"] == "disconnected" && retries >= n,
				fmt.Sprintf("/readyz %d %v, %d %q lines", code, checks, retries, logMsg)
		}
	}
	waitFor(t, 30*time.Second, "the running worker not ready and retrying", notReady(w1, "still cannot connect to RabbitMQ; retrying", 1))

	w2 := s.StartWorker(t, cfg)
	waitFor(t, 30*time.Second, "the worker started while the broker is down not ready and retrying",
		notReady(w2, "cannot connect to RabbitMQ; retrying", 1))

	app.Start(t)
	started := time.Now()
	waitReady(t, w1, 60*time.Second)
	waitReady(t, w2, 60*time.Second)
	t.Logf("both workers ready %s after the broker application started", time.Since(started).Round(100*time.Millisecond))

	publishCustomerEvent(t, b, s, customers[1])
	waitForItems(t, remote, "customers", 2, 20*time.Second, w1, w2)
	require.Empty(t, diffItems(subsetOf(nw.ExpectedCustomers(t), customers[:2]), remote.Items("customers")))
	waitQueueEmpty(t, b, s.Queue, 20*time.Second, nil)
	require.Equal(t, 0, dlqMessages(t, b, s.setup))

	delays := map[string][]string{}
	for _, l := range logLines(w1.stderrPath) {
		if l["msg"] == "still cannot connect to RabbitMQ; retrying" || l["msg"] == "cannot connect to RabbitMQ; retrying" {
			c := fmt.Sprint(l["connection"])
			delays[c] = append(delays[c], fmt.Sprint(l["retry_in"]))
		}
	}
	t.Logf("reconnect delays (s) of the running worker by connection: %v", delays)

	require.Equal(t, 0, w1.Stop(t, 30*time.Second), "exit code of the worker that lived through the outage")
	require.Equal(t, 0, w2.Stop(t, 30*time.Second), "exit code of the worker started during the outage")
	requireNoPassword(t, svc.AMQPURL, w1.Stderr(t))
	requireNoPassword(t, svc.AMQPURL, w2.Stderr(t))
}

// ---------------------------------------------------------------------------
// F07: a replica is killed while exporting the same event, again and again.

// replicaSupervisor keeps named worker replicas running: it restarts a
// replica whenever its process ends, and counts the restarts.
type replicaSupervisor struct {
	s   *setup
	dir string

	mu       sync.Mutex
	current  map[string]*worker
	history  []*worker
	restarts map[string]int
	stopping bool
	err      error
	wg       sync.WaitGroup
}

// maxRestarts stops a supervisor that restarts one replica more often: a
// crash loop the test did not expect.
const maxRestarts = 20

// superviseReplicas starts one replica per configuration, by name. At
// cleanup the replicas are stopped (SIGTERM, then SIGKILL) and, when the
// test failed, the logs of every process are printed.
func superviseReplicas(t *testing.T, s *setup, configs map[string]string) *replicaSupervisor {
	t.Helper()
	sup := &replicaSupervisor{s: s, dir: t.TempDir(), current: map[string]*worker{}, restarts: map[string]int{}}
	for name, cfg := range configs {
		sup.wg.Go(func() { sup.loop(name, cfg) })
	}
	t.Cleanup(func() {
		sup.stop(5 * time.Second)
		if t.Failed() {
			for _, w := range sup.history {
				dumpFile(t, "replica stderr", w.stderrPath)
			}
		}
	})
	return sup
}

func (sup *replicaSupervisor) loop(name, cfg string) {
	for gen := 0; ; gen++ {
		w, err := startWorkerProcess(sup.s, cfg, sup.dir, fmt.Sprintf("%s-%d", name, gen))
		sup.mu.Lock()
		if err != nil {
			sup.err = err
			sup.mu.Unlock()
			return
		}
		sup.current[name] = w
		sup.history = append(sup.history, w)
		sup.mu.Unlock()

		<-w.done
		sup.mu.Lock()
		if sup.stopping {
			sup.mu.Unlock()
			return
		}
		sup.restarts[name]++
		if sup.restarts[name] > maxRestarts {
			sup.err = fmt.Errorf("replica %s restarted more than %d times", name, maxRestarts)
			sup.mu.Unlock()
			return
		}
		sup.mu.Unlock()
	}
}

// Current returns the running process of a replica.
func (sup *replicaSupervisor) Current(name string) *worker {
	sup.mu.Lock()
	defer sup.mu.Unlock()
	return sup.current[name]
}

// Kill sends SIGKILL to a replica's running process.
func (sup *replicaSupervisor) Kill(t *testing.T, name string) {
	t.Helper()
	w := sup.Current(name)
	require.NotNil(t, w, "replica %s", name)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL), "SIGKILL replica %s", name)
}

// Restarts returns the restarts per replica.
func (sup *replicaSupervisor) Restarts() map[string]int {
	sup.mu.Lock()
	defer sup.mu.Unlock()
	out := map[string]int{}
	for k, v := range sup.restarts {
		out[k] = v
	}
	return out
}

// Err returns why the supervisor stopped restarting, if it did.
func (sup *replicaSupervisor) Err() error {
	sup.mu.Lock()
	defer sup.mu.Unlock()
	return sup.err
}

// stop stops restarting and sends SIGTERM to every replica; it returns
// their exit codes by name (-1 for one killed after grace).
func (sup *replicaSupervisor) stop(grace time.Duration) map[string]int {
	sup.mu.Lock()
	sup.stopping = true
	current := map[string]*worker{}
	for k, v := range sup.current {
		current[k] = v
	}
	sup.mu.Unlock()
	codes := map[string]int{}
	for name, w := range current {
		stopProcess(w.cmd, w.done, grace)
		codes[name] = w.cmd.ProcessState.ExitCode()
	}
	sup.wg.Wait()
	return codes
}

// TestCrashLoopEndsInDLQAfterDeliveryLimit is F07 with SIGKILL: two
// replicas run under a supervisor that restarts them; whichever replica
// exports the poison event is killed while the remote holds its request, so
// the event is redelivered again and again. The quorum queue's delivery
// limit (3) ends the loop: the broker dead-letters the event (x-death reason
// delivery_limit), the kills stop, the 5 normal events and one published
// afterwards are exported, and both replicas end with exit code 0.
//
// The other F07 variant, a panic while exporting, is covered at package
// level (worker tests): the panic becomes a "panic" failure, dead-lettered.
func TestCrashLoopEndsInDLQAfterDeliveryLimit(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	remote := startMemoryRemote(t, "customers", "order_lines")
	remote.SetPutCreates(true)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newConfig(newSetup(t, svc, b, nw.Schema, remote.URL))

	customers := nw.CustomerIDs(t)
	poison, normal, late := customers[0], customers[1:6], customers[6]
	poisonPath := "/customers/" + poison
	// The remote calls the fault function under its lock as each request
	// arrives: the channel's room keeps the send from blocking it.
	poisonSeen := make(chan seenRequest, 64)
	remote.SetFault(func(r seenRequest) remoteFault {
		if r.Path == poisonPath {
			poisonSeen <- r
			return remoteFault{Hang: true} // until the client goes away
		}
		return remoteFault{}
	})

	const deliveryLimit = 3
	configs := map[string]string{}
	for _, name := range []string{"r1", "r2"} {
		c := newConfig(s.setup)
		c.DeliveryLimit = deliveryLimit
		// One message per replica at a time: a kill returns only the
		// message being exported.
		c.Prefetch, c.Concurrency = 1, 1
		c.ConnectionName = s.Prefix + "-" + name
		c.Integrations[0].Headers = map[string]string{"X-Replica": name}
		configs[name] = c.Write(t)
	}
	sup := superviseReplicas(t, s.setup, configs)
	for name := range configs {
		waitFor(t, 30*time.Second, "replica "+name+" ready", func() (bool, string) {
			w := sup.Current(name)
			if w == nil {
				return false, "not started"
			}
			code, checks, err := readyz(w)
			if err != nil {
				return false, err.Error()
			}
			return code == http.StatusOK, fmt.Sprintf("/readyz %d %v", code, checks)
		})
	}

	poisonID := publishCustomerEvent(t, b, s, poison)
	var normalIDs []string
	for _, c := range normal {
		normalIDs = append(normalIDs, publishCustomerEvent(t, b, s, c))
	}

	// Kill the replica exporting the poison event each time the remote
	// sees it, until the event is in the DLQ.
	kills := map[string]int{}
	total := 0
	waitFor(t, 60*time.Second, "the poison event in "+s.DLQ, func() (bool, string) {
		require.NoError(t, sup.Err())
		for {
			select {
			case req := <-poisonSeen:
				replica := req.Header.Get("X-Replica")
				sup.Kill(t, replica)
				kills[replica]++
				total++
				continue
			default:
			}
			break
		}
		q, err := b.Inspect(s.DLQ)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages == 1, fmt.Sprintf("%d in the DLQ, %d kills %v", q.Messages, total, kills)
	})
	t.Logf("poison event dead-lettered after %d kills %v", total, kills)

	// The 5 normal events are exported and the queue is empty, with both
	// replicas up and ready: nothing is left to kill them.
	waitForItems(t, remote, "customers", len(normal), 30*time.Second)
	require.Empty(t, diffItems(subsetOf(nw.ExpectedCustomers(t), normal), remote.Items("customers")))
	waitQueueEmpty(t, b, s.Queue, 30*time.Second, func() { require.NoError(t, sup.Err()) })
	for name := range configs {
		waitReady(t, sup.Current(name), 30*time.Second)
	}
	// One more event flows through both replicas' queue; the poison event
	// does not come back.
	publishCustomerEvent(t, b, s, late)
	waitForItems(t, remote, "customers", len(normal)+1, 30*time.Second)
	waitQueueEmpty(t, b, s.Queue, 30*time.Second, nil)
	require.Empty(t, poisonSeen, "the poison event was delivered again after it was dead-lettered")

	var poisonRequests int
	for _, r := range remote.Requests(nil) {
		if r.Path == poisonPath {
			poisonRequests++
			require.Zero(t, r.Status, "the poison request was never answered")
		}
	}
	require.Equal(t, total, poisonRequests, "one kill per poison request")
	// RabbitMQ dead-letters a quorum queue message once it was returned
	// more than x-delivery-limit times: at most limit + 1 deliveries.
	require.GreaterOrEqual(t, total, deliveryLimit, "deliveries of the poison event")
	require.LessOrEqual(t, total, deliveryLimit+1, "deliveries of the poison event are bounded by the delivery limit")
	restarts := sup.Restarts()
	sumRestarts := 0
	for _, n := range restarts {
		sumRestarts += n
	}
	require.Equal(t, total, sumRestarts, "each kill restarted one replica, nothing else: %v", restarts)

	// Where every message ended: the poison event in the DLQ (dead-lettered
	// by the broker), the others exported.
	dl := b.Drain(t, s.DLQ)
	require.Len(t, dl, 1)
	require.Equal(t, poisonID, dl[0].MessageId)
	require.Equal(t, s.CustomerRoutingKey(), dl[0].RoutingKey)
	requireDeliveryLimitDeath(t, dl[0], s.Queue)
	require.Len(t, remote.Items("customers"), len(normalIDs)+1, "the 5 normal events and the late one exported")

	codes := sup.stop(30 * time.Second)
	for name, code := range codes {
		require.Equal(t, 0, code, "exit code of replica %s after SIGTERM", name)
	}
}

// requireDeliveryLimitDeath checks a dead-lettered copy carries the
// broker's x-death entry for the delivery limit of queue, or revsync's own
// headers if a worker got to dead-letter it.
func requireDeliveryLimitDeath(t *testing.T, d amqp.Delivery, queue string) {
	t.Helper()
	if class, ok := d.Headers["x-revsync-error-class"]; ok {
		t.Logf("dead-lettered by a worker: class %v: %v", class, d.Headers["x-revsync-error"])
		return
	}
	deaths, ok := d.Headers["x-death"].([]any)
	require.True(t, ok, "x-death header: %#v", d.Headers)
	var reasons []string
	for _, x := range deaths {
		death, ok := x.(amqp.Table)
		require.True(t, ok, "x-death entry %#v", x)
		reasons = append(reasons, fmt.Sprintf("%v@%v", death["reason"], death["queue"]))
		if death["reason"] == "delivery_limit" && death["queue"] == queue {
			return
		}
	}
	t.Fatalf("no x-death entry with reason delivery_limit for %s: %v", queue, reasons)
}

// ---------------------------------------------------------------------------
// PostgreSQL faults.

// streamRun is a worker exporting a stream of customer events to a remote
// that takes a little time per write, with a short retry schedule.
type streamRun struct {
	s        *workerConfig
	b        *broker
	nw       *northwind
	remote   *memoryRemote
	w        *worker
	appName  string
	expected map[string]any
}

func startStreamRun(t *testing.T, svc services, nw *northwind, b *broker, remote *memoryRemote) *streamRun {
	t.Helper()
	remote.SetPutCreates(true)
	remote.SetFault(func(r seenRequest) remoteFault {
		if r.Method == http.MethodGet {
			return remoteFault{}
		}
		return remoteFault{Delay: 100 * time.Millisecond}
	})
	s := newConfig(newSetup(t, svc, b, nw.Schema, remote.URL))
	// The worker's sessions are found by their own application_name, so
	// that terminating them touches nobody else's.
	appName := s.Prefix
	s.DatabaseURL = withApplicationName(t, svc.DatabaseURL, appName)
	s.Retry = "{schedule: [200ms, 500ms, 1s, 2s, 4s], max_attempts: 8}"
	// A database outage fails every run: should the breaker open, it
	// holds work back for only a short while.
	s.Breaker = "{cool_down: 2s}"
	s.AcquireTimeout = "2s"
	w := s.StartWorker(t, s.Write(t))
	waitReady(t, w, 30*time.Second)
	customers := nw.CustomerIDs(t)
	for _, c := range customers {
		publishCustomerEvent(t, b, s, c)
	}
	return &streamRun{s: s, b: b, nw: nw, remote: remote, w: w, appName: appName,
		expected: nw.ExpectedCustomers(t)}
}

// waitExported waits until at least n customers are at the remote.
func (run *streamRun) waitExported(t *testing.T, n int) {
	t.Helper()
	waitForItems(t, run.remote, "customers", n, 60*time.Second, run.w)
}

// finish waits until every event is exported as mapped, the queue is
// empty and the DLQ too, and stops the worker (exit 0).
func (run *streamRun) finish(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "every customer exported", func() (bool, string) {
		run.w.RequireRunning(t)
		d := diffItems(run.expected, run.remote.Items("customers"))
		return d == "", d
	})
	waitQueueEmpty(t, run.b, run.s.Queue, 30*time.Second, func() { run.w.RequireRunning(t) })
	require.Equal(t, 0, dlqMessages(t, run.b, run.s.setup), "nothing dead-lettered")
	m, err := scrapeMetrics(workerHTTPAddr(t, run.w))
	require.NoError(t, err)
	retried := sumSamples(m, "revsync_messages_retried_total", nil)
	t.Logf("retries: %v; retry/deferral log lines: %d transient, %d exported",
		retried, countLogs(run.w.stderrPath, "message failed transiently: retrying after a delay", nil),
		countLogs(run.w.stderrPath, "message exported", nil))
	seen := map[string]bool{}
	for _, l := range logLines(run.w.stderrPath) {
		if l["msg"] == "message failed transiently: retrying after a delay" && len(seen) < 3 {
			if e := fmt.Sprint(l["error"]); !seen[e] {
				seen[e] = true
				t.Logf("retried after: %s", e)
			}
		}
	}
	require.Greater(t, retried, 0.0, "the fault made some exports fail and be retried")
	require.Equal(t, 0, run.w.Stop(t, 30*time.Second))
}

// TestPostgresBackendsTerminatedMidStream terminates the worker's
// PostgreSQL sessions three times while 91 events flow: the failed runs are
// transient and retried, and every event ends exported; nothing is
// dead-lettered and the work queue ends empty.
func TestPostgresBackendsTerminatedMidStream(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	remote := startMemoryRemote(t, "customers", "order_lines")
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	run := startStreamRun(t, svc, nw, b, remote)

	terminated := 0
	for _, after := range []int{10, 30, 50} {
		run.waitExported(t, after)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var n int
		err := nw.Pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()`, run.appName).Scan(&n)
		cancel()
		require.NoError(t, err)
		t.Logf("after %d exported: terminated %d sessions of the worker", after, n)
		terminated += n
	}
	require.Positive(t, terminated, "the worker had sessions to terminate")
	run.finish(t)
}

// TestPostgresRestartMidStream restarts PostgreSQL while 91 events flow:
// every session is cut and connecting is refused for a while; with a
// retry schedule of 200ms..4s and 8 attempts every event ends exported,
// nothing is dead-lettered and the work queue ends empty. PostgreSQL is up
// again at the end.
func TestPostgresRestartMidStream(t *testing.T) {
	// Restarting PostgreSQL disturbs every test using it: run alone.
	rabbittest.Exclusive(t)
	svc := requireServices(t)
	remote := startMemoryRemote(t, "customers", "order_lines")
	nw := loadNorthwind(t, svc.DatabaseURL)
	pg := localPostgres(t, svc.DatabaseURL) // after loadNorthwind: up again before its schema is dropped
	b := dialBroker(t, svc)
	run := startStreamRun(t, svc, nw, b, remote)

	run.waitExported(t, 15)
	start := time.Now()
	pg.Restart(t)
	t.Logf("PostgreSQL restarted in %s with %d customers exported", time.Since(start).Round(10*time.Millisecond),
		len(remote.Items("customers")))
	run.finish(t)
	require.True(t, pg.ready(), "PostgreSQL is up at the end")
}
