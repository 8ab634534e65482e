package rabbitmq

import (
	"context"
	"fmt"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

// HeaderReplays counts how often a message was replayed from the
// dead-letter queue. Replay sets it; nothing else reads it.
const HeaderReplays = "x-revsync-replays"

// ClassDeliveryLimit is the class Replay reports for a message the broker
// itself dead-lettered at the work queue's delivery limit: it carries the
// broker's x-death header and none of revsync's.
const ClassDeliveryLimit jobs.Class = "delivery_limit"

// ReplayOptions selects what ReplayDeadLetters moves back.
type ReplayOptions struct {
	// Limit caps how many messages are moved (listed, in a dry run).
	// Default 0: every message that was in the dead-letter queue when the
	// replay started.
	Limit int
	// Classes, when not empty, moves only messages dead-lettered with one
	// of these classes; the others stay in the dead-letter queue.
	Classes []jobs.Class
	// DryRun reports what would be moved and moves nothing.
	DryRun bool
	// OnMessage, when set, is called for every message examined.
	OnMessage func(ReplayedMessage)
}

// ReplayedMessage describes one message a replay examined.
type ReplayedMessage struct {
	MessageID  string
	RoutingKey string     // the original routing key it is republished with
	Class      jobs.Class // why it was dead-lettered
	Reason     string     // the error text, if any
	Moved      bool       // republished and removed from the dead-letter queue
}

// ReplayResult counts what a replay did.
type ReplayResult struct {
	Moved   int // republished to the events exchange
	Skipped int // examined and left in the dead-letter queue
	// Unexamined were in the dead-letter queue when the replay started
	// but not looked at (the limit was reached); they are still there.
	Unexamined int
}

// ReplayDeadLetters moves messages from the dead-letter queue back to the
// events exchange, with their original routing key, body, message id and
// properties, for the workers to handle afresh (attempt 1). Every copy is
// a confirmed, mandatory publish, and the dead-lettered message is
// acknowledged only once its copy is confirmed, so nothing is lost; if that
// ack fails the message is both replayed and still dead-lettered (a
// duplicate, harmless since exports are idempotent).
//
// It examines at most the number of messages the queue held when it
// started, so a message that fails again during the replay, and comes back
// to the queue, is not replayed twice in one run. Messages it skips are
// returned to the queue when it ends.
func (c *Client) ReplayDeadLetters(ctx context.Context, opts ReplayOptions) (res ReplayResult, err error) {
	conn, err := c.pub.connection(ctx)
	if err != nil {
		return res, fmt.Errorf("rabbitmq: replay: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return res, fmt.Errorf("rabbitmq: replay: open channel: %w", err)
	}
	defer closeChannel(ch)

	q, err := ch.QueueDeclarePassive(c.cfg.DeadLetterQueue, true, false, false, false, deadLetterQueueArgs())
	if err != nil {
		return res, fmt.Errorf("rabbitmq: replay: dead-letter queue %q: %w", c.cfg.DeadLetterQueue, err)
	}
	var held []amqp.Delivery // skipped, returned to the queue at the end
	defer func() {
		for _, d := range held {
			_ = d.Nack(false, true)
		}
	}()
	defer func() { res.Unexamined = max(q.Messages-res.Moved-res.Skipped, 0) }()
	for range q.Messages {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if opts.Limit > 0 && (res.Moved >= opts.Limit || (opts.DryRun && res.Skipped >= opts.Limit)) {
			break
		}
		d, ok, err := ch.Get(c.cfg.DeadLetterQueue, false)
		if err != nil {
			return res, fmt.Errorf("rabbitmq: replay: get from %q: %w", c.cfg.DeadLetterQueue, err)
		}
		if !ok {
			break // drained by someone else meanwhile
		}
		_, key := originalRoute(d)
		m := ReplayedMessage{MessageID: d.MessageId, RoutingKey: key, Class: deadLetterClass(d)}
		m.Reason, _ = d.Headers[worker.HeaderError].(string)
		if opts.DryRun || (len(opts.Classes) > 0 && !slices.Contains(opts.Classes, m.Class)) {
			held = append(held, d)
			res.Skipped++
			report(opts, m)
			continue
		}
		if err := c.pub.PublishTo(ctx, c.cfg.Exchange, key, replayCopy(d)); err != nil {
			held = append(held, d)
			report(opts, m)
			return res, fmt.Errorf("rabbitmq: replay message %q to %q: %w", d.MessageId, key, err)
		}
		if err := d.Ack(false); err != nil {
			return res, fmt.Errorf("rabbitmq: replay: message %q was republished but is still in %q (ack failed: %w); it will be replayed again next time",
				d.MessageId, c.cfg.DeadLetterQueue, err)
		}
		m.Moved = true
		res.Moved++
		report(opts, m)
	}
	return res, nil
}

func report(opts ReplayOptions, m ReplayedMessage) {
	if opts.OnMessage != nil {
		opts.OnMessage(m)
	}
}

// deadLetterClass is why d was dead-lettered: revsync's class header, or
// ClassDeliveryLimit for a message the broker dead-lettered itself.
func deadLetterClass(d amqp.Delivery) jobs.Class {
	if c, ok := d.Headers[worker.HeaderErrorClass].(string); ok && c != "" {
		return jobs.Class(c)
	}
	if _, ok := d.Headers["x-death"]; ok {
		return ClassDeliveryLimit
	}
	return ""
}

// replayCopy is d as it was first published: the dead-letter, retry and
// broker headers are dropped (so it starts again at attempt 1), and the
// replay count goes up by one.
func replayCopy(d amqp.Delivery) amqp.Publishing {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		if strings.HasPrefix(k, "x-revsync-") || strings.HasPrefix(k, "x-death") ||
			strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") ||
			k == "x-delivery-count" {
			continue
		}
		headers[k] = v
	}
	headers[HeaderReplays] = int32(replays(d.Headers) + 1)
	return republished(d, headers)
}

func replays(h amqp.Table) int {
	switch v := h[HeaderReplays].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	}
	return 0
}
