package rabbitmq

import (
	"math"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

func TestRetryQueueName(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		100 * time.Millisecond:  "revsync.work.retry.100ms",
		1500 * time.Millisecond: "revsync.work.retry.1.5s",
		5 * time.Second:         "revsync.work.retry.5s",
		90 * time.Second:        "revsync.work.retry.1m30s",
		2 * time.Minute:         "revsync.work.retry.2m",
		time.Hour:               "revsync.work.retry.1h",
		90 * time.Minute:        "revsync.work.retry.1h30m",
	} {
		require.Equal(t, want, RetryQueueName("revsync.work", d))
	}
	require.Equal(t, []string{"revsync.work.retry.1s", "revsync.work.retry.5s", "revsync.work.retry.30s",
		"revsync.work.retry.2m", "revsync.work.retry.10m"}, RetryQueues(Config{}), "the default tiers")
	require.Equal(t, []string{"q.retry.1ms", "q.retry.2ms"},
		RetryQueues(Config{Queue: "q", RetryDelays: []time.Duration{2 * time.Millisecond, 1500 * time.Microsecond, time.Microsecond}}),
		"rounded up to whole milliseconds, sorted, without duplicates")
}

func TestRetryConfig(t *testing.T) {
	t.Parallel()
	c, err := Config{URL: "amqp://h/"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, worker.DefaultRetrySchedule, c.RetryDelays)
	in := []time.Duration{time.Minute, time.Second}
	c, err = Config{URL: "amqp://h/", RetryDelays: in}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, []time.Duration{time.Second, time.Minute}, c.RetryDelays)
	require.Equal(t, time.Minute, in[0], "the caller's slice is not modified")
	_, err = Config{URL: "amqp://h/", RetryDelays: []time.Duration{time.Second, 0}}.withDefaults()
	require.ErrorContains(t, err, "Config.RetryDelays[1] must be positive, got 0s")

	require.Equal(t, amqp.Table{
		"x-queue-type": "quorum", "x-message-ttl": int64(5000),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "revsync.work",
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
	}, retryQueueArgs(Config{Queue: "revsync.work"}, 5*time.Second))
}

func TestRetryRoute(t *testing.T) {
	t.Parallel()
	r := newRetryRoutes(Config{Queue: "q", RetryDelays: []time.Duration{
		800 * time.Millisecond, 100 * time.Millisecond, 400 * time.Millisecond, 200 * time.Millisecond,
	}})
	for _, tt := range []struct {
		wanted     time.Duration
		queue, exp string
	}{
		{0, "q.retry.100ms", "0"},
		{80 * time.Millisecond, "q.retry.100ms", "80"},
		{100 * time.Millisecond, "q.retry.100ms", "100"},
		{100*time.Millisecond + time.Microsecond, "q.retry.200ms", "101"}, // never shorter than wanted
		{150 * time.Millisecond, "q.retry.200ms", "150"},
		{800 * time.Millisecond, "q.retry.800ms", "800"},
		{5 * time.Second, "q.retry.800ms", "800"}, // cut to the longest tier
	} {
		queue, exp := r.route(tt.wanted)
		require.Equal(t, tt.queue, queue, "%s", tt.wanted)
		require.Equal(t, tt.exp, exp, "%s", tt.wanted)
	}
}

func TestRetryCopy(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := amqp.Delivery{
		Exchange: "events", RoutingKey: "crm.customer", Body: []byte("b"),
		Headers:     amqp.Table{"trace": "abc", "x-delivery-count": int64(2)},
		ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: amqp.Transient,
		Priority: 3, CorrelationId: "corr", ReplyTo: "r", Expiration: "60000", MessageId: "m-1",
		Timestamp: ts, Type: "entity-changed", UserId: "guest", AppId: "app",
	}
	r := worker.Retry{Delay: time.Second, Attempt: 2, Class: jobs.ClassTransient, Reason: "remote answered 503"}
	p := retryCopy(m, r, "950")
	require.Equal(t, amqp.Publishing{
		Headers: amqp.Table{
			"trace":                         "abc",
			worker.HeaderAttempt:            int32(2),
			worker.HeaderOriginalExchange:   "events",
			worker.HeaderOriginalRoutingKey: "crm.customer",
			worker.HeaderRetryClass:         "transient",
			worker.HeaderRetryReason:        "remote answered 503",
		},
		ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: amqp.Persistent,
		Priority: 3, CorrelationId: "corr", ReplyTo: "r", Expiration: "950", MessageId: "m-1",
		Timestamp: ts, Type: "entity-changed", AppId: "app", Body: []byte("b"),
	}, p, "body, properties and headers kept; user_id and x-delivery-count dropped; persistent")
	require.NoError(t, p.Headers.Validate())
	require.Equal(t, int64(2), m.Headers["x-delivery-count"], "the original's headers are not modified")

	// Back from the delay queue, the message's routing key is the work
	// queue's and its exchange the default one: the next copies keep the
	// original route.
	back := amqp.Delivery{Exchange: "", RoutingKey: "revsync.work", Body: p.Body, MessageId: p.MessageId, Headers: p.Headers}
	p2 := retryCopy(back, worker.Retry{Delay: 5 * time.Second, Attempt: 3, Class: worker.ClassBreakerOpen, Reason: "open"}, "5000")
	require.Equal(t, "events", p2.Headers[worker.HeaderOriginalExchange])
	require.Equal(t, "crm.customer", p2.Headers[worker.HeaderOriginalRoutingKey])
	require.Equal(t, int32(3), p2.Headers[worker.HeaderAttempt])
	require.Equal(t, "breaker_open", p2.Headers[worker.HeaderRetryClass])

	// Its dead-letter copy goes out with the original route too (F10).
	ex, rk := originalRoute(back)
	require.Equal(t, "events", ex)
	require.Equal(t, "crm.customer", rk)
	dl := deadLetterCopy(back, worker.DeadLetter{Class: jobs.ClassRetriesExhausted, Attempt: 5})
	require.Equal(t, "events", dl.Headers[worker.HeaderOriginalExchange])
	require.Equal(t, "crm.customer", dl.Headers[worker.HeaderOriginalRoutingKey])
	require.Equal(t, int32(5), dl.Headers[worker.HeaderAttempt])

	ex, rk = originalRoute(m)
	require.Equal(t, "events", ex)
	require.Equal(t, "crm.customer", rk)
}

func TestTTLMillisSaturates(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]int64{
		-time.Second: 0, 0: 0, time.Nanosecond: 1, time.Millisecond: 1, 1500 * time.Microsecond: 2,
		time.Second: 1000, math.MaxInt64: maxTTL, 100 * 24 * time.Hour: maxTTL,
	} {
		require.Equal(t, want, ttlMillis(d), "ttlMillis(%v)", d)
	}
}
