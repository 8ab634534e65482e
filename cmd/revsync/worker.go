package main

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/revsync/revsync/connectors/postgres"
	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
)

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, path := newFlagSet("worker", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, os.Getenv)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()

	pool, err := postgres.NewPool(ctx, poolConfig(cfg, false))
	if err != nil {
		return err
	}
	defer pool.Close()

	catalog, err := buildCatalog(cfg, pool, logger)
	if err != nil {
		return err
	}
	defer catalog.Close()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := worker.NewMetrics(registry)
	wcfg := workerConfig(cfg, catalog, logger)
	wcfg.Metrics = metrics
	wcfg.Locker = postgres.NewAdvisoryLocker(pool, postgres.LockConfig{
		AcquireTimeout: time.Duration(cfg.Database.AcquireTimeout),
		// A run never holds its lock longer than the message timeout;
		// past that (plus a margin) the holder is frozen, and the server
		// ends its session to free the entity.
		HoldTimeout: cfg.Worker.MessageTimeout.Or(worker.DefaultMessageTimeout) + 10*time.Second,
		Logger:      logger,
	})
	w, err := worker.New(wcfg)
	if err != nil {
		return &ConfigError{Err: err}
	}

	probe := &probes{pingDB: pool.Ping}
	if cfg.HTTP.Listen != "off" {
		obs, err := startObserver(cfg.HTTP.Listen, probe, registry, logger)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = obs.stop(sctx)
		}()
	}
	// Not ready from the moment a shutdown is asked for.
	stopDraining := context.AfterFunc(ctx, func() { probe.draining.Store(true) })
	defer stopDraining()

	var brokerUp atomic.Bool
	probe.brokerReady = brokerUp.Load
	bcfg, err := brokerConfig(cfg, logger)
	if err != nil {
		return err
	}
	bcfg.OnState = brokerUp.Store
	bcfg.Metrics = metrics
	// Dial waits for an unreachable broker (within amqp.reconnect_timeout).
	client, err := rabbitmq.Dial(ctx, bcfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // asked to stop while waiting for the broker
		}
		return err
	}
	defer client.Close()
	logger.Info("worker started",
		zap.String("queue", cfg.AMQP.Queue), zap.Int("prefetch", *cfg.AMQP.Prefetch),
		zap.Int("concurrency", w.Config().Concurrency), zap.Int("routes", len(catalog.Routes())))

	return client.Run(ctx, w)
}

// dialCLI connects a command other than worker to the broker. It does not
// wait for a broker that is down longer than one publish may take.
func dialCLI(ctx context.Context, cfg *Config) (*rabbitmq.Client, error) {
	bcfg, err := brokerConfig(cfg, zap.NewNop())
	if err != nil {
		return nil, err
	}
	bcfg.ReconnectTimeout = cfg.AMQP.PublishTimeout.Or(rabbitmq.DefaultPublishTimeout)
	return rabbitmq.Dial(ctx, bcfg)
}

// poolConfig is the database pool's configuration. A lazy pool does not
// connect until used, for commands that only check configuration.
func poolConfig(cfg *Config, lazy bool) postgres.Config {
	return postgres.Config{
		URL:              cfg.Database.URL,
		MaxConns:         int(cfg.Database.MaxConns),
		AcquireTimeout:   time.Duration(cfg.Database.AcquireTimeout),
		StatementTimeout: time.Duration(cfg.Database.StatementTimeout),
		Lazy:             lazy,
	}
}

// brokerConfig is the RabbitMQ adapter's configuration, checked. Its delay
// queues are the workers' own set, whichever command dials, so that no
// stray ones appear.
func brokerConfig(cfg *Config, logger *zap.Logger) (rabbitmq.Config, error) {
	delays, err := worker.RetryDelays(retryPolicy(cfg), breakerConfig(cfg), cfg.Integrations)
	if err != nil {
		return rabbitmq.Config{}, &ConfigError{Err: err}
	}
	bcfg := rabbitmq.Config{
		RetryDelays:        delays,
		URL:                cfg.AMQP.URL,
		Exchange:           cfg.AMQP.Exchange,
		Queue:              cfg.AMQP.Queue,
		BindingKeys:        cfg.AMQP.BindingKeys,
		DeadLetterExchange: cfg.AMQP.DeadLetterExchange,
		DeadLetterQueue:    cfg.AMQP.DeadLetterQueue,
		Prefetch:           *cfg.AMQP.Prefetch,
		DeliveryLimit:      cfg.AMQP.DeliveryLimit,
		PublishTimeout:     time.Duration(cfg.AMQP.PublishTimeout),
		ReconnectTimeout:   time.Duration(cfg.AMQP.ReconnectTimeout),
		ConnectionName:     cfg.AMQP.ConnectionName,
		Logger:             logger,
	}
	if err := bcfg.Validate(); err != nil {
		return rabbitmq.Config{}, &ConfigError{Err: err}
	}
	return bcfg, nil
}

// workerConfig is the worker's configuration, without the parts that need
// live connections (metrics, the entity locker).
func workerConfig(cfg *Config, catalog *jobs.Catalog, logger *zap.Logger) worker.Config {
	return worker.Config{
		Catalog:         catalog,
		Logger:          logger,
		Concurrency:     cfg.Worker.Concurrency,
		MaxMessageBytes: cfg.AMQP.MaxMessageBytes,
		MessageTimeout:  time.Duration(cfg.Worker.MessageTimeout),
		ShutdownGrace:   time.Duration(cfg.Worker.ShutdownGrace),
		Retry:           retryPolicy(cfg),
		Breaker:         breakerConfig(cfg),
	}
}

// retryPolicy is the worker's retry policy from the configuration.
func retryPolicy(cfg *Config) worker.RetryPolicy {
	p := worker.RetryPolicy{Jitter: cfg.Worker.Retry.Jitter, MaxAttempts: cfg.Worker.Retry.MaxAttempts}
	for _, d := range cfg.Worker.Retry.Schedule {
		p.Schedule = append(p.Schedule, time.Duration(d))
	}
	return p
}

// breakerConfig is the worker's circuit breaker configuration.
func breakerConfig(cfg *Config) worker.BreakerConfig {
	b := cfg.Worker.Breaker
	return worker.BreakerConfig{
		Disabled:     b.Enabled != nil && !*b.Enabled,
		Window:       time.Duration(b.Window),
		WindowCalls:  b.WindowCalls,
		MinCalls:     b.MinCalls,
		FailureRatio: b.FailureRatio,
		CoolDown:     time.Duration(b.CoolDown),
	}
}

// isTopologyError reports whether err is a broker topology mismatch or
// the broker refused our credentials or vhost: configuration, not outage.
func isTopologyError(err error) bool {
	var topoErr *rabbitmq.TopologyError
	return errors.As(err, &topoErr) ||
		errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) || errors.Is(err, amqp.ErrSASL)
}
