package rabbitmq

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/revsync/revsync/worker"
)

// Defaults of Config.
const (
	DefaultExchange           = "revsync.events"
	DefaultQueue              = "revsync.work"
	DefaultDeadLetterExchange = "revsync.dlx"
	DefaultDeadLetterQueue    = "revsync.dlq"
	DefaultPrefetch           = 20
	DefaultDeliveryLimit      = 10
	DefaultPublishTimeout     = 10 * time.Second
	DefaultDialTimeout        = 10 * time.Second
	DefaultHeartbeat          = 10 * time.Second
	DefaultConnectionName     = "revsync"
)

// DefaultReconnectBackoff spaces connection attempts: 500ms doubling up to
// 30s, each delay jittered.
var DefaultReconnectBackoff = worker.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}

// Config configures a Client. The zero value of every field but URL means
// its default.
type Config struct {
	// URL is the broker's AMQP URI. Required. It is never logged with its
	// password.
	URL string
	// Exchange is the durable topic exchange events are published to.
	// Default DefaultExchange.
	Exchange string
	// Queue is the work queue, a quorum queue bound to Exchange.
	// Default DefaultQueue.
	Queue string
	// BindingKeys bind Queue to Exchange. Default ["#"]: every event.
	BindingKeys []string
	// DeadLetterExchange is the durable topic exchange dead-letter copies
	// are published to, and the work queue's x-dead-letter-exchange.
	// Default DefaultDeadLetterExchange.
	DeadLetterExchange string
	// DeadLetterQueue is the quorum queue bound to DeadLetterExchange with
	// "#". Default DefaultDeadLetterQueue.
	DeadLetterQueue string
	// Prefetch bounds the unacknowledged deliveries on the consumer
	// (basic.qos). Zero means the default, 20, because Config's zero value
	// means defaults; an explicit prefetch of 0 (unlimited in AMQP) must
	// therefore be refused by whoever reads the configuration file
	// (cmd/revsync does). Negative is an error. Keep it at least the
	// worker's concurrency.
	Prefetch int
	// DeliveryLimit is the work queue's x-delivery-limit: a message
	// returned to the queue more than this many times (redeliveries after
	// a crash, requeues on shutdown included) is dead-lettered by the queue
	// to DeadLetterExchange without x-revsync-* headers; it is delivered at
	// most DeliveryLimit+1 times. Default 10: RabbitMQ counts a requeue
	// on shutdown as a delivery too, so a tight limit would dead-letter
	// messages that merely sat in a prefetch window through a few restarts.
	DeliveryLimit int
	// RetryDelays are the delay tiers of delayed retries: one delay queue
	// "<Queue>.retry.<delay>" each (see retry.go). Give it every delay the
	// worker may ask for: worker.Worker.RetryDelays. Each is rounded up to
	// a whole millisecond. Default worker.DefaultRetrySchedule.
	RetryDelays []time.Duration
	// PublishTimeout bounds one publish, waiting for its confirm included.
	// Default 10s.
	PublishTimeout time.Duration
	// DialTimeout bounds connecting (TCP, TLS and AMQP handshakes) and
	// declaring the topology. Default 10s.
	DialTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval; a dead connection is noticed
	// within about two of them. Default 10s.
	Heartbeat time.Duration
	// ConnectionName is shown in the management UI and rabbitmqctl.
	// Default "revsync".
	ConnectionName string
	// Logger logs connection events. Default zap.NewNop().
	Logger *zap.Logger

	// ReconnectBackoff spaces the connection attempts after the connection
	// is lost, and while Dial cannot connect: the first attempt after a
	// loss is immediate, then Initial, doubled on every further attempt up
	// to Max, each delay jittered (a random value between half of it and
	// all of it) so that workers restarted together do not reconnect in
	// lockstep. Zero fields take DefaultReconnectBackoff's (500ms, 30s).
	ReconnectBackoff worker.Backoff
	// ReconnectTimeout is the reconnect budget: how long the client keeps
	// trying to connect before giving up, counted from the start of Dial or
	// from the moment the connection was lost. When it runs out, Dial, Run
	// and publishes return an error wrapping ErrUnreachable that names the
	// broker (password redacted). Zero, the default, means forever: the
	// client stays up, not ready, retrying with capped backoff.
	ReconnectTimeout time.Duration
	// OnState, when set, is called with the client's readiness (see
	// Client.Ready) every time it changes, the first time when Dial
	// connects. Calls are never concurrent and come in order. It must
	// return quickly and may call Client.Ready, nothing else of the client.
	OnState func(ready bool)
	// Metrics, when set, records the broker connection state
	// (worker.Metrics.Connected: connected and, while Run consumes,
	// consuming) and counts reconnections (worker.Metrics.Reconnected).
	Metrics *worker.Metrics
}

// Validate reports what is wrong with c, naming the field, without
// connecting.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and fills in its defaults. Errors name the field.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("rabbitmq: Config.URL is required")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// Its text repeats the URL, password included.
			return c, errors.New("rabbitmq: Config.URL is not a valid URL (want amqp://user:password@host:port/vhost)")
		}
		return c, fmt.Errorf("rabbitmq: Config.URL: %w", err)
	}
	for _, f := range []struct {
		name string
		bad  bool
		val  any
	}{
		{"Prefetch", c.Prefetch < 0, c.Prefetch},
		{"DeliveryLimit", c.DeliveryLimit < 0, c.DeliveryLimit},
		{"PublishTimeout", c.PublishTimeout < 0, c.PublishTimeout},
		{"DialTimeout", c.DialTimeout < 0, c.DialTimeout},
		{"Heartbeat", c.Heartbeat < 0, c.Heartbeat},
		{"ReconnectBackoff.Initial", c.ReconnectBackoff.Initial < 0, c.ReconnectBackoff.Initial},
		{"ReconnectBackoff.Max", c.ReconnectBackoff.Max < 0, c.ReconnectBackoff.Max},
		{"ReconnectTimeout", c.ReconnectTimeout < 0, c.ReconnectTimeout},
	} {
		if f.bad {
			return c, fmt.Errorf("rabbitmq: Config.%s must be positive, got %v", f.name, f.val)
		}
	}
	if c.Prefetch > math.MaxUint16 {
		// basic.qos carries a 16-bit count: more would silently wrap, to
		// 0 (unlimited) at 65536.
		return c, fmt.Errorf("rabbitmq: Config.Prefetch must be at most %d, got %d", math.MaxUint16, c.Prefetch)
	}
	for i, k := range c.BindingKeys {
		if k == "" {
			return c, fmt.Errorf("rabbitmq: Config.BindingKeys[%d] is empty", i)
		}
	}
	for _, n := range []struct{ field, name string }{
		{"Exchange", c.Exchange}, {"Queue", c.Queue},
		{"DeadLetterExchange", c.DeadLetterExchange}, {"DeadLetterQueue", c.DeadLetterQueue},
	} {
		if strings.HasPrefix(n.name, "amq.") {
			return c, fmt.Errorf("rabbitmq: Config.%s %q: names starting with \"amq.\" are reserved by the broker", n.field, n.name)
		}
	}
	for i, d := range c.RetryDelays {
		if d <= 0 {
			return c, fmt.Errorf("rabbitmq: Config.RetryDelays[%d] must be positive, got %v", i, d)
		}
	}
	c.RetryDelays = retryDelays(c.RetryDelays)
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&c.Exchange, DefaultExchange)
	def(&c.Queue, DefaultQueue)
	def(&c.DeadLetterExchange, DefaultDeadLetterExchange)
	def(&c.DeadLetterQueue, DefaultDeadLetterQueue)
	def(&c.ConnectionName, DefaultConnectionName)
	if len(c.BindingKeys) == 0 {
		c.BindingKeys = []string{"#"}
	}
	if c.Exchange == c.DeadLetterExchange {
		return c, fmt.Errorf("rabbitmq: Config.DeadLetterExchange must differ from Config.Exchange (%q)", c.Exchange)
	}
	if c.Queue == c.DeadLetterQueue {
		return c, fmt.Errorf("rabbitmq: Config.DeadLetterQueue must differ from Config.Queue (%q)", c.Queue)
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = DefaultDeliveryLimit
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.ReconnectBackoff.Initial == 0 {
		c.ReconnectBackoff.Initial = DefaultReconnectBackoff.Initial
	}
	if c.ReconnectBackoff.Max == 0 {
		c.ReconnectBackoff.Max = max(DefaultReconnectBackoff.Max, c.ReconnectBackoff.Initial)
	}
	return c, nil
}

// RedactedURL returns the URL with its password masked, for logs and
// errors.
func (c Config) RedactedURL() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "(unparsable AMQP URL)"
	}
	return u.Redacted()
}
