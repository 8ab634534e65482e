package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// Environment variables read by this package.
const (
	// EnvDatabaseURL names the server integration tests use.
	EnvDatabaseURL = "DATABASE_URL"
	// EnvNorthwindSQL overrides the path of the Northwind dump.
	EnvNorthwindSQL = "NORTHWIND_SQL"
)

// ContainerImage is the image started with testcontainers when
// DATABASE_URL is unset and a Docker engine is reachable.
const ContainerImage = "postgres:15-alpine"

// opTimeout bounds each database operation of this package.
const opTimeout = 30 * time.Second

// URL returns the PostgreSQL connection URL for integration tests: the
// DATABASE_URL environment variable when set; otherwise the URL of a
// container started with testcontainers (one per test binary, removed by
// testcontainers' reaper) when a Docker engine is reachable; otherwise it
// skips t with a message saying to set DATABASE_URL.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return u
	}
	u, err := containerURL()
	if errors.Is(err, errNoDocker) {
		t.Skipf("set %s to run PostgreSQL integration tests (e.g. %s=postgres://postgres@127.0.0.1:5432/postgres); no Docker engine is reachable for testcontainers",
			EnvDatabaseURL, EnvDatabaseURL)
	}
	if err != nil {
		t.Fatalf("start PostgreSQL with testcontainers: %v", err)
	}
	return u
}

var errNoDocker = errors.New("no Docker engine reachable")

var container struct {
	once sync.Once
	url  string
	err  error
}

// containerURL starts the shared PostgreSQL container on first use.
func containerURL() (string, error) {
	container.once.Do(func() {
		if !dockerReachable() {
			container.err = errNoDocker
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		c, err := tcpostgres.Run(ctx, ContainerImage,
			tcpostgres.WithDatabase("revsync"),
			tcpostgres.WithUsername("postgres"),
			tcpostgres.WithPassword("postgres"),
			tcpostgres.BasicWaitStrategies(),
		)
		if err != nil {
			container.err = err
			return
		}
		container.url, container.err = c.ConnectionString(ctx, "sslmode=disable")
	})
	return container.url, container.err
}

// dockerReachable reports whether a Docker engine answers within seconds.
// testcontainers may panic when it finds no engine; that counts as no.
func dockerReachable() (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return p.Health(ctx) == nil
}

// Connect opens a connection to url, closed when t ends.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// NewSchema creates an empty schema with a unique name (prefix, an
// underscore and random hex, e.g. "rs_1f3a9c0e2b7d") on the server at url
// and returns its name, which needs no quoting. The schema is dropped with
// CASCADE when t ends, over a connection of its own, so whatever pools the
// test closed first does not matter.
func NewSchema(t testing.TB, url, prefix string) string {
	t.Helper()
	if prefix == "" {
		prefix = "rs"
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random schema name: %v", err)
	}
	schema := prefix + "_" + hex.EncodeToString(b[:])
	exec(t, url, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	t.Cleanup(func() {
		// A test that failed half-way may still hold a lock: bound the wait.
		exec(t, url, "SET lock_timeout = '10s'", "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	return schema
}

// exec runs statements, in order, on a new connection to url.
func exec(t testing.TB, url string, statements ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("connect to PostgreSQL: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, s := range statements {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Errorf("%s: %v", s, err)
			return
		}
	}
}

// NorthwindPath returns the path of the Northwind dump: NORTHWIND_SQL when
// set, otherwise ../shared/datasets/northwind.sql relative to the
// repository root (the nearest directory above the working directory with
// a go.mod). It skips t, naming NORTHWIND_SQL, when the file is not there.
func NorthwindPath(t testing.TB) string {
	t.Helper()
	path := os.Getenv(EnvNorthwindSQL)
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			t.Skipf("set %s to the Northwind dump: %v", EnvNorthwindSQL, err)
		}
		path = filepath.Join(root, "..", "shared", "datasets", "northwind.sql")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("set %s to the Northwind dump: %v", EnvNorthwindSQL, err)
	}
	return path
}

// repoRoot walks up from the working directory to the one holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// unsupportedRe matches dump lines to leave out: default_with_oids is gone
// from newer PostgreSQL releases (15 still accepts "false"; it is the
// only behaviour anyway).
var unsupportedRe = regexp.MustCompile(`(?mi)^\s*SET\s+default_with_oids\s*=.*$`)

// LoadNorthwind loads the Northwind dump (see NorthwindPath) into a new
// schema (see NewSchema, prefix "nw") on the server at url and returns the
// schema's name. Its tables (customers, orders, order_details, products…)
// are then schema.table. The dump runs as one multi-statement simple-
// protocol Exec with search_path set to the schema.
func LoadNorthwind(t testing.TB, url string) string {
	t.Helper()
	data, err := os.ReadFile(NorthwindPath(t))
	if err != nil {
		t.Fatalf("read Northwind dump: %v", err)
	}
	schema := NewSchema(t, url, "nw")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("set search_path: %v", err)
	}
	script := unsupportedRe.ReplaceAllString(string(data), "")
	if _, err := conn.Exec(ctx, script); err != nil {
		t.Fatalf("load Northwind into schema %s: %v", schema, err)
	}
	return schema
}
