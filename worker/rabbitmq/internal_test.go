package rabbitmq

import (
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
