package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/revsync/revsync/worker"
)

// Consumer consumes the work queue on a channel of its own and hands the
// deliveries over as worker.Delivery values. It implements worker.Source.
type Consumer struct {
	ch        *amqp.Channel
	tag       string
	pub       *Publisher
	dlx       string
	log       *zap.Logger
	out       chan worker.Delivery
	quit      chan struct{} // closed by Close: stop forwarding
	done      chan struct{} // closed when forwarding has stopped
	closes    chan *amqp.Error
	cancels   chan string
	mu        sync.Mutex
	cancelled bool  // Cancel was called
	err       error // why forwarding stopped on its own
	closeOnce sync.Once
}

var _ worker.Source = (*Consumer)(nil)

// consume opens a channel, sets its prefetch and starts consuming the work
// queue with manual acknowledgements.
func (c *Client) consume() (*Consumer, error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open consuming channel: %w", err)
	}
	if err := ch.Qos(c.cfg.Prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("set prefetch %d: %w", c.cfg.Prefetch, err)
	}
	cons := &Consumer{
		ch:   ch,
		tag:  consumerTag(),
		pub:  c.pub,
		dlx:  c.cfg.DeadLetterExchange,
		log:  c.log,
		out:  make(chan worker.Delivery),
		quit: make(chan struct{}),
		done: make(chan struct{}),
		// Buffered: the client sends to them synchronously.
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
		cancels: ch.NotifyCancel(make(chan string, 1)),
	}
	msgs, err := ch.Consume(c.cfg.Queue, cons.tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("consume queue %q: %w", c.cfg.Queue, err)
	}
	go cons.forward(msgs)
	return cons, nil
}

func consumerTag() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("revsync-%s-%d-%s", host, os.Getpid(), NewMessageID()[:8])
}

// forward hands deliveries over until the client closes msgs (after a
// cancel, or because the channel closed) or Close is called.
func (c *Consumer) forward(msgs <-chan amqp.Delivery) {
	defer close(c.done)
	defer close(c.out)
	for m := range msgs {
		d := worker.Delivery{
			Body:       m.Body,
			MessageID:  m.MessageId,
			RoutingKey: m.RoutingKey,
			Headers:    map[string]any(m.Headers),
			Settler:    &settler{c: c, m: m},
		}
		select {
		case c.out <- d:
		case <-c.quit:
			// Unsettled: the broker requeues it when the channel closes.
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelled {
		return
	}
	select {
	case ae, ok := <-c.closes:
		if ok && ae != nil {
			c.err = fmt.Errorf("consuming channel closed: %w", ae)
			return
		}
	default:
	}
	select {
	case tag := <-c.cancels:
		c.err = fmt.Errorf("consumer %q cancelled by the broker (queue deleted?)", tag)
		return
	default:
	}
	c.err = errors.New("consuming channel closed")
}

// Deliveries returns the deliveries. It is closed after Cancel once every
// delivery already received is handed over, or when the channel closes.
func (c *Consumer) Deliveries() <-chan worker.Delivery { return c.out }

// Cancel tells the broker to stop delivering to this consumer (basic.cancel)
// and waits for its answer, at most until ctx is done.
func (c *Consumer) Cancel(ctx context.Context) error {
	// Set first: the deliveries channel may close before Cancel returns.
	c.mu.Lock()
	c.cancelled = true
	c.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- c.ch.Cancel(c.tag, false) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("cancel consumer %q: %w", c.tag, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cancel consumer %q: %w", c.tag, ctx.Err())
	}
}

// Err returns why Deliveries closed when the consumer ended on its own.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close stops forwarding and closes the consuming channel; the broker
// requeues every delivery not yet settled. It waits at most until ctx is
// done for the broker's answer.
func (c *Consumer) Close(ctx context.Context) error {
	var err error
	c.closeOnce.Do(func() {
		close(c.quit)
		errc := make(chan error, 1)
		go func() { errc <- c.ch.Close() }()
		select {
		case err = <-errc:
			if errors.Is(err, amqp.ErrClosed) {
				err = nil
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			err = errors.Join(err, ctx.Err())
		}
	})
	if err != nil {
		return fmt.Errorf("close consuming channel: %w", err)
	}
	return nil
}

// settler settles one delivery on the channel it arrived on.
type settler struct {
	c *Consumer
	m amqp.Delivery
}

var _ worker.Settler = (*settler)(nil)

// lost wraps err from settling on a closed channel.
func (s *settler) lost(what string, err error) error {
	s.c.log.Debug("delivery's channel is closed; it will be redelivered",
		zap.String("message_id", s.m.MessageId), zap.String("action", what), zap.Error(err))
	if err == nil {
		return fmt.Errorf("%s message %q: %w", what, s.m.MessageId, worker.ErrDeliveryLost)
	}
	return fmt.Errorf("%s message %q: %w: %w", what, s.m.MessageId, worker.ErrDeliveryLost, err)
}

// Ack acknowledges the delivery.
func (s *settler) Ack(context.Context) error {
	if s.c.ch.IsClosed() {
		return s.lost("ack", nil)
	}
	if err := s.m.Ack(false); err != nil {
		return s.lost("ack", err)
	}
	return nil
}

// Requeue nacks the delivery with requeue.
func (s *settler) Requeue(context.Context) error {
	if s.c.ch.IsClosed() {
		return s.lost("requeue", nil)
	}
	if err := s.m.Nack(false, true); err != nil {
		return s.lost("requeue", err)
	}
	return nil
}

// DeadLetter publishes the dead-letter copy with confirm, then acks the
// original. When the delivery's channel is already closed it publishes
// nothing: the redelivered message will be handled again.
func (s *settler) DeadLetter(ctx context.Context, dl worker.DeadLetter) error {
	if s.c.ch.IsClosed() {
		return s.lost("dead-letter", nil)
	}
	if err := s.c.pub.PublishTo(ctx, s.c.dlx, s.m.RoutingKey, deadLetterCopy(s.m, dl)); err != nil {
		return fmt.Errorf("dead-letter message %q: %w", s.m.MessageId, err)
	}
	if err := s.m.Ack(false); err != nil || s.c.ch.IsClosed() {
		// The copy is in the dead-letter queue and the original comes
		// back: it will be dead-lettered a second time.
		return s.lost("ack dead-lettered", err)
	}
	return nil
}

// deadLetterCopy is the dead-letter copy of m: its body and properties,
// plus the x-revsync-* headers describing dl. Two properties are not
// copied: expiration (the copy must not expire in the dead-letter queue)
// and user_id (the broker checks it against the publishing connection's
// user). The copy is persistent whatever the original was.
func deadLetterCopy(m amqp.Delivery, dl worker.DeadLetter) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+7)
	for k, v := range m.Headers {
		h[k] = v
	}
	failedAt := dl.FailedAt
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	h[worker.HeaderErrorClass] = string(dl.Class)
	h[worker.HeaderError] = dl.Reason
	h[worker.HeaderAttempt] = int32(max(dl.Attempt, 1))
	h[worker.HeaderFailedAt] = failedAt.UTC().Format(time.RFC3339)
	h[worker.HeaderWorkerHost] = dl.Host
	h[worker.HeaderOriginalExchange] = m.Exchange
	h[worker.HeaderOriginalRoutingKey] = m.RoutingKey
	return amqp.Publishing{
		Headers:         h,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationId,
		ReplyTo:         m.ReplyTo,
		MessageId:       m.MessageId,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppId:           m.AppId,
		Body:            m.Body,
	}
}
