package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
)

// ErrUnroutable is wrapped by a publish error when the broker returned the
// message because no queue was bound to take it (mandatory publish).
var ErrUnroutable = errors.New("message returned as unroutable")

// ErrNotConfirmed is wrapped by a publish error when the broker did not
// confirm the message: it nacked it; the channel or the connection closed
// before the confirm; the confirm did not arrive within the publish timeout;
// or the message could not be sent at all within that timeout because the
// client was not connected, or the broker was blocking the connection (a
// resource alarm). The message may or may not have been enqueued.
var ErrNotConfirmed = errors.New("message not confirmed by the broker")

// Publisher publishes messages with publisher confirms on a channel of its
// own. Every publish is mandatory and waits for the broker's confirm within
// Config.PublishTimeout; a returned message is a failure. Publishes are
// serialised (one in flight at a time) so that a return is always
// attributed to the message it belongs to. It is safe for concurrent use.
//
// It publishes on the client's current connection: after a reconnection it
// opens a new channel there. A publish in flight when the connection is lost
// fails with ErrNotConfirmed; one made while the client is reconnecting, or
// while the broker blocks the connection, waits for the connection within
// its deadline and fails with ErrNotConfirmed past it. Nothing is sent on a
// connection the broker blocks, so that the consumer's acknowledgements on
// the same connection keep flowing.
type Publisher struct {
	c        *Client
	exchange string
	timeout  time.Duration
	log      *zap.Logger

	sem     chan struct{}    // held while publishing
	conn    *amqp.Connection // the connection ch is a channel of
	ch      *amqp.Channel    // nil until opened; reopened once closed
	returns chan amqp.Return
	closes  chan *amqp.Error
}

func newPublisher(c *Client, cfg Config) *Publisher {
	return &Publisher{
		c:        c,
		exchange: cfg.Exchange,
		timeout:  cfg.PublishTimeout,
		log:      cfg.Logger,
		sem:      make(chan struct{}, 1),
	}
}

// Publish publishes msg to the events exchange with routingKey and waits
// for the broker to confirm it. An error wraps ErrUnroutable when no queue
// takes the message, ErrNotConfirmed when the broker did not confirm it;
// ctx and Config.PublishTimeout bound the whole call. Once the client gave
// up reconnecting the error also wraps the client's (ErrUnreachable).
func (p *Publisher) Publish(ctx context.Context, routingKey string, msg amqp.Publishing) error {
	return p.PublishTo(ctx, p.exchange, routingKey, msg)
}

// PublishTo is Publish to another exchange.
func (p *Publisher) PublishTo(ctx context.Context, exchange, routingKey string, msg amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	where := fmt.Sprintf("publish to exchange %q with routing key %q", exchange, routingKey)
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: %w: waiting for the publisher: %w", where, ErrNotConfirmed, ctx.Err())
	}
	defer func() { <-p.sem }()

	conn, err := p.connection(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	ch, err := p.channel(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", where, ErrNotConfirmed, err)
	}
	p.drainReturns()
	var dc *amqp.DeferredConfirmation
	err = within(ctx, func() error {
		// The write may block if the broker stopped reading the socket
		// (blocked connection): do not wait for it past the deadline.
		var err error
		dc, err = ch.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, true, false, msg)
		return err
	}, nil)
	if err != nil {
		p.reset()
		return fmt.Errorf("%s: %w: %w", where, ErrNotConfirmed, err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		// A confirm or return may still arrive for this message: do not
		// let it be taken for the next one's.
		p.reset()
		return fmt.Errorf("%s: %w: no confirm within the publish timeout (%s): %w", where, ErrNotConfirmed, p.timeout, err)
	}
	if !acked {
		// The library nacks the pending confirms of a channel that
		// closes, with the broker's reason (or the connection's) on
		// closes.
		select {
		case ae, ok := <-p.closes:
			if ok && ae != nil {
				p.reset()
				return fmt.Errorf("%s: %w: channel closed: %w", where, ErrNotConfirmed, ae)
			}
		default:
		}
		if ch.IsClosed() {
			p.reset()
			return fmt.Errorf("%s: %w: channel closed", where, ErrNotConfirmed)
		}
		return fmt.Errorf("%s: %w: nacked", where, ErrNotConfirmed)
	}
	// The broker sends basic.return before the basic.ack of a mandatory
	// message it could not route, and the client hands the return over
	// before it processes the ack: if there is one, it is here now.
	select {
	case r, ok := <-p.returns:
		if ok {
			return fmt.Errorf("%s: %w: %d %s", where, ErrUnroutable, r.ReplyCode, r.ReplyText)
		}
	default:
	}
	return nil
}

// connection waits, within ctx, for a connection the broker does not block.
func (p *Publisher) connection(ctx context.Context) (*amqp.Connection, error) {
	var conn *amqp.Connection
	var blocked string
	err := p.c.await(ctx, func() bool {
		conn, blocked = p.c.pubConn.conn, p.c.pubConn.blocked
		return conn != nil && !conn.IsClosed() && blocked == ""
	})
	switch {
	case err == nil:
		return conn, nil
	case ctx.Err() == nil:
		// The client ended: it gave up reconnecting, or was closed.
		return nil, fmt.Errorf("%w: %w", ErrNotConfirmed, err)
	case blocked != "":
		return nil, fmt.Errorf("%w: connection blocked by the broker (%s), not unblocked in time: %w", ErrNotConfirmed, blocked, err)
	default:
		return nil, fmt.Errorf("%w: not connected to the broker (reconnecting): %w", ErrNotConfirmed, err)
	}
}

// open opens the publishing channel on conn now rather than on the first
// publish, so that Dial fails if it cannot be opened.
func (p *Publisher) open(ctx context.Context, conn *amqp.Connection) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.sem }()
	_, err := p.channel(ctx, conn)
	return err
}

// channel returns the publishing channel on conn, opening it in confirm
// mode when there is none, it was closed, or it belongs to an earlier
// connection. Called with sem held.
func (p *Publisher) channel(ctx context.Context, conn *amqp.Connection) (*amqp.Channel, error) {
	if p.ch != nil && p.conn == conn && !p.ch.IsClosed() {
		return p.ch, nil
	}
	p.reset()
	var (
		ch      *amqp.Channel
		returns chan amqp.Return
		closes  chan *amqp.Error
	)
	err := within(ctx, func() error {
		c, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open publishing channel: %w", err)
		}
		if err := c.Confirm(false); err != nil {
			_ = c.Close()
			return fmt.Errorf("put publishing channel in confirm mode: %w", err)
		}
		// Both are buffered: the client sends to them synchronously from
		// its reader goroutine. Publishes are serialised, so at most one
		// return is pending per channel.
		returns = c.NotifyReturn(make(chan amqp.Return, 4))
		closes = c.NotifyClose(make(chan *amqp.Error, 1))
		ch = c
		return nil
	}, func() { go func() { _ = ch.Close() }() })
	if err != nil {
		return nil, err
	}
	p.conn, p.ch, p.returns, p.closes = conn, ch, returns, closes
	return ch, nil
}

// drainReturns drops returns left over from earlier publishes.
func (p *Publisher) drainReturns() {
	for {
		select {
		case _, ok := <-p.returns:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// reset abandons the publishing channel; the next publish opens another.
// Called with sem held.
func (p *Publisher) reset() {
	if p.ch == nil {
		return
	}
	ch := p.ch
	p.conn, p.ch, p.returns, p.closes = nil, nil, nil, nil
	// Closing waits for the broker's close-ok; do not make the publisher
	// wait for it.
	go func() { _ = ch.Close() }()
}

// EventPublishing returns the AMQP message carrying an entity-changed event
// body, as the event contract wants it: persistent, application/json, with
// its message ID and the current time.
func EventPublishing(body []byte, messageID string) amqp.Publishing {
	return amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    messageID,
		Timestamp:    time.Now().UTC().Truncate(time.Second),
		Body:         body,
	}
}

// NewMessageID returns a random message ID (a version 4 UUID).
func NewMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
