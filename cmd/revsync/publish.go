package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
)

// pairs is a repeatable --flag key=value.
type pairs []string

func (p *pairs) String() string { return strings.Join(*p, ",") }

func (p *pairs) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want key=value, got %q", v)
	}
	*p = append(*p, v)
	return nil
}

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path := newFlagSet("publish", stderr)
	integration := fs.String("integration", "", "integration name")
	connector := fs.String("connector", "", "connector name")
	op := fs.String("op", string(jobs.OpUpsert), "operation: upsert or delete")
	file := fs.String("file", "", "publish one event per line of this JSON Lines file (- for standard input)")
	var ids, params pairs
	fs.Var(&ids, "id", "identifier column=value (repeat for composite keys)")
	fs.Var(&params, "param", "job parameter key=value (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	single := *integration != "" || *connector != "" || len(ids) > 0 || len(params) > 0
	switch {
	case *file != "" && single:
		return usageErrorf("--file cannot be combined with --integration, --connector, --id or --param")
	case *file == "" && (*integration == "" || *connector == "" || len(ids) == 0):
		return usageErrorf("publish needs --integration, --connector and at least one --id, or --file")
	case !jobs.Op(*op).Valid():
		return usageErrorf("--op: want upsert or delete, got %q", *op)
	}
	cfg, err := loadConfig(*path, os.Getenv)
	if err != nil {
		return err
	}

	var bodies [][]byte
	if *file != "" {
		if bodies, err = readEventFile(*file, cfg.AMQP.MaxMessageBytes); err != nil {
			return err
		}
	} else {
		body, err := eventFromFlags(cfg, *integration, *connector, jobs.Op(*op), ids, params)
		if err != nil {
			return err
		}
		bodies = [][]byte{body}
	}

	client, err := dialCLI(ctx, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	for i, body := range bodies {
		var route struct{ Integration, Connector string }
		_ = json.Unmarshal(body, &route)
		id := rabbitmq.NewMessageID()
		key := route.Integration + "." + route.Connector
		if err := client.Publisher().Publish(ctx, key, rabbitmq.EventPublishing(body, id)); err != nil {
			return fmt.Errorf("publish event %d of %d (%s): %w", i+1, len(bodies), key, err)
		}
		if *file == "" {
			fmt.Fprintln(stdout, id)
		}
	}
	if *file != "" {
		fmt.Fprintf(stdout, "published=%d\n", len(bodies))
	}
	return nil
}

// eventFromFlags builds one event, converting the --id values with the
// connector's key types so the event matches what the worker checks.
func eventFromFlags(cfg *Config, integration, connector string, op jobs.Op, ids, params pairs) ([]byte, error) {
	var conn *jobs.Connector
	for i := range cfg.Integrations {
		if cfg.Integrations[i].Name == integration {
			c, ok := cfg.Integrations[i].Connector(connector)
			if !ok {
				return nil, usageErrorf("--connector: integration %q has no connector %q in %s", integration, connector, cfg.file)
			}
			conn = c
		}
	}
	if conn == nil {
		return nil, usageErrorf("--integration: no integration %q in %s", integration, cfg.file)
	}
	id := map[string]any{}
	for _, kv := range ids {
		col, val, _ := strings.Cut(kv, "=")
		if _, dup := id[col]; dup {
			return nil, usageErrorf("--id: column %q given twice", col)
		}
		id[col] = val
		for _, k := range conn.Entity.Key {
			if k.Column == col && k.Type == jobs.KeyInteger {
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil {
					return nil, usageErrorf("--id %s: column %q is an integer, got %q", kv, col, val)
				}
				id[col] = n
			}
		}
	}
	if _, err := conn.Entity.IDFilter(id); err != nil {
		return nil, usageErrorf("--id: %v", err)
	}
	ev := worker.Event{Version: 1, Integration: integration, Connector: connector, ID: id, Op: op, OccurredAt: time.Now().UTC()}
	if len(params) > 0 {
		ev.Parameters = map[string]any{}
		for _, kv := range params {
			k, v, _ := strings.Cut(kv, "=")
			ev.Parameters[k] = v
		}
	}
	return json.Marshal(ev)
}

// readEventFile reads one event body per non-empty line, each checked
// against the event schema as the worker checks it: a bad line publishes
// nothing and names the line.
func readEventFile(path string, maxBytes int) ([][]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErrorf("--file: %v", err)
		}
		defer f.Close()
		r = f
	}
	var bodies [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if _, err := worker.Decode(line, "cli", maxBytes); err != nil {
			return nil, usageErrorf("%s:%d: %v", path, n, err)
		}
		bodies = append(bodies, bytes.Clone(line))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return bodies, nil
}
