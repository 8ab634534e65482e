package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/revsync/revsync/jobs"
)

// defaultConfigPath is the shipped configuration, relative to the
// repository root: it works against local RabbitMQ and PostgreSQL.
const defaultConfigPath = "deploy/revsync.yaml"

// Config is the revsync configuration file. Every zero field means its
// default; AMQP_URL and DATABASE_URL override the URLs.
type Config struct {
	AMQP         AMQPConfig         `yaml:"amqp"`
	Database     DatabaseConfig     `yaml:"database"`
	Worker       WorkerConfig       `yaml:"worker"`
	HTTP         HTTPConfig         `yaml:"http"`
	Log          LogConfig          `yaml:"log"`
	Jobs         []string           `yaml:"jobs"` // job definition files, relative to this file
	Integrations []jobs.Integration `yaml:"integrations"`

	file string
}

// AMQPConfig is the broker section.
type AMQPConfig struct {
	// URL of the broker. Default amqp://guest:guest@127.0.0.1:5672/.
	URL string `yaml:"url"`
	// Exchange events are published to (durable topic). Default revsync.events.
	Exchange string `yaml:"exchange"`
	// Queue is the quorum work queue. Default revsync.work.
	Queue string `yaml:"queue"`
	// BindingKeys bind Queue to Exchange. Default ["#"].
	BindingKeys []string `yaml:"binding_keys"`
	// DeadLetterExchange receives dead-lettered copies. Default revsync.dlx.
	DeadLetterExchange string `yaml:"dead_letter_exchange"`
	// DeadLetterQueue holds them. Default revsync.dlq.
	DeadLetterQueue string `yaml:"dead_letter_queue"`
	// Prefetch bounds unacknowledged deliveries per worker. Default 20;
	// 0 (unlimited) is refused.
	Prefetch *int `yaml:"prefetch"`
	// DeliveryLimit: a message returned to the queue more than this many
	// times (a crash loop; shutdown requeues count too) is dead-lettered
	// by the queue, so it is delivered at most DeliveryLimit+1 times.
	// Default 10.
	DeliveryLimit int `yaml:"delivery_limit"`
	// MaxMessageBytes rejects larger bodies before parsing. Default 256 KiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// PublishTimeout bounds waiting for a publisher confirm. Default 10s.
	PublishTimeout jobs.Duration `yaml:"publish_timeout"`
	// ReconnectTimeout is how long the worker keeps trying to reach a
	// lost (or, at start, unreachable) broker before it exits non-zero.
	// Default 0: forever, not ready meanwhile. revsync publish always
	// gives up after publish_timeout.
	ReconnectTimeout jobs.Duration `yaml:"reconnect_timeout"`
	// ConnectionName names this process's connections on the broker
	// (rabbitmqctl list_connections). Default "revsync <host>/<pid>", so
	// replicas tell apart; REVSYNC_CONNECTION_NAME overrides it.
	ConnectionName string `yaml:"connection_name"`
}

// DatabaseConfig is the PostgreSQL section.
type DatabaseConfig struct {
	// URL of the database. Default postgres://postgres@127.0.0.1:5432/postgres.
	URL string `yaml:"url"`
	// MaxConns of the pool: at least twice worker.concurrency. Default 8.
	MaxConns int32 `yaml:"max_conns"`
	// AcquireTimeout bounds waiting for a pooled connection. Default 5s.
	AcquireTimeout jobs.Duration `yaml:"acquire_timeout"`
	// StatementTimeout is the server-side statement_timeout. Default 10s.
	StatementTimeout jobs.Duration `yaml:"statement_timeout"`
}

// WorkerConfig is how messages are handled.
type WorkerConfig struct {
	// Concurrency is the number of messages handled at once. Default 4.
	Concurrency int `yaml:"concurrency"`
	// MessageTimeout bounds one message's job; keep it below RabbitMQ's
	// consumer_timeout (30 minutes by default). Default 60s.
	MessageTimeout jobs.Duration `yaml:"message_timeout"`
	// ShutdownGrace is how long in-flight work may finish after SIGTERM.
	// Default 30s.
	ShutdownGrace jobs.Duration `yaml:"shutdown_grace"`
	// Retry is how transient failures are retried; a connector's own
	// retry section overrides max_attempts and schedule.
	Retry RetryConfig `yaml:"retry"`
	// Breaker is the per-integration circuit breaker.
	Breaker BreakerConfig `yaml:"breaker"`
}

// RetryConfig is the delayed-retry policy.
type RetryConfig struct {
	// Schedule is the delay before each retry; the last entry repeats.
	// Default [1s, 5s, 30s, 2m, 10m].
	Schedule []jobs.Duration `yaml:"schedule"`
	// Jitter is the largest fraction taken off a delay at random.
	// Default 0.2; a negative value means none.
	Jitter float64 `yaml:"jitter"`
	// MaxAttempts counts the first delivery too. Default 5.
	MaxAttempts int `yaml:"max_attempts"`
}

// BreakerConfig is the per-integration circuit breaker.
type BreakerConfig struct {
	// Enabled turns the breaker on. Default true.
	Enabled *bool `yaml:"enabled"`
	// Window is how far back outcomes count. Default 60s.
	Window jobs.Duration `yaml:"window"`
	// WindowCalls is how many of the latest outcomes count. Default 20.
	WindowCalls int `yaml:"window_calls"`
	// MinCalls is how many outcomes it takes before it may open. Default 10.
	MinCalls int `yaml:"min_calls"`
	// FailureRatio of transient failures opens it. Default 0.5.
	FailureRatio float64 `yaml:"failure_ratio"`
	// CoolDown is how long it stays open before a probe. Default 30s.
	CoolDown jobs.Duration `yaml:"cool_down"`
}

// HTTPConfig is the listener for probes and metrics.
type HTTPConfig struct {
	// Listen is the address of /healthz, /readyz and /metrics. Default
	// 127.0.0.1:9464; "off" disables the listener; port 0 picks a free
	// port (logged). REVSYNC_HTTP_LISTEN overrides it, so replicas on one
	// host can each have their own.
	Listen string `yaml:"listen"`
}

// LogConfig is the logging section.
type LogConfig struct {
	// Level: debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format: json or console. Default json.
	Format string `yaml:"format"`
}

// ConfigError is a problem with the configuration; revsync exits 78.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// loadConfig reads and validates the configuration file at path, applies
// the environment overrides and fills defaults.
func loadConfig(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("read configuration: %w", err)
	}
	cfg := &Config{file: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, configErrorf("%s: %w", path, err)
	}
	if v := getenv("AMQP_URL"); v != "" {
		cfg.AMQP.URL = v
	}
	if v := getenv("DATABASE_URL"); v != "" {
		cfg.Database.URL = v
	}
	if v := getenv("REVSYNC_HTTP_LISTEN"); v != "" {
		cfg.HTTP.Listen = v
	}
	if v := getenv("REVSYNC_CONNECTION_NAME"); v != "" {
		cfg.AMQP.ConnectionName = v
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	return cfg, nil
}

func (c *Config) setDefaults() {
	a := &c.AMQP
	a.URL = or(a.URL, "amqp://guest:guest@127.0.0.1:5672/")
	a.Exchange = or(a.Exchange, "revsync.events")
	a.Queue = or(a.Queue, "revsync.work")
	a.DeadLetterExchange = or(a.DeadLetterExchange, "revsync.dlx")
	a.DeadLetterQueue = or(a.DeadLetterQueue, "revsync.dlq")
	if len(a.BindingKeys) == 0 {
		a.BindingKeys = []string{"#"}
	}
	if a.Prefetch == nil {
		p := 20
		a.Prefetch = &p
	}
	if a.ConnectionName == "" {
		host, _ := os.Hostname()
		a.ConnectionName = fmt.Sprintf("revsync %s/%d", host, os.Getpid())
	}
	if a.DeliveryLimit == 0 {
		a.DeliveryLimit = 10
	}
	if a.MaxMessageBytes == 0 {
		a.MaxMessageBytes = 256 << 10
	}
	d := &c.Database
	d.URL = or(d.URL, "postgres://postgres@127.0.0.1:5432/postgres")
	if d.MaxConns == 0 {
		d.MaxConns = 8
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = 4
	}
	c.HTTP.Listen = or(c.HTTP.Listen, "127.0.0.1:9464")
	c.Log.Level = or(c.Log.Level, "info")
	c.Log.Format = or(c.Log.Format, "json")
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: key %q: %s", c.file, key, fmt.Sprintf(format, args...)))
	}
	if p := *c.AMQP.Prefetch; p <= 0 || p > 65535 {
		bad("amqp.prefetch", "must be between 1 and 65535 (0 would let the broker push unlimited messages), got %d", p)
	}
	names := map[string]string{"amqp.exchange": c.AMQP.Exchange, "amqp.queue": c.AMQP.Queue,
		"amqp.dead_letter_exchange": c.AMQP.DeadLetterExchange, "amqp.dead_letter_queue": c.AMQP.DeadLetterQueue}
	for _, key := range []string{"amqp.exchange", "amqp.queue", "amqp.dead_letter_exchange", "amqp.dead_letter_queue"} {
		if strings.HasPrefix(names[key], "amq.") {
			bad(key, "%q: names starting with \"amq.\" are reserved by the broker", names[key])
		}
	}
	if c.AMQP.Exchange == c.AMQP.DeadLetterExchange {
		bad("amqp.dead_letter_exchange", "must differ from amqp.exchange (%q)", c.AMQP.Exchange)
	}
	if c.AMQP.Queue == c.AMQP.DeadLetterQueue {
		bad("amqp.dead_letter_queue", "must differ from amqp.queue (%q)", c.AMQP.Queue)
	}
	if c.AMQP.PublishTimeout < 0 {
		bad("amqp.publish_timeout", "must not be negative, got %s", time.Duration(c.AMQP.PublishTimeout))
	}
	for key, d := range map[string]jobs.Duration{"worker.message_timeout": c.Worker.MessageTimeout,
		"worker.shutdown_grace": c.Worker.ShutdownGrace, "database.acquire_timeout": c.Database.AcquireTimeout,
		"database.statement_timeout": c.Database.StatementTimeout} {
		if d < 0 {
			bad(key, "must not be negative, got %s", time.Duration(d))
		}
	}
	if c.AMQP.ReconnectTimeout < 0 {
		bad("amqp.reconnect_timeout", "must not be negative, got %s", time.Duration(c.AMQP.ReconnectTimeout))
	}
	if c.AMQP.DeliveryLimit < 0 {
		bad("amqp.delivery_limit", "must be positive, got %d", c.AMQP.DeliveryLimit)
	}
	if c.AMQP.MaxMessageBytes < 0 {
		bad("amqp.max_message_bytes", "must be positive, got %d", c.AMQP.MaxMessageBytes)
	}
	if c.Worker.Concurrency < 0 {
		bad("worker.concurrency", "must be positive, got %d", c.Worker.Concurrency)
	}
	if c.Database.MaxConns < 0 {
		bad("database.max_conns", "must be positive, got %d", c.Database.MaxConns)
	}
	if int(c.Database.MaxConns) < 2*c.Worker.Concurrency {
		// Each message in flight holds a connection for its entity lock
		// and needs another for its read.
		bad("database.max_conns", "must be at least twice worker.concurrency (%d): each message in flight holds one connection for its entity lock and reads with another; got %d",
			c.Worker.Concurrency, c.Database.MaxConns)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "want json or console, got %q", c.Log.Format)
	}
	if len(c.Jobs) == 0 {
		bad("jobs", "missing: list at least one job definitions file")
	}
	if len(c.Integrations) == 0 {
		bad("integrations", "missing: configure at least one integration")
	}
	return errors.Join(errs...)
}

// jobFiles returns the job definition files resolved against the
// configuration file's folder.
func (c *Config) jobFiles() []string {
	files := make([]string, len(c.Jobs))
	for i, f := range c.Jobs {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(c.file), f)
		}
		files[i] = f
	}
	return files
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
