package integration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

// TestDLQReplayKeepsTheRoute is F10 through the real binary: an order line
// fails permanently (the remote has no such collection) and is
// dead-lettered; `revsync dlq replay` moves it back with its routing key,
// body and message id, prints moved=1 and exits 0; the remote still
// refuses it, so it is dead-lettered again — once.
func TestDLQReplayKeepsTheRoute(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	remote := startJSONServer(t, "customers") // no order_lines: POST answers 404
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	s := newSetup(t, svc, b, nw.Schema, remote.URL)
	c := newConfig(s)
	cfg := c.Write(t)
	w := s.StartWorker(t, cfg)

	waitForDLQ := func(n int) { waitMessagesReady(t, b, s.DLQ, n, 20*time.Second, w) }

	res := s.MustRun(t, "publish", "--config", cfg, "--integration", c.Integration(),
		"--connector", "order_line", "--id", "order_id=10248", "--id", "product_id=11")
	messageID := strings.TrimSpace(res.Stdout)
	waitForDLQ(1)

	res = s.MustRun(t, "dlq", "replay", "--config", cfg)
	require.Contains(t, res.Stdout, "moved=1 kept=0")
	require.Contains(t, res.Stdout, "message_id="+messageID)
	require.Contains(t, res.Stdout, "routing_key="+c.Integration()+".order_line")

	waitForDLQ(1)
	got := b.Drain(t, s.DLQ)
	require.Len(t, got, 1)
	d := got[0]
	require.Equal(t, messageID, d.MessageId)
	require.Equal(t, c.Integration()+".order_line", d.RoutingKey)
	require.Equal(t, "permanent", d.Headers["x-revsync-error-class"])
	require.EqualValues(t, 1, d.Headers["x-revsync-replays"])
	require.Contains(t, string(d.Body), `"order_id":10248`)

	require.Equal(t, 0, w.Stop(t, 30*time.Second))
	q, err := b.Inspect(s.Queue)
	require.NoError(t, err)
	require.Zero(t, q.Messages)
}
