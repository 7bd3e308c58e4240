package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/daemon"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/lockedbuf"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testConfig(t testing.TB, dbURL string) config.Config {
	cfg := config.Default()
	cfg.Database.URL = dbURL
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Orchestrator.TemplatesDir = filepath.Join(repoRoot(t), "config", "templates")
	cfg.Orchestrator.PollInterval = config.Duration{Duration: 200 * time.Millisecond}
	cfg.Orchestrator.ShutdownTimeout = config.Duration{Duration: 5 * time.Second}
	return cfg
}

func postTask(t testing.TB, base string, i int) string {
	t.Helper()
	body := `{"namespace":"ecommerce","name":"order_fulfillment","context":` + demo.SampleContext(i) + `}`
	res, err := http.Post(base+"/v1/tasks", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		TaskUUID string `json:"task_uuid"`
	}
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 201 || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("submit: %d %s", res.StatusCode, raw)
	}
	return out.TaskUUID
}

// TestDaemonServesAndStopsInOrder starts the whole daemon in-process:
// migrations, templates from config/templates, health, readiness, metrics,
// a task to completion, then a bounded Stop.
func TestDaemonServesAndStopsInOrder(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	d, err := daemon.Start(context.Background(), testConfig(t, dbURL), enginetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.Addr()
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(base + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, res)
		}
		res.Body.Close()
	}
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}}, demo.Handlers(0))
	id := postTask(t, base, 1)
	enginetest.Eventually(t, 30*time.Second, "task completes", func() bool {
		res, err := http.Get(base + "/v1/tasks/" + id)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var v struct{ State string }
		_ = json.NewDecoder(res.Body).Decode(&v)
		return v.State == "complete"
	})
	// Metrics are recorded just after the commit that a reader of the
	// task can already see.
	const completed = `tasker_task_completion_duration_seconds_count{namespace="ecommerce",outcome="complete"} 1`
	var metrics []byte
	enginetest.Eventually(t, 10*time.Second, "the completion is counted", func() bool {
		res, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		metrics, _ = io.ReadAll(res.Body)
		return strings.Contains(string(metrics), completed)
	})
	for _, want := range []string{`tasker_queue_depth{queue="worker_ecommerce_queue"}`, "tasker_http_requests_total", "go_goroutines", "tasker_db_pool_connections"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("Stop took %s; the bound is 5s", el)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the API still answers after Stop")
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartFailsClearly(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	cfg.Database.ConnectWait = config.Duration{Duration: 1500 * time.Millisecond}
	start := time.Now()
	_, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "connect to database: gave up after") || !strings.Contains(err.Error(), "database.connect_wait") {
		t.Errorf("unreachable database: %v, want the error to say it gave up after database.connect_wait", err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("gave up after %s, before database.connect_wait", d)
	}
	// An unknown database does not appear by waiting: it fails at once.
	u, _ := url.Parse(testdb.URL(t))
	u.Path = "/no_such_database"
	cfg = testConfig(t, u.String())
	start = time.Now()
	_, err = daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "no_such_database") || time.Since(start) > 10*time.Second {
		t.Errorf("unknown database: %v after %s, want a prompt error naming it", err, time.Since(start))
	}
	cfg = testConfig(t, testdb.URL(t))
	cfg.Orchestrator.TemplatesDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.Orchestrator.TemplatesDir, "bad.yaml"), []byte("namespace: x\nname: y\nversion: 1\nsteps:\n  - {name: a, handler: h, depends_on: [ghost]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "ghost") || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("invalid template: %v", err)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func orchestratorBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tasker-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "orchestrator")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/orchestrator")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

// startServe runs `orchestrator serve`; env is added to (and overrides) the
// test's settings.
func startServe(t *testing.T, dbURL, addr string, shutdown time.Duration, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(orchestratorBinary(t), "serve", "--listen", addr)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "TASKER_LOG_FORMAT=text",
		"TASKER_ORCHESTRATOR_TEMPLATES_DIR="+filepath.Join(repoRoot(t), "config", "templates"),
		"TASKER_ORCHESTRATOR_SHUTDOWN_TIMEOUT="+shutdown.String(), "TASKER_ORCHESTRATOR_POLL_INTERVAL=200ms")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: &out, done: make(chan error, 1)}
	// Ends when the process exits.
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("orchestrator output:\n%s", out.String())
		}
	})
	enginetest.Eventually(t, 30*time.Second, "orchestrator ready", func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return p
}

// TestSIGTERMDuringLoad: the daemon, under load, exits 0 within its bound
// on SIGTERM, having finished or released its work; a restarted daemon
// finishes every task, each step completed exactly once. A second SIGTERM
// stops it at once.
func TestSIGTERMDuringLoad(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	addr := freeAddr(t)
	p := startServe(t, dbURL, addr, 5*time.Second)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, Concurrency: 8}, demo.Handlers(20*time.Millisecond))
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, postTask(t, "http://"+addr, i))
	}
	enginetest.Eventually(t, 30*time.Second, "some tasks complete", func() bool {
		var n int
		_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`).Scan(&n)
		return n >= 3
	})
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.out)
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("still running 8s after SIGTERM (bound 5s)")
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(p.out.String(), "shutting down") {
		t.Errorf("no shutdown log line:\n%s", p.out)
	}

	startServe(t, dbURL, freeAddr(t), 5*time.Second)
	st := store.New(h.Pool)
	for _, id := range ids {
		enginetest.Eventually(t, 60*time.Second, "task "+id+" completes after restart", func() bool {
			var state string
			_ = h.Pool.QueryRow(context.Background(), `SELECT state FROM tasker.tasks WHERE task_uuid = $1`, id).Scan(&state)
			return state == string(lifecycle.TaskComplete)
		})
	}
	_ = st
	var twice int
	if err := h.Pool.QueryRow(context.Background(), `
		SELECT count(*) FROM (SELECT step_uuid FROM tasker.workflow_step_transitions
		 WHERE to_state = 'complete' GROUP BY step_uuid HAVING count(*) > 1) x`).Scan(&twice); err != nil {
		t.Fatal(err)
	}
	if twice != 0 {
		t.Errorf("%d steps completed twice", twice)
	}

	// Second signal: hard stop.
	p3 := startServe(t, dbURL, freeAddr(t), 30*time.Second)
	_ = p3.cmd.Process.Signal(syscall.SIGTERM)
	_ = p3.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p3.done:
		p3.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGTERM did not stop the daemon at once")
	}
}

// `orchestrator migrate status`: every migration is listed as applied on a
// migrated database, each under a name an operator can read (its file; the
// Go migration that installs PGMQ says so).
func TestMigrationStatusNamesEveryMigration(t *testing.T) {
	t.Parallel()
	st, err := daemon.MigrationStatus(context.Background(), testdb.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) < 23 {
		t.Fatalf("%d migrations listed, want at least 23", len(st))
	}
	for _, m := range st {
		if !m.Applied || m.AppliedAt == "" {
			t.Errorf("migration %d (%s) not applied on a migrated database", m.Version, m.Name)
		}
		want := fmt.Sprintf("%05d_", m.Version)
		if m.Version == 1 {
			want = "pgmq ("
		}
		if !strings.HasPrefix(m.Name, want) {
			t.Errorf("migration %d is named %q, want a name starting %q", m.Version, m.Name, want)
		}
	}
}

// TestStartWaitsForTheDatabase: a daemon started while its database cannot
// be reached yet (started at the same time, restarting) keeps trying for
// database.connect_wait and starts once it can, instead of exiting.
func TestStartWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := enginetest.StartProxy(t, u.Host)
	proxy.Cut()
	u.Host = proxy.Addr()
	cfg := testConfig(t, u.String())
	cfg.Database.ConnectWait = config.Duration{Duration: 30 * time.Second}
	// The database becomes reachable once the daemon has tried, and
	// failed, three times.
	go func() {
		proxy.WaitRefused(3, 20*time.Second)
		proxy.Restore()
	}()
	d, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err != nil {
		t.Fatalf("start while the database comes up: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	if n := proxy.Refused(); n < 3 {
		t.Errorf("started after %d refused connections, before the database could be reached", n)
	}
	if s := status("http://" + d.Addr() + "/readyz"); s != http.StatusOK {
		t.Errorf("/readyz = %d after the start", s)
	}
}

// TestStartOnAnUnmigratedDatabase: with migrations off, a database without
// the schema fails with advice, not a raw SQL error.
func TestStartOnAnUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, testdb.EmptyURL(t))
	cfg.Database.MigrateOnStart = false
	_, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if !errors.Is(err, daemon.ErrNotMigrated) || !strings.Contains(err.Error(), "orchestrator migrate") {
		t.Errorf("unmigrated database: %v", err)
	}
}

// TestShutdownPastItsTimeoutIsReported: a request held open uses the HTTP
// share of the shutdown timeout, not the loops' share; the loops still stop,
// and the incomplete shutdown is an error, logged at ERROR, not "stopped"
// at INFO.
func TestShutdownPastItsTimeoutIsReported(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, testdb.URL(t))
	cfg.Orchestrator.ShutdownTimeout = config.Duration{Duration: 2 * time.Second}
	var logs lockedbuf.Buffer
	d, err := daemon.Start(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// A request whose body never finishes arriving keeps its connection
	// active until the server closes it.
	conn, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// "Expect: 100-continue" is answered when the handler starts reading
	// the body: then the request is in flight.
	if _, err := fmt.Fprint(conn, "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("the request did not start: %q, %v", line, err)
	}
	if _, err := fmt.Fprint(conn, "{"); err != nil {
		t.Fatal(err)
	}
	err = d.Stop()
	if !errors.Is(err, daemon.ErrShutdownIncomplete) || !strings.Contains(err.Error(), "HTTP requests") ||
		strings.Contains(err.Error(), "orchestration loops") {
		t.Errorf("Stop: %v, want an incomplete shutdown naming the HTTP requests only", err)
	}
	out := logs.String()
	if strings.Contains(out, "orchestration loops did not stop in time") {
		t.Errorf("the loops got no time of their own:\n%s", out)
	}
	var sawIncomplete bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Level, Msg string
		}
		_ = json.Unmarshal([]byte(line), &rec)
		if rec.Msg == "stopped" {
			t.Errorf("incomplete shutdown logged as %s %q", rec.Level, rec.Msg)
		}
		if rec.Level == "ERROR" && strings.Contains(rec.Msg, "shutdown incomplete") {
			sawIncomplete = true
		}
	}
	if !sawIncomplete {
		t.Errorf("no ERROR line says the shutdown was incomplete:\n%s", out)
	}
	if err2 := d.Stop(); err2 != err {
		t.Errorf("second Stop: %v, want %v", err2, err)
	}
}

// TestServeLogsTheSignal: with JSON logs, everything serve writes on a
// SIGTERM is a JSON log record, the signal included, and it exits 0.
func TestServeLogsTheSignal(t *testing.T) {
	t.Parallel()
	p := startServe(t, testdb.URL(t), freeAddr(t), 5*time.Second, "TASKER_LOG_FORMAT=json")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
	var sawSignal bool
	for _, line := range strings.Split(strings.TrimSpace(p.out.String()), "\n") {
		var rec struct{ Msg, Signal string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", line)
		}
		if rec.Signal == "terminated" && strings.Contains(rec.Msg, "shutting down gracefully") {
			sawSignal = true
		}
	}
	if !sawSignal {
		t.Errorf("the signal is not logged:\n%s", p.out)
	}
}

// TestMissingTemplatesDirSaysWhere: the default templates_dir is relative
// to the working directory; the error names the absolute directory it
// looked in and the key to set.
func TestMissingTemplatesDirSaysWhere(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, testdb.URL(t))
	cfg.Orchestrator.TemplatesDir = filepath.Join("no", "such", "templates")
	abs, _ := filepath.Abs(cfg.Orchestrator.TemplatesDir)
	_, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), abs) || !strings.Contains(err.Error(), "TASKER_ORCHESTRATOR_TEMPLATES_DIR") {
		t.Errorf("missing templates dir: %v, want it to name %s and how to set it", err, abs)
	}
}

// When the HTTP server stops on its own (its listener fails), the daemon
// logs it, shuts down in order, and returns an error: serve exits 1 and a
// supervisor restarts it, instead of a clean exit 0.
func TestHTTPServerFailureStopsWithAnError(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, testdb.URL(t))
	var logs lockedbuf.Buffer
	d, err := daemon.Start(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CloseListener(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = d.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatal("Wait returned only when its context ended: the server's failure was not noticed")
	}
	if !errors.Is(err, daemon.ErrServeFailed) || errors.Is(err, daemon.ErrShutdownIncomplete) {
		t.Errorf("Wait: %v, want the server's failure and a complete shutdown", err)
	}
	var failed, stopped bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Level, Msg string }
		_ = json.Unmarshal([]byte(line), &rec)
		failed = failed || rec.Level == "ERROR" && strings.HasPrefix(rec.Msg, "HTTP server failed")
		stopped = stopped || rec.Msg == "stopped"
	}
	if !failed || !stopped {
		t.Errorf("logs: server failure at ERROR %v, stopped %v, want both:\n%s", failed, stopped, logs.String())
	}
}
