package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// jsonServer is a json-server process serving a db file in a temporary
// folder.
type jsonServer struct {
	URL     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	client  *http.Client
}

// startJSONServer starts json-server on a free 127.0.0.1 port with empty
// collections and waits until it answers. It is stopped at cleanup.
func startJSONServer(t *testing.T, collections ...string) *jsonServer {
	t.Helper()
	bin := filepath.Join(repoRoot, "integration_test", "remote", "node_modules", ".bin", "json-server")
	requireFixture(t, bin, "run `npm ci --prefix integration_test/remote` in the repository root")

	dir := t.TempDir()
	db := map[string][]any{}
	for _, c := range collections {
		db[c] = []any{}
	}
	data, err := json.Marshal(db)
	require.NoError(t, err)
	dbPath := filepath.Join(dir, "db.json")
	require.NoError(t, os.WriteFile(dbPath, data, 0o600))

	port := freePort(t)
	s := &jsonServer{
		URL:     fmt.Sprintf("http://127.0.0.1:%d", port),
		logPath: filepath.Join(dir, "json-server.log"),
		done:    make(chan struct{}),
		client:  &http.Client{Timeout: 5 * time.Second},
	}
	logFile, err := os.Create(s.logPath)
	require.NoError(t, err)
	defer logFile.Close()
	s.cmd = exec.Command(bin, "--host", "127.0.0.1", "--port", fmt.Sprint(port), dbPath)
	s.cmd.Dir = dir // json-server reads ./json-server.json when present
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	require.NoError(t, s.cmd.Start(), "start json-server")
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		stopProcess(s.cmd, s.done, 5*time.Second)
		if t.Failed() {
			dumpFile(t, "json-server log", s.logPath)
		}
	})

	waitFor(t, 20*time.Second, "json-server answers", func() (bool, string) {
		select {
		case <-s.done:
			dumpFile(t, "json-server log", s.logPath)
			t.Fatalf("json-server exited during start-up: %v", s.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/db", nil)
		if err != nil {
			return false, err.Error()
		}
		resp, err := s.client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return s
}

// Collection returns the items of a collection by their "id".
func (s *jsonServer) Collection(collection string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/"+collection, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /%s: %w", collection, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /%s: %w", collection, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /%s: %s: %s", collection, resp.Status, body)
	}
	var items []map[string]any
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, fmt.Errorf("GET /%s: %w", collection, err)
	}
	byID := make(map[string]any, len(items))
	for _, item := range items {
		byID[fmt.Sprint(item["id"])] = item
	}
	return byID, nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
