package rabbitmq_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest/observer"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
	"github.com/revsync/revsync/worker/workertest"
)

// exporter is a fake reader and writer counting what they saw by message.
type exporter struct {
	mu     sync.Mutex
	reads  map[string]int // by message ID
	writes map[string]int
	// write, when set, runs before a write is counted.
	write func(ctx context.Context, jc *jobs.Context) error
}

func newExporter() *exporter {
	return &exporter{reads: map[string]int{}, writes: map[string]int{}}
}

func (x *exporter) reader() jobs.Reader {
	return jobs.ReaderFunc(func(ctx context.Context, jc *jobs.Context) ([]jobs.Item, error) {
		x.mu.Lock()
		x.reads[jc.MessageID]++
		x.mu.Unlock()
		return workertest.EchoReader.Read(ctx, jc)
	})
}

func (x *exporter) writer() jobs.Writer {
	return jobs.WriterFunc(func(ctx context.Context, jc *jobs.Context, _ []jobs.Item) error {
		if x.write != nil {
			if err := x.write(ctx, jc); err != nil {
				return err
			}
		}
		x.mu.Lock()
		x.writes[jc.MessageID]++
		x.mu.Unlock()
		return nil
	})
}

func (x *exporter) totals() (reads, writes int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, n := range x.reads {
		reads += n
	}
	for _, n := range x.writes {
		writes += n
	}
	return reads, writes
}

func (e *env) worker(x *exporter, mod func(*worker.Config)) *worker.Worker {
	e.t.Helper()
	cfg := worker.Config{
		Catalog:           workertest.Catalog(e.t, x.reader(), x.writer()),
		Logger:            e.cfg.Logger,
		Concurrency:       2,
		Host:              "test-host",
		DeadLetterBackoff: worker.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(cfg)
	require.NoError(e.t, err)
	return w
}

const customerKey = workertest.Integration + "." + workertest.Customer

func TestTopologyIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dial()
	e.dial() // declared again, on another connection, while the first is open
	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n)
	n, _ = e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)
}

// TestTopologyMismatch is F12: a pre-existing queue or exchange with other
// arguments fails Dial with a TopologyError, and is left untouched.
func TestTopologyMismatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		prepare  func(e *env, ch *amqp.Channel) error
		queue    func(rabbitmq.Config) string
		exchange func(rabbitmq.Config) string
		argument string
	}{
		{
			name: "classic work queue",
			prepare: func(e *env, ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(e.cfg.Queue, true, false, false, false, amqp.Table{
					"x-dead-letter-exchange": e.cfg.DeadLetterExchange, "x-overflow": "reject-publish",
				})
				return err
			},
			queue:    func(c rabbitmq.Config) string { return c.Queue },
			argument: "x-queue-type",
		},
		{
			// The broker names the first argument it finds different,
			// here before x-queue-type; the error lists what revsync
			// declares.
			name: "classic work queue without arguments",
			prepare: func(e *env, ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(e.cfg.Queue, true, false, false, false, nil)
				return err
			},
			queue:    func(c rabbitmq.Config) string { return c.Queue },
			argument: "x-dead-letter-exchange",
		},
		{
			name: "quorum work queue without dead-letter exchange",
			prepare: func(e *env, ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(e.cfg.Queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
				return err
			},
			queue:    func(c rabbitmq.Config) string { return c.Queue },
			argument: "x-dead-letter-exchange",
		},
		{
			name: "classic dead-letter queue",
			prepare: func(e *env, ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(e.cfg.DeadLetterQueue, true, false, false, false, nil)
				return err
			},
			queue:    func(c rabbitmq.Config) string { return c.DeadLetterQueue },
			argument: "x-queue-type",
		},
		{
			name: "direct events exchange",
			prepare: func(e *env, ch *amqp.Channel) error {
				return ch.ExchangeDeclare(e.cfg.Exchange, amqp.ExchangeDirect, true, false, false, false, nil)
			},
			exchange: func(c rabbitmq.Config) string { return c.Exchange },
			argument: "type",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ch := e.channel()
			require.NoError(t, tt.prepare(e, ch))
			body := []byte("left alone")
			var queue string
			if tt.queue != nil {
				queue = tt.queue(e.cfg)
				require.NoError(t, ch.PublishWithContext(context.Background(), "", queue, false, false,
					amqp.Publishing{Body: body, MessageId: "keep-me"}))
				e.waitDepth(queue, 1)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := rabbitmq.Dial(ctx, e.cfg)
			require.Nil(t, c)
			var te *rabbitmq.TopologyError
			require.ErrorAs(t, err, &te)
			require.Equal(t, tt.argument, te.Argument)
			if tt.queue != nil {
				require.Equal(t, queue, te.Queue)
				require.Contains(t, err.Error(), `queue "`+queue+`"`)
			} else {
				require.Equal(t, tt.exchange(e.cfg), te.Exchange)
			}
			require.Contains(t, err.Error(), `"`+tt.argument+`"`)
			if tt.queue != nil && queue == e.cfg.Queue {
				require.Contains(t, err.Error(), "x-queue-type=quorum")
			}
			require.Contains(t, te.Reason, "PRECONDITION_FAILED")

			if tt.queue != nil {
				// Untouched: it still exists, holding its message, with
				// its old arguments (redeclaring them succeeds).
				got := e.drain(queue)
				require.Len(t, got, 1)
				require.Equal(t, body, got[0].Body)
				require.NoError(t, tt.prepare(e, e.channel()))
			} else {
				require.NoError(t, tt.prepare(e, e.channel()))
			}
		})
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.BindingKeys = []string{workertest.Integration + ".*"}
	c := e.dial()
	pub := c.Publisher()
	ctx := context.Background()

	body := workertest.CustomerBody("ALFKI")
	id := rabbitmq.NewMessageID()
	require.NoError(t, pub.Publish(ctx, customerKey, rabbitmq.EventPublishing(body, id)))
	got := e.drain(e.cfg.Queue)
	require.Len(t, got, 1)
	require.Equal(t, body, got[0].Body)
	require.Equal(t, id, got[0].MessageId)
	require.Equal(t, "application/json", got[0].ContentType)
	require.Equal(t, amqp.Persistent, got[0].DeliveryMode)

	// Unroutable: no binding takes "erp.customer"; the mandatory publish
	// is returned and that is an error.
	err := pub.Publish(ctx, "erp.customer", rabbitmq.EventPublishing(body, rabbitmq.NewMessageID()))
	require.ErrorIs(t, err, rabbitmq.ErrUnroutable)
	require.Contains(t, err.Error(), "NO_ROUTE")

	// A missing exchange closes the channel; the error says so and the
	// next publish uses a new channel.
	err = pub.PublishTo(ctx, e.cfg.Exchange+".missing", "x", rabbitmq.EventPublishing(body, "m"))
	require.ErrorIs(t, err, rabbitmq.ErrNotConfirmed)
	require.Contains(t, err.Error(), "NOT_FOUND")

	require.NoError(t, pub.Publish(ctx, customerKey, rabbitmq.EventPublishing(body, "m-2")))
	e.waitDepth(e.cfg.Queue, 1)

	// Concurrent publishes each get their own outcome.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			key := customerKey
			if i%2 == 1 {
				key = "erp.customer"
			}
			errs[i] = pub.Publish(ctx, key, rabbitmq.EventPublishing(body, rabbitmq.NewMessageID()))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 1 {
			require.ErrorIs(t, err, rabbitmq.ErrUnroutable, "publish %d", i)
		} else {
			require.NoError(t, err, "publish %d", i)
		}
	}
	e.waitDepth(e.cfg.Queue, 11)
}

// TestInvalidMessagesAreDeadLetteredOnce is F05.
func TestInvalidMessagesAreDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.dial()
	x := newExporter()
	pub := c.Publisher()
	ctx := context.Background()

	noID := rabbitmq.EventPublishing(workertest.CustomerBody("NOID"), "")
	require.NoError(t, pub.Publish(ctx, customerKey, noID))
	unknown := workertest.Body(workertest.Integration, "invoice", map[string]any{"id": "1"})
	require.NoError(t, pub.Publish(ctx, workertest.Integration+".invoice", rabbitmq.EventPublishing(unknown, "bad-route")))
	for i := range 10 {
		id := "valid-" + string(rune('a'+i))
		require.NoError(t, pub.Publish(ctx, customerKey, rabbitmq.EventPublishing(workertest.CustomerBody(id), id)))
	}

	stop := running(t, c, e.worker(x, nil))
	e.waitDepth(e.cfg.DeadLetterQueue, 2)
	require.Eventually(t, func() bool { _, w := x.totals(); return w == 10 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n, "every valid message acked")
	reads, writes := x.totals()
	require.Equal(t, 10, reads, "the bad ones never reach the reader")
	require.Equal(t, 10, writes)

	dead := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, dead, 2)
	byID := map[string]amqp.Delivery{}
	for _, d := range dead {
		byID[d.MessageId] = d
	}
	missing := byID[""]
	require.Equal(t, string(jobs.ClassInvalidMessage), missing.Headers[worker.HeaderErrorClass])
	require.Contains(t, missing.Headers[worker.HeaderError], "missing message_id")
	require.Equal(t, customerKey, missing.RoutingKey)
	route := byID["bad-route"]
	require.Equal(t, string(jobs.ClassUnknownRoute), route.Headers[worker.HeaderErrorClass])
	require.Contains(t, route.Headers[worker.HeaderError], `no connector "invoice"`)
	for _, d := range dead {
		require.Equal(t, int32(1), d.Headers[worker.HeaderAttempt])
		require.Equal(t, "test-host", d.Headers[worker.HeaderWorkerHost])
		require.Equal(t, e.cfg.Exchange, d.Headers[worker.HeaderOriginalExchange])
		require.Equal(t, d.RoutingKey, d.Headers[worker.HeaderOriginalRoutingKey])
		_, err := time.Parse(time.RFC3339, d.Headers[worker.HeaderFailedAt].(string))
		require.NoError(t, err)
	}
	// Logged once each, where decided: no redelivery loop.
	require.Equal(t, 2, e.logs.FilterMessage("message dead-lettered").Len())
	require.Equal(t, 10, e.logs.FilterMessage("message exported").Len())
}

// TestMalformedBodies is F06: each bad body lands in the dead-letter queue
// byte for byte, class invalid_message, without reaching the reader.
func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.dial()
	x := newExporter()
	pub := c.Publisher()
	ctx := context.Background()

	valid := workertest.CustomerBody("ALFKI")
	bad := map[string][]byte{
		"truncated": valid[:len(valid)/2],
		"oversize":  append([]byte(`{"pad":"`), append(bytes.Repeat([]byte("x"), 300000), `"}`...)...),
		"wrong-id":  workertest.Body(workertest.Integration, workertest.Customer, map[string]any{"customer_id": 42}),
	}
	for _, id := range []string{"truncated", "oversize", "wrong-id"} {
		require.NoError(t, pub.Publish(ctx, customerKey, rabbitmq.EventPublishing(bad[id], id)))
	}
	require.NoError(t, pub.Publish(ctx, customerKey, rabbitmq.EventPublishing(valid, "valid")))

	stop := running(t, c, e.worker(x, nil))
	e.waitDepth(e.cfg.DeadLetterQueue, 3)
	require.Eventually(t, func() bool { _, w := x.totals(); return w == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n)
	require.Equal(t, map[string]int{"valid": 1}, x.reads, "no SQL for the bad ones")
	dead := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, dead, 3)
	reasons := map[string]string{
		"truncated": "truncated JSON",
		"oversize":  "body is 300010 bytes, over the 262144-byte limit",
		"wrong-id":  `identifier column "customer_id": want a string, got a number`,
	}
	for _, d := range dead {
		require.True(t, bytes.Equal(bad[d.MessageId], d.Body), "%s: body byte for byte", d.MessageId)
		require.Equal(t, string(jobs.ClassInvalidMessage), d.Headers[worker.HeaderErrorClass])
		require.Contains(t, d.Headers[worker.HeaderError], reasons[d.MessageId])
		require.Equal(t, "application/json", d.ContentType)
	}
}

// TestDeadLetterPublishFailure is F08: a message with no headers and no
// properties fails; its dead-letter publish is returned unroutable (the
// dead-letter queue is unbound) for a while. The original stays
// unacknowledged, the publish is retried, and in the end the dead-letter
// queue holds it exactly once.
func TestDeadLetterPublishFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.dial()
	admin := e.channel()
	require.NoError(t, admin.QueueUnbind(e.cfg.DeadLetterQueue, "#", e.cfg.DeadLetterExchange, nil))

	body := workertest.CustomerBody("BARE")
	e.publish(customerKey, amqp.Publishing{Body: body}) // no properties, no headers
	x := newExporter()
	stop := running(t, c, e.worker(x, nil))

	failed := func() int {
		return e.logs.Filter(func(le observer.LoggedEntry) bool {
			return strings.HasPrefix(le.Message, "dead-letter publish failed") &&
				strings.Contains(le.ContextMap()["error"].(string), "unroutable")
		}).Len()
	}
	t.Cleanup(func() { dumpLogs(t, e) })
	require.Eventually(t, func() bool { return failed() >= 2 }, 10*time.Second, 5*time.Millisecond)
	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n, "not ready: held unacknowledged by the worker")
	if e.unacked(e.cfg.Queue) >= 0 {
		// rabbitmqctl reports quorum queue counters with a delay.
		require.Eventually(t, func() bool { return e.unacked(e.cfg.Queue) == 1 }, 15*time.Second, 100*time.Millisecond,
			"the original is not acked while its dead-letter copy fails")
	}
	n, _ = e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)

	require.NoError(t, admin.QueueBind(e.cfg.DeadLetterQueue, "#", e.cfg.DeadLetterExchange, false, nil))
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	require.NoError(t, stop())
	require.NoError(t, c.Close())

	n, _ = e.depth(e.cfg.Queue)
	require.Zero(t, n, "the original was acked once its copy was confirmed")
	dead := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, dead, 1, "exactly once")
	d := dead[0]
	require.Equal(t, body, d.Body)
	require.Equal(t, string(jobs.ClassInvalidMessage), d.Headers[worker.HeaderErrorClass])
	require.Contains(t, d.Headers[worker.HeaderError], "missing message_id")
	require.Equal(t, customerKey, d.Headers[worker.HeaderOriginalRoutingKey])
	require.Equal(t, amqp.Persistent, d.DeliveryMode)
	require.Equal(t, 1, e.logs.FilterMessage("message dead-lettered").Len())
	reads, _ := x.totals()
	require.Zero(t, reads)
}

// TestShutdown is F13: consuming stops at once, the two in flight finish
// and are acked, the three received but not started go back to the queue.
func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.Prefetch = 5
	c := e.dial()
	x := newExporter()
	entered := make(chan string, 5)
	release := make(chan struct{})
	x.write = func(ctx context.Context, jc *jobs.Context) error {
		entered <- jc.MessageID
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range 5 {
		id := "m-" + string(rune('1'+i))
		require.NoError(t, c.Publisher().Publish(context.Background(), customerKey,
			rabbitmq.EventPublishing(workertest.CustomerBody(id), id)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, e.worker(x, func(c *worker.Config) { c.Concurrency = 2 })) }()
	<-entered
	<-entered

	cancel()
	// The three not started go back to the queue while the two still run.
	e.waitDepth(e.cfg.Queue, 3)
	// Consuming was cancelled at once: a new message is not delivered,
	// although the prefetch window has room. (The queue's consumer count
	// does not show it: a quorum queue keeps a cancelled consumer until
	// its messages are settled.)
	require.NoError(t, c.Publisher().Publish(context.Background(), customerKey,
		rabbitmq.EventPublishing(workertest.CustomerBody("late"), "late")))
	e.waitDepth(e.cfg.Queue, 4)
	select {
	case err := <-done:
		t.Fatalf("Run returned before the in-flight messages finished: %v", err)
	default:
	}
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, c.Close())

	m, _ := e.depth(e.cfg.Queue)
	require.Equal(t, 4, m, "the two finished were acked; the three others and the late one are in the queue")
	n, _ := e.depth(e.cfg.DeadLetterQueue)
	require.Zero(t, n)
	_, writes := x.totals()
	require.Equal(t, 2, writes, "the remote saw exactly two requests")
	require.Len(t, entered, 0)
}

// TestDeliveryLimit: a message redelivered more than DeliveryLimit times
// (the worker crashing on it, say) is dead-lettered by the queue itself.
func TestDeliveryLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.DeliveryLimit = 2
	e.dial()
	e.publish(customerKey, rabbitmq.EventPublishing(workertest.CustomerBody("LOOP"), "loop"))
	ch := e.channel()
	require.Eventually(t, func() bool {
		d, ok, err := ch.Get(e.cfg.Queue, false)
		require.NoError(t, err)
		if ok {
			require.NoError(t, d.Nack(false, true))
		}
		n, _ := e.depth(e.cfg.DeadLetterQueue)
		return n == 1
	}, 10*time.Second, 10*time.Millisecond)
	n, _ := e.depth(e.cfg.Queue)
	require.Zero(t, n)
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := rabbitmq.Dial(ctx, rabbitmq.Config{})
	require.ErrorContains(t, err, "Config.URL is required")
	_, err = rabbitmq.Dial(ctx, rabbitmq.Config{URL: "amqp://guest:secret@127.0.0.1:5672/", Prefetch: -1})
	require.ErrorContains(t, err, "Config.Prefetch must be positive")

	// Nothing listens on port 1: Dial retries within the reconnect budget,
	// then fails naming the broker without the password.
	start := time.Now()
	_, err = rabbitmq.Dial(ctx, rabbitmq.Config{
		URL: "amqp://guest:secret@127.0.0.1:1/", DialTimeout: 2 * time.Second,
		ReconnectTimeout: 300 * time.Millisecond, ReconnectBackoff: worker.Backoff{Initial: 50 * time.Millisecond},
	})
	require.ErrorIs(t, err, rabbitmq.ErrUnreachable)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Contains(t, err.Error(), "127.0.0.1:1")
	require.Contains(t, err.Error(), "connection refused")
	require.NotContains(t, err.Error(), "secret")
	require.False(t, errors.As(err, new(*rabbitmq.TopologyError)))

	// Without a budget it waits for the broker as long as ctx allows.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = rabbitmq.Dial(cctx, rabbitmq.Config{URL: "amqp://guest:secret@127.0.0.1:1/",
		ReconnectBackoff: worker.Backoff{Initial: 50 * time.Millisecond}})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, rabbitmq.ErrUnreachable)
	require.Contains(t, err.Error(), "connection refused")
	require.NotContains(t, err.Error(), "secret")

	// A refused login is a configuration error: not retried.
	u, err := url.Parse(brokerURL(t))
	require.NoError(t, err)
	u.User = url.UserPassword("guest", "wrong-secret")
	start = time.Now()
	_, err = rabbitmq.Dial(ctx, rabbitmq.Config{URL: u.String()})
	require.ErrorIs(t, err, amqp.ErrCredentials)
	require.Less(t, time.Since(start), 5*time.Second)
	require.NotContains(t, err.Error(), "wrong-secret")
}
