package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/revsync/revsync/connectors/postgres"
	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitConfig  = 78 // EX_CONFIG: configuration or broker topology
)

const usage = `usage: revsync <command> [flags]

commands:
  worker            consume entity-changed events and run export jobs
  publish           publish entity-changed events (one from flags, or --file events.jsonl)
  dlq replay        move dead-lettered events back to the events exchange
  config validate   check the configuration and job definitions

Run "revsync <command> -h" for a command's flags.
`

// UsageError is a command line that cannot be run; revsync exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// run is main without the process: it runs the subcommand in args.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErrorf("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "worker":
		return runWorker(ctx, rest, stdout, stderr)
	case "publish":
		return runPublish(ctx, rest, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, rest, stdout, stderr)
	case "config":
		if len(rest) == 0 || rest[0] != "validate" {
			return usageErrorf(`unknown config command; want "revsync config validate"`)
		}
		return runValidate(ctx, rest[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageErrorf("unknown command %q", cmd)
	}
}

// exitCode maps run's error to the process exit code.
func exitCode(err error) int {
	var usageErr *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &usageErr):
		return exitUsage
	case isConfigError(err):
		return exitConfig
	default:
		return exitFailure
	}
}

// isConfigError reports whether err is a configuration or topology problem.
func isConfigError(err error) bool {
	var cfgErr *ConfigError
	var defErr *jobs.DefinitionError
	return errors.As(err, &cfgErr) || errors.As(err, &defErr) || isTopologyError(err)
}

// newFlagSet returns a flag set for a subcommand with the common --config.
func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("revsync "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "configuration file")
	return fs, path
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}

func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path := newFlagSet("config validate", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, os.Getenv)
	if err != nil {
		return err
	}
	// The services are built as the worker builds them, on a pool that
	// never connects: validation needs no database.
	pool, err := postgres.NewPool(ctx, poolConfig(cfg, true))
	if err != nil {
		return &ConfigError{Err: err}
	}
	defer pool.Close()
	catalog, err := buildCatalog(cfg, pool, zap.NewNop())
	if err != nil {
		return err
	}
	defer catalog.Close()
	// What the worker would refuse at start-up, validate refuses too.
	if _, err := worker.New(workerConfig(cfg, catalog, zap.NewNop())); err != nil {
		return &ConfigError{Err: err}
	}
	if _, err := brokerConfig(cfg, zap.NewNop()); err != nil {
		return err
	}
	for _, r := range catalog.Routes() {
		state := "enabled"
		if !r.Integration.IsEnabled() {
			state = "disabled"
		}
		fmt.Fprintf(stdout, "%s.%s: job %s, table %s (%s)\n", r.Integration.Name, r.Connector.Name, r.Job.Name, r.Connector.Entity.Table, state)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// newLogger builds the process logger from the log section.
func newLogger(cfg LogConfig, stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, configErrorf("log.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.Format == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), level)
	return zap.New(core), nil
}
