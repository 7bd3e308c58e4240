//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/wait"
)

// repoRoot is the main module's root (the test runs in e2e/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

// buildBinaries builds the orchestrator and the example worker from this
// checkout into a temporary directory: the check runs the code under test,
// not whatever bin/ holds.
func buildBinaries(t *testing.T, root string) (orchestrator, worker string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/orchestrator", "./cmd/example-worker")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "orchestrator"), filepath.Join(dir, "example-worker")
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// baseEnv is the test's environment without the variables that configure
// Tasker or OpenTelemetry, so that only what the test sets applies.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TASKER_") || strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "JAEGER_") || k == "DATABASE_URL" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// process is a child process whose output goes to a log file, shown when
// the test fails.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startProcess(t *testing.T, name, bin string, args, env []string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(baseEnv(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	// Ends when the process exits (stop, or the cleanup's kill).
	go func() {
		p.waitErr = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) dumpLog(t *testing.T) {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return
	}
	const max = 8000
	if len(b) > max {
		b = append([]byte("…\n"), b[len(b)-max:]...)
	}
	t.Logf("--- %s log (%s) ---\n%s", p.name, p.logPath, b)
}

// stop sends SIGTERM (a graceful shutdown flushes the spans) and requires a
// clean exit within the timeout.
func (p *process) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited before it was stopped: %v", p.name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not stop within %s of SIGTERM", p.name, timeout)
	}
	if p.waitErr != nil {
		t.Fatalf("%s exited with %v after SIGTERM", p.name, p.waitErr)
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// eventually polls fn every interval until it returns true, failing the test
// with the last error after timeout; it fails early when a watched process
// exits.
func eventually(t *testing.T, timeout, interval time.Duration, what string, fn func() (bool, error), watch ...*process) {
	t.Helper()
	var last error
	err := wait.Poll(time.Now().Add(timeout), interval, func() (bool, error) {
		ok, err := fn()
		last = err
		if ok {
			return true, nil
		}
		for _, p := range watch {
			if p.exited() {
				return false, fmt.Errorf("%s exited: %v", p.name, p.waitErr)
			}
		}
		return false, nil
	})
	if errors.Is(err, wait.ErrTimeout) {
		t.Fatalf("%s: not done within %s (last error: %v)", what, timeout, last)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// getJSON GETs url into out and returns the HTTP status.
func getJSON(ctx context.Context, url string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("GET %s: decode: %w", url, err)
		}
	}
	return resp.StatusCode, nil
}

// postJSON POSTs in as JSON to url and decodes the answer into out; it
// requires the status want.
func postJSON(ctx context.Context, url string, in, out any, want int) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, out)
}

// requiredEnv reads the variables scripts/e2e.sh exports; the check fails
// rather than skips without them (a suite that silently runs nothing proves
// nothing).
func requiredEnv(t *testing.T, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var missing []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			missing = append(missing, n)
		}
		out[n] = v
	}
	if len(missing) > 0 {
		t.Fatalf("%s not set: run this check with `make e2e` (scripts/e2e.sh starts Jaeger and exports them)",
			strings.Join(missing, ", "))
	}
	return out
}

// metricValue sums the samples of a Prometheus text-format metric whose
// labels include all of want.
func metricValue(ctx context.Context, url, name string, want map[string]string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		labels, rest := "", line[len(name):]
		if i, j := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}'); i >= 0 && j > i {
			labels, rest = line[i+1:j], line[j+1:]
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(labels, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(fields[0], &v); err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, errNoSample
	}
	return sum, nil
}

var errNoSample = errors.New("no sample")
