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

// Consumer consumes the work queue and hands the deliveries over as
// worker.Delivery values. It implements worker.Source, and outlives the
// channels and connections it consumes on: when the consuming channel is
// lost (the connection dropped, the broker closed the channel, say on a
// consumer_timeout, or cancelled the consumer) it consumes again, on a new
// channel of the client's current connection, with the prefetch restored.
// Deliveries never carry over: each is settled on the channel it arrived on,
// and one whose channel is gone settles with an error wrapping
// worker.ErrDeliveryLost (the broker redelivers it). Deliveries received on a
// channel that closed before the worker took them are dropped, for the same
// reason.
//
// Deliveries is closed after Cancel, once the deliveries already received
// are handed over, after Close, or when the client gives up (Err says why).
type Consumer struct {
	c   *Client
	tag string
	log *zap.Logger
	out chan worker.Delivery

	stopCtx  context.Context // cancelled by Cancel and Close: stop consuming
	stopping context.CancelFunc
	quit     chan struct{} // closed by Close: stop forwarding at once
	done     chan struct{} // closed when forwarding stopped

	mu        sync.Mutex
	cur       *consumerChannel // the channel consuming now; nil between channels
	cancelled bool             // Cancel was called
	err       error            // why forwarding stopped on its own
	closeOnce sync.Once
}

var _ worker.Source = (*Consumer)(nil)

// consumerChannel is one channel consuming the work queue. The settlers of
// its deliveries use it, and nothing else.
type consumerChannel struct {
	ch   *amqp.Channel
	conn *amqp.Connection
	pub  *Publisher
	dlx  string
	cfg  Config
	log  *zap.Logger
	// retry routes retry copies to the delay queues (retry.go).
	retry retryRoutes
	// lost is closed once the channel is closed, reason holding the
	// broker's reason (nil for a close we asked for).
	lost   chan struct{}
	reason *amqp.Error
}

// Consume starts consuming the work queue, now or as soon as the client is
// connected, and keeps consuming across reconnections until Cancel or Close.
// Most callers want Run instead; the consumer must be closed. While it is
// not consuming, the client is not ready.
func (c *Client) Consume() (*Consumer, error) {
	stopCtx, stopping := context.WithCancel(context.Background())
	s := &Consumer{
		c:        c,
		tag:      consumerTag(),
		log:      c.log,
		out:      make(chan worker.Delivery),
		stopCtx:  stopCtx,
		stopping: stopping,
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	var err error
	start := false
	c.setState(func() {
		if err = c.err; err == nil {
			c.running++
			start, c.consConn.started = !c.consConn.started, true
		}
	})
	if err != nil {
		stopping()
		return nil, err
	}
	if start {
		// The consuming connection: opened now, in the background, and
		// kept until Close.
		c.supervisors.Go(func() { c.supervise(&c.consConn, nil) })
	}
	go s.run()
	return s, nil
}

func consumerTag() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("revsync-%s-%d-%s", host, os.Getpid(), NewMessageID()[:8])
}

// run consumes, channel after channel, until stopped or the client ends.
func (s *Consumer) run() {
	defer close(s.done)
	defer close(s.out)
	defer s.c.setState(func() { s.c.running-- })

	failures := 0 // consecutive failures to consume on a live connection
	redeclare := false
	// pause waits before consuming again after a failure.
	pause := func(err error) bool {
		failures++
		delay := jitter(s.c.cfg.ReconnectBackoff.Delay(failures))
		s.log.Warn("cannot consume the work queue; retrying",
			zap.String("queue", s.c.cfg.Queue), zap.Int("attempt", failures),
			zap.Duration("retry_in", delay.Round(time.Millisecond)), zap.Error(err))
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-s.stopCtx.Done():
			return false
		}
	}
	for {
		conn, err := s.c.consumeConnection(s.stopCtx)
		if err != nil {
			if s.stopCtx.Err() == nil {
				s.setErr(err)
			}
			return
		}
		cc, msgs, err := s.open(conn, redeclare)
		if err != nil {
			var te *TopologyError
			switch {
			case s.stopCtx.Err() != nil:
				return
			case errors.As(err, &te):
				// Declared again after the consumer was cancelled: fatal,
				// for the whole client.
				if s.c.end(err) {
					s.log.Error("giving up on RabbitMQ: the topology conflicts with the broker's", zap.Error(err))
				}
				s.setErr(s.c.Err())
				return
			case conn.IsClosed():
				// Lost meanwhile: the client reconnects.
				continue
			}
			if !pause(err) {
				return
			}
			continue
		}
		redeclare = false

		s.mu.Lock()
		stop := s.cancelled || s.stopCtx.Err() != nil
		if !stop {
			s.cur = cc
		}
		s.mu.Unlock()
		if stop {
			// Cancel or Close came while the channel opened: nothing was
			// handed over; closing it returns what arrived.
			closeChannel(cc.ch)
			return
		}
		s.c.setState(func() { s.c.active++ })
		s.log.Info("consuming", zap.String("queue", s.c.cfg.Queue), zap.String("consumer_tag", s.tag),
			zap.Int("prefetch", s.c.cfg.Prefetch))
		since := time.Now()
		s.forward(cc, msgs)
		s.c.setState(func() { s.c.active-- })
		s.mu.Lock()
		cancelled := s.cancelled
		s.mu.Unlock()

		// Returning, run leaves cur for Close to close: deliveries in
		// flight may still be settled on it.
		select {
		case <-s.quit:
			return
		case <-s.c.life.Done():
			s.setErr(s.c.Err())
			return
		default:
		}
		if cancelled {
			// Our basic.cancel: every delivery received is handed over.
			return
		}
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
		var lost error
		switch {
		case cc.ch.IsClosed():
			<-cc.lost // closed right after the deliveries
			if conn.IsClosed() {
				// The connection was lost; the client logs it once and
				// reconnects.
				failures = 0
				continue
			}
			fields := []zap.Field{zap.String("queue", s.c.cfg.Queue)}
			lost = errors.New("channel closed")
			if cc.reason != nil {
				fields = append(fields, zap.String("reason", cc.reason.Reason), zap.Int("code", cc.reason.Code))
				lost = cc.reason
			}
			s.log.Warn("consuming channel closed by the broker; its unacknowledged deliveries will be redelivered; consuming again", fields...)
		default:
			// The broker cancelled the consumer: the queue was deleted,
			// or its leader moved. Declare the topology again and
			// consume anew.
			s.log.Warn("consumer cancelled by the broker; declaring the topology again and consuming again",
				zap.String("queue", s.c.cfg.Queue), zap.String("consumer_tag", s.tag))
			closeChannel(cc.ch)
			redeclare = true
			lost = errors.New("consumer cancelled by the broker")
		}
		// A channel the broker closes again and again right after it
		// opened must not make a busy loop.
		if time.Since(since) > s.c.cfg.ReconnectBackoff.Max {
			failures = 0
		} else if !pause(lost) {
			return
		}
	}
}

// open opens a channel on conn, sets its prefetch and starts consuming the
// work queue with manual acknowledgements, within Config.DialTimeout. With
// redeclare it declares the topology first.
func (s *Consumer) open(conn *amqp.Connection, redeclare bool) (*consumerChannel, <-chan amqp.Delivery, error) {
	ctx, cancel := context.WithTimeout(s.stopCtx, s.c.cfg.DialTimeout)
	defer cancel()
	cfg := s.c.cfg
	if redeclare {
		if err := declare(ctx, conn, cfg); err != nil {
			return nil, nil, err
		}
	}
	var (
		cc   *consumerChannel
		msgs <-chan amqp.Delivery
	)
	err := within(ctx, func() error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open consuming channel: %w", err)
		}
		if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
			closeChannel(ch)
			return fmt.Errorf("set prefetch %d: %w", cfg.Prefetch, err)
		}
		cc = &consumerChannel{
			ch: ch, conn: conn, pub: s.c.pub, dlx: cfg.DeadLetterExchange, cfg: cfg, log: s.log,
			retry: newRetryRoutes(cfg),
			lost:  make(chan struct{}),
		}
		// Buffered: the library sends to it synchronously.
		closes := ch.NotifyClose(make(chan *amqp.Error, 1))
		go func() {
			for e := range closes {
				if e != nil {
					cc.reason = e
				}
			}
			close(cc.lost)
		}()
		msgs, err = ch.Consume(cfg.Queue, s.tag, false, false, false, false, nil)
		if err != nil {
			closeChannel(ch)
			return fmt.Errorf("consume queue %q: %w", cfg.Queue, err)
		}
		return nil
	}, func() { closeChannel(cc.ch) })
	if err != nil {
		return nil, nil, err
	}
	return cc, msgs, nil
}

// closeChannel closes ch without waiting for the broker's answer.
func closeChannel(ch *amqp.Channel) {
	if !ch.IsClosed() {
		go func() { _ = ch.Close() }()
	}
}

// forward hands the deliveries of cc over until the library closes msgs
// (after a cancel, or because the channel closed) or Close is called. A
// delivery whose channel closed before the worker took it is dropped: the
// broker redelivers it.
func (s *Consumer) forward(cc *consumerChannel, msgs <-chan amqp.Delivery) {
	dropped := 0
	defer func() {
		if dropped > 0 {
			s.log.Debug("deliveries of a closed channel dropped before handling; the broker redelivers them",
				zap.Int("dropped", dropped))
		}
	}()
	for {
		var m amqp.Delivery
		var ok bool
		select {
		case m, ok = <-msgs:
			if !ok {
				return
			}
		case <-s.quit:
			return
		case <-s.c.life.Done():
			// The client gave up: Run returns its error.
			return
		}
		select {
		case <-cc.lost:
			dropped++
			continue
		default:
		}
		d := worker.Delivery{
			Body:       m.Body,
			MessageID:  m.MessageId,
			RoutingKey: m.RoutingKey,
			Headers:    map[string]any(m.Headers),
			Settler:    &settler{c: cc, m: m},
		}
		select {
		case s.out <- d:
		case <-cc.lost:
			dropped++
		case <-s.quit:
			// Unsettled: the broker requeues it when the channel closes.
			return
		}
	}
}

func (s *Consumer) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Deliveries returns the deliveries. It is closed after Cancel once every
// delivery already received is handed over, after Close, or when the client
// gives up.
func (s *Consumer) Deliveries() <-chan worker.Delivery { return s.out }

// Cancel tells the broker to stop delivering to this consumer (basic.cancel)
// and waits for its answer, at most until ctx is done. The consumer does not
// consume again, on this channel or another.
func (s *Consumer) Cancel(ctx context.Context) error {
	// Set first: the deliveries channel may close before Cancel returns.
	s.mu.Lock()
	s.cancelled = true
	cur := s.cur
	s.mu.Unlock()
	s.stopping()
	if cur == nil {
		// Not consuming (reconnecting): there is nothing to cancel, and
		// run returns without consuming again.
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- cur.ch.Cancel(s.tag, false) }()
	select {
	case err := <-errc:
		if err != nil {
			if cur.ch.IsClosed() {
				// Lost meanwhile: nothing is delivered any more, and the
				// broker requeues what was.
				return nil
			}
			return fmt.Errorf("cancel consumer %q: %w", s.tag, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cancel consumer %q: %w", s.tag, ctx.Err())
	}
}

// Err returns why Deliveries closed when the consumer ended on its own: the
// client gave up (an error wrapping ErrUnreachable) or the topology declared
// again conflicts (a *TopologyError).
func (s *Consumer) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops forwarding and consuming and closes the consuming channel;
// the broker requeues every delivery not yet settled. It waits at most until
// ctx is done for the broker's answer.
func (s *Consumer) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.stopping()
		close(s.quit)
		select {
		case <-s.done:
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		// run has returned: the channel, if any, is no longer used.
		s.mu.Lock()
		cur := s.cur
		s.cur = nil
		s.mu.Unlock()
		if cur == nil {
			return
		}
		errc := make(chan error, 1)
		go func() { errc <- cur.ch.Close() }()
		select {
		case err = <-errc:
			if errors.Is(err, amqp.ErrClosed) {
				err = nil
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	if err != nil {
		return fmt.Errorf("close consuming channel: %w", err)
	}
	return nil
}

// settler settles one delivery on the channel it arrived on, and nowhere
// else: c is that channel, never replaced.
type settler struct {
	c *consumerChannel
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
	_, routingKey := originalRoute(s.m) // retry.go: a retried message's own routing key is the work queue's
	if err := s.c.pub.PublishTo(ctx, s.c.dlx, routingKey, deadLetterCopy(s.m, dl)); err != nil {
		return fmt.Errorf("dead-letter message %q: %w", s.m.MessageId, err)
	}
	if err := s.m.Ack(false); err != nil || s.c.ch.IsClosed() {
		// The copy is in the dead-letter queue and the original comes
		// back: it will be dead-lettered a second time.
		return s.lost("ack dead-lettered", err)
	}
	return nil
}

// deadLetterCopy is the dead-letter copy of m: its body, properties and
// headers (see republished), plus the x-revsync-* headers describing dl.
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
	h[worker.HeaderOriginalExchange], h[worker.HeaderOriginalRoutingKey] = originalRoute(m)
	return republished(m, h)
}

// republished is m published anew with headers: the same body and
// properties, persistent whatever m was, without two properties:
// expiration (a copy must not expire where it waits unless the caller sets
// one) and user_id (the broker checks it against the publishing
// connection's user). Headers too big for one frame are cut down by
// fitHeaders.
func republished(m amqp.Delivery, headers amqp.Table) amqp.Publishing {
	return amqp.Publishing{
		Headers:         fitHeaders(headers),
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
