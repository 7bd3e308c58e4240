package bench

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tasker/tasker/internal/orchestration"
)

// processStack is the system under test as separate processes: one
// `orchestrator serve` and N `orchestrator bench worker`, all this binary.
type processStack struct {
	orch    *child
	workers []*child
	apiBase string
	http    *http.Client
}

type child struct {
	role string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

func startChild(role string, cmd *exec.Cmd) (*child, error) {
	c := &child{role: role, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	// Ends when the process exits.
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the process to shut down gracefully and kills it after timeout.
func (c *child) stop(timeout time.Duration) error {
	if c.exited() {
		return c.err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within %s; killed", c.role, timeout)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr, nil
}

// childEnv is the environment of the orchestrator and worker processes: the
// caller's, with the benchmark database and quiet logs.
func childEnv(o Options, dbURL, otlpEndpoint, otlpProtocol string) []string {
	env := append(os.Environ(),
		"DATABASE_URL="+dbURL, "TASKER_DATABASE_URL="+dbURL, "TASKER_BENCH_DATABASE_URL="+dbURL,
		"TASKER_ORCHESTRATOR_TEMPLATES_DIR=", "TASKER_DATABASE_MIGRATE_ON_START=false",
		"TASKER_LOG_LEVEL=warn", "TASKER_AUTH_ENABLED=false",
		"TASKER_TELEMETRY_TRACING_ENABLED="+strconv.FormatBool(o.Tracing))
	if o.Tracing {
		env = append(env, "TASKER_TELEMETRY_OTLP_ENDPOINT="+otlpEndpoint, "TASKER_TELEMETRY_OTLP_PROTOCOL="+otlpProtocol)
	}
	return env
}

func startProcesses(ctx context.Context, o Options, dbURL, otlpEndpoint, otlpProtocol string) (*processStack, error) {
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the orchestrator binary: %w", err)
		}
	}
	s := &processStack{http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}}
	ok := false
	defer func() {
		if !ok {
			s.stop(5 * time.Second)
		}
	}()
	env := childEnv(o, dbURL, otlpEndpoint, otlpProtocol)
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--no-migrate", "--listen", addr}
	if o.ConfigPath != "" {
		args = append([]string{"--config", o.ConfigPath}, args...)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stderr, os.Stderr
	if s.orch, err = startChild("orchestrator", cmd); err != nil {
		return nil, err
	}
	s.apiBase = "http://" + addr
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	for i := 0; i < o.Workers; i++ {
		wargs := []string{"bench", "worker", "--concurrency", strconv.Itoa(o.Concurrency), "--batch", strconv.Itoa(o.Batch),
			"--result-bytes", strconv.Itoa(o.ResultBytes), "--handler-time", o.HandlerTime.String()}
		if o.AsyncSubmit {
			wargs = append(wargs, "--async-submit")
		}
		if o.Tracing {
			wargs = append(wargs, "--tracing", "--otlp-endpoint", otlpEndpoint, "--otlp-protocol", otlpProtocol)
		}
		wcmd := exec.Command(exe, wargs...)
		ready := newLineWatch("ready")
		wcmd.Env, wcmd.Stdout, wcmd.Stderr = env, ready, os.Stderr
		w, err := startChild(fmt.Sprintf("worker %d", i+1), wcmd)
		if err != nil {
			return nil, err
		}
		s.workers = append(s.workers, w)
		select {
		case <-ready.seen:
		case <-w.done:
			return nil, fmt.Errorf("worker %d exited at start: %v", i+1, w.err)
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("worker %d not ready after 30s", i+1)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ok = true
	return s, nil
}

// lineWatch is a process's stdout: it signals when a given line appears
// and discards everything.
type lineWatch struct {
	want []byte
	buf  []byte
	seen chan struct{}
	once sync.Once
}

func newLineWatch(line string) *lineWatch {
	return &lineWatch{want: []byte(line + "\n"), seen: make(chan struct{})}
}

func (l *lineWatch) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	if bytes.Contains(l.buf, l.want) {
		l.once.Do(func() { close(l.seen) })
	}
	if len(l.buf) > 4096 {
		l.buf = l.buf[len(l.buf)-len(l.want):]
	}
	return len(p), nil
}

func (s *processStack) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if s.orch.exited() {
			return fmt.Errorf("orchestrator exited at start: %v", s.orch.err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.apiBase+"/readyz", nil)
		if resp, err := s.http.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("orchestrator not ready at %s after %s", s.apiBase, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// submit creates tasks through the REST API, as a client would: one with
// POST /v1/tasks, several with POST /v1/tasks/batch.
func (s *processStack) submit(ctx context.Context, reqs []orchestration.TaskRequest) error {
	path, want := "/v1/tasks", http.StatusCreated
	var payload any = reqs[0]
	if len(reqs) > 1 {
		path, want, payload = "/v1/tasks/batch", http.StatusOK, map[string]any{"tasks": reqs}
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiBase+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if len(reqs) > 1 {
		var res struct {
			Created int `json:"created"`
			Results []struct {
				Error *struct {
					Message string `json:"message"`
				} `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("POST %s: %w", path, err)
		}
		if res.Created != len(reqs) {
			for _, r := range res.Results {
				if r.Error != nil {
					return fmt.Errorf("POST %s: %d of %d tasks created: %s", path, res.Created, len(reqs), r.Error.Message)
				}
			}
			return fmt.Errorf("POST %s: %d of %d tasks created", path, res.Created, len(reqs))
		}
	}
	return nil
}

func (s *processStack) pids() map[string][]int {
	m := map[string][]int{}
	if s.orch != nil {
		m["orchestrator"] = []int{s.orch.cmd.Process.Pid}
	}
	for _, w := range s.workers {
		m["workers"] = append(m["workers"], w.cmd.Process.Pid)
	}
	return m
}

// stop stops the workers first (they finish their steps), then the
// orchestrator.
func (s *processStack) stop(timeout time.Duration) error {
	var errs []error
	for _, w := range s.workers {
		errs = append(errs, w.stop(timeout))
	}
	if s.orch != nil {
		errs = append(errs, s.orch.stop(timeout))
	}
	s.http.CloseIdleConnections()
	return errors.Join(errs...)
}
