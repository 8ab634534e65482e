package main

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	httpwriter "github.com/revsync/revsync/connectors/http"
	"github.com/revsync/revsync/connectors/mapping"
	"github.com/revsync/revsync/connectors/postgres"
	"github.com/revsync/revsync/jobs"
)

// registry returns the services job definitions can name. pool may be nil
// when only validating configuration.
func registry(cfg *Config, pool *pgxpool.Pool, logger *zap.Logger) *jobs.Registry {
	var reg jobs.Registry
	acquire := cfg.Database.AcquireTimeout.Or(postgres.DefaultAcquireTimeout)
	statement := cfg.Database.StatementTimeout.Or(postgres.DefaultStatementTimeout)
	reg.RegisterReader(postgres.ReaderName, postgres.ReaderFactory(pool, postgres.ReaderConfig{
		AcquireTimeout: acquire,
		// The server ends a slow statement itself; the client deadline is
		// the backstop for a connection that stops answering.
		QueryTimeout: acquire + statement + 2*time.Second,
		Logger:       logger,
	}))
	reg.RegisterProcessor(mapping.Name, mapping.ProcessorFactory())
	reg.RegisterWriter(httpwriter.Name, httpwriter.WriterFactory(httpwriter.FactoryConfig{Logger: logger}))
	return &reg
}

// buildCatalog loads the job definitions and builds every connector's
// services.
func buildCatalog(cfg *Config, pool *pgxpool.Pool, logger *zap.Logger) (*jobs.Catalog, error) {
	reg := registry(cfg, pool, logger)
	jobList, err := jobs.LoadJobFiles(reg, cfg.jobFiles()...)
	if err != nil {
		return nil, err
	}
	return jobs.NewCatalog(cfg.file, reg, jobList, cfg.Integrations)
}
