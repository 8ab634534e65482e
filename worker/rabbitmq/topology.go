package rabbitmq

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TopologyError reports a queue or exchange that already exists with
// arguments other than the ones revsync declares (the broker answered 406
// PRECONDITION_FAILED). revsync never changes or deletes it; an operator
// must. cmd/revsync exits with code 78 on it.
type TopologyError struct {
	Queue    string // the queue at fault, or ""
	Exchange string // the exchange at fault, or ""
	// Argument is the argument that differs as the broker named it (for
	// example "x-queue-type", "x-dead-letter-exchange", "durable", "type"),
	// or "" if the broker's reason did not name one.
	Argument string
	Reason   string // the broker's reason text
	// Declared is what revsync declares: the queue's arguments, or for an
	// exchange its type and durability.
	Declared string
}

func (e *TopologyError) Error() string {
	what := fmt.Sprintf("queue %q", e.Queue)
	if e.Queue == "" {
		what = fmt.Sprintf("exchange %q", e.Exchange)
	}
	if e.Argument == "" && !strings.Contains(e.Reason, "inequivalent") {
		// Not a mismatch with an existing queue: the broker refused the
		// declaration itself (say, a value out of its range).
		return fmt.Sprintf("the broker refused to declare %s with %s: %s", what, e.Declared, e.Reason)
	}
	arg := "different arguments"
	if e.Argument != "" {
		// The broker names the first argument it finds different; others
		// may differ too.
		arg = fmt.Sprintf("a different %q argument", e.Argument)
	}
	return fmt.Sprintf("%s already exists with %s (broker: %s); revsync declares it with %s "+
		"and does not change or delete an existing one: migrate or delete it, or configure another name",
		what, arg, e.Reason, e.Declared)
}

// describeArgs renders queue arguments sorted, as "durable, k=v, ...".
func describeArgs(args amqp.Table) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{"durable"}
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, args[k]))
	}
	return strings.Join(parts, ", ")
}

// workQueueArgs are the arguments of a quorum queue dead-lettering to dlx.
// At-least-once dead-lettering (RabbitMQ 3.10+) keeps a message the queue
// dead-letters (delivery limit reached) until the dead-letter exchange
// routed it; it requires x-overflow reject-publish, which only matters if a
// length limit is ever set by policy.
func workQueueArgs(cfg Config) amqp.Table {
	return amqp.Table{
		amqp.QueueTypeArg:        amqp.QueueTypeQuorum,
		"x-dead-letter-exchange": cfg.DeadLetterExchange,
		"x-dead-letter-strategy": "at-least-once",
		"x-overflow":             "reject-publish",
		"x-delivery-limit":       int64(cfg.DeliveryLimit),
	}
}

func deadLetterQueueArgs() amqp.Table {
	return amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
}

// declareTopology declares, idempotently, the exchanges, queues and
// bindings of cfg on ch. A 406 from the broker becomes a *TopologyError; the
// broker then closes ch.
func declareTopology(ch *amqp.Channel, cfg Config) error {
	for _, ex := range []string{cfg.Exchange, cfg.DeadLetterExchange} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return topologyError(err, "", ex, "durable, type=topic", fmt.Sprintf("declare exchange %q", ex))
		}
	}
	if _, err := ch.QueueDeclare(cfg.DeadLetterQueue, true, false, false, false, deadLetterQueueArgs()); err != nil {
		return topologyError(err, cfg.DeadLetterQueue, "", describeArgs(deadLetterQueueArgs()), fmt.Sprintf("declare queue %q", cfg.DeadLetterQueue))
	}
	if err := ch.QueueBind(cfg.DeadLetterQueue, "#", cfg.DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q: %w", cfg.DeadLetterQueue, cfg.DeadLetterExchange, err)
	}
	if _, err := ch.QueueDeclare(cfg.Queue, true, false, false, false, workQueueArgs(cfg)); err != nil {
		return topologyError(err, cfg.Queue, "", describeArgs(workQueueArgs(cfg)), fmt.Sprintf("declare queue %q", cfg.Queue))
	}
	for _, key := range cfg.BindingKeys {
		if err := ch.QueueBind(cfg.Queue, key, cfg.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", cfg.Queue, cfg.Exchange, key, err)
		}
	}
	return declareRetryQueues(ch, cfg) // the delay queues of retries: retry.go
}

// topologyError classifies err from declaring queue or exchange: a 406
// PRECONDITION_FAILED becomes a *TopologyError, anything else is wrapped
// with what.
func topologyError(err error, queue, exchange, declared, what string) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return &TopologyError{Queue: queue, Exchange: exchange, Argument: inequivalentArg(ae.Reason), Reason: ae.Reason, Declared: declared}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// inequivalentArg extracts the argument name from a 406 reason such as
// "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in
// vhost '/': ...". The reason text is the only place the broker names it.
func inequivalentArg(reason string) string {
	_, rest, ok := strings.Cut(reason, "inequivalent arg '")
	if !ok {
		return ""
	}
	arg, _, ok := strings.Cut(rest, "'")
	if !ok {
		return ""
	}
	return arg
}
