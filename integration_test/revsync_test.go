package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// setup is what one test's revsync configuration points at: its own
// exchanges and queues, its Northwind schema and its remote.
type setup struct {
	Prefix          string
	Exchange        string
	Queue           string
	DLX             string
	DLQ             string
	Schema          string
	RemoteURL       string
	AMQPURL         string
	DatabaseURL     string
	MaxMessageBytes int
	TokenEnv        string
}

// newSetup names a test's broker resources after its unique prefix and
// deletes them at cleanup.
func newSetup(t *testing.T, svc services, b *broker, schema, remoteURL string) *setup {
	t.Helper()
	prefix := "rs-it-" + uniqueSuffix(t)
	s := &setup{
		Prefix:          prefix,
		Exchange:        prefix + ".events",
		Queue:           prefix + ".work",
		DLX:             prefix + ".dlx",
		DLQ:             prefix + ".dlq",
		Schema:          schema,
		RemoteURL:       remoteURL,
		AMQPURL:         svc.AMQPURL,
		DatabaseURL:     svc.DatabaseURL,
		MaxMessageBytes: 16 << 10,
		TokenEnv:        "REVSYNC_IT_TOKEN",
	}
	b.cleanupNamespace(t, prefix, []string{s.Queue, s.DLQ}, []string{s.Exchange, s.DLX})
	return s
}

// revsyncEnv is the environment of revsync processes: the services' URLs
// (they override the file) and the remote's token.
func (s *setup) revsyncEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMQP_URL=") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	return append(env, "AMQP_URL="+s.AMQPURL, "DATABASE_URL="+s.DatabaseURL, s.TokenEnv+"=it-token")
}

// cliResult is how a revsync command ended.
type cliResult struct {
	Code   int
	Stdout string
	Stderr string
}

// Run runs a revsync command to its end (30s at most).
func (s *setup) Run(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, revsyncBin, args...)
	cmd.Env = s.revsyncEnv()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		require.NoError(t, err, "run revsync %v", args)
	}
	require.NoError(t, ctx.Err(), "revsync %v did not finish in time\nstderr:\n%s", args, stderr.String())
	return cliResult{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// MustRun runs a revsync command and requires exit code 0.
func (s *setup) MustRun(t *testing.T, args ...string) cliResult {
	t.Helper()
	res := s.Run(t, args...)
	require.Equal(t, 0, res.Code, "revsync %v\nstdout:\n%s\nstderr:\n%s", args, res.Stdout, res.Stderr)
	return res
}

// worker is a running `revsync worker` process.
type worker struct {
	cmd        *exec.Cmd
	stdoutPath string
	stderrPath string
	done       chan struct{}
}

// StartWorker starts `revsync worker --config cfg` with its output captured
// to files, printed when the test fails. It is killed at cleanup if still
// running.
func (s *setup) StartWorker(t *testing.T, cfg string) *worker {
	t.Helper()
	w, err := startWorkerProcess(s, cfg, t.TempDir(), "worker")
	require.NoError(t, err)
	t.Cleanup(func() {
		stopProcess(w.cmd, w.done, 0)
		if t.Failed() {
			dumpFile(t, "revsync worker stdout", w.stdoutPath)
			dumpFile(t, "revsync worker stderr", w.stderrPath)
		}
	})
	return w
}

// startWorkerProcess starts `revsync worker --config cfg` with output to
// files in dir named after tag. Unlike setup.StartWorker it registers no
// cleanup and may be called from any goroutine.
func startWorkerProcess(s *setup, cfg, dir, tag string) (*worker, error) {
	w := &worker{
		stdoutPath: filepath.Join(dir, tag+".stdout"),
		stderrPath: filepath.Join(dir, tag+".stderr"),
		done:       make(chan struct{}),
	}
	stdout, err := os.Create(w.stdoutPath)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(w.stderrPath)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	w.cmd = exec.Command(revsyncBin, "worker", "--config", cfg)
	w.cmd.Env = s.revsyncEnv()
	w.cmd.Stdout, w.cmd.Stderr = stdout, stderr
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start revsync worker: %w", err)
	}
	go func() {
		_ = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// Exited reports whether the process has ended.
func (w *worker) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end and returns its exit code (-1 when a
// signal killed it).
func (w *worker) Wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-w.done:
		return w.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("revsync worker still running after %s", timeout)
		return 0
	}
}

// Stop sends SIGTERM and returns the exit code.
func (w *worker) Stop(t *testing.T, timeout time.Duration) int {
	t.Helper()
	require.False(t, w.Exited(), "revsync worker exited before SIGTERM: %v", w.cmd.ProcessState)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	return w.Wait(t, timeout)
}

// Stderr returns what the process wrote to stderr so far.
func (w *worker) Stderr(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(w.stderrPath)
	require.NoError(t, err)
	return string(data)
}

// RequireRunning fails the test at once when the worker has exited.
func (w *worker) RequireRunning(t *testing.T) {
	t.Helper()
	if w.Exited() {
		t.Fatalf("revsync worker exited unexpectedly: %v", w.cmd.ProcessState)
	}
}

// stopProcess ends a process: SIGTERM, then SIGKILL after grace (at once
// when grace is zero).
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
		return
	default:
	}
	if grace > 0 {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	_ = cmd.Process.Kill()
	<-done
}

func dumpFile(t *testing.T, what, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s: %v", what, err)
		return
	}
	const max = 64 << 10
	if len(data) > max {
		data = append([]byte("...\n"), data[len(data)-max:]...)
	}
	t.Logf("%s (%s):\n%s", what, path, data)
}
