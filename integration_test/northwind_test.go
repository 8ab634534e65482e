package integration_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

// TestNorthwindEndToEnd drives the real binary: every Northwind customer
// and 100 order lines are exported to json-server, then updates and deletes
// follow; poison messages interleaved with the events end in the DLQ
// exactly once each, with their reason (F05, F06); the work queue ends
// empty and SIGTERM ends the worker with exit code 0.
func TestNorthwindEndToEnd(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	remote := startJSONServer(t, "customers", "order_lines")
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	cfg := c.Write(t)

	// config validate: the generated configuration is fine; one naming an
	// unknown job is a configuration error (78) that names the key.
	s.MustRun(t, "config", "validate", "--config", cfg)
	broken := *c
	broken.ExportJob = "no_such_job"
	brokenCfg := broken.Write(t)
	res := s.Run(t, "config", "validate", "--config", brokenCfg)
	require.Equal(t, 78, res.Code, "config validate of a configuration naming an unknown job\nstdout:\n%s\nstderr:\n%s", res.Stdout, res.Stderr)
	require.Contains(t, res.Stderr, "export_job", "the error names the key")
	require.Contains(t, res.Stderr, "no_such_job", "the error names the unknown job")

	w := s.StartWorker(t, cfg)
	waitConsumers(t, b, s.Queue, 1, w)

	// Phase 1: every customer and 100 order lines, with poison messages
	// published raw in between.
	customerIDs := nw.CustomerIDs(t)
	require.Len(t, customerIDs, 91)
	lines := nw.OrderLineKeys(t, 100)
	require.Len(t, lines, 100)

	dir := t.TempDir()
	customerEvents := filepath.Join(dir, "customers.jsonl")
	lineEvents := filepath.Join(dir, "order_lines.jsonl")
	event := func(connector string, id map[string]any) []byte {
		return entityEvent{Integration: c.Integration(), Connector: connector, ID: id}.Body(t)
	}
	var buf bytes.Buffer
	for _, id := range customerIDs {
		buf.Write(event("customer", map[string]any{"customer_id": id}))
		buf.WriteByte('\n')
	}
	require.NoError(t, os.WriteFile(customerEvents, buf.Bytes(), 0o600))
	buf.Reset()
	for _, k := range lines {
		buf.Write(event("order_line", map[string]any{"order_id": k.OrderID, "product_id": k.ProductID}))
		buf.WriteByte('\n')
	}
	require.NoError(t, os.WriteFile(lineEvents, buf.Bytes(), 0o600))

	poisons := poisonMessages(t, c, customerIDs[0])
	s.MustRun(t, "publish", "--config", cfg, "--file", customerEvents)
	for _, p := range poisons[:3] {
		b.Publish(t, s.Exchange, p.RoutingKey, p.publishing())
	}
	s.MustRun(t, "publish", "--config", cfg, "--file", lineEvents)
	for _, p := range poisons[3:] {
		b.Publish(t, s.Exchange, p.RoutingKey, p.publishing())
	}

	waitForRemote(t, w, remote, "customers", nw.ExpectedCustomers(t))
	waitForRemote(t, w, remote, "order_lines", nw.ExpectedOrderLines(t, lines))

	// Phase 2: update 5 customers and one order line, delete 2 customers
	// (ones without orders: orders reference customers), and publish their
	// events one by one from the command line. One deletion is announced as
	// a delete, the other as an upsert of a row that is gone
	// (on_missing: delete).
	deleted := nw.CustomersWithoutOrders(t)
	require.Len(t, deleted, 2, "Northwind has two customers without orders")
	var updated []string
	for _, id := range customerIDs {
		if id != deleted[0] && id != deleted[1] && len(updated) < 5 {
			updated = append(updated, id)
		}
	}
	n := nw.Exec(t, `UPDATE `+nw.Table("customers")+`
		SET contact_name = 'Updated ' || customer_id, city = 'Revsync City', phone = '+1 555 ' || customer_id
		WHERE customer_id = ANY($1)`, updated)
	require.EqualValues(t, 5, n)
	n = nw.Exec(t, `DELETE FROM `+nw.Table("customers")+` WHERE customer_id = ANY($1)`, deleted)
	require.EqualValues(t, 2, n)
	line := lines[0]
	n = nw.Exec(t, `UPDATE `+nw.Table("order_details")+` SET quantity = quantity + 100, discount = 0.25
		WHERE order_id = $1 AND product_id = $2`, line.OrderID, line.ProductID)
	require.EqualValues(t, 1, n)

	publish := func(connector string, extra ...string) {
		args := append([]string{"publish", "--config", cfg, "--integration", c.Integration(), "--connector", connector}, extra...)
		res := s.MustRun(t, args...)
		require.NotEmpty(t, strings.TrimSpace(res.Stdout), "revsync publish prints the message id")
	}
	for i, id := range updated {
		extra := []string{"--id", "customer_id=" + id}
		if i == 0 {
			extra = append(extra, "--param", "reason=integration-test")
		}
		publish("customer", extra...)
	}
	publish("customer", "--id", "customer_id="+deleted[0], "--op", "delete")
	publish("customer", "--id", "customer_id="+deleted[1], "--op", "upsert")
	publish("order_line", "--id", fmt.Sprintf("order_id=%d", line.OrderID), "--id", fmt.Sprintf("product_id=%d", line.ProductID))

	wantCustomers := nw.ExpectedCustomers(t)
	require.Len(t, wantCustomers, 89)
	waitForRemote(t, w, remote, "customers", wantCustomers)
	waitForRemote(t, w, remote, "order_lines", nw.ExpectedOrderLines(t, lines))

	// Every poison message reaches the DLQ; nothing stays in the work queue.
	waitFor(t, 20*time.Second, "5 messages in "+s.DLQ, func() (bool, string) {
		w.RequireRunning(t)
		q, err := b.Inspect(s.DLQ)
		if err != nil {
			return false, err.Error()
		}
		return q.Messages >= len(poisons), fmt.Sprintf("%d messages", q.Messages)
	})
	// Without rabbitmqctl, unacknowledged messages are checked after the
	// worker stops.
	waitQueueEmpty(t, b, s.Queue, 20*time.Second, func() { w.RequireRunning(t) })

	require.Equal(t, 0, w.Stop(t, 30*time.Second), "exit code after SIGTERM")

	// With the worker gone, unacknowledged messages would be ready again:
	// a passive declare now shows everything that is left.
	q, err := b.Inspect(s.Queue)
	require.NoError(t, err)
	require.Equal(t, 0, q.Messages, "messages left in the work queue")
	require.Equal(t, 0, q.Consumers)

	requireDeadLetters(t, s, b.Drain(t, s.DLQ), poisons)
}

// poison is a message the worker must dead-letter.
type poison struct {
	Case       string // also sent as header x-test-case
	RoutingKey string
	MessageID  string // empty: published without one
	Timestamp  time.Time
	Body       []byte
	Class      string // the expected x-revsync-error-class
}

func (p poison) publishing() amqp.Publishing {
	return amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    p.MessageID,
		Timestamp:    p.Timestamp,
		Headers:      amqp.Table{"x-test-case": p.Case},
		Body:         p.Body,
	}
}

// poisonMessages are the F05 and F06 messages: no message id, an unknown
// connector, truncated JSON, a body over max_message_bytes and an
// identifier of the wrong type.
func poisonMessages(t *testing.T, s *workerConfig, customerID string) []poison {
	t.Helper()
	id := func(c string) string { return "poison-" + c + "-" + s.Prefix }
	key := func(connector string) string { return s.Integration() + "." + connector }
	eventJSON := func(connector string, id, params map[string]any) []byte {
		return entityEvent{Integration: s.Integration(), Connector: connector, ID: id, Params: params}.Body(t)
	}
	valid := eventJSON("order_line", map[string]any{"order_id": 10248, "product_id": 11}, nil)
	oversize := eventJSON("customer", map[string]any{"customer_id": customerID},
		map[string]any{"padding": strings.Repeat("x", s.MaxMessageBytes)})
	require.Greater(t, len(oversize), s.MaxMessageBytes)
	poisons := []poison{
		{Case: "no-message-id", RoutingKey: key("customer"), Class: "invalid_message",
			Body: eventJSON("customer", map[string]any{"customer_id": customerID}, nil)},
		{Case: "unknown-connector", RoutingKey: key("supplier"), MessageID: id("unknown-connector"), Class: "unknown_route",
			Body: eventJSON("supplier", map[string]any{"supplier_id": 1}, nil)},
		{Case: "truncated-json", RoutingKey: key("order_line"), MessageID: id("truncated-json"), Class: "invalid_message",
			Body: valid[:len(valid)/2]},
		{Case: "oversize", RoutingKey: key("customer"), MessageID: id("oversize"), Class: "invalid_message",
			Body: oversize},
		{Case: "wrong-id-type", RoutingKey: key("order_line"), MessageID: id("wrong-id-type"), Class: "invalid_message",
			Body: eventJSON("order_line", map[string]any{"order_id": "10248", "product_id": 11}, nil)},
	}
	stamp := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	for i := range poisons {
		poisons[i].Timestamp = stamp
	}
	return poisons
}

// requireDeadLetters checks the DLQ holds each poison message exactly once:
// original routing key, body byte for byte, properties and headers, plus
// the worker's error headers.
func requireDeadLetters(t *testing.T, s *setup, got []amqp.Delivery, poisons []poison) {
	t.Helper()
	byCase := map[string][]amqp.Delivery{}
	for _, d := range got {
		c, _ := d.Headers["x-test-case"].(string)
		byCase[c] = append(byCase[c], d)
	}
	var summary []string
	for c, ds := range byCase {
		summary = append(summary, fmt.Sprintf("%q×%d", c, len(ds)))
	}
	sort.Strings(summary)
	require.Len(t, got, len(poisons), "DLQ messages by x-test-case: %v", summary)
	for _, p := range poisons {
		ds := byCase[p.Case]
		require.Len(t, ds, 1, "DLQ copies of %s (DLQ by x-test-case: %v)", p.Case, summary)
		d := ds[0]
		require.Equal(t, s.DLX, d.Exchange, "%s: exchange", p.Case)
		require.Equal(t, p.RoutingKey, d.RoutingKey, "%s: routing key", p.Case)
		require.True(t, bytes.Equal(p.Body, d.Body), "%s: body differs: published %d bytes %.80q, DLQ %d bytes %.80q",
			p.Case, len(p.Body), p.Body, len(d.Body), d.Body)
		require.Equal(t, p.MessageID, d.MessageId, "%s: message id", p.Case)
		require.Equal(t, "application/json", d.ContentType, "%s: content type", p.Case)
		require.True(t, p.Timestamp.Equal(d.Timestamp), "%s: timestamp: published %s, DLQ %s", p.Case, p.Timestamp, d.Timestamp)
		require.Equal(t, amqp.Persistent, d.DeliveryMode, "%s: delivery mode", p.Case)
		require.Equal(t, p.Class, d.Headers["x-revsync-error-class"], "%s: x-revsync-error-class (x-revsync-error: %v)",
			p.Case, d.Headers["x-revsync-error"])
		require.NotEmpty(t, d.Headers["x-revsync-error"], "%s: x-revsync-error", p.Case)
		require.EqualValues(t, 1, headerInt(t, d.Headers, "x-revsync-attempt"), "%s: x-revsync-attempt", p.Case)
		failedAt, _ := d.Headers["x-revsync-failed-at"].(string)
		_, err := time.Parse(time.RFC3339, failedAt)
		require.NoError(t, err, "%s: x-revsync-failed-at %#v", p.Case, d.Headers["x-revsync-failed-at"])
		require.NotEmpty(t, d.Headers["x-revsync-worker-host"], "%s: x-revsync-worker-host", p.Case)
		require.Equal(t, s.Exchange, d.Headers["x-revsync-original-exchange"], "%s: x-revsync-original-exchange", p.Case)
		require.Equal(t, p.RoutingKey, d.Headers["x-revsync-original-routing-key"], "%s: x-revsync-original-routing-key", p.Case)
	}
}

// headerInt returns an integer header, whichever AMQP integer type carries
// it.
func headerInt(t *testing.T, h amqp.Table, key string) int64 {
	t.Helper()
	switch v := h[key].(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case int64:
		return v
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	case int:
		return int64(v)
	}
	t.Fatalf("header %s: want an integer, got %#v", key, h[key])
	return 0
}

// waitForRemote waits until a remote collection holds exactly want.
func waitForRemote(t *testing.T, w *worker, remote *jsonServer, collection string, want map[string]any) {
	t.Helper()
	waitFor(t, 30*time.Second, "remote /"+collection+" to hold the mapped rows", func() (bool, string) {
		w.RequireRunning(t)
		got, err := remote.Collection(collection)
		if err != nil {
			return false, err.Error()
		}
		d := diffItems(want, got)
		return d == "", d
	})
}
