package worker

import (
	"context"
	"errors"
	"time"

	"github.com/revsync/revsync/jobs"
)

// Headers revsync writes on the dead-letter copy of a message, and reads.
// Their values are part of the event contract (CONFIG.md).
const (
	// HeaderErrorClass is the jobs.Class of the failure, as a string.
	HeaderErrorClass = "x-revsync-error-class"
	// HeaderError is the error text (at most MaxReasonBytes).
	HeaderError = "x-revsync-error"
	// HeaderAttempt is the worker's own attempt count, an integer; 1 for the
	// first delivery. The worker reads it from incoming messages too. It is
	// never derived from the broker's x-death or delivery counts.
	HeaderAttempt = "x-revsync-attempt"
	// HeaderFailedAt is when the message failed, RFC 3339.
	HeaderFailedAt = "x-revsync-failed-at"
	// HeaderWorkerHost is the host name of the worker that dead-lettered it.
	HeaderWorkerHost = "x-revsync-worker-host"
	// HeaderOriginalExchange is the exchange the message was published to.
	HeaderOriginalExchange = "x-revsync-original-exchange"
	// HeaderOriginalRoutingKey is the routing key it was published with.
	HeaderOriginalRoutingKey = "x-revsync-original-routing-key"
	// HeaderRetryClass is, on a copy waiting in a delay queue, why it
	// waits: the Retry.Class.
	HeaderRetryClass = "x-revsync-retry-class"
	// HeaderRetryReason is, on a copy waiting in a delay queue, the
	// Retry.Reason.
	HeaderRetryReason = "x-revsync-retry-reason"
	// HeaderNotBefore is, on a retry copy, the earliest time it may run
	// again, in Unix milliseconds: the floor a remote's Retry-After set.
	// A copy that comes back from its delay queue sooner (a delay queue
	// holds a message at most its own delay) waits again for the rest.
	HeaderNotBefore = "x-revsync-not-before"
)

// MaxReasonBytes caps DeadLetter.Reason so that a dead-letter copy always
// fits in a broker frame, however long an error text gets.
const MaxReasonBytes = 4096

// Delivery is one message received from the broker, as the worker sees it.
// The adapter fills the fields and the Settler; the worker settles each
// delivery exactly once.
type Delivery struct {
	Body      []byte
	MessageID string // the message_id property; "" when absent
	// RoutingKey is the routing key it was delivered with. A message back
	// from a delay queue carries its original one in the
	// HeaderOriginalRoutingKey header.
	RoutingKey string
	Headers    map[string]any // the message headers; nil when it has none
	Settler    Settler        // settles this delivery on the broker
}

// Settler settles one delivery. Each method may be called once the previous
// call failed: DeadLetter and Retry may be retried, and Requeue may follow a
// failed DeadLetter or Retry. A method whose delivery can no longer be
// settled (its channel or connection is gone, so the broker will redeliver
// the message) returns an error wrapping ErrDeliveryLost.
type Settler interface {
	// Ack acknowledges the message: it is done with.
	Ack(ctx context.Context) error
	// DeadLetter publishes a copy of the message to the dead-letter queue
	// with the failure described by dl, waits for the broker to confirm the
	// copy, and only then acknowledges the original. When it returns an
	// error the original is not acknowledged.
	DeadLetter(ctx context.Context, dl DeadLetter) error
	// Retry publishes a copy of the message to wait in a delay queue for
	// at least r.Delay before it returns to the work queue, with
	// HeaderAttempt set to r.Attempt and the original exchange and routing
	// key kept in HeaderOriginalExchange and HeaderOriginalRoutingKey. It
	// waits for the broker to confirm the copy and only then acknowledges
	// the original. When it returns an error the original is not
	// acknowledged.
	Retry(ctx context.Context, r Retry) error
	// Requeue returns the message to its queue for another consumer (a
	// negative acknowledgement with requeue).
	Requeue(ctx context.Context) error
}

// ErrDeliveryLost is wrapped by Settler errors when the delivery cannot be
// settled any more because the channel it arrived on is closed. The broker
// redelivers such a message; it is never settled through another channel.
var ErrDeliveryLost = errors.New("delivery channel closed: the message will be redelivered")

// DeadLetter describes why a message is dead-lettered. The adapter writes it
// into the x-revsync-* headers of the dead-letter copy.
type DeadLetter struct {
	Class    jobs.Class // why: the error class
	Reason   string     // the error text, at most MaxReasonBytes
	Attempt  int        // the attempt that failed; 1 for the first
	FailedAt time.Time  // when it failed
	Host     string     // the worker's host name
}

// Source yields deliveries from the broker. It is what Worker.Run consumes.
type Source interface {
	// Deliveries returns the channel deliveries arrive on. The source
	// closes it after Cancel, once every delivery already received from the
	// broker has been handed over, or when the source ends on its own.
	Deliveries() <-chan Delivery
	// Cancel asks the broker to stop delivering at once (for RabbitMQ a
	// basic.cancel). Deliveries already received still arrive on
	// Deliveries, which is then closed.
	Cancel(ctx context.Context) error
	// Err returns why Deliveries was closed when the source ended on its
	// own (for example the connection was lost); nil otherwise.
	Err() error
}

// Backoff is a capped exponential backoff: Initial, doubled on every
// further try, never more than Max.
type Backoff struct {
	Initial time.Duration // default 200ms
	Max     time.Duration // default 5s
}

// DefaultBackoff is the backoff of dead-letter and retry publish retries.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second}

// withDefaults fills zero fields from DefaultBackoff.
func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	return b
}

// Delay returns how long to wait before try n+1 after try n (n >= 1)
// failed: Initial, 2*Initial, 4*Initial, ... capped at Max. Zero fields
// take their defaults.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}
