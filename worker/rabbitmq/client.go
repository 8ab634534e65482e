package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/revsync/revsync/worker"
)

// closeTimeout bounds closing channels and the connection.
const closeTimeout = 5 * time.Second

// ErrUnreachable is wrapped by the error of Dial, Run and publishes once the
// client gave up connecting: the reconnect budget (Config.ReconnectTimeout)
// ran out. The error names the broker, its password redacted.
var ErrUnreachable = errors.New("broker unreachable")

// ErrClientClosed is returned by the calls made on a client after Close.
var ErrClientClosed = errors.New("rabbitmq: client closed")

// Client is revsync's link to RabbitMQ, with the topology declared, that
// survives the loss of its connections: it logs the broker's reason, becomes
// not ready, reconnects with capped exponential backoff (Config.
// ReconnectBackoff), declares the topology again and lets its Publisher and
// Consumers carry on on the new connection. It gives up only when the
// reconnect budget (Config.ReconnectTimeout) runs out, or when the topology
// declared again conflicts with the broker's (a *TopologyError). A Client is
// safe for concurrent use.
//
// It publishes and consumes on two connections, as RabbitMQ recommends: the
// broker blocks a connection that publishes during a resource alarm and then
// stops reading from it, which would also hold back the consumer's
// acknowledgements. The publishing connection is named
// Config.ConnectionName + PublisherSuffix, the consuming one
// Config.ConnectionName; the consuming one is opened by the first Consume
// (or Run).
type Client struct {
	cfg  Config
	log  *zap.Logger
	pub  *Publisher
	life context.Context // cancelled when the client ends: Close, or giving up
	stop context.CancelFunc

	// notifyMu orders the OnState calls: held from a state change until
	// its callback returned.
	notifyMu sync.Mutex
	mu       sync.Mutex
	pubConn  supervised    // the publishing connection
	consConn supervised    // the consuming connection
	running  int           // Consumers not closed
	active   int           // Consumers consuming now
	err      error         // why the client ended; life is then done
	ready    bool          // the readiness last reported
	changed  chan struct{} // closed, and replaced, on every state change

	supervisors sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

// PublisherSuffix ends the name of the client's publishing connection.
const PublisherSuffix = " (publisher)"

// supervised is one of the client's connections. Its fields but role and
// name are guarded by Client.mu.
type supervised struct {
	role    string // "publish" or "consume", for logs
	name    string // the client-provided connection name
	started bool
	conn    *amqp.Connection // the connection in use; nil while there is none
	blocked string           // the broker's reason while it blocks conn
}

// Dial connects to the broker, declares the topology (exchanges, queues,
// bindings; see the package documentation) and opens the publisher. While the
// broker cannot be reached it keeps trying, with Config.ReconnectBackoff
// between attempts, until ctx is done or the reconnect budget
// (Config.ReconnectTimeout; default forever) runs out: then the error wraps
// ErrUnreachable. Config.DialTimeout bounds each attempt.
//
// Two failures are not retried: a queue or exchange that exists with other
// arguments (a *TopologyError; it is left untouched), and the broker refusing
// the credentials or the virtual host (the error wraps amqp.ErrCredentials,
// amqp.ErrVhost or amqp.ErrSASL): they are configuration errors.
//
// The returned client watches its connections until Close, reconnecting when
// one is lost.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		life:     life,
		stop:     stop,
		pubConn:  supervised{role: "publish", name: cfg.ConnectionName + PublisherSuffix, started: true},
		consConn: supervised{role: "consume", name: cfg.ConnectionName},
		changed:  make(chan struct{}),
	}
	c.pub = newPublisher(c, cfg)

	l, err := c.connect(ctx, &c.pubConn, dialing)
	if err != nil {
		stop()
		return nil, err
	}
	c.setState(func() { c.pubConn.conn = l.conn })
	c.supervisors.Go(func() { c.supervise(&c.pubConn, l) })
	c.log.Info("connected to RabbitMQ",
		zap.String("url", cfg.RedactedURL()), zap.String("queue", cfg.Queue),
		zap.String("exchange", cfg.Exchange), zap.Int("prefetch", cfg.Prefetch))
	return c, nil
}

// link is one connection with its notifications, registered before anyone
// else could use it, so that none is missed.
type link struct {
	conn   *amqp.Connection
	closes chan *amqp.Error
	blocks chan amqp.Blocking
}

// How connect is called.
type connectMode int

const (
	dialing      connectMode = iota // by Dial: a refused login is final
	opening                         // the consuming connection's first
	reconnecting                    // after a loss
)

// connect connects s and declares the topology, retrying with backoff until
// it succeeds, ctx is done, the client is closed or the reconnect budget runs
// out. Dialing, it also opens the publishing channel, and does not retry a
// refused login.
func (c *Client) connect(ctx context.Context, s *supervised, mode connectMode) (*link, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAfter := context.AfterFunc(c.life, cancel)
	defer stopAfter()

	start := time.Now()
	budget := c.cfg.ReconnectTimeout
	var lastErr error // the last failure not caused by ctx
	for attempt := 1; ; attempt++ {
		l, err := c.dialOnce(ctx, s, mode)
		if err != nil && (ctx.Err() == nil || lastErr == nil) {
			lastErr = err
		}
		if err == nil {
			if mode == reconnecting {
				c.log.Info("reconnected to RabbitMQ",
					zap.String("url", c.cfg.RedactedURL()), zap.String("connection", s.role),
					zap.Int("attempts", attempt), zap.Duration("after", time.Since(start).Round(time.Millisecond)))
			}
			return l, nil
		}
		var te *TopologyError
		switch {
		case errors.As(err, &te):
			return nil, err
		case mode == dialing && (errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) || errors.Is(err, amqp.ErrSASL)):
			return nil, fmt.Errorf("rabbitmq: %s: %w", c.cfg.RedactedURL(), err)
		case c.life.Err() != nil:
			// Closed, or another connection gave up.
			return nil, ErrClientClosed
		case ctx.Err() != nil:
			return nil, fmt.Errorf("rabbitmq: connect to %s: %w after %d attempts; last error: %w",
				c.cfg.RedactedURL(), ctx.Err(), attempt, lastErr)
		}
		elapsed := time.Since(start)
		if budget > 0 && elapsed >= budget {
			return nil, fmt.Errorf("rabbitmq: %w: %s: no connection within the reconnect budget of %s (%d attempts); last error: %w",
				ErrUnreachable, c.cfg.RedactedURL(), budget, attempt, lastErr)
		}
		delay := jitter(c.cfg.ReconnectBackoff.Delay(attempt))
		if budget > 0 {
			// The last attempt is made when the budget runs out.
			delay = min(delay, budget-elapsed)
		}
		fields := []zap.Field{
			zap.String("url", c.cfg.RedactedURL()), zap.String("connection", s.role), zap.Int("attempt", attempt),
			zap.Duration("retry_in", delay.Round(time.Millisecond)), zap.Error(err),
		}
		if attempt == 1 {
			c.log.Warn("cannot connect to RabbitMQ; retrying", fields...)
		} else {
			c.log.Info("still cannot connect to RabbitMQ; retrying", fields...)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// jitter returns a random duration between half of d and d.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// dialOnce makes one connection attempt for s: connect, register the
// notifications, declare the topology (not when opening the consuming
// connection: Dial just did) and, dialing, open the publishing channel. On
// any failure the connection is closed.
func (c *Client) dialOnce(ctx context.Context, s *supervised, mode connectMode) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()

	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(s.name)
	amqpCfg := amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial:       amqp.DefaultDial(c.cfg.DialTimeout),
	}
	var conn *amqp.Connection
	err := within(ctx, func() error {
		var err error
		conn, err = amqp.DialConfig(c.cfg.URL, amqpCfg)
		return err
	}, func() { _ = conn.Close() })
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	l := &link{
		conn: conn,
		// Buffered: the library sends to them synchronously, from the
		// goroutine reading the socket. supervise drains them.
		closes: conn.NotifyClose(make(chan *amqp.Error, 1)),
		blocks: conn.NotifyBlocked(make(chan amqp.Blocking, 8)),
	}
	if mode != opening {
		if err := declare(ctx, conn, c.cfg); err != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return nil, err
		}
	}
	if mode == dialing {
		if err := c.pub.open(ctx, conn); err != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return nil, err
		}
	}
	return l, nil
}

// declare declares the topology on a channel of its own, within ctx: past
// it the connection is closed, which ends the pending call.
func declare(ctx context.Context, conn *amqp.Connection, cfg Config) error {
	errc := make(chan error, 1)
	go func() {
		ch, err := conn.Channel()
		if err != nil {
			errc <- fmt.Errorf("open channel: %w", err)
			return
		}
		err = declareTopology(ch, cfg)
		if !ch.IsClosed() {
			_ = ch.Close()
		}
		var te *TopologyError
		if err != nil && !errors.As(err, &te) {
			err = fmt.Errorf("declare topology: %w", err)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		<-errc
		return fmt.Errorf("declare topology: %w", ctx.Err())
	}
}

// within runs f in a goroutine of its own and waits for it at most until ctx
// is done; then it returns ctx's error and leaves f running. amqp091's calls
// take no context, but every call pending on a connection returns once the
// connection closes, which heartbeats bound. undo, when f succeeds too late,
// releases what f opened.
func within(ctx context.Context, f func() error, undo func()) error {
	var mu sync.Mutex
	late := false
	done := make(chan error, 1)
	go func() {
		err := f()
		mu.Lock()
		defer mu.Unlock()
		if late {
			if err == nil && undo != nil {
				undo()
			}
			return
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		select {
		case err := <-done:
			return err
		default:
		}
		late = true
		return ctx.Err()
	}
}

// supervise watches the connection s: it reports the broker blocking it,
// and when it is lost, logs why, marks the client not ready and reconnects.
// It returns when the client is closed or gives up. l is s's connection,
// or nil when it is still to be opened.
func (c *Client) supervise(s *supervised, l *link) {
	mode := reconnecting
	if l == nil {
		mode = opening
	}
	for {
		if l == nil {
			next, err := c.connect(c.life, s, mode)
			if err != nil {
				if !errors.Is(err, ErrClientClosed) && c.end(err) {
					c.log.Error("giving up on RabbitMQ", zap.String("url", c.cfg.RedactedURL()),
						zap.String("connection", s.role), zap.Error(err))
				}
				return
			}
			closed := false
			c.setState(func() {
				if closed = c.life.Err() != nil; !closed {
					s.conn = next.conn
				}
			})
			if closed {
				_ = next.conn.CloseDeadline(time.Now().Add(closeTimeout))
				return
			}
			if mode == reconnecting {
				c.cfg.Metrics.Reconnected()
			}
			l, mode = next, reconnecting
		}

		reason := c.watch(s, l)
		if c.life.Err() != nil {
			return
		}
		fields := []zap.Field{zap.String("url", c.cfg.RedactedURL()), zap.String("connection", s.role)}
		if reason != nil {
			fields = append(fields, zap.String("reason", reason.Reason), zap.Int("code", reason.Code))
		} else {
			fields = append(fields, zap.String("reason", "connection closed"))
		}
		c.log.Warn("connection to RabbitMQ lost; reconnecting", fields...)
		c.setState(func() { s.conn, s.blocked = nil, "" })
		l = nil
	}
}

// end records why the client ended, stops its reconnections and closes
// its connections: a delivery in flight then settles with
// worker.ErrDeliveryLost instead of waiting for a publish that cannot
// succeed any more. It reports whether it was the first to end it.
func (c *Client) end(err error) (first bool) {
	var conns []*amqp.Connection
	c.setState(func() {
		if first = c.err == nil; first {
			c.err = err
			c.stop()
			conns = c.takeConnsLocked()
		}
	})
	for _, conn := range conns {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
	}
	return first
}

// takeConnsLocked returns the open connections, leaving none.
func (c *Client) takeConnsLocked() []*amqp.Connection {
	var conns []*amqp.Connection
	for _, s := range []*supervised{&c.pubConn, &c.consConn} {
		if s.conn != nil {
			conns = append(conns, s.conn)
		}
		s.conn = nil
	}
	return conns
}

// watch follows l's notifications until the connection closes and returns
// the broker's reason, nil for a close the client asked for.
func (c *Client) watch(s *supervised, l *link) *amqp.Error {
	blocks := l.blocks
	for {
		select {
		case reason, ok := <-l.closes:
			// The library closes blocks right after closes: drain it so
			// that it never waits on us.
			if blocks != nil {
				for range blocks {
				}
			}
			if !ok {
				return nil
			}
			return reason
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			if b.Active {
				reason := b.Reason
				if reason == "" {
					reason = "unknown"
				}
				c.log.Warn("connection blocked by the broker: "+reason+"; publishing paused",
					zap.String("url", c.cfg.RedactedURL()), zap.String("connection", s.role), zap.String("reason", reason))
				c.setState(func() { s.blocked = reason })
			} else {
				c.log.Info("connection unblocked by the broker",
					zap.String("url", c.cfg.RedactedURL()), zap.String("connection", s.role))
				c.setState(func() { s.blocked = "" })
			}
		}
	}
}

// setState applies f to the state under the lock, wakes the waiters, and
// reports a change of readiness to Config.OnState and the metrics.
func (c *Client) setState(f func()) {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	ready := c.readyLocked()
	connected := c.err == nil && c.pubConn.conn != nil &&
		(c.running == 0 || c.consConn.conn != nil && c.active >= c.running)
	report := ready != c.ready
	c.ready = ready
	c.mu.Unlock()
	c.cfg.Metrics.Connected(connected)
	if report && c.cfg.OnState != nil {
		c.cfg.OnState(ready)
	}
}

func (c *Client) readyLocked() bool {
	if c.err != nil || c.pubConn.conn == nil || c.pubConn.blocked != "" {
		return false
	}
	return c.running == 0 || c.consConn.conn != nil && c.consConn.blocked == "" && c.active >= c.running
}

// Ready reports whether the client is connected, not blocked by the broker,
// and every Consumer (Run's included) is consuming. It is false while
// reconnecting, while the broker blocks a connection (a resource alarm),
// and once the client gave up or was closed.
func (c *Client) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readyLocked()
}

// Err returns why the client ended: an error wrapping ErrUnreachable when
// it gave up reconnecting, a *TopologyError when the topology declared again
// conflicted, ErrClientClosed after Close; nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// await waits until cond, checked under the lock, holds, and returns nil; or
// returns the client's end error, or ctx's error.
func (c *Client) await(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return err
		}
		if cond() {
			c.mu.Unlock()
			return nil
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// consumeConnection waits for a usable consuming connection.
func (c *Client) consumeConnection(ctx context.Context) (*amqp.Connection, error) {
	var conn *amqp.Connection
	err := c.await(ctx, func() bool {
		// A closed connection is replaced once supervise has seen it.
		conn = c.consConn.conn
		return conn != nil && !conn.IsClosed()
	})
	return conn, err
}

// Config returns the client's configuration with defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// Publisher returns the client's publisher, for publishing events. It
// publishes on the current connection, whichever it is.
func (c *Client) Publisher() *Publisher { return c.pub }

// Run consumes the work queue and hands the deliveries to w until ctx is
// cancelled; see worker.Worker.Run for what a shutdown does. It returns nil
// after a clean shutdown.
//
// The loss of the connection or of the consuming channel does not end it:
// the client reconnects and the worker keeps running on the same Consumer.
// Run returns an error only when the client gives up: the reconnect budget
// ran out (the error wraps ErrUnreachable and names the broker), or the
// topology declared again on reconnecting conflicts (a *TopologyError).
func (c *Client) Run(ctx context.Context, w *worker.Worker) error {
	if n := w.Config().Concurrency; c.cfg.Prefetch < n {
		c.log.Warn("prefetch is below the worker's concurrency: some handlers will stay idle",
			zap.Int("prefetch", c.cfg.Prefetch), zap.Int("concurrency", n))
	}
	cons, err := c.Consume()
	if err != nil {
		return err
	}
	runErr := w.Run(ctx, cons)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	if err := cons.Close(cctx); err != nil && runErr == nil {
		c.log.Warn("closing the consuming channel", zap.Error(err))
	}
	return runErr
}

// Close closes the connections, waiting at most a few seconds for the
// broker, and stops reconnecting. Deliveries not settled are requeued by the
// broker.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.stop()
		var conns []*amqp.Connection
		c.setState(func() {
			if c.err == nil {
				c.err = ErrClientClosed
			}
			conns = c.takeConnsLocked()
		})
		var errs []error
		for _, conn := range conns {
			err := conn.CloseDeadline(time.Now().Add(closeTimeout))
			if err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			c.closeErr = fmt.Errorf("rabbitmq: close connection: %w", err)
		}
		c.supervisors.Wait()
	})
	return c.closeErr
}
