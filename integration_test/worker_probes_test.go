package integration_test

// Observing a running worker from outside: its JSON log, its HTTP
// listener (/readyz, /metrics) and its memory.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireRunning fails the test at once when one of the workers has
// exited.
func requireRunning(t *testing.T, ws ...*worker) {
	t.Helper()
	for _, w := range ws {
		w.RequireRunning(t)
	}
}

// logLines returns the worker's JSON log lines (stderr) decoded; lines
// that are not JSON (the final "revsync: ..." error) are skipped.
func logLines(path string) []map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// countLogs counts the log lines whose "msg" is msg and whose fields
// include every key/value in match.
func countLogs(path, msg string, match map[string]any) int {
	n := 0
lines:
	for _, l := range logLines(path) {
		if l["msg"] != msg {
			continue
		}
		for k, v := range match {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				continue lines
			}
		}
		n++
	}
	return n
}

// listenerAddr returns the address the worker's HTTP listener is bound to,
// from its log, or "" when it has not logged it yet.
func listenerAddr(w *worker) string {
	for _, l := range logLines(w.stderrPath) {
		if l["msg"] == "http listener started" {
			if a, ok := l["addr"].(string); ok && a != "" {
				return a
			}
		}
	}
	return ""
}

// workerHTTPAddr waits for the worker's "http listener started" log line
// and returns the address it names.
func workerHTTPAddr(t *testing.T, w *worker) string {
	t.Helper()
	var addr string
	waitFor(t, 20*time.Second, "the worker's http listener", func() (bool, string) {
		w.RequireRunning(t)
		addr = listenerAddr(w)
		return addr != "", "no \"http listener started\" line yet"
	})
	return addr
}

// probeClient is the client of the worker's probes: every call has a
// deadline.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// readyz asks a worker's /readyz: the status code and the "checks" object.
func readyz(w *worker) (int, map[string]any, error) {
	addr := listenerAddr(w)
	if addr == "" {
		return 0, nil, fmt.Errorf("no http listener logged yet")
	}
	resp, err := probeClient.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]any `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decode /readyz: %w", err)
	}
	return resp.StatusCode, body.Checks, nil
}

// waitReady waits until the worker's /readyz answers 200.
func waitReady(t *testing.T, w *worker, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the worker ready (/readyz 200)", func() (bool, string) {
		w.RequireRunning(t)
		code, checks, err := readyz(w)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("/readyz %d %v", code, checks)
	})
}

// metricSample is one sample of the Prometheus text exposition.
type metricSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// scrapeMetrics reads the worker's /metrics.
func scrapeMetrics(addr string) ([]metricSample, error) {
	resp, err := probeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(string(body))
}

// parseMetrics parses the Prometheus text format: `name{l="v",...} value`
// lines; comments are skipped.
func parseMetrics(text string) ([]metricSample, error) {
	var out []metricSample
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := cutLast(line, " ")
		if !ok {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s := metricSample{Name: series, Labels: map[string]string{}, Value: v}
		if i := strings.IndexByte(series, '{'); i >= 0 {
			s.Name = series[:i]
			labels := strings.TrimSuffix(series[i+1:], "}")
			for labels != "" {
				name, rest, ok := strings.Cut(labels, "=")
				if !ok {
					return nil, fmt.Errorf("metrics line %q: bad labels", line)
				}
				val, err := strconv.QuotedPrefix(rest)
				if err != nil {
					return nil, fmt.Errorf("metrics line %q: %w", line, err)
				}
				s.Labels[name], _ = strconv.Unquote(val)
				labels = strings.TrimPrefix(rest[len(val):], ",")
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// sumSamples adds up the samples of a metric whose labels include match.
func sumSamples(samples []metricSample, name string, match map[string]string) float64 {
	var sum float64
next:
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		for k, v := range match {
			if s.Labels[k] != v {
				continue next
			}
		}
		sum += s.Value
	}
	return sum
}

// processRSS returns the resident set size of a process, from
// /proc/<pid>/status, in bytes.
func processRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS line")
}
