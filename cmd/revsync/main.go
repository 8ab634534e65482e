// Command revsync keeps remote systems in step with changes made in a
// PostgreSQL-backed application: it consumes entity-changed events from
// RabbitMQ and runs each connector's export job.
//
// Usage:
//
//	revsync worker          [--config FILE]
//	revsync publish         [--config FILE] --integration I --connector C --id col=value ... [--op upsert|delete] [--param k=v ...]
//	revsync publish         [--config FILE] --file events.jsonl
//	revsync dlq replay      [--config FILE] [--class C ...] [--limit N] [--dry-run]
//	revsync config validate [--config FILE]
//
// Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 configuration or topology.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "revsync: %v\n", err)
	}
	os.Exit(exitCode(err))
}
