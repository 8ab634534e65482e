package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker/rabbitmq"
)

// classes is a repeatable --class flag.
type classes []jobs.Class

func (c *classes) String() string { return fmt.Sprint(*c) }

func (c *classes) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		*c = append(*c, jobs.Class(strings.TrimSpace(s)))
	}
	return nil
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, "usage: revsync dlq replay [--config FILE] [--class C ...] [--limit N] [--dry-run]")
		return nil
	}
	if len(args) == 0 || args[0] != "replay" {
		return usageErrorf(`unknown dlq command; want "revsync dlq replay"`)
	}
	fs, path := newFlagSet("dlq replay", stderr)
	limit := fs.Int("limit", 0, "move at most this many messages (default: all that are in the DLQ now)")
	dryRun := fs.Bool("dry-run", false, "list the messages, move nothing")
	var only classes
	fs.Var(&only, "class", "move only messages of this error class (repeatable, or comma-separated)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *limit < 0 {
		return usageErrorf("--limit must not be negative")
	}
	known := []jobs.Class{jobs.ClassInvalidMessage, jobs.ClassUnknownRoute, jobs.ClassIntegrationDisabled,
		jobs.ClassPermanent, jobs.ClassPanic, jobs.ClassTransient, jobs.ClassRetriesExhausted, rabbitmq.ClassDeliveryLimit}
	for _, c := range only {
		if !slices.Contains(known, c) {
			return usageErrorf("--class: unknown class %q (known: %v)", c, known)
		}
	}
	cfg, err := loadConfig(*path, os.Getenv)
	if err != nil {
		return err
	}
	client, err := dialCLI(ctx, cfg)
	if err != nil {
		return err
	}
	defer client.Close()

	res, err := client.ReplayDeadLetters(ctx, rabbitmq.ReplayOptions{
		Limit:   *limit,
		Classes: only,
		DryRun:  *dryRun,
		OnMessage: func(m rabbitmq.ReplayedMessage) {
			action := "kept"
			if m.Moved {
				action = "moved"
			}
			fmt.Fprintf(stdout, "%s\tmessage_id=%s\trouting_key=%s\tclass=%s\treason=%q\n",
				action, m.MessageID, m.RoutingKey, m.Class, m.Reason)
		},
	})
	fmt.Fprintf(stdout, "moved=%d kept=%d not_examined=%d\n", res.Moved, res.Skipped, res.Unexamined)
	return err
}
