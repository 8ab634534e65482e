package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

// TestOlderExportNeverOverwritesNewer is F14: three replicas export five
// rapid updates (v1..v5) of one customer, interleaved with events of other
// customers, to a remote that takes 3 s over the first request it gets —
// the export of v1. Without the per-entity lock, the exports of v2..v5 run
// on the other replicas meanwhile, land first, and the slow v1 lands last:
// the remote goes back to v1. With it they wait their turn, read the row
// again and write v5 after v1. In the end the remote holds v5, its write
// log for the customer never goes backwards, every event was acknowledged
// and the DLQ is empty.
func TestOlderExportNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	remote := startMemoryRemote(t, "customers", "order_lines")
	const slow = 3 * time.Second
	remote.SetFault(func(r seenRequest) remoteFault {
		if r.Seq == 1 {
			return remoteFault{Delay: slow}
		}
		return remoteFault{}
	})
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	cfg := c.Write(t)

	ids := nw.CustomerIDs(t)
	target, others := ids[0], ids[1:11]
	// The remote already has the customer, so the slow request is the PUT
	// that carries v1 itself.
	nw.Exec(t, `UPDATE `+nw.Table("customers")+` SET contact_name = 'v0' WHERE customer_id = $1`, target)
	remote.Seed(t, "customers", map[string]any{"id": target, "contact": map[string]any{"name": "v0"}})

	const replicas = 3
	var workers []*worker
	for range replicas {
		workers = append(workers, s.StartWorker(t, cfg))
	}
	waitConsumers(t, b, s.Queue, replicas, workers...)

	var published []entityEvent
	n := 0
	publish := func(customerID string) {
		n++
		e := customerEvent(c.Integration(), customerID, fmt.Sprintf("f14-%02d-%s-%s", n, customerID, s.Prefix))
		b.Publish(t, s.Exchange, e.RoutingKey(), e.Publishing(t))
		published = append(published, e)
	}
	setVersion := func(v int) {
		require.EqualValues(t, 1, nw.Exec(t, `UPDATE `+nw.Table("customers")+` SET contact_name = $1 WHERE customer_id = $2`,
			fmt.Sprintf("v%d", v), target))
	}

	// v1, then wait until its export is at the remote and stuck there, so
	// that the slow request is the one of v1 whichever replica took it.
	setVersion(1)
	publish(target)
	waitFor(t, 20*time.Second, "the export of v1 at the remote", func() (bool, string) {
		reqs := remote.Requests(nil)
		return len(reqs) > 0, "no request yet"
	})
	first := remote.Requests(nil)[0]
	require.Equal(t, "PUT", first.Method, "the first request")
	require.Equal(t, target, first.ID, "the first request is the export of v1")
	require.Equal(t, 1, contactVersion(first.Body), "the first request carries v1: %s", first.Body)

	// v2..v5 in quick succession, each update followed at once by its
	// event, other customers' events in between — all while v1 hangs.
	start := time.Now()
	for v := 2; v <= 5; v++ {
		setVersion(v)
		publish(target)
		publish(others[2*(v-2)])
		publish(others[2*(v-2)+1])
	}
	for _, id := range others[8:] {
		publish(id)
	}
	t.Logf("v2..v5 and %d other events published %s after the slow request began (it takes %s)",
		len(published)-5, time.Since(start).Round(time.Millisecond), slow)

	// Every event acknowledged, by whichever replica.
	addrs := make([]string, replicas)
	for i, w := range workers {
		addrs[i] = workerHTTPAddr(t, w)
	}
	perReplica := make([]float64, replicas)
	waitFor(t, 30*time.Second, fmt.Sprintf("%d events acknowledged", len(published)), func() (bool, string) {
		var total float64
		for i, addr := range addrs {
			workers[i].RequireRunning(t)
			m, err := scrapeMetrics(addr)
			if err != nil {
				return false, err.Error()
			}
			perReplica[i] = sumSamples(m, "revsync_messages_acked_total", nil)
			total += perReplica[i]
		}
		return total >= float64(len(published)), fmt.Sprintf("%v acknowledged", perReplica)
	})
	t.Logf("acknowledged per replica: %v", perReplica)
	waitSettled(t, b, s, workers...)
	require.Equal(t, float64(len(published)), perReplica[0]+perReplica[1]+perReplica[2], "acknowledged, once each")
	require.Equal(t, 0, dlqMessages(t, b, s), "DLQ")

	// The remote ends at v5, and its write log for the customer never went
	// backwards.
	item, _ := remote.Items("customers")[target].(map[string]any)
	contact, _ := item["contact"].(map[string]any)
	var versions []int
	for _, w := range remote.Writes("customers", target) {
		versions = append(versions, contactVersion(w.Body))
	}
	require.Equal(t, "v5", contact["name"], "the remote's state of %s; writes in the order they landed: %v", target, versions)
	require.NotEmpty(t, versions)
	require.Equal(t, 1, versions[0], "the slow write of v1 landed first; writes in order: %v", versions)
	for i := 1; i < len(versions); i++ {
		require.GreaterOrEqual(t, versions[i], versions[i-1],
			"write %d of %s landed v%d after v%d: an older export overwrote a newer one (writes in order: %v)",
			i+1, target, versions[i], versions[i-1], versions)
	}

	// The other customers were exported as they are.
	want := nw.ExpectedCustomers(t)
	got := remote.Items("customers")
	for _, id := range others {
		require.Equal(t, want[id], got[id], "customer %s at the remote", id)
	}
	for i, w := range workers {
		require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code of replica %d after SIGTERM", i+1)
	}
}

// TestRemoteOutageOpensBreaker is the remote outage of issue 3: integration
// crm_a's remote refuses connections while 30 of its events and 30 of
// crm_b's (whose remote is up) arrive. crm_a's breaker opens (metric and
// log line) and its events wait in the delay queues without spending their
// attempts, so nothing reaches the DLQ although max_attempts is 5; crm_b's
// events are exported during the outage. Once the remote is back, a probe
// closes the breaker and every crm_a event is exported: DLQ 0, Q 0/0.
func TestRemoteOutageOpensBreaker(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	remoteA := startMemoryRemote(t, "customers", "order_lines")
	remoteB := startMemoryRemote(t, "customers", "order_lines")
	remoteA.Down() // connection refused until brought back
	s := newSetup(t, svc, b, nw.Schema, remoteA.URL)
	c := newConfig(s)
	c.Retry = "{schedule: [200ms, 500ms], max_attempts: 5}"
	c.Breaker = "{window: 30s, window_calls: 10, min_calls: 4, failure_ratio: 0.5, cool_down: 2s}"
	crmA, crmB := scopedName(s, "crm_a"), scopedName(s, "crm_b")
	c.Integrations = []integrationConfig{
		{Name: crmA, RemoteURL: remoteA.URL, Timeout: "2s"},
		{Name: crmB, RemoteURL: remoteB.URL, Timeout: "2s"},
	}
	w := s.StartWorker(t, c.Write(t))
	addr := workerHTTPAddr(t, w)
	waitConsumers(t, b, s.Queue, 1, w)

	ids := nw.CustomerIDs(t)[:30]
	var events []entityEvent
	for i, id := range ids {
		events = append(events,
			customerEvent(crmA, id, fmt.Sprintf("outage-a-%02d-%s", i, s.Prefix)),
			customerEvent(crmB, id, fmt.Sprintf("outage-b-%02d-%s", i, s.Prefix)))
	}
	start := time.Now()
	publishEvents(t, b, s.Exchange, events)

	want := nw.ExpectedCustomers(t)
	wantIDs := map[string]any{}
	for _, id := range ids {
		wantIDs[id] = want[id]
	}
	// During the outage: the DLQ stays empty at every look.
	outage := func(what string, timeout time.Duration, cond func(m []metricSample) (bool, string)) {
		t.Helper()
		waitFor(t, timeout, what, func() (bool, string) {
			w.RequireRunning(t)
			require.Equal(t, 0, dlqMessages(t, b, s), "DLQ during the outage (%s)", what)
			m, err := scrapeMetrics(addr)
			if err != nil {
				return false, err.Error()
			}
			require.Zero(t, sumSamples(m, "revsync_breaker_state", map[string]string{"integration": crmB}),
				"crm_b's breaker stays closed")
			return cond(m)
		})
	}
	outage("crm_a's breaker open", 20*time.Second, func(m []metricSample) (bool, string) {
		st := sumSamples(m, "revsync_breaker_state", map[string]string{"integration": crmA})
		return st == 2, fmt.Sprintf("revsync_breaker_state{integration=%q} %v", crmA, st)
	})
	t.Logf("crm_a's breaker open %s after publishing", time.Since(start).Round(time.Millisecond))
	require.Contains(t, w.Stderr(t), `"msg":"circuit breaker opened: recent calls failed; deferring the integration's messages for the cool-down","integration":"`+crmA+`"`)
	outage("crm_b's events exported while crm_a is down", 30*time.Second, func([]metricSample) (bool, string) {
		d := diffItems(wantIDs, remoteB.Items("customers"))
		return d == "", d
	})
	// Stay down through two failed probes: the breaker reopens each time,
	// and messages keep waiting rather than failing.
	outage("two failed probes of crm_a", 20*time.Second, func([]metricSample) (bool, string) {
		n := strings.Count(w.Stderr(t), "circuit breaker opened: the probe failed")
		return n >= 2, fmt.Sprintf("%d failed probes", n)
	})
	m, err := scrapeMetrics(addr)
	require.NoError(t, err)
	deferred := sumSamples(m, "revsync_messages_retried_total", map[string]string{"integration": crmA, "reason": "breaker_open"})
	require.Positive(t, deferred, "crm_a's messages were deferred by the breaker")
	require.Zero(t, sumSamples(m, "revsync_messages_dead_lettered_total", nil), "nothing dead-lettered during the outage")
	require.Zero(t, sumSamples(m, "revsync_messages_acked_total", map[string]string{"integration": crmA}), "crm_a exported nothing while down")
	require.Equal(t, float64(len(ids)), sumSamples(m, "revsync_messages_acked_total", map[string]string{"integration": crmB}),
		"crm_b's events acknowledged during the outage")
	require.Empty(t, remoteA.Requests(nil), "crm_a's remote saw nothing while down")
	t.Logf("outage lasted %s: %v deferrals, %v transient retries of crm_a", time.Since(start).Round(time.Millisecond), deferred,
		sumSamples(m, "revsync_messages_retried_total", map[string]string{"integration": crmA, "reason": "transient"}))

	// Recovery.
	remoteA.Up(t)
	recovered := time.Now()
	waitFor(t, 30*time.Second, "every crm_a event exported after the outage", func() (bool, string) {
		w.RequireRunning(t)
		d := diffItems(wantIDs, remoteA.Items("customers"))
		return d == "", d
	})
	t.Logf("crm_a caught up %s after its remote came back", time.Since(recovered).Round(time.Millisecond))
	waitSettled(t, b, s, w)
	require.Equal(t, 0, dlqMessages(t, b, s), "DLQ after the outage")
	waitFor(t, 10*time.Second, "every event acknowledged and crm_a's breaker closed", func() (bool, string) {
		m, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		a := sumSamples(m, "revsync_messages_acked_total", map[string]string{"integration": crmA})
		bb := sumSamples(m, "revsync_messages_acked_total", map[string]string{"integration": crmB})
		st := sumSamples(m, "revsync_breaker_state", map[string]string{"integration": crmA})
		return a == float64(len(ids)) && bb == float64(len(ids)) && st == 0,
			fmt.Sprintf("acked crm_a %v crm_b %v, crm_a breaker %v", a, bb, st)
	})
	require.Contains(t, w.Stderr(t), "circuit breaker closed: the probe did not fail transiently")
	require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code after SIGTERM")
}

// TestRetriesExhaustedAndRetryAfter is F09 through the real binary with
// max_attempts 4 and the schedule 100ms, 200ms, 400ms: the remote answers
// 503 to one customer always and 429 with Retry-After: 1 to another once.
// The first is tried exactly 4 times, each retry no sooner than its
// scheduled delay, then dead-lettered with class retries_exhausted and
// x-revsync-attempt 4. The second is exported on its second attempt, no
// sooner than a second after its first. Other events flow meanwhile.
func TestRetriesExhaustedAndRetryAfter(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	remote := startMemoryRemote(t, "customers", "order_lines")
	ids := nw.CustomerIDs(t)
	failing, limited, others := ids[0], ids[1], ids[2:7]
	limitedSeen := 0 // the remote calls the fault function under its lock
	remote.SetFault(func(r seenRequest) remoteFault {
		switch {
		case r.Collection == "customers" && r.ID == failing:
			return remoteFault{Status: 503}
		case r.Collection == "customers" && r.ID == limited:
			if limitedSeen++; limitedSeen == 1 {
				return remoteFault{Status: 429, RetryAfter: "1"}
			}
		}
		return remoteFault{}
	})
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	c.Retry = "{schedule: [100ms, 200ms, 400ms], jitter: -1, max_attempts: 4}" // no jitter: the delays are floors
	// The breaker stays closed (5 transient failures among 11 calls would
	// open it at the default min_calls of 10, deferring the 429 customer
	// for the 30 s cool-down). It still declares the cool-down's delay
	// queue, the one long enough for Retry-After: 1.
	c.Breaker = "{min_calls: 20}"
	w := s.StartWorker(t, c.Write(t))
	addr := workerHTTPAddr(t, w)
	waitConsumers(t, b, s.Queue, 1, w)

	failingEvent := customerEvent(c.Integration(), failing, "f09-503-"+s.Prefix)
	events := []entityEvent{failingEvent, customerEvent(c.Integration(), limited, "f09-429-"+s.Prefix)}
	for i, id := range others {
		events = append(events, customerEvent(c.Integration(), id, fmt.Sprintf("f09-ok-%d-%s", i, s.Prefix)))
	}
	publishEvents(t, b, s.Exchange, events)

	waitFor(t, 30*time.Second, "the 503 customer in the DLQ", func() (bool, string) {
		w.RequireRunning(t)
		n := dlqMessages(t, b, s)
		return n >= 1, fmt.Sprintf("%d in the DLQ, %d requests for it", n, len(remote.Requests(forItem("customers", failing))))
	})
	want := nw.ExpectedCustomers(t)
	wantItems := map[string]any{limited: want[limited]}
	for _, id := range others {
		wantItems[id] = want[id]
	}
	waitFor(t, 30*time.Second, "the other customers exported", func() (bool, string) {
		w.RequireRunning(t)
		d := diffItems(wantItems, remote.Items("customers"))
		return d == "", d
	})
	waitSettled(t, b, s, w)

	// The 503 one: exactly 4 requests, spaced at least by the schedule.
	reqs := remote.Requests(forItem("customers", failing))
	require.Len(t, reqs, 4, "requests the remote saw for %s (max_attempts 4)", failing)
	schedule := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	var gaps []time.Duration
	for i := 1; i < len(reqs); i++ {
		gaps = append(gaps, reqs[i].At.Sub(reqs[i-1].At))
	}
	t.Logf("503 customer: gaps between attempts %v (schedule %v)", gaps, schedule)
	for i, gap := range gaps {
		require.GreaterOrEqual(t, gap, schedule[i], "attempt %d came %s after attempt %d; the schedule says %s", i+2, gap, i+1, schedule[i])
	}
	dl := b.Drain(t, s.DLQ)
	require.Len(t, dl, 1, "DLQ")
	d := dl[0]
	require.Equal(t, failingEvent.MessageID, d.MessageId)
	require.Equal(t, failingEvent.RoutingKey(), d.RoutingKey, "dead-lettered with the original routing key")
	require.Equal(t, failingEvent.RoutingKey(), d.Headers["x-revsync-original-routing-key"])
	require.Equal(t, "retries_exhausted", d.Headers["x-revsync-error-class"], "x-revsync-error: %v", d.Headers["x-revsync-error"])
	require.EqualValues(t, 4, headerInt(t, d.Headers, "x-revsync-attempt"), "the worker's own attempt count")
	require.Contains(t, d.Headers["x-revsync-error"], "503")

	// The 429 one: its second request no sooner than Retry-After.
	lreqs := remote.Requests(forItem("customers", limited))
	require.GreaterOrEqual(t, len(lreqs), 2, "requests for %s", limited)
	require.Equal(t, 429, lreqs[0].Status)
	wait := lreqs[1].At.Sub(lreqs[0].At)
	t.Logf("429 customer: second attempt %s after the first", wait)
	require.GreaterOrEqual(t, wait, time.Second, "Retry-After: 1 is a floor on the next attempt")

	m, err := scrapeMetrics(addr)
	require.NoError(t, err)
	require.Equal(t, 1.0, sumSamples(m, "revsync_messages_dead_lettered_total", map[string]string{"class": "retries_exhausted"}))
	require.Equal(t, 1.0, sumSamples(m, "revsync_messages_dead_lettered_total", nil))
	require.Equal(t, float64(len(events)-1), sumSamples(m, "revsync_messages_acked_total", nil))
	require.Equal(t, 4.0, sumSamples(m, "revsync_messages_retried_total", map[string]string{"reason": "transient"}),
		"3 retries of the 503 customer and 1 of the 429 one")
	require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code after SIGTERM")
}

// TestRetryAfterBeyondLongestDelay checks that a remote's Retry-After is a
// floor on the next attempt even when it is longer than every delay queue:
// schedule 100ms, 200ms, 400ms and no breaker (so no cool-down queue),
// and a remote answering 429 with Retry-After: 1 once. The second attempt
// must come at least a second after the first.
func TestRetryAfterBeyondLongestDelay(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	remote := startMemoryRemote(t, "customers", "order_lines")
	limited := nw.CustomerIDs(t)[0]
	remote.SetFault(func(r seenRequest) remoteFault {
		if r.Seq == 1 {
			return remoteFault{Status: 429, RetryAfter: "1"}
		}
		return remoteFault{}
	})
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	c.Retry = "{schedule: [100ms, 200ms, 400ms], jitter: -1, max_attempts: 4}"
	c.Breaker = "{enabled: false}"
	w := s.StartWorker(t, c.Write(t))
	waitConsumers(t, b, s.Queue, 1, w)

	publishEvents(t, b, s.Exchange, []entityEvent{customerEvent(c.Integration(), limited, "retry-after-"+s.Prefix)})
	want := nw.ExpectedCustomers(t)
	waitFor(t, 30*time.Second, "the customer exported", func() (bool, string) {
		w.RequireRunning(t)
		d := diffItems(map[string]any{limited: want[limited]}, remote.Items("customers"))
		return d == "", d
	})
	waitSettled(t, b, s, w)
	require.Equal(t, 0, dlqMessages(t, b, s), "DLQ")
	reqs := remote.Requests(forItem("customers", limited))
	require.GreaterOrEqual(t, len(reqs), 2)
	require.Equal(t, 429, reqs[0].Status)
	wait := reqs[1].At.Sub(reqs[0].At)
	t.Logf("second attempt %s after the first (Retry-After: 1; longest delay queue 400ms)", wait)
	require.GreaterOrEqual(t, wait, time.Second,
		"Retry-After: 1 is a floor on the next attempt, whatever the delay queues; here the wanted 1s went to the longest delay queue (400ms) and was cut to it")
	require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code after SIGTERM")
}

// TestBoundedPrefetch is F04 scaled for CI: 3000 events wait in the queue
// before the worker starts; the remote takes 5 ms per request; prefetch 10,
// concurrency 4. At every sample the worker holds at most 10
// unacknowledged messages (the broker's view of its channel and of the
// queue) and handles at most 4 (its in-flight gauge); its resident memory
// does not keep growing; all 3000 are exported. A prefetch of 0 is refused
// at start-up. REVSYNC_SOAK=1 runs the full size: 50 000 events, 50 ms.
func TestBoundedPrefetch(t *testing.T) {
	t.Parallel()
	t.Run("zero prefetch refused", func(t *testing.T) {
		t.Parallel()
		rabbittest.Shared(t)
		svc := requireServices(t)
		b := dialBroker(t, svc)
		s := newSetup(t, svc, b, "public", "http://127.0.0.1:9")
		c := newConfig(s)
		c.Prefetch = 0
		res := s.Run(t, "worker", "--config", c.Write(t))
		require.Equal(t, 78, res.Code, "exit code of a worker configured with prefetch 0\nstderr:\n%s", res.Stderr)
		require.Contains(t, res.Stderr, "amqp.prefetch", "the error names the key")
		_, err := b.Inspect(s.Queue)
		require.Error(t, err, "refused before declaring anything")
	})
	t.Run("3000 events", func(t *testing.T) {
		t.Parallel()
		runPrefetchLoad(t, 3000, 5*time.Millisecond, 2*time.Minute)
	})
	t.Run("soak 50000 events", func(t *testing.T) {
		if os.Getenv("REVSYNC_SOAK") != "1" {
			t.Skip("set REVSYNC_SOAK=1 (and go test -timeout 60m) to run F04 at full size: 50 000 events, 50 ms remote, about 15 minutes")
		}
		if d, ok := t.Deadline(); ok && time.Until(d) < 45*time.Minute {
			t.Fatalf("the soak needs about 15 minutes, up to 40: run it with go test -timeout 60m (%s left)", time.Until(d).Round(time.Second))
		}
		runPrefetchLoad(t, 50000, 50*time.Millisecond, 40*time.Minute)
	})
}

// runPrefetchLoad queues n events, starts a worker with prefetch 10 and
// concurrency 4 against a remote taking latency per request, samples it
// until all n are acknowledged (within timeout), and checks the samples.
func runPrefetchLoad(t *testing.T, n int, latency, timeout time.Duration) {
	const prefetch, concurrency = 10, 4
	rabbittest.Shared(t)
	svc := requireServices(t)
	require.NotNil(t, svc.rabbitmqctl, "F04 needs rabbitmqctl to see unacknowledged messages")
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	remote := startMemoryRemote(t, "customers", "order_lines")
	remote.SetLatency(latency)
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	c.Prefetch, c.Concurrency = prefetch, concurrency
	cfg := c.Write(t)

	// Queue the events before any worker runs: revsync publish declares
	// the topology and sends the first (under an id of its own), then the
	// rest go in pipelined.
	lines := nw.OrderLineKeys(t, 5000)
	require.NotEmpty(t, lines)
	events := make([]entityEvent, n)
	for i := range events {
		k := lines[i%len(lines)]
		events[i] = entityEvent{Integration: c.Integration(), Connector: "order_line",
			ID: map[string]any{"order_id": k.OrderID, "product_id": k.ProductID}, MessageID: fmt.Sprintf("f04-%d-%s", i, s.Prefix)}
	}
	s.MustRun(t, "publish", "--config", cfg, "--integration", c.Integration(), "--connector", "order_line",
		"--id", fmt.Sprintf("order_id=%d", lines[0].OrderID), "--id", fmt.Sprintf("product_id=%d", lines[0].ProductID))
	publishEvents(t, b, s.Exchange, events[1:])
	q, err := b.Inspect(s.Queue)
	require.NoError(t, err)
	require.Equal(t, n, q.Messages, "events queued before the worker starts")

	start := time.Now()
	w := s.StartWorker(t, cfg)
	addr := workerHTTPAddr(t, w)
	pid := w.cmd.Process.Pid

	// Samplers: the worker's memory and in-flight gauge every 100ms; the
	// broker's view (rabbitmqctl, about a second per call) as often as it
	// answers.
	type memSample struct {
		at  time.Duration
		rss int64
	}
	var (
		mu          sync.Mutex
		mem         []memSample
		maxInFlight float64
		acked       float64
		chanSamples []int // the consuming channel's unacknowledged count
		chanBusy    int   // samples with work in progress on the channel
		qSamples    []int // the queue's unacknowledged count (lags)
		prefetches  = map[int]bool{}
		sampleErrs  []string
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			rss, err := processRSS(pid)
			m, merr := scrapeMetrics(addr)
			mu.Lock()
			if err == nil {
				mem = append(mem, memSample{time.Since(start), rss})
			}
			if merr == nil {
				maxInFlight = max(maxInFlight, sumSamples(m, "revsync_messages_in_flight", nil))
				acked = sumSamples(m, "revsync_messages_acked_total", nil)
			}
			mu.Unlock()
		}
	})
	wg.Go(func() {
		var channels map[string]bool // the consuming channels' pids
		for round := 0; ; round++ {
			select {
			case <-done:
				return
			default:
			}
			var unacked, pf []int
			var err error
			if channels == nil {
				channels, err = consumerChannelPIDs(b, s.Queue)
			}
			if err == nil {
				unacked, pf, err = channelCounts(b, channels)
			}
			var qs []queueCounts
			var qerr error
			if round%4 == 3 { // the queue's statistics lag: look less often
				qs, qerr = listQueues(b, s.Queue)
			}
			mu.Lock()
			switch {
			case err != nil:
				sampleErrs = append(sampleErrs, err.Error())
				channels = nil
			case len(unacked) == 0:
				sampleErrs = append(sampleErrs, "no consuming channel")
				channels = nil
			default:
				for i, u := range unacked {
					chanSamples = append(chanSamples, u)
					prefetches[pf[i]] = true
					if u > 0 {
						chanBusy++
					}
				}
			}
			if qerr == nil {
				for _, q := range qs {
					if q.Name == s.Queue {
						qSamples = append(qSamples, q.Unacked)
					}
				}
			}
			mu.Unlock()
		}
	})
	stopSampling := sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stopSampling)

	waitFor(t, timeout, fmt.Sprintf("%d events acknowledged", n), func() (bool, string) {
		w.RequireRunning(t)
		mu.Lock()
		defer mu.Unlock()
		return acked >= float64(n), fmt.Sprintf("%v acknowledged", acked)
	})
	elapsed := time.Since(start)
	stopSampling()
	waitSettled(t, b, s, w)
	require.Equal(t, 0, dlqMessages(t, b, s), "DLQ")

	// Every distinct order line is at the remote, as mapped.
	keys := lines[:min(n, len(lines))]
	require.Empty(t, diffItems(nw.ExpectedOrderLines(t, keys), remote.Items("order_lines")), "order lines at the remote")

	t.Logf("%d events in %s; channel unacked samples %d (%d with work in progress, max %d), queue unacked samples %v, max in flight %v, prefetch seen %v, sampling errors %d",
		n, elapsed.Round(time.Millisecond), len(chanSamples), chanBusy, maxOf(chanSamples), qSamples, maxInFlight, keysOf(prefetches), len(sampleErrs))
	require.NotEmpty(t, chanSamples, "samples of the consuming channel (errors: %v)", sampleErrs)
	require.Positive(t, chanBusy, "samples taken while the channel held messages")
	require.Equal(t, []int{prefetch}, keysOf(prefetches), "the consuming channel's prefetch")
	for i, u := range chanSamples {
		require.LessOrEqual(t, u, prefetch, "channel sample %d: %d unacknowledged with prefetch %d", i, u, prefetch)
	}
	for i, u := range qSamples {
		require.LessOrEqual(t, u, prefetch, "queue sample %d: %d unacknowledged with prefetch %d", i, u, prefetch)
	}
	require.LessOrEqual(t, maxInFlight, float64(concurrency), "messages in flight at once")
	require.Positive(t, maxInFlight)

	// Memory: no growth without bound. The largest RSS of the second half
	// of the run is at most twice that of the first half.
	require.GreaterOrEqual(t, len(mem), 10, "RSS samples")
	half := len(mem) / 2
	firstMax, secondMax := int64(0), int64(0)
	for i, m := range mem {
		if i < half {
			firstMax = max(firstMax, m.rss)
		} else {
			secondMax = max(secondMax, m.rss)
		}
	}
	t.Logf("RSS: max %d KiB over the first half (%d samples), %d KiB over the second", firstMax>>10, half, secondMax>>10)
	require.LessOrEqual(t, secondMax, 2*firstMax, "RSS keeps growing: %d KiB in the first half, %d KiB in the second", firstMax>>10, secondMax>>10)

	require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code after SIGTERM")
}

// consumerChannelPIDs returns the pids of the channels consuming queue
// (rabbitmqctl list_consumers).
func consumerChannelPIDs(b *broker, queue string) (map[string]bool, error) {
	var rows []map[string]any
	if err := rabbitmqctlList(b, &rows, "list_consumers", "queue_name", "channel_pid"); err != nil {
		return nil, err
	}
	pids := map[string]bool{}
	for _, c := range rows {
		if c["queue_name"] == queue {
			pids[fmt.Sprint(c["channel_pid"])] = true
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no consumer on %s", queue)
	}
	return pids, nil
}

// channelCounts returns the unacknowledged count and the prefetch of each
// of the channels, live from the channel processes (rabbitmqctl
// list_channels); a channel that is gone is left out.
func channelCounts(b *broker, pids map[string]bool) (unacked, prefetch []int, err error) {
	var rows []map[string]any
	if err := rabbitmqctlList(b, &rows, "list_channels", "pid", "messages_unacknowledged", "prefetch_count"); err != nil {
		return nil, nil, err
	}
	for _, ch := range rows {
		if pids[fmt.Sprint(ch["pid"])] {
			u, _ := ch["messages_unacknowledged"].(float64)
			p, _ := ch["prefetch_count"].(float64)
			unacked, prefetch = append(unacked, int(u)), append(prefetch, int(p))
		}
	}
	return unacked, prefetch, nil
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func keysOf(set map[int]bool) []int {
	var out []int
	for k := range set {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// contactVersion returns N of a customer body whose contact name is "vN",
// or -1.
func contactVersion(body json.RawMessage) int {
	var item struct {
		Contact struct {
			Name *string `json:"name"`
		} `json:"contact"`
	}
	if json.Unmarshal(body, &item) != nil || item.Contact.Name == nil || !strings.HasPrefix(*item.Contact.Name, "v") {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(*item.Contact.Name, "v"))
	if err != nil {
		return -1
	}
	return n
}
