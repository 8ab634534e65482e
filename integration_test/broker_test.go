package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// broker is a test's own connection to RabbitMQ, for inspecting queues and
// publishing raw messages.
type broker struct {
	svc  services
	conn *amqp.Connection
}

// dialBroker connects to RabbitMQ; the connection it closes at cleanup is
// the current one, after any redial.
func dialBroker(t *testing.T, svc services) *broker {
	t.Helper()
	b := &broker{svc: svc, conn: dialAMQP(t, svc.AMQPURL)}
	t.Cleanup(func() { _ = b.conn.Close() })
	return b
}

func dialAMQP(t *testing.T, amqpURL string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	require.NoError(t, err, "connect to RabbitMQ")
	return conn
}

// redial replaces the test's broker connection, lost when the broker
// application stopped.
func (b *broker) redial(t *testing.T) {
	t.Helper()
	old := b.conn
	b.conn = dialAMQP(t, b.svc.AMQPURL)
	_ = old.Close()
}

// withChannel runs f on a fresh channel: a channel error (404, 406) closes
// only that channel.
func (b *broker) withChannel(f func(ch *amqp.Channel) error) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return f(ch)
}

// Inspect passively declares a queue: its ready messages and consumers.
func (b *broker) Inspect(name string) (amqp.Queue, error) {
	var q amqp.Queue
	err := b.withChannel(func(ch *amqp.Channel) (err error) {
		q, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
		return err
	})
	return q, err
}

// Publish publishes msg and waits for the broker's confirm.
func (b *broker) Publish(t *testing.T, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.withChannel(func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
		if err != nil {
			return err
		}
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !acked {
			return errors.New("broker nacked the message")
		}
		return nil
	})
	require.NoError(t, err, "publish to %s with key %s", exchange, key)
}

// Drain takes every message from a queue (basic.get, acknowledged).
func (b *broker) Drain(t *testing.T, queue string) []amqp.Delivery {
	t.Helper()
	var got []amqp.Delivery
	err := b.withChannel(func(ch *amqp.Channel) error {
		for {
			d, ok, err := ch.Get(queue, false)
			if err != nil || !ok {
				return err
			}
			got = append(got, d)
			if err := d.Ack(false); err != nil {
				return err
			}
		}
	})
	require.NoError(t, err, "drain %s", queue)
	return got
}

// queueCounts are a queue's messages as rabbitmqctl reports them.
type queueCounts struct {
	Name      string `json:"name"`
	Type      string `json:"type"` // classic, quorum or stream
	Ready     int    `json:"messages_ready"`
	Unacked   int    `json:"messages_unacknowledged"`
	Consumers int    `json:"consumers"`
}

// Counts returns a queue's type and its ready and unacknowledged counts
// from rabbitmqctl; ok is false when rabbitmqctl cannot be used. The counts
// come from statistics the broker refreshes every few seconds: wait on them,
// never read them once.
func (b *broker) Counts(queue string) (counts queueCounts, ok bool, err error) {
	if b.svc.rabbitmqctl == nil {
		return counts, false, nil
	}
	qs, err := listQueues(b, queue)
	if err != nil {
		return counts, true, err
	}
	for _, q := range qs {
		if q.Name == queue {
			return q, true, nil
		}
	}
	return counts, true, fmt.Errorf("rabbitmqctl list_queues: no queue %q", queue)
}

// listQueues returns every queue whose name starts with prefix, with its
// counts, from rabbitmqctl.
func listQueues(b *broker, prefix string) ([]queueCounts, error) {
	var all []queueCounts
	if err := rabbitmqctlList(b, &all, "list_queues", "name", "type", "messages_ready", "messages_unacknowledged", "consumers"); err != nil {
		return nil, err
	}
	var mine []queueCounts
	for _, q := range all {
		if strings.HasPrefix(q.Name, prefix) {
			mine = append(mine, q)
		}
	}
	return mine, nil
}

// rabbitmqctlList runs `rabbitmqctl -q <cmd> --formatter json <columns>`
// (15 s at most) and decodes its rows into rows, a pointer to a slice.
func rabbitmqctlList(b *broker, rows any, cmd string, columns ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := b.svc.rabbitmqctl(ctx, append([]string{"-q", cmd, "--formatter", "json"}, columns...)...)
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w", cmd, err)
	}
	if err := json.Unmarshal(out, rows); err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %.200s", cmd, err, out)
	}
	return nil
}

// cleanupNamespace deletes, at cleanup, the named queues and exchanges and
// every other queue or exchange whose name starts with prefix (a retry
// queue the worker may have declared), as far as rabbitmqctl can list them.
func (b *broker) cleanupNamespace(t *testing.T, prefix string, queues, exchanges []string) {
	t.Cleanup(func() {
		queues, exchanges := append([]string(nil), queues...), append([]string(nil), exchanges...)
		if b.svc.rabbitmqctl != nil {
			for kind, into := range map[string]*[]string{"list_queues": &queues, "list_exchanges": &exchanges} {
				var names []struct{ Name string }
				if err := rabbitmqctlList(b, &names, kind, "name"); err != nil {
					t.Log(err)
					continue
				}
				for _, n := range names {
					if strings.HasPrefix(n.Name, prefix) {
						*into = append(*into, n.Name)
					}
				}
			}
		}
		for _, q := range dedupe(queues) {
			if err := b.withChannel(func(ch *amqp.Channel) error {
				_, err := ch.QueueDelete(q, false, false, false)
				return err
			}); err != nil {
				t.Logf("delete queue %s: %v", q, err)
			}
		}
		for _, x := range dedupe(exchanges) {
			if err := b.withChannel(func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) }); err != nil {
				t.Logf("delete exchange %s: %v", x, err)
			}
		}
	})
}

func dedupe(names []string) []string {
	sort.Strings(names)
	out := names[:0]
	for i, n := range names {
		if i == 0 || n != names[i-1] {
			out = append(out, n)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Waiting on queues.

// waitConsumers waits until the work queue has n consumers.
func waitConsumers(t *testing.T, b *broker, queue string, n int, workers ...*worker) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d consumers on %s", n, queue), func() (bool, string) {
		requireRunning(t, workers...)
		q, err := b.Inspect(queue)
		if err != nil {
			return false, err.Error()
		}
		return q.Consumers == n, fmt.Sprintf("%d consumers", q.Consumers)
	})
}

// waitMessagesReady waits until a passive declare of queue counts exactly
// n ready messages, failing at once when a worker has exited.
func waitMessagesReady(t *testing.T, b *broker, queue string, n int, timeout time.Duration, workers ...*worker) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d message(s) ready in %s", n, queue), func() (bool, string) {
		requireRunning(t, workers...)
		q, err := b.Inspect(queue)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages == n, fmt.Sprintf("%d ready", q.Messages)
	})
}

// waitQueueEmpty waits until queue holds no message, ready or
// unacknowledged. A passive declare counts only ready messages, at once;
// rabbitmqctl also counts unacknowledged ones, from statistics that lag a
// few seconds. Without rabbitmqctl only ready messages are seen. alive,
// when not nil, runs at every look (to fail at once when a worker died).
func waitQueueEmpty(t *testing.T, b *broker, queue string, timeout time.Duration, alive func()) {
	t.Helper()
	if b.svc.rabbitmqctl == nil {
		t.Logf("rabbitmqctl unavailable: only ready messages of %s are seen", queue)
	}
	waitFor(t, timeout, queue+" empty (0 ready, 0 unacked)", queuesEmpty(b, queue, false, alive))
}

// waitSettled waits until the work queue and its delay queues
// (<queue>.retry.<delay>) hold nothing, ready or unacknowledged: every
// message has ended exported or in the DLQ. Only rabbitmqctl lists the
// delay queues: it is required.
func waitSettled(t *testing.T, b *broker, s *setup, workers ...*worker) {
	t.Helper()
	require.NotNil(t, b.svc.rabbitmqctl, "these tests need rabbitmqctl to see unacknowledged messages")
	waitFor(t, 30*time.Second, s.Queue+" 0/0 and its delay queues empty",
		queuesEmpty(b, s.Queue, true, func() { requireRunning(t, workers...) }))
}

// queuesEmpty is the condition of waitQueueEmpty and waitSettled.
func queuesEmpty(b *broker, queue string, delayQueues bool, alive func()) func() (bool, string) {
	return func() (bool, string) {
		if alive != nil {
			alive()
		}
		q, err := b.Inspect(queue)
		if err != nil {
			return false, err.Error()
		}
		if q.Messages != 0 {
			return false, fmt.Sprintf("%s: %d ready", queue, q.Messages)
		}
		if b.svc.rabbitmqctl == nil {
			return true, ""
		}
		qs, err := listQueues(b, queue)
		if err != nil {
			return false, err.Error()
		}
		var busy []string
		found := false
		for _, q := range qs {
			if q.Name == queue {
				found = true
			} else if !delayQueues || !strings.HasPrefix(q.Name, queue+".") {
				continue
			}
			if q.Ready+q.Unacked > 0 {
				busy = append(busy, fmt.Sprintf("%s %d ready/%d unacked", q.Name, q.Ready, q.Unacked))
			}
		}
		if !found {
			return false, "rabbitmqctl list_queues: no queue " + queue
		}
		return len(busy) == 0, fmt.Sprintf("rabbitmqctl: not empty: %v", busy)
	}
}

// dlqMessages is how many messages the DLQ holds (it has no consumers: all
// are ready, which a passive declare counts exactly and at once).
func dlqMessages(t *testing.T, b *broker, s *setup) int {
	t.Helper()
	q, err := b.Inspect(s.DLQ)
	require.NoError(t, err, "inspect %s", s.DLQ)
	return q.Messages
}
