package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
	"github.com/revsync/revsync/worker/workertest"
)

// TestReplayKeepsTheRoute is F10: an event fails permanently and lands in
// the DLQ; replay republishes it with its original routing key, body and
// message id; the remote still refuses it, so it is dead-lettered again.
func TestReplayKeepsTheRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	x := newExporter()
	var writes atomic.Int32
	x.write = func(context.Context, *jobs.Context) error {
		writes.Add(1)
		return jobs.Permanent(errors.New("remote says 400"))
	}
	c := e.dial()
	stop := running(t, c, e.worker(x, nil))

	body := workertest.CustomerBody("ALFKI")
	e.publish(customerKey, amqp.Publishing{MessageId: "m-replay", ContentType: "application/json", Body: body})
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	require.EqualValues(t, 1, writes.Load())

	var seen []rabbitmq.ReplayedMessage
	res, err := c.ReplayDeadLetters(t.Context(), rabbitmq.ReplayOptions{
		OnMessage: func(m rabbitmq.ReplayedMessage) { seen = append(seen, m) },
	})
	require.NoError(t, err)
	require.Equal(t, rabbitmq.ReplayResult{Moved: 1}, res)
	require.Len(t, seen, 1)
	require.Equal(t, rabbitmq.ReplayedMessage{
		MessageID: "m-replay", RoutingKey: customerKey, Class: jobs.ClassPermanent,
		Reason: seen[0].Reason, Moved: true,
	}, seen[0])

	// The worker handles it again, from attempt 1, and it fails again.
	require.Eventually(t, func() bool { return writes.Load() == 2 }, 10*time.Second, 10*time.Millisecond)
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	require.NoError(t, stop())

	got := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, got, 1)
	d := got[0]
	require.Equal(t, customerKey, d.RoutingKey, "the DLQ copy of the replayed event keeps its route")
	require.Equal(t, "m-replay", d.MessageId)
	require.Equal(t, body, d.Body)
	require.Equal(t, string(jobs.ClassPermanent), d.Headers[worker.HeaderErrorClass])
	require.EqualValues(t, 1, d.Headers[worker.HeaderAttempt], "a replay starts again at attempt 1")
	require.EqualValues(t, 1, d.Headers[rabbitmq.HeaderReplays])
	require.Zero(t, first(e.depth(e.cfg.Queue)))
}

// TestReplayFiltersByClassAndStopsAtTheSnapshot: only the chosen class is
// moved, the others stay in the DLQ, and a dry run moves nothing.
func TestReplayFiltersByClassAndStopsAtTheSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.dial()
	ch := e.channel()
	require.NoError(t, ch.Confirm(false))
	park := func(id string, class jobs.Class) {
		dc, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), e.cfg.DeadLetterExchange, customerKey, true, false,
			amqp.Publishing{MessageId: id, Body: []byte(id), Headers: amqp.Table{worker.HeaderErrorClass: string(class)}})
		require.NoError(t, err)
		ok, err := dc.WaitContext(t.Context())
		require.NoError(t, err)
		require.True(t, ok)
	}
	park("d1", jobs.ClassIntegrationDisabled)
	park("i1", jobs.ClassInvalidMessage)
	park("d2", jobs.ClassIntegrationDisabled)
	e.waitDepth(e.cfg.DeadLetterQueue, 3)

	res, err := c.ReplayDeadLetters(t.Context(), rabbitmq.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, rabbitmq.ReplayResult{Skipped: 3}, res)
	e.waitDepth(e.cfg.DeadLetterQueue, 3)
	res, err = c.ReplayDeadLetters(t.Context(), rabbitmq.ReplayOptions{DryRun: true, Limit: 1})
	require.NoError(t, err)
	require.Equal(t, rabbitmq.ReplayResult{Skipped: 1, Unexamined: 2}, res, "--limit bounds a dry run's listing too")
	e.waitDepth(e.cfg.DeadLetterQueue, 3)

	res, err = c.ReplayDeadLetters(t.Context(), rabbitmq.ReplayOptions{Classes: []jobs.Class{jobs.ClassIntegrationDisabled}})
	require.NoError(t, err)
	require.Equal(t, rabbitmq.ReplayResult{Moved: 2, Skipped: 1}, res)
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	e.waitDepth(e.cfg.Queue, 2)
	left := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, left, 1)
	require.Equal(t, "i1", left[0].MessageId)
}

func first(a, _ int) int { return a }

// TestDeadLetterCopyOfHugeHeaders: the original's headers nearly fill a
// frame; the copy, with revsync's headers added, would not fit and the
// broker would close the connection (FRAME_ERROR) on every try. The copy
// drops the original headers instead, says how many, and lands once.
func TestDeadLetterCopyOfHugeHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	x := newExporter()
	c := e.dial()
	stop := running(t, c, e.worker(x, nil))

	body := []byte("{truncated")
	e.publish(customerKey, amqp.Publishing{MessageId: "m-huge", Body: body,
		Headers: amqp.Table{"pad": strings.Repeat("x", 130000)}})
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	require.NoError(t, stop())
	got := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, got, 1)
	require.Equal(t, body, got[0].Body)
	require.Equal(t, string(jobs.ClassInvalidMessage), got[0].Headers[worker.HeaderErrorClass])
	require.EqualValues(t, 1, got[0].Headers[rabbitmq.HeaderHeadersDropped])
	require.NotContains(t, got[0].Headers, "pad")
	require.Zero(t, first(e.depth(e.cfg.Queue)))
}

// TestUnsignedHeaderTypes: AMQP 0-9-1 allows unsigned 16- and 32-bit
// header values ('u', 'i'), which other clients send. Decoding them used
// to kill the consuming connection on every delivery; now the event is
// exported, and a failing one's DLQ copy keeps them.
func TestUnsignedHeaderTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	x := newExporter()
	c := e.dial()
	stop := running(t, c, e.worker(x, nil))

	headers := amqp.Table{"x-tenant": uint16(7), "x-shard": uint32(70000)}
	e.publish(customerKey, amqp.Publishing{MessageId: "m-ok", Body: workertest.CustomerBody("ALFKI"), Headers: headers})
	e.publish(customerKey, amqp.Publishing{MessageId: "m-bad", Body: []byte("{"), Headers: headers})
	e.waitDepth(e.cfg.DeadLetterQueue, 1)
	require.Eventually(t, func() bool { _, writes := x.totals(); return writes == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())

	got := e.drain(e.cfg.DeadLetterQueue)
	require.Len(t, got, 1)
	require.Equal(t, "m-bad", got[0].MessageId)
	require.Equal(t, uint16(7), got[0].Headers["x-tenant"])
	require.Equal(t, uint32(70000), got[0].Headers["x-shard"])
	require.Zero(t, first(e.depth(e.cfg.Queue)))
}
