package rabbitmq

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/revsync/revsync/worker"
)

// The delay queues of delayed retries: see "Delayed retries" in doc.go.

// RetryQueueName returns the name of the delay queue of delay d for the
// work queue queue: "<queue>.retry.<d>", with d written as Go writes
// durations, trailing zero units dropped ("500ms", "5s", "2m", "1h30m").
func RetryQueueName(queue string, d time.Duration) string {
	return queue + ".retry." + formatDelay(d)
}

func formatDelay(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// RetryQueues returns the names of the delay queues cfg declares, shortest
// delay first.
func RetryQueues(cfg Config) []string {
	delays := retryDelays(cfg.RetryDelays)
	names := make([]string, len(delays))
	for i, d := range delays {
		names[i] = RetryQueueName(cfg.queueName(), d)
	}
	return names
}

// queueName is the work queue's name, defaulted.
func (c Config) queueName() string {
	if c.Queue == "" {
		return DefaultQueue
	}
	return c.Queue
}

// retryDelays returns delays sorted, without duplicates, each rounded up to
// a whole millisecond (the unit of AMQP TTLs); worker.DefaultRetrySchedule when
// empty.
func retryDelays(delays []time.Duration) []time.Duration {
	if len(delays) == 0 {
		delays = worker.DefaultRetrySchedule
	}
	out := make([]time.Duration, len(delays))
	for i, d := range delays {
		out[i] = time.Duration(ttlMillis(d)) * time.Millisecond
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// maxTTL is the longest message TTL RabbitMQ takes: 2^32-1 ms, about 49
// days.
const maxTTL = 1<<32 - 1

// ttlMillis is d in milliseconds, rounded up, between 0 and maxTTL.
func ttlMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(d.Milliseconds()+min(int64(d%time.Millisecond), 1), maxTTL)
}

// retryQueueArgs are the arguments of the delay queue of delay d: a quorum
// queue whose messages expire after d and are then dead-lettered, at least
// once, to the work queue through the default exchange. At-least-once
// dead-lettering requires x-overflow reject-publish.
func retryQueueArgs(cfg Config, d time.Duration) amqp.Table {
	return amqp.Table{
		amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
		"x-message-ttl":             ttlMillis(d),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": cfg.Queue,
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
	}
}

// declareRetryQueues declares the delay queue of every retry delay of cfg.
// A 406 from the broker becomes a *TopologyError.
func declareRetryQueues(ch *amqp.Channel, cfg Config) error {
	for _, d := range retryDelays(cfg.RetryDelays) {
		name, args := RetryQueueName(cfg.Queue, d), retryQueueArgs(cfg, d)
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			return topologyError(err, name, "", describeArgs(args), fmt.Sprintf("declare queue %q", name))
		}
	}
	return nil
}

// retryRoutes maps a wanted delay to the delay queue that holds it.
type retryRoutes struct {
	queue  string          // the work queue
	delays []time.Duration // sorted, as declared
}

func newRetryRoutes(cfg Config) retryRoutes {
	return retryRoutes{queue: cfg.Queue, delays: retryDelays(cfg.RetryDelays)}
}

// route returns the delay queue for a wanted delay — the one of the
// smallest delay at least as long, or the longest — and the message's
// expiration: the wanted delay, at most the queue's.
func (r retryRoutes) route(wanted time.Duration) (queue, expiration string) {
	i, _ := slices.BinarySearch(r.delays, time.Duration(ttlMillis(wanted))*time.Millisecond)
	i = min(i, len(r.delays)-1)
	tier := r.delays[i]
	return RetryQueueName(r.queue, tier), strconv.FormatInt(min(ttlMillis(wanted), ttlMillis(tier)), 10)
}

// originalRoute returns the exchange and routing key m was first published
// with: from the x-revsync-original-* headers of a message back from a
// delay queue (dead-lettering replaced its routing key with the work
// queue's name), else m's own.
func originalRoute(m amqp.Delivery) (exchange, routingKey string) {
	exchange, routingKey = m.Exchange, m.RoutingKey
	if rk, ok := m.Headers[worker.HeaderOriginalRoutingKey].(string); ok && rk != "" {
		routingKey = rk
		if ex, ok := m.Headers[worker.HeaderOriginalExchange].(string); ok {
			exchange = ex
		}
	}
	return exchange, routingKey
}

// Retry publishes the retry copy of the delivery to its delay queue with
// confirm, then acks the original. When the delivery's channel is already
// closed it publishes nothing: the redelivered message will be handled
// again.
func (s *settler) Retry(ctx context.Context, r worker.Retry) error {
	if s.c.ch.IsClosed() {
		return s.lost("retry", nil)
	}
	queue, expiration := s.c.retry.route(r.Delay)
	if err := s.c.pub.PublishTo(ctx, "", queue, retryCopy(s.m, r, expiration)); err != nil {
		return fmt.Errorf("retry message %q: %w", s.m.MessageId, err)
	}
	if err := s.m.Ack(false); err != nil || s.c.ch.IsClosed() {
		// The copy waits in the delay queue and the original comes back:
		// it will be exported (or retried) twice, which is idempotent.
		return s.lost("ack retried", err)
	}
	return nil
}

// retryCopy is the copy of m that waits in a delay queue: its body,
// properties and headers, with x-revsync-attempt set to r.Attempt, the
// original exchange and routing key kept in x-revsync-original-* (set once,
// on the first retry), the reason in x-revsync-retry-*, and expiration set
// to the wanted delay. user_id is dropped (the broker checks it against the
// publishing connection's user), and so is x-delivery-count (the work
// queue's count of deliveries of the original). The copy is persistent.
func retryCopy(m amqp.Delivery, r worker.Retry, expiration string) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+5)
	for k, v := range m.Headers {
		h[k] = v
	}
	delete(h, "x-delivery-count")
	h[worker.HeaderOriginalExchange], h[worker.HeaderOriginalRoutingKey] = originalRoute(m)
	h[worker.HeaderAttempt] = int32(max(r.Attempt, 1))
	h[worker.HeaderRetryClass] = string(r.Class)
	h[worker.HeaderRetryReason] = r.Reason
	delete(h, worker.HeaderNotBefore)
	if !r.NotBefore.IsZero() {
		h[worker.HeaderNotBefore] = r.NotBefore.UnixMilli()
	}
	p := republished(m, h)
	p.Expiration = expiration
	return p
}
