package rabbitmq

import (
	"context"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

func TestDeadLetterCopy(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 15, 4, 5, 0, time.FixedZone("", 3600))
	dl := worker.DeadLetter{Class: jobs.ClassPermanent, Reason: "remote answered 422", Attempt: 2, FailedAt: at, Host: "h1"}

	t.Run("no headers, no properties", func(t *testing.T) {
		t.Parallel()
		m := amqp.Delivery{Exchange: "events", RoutingKey: "crm.customer", Body: []byte(`{"x":1}`)}
		p := deadLetterCopy(m, dl)
		require.Equal(t, m.Body, p.Body)
		require.Equal(t, amqp.Persistent, p.DeliveryMode)
		require.Equal(t, amqp.Table{
			worker.HeaderErrorClass:         "permanent",
			worker.HeaderError:              "remote answered 422",
			worker.HeaderAttempt:            int32(2),
			worker.HeaderFailedAt:           "2026-12-03T14:04:05Z",
			worker.HeaderWorkerHost:         "h1",
			worker.HeaderOriginalExchange:   "events",
			worker.HeaderOriginalRoutingKey: "crm.customer",
		}, p.Headers)
		require.NoError(t, p.Headers.Validate())
	})

	t.Run("every property", func(t *testing.T) {
		t.Parallel()
		ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		m := amqp.Delivery{
			Exchange: "events", RoutingKey: "crm.customer", Body: []byte("b"),
			Headers:     amqp.Table{"trace": "abc", worker.HeaderErrorClass: "old", "n": int64(3)},
			ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: amqp.Transient,
			Priority: 3, CorrelationId: "corr", ReplyTo: "r", Expiration: "60000", MessageId: "m-1",
			Timestamp: ts, Type: "entity-changed", UserId: "guest", AppId: "app",
		}
		p := deadLetterCopy(m, dl)
		require.Equal(t, amqp.Publishing{
			Headers:     p.Headers,
			ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: amqp.Persistent,
			Priority: 3, CorrelationId: "corr", ReplyTo: "r", MessageId: "m-1",
			Timestamp: ts, Type: "entity-changed", AppId: "app", Body: []byte("b"),
		}, p, "expiration and user_id are dropped, the copy is persistent")
		require.Equal(t, "abc", p.Headers["trace"])
		require.Equal(t, int64(3), p.Headers["n"])
		require.Equal(t, "permanent", p.Headers[worker.HeaderErrorClass], "replaced")
		require.Equal(t, "old", m.Headers[worker.HeaderErrorClass], "the original's headers are not modified")
	})
}

func TestInequivalentArg(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]string{
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr' but current is none": "x-queue-type",
		"PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'topic' but current is 'direct'":                               "type",
		"PRECONDITION_FAILED - something else":         "",
		"PRECONDITION_FAILED - inequivalent arg 'oops": "",
	} {
		require.Equal(t, want, inequivalentArg(reason), reason)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := Config{URL: "amqp://u:p@h:5672/"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "revsync.events", c.Exchange)
	require.Equal(t, "revsync.work", c.Queue)
	require.Equal(t, []string{"#"}, c.BindingKeys)
	require.Equal(t, "revsync.dlx", c.DeadLetterExchange)
	require.Equal(t, "revsync.dlq", c.DeadLetterQueue)
	require.Equal(t, 20, c.Prefetch)
	require.Equal(t, 10, c.DeliveryLimit)
	require.Equal(t, 10*time.Second, c.PublishTimeout)
	require.NotNil(t, c.Logger)
	require.Equal(t, "amqp://u:xxxxx@h:5672/", c.RedactedURL())
	require.Equal(t, amqp.Table{
		"x-queue-type": "quorum", "x-dead-letter-exchange": "revsync.dlx", "x-delivery-limit": int64(10),
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
	}, workQueueArgs(c))

	for cfg, want := range map[*Config]string{
		{}:                                    "Config.URL is required",
		{URL: "http://h/"}:                    "Config.URL",
		{URL: "amqp://u:s3cret@h:bad/"}:       "not a valid URL",
		{URL: "amqp://h/", Prefetch: -1}:      "Config.Prefetch must be positive, got -1",
		{URL: "amqp://h/", DeliveryLimit: -1}: "Config.DeliveryLimit",
		{URL: "amqp://h/", BindingKeys: []string{""}}:        "Config.BindingKeys[0] is empty",
		{URL: "amqp://h/", Queue: "q", DeadLetterQueue: "q"}: "Config.DeadLetterQueue must differ",
	} {
		_, err := cfg.withDefaults()
		require.ErrorContains(t, err, want)
		require.NotContains(t, err.Error(), "s3cret")
	}
}

func TestReconnectConfig(t *testing.T) {
	t.Parallel()
	c, err := Config{URL: "amqp://h/"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, worker.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}, c.ReconnectBackoff)
	require.Zero(t, c.ReconnectTimeout, "forever by default")

	c, err = Config{URL: "amqp://h/", ReconnectBackoff: worker.Backoff{Initial: time.Minute}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, time.Minute, c.ReconnectBackoff.Max, "the cap is at least the first delay")

	for cfg, want := range map[*Config]string{
		{URL: "amqp://h/", ReconnectTimeout: -time.Second}:                          "Config.ReconnectTimeout",
		{URL: "amqp://h/", ReconnectBackoff: worker.Backoff{Initial: -time.Second}}: "Config.ReconnectBackoff.Initial",
		{URL: "amqp://h/", ReconnectBackoff: worker.Backoff{Max: -time.Second}}:     "Config.ReconnectBackoff.Max",
	} {
		_, err := cfg.withDefaults()
		require.ErrorContains(t, err, want)
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 1, 2, time.Millisecond, 500 * time.Millisecond, 30 * time.Second} {
		for range 200 {
			j := jitter(d)
			require.LessOrEqual(t, j, d)
			require.GreaterOrEqual(t, j, d/2)
		}
	}
	// The delays of a reconnection: capped, and growing until the cap.
	b := worker.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}
	var want []time.Duration
	for n := 1; n <= 8; n++ {
		want = append(want, b.Delay(n))
	}
	require.Equal(t, []time.Duration{
		500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second,
	}, want)
}

func TestWithin(t *testing.T) {
	t.Parallel()
	require.NoError(t, within(context.Background(), func() error { return nil }, nil))
	boom := errors.New("boom")
	require.ErrorIs(t, within(context.Background(), func() error { return boom }, nil), boom)

	// Too late: within returns ctx's error at once, and undo releases
	// what f opened when it finally succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	release, undone := make(chan struct{}), make(chan struct{})
	err := within(ctx, func() error { <-release; return nil }, func() { close(undone) })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	select {
	case <-undone:
	case <-time.After(5 * time.Second):
		t.Fatal("undo not called")
	}
}

func TestTopologyErrorSaysWhetherTheQueueExists(t *testing.T) {
	t.Parallel()
	refused := (&TopologyError{Queue: "w.retry.2562047h", Declared: "durable, x-message-ttl=9223372036854",
		Reason: "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'w.retry.2562047h' in vhost '/': {value_too_large,9223372036854}"}).Error()
	require.Contains(t, refused, "the broker refused to declare")
	require.NotContains(t, refused, "already exists")
	mismatch := (&TopologyError{Queue: "w", Argument: "x-queue-type", Declared: "x-queue-type=quorum",
		Reason: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'w' in vhost '/': received 'quorum' but current is 'classic'"}).Error()
	require.Contains(t, mismatch, `already exists with a different "x-queue-type" argument`)
}
