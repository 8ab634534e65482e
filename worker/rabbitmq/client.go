package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/revsync/revsync/worker"
)

// closeTimeout bounds closing channels and the connection.
const closeTimeout = 5 * time.Second

// Client is a connection to RabbitMQ with revsync's topology declared and a
// Publisher ready. It does not reconnect yet: once the connection is lost,
// Run returns an error.
type Client struct {
	cfg  Config
	log  *zap.Logger
	conn *amqp.Connection
	pub  *Publisher

	watching  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the broker, declares the topology (exchanges, queues,
// bindings; see the package documentation) and opens the publisher. ctx and
// Config.DialTimeout bound it. A queue or exchange that exists with other
// arguments makes it fail with a *TopologyError, leaving that queue or
// exchange untouched.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()

	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)
	amqpCfg := amqp.Config{
		Heartbeat:  cfg.Heartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial:       amqp.DefaultDial(cfg.DialTimeout),
	}
	type dialed struct {
		conn *amqp.Connection
		err  error
	}
	res := make(chan dialed, 1)
	go func() {
		conn, err := amqp.DialConfig(cfg.URL, amqpCfg)
		res <- dialed{conn, err}
	}()
	var conn *amqp.Connection
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitmq: connect to %s: %w", cfg.RedactedURL(), r.err)
		}
		conn = r.conn
	case <-ctx.Done():
		go func() {
			if r := <-res; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("rabbitmq: connect to %s: %w", cfg.RedactedURL(), ctx.Err())
	}

	c := &Client{cfg: cfg, log: cfg.Logger, conn: conn, pub: newPublisher(conn, cfg)}
	if err := c.declare(ctx); err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return nil, err
	}
	if err := c.pub.open(); err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	c.watch()
	c.log.Info("connected to RabbitMQ",
		zap.String("url", cfg.RedactedURL()), zap.String("queue", cfg.Queue),
		zap.String("exchange", cfg.Exchange), zap.Int("prefetch", cfg.Prefetch))
	return c, nil
}

// declare declares the topology on a channel of its own, within ctx: past
// it the connection is closed, which ends the pending call.
func (c *Client) declare(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		ch, err := c.conn.Channel()
		if err != nil {
			errc <- fmt.Errorf("rabbitmq: open channel: %w", err)
			return
		}
		err = declareTopology(ch, c.cfg)
		if !ch.IsClosed() {
			_ = ch.Close()
		}
		var te *TopologyError
		if err != nil && !errors.As(err, &te) {
			err = fmt.Errorf("rabbitmq: declare topology: %w", err)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		_ = c.conn.CloseDeadline(time.Now().Add(closeTimeout))
		<-errc
		return fmt.Errorf("rabbitmq: declare topology: %w", ctx.Err())
	}
}

// watch logs the loss of the connection and the broker blocking publishers
// (a resource alarm) as they happen.
func (c *Client) watch() {
	closes := c.conn.NotifyClose(make(chan *amqp.Error, 1))
	blocks := c.conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	c.watching.Go(func() {
		for {
			select {
			case err, ok := <-closes:
				if ok && err != nil {
					c.log.Error("connection to RabbitMQ lost", zap.String("url", c.cfg.RedactedURL()), zap.Error(err))
				}
				// Drain so the client never blocks on it.
				for range blocks {
				}
				return
			case b, ok := <-blocks:
				if !ok {
					blocks = nil
					continue
				}
				if b.Active {
					c.log.Warn("RabbitMQ is blocking publishers", zap.String("reason", b.Reason))
				} else {
					c.log.Info("RabbitMQ unblocked publishers")
				}
			}
		}
	})
}

// Config returns the client's configuration with defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// Publisher returns the client's publisher, for publishing events.
func (c *Client) Publisher() *Publisher { return c.pub }

// Consume starts consuming the work queue. Most callers want Run instead;
// the consumer must be closed.
func (c *Client) Consume() (*Consumer, error) {
	cons, err := c.consume()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	return cons, nil
}

// Run consumes the work queue and hands the deliveries to w until ctx is
// cancelled or the connection is lost; see worker.Worker.Run for what a
// shutdown does. It returns nil after a clean shutdown.
func (c *Client) Run(ctx context.Context, w *worker.Worker) error {
	if n := w.Config().Concurrency; c.cfg.Prefetch < n {
		c.log.Warn("prefetch is below the worker's concurrency: some handlers will stay idle",
			zap.Int("prefetch", c.cfg.Prefetch), zap.Int("concurrency", n))
	}
	cons, err := c.Consume()
	if err != nil {
		return err
	}
	c.log.Info("consuming", zap.String("queue", c.cfg.Queue), zap.String("consumer_tag", cons.tag))
	runErr := w.Run(ctx, cons)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	if err := cons.Close(cctx); err != nil && runErr == nil && !c.conn.IsClosed() {
		c.log.Warn("closing the consuming channel", zap.Error(err))
	}
	return runErr
}

// Close closes the connection, waiting at most a few seconds for the
// broker. Deliveries not settled are requeued by the broker.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		err := c.conn.CloseDeadline(time.Now().Add(closeTimeout))
		if err != nil && !errors.Is(err, amqp.ErrClosed) {
			c.closeErr = fmt.Errorf("rabbitmq: close connection: %w", err)
		}
		c.watching.Wait()
	})
	return c.closeErr
}
