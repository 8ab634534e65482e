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

func dialBroker(t *testing.T, svc services) *broker {
	t.Helper()
	conn, err := amqp.DialConfig(svc.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	require.NoError(t, err, "connect to RabbitMQ")
	t.Cleanup(func() { _ = conn.Close() })
	return &broker{svc: svc, conn: conn}
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
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := b.svc.rabbitmqctl(ctx, "-q", "list_queues", "--formatter", "json",
		"name", "type", "messages_ready", "messages_unacknowledged", "consumers")
	if err != nil {
		return counts, true, fmt.Errorf("rabbitmqctl list_queues: %w", err)
	}
	var all []queueCounts
	if err := json.Unmarshal(out, &all); err != nil {
		return counts, true, fmt.Errorf("rabbitmqctl list_queues: %w: %s", err, out)
	}
	for _, q := range all {
		if q.Name == queue {
			return q, true, nil
		}
	}
	return counts, true, fmt.Errorf("rabbitmqctl list_queues: no queue %q", queue)
}

// cleanupNamespace deletes, at cleanup, the named queues and exchanges and
// every other queue or exchange whose name starts with prefix (a retry
// queue the worker may have declared), as far as rabbitmqctl can list them.
func (b *broker) cleanupNamespace(t *testing.T, prefix string, queues, exchanges []string) {
	t.Cleanup(func() {
		queues, exchanges := append([]string(nil), queues...), append([]string(nil), exchanges...)
		if b.svc.rabbitmqctl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			for kind, into := range map[string]*[]string{"list_queues": &queues, "list_exchanges": &exchanges} {
				out, err := b.svc.rabbitmqctl(ctx, "-q", kind, "--formatter", "json", "name")
				if err != nil {
					t.Logf("rabbitmqctl %s: %v", kind, err)
					continue
				}
				var names []struct{ Name string }
				if err := json.Unmarshal(out, &names); err != nil {
					t.Logf("rabbitmqctl %s: %v", kind, err)
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
