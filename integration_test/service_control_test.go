package integration_test

// Faults of the services themselves: stopping and starting the RabbitMQ
// application, restarting the PostgreSQL server.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// brokerApp stops and starts the RabbitMQ application with rabbitmqctl.
type brokerApp struct {
	b       *broker
	mu      sync.Mutex
	stopped bool
}

// controlBrokerApp returns the control of the broker application, skipping
// the test when rabbitmqctl cannot reach the broker's node. At cleanup it
// starts the application again if it is stopped, and reconnects b. Call
// it after rabbittest.Exclusive and after newSetup, so that the broker is
// back before the test's queues are deleted and before the lock is
// released.
func controlBrokerApp(t *testing.T, b *broker) *brokerApp {
	t.Helper()
	if b.svc.rabbitmqctl == nil {
		t.Skip("needs rabbitmqctl on the broker's node (a loopback AMQP_URL)")
	}
	a := &brokerApp{b: b}
	t.Cleanup(func() {
		a.mu.Lock()
		stopped := a.stopped
		a.mu.Unlock()
		if stopped {
			if err := a.start(); err != nil {
				t.Errorf("restore RabbitMQ: %v", err)
				return
			}
			conn, err := amqp.DialConfig(b.svc.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
			if err != nil {
				t.Errorf("reconnect to RabbitMQ after restoring it: %v", err)
				return
			}
			_ = b.conn.Close()
			b.conn = conn
		}
	})
	return a
}

func (a *brokerApp) ctl(timeout time.Duration, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := a.b.svc.rabbitmqctl(ctx, args...)
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Stop stops the RabbitMQ application (the Erlang node stays up).
func (a *brokerApp) Stop(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	a.stopped = true // even if the command fails half-way: restore at cleanup
	a.mu.Unlock()
	start := time.Now()
	require.NoError(t, a.ctl(2*time.Minute, "stop_app"))
	t.Logf("rabbitmqctl stop_app took %s", time.Since(start).Round(100*time.Millisecond))
}

// Start starts the RabbitMQ application, waits for it, and reconnects the
// test's broker connection.
func (a *brokerApp) Start(t *testing.T) {
	t.Helper()
	start := time.Now()
	require.NoError(t, a.start())
	t.Logf("rabbitmqctl start_app and await_startup took %s", time.Since(start).Round(100*time.Millisecond))
	a.b.redial(t)
}

func (a *brokerApp) start() error {
	if err := a.ctl(2*time.Minute, "start_app"); err != nil {
		return err
	}
	if err := a.ctl(2*time.Minute, "await_startup"); err != nil {
		return err
	}
	a.mu.Lock()
	a.stopped = false
	a.mu.Unlock()
	return nil
}

// ---------------------------------------------------------------------------
// The PostgreSQL server.

// postgresCluster controls the local PostgreSQL cluster with pg_ctlcluster.
type postgresCluster struct {
	version string // the folder under /etc/postgresql
	name    string
	host    string
	port    string
}

// localPostgres returns the control of the PostgreSQL cluster behind
// databaseURL, skipping the test when it is not a local cluster that
// pg_ctlcluster manages. At cleanup it makes sure the server is up.
func localPostgres(t *testing.T, databaseURL string) *postgresCluster {
	t.Helper()
	if !isLoopbackURL(databaseURL) {
		t.Skip("needs a local PostgreSQL (a loopback DATABASE_URL) to restart")
	}
	for _, tool := range []string{"pg_ctlcluster", "pg_isready"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to restart PostgreSQL", tool)
		}
	}
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(versions) != 1 {
		t.Skipf("needs exactly one PostgreSQL version under /etc/postgresql (%v)", err)
	}
	u, err := url.Parse(databaseURL)
	require.NoError(t, err)
	pg := &postgresCluster{version: versions[0].Name(), name: "main", host: u.Hostname(), port: u.Port()}
	if pg.port == "" {
		pg.port = "5432"
	}
	t.Cleanup(func() {
		if pg.ready() {
			return
		}
		t.Log("PostgreSQL is down at cleanup: starting it")
		if err := pg.ctl("start"); err != nil {
			t.Errorf("restore PostgreSQL: %v", err)
		}
		if err := pg.awaitReady(time.Minute); err != nil {
			t.Errorf("restore PostgreSQL: %v", err)
		}
	})
	return pg
}

func (pg *postgresCluster) ctl(action string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", pg.version, pg.name, action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s %s %s: %w: %s", pg.version, pg.name, action, err, out)
	}
	return nil
}

func (pg *postgresCluster) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "pg_isready", "-q", "-h", pg.host, "-p", pg.port).Run() == nil
}

func (pg *postgresCluster) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !pg.ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL not ready within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Restart restarts the server (every session is disconnected) and waits
// until it accepts connections again.
func (pg *postgresCluster) Restart(t *testing.T) {
	t.Helper()
	require.NoError(t, pg.ctl("restart"))
	require.NoError(t, pg.awaitReady(time.Minute))
}
