package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/revsync/revsync/connectors/postgres"
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

	w, err := worker.New(worker.Config{
		Catalog:         catalog,
		Logger:          logger,
		Concurrency:     cfg.Worker.Concurrency,
		MaxMessageBytes: cfg.AMQP.MaxMessageBytes,
		MessageTimeout:  time.Duration(cfg.Worker.MessageTimeout),
		ShutdownGrace:   time.Duration(cfg.Worker.ShutdownGrace),
	})
	if err != nil {
		return &ConfigError{Err: err}
	}

	client, err := rabbitmq.Dial(ctx, brokerConfig(cfg, logger))
	if err != nil {
		return err
	}
	defer client.Close()
	logger.Info("worker started",
		zap.String("queue", cfg.AMQP.Queue), zap.Int("prefetch", *cfg.AMQP.Prefetch),
		zap.Int("concurrency", w.Config().Concurrency), zap.Int("routes", len(catalog.Routes())))

	if err := client.Run(ctx, w); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
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

// brokerConfig is the RabbitMQ adapter's configuration.
func brokerConfig(cfg *Config, logger *zap.Logger) rabbitmq.Config {
	return rabbitmq.Config{
		URL:                cfg.AMQP.URL,
		Exchange:           cfg.AMQP.Exchange,
		Queue:              cfg.AMQP.Queue,
		BindingKeys:        cfg.AMQP.BindingKeys,
		DeadLetterExchange: cfg.AMQP.DeadLetterExchange,
		DeadLetterQueue:    cfg.AMQP.DeadLetterQueue,
		Prefetch:           *cfg.AMQP.Prefetch,
		DeliveryLimit:      cfg.AMQP.DeliveryLimit,
		PublishTimeout:     time.Duration(cfg.AMQP.PublishTimeout),
		Logger:             logger,
	}
}

// isTopologyError reports whether err is a broker topology mismatch.
func isTopologyError(err error) bool {
	var topoErr *rabbitmq.TopologyError
	return errors.As(err, &topoErr)
}
