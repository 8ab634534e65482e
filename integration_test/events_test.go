package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// entityEvent is one entity-changed event to publish.
type entityEvent struct {
	Integration string
	Connector   string
	ID          map[string]any
	Op          string // empty: upsert
	Params      map[string]any
	MessageID   string
}

// customerEvent is an upsert of a customer of integration.
func customerEvent(integration, customerID, messageID string) entityEvent {
	return entityEvent{Integration: integration, Connector: "customer",
		ID: map[string]any{"customer_id": customerID}, MessageID: messageID}
}

// RoutingKey is "<integration>.<connector>".
func (e entityEvent) RoutingKey() string { return e.Integration + "." + e.Connector }

// Body renders the event (schema v1).
func (e entityEvent) Body(t *testing.T) []byte {
	t.Helper()
	op := e.Op
	if op == "" {
		op = "upsert"
	}
	ev := struct {
		Version     int            `json:"version"`
		Integration string         `json:"integration"`
		Connector   string         `json:"connector"`
		ID          map[string]any `json:"id"`
		Op          string         `json:"op"`
		Parameters  map[string]any `json:"parameters,omitempty"`
		OccurredAt  string         `json:"occurred_at"`
	}{1, e.Integration, e.Connector, e.ID, op, e.Params, time.Now().UTC().Format(time.RFC3339Nano)}
	data, err := json.Marshal(ev)
	require.NoError(t, err)
	return data
}

// Publishing is the event as revsync publish would send it.
func (e entityEvent) Publishing(t *testing.T) amqp.Publishing {
	t.Helper()
	return amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    e.MessageID,
		Timestamp:    time.Now().UTC().Truncate(time.Second),
		Body:         e.Body(t),
	}
}

// publishCustomerEvent publishes an upsert of one customer of c's
// integration, with a fresh message id, and returns that id.
func publishCustomerEvent(t *testing.T, b *broker, c *workerConfig, customerID string) string {
	t.Helper()
	e := customerEvent(c.Integration(), customerID, "ev-"+customerID+"-"+uniqueSuffix(t))
	b.Publish(t, c.Exchange, e.RoutingKey(), e.Publishing(t))
	return e.MessageID
}

// publishEvents publishes the events on one confirming channel, pipelined,
// and waits until the broker has confirmed every one of them.
func publishEvents(t *testing.T, b *broker, exchange string, events []entityEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := b.withChannel(func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		const window = 500 // confirms outstanding at most
		pending := make([]*amqp.DeferredConfirmation, 0, window)
		wait := func() error {
			for _, dc := range pending {
				acked, err := dc.WaitContext(ctx)
				if err != nil {
					return err
				}
				if !acked {
					return errors.New("broker nacked a message")
				}
			}
			pending = pending[:0]
			select {
			case r := <-returns:
				return fmt.Errorf("message %s returned unroutable: %s", r.MessageId, r.ReplyText)
			default:
				return nil
			}
		}
		for _, e := range events {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, e.RoutingKey(), true, false, e.Publishing(t))
			if err != nil {
				return err
			}
			if pending = append(pending, dc); len(pending) == window {
				if err := wait(); err != nil {
					return err
				}
			}
		}
		return wait()
	})
	require.NoError(t, err, "publish %d events to %s", len(events), exchange)
}

// messageIDs returns the message ids of deliveries, sorted.
func messageIDs(ds []amqp.Delivery) []string {
	ids := make([]string, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.MessageId)
	}
	sort.Strings(ids)
	return ids
}

// sorted returns a sorted copy of ss.
func sorted(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	return out
}
