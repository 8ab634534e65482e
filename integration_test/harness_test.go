package integration_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcrabbitmq "github.com/testcontainers/testcontainers-go/modules/rabbitmq"
)

// integrationName is the base name of the integration of generated
// configurations; scopedName makes it each test's own. Routing keys are
// "<integration>.<connector>".
const integrationName = "northwind_crm"

// Set by TestMain.
var (
	repoRoot   string // the module root, parent of integration_test
	revsyncBin string // the revsync binary built from ./cmd/revsync
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration_test:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(repoRoot, "go.mod")); err != nil {
		fmt.Fprintf(os.Stderr, "integration_test: %s is not the module root: %v\n", repoRoot, err)
		return 1
	}
	binDir, err := os.MkdirTemp("", "revsync-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration_test:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	revsyncBin = filepath.Join(binDir, "revsync")
	if err := buildRevsync(revsyncBin); err != nil {
		fmt.Fprintln(os.Stderr, "integration_test:", err)
		return 1
	}
	defer terminateContainers()
	return m.Run()
}

// buildRevsync builds ./cmd/revsync from the repository root into out.
func buildRevsync(out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build revsync: go tool not found: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/revsync")
	cmd.Dir = repoRoot
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./cmd/revsync: %w\n%s", err, output)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Services: RabbitMQ and PostgreSQL.

// services are the broker and database the tests run against.
type services struct {
	AMQPURL     string
	DatabaseURL string
	// rabbitmqctl runs rabbitmqctl on the broker's node; nil when that is
	// not possible (a remote broker from AMQP_URL).
	rabbitmqctl func(ctx context.Context, args ...string) ([]byte, error)
}

var (
	servicesOnce sync.Once
	servicesVal  services
	servicesErr  error
	servicesSkip string

	containersMu sync.Mutex
	containers   []testcontainers.Container
)

// requireServices returns the services from AMQP_URL and DATABASE_URL,
// starts the missing ones with testcontainers when a Docker engine is
// reachable, and otherwise skips the test naming the variables to set.
func requireServices(t *testing.T) services {
	t.Helper()
	servicesOnce.Do(func() { servicesVal, servicesSkip, servicesErr = resolveServices() })
	if servicesSkip != "" {
		t.Skip(servicesSkip)
	}
	require.NoError(t, servicesErr, "start services")
	return servicesVal
}

func resolveServices() (services, string, error) {
	s := services{AMQPURL: os.Getenv("AMQP_URL"), DatabaseURL: os.Getenv("DATABASE_URL")}
	if s.AMQPURL != "" && isLoopbackURL(s.AMQPURL) {
		if path, err := exec.LookPath("rabbitmqctl"); err == nil {
			s.rabbitmqctl = func(ctx context.Context, args ...string) ([]byte, error) {
				return exec.CommandContext(ctx, path, args...).Output()
			}
		}
	}
	if s.AMQPURL != "" && s.DatabaseURL != "" {
		return s, "", nil
	}
	if !dockerReachable() {
		var missing []string
		if s.AMQPURL == "" {
			missing = append(missing, "AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/)")
		}
		if s.DatabaseURL == "" {
			missing = append(missing, "DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)")
		}
		return s, "set " + strings.Join(missing, " and ") + " to run the end-to-end tests (no Docker engine is reachable for testcontainers)", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if s.AMQPURL == "" {
		ctr, err := tcrabbitmq.Run(ctx, "rabbitmq:3.13-alpine")
		trackContainer(ctr)
		if err != nil {
			return s, "", fmt.Errorf("start RabbitMQ container: %w", err)
		}
		if s.AMQPURL, err = ctr.AmqpURL(ctx); err != nil {
			return s, "", fmt.Errorf("RabbitMQ container URL: %w", err)
		}
		s.rabbitmqctl = func(ctx context.Context, args ...string) ([]byte, error) {
			code, out, err := ctr.Exec(ctx, append([]string{"rabbitmqctl"}, args...), tcexec.Multiplexed())
			if err != nil {
				return nil, err
			}
			data, err := io.ReadAll(out)
			if err == nil && code != 0 {
				err = fmt.Errorf("rabbitmqctl %v: exit %d: %s", args, code, data)
			}
			return data, err
		}
	}
	if s.DatabaseURL == "" {
		ctr, err := tcpostgres.Run(ctx, "postgres:15-alpine", tcpostgres.BasicWaitStrategies())
		trackContainer(ctr)
		if err != nil {
			return s, "", fmt.Errorf("start PostgreSQL container: %w", err)
		}
		if s.DatabaseURL, err = ctr.ConnectionString(ctx, "sslmode=disable"); err != nil {
			return s, "", fmt.Errorf("PostgreSQL container URL: %w", err)
		}
	}
	return s, "", nil
}

// dockerReachable reports whether testcontainers can reach a Docker engine.
func dockerReachable() (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false
	}
	return p.Health(ctx) == nil // Health closes the provider
}

func trackContainer(c testcontainers.Container) {
	if c == nil {
		return
	}
	containersMu.Lock()
	defer containersMu.Unlock()
	containers = append(containers, c)
}

func terminateContainers() {
	containersMu.Lock()
	defer containersMu.Unlock()
	for _, c := range containers {
		if err := testcontainers.TerminateContainer(c); err != nil {
			fmt.Fprintln(os.Stderr, "integration_test: terminate container:", err)
		}
	}
	containers = nil
}

func isLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ---------------------------------------------------------------------------
// Fixtures shared by the tests.

// requireFixture returns path when it exists. A missing fixture fails the
// test on CI (env CI set) and skips it elsewhere, with how to get it.
func requireFixture(t *testing.T, path, how string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (%v): %s", path, err, how)
		}
		t.Skipf("%s is missing: %s", path, how)
	}
	return path
}

// uniqueSuffix returns 8 random hex digits for names of test resources.
func uniqueSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// Waiting.

// waitFor polls cond until it reports done, failing the test with cond's
// last status when timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (done bool, status string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done, status := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, status)
		}
		<-tick.C
	}
}
