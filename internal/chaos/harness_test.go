package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/internal/wait"
)

// The programs under test, built once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds cmd/orchestrator and ./testworker (once) and returns their
// paths. TASKER_CHAOS_RACE=1 builds them with the race detector (slower:
// fewer steps per second, same assertions).
func binaries(t *testing.T) (orchestrator, testworker string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tasker-chaos-bin-")
		if buildErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		for _, b := range []struct{ out, pkg string }{
			{"orchestrator", "github.com/tasker/tasker/cmd/orchestrator"},
			{"testworker", "github.com/tasker/tasker/internal/chaos/testworker"},
		} {
			args := []string{"build"}
			if os.Getenv("TASKER_CHAOS_RACE") != "" {
				args = append(args, "-race")
			}
			args = append(args, "-o", filepath.Join(binDir, b.out), b.pkg)
			start := time.Now()
			out, err := exec.Command(goTool, args...).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
			fmt.Fprintf(os.Stderr, "chaos: built %s in %s\n", b.out, time.Since(start).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatalf("build the programs under test: %v", buildErr)
	}
	return filepath.Join(binDir, "orchestrator"), filepath.Join(binDir, "testworker")
}

// ledgerDDL is the workers' side-effect ledger: one row per handler
// execution, written before the handler does anything (so an execution cut
// short by a kill is recorded, with result NULL) and completed with the
// result the handler is about to return. It belongs to the test, not to the
// schema, hence public and no migration.
const ledgerDDL = `
CREATE TABLE public.chaos_ledger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_uuid   uuid NOT NULL,
    step_uuid   uuid NOT NULL,
    step_name   text NOT NULL,
    attempt     integer NOT NULL,
    worker_id   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    result      jsonb,
    finished_at timestamptz
);
CREATE INDEX chaos_ledger_step_idx ON public.chaos_ledger (step_uuid, attempt);`

// cluster is a fresh database with orchestrator and worker processes on it.
type cluster struct {
	t    *testing.T
	url  string
	pool *pgxpool.Pool
	dir  string // logs, templates

	orchBin, workerBin string

	mu      sync.Mutex
	procs   []*proc
	checked bool // checkProcesses ran: shutdown need not report exits again
}

// newCluster creates a fresh database with the ledger table and a templates
// directory holding the given template documents. Every process it starts is
// SIGKILLed when the test ends; when the test failed, their log tails are
// printed.
func newCluster(t *testing.T, templates ...string) *cluster {
	t.Helper()
	orchBin, workerBin := binaries(t)
	c := &cluster{t: t, orchBin: orchBin, workerBin: workerBin, dir: t.TempDir()}
	c.url = testdb.URL(t)
	c.pool = testdb.Pool(t, c.url)
	if _, err := c.pool.Exec(context.Background(), ledgerDDL); err != nil {
		t.Fatalf("create ledger: %v", err)
	}
	if err := os.Mkdir(filepath.Join(c.dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, doc := range templates {
		p := filepath.Join(c.dir, "templates", fmt.Sprintf("chaos_%d.yaml", i))
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after testdb's cleanups, so it runs before them: the
	// processes die before their database is dropped.
	t.Cleanup(c.shutdown)
	return c
}

func (c *cluster) shutdown() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	checked := c.checked
	c.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		for _, e := range p.unexpectedExits() {
			if !checked {
				c.t.Errorf("%s", e)
			}
		}
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.logPath, tail(p.logPath, 60))
		}
	}
}

// proc is one child program; it can be killed and started again, and keeps
// one log file across its incarnations.
type proc struct {
	c       *cluster
	name    string
	bin     string
	args    []string
	env     func(p *proc) []string // environment of the next start
	logPath string
	// ready waits until a fresh start can do its job.
	ready func(p *proc, deadline time.Time) error

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
	killing   bool
	starts    int
	addr      string // orchestrators: the API address of the current start
	logOffset int64  // size of the log when the current start began
	exits     []string
}

func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TZ=UTC"}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startOrchestrator starts `orchestrator serve` and waits until /readyz
// answers 200.
func (c *cluster) startOrchestrator(name string, extraEnv ...string) *proc {
	c.t.Helper()
	p := &proc{c: c, name: name, bin: c.orchBin, args: []string{"serve"},
		logPath: filepath.Join(c.dir, name+".log")}
	p.env = func(p *proc) []string {
		p.addr = freeAddr(c.t)
		return append(append(baseEnv(),
			"DATABASE_URL="+c.url,
			"TASKER_SERVER_LISTEN="+p.addr,
			"TASKER_ORCHESTRATOR_TEMPLATES_DIR="+filepath.Join(c.dir, "templates"),
			"TASKER_ORCHESTRATOR_REAP_INTERVAL=200ms",
			"TASKER_ORCHESTRATOR_TIMER_INTERVAL=100ms",
			"TASKER_ORCHESTRATOR_POLL_INTERVAL=200ms",
			// A replica killed mid-batch hides the notices it read for
			// this long; the other replica (or its restart) then
			// processes them again, which must change nothing.
			"TASKER_ORCHESTRATOR_VISIBILITY_TIMEOUT=5s",
			"TASKER_ORCHESTRATOR_SHUTDOWN_TIMEOUT=5s",
			"TASKER_DATABASE_MAX_CONNS=6",
			"TASKER_TELEMETRY_METRICS_ENABLED=false",
			"TASKER_LOG_FORMAT=text",
			"TASKER_LOG_LEVEL=info",
		), extraEnv...)
	}
	p.ready = func(p *proc, deadline time.Time) error {
		url := "http://" + p.addr + "/readyz"
		var last error
		err := wait.Poll(deadline, 50*time.Millisecond, func() (bool, error) {
			resp, err := httpClient.Get(url)
			last = err
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return true, nil
				}
			}
			return false, p.checkAlive()
		})
		if errors.Is(err, wait.ErrTimeout) {
			return fmt.Errorf("%s: %s not ready (last error %v)", p.name, url, last)
		}
		return err
	}
	c.add(p)
	p.start()
	return p
}

// workerOpts configures a test worker process.
type workerOpts struct {
	Namespaces  string        // default "chaos"
	Sleep       time.Duration // per step, ±50%
	Concurrency int
	Batch       int
}

// startWorker starts a test worker and waits until it polls its queues.
func (c *cluster) startWorker(name string, o workerOpts) *proc {
	c.t.Helper()
	if o.Namespaces == "" {
		o.Namespaces = "chaos"
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	p := &proc{c: c, name: name, bin: c.workerBin, logPath: filepath.Join(c.dir, name+".log")}
	p.env = func(p *proc) []string {
		return append(baseEnv(),
			"DATABASE_URL="+c.url,
			"CHAOS_NAMESPACES="+o.Namespaces,
			// The incarnation is part of the id, so the ledger and the claim
			// transitions tell a killed process from its restart.
			fmt.Sprintf("CHAOS_WORKER_ID=%s.%d", p.name, p.starts),
			"CHAOS_SLEEP="+o.Sleep.String(),
			"CHAOS_LEASE=3s",
			fmt.Sprintf("CHAOS_CONCURRENCY=%d", o.Concurrency),
			fmt.Sprintf("CHAOS_BATCH=%d", max(o.Batch, 0)),
			"CHAOS_POLL=200ms",
		)
	}
	p.ready = func(p *proc, deadline time.Time) error {
		return p.waitLog("worker started", deadline)
	}
	c.add(p)
	p.start()
	return p
}

func (c *cluster) add(p *proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// workerID is the worker id of the current (or last) incarnation.
func (p *proc) workerID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%s.%d", p.name, p.starts)
}

// start launches a new incarnation and waits until it is ready.
func (p *proc) start() {
	p.c.t.Helper()
	if err := p.startAsync(); err != nil {
		p.c.t.Fatal(err)
	}
	if err := p.ready(p, time.Now().Add(60*time.Second)); err != nil {
		p.c.t.Fatalf("%v\n---- %s ----\n%s", err, p.logPath, tail(p.logPath, 40))
	}
}

// startAsync launches a new incarnation without waiting for it.
func (p *proc) startAsync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.name)
	}
	p.starts++
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		p.logOffset = st.Size()
	}
	fmt.Fprintf(f, "==== chaos: start #%d of %s at %s ====\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env(p)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.killing = cmd, done, false
	start := p.starts
	// Ends when the child exits (killed by us, or on its own: a crash,
	// recorded as an unexpected exit).
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if !p.killing {
			p.exits = append(p.exits, fmt.Sprintf("%s (start #%d) exited on its own: %v", p.name, start, err))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// checkAlive reports an error when the current incarnation has exited.
func (p *proc) checkAlive() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return fmt.Errorf("%s is not running", p.name)
	}
	select {
	case <-done:
		return fmt.Errorf("%s exited during start-up", p.name)
	default:
		return nil
	}
}

// kill sends SIGKILL to the running incarnation (if any) and waits until it
// is gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.killing = true
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.c.t.Errorf("%s (pid %d) did not die within 30s of SIGKILL", p.name, cmd.Process.Pid)
	}
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exits...)
}

// waitLog waits until the current incarnation's log contains s.
func (p *proc) waitLog(s string, deadline time.Time) error {
	err := wait.Poll(deadline, 50*time.Millisecond, func() (bool, error) {
		p.mu.Lock()
		off := p.logOffset
		p.mu.Unlock()
		if b, err := os.ReadFile(p.logPath); err == nil && int64(len(b)) >= off &&
			bytes.Contains(b[off:], []byte(s)) {
			return true, nil
		}
		return false, p.checkAlive()
	})
	if errors.Is(err, wait.ErrTimeout) {
		return fmt.Errorf("%s: no %q in its log", p.name, s)
	}
	return err
}

// logProblems returns the log lines of a process that show a defect no
// matter what the test does: panics, data races, fatal runtime errors.
func (p *proc) logProblems() []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "panic:") || strings.Contains(line, "WARNING: DATA RACE") ||
			strings.HasPrefix(line, "fatal error:") {
			out = append(out, p.name+": "+line)
		}
	}
	return out
}

// logLines counts the lines of a process's log at a slog level.
func (p *proc) logLines(level string) []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level="+level) {
			out = append(out, line)
		}
	}
	return out
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkProcesses fails the test for a process that exited on its own or
// logged a panic or a data race.
func (c *cluster) checkProcesses() {
	c.t.Helper()
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.checked = true
	c.mu.Unlock()
	for _, p := range procs {
		for _, e := range p.unexpectedExits() {
			c.t.Errorf("%s", e)
		}
		for _, l := range p.logProblems() {
			c.t.Errorf("%s", l)
		}
	}
}

// errorLogSummary returns up to max level=ERROR lines across processes and
// their total count (errors are not failures here: a loop that fails once
// and recovers is allowed; the summary shows them for the report).
func (c *cluster) errorLogSummary(limit int) (int, []string) {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	total := 0
	var out []string
	for _, p := range procs {
		lines := p.logLines("ERROR")
		total += len(lines)
		for _, l := range lines {
			if len(out) < limit {
				out = append(out, p.name+": "+l)
			}
		}
	}
	return total, out
}

// httpClient bounds every request: a wedged orchestrator fails the test
// instead of hanging it.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// submitREST creates a task through POST /v1/tasks of an orchestrator.
func submitREST(addr string, req orchestration.TaskRequest) (uuid.UUID, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return uuid.Nil, err
	}
	resp, err := httpClient.Post("http://"+addr+"/v1/tasks", "application/json", bytes.NewReader(body))
	if err != nil {
		return uuid.Nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return uuid.Nil, fmt.Errorf("POST /v1/tasks: %s: %s", resp.Status, b)
	}
	var v struct {
		TaskUUID uuid.UUID `json:"task_uuid"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return uuid.Nil, fmt.Errorf("POST /v1/tasks: decode %s: %w", b, err)
	}
	return v.TaskUUID, nil
}

// submitManyREST creates n tasks through the API of the given orchestrators
// (round robin) with a few concurrent clients. seq numbers the tasks in their
// context.
func submitManyREST(t *testing.T, addrs []string, n int, ns, name string) {
	t.Helper()
	const clients = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	for k := 0; k < clients; k++ {
		wg.Add(1)
		// Ends when every task number is taken.
		go func() {
			defer wg.Done()
			for i := range next {
				ctxJSON, _ := json.Marshal(map[string]any{"seq": i})
				_, err := submitREST(addrs[i%len(addrs)], orchestration.TaskRequest{
					Namespace: ns, Name: name, Context: ctxJSON, Initiator: "chaos-test"})
				if err != nil {
					errs <- fmt.Errorf("task %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// sendTaskRequests queues n task requests on orchestration_task_requests (the
// language-neutral intake an orchestrator replica consumes), starting at seq
// from.
func sendTaskRequests(ctx context.Context, pool *pgxpool.Pool, from, n int, ns, name string) error {
	bodies := make([]json.RawMessage, 0, n)
	for i := from; i < from+n; i++ {
		b, _ := json.Marshal(map[string]any{"namespace": ns, "name": name, "context": map[string]any{"seq": i},
			"initiator": "chaos-test"})
		bodies = append(bodies, b)
	}
	_, err := queue.SendBatch(ctx, pool, queue.TaskRequestsQueue, bodies, nil, 0)
	return err
}

// taskCounts returns the number of tasks by state.
func taskCounts(ctx context.Context, pool *pgxpool.Pool) (map[string]int, error) {
	rows, err := pool.Query(ctx, `SELECT state, count(*) FROM tasker.tasks GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// stallTimeout is how long a run may go without completing a single step
// before it is declared stuck. Kills pause progress for a few seconds at
// most (a 3s lease, a 5s visibility timeout, a restart).
const stallTimeout = 60 * time.Second

// stallWatch notices a run that stopped making progress.
type stallWatch struct {
	last    int
	changed time.Time
}

// stalled reports whether the number of completed steps has not moved for
// stallTimeout.
func (w *stallWatch) stalled(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var done int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_steps WHERE state = 'complete'`).Scan(&done); err != nil {
		return false, err
	}
	if w.changed.IsZero() || done != w.last {
		w.last, w.changed = done, time.Now()
		return false, nil
	}
	return time.Since(w.changed) > stallTimeout, nil
}

// waitAllComplete polls until n tasks exist and all are complete. A task in
// a terminal state other than complete fails at once; a run that stops
// making progress, or the timeout, fails with a picture of what is stuck.
func (c *cluster) waitAllComplete(n int, timeout time.Duration) {
	c.t.Helper()
	ctx := context.Background()
	lastReport := time.Now()
	var watch stallWatch
	var counts map[string]int
	err := wait.Poll(time.Now().Add(timeout), 250*time.Millisecond, func() (bool, error) {
		var err error
		if counts, err = taskCounts(ctx, c.pool); err != nil {
			return false, fmt.Errorf("count tasks: %w", err)
		}
		if c.checkCounts(counts, n) {
			return true, nil
		}
		stalled, err := watch.stalled(ctx, c.pool)
		if err != nil {
			return false, err
		}
		if stalled {
			c.t.Fatalf("no step completed for %s: tasks by state %v, want %d complete\n%s", stallTimeout, counts, n, c.stuckReport())
		}
		if time.Since(lastReport) > 15*time.Second {
			c.t.Logf("waiting: tasks by state %v", counts)
			lastReport = time.Now()
		}
		return false, nil
	})
	switch {
	case errors.Is(err, wait.ErrTimeout):
		c.t.Fatalf("after %s: tasks by state %v, want %d complete\n%s", timeout, counts, n, c.stuckReport())
	case err != nil:
		c.t.Fatal(err)
	}
}

// checkCounts reports whether at least n tasks exist and all are complete,
// and fails the test at once when a task reached another terminal state
// (every step has attempts to spare: nothing may fail).
func (c *cluster) checkCounts(counts map[string]int, n int) bool {
	c.t.Helper()
	total := 0
	for _, k := range counts {
		total += k
	}
	for _, bad := range []string{"error", "cancelled", "resolved_manually", "blocked_by_failures"} {
		if counts[bad] > 0 {
			c.t.Fatalf("%d tasks are %s (tasks by state %v)\n%s", counts[bad], bad, counts, c.stuckReport())
		}
	}
	// More tasks than submissions is reported by verify, with the
	// duplicated submissions.
	return total >= n && counts["complete"] == total
}

// stuckReport describes the unfinished steps and the queues.
func (c *cluster) stuckReport() string {
	ctx := context.Background()
	var b strings.Builder
	rows, err := c.pool.Query(ctx, `
		SELECT state, count(*), min(state_entered_at)::text FROM tasker.workflow_steps
		 WHERE state <> 'complete' GROUP BY state ORDER BY state`)
	if err == nil {
		b.WriteString("unfinished steps by state (count, oldest since):\n")
		for rows.Next() {
			var s, since string
			var n int
			_ = rows.Scan(&s, &n, &since)
			fmt.Fprintf(&b, "  %s: %d (since %s)\n", s, n, since)
		}
		rows.Close()
	}
	rows, err = c.pool.Query(ctx, `
		SELECT s.task_uuid::text, t.state, s.name, s.state, s.attempts, coalesce(s.claimed_by, ''),
		       coalesce(s.lease_expires_at::text, ''), coalesce(s.next_attempt_at::text, ''),
		       coalesce(t.wake_at::text, ''), s.state_entered_at::text
		  FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid)
		 WHERE s.state NOT IN ('complete', 'pending') ORDER BY s.state_entered_at LIMIT 10`)
	if err == nil {
		b.WriteString("oldest in-flight steps (task, task state, step, state, attempts, claimed_by, lease, next_attempt, task wake, since):\n")
		for rows.Next() {
			var f [10]string
			var attempts int
			_ = rows.Scan(&f[0], &f[1], &f[2], &f[3], &attempts, &f[5], &f[6], &f[7], &f[8], &f[9])
			for i := range f {
				if f[i] == "" {
					f[i] = "-"
				}
			}
			fmt.Fprintf(&b, "  %s %s %s %s %d %s %s %s %s %s\n", f[0], f[1], f[2], f[3], attempts, f[5], f[6], f[7], f[8], f[9])
		}
		rows.Close()
	}
	if ms, err := queue.AllMetrics(ctx, c.pool); err == nil {
		b.WriteString("queues (length, visible):\n")
		for _, m := range ms {
			fmt.Fprintf(&b, "  %s: %d, %d\n", m.Queue, m.Length, m.VisibleLength)
		}
	}
	return b.String()
}

// waitQueuesDrained polls until no queue holds a message (stale step
// messages of reaped attempts are deleted by a worker once their visibility
// timeout passes).
func (c *cluster) waitQueuesDrained(timeout time.Duration) {
	c.t.Helper()
	ctx := context.Background()
	var left []string
	err := wait.Poll(time.Now().Add(timeout), 250*time.Millisecond, func() (bool, error) {
		ms, err := queue.AllMetrics(ctx, c.pool)
		if err != nil {
			return false, fmt.Errorf("queue metrics: %w", err)
		}
		left = left[:0]
		for _, m := range ms {
			if strings.HasPrefix(m.Queue, "domain_events_") {
				continue // nobody consumes domain events in these tests
			}
			if m.Length > 0 {
				left = append(left, fmt.Sprintf("%s: %d", m.Queue, m.Length))
			}
		}
		return len(left) == 0, nil
	})
	if errors.Is(err, wait.ErrTimeout) {
		c.t.Fatalf("queues not drained after %s: %v", timeout, left)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// archivedCounts returns the number of archived messages per queue (poison
// messages end up there).
func (c *cluster) archivedCounts() map[string]int64 {
	c.t.Helper()
	ctx := context.Background()
	names, err := queue.List(ctx, c.pool)
	if err != nil {
		c.t.Fatalf("list queues: %v", err)
	}
	out := map[string]int64{}
	for _, q := range names {
		if strings.HasPrefix(q, "domain_events_") {
			continue
		}
		var n int64
		// Queue names are validated by the engine; quote anyway.
		if err := c.pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM pgmq.%s`, quoteIdent("a_"+q))).Scan(&n); err != nil {
			c.t.Fatalf("count archive of %s: %v", q, err)
		}
		if n > 0 {
			out[q] = n
		}
	}
	return out
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// randDuration is uniform in [lo, hi).
func randDuration(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)))
}
