package integration_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

// TestTopologyMismatchExits78 is F12: the work queue already exists as a
// classic queue holding a message. The worker, which wants a quorum queue,
// must fail fast with exit code 78, name the queue and the differing
// argument, and leave the queue and its message alone.
func TestTopologyMismatchExits78(t *testing.T) {
	t.Parallel()
	rabbittest.Shared(t)
	svc := requireServices(t)
	nw := loadNorthwind(t, svc.DatabaseURL)
	b := dialBroker(t, svc)
	// The remote is never called: nothing is consumed.
	s := newSetup(t, svc, b, nw.Schema, "http://127.0.0.1:9")

	require.NoError(t, b.withChannel(func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(s.Queue, true, false, false, false, nil) // classic, no arguments
		return err
	}))
	b.Publish(t, "", s.Queue, amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    "pre-existing-" + s.Prefix,
		Body:         []byte(`{"pre":"existing"}`),
	})

	w := s.StartWorker(t, newConfig(s).Write(t))
	code := w.Wait(t, 15*time.Second) // fails fast: no retries
	stderr := w.Stderr(t)
	require.Equal(t, 78, code, "exit code of a worker facing a classic work queue; stderr:\n%s", stderr)
	require.Contains(t, stderr, s.Queue, "the error names the queue")
	require.Contains(t, stderr, "x-queue-type", "the error names the differing argument")

	q, err := b.Inspect(s.Queue)
	require.NoError(t, err, "the pre-existing queue is still there")
	require.Equal(t, 1, q.Messages, "the pre-existing queue keeps its message")
	if c, ok, err := b.Counts(s.Queue); ok {
		require.NoError(t, err)
		require.Equal(t, "classic", c.Type, "the pre-existing queue is unchanged")
	}
	msgs := b.Drain(t, s.Queue)
	require.Len(t, msgs, 1)
	require.Equal(t, `{"pre":"existing"}`, string(msgs[0].Body))
}
