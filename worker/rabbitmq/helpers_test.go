package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	tcrabbit "github.com/testcontainers/testcontainers-go/modules/rabbitmq"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/revsync/revsync/worker"
	"github.com/revsync/revsync/worker/rabbitmq"
	"github.com/revsync/revsync/worker/rabbitmq/rabbittest"
)

var (
	containerOnce sync.Once
	container     *tcrabbit.RabbitMQContainer
	containerURL  string
	containerErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if container != nil {
		_ = container.Terminate(context.Background())
		os.Exit(code)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// brokerURL returns AMQP_URL, or the URL of a RabbitMQ container when a
// Docker engine is reachable; otherwise it skips the test.
func brokerURL(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			t.Skip("set AMQP_URL to run the RabbitMQ tests (no Docker engine for testcontainers)")
		}
	}
	containerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		container, containerErr = tcrabbit.Run(ctx, "rabbitmq:3.13-alpine")
		if containerErr == nil {
			containerURL, containerErr = container.AmqpURL(ctx)
		}
	})
	if containerErr != nil {
		t.Skipf("set AMQP_URL to run the RabbitMQ tests (testcontainers: %v)", containerErr)
	}
	return containerURL
}

// env is one test's broker set-up: uniquely named topology, an admin
// connection for inspecting it, logs.
type env struct {
	t       *testing.T
	cfg     rabbitmq.Config
	url     string
	adminMu sync.Mutex
	admin   *amqp.Connection // redialled when closed (fault tests)
	logs    *observer.ObservedLogs
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// newEnv sets up a test's topology names and admin connection. It takes
// the shared broker lock (a no-op in a fault test holding the exclusive
// one).
func newEnv(t *testing.T) *env {
	t.Helper()
	url := brokerURL(t)
	rabbittest.Shared(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "test." + unsafeName.ReplaceAllString(t.Name(), "_") + "." + hex.EncodeToString(b[:])
	core, logs := observer.New(zapcore.DebugLevel)
	e := &env{
		t: t,
		cfg: rabbitmq.Config{
			URL:                url,
			Exchange:           prefix + ".events",
			Queue:              prefix + ".work",
			DeadLetterExchange: prefix + ".dlx",
			DeadLetterQueue:    prefix + ".dlq",
			PublishTimeout:     5 * time.Second,
			DialTimeout:        5 * time.Second,
			ConnectionName:     prefix,
			Logger:             zap.New(core),
		},
		url:  url,
		logs: logs,
	}
	e.conn()
	t.Cleanup(func() {
		if once, ok := restoreOnce.Load(t); ok {
			// A fault test: the broker may be down.
			once.(*sync.Once).Do(func() { restoreBroker(t) })
		}
		admin, err := e.dialAdmin()
		if err != nil {
			t.Logf("cleanup: cannot connect to delete the test's queues: %v", err)
			return
		}
		defer admin.Close()
		ch, err := admin.Channel()
		if err == nil {
			queues := append([]string{e.cfg.Queue, e.cfg.DeadLetterQueue}, rabbitmq.RetryQueues(e.cfg)...)
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			for _, x := range []string{e.cfg.Exchange, e.cfg.DeadLetterExchange} {
				_ = ch.ExchangeDelete(x, false, false)
			}
		}
	})
	return e
}

// dialAdmin returns the admin connection, dialling it again when closed
// (the broker was restarted or closed it).
func (e *env) dialAdmin() (*amqp.Connection, error) {
	e.adminMu.Lock()
	defer e.adminMu.Unlock()
	if e.admin != nil && !e.admin.IsClosed() {
		return e.admin, nil
	}
	admin, err := amqp.DialConfig(e.url, amqp.Config{
		Dial:       amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": e.cfg.ConnectionName + ".admin"},
	})
	if err != nil {
		return nil, err
	}
	if e.admin == nil {
		e.t.Cleanup(func() {
			e.adminMu.Lock()
			defer e.adminMu.Unlock()
			_ = e.admin.Close()
		})
	}
	e.admin = admin
	return admin, nil
}

// conn returns the admin connection.
func (e *env) conn() *amqp.Connection {
	e.t.Helper()
	admin, err := e.dialAdmin()
	require.NoError(e.t, err)
	return admin
}

// channel opens an admin channel closed with the test.
func (e *env) channel() *amqp.Channel {
	e.t.Helper()
	ch, err := e.conn().Channel()
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// dial connects a Client closed with the test.
func (e *env) dial() *rabbitmq.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rabbitmq.Dial(ctx, e.cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { require.NoError(e.t, c.Close()) })
	return c
}

// depth returns the ready messages and consumers of queue (a passive
// declare: unacknowledged messages are not counted).
func (e *env) depth(queue string) (messages, consumers int) {
	e.t.Helper()
	ch, err := e.conn().Channel()
	require.NoError(e.t, err)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(e.t, err)
	return q.Messages, q.Consumers
}

// waitDepth waits until queue holds n ready messages.
func (e *env) waitDepth(queue string, n int) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { m, _ := e.depth(queue); return m == n },
		10*time.Second, 10*time.Millisecond, "queue %s never held %d messages", queue, n)
}

// unacked returns the unacknowledged messages of queue from rabbitmqctl,
// or -1 when rabbitmqctl is not available (the broker is remote).
func (e *env) unacked(queue string) int {
	e.t.Helper()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil || os.Getenv("AMQP_URL") == "" {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "list_queues", "-q", "--no-table-headers",
		"name", "messages_unacknowledged").Output()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// drain gets every message of queue, acknowledged.
func (e *env) drain(queue string) []amqp.Delivery {
	e.t.Helper()
	ch := e.channel()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		require.NoError(e.t, err)
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// publish publishes raw to the events exchange from the admin connection.
func (e *env) publish(routingKey string, msg amqp.Publishing) {
	e.t.Helper()
	ch := e.channel()
	require.NoError(e.t, ch.Confirm(false))
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), e.cfg.Exchange, routingKey, true, false, msg)
	require.NoError(e.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := dc.WaitContext(ctx)
	require.NoError(e.t, err)
	require.True(e.t, ok)
}

// running runs the worker on c in the background; stop cancels it and
// returns Run's error.
func running(t *testing.T, c *rabbitmq.Client, w *worker.Worker) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, w) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
