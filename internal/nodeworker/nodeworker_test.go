package nodeworker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/lockedbuf"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/worker"
)

const nodeDir = "examples/node-worker"

// repoRoot walks up from the test's working directory to the module root.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/tasker/tasker\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the repository root (go.mod of github.com/tasker/tasker) above the test's directory")
		}
		dir = parent
	}
}

// requireNode returns the node binary, failing (not skipping) the test when
// node or the worker's npm packages are missing or stale.
func requireNode(t *testing.T, root string) string {
	t.Helper()
	const fix = "run scripts/node-deps.sh (make test runs it first)"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %s", fix)
	}
	dir := filepath.Join(root, nodeDir)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); err != nil {
		t.Fatalf("the Node.js worker's npm packages are not installed (%s missing): %s", filepath.Join(nodeDir, "node_modules", "pg"), fix)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	stamp, _ := os.ReadFile(filepath.Join(dir, "node_modules", ".tasker-lock-hash"))
	if strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("the Node.js worker's npm packages do not match package-lock.json: %s", fix)
	}
	return node
}

// nodeWorker is a running `node worker.js`.
type nodeWorker struct {
	t    *testing.T
	id   string
	cmd  *exec.Cmd
	out  *lockedbuf.Buffer
	done chan struct{}
	err  error // set before done is closed
}

// startNode starts the Node worker on the harness's database with env
// (TASKER_* variables) on top of a clean environment, and kills it at
// cleanup if it is still running.
func startNode(t *testing.T, h *enginetest.Harness, root string, env map[string]string) *nodeWorker {
	t.Helper()
	node := requireNode(t, root)
	id := env["TASKER_WORKER_ID"]
	if id == "" {
		id = "node-test-" + uuid.NewString()[:8]
		env["TASKER_WORKER_ID"] = id
	}
	cmd := exec.Command(node, "worker.js")
	cmd.Dir = filepath.Join(root, nodeDir)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TASKER_") && !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "NODE_OPTIONS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "DATABASE_URL="+h.URL, "TASKER_WORKER_POLL_INTERVAL_MS=200")
	// Later entries win (os/exec keeps the last value of a duplicate key).
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &lockedbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the Node.js worker: %v", err)
	}
	w := &nodeWorker{t: t, id: id, cmd: cmd, out: out, done: make(chan struct{})}
	// Ends when the child exits (killed at cleanup at the latest).
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = cmd.Process.Kill()
			<-w.done
		}
		if t.Failed() || os.Getenv("TASKER_TEST_LOG") != "" {
			t.Logf("Node.js worker %s output:\n%s", id, out.String())
		}
	})
	return w
}

func (w *nodeWorker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to timeout for the worker to exit and returns its exit code.
func (w *nodeWorker) waitExit(timeout time.Duration) int {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.t.Fatalf("the Node.js worker did not exit within %s", timeout)
	}
	return w.cmd.ProcessState.ExitCode()
}

// logLines parses the worker's output, which must be JSON lines only.
func (w *nodeWorker) logLines() []map[string]any {
	w.t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(w.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			w.t.Errorf("Node.js worker output line is not JSON: %q", line)
			continue
		}
		for _, k := range []string{"time", "level", "msg", "worker_id"} {
			if _, ok := m[k]; !ok {
				w.t.Errorf("Node.js worker log line without %q: %q", k, line)
			}
		}
		lines = append(lines, m)
	}
	return lines
}

// waitStarted waits until the worker has logged that it reads its queues.
func (w *nodeWorker) waitStarted() {
	w.t.Helper()
	enginetest.Eventually(w.t, 30*time.Second, "the Node.js worker logs \"worker started\"", func() bool {
		if w.exited() {
			w.t.Fatalf("the Node.js worker exited at start: %v", w.err)
		}
		return strings.Contains(w.out.String(), `"msg":"worker started"`)
	})
}

// hasLog reports whether some log line has message msg and every given field.
func hasLog(lines []map[string]any, msg string, fields map[string]string) bool {
	for _, l := range lines {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if fmt.Sprint(l[k]) != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func templatePath(root string) string {
	return filepath.Join(root, "config", "templates", "order_fulfillment.yaml")
}

func subset(all map[string]worker.Handler, names []string) map[string]worker.Handler {
	out := map[string]worker.Handler{}
	for _, n := range names {
		out[n] = all[n]
	}
	return out
}

// transition is a step transition row.
type transition struct {
	step, name, handler, from, to, workerID string
	attempt                                 int
}

func transitions(t *testing.T, h *enginetest.Harness, task uuid.UUID) []transition {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `
		SELECT ws.step_uuid::text, ws.name, ws.handler, coalesce(tr.from_state, ''), tr.to_state,
		       coalesce(tr.metadata->>'worker_id', ''), coalesce((tr.metadata->>'attempt')::int, 0)
		  FROM tasker.workflow_step_transitions tr
		  JOIN tasker.workflow_steps ws ON ws.step_uuid = tr.step_uuid
		 WHERE ws.task_uuid = $1
		 ORDER BY tr.step_uuid, tr.sort_key`, task)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []transition
	for rows.Next() {
		var tr transition
		if err := rows.Scan(&tr.step, &tr.name, &tr.handler, &tr.from, &tr.to, &tr.workerID, &tr.attempt); err != nil {
			t.Fatal(err)
		}
		out = append(out, tr)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func taskSteps(t *testing.T, h *enginetest.Harness, task uuid.UUID) map[string]store.Step {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Step{}
	for _, s := range steps {
		out[s.Name] = s
	}
	return out
}

// expectedResult runs the Go demo handler of s on the inputs the step saw
// (the task context and its parents' stored results), so that a result
// produced by the Node worker can be compared with the Go handler's.
func expectedResult(t *testing.T, task store.Task, s store.Step, steps map[string]store.Step) any {
	t.Helper()
	byUUID := map[uuid.UUID]store.Step{}
	for _, st := range steps {
		byUUID[st.UUID] = st
	}
	deps := map[string]json.RawMessage{}
	for _, p := range s.Parents {
		deps[byUUID[p].Name] = byUUID[p].Results
	}
	h, ok := demo.Handlers(0)[s.Handler]
	if !ok {
		t.Fatalf("step %s has handler %s, not a demo handler", s.Name, s.Handler)
	}
	got, err := h(context.Background(), &worker.Step{
		TaskUUID: task.UUID, StepUUID: s.UUID, Name: s.Name, Handler: s.Handler, Namespace: task.Namespace,
		Attempt: s.Attempts, MaxAttempts: s.MaxAttempts, CorrelationID: task.CorrelationID,
		Context: task.Context, DependencyResults: deps,
	})
	if err != nil {
		t.Fatalf("Go handler %s on the stored inputs: %v", s.Handler, err)
	}
	return normalize(t, got)
}

func normalize(t *testing.T, v any) any {
	t.Helper()
	var b []byte
	switch x := v.(type) {
	case json.RawMessage:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return out
}

var (
	nodeHandlers = []string{"ecommerce.validate_cart", "ecommerce.process_payment", "ecommerce.send_confirmation"}
	goHandlers   = []string{"ecommerce.update_inventory", "ecommerce.create_order"}
)

func TestNodeAndGoWorkersCompleteTheDemoWorkflowTogether(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	h := enginetest.New(t, enginetest.Options{})
	tpl := h.RegisterFile(templatePath(root))

	node := startNode(t, h, root, map[string]string{
		"TASKER_HANDLERS":           strings.Join(nodeHandlers, ","),
		"TASKER_WORKER_CONCURRENCY": "4",
		"TASKER_DEMO_DELAY":         "10ms",
	})
	// Both workers read every message of the namespace and push back (for
	// 5s) those they have no handler for; starting the Go worker first would
	// have it push back the first steps while node is still starting.
	node.waitStarted()
	goID := "go-test-" + uuid.NewString()[:8]
	// The Go worker publishes its own worker-side events; the Node.js
	// worker publishes none, so the orchestrator publishes its runs.
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, WorkerID: goID, Concurrency: 4, Observer: obs},
		subset(demo.Handlers(0), goHandlers))

	type submitted struct {
		kind string
		task store.Task
	}
	var tasks []submitted
	submit := func(kind, ctx string) {
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(ctx)})
		tasks = append(tasks, submitted{kind, task})
	}
	for i := 1; i <= 4; i++ {
		submit("ok", demo.SampleContext(i))
	}
	submit("flaky", `{"customer_id":"cust-flaky","currency":"EUR","items":[{"sku":"MUG-1","quantity":3,"unit_price_cents":899}],"simulate":{"payment_failures":1}}`)
	submit("blocked", `{"customer_id":"blocked-0001","items":[{"sku":"BOOK-1","quantity":1,"unit_price_cents":1299}]}`)

	ctx := context.Background()
	var ids []uuid.UUID
	for _, s := range tasks {
		ids = append(ids, s.task.UUID)
		final := h.WaitTask(s.task.UUID, 3*time.Minute, lifecycle.TaskComplete, lifecycle.TaskError)
		steps := taskSteps(t, h, s.task.UUID)
		trs := transitions(t, h, s.task.UUID)

		// Every claim and every result of a step came from the worker
		// that has its handler.
		for _, tr := range trs {
			if tr.to != string(lifecycle.StepInProgress) && tr.from != string(lifecycle.StepInProgress) {
				continue
			}
			if tr.to != string(lifecycle.StepInProgress) && tr.to != string(lifecycle.StepEnqueuedForOrchestration) &&
				tr.to != string(lifecycle.StepEnqueuedAsErrorForOrchestration) {
				continue // e.g. a lease reaped by the orchestrator: no worker id
			}
			want := goID
			if slices.Contains(nodeHandlers, tr.handler) {
				want = node.id
			}
			if tr.workerID != want {
				t.Errorf("task %s (%s) step %s: %s->%s by worker %q, want %q", s.task.UUID, s.kind, tr.name, tr.from, tr.to, tr.workerID, want)
			}
		}

		switch s.kind {
		case "ok", "flaky":
			if final.State != lifecycle.TaskComplete {
				t.Fatalf("task %s (%s) is %s, want complete", s.task.UUID, s.kind, final.State)
			}
			for name, st := range steps {
				if st.State != lifecycle.StepComplete {
					t.Errorf("task %s step %s is %s, want complete", s.task.UUID, name, st.State)
					continue
				}
				got, want := normalize(t, st.Results), expectedResult(t, final, st, steps)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("task %s step %s (%s) result\n got %s\nwant %s (the Go handler's)", s.task.UUID, name, st.Handler, st.Results, mustJSON(want))
				}
			}
			pay := steps["process_payment"]
			if s.kind == "flaky" {
				if pay.Attempts != 2 {
					t.Errorf("flaky payment took %d attempts, want 2 (one simulated failure)", pay.Attempts)
				}
				var lastErr struct {
					Message   string `json:"message"`
					Retryable bool   `json:"retryable"`
					Kind      string `json:"kind"`
				}
				if err := json.Unmarshal(pay.LastError, &lastErr); err != nil {
					t.Fatalf("last_error %s: %v", pay.LastError, err)
				}
				if lastErr.Message != "payment gateway timed out (simulated failure 1 of 1)" || !lastErr.Retryable || lastErr.Kind != "error" {
					t.Errorf("flaky payment last_error = %s, want the simulated retryable failure", pay.LastError)
				}
			} else if pay.Attempts != 1 {
				t.Errorf("task %s payment took %d attempts, want 1", s.task.UUID, pay.Attempts)
			}
		case "blocked":
			if final.State != lifecycle.TaskError {
				t.Fatalf("blocked task is %s, want error", final.State)
			}
			pay := steps["process_payment"]
			if pay.State != lifecycle.StepError || pay.Attempts != 1 {
				t.Errorf("blocked payment is %s after %d attempts, want error after 1 (a permanent failure)", pay.State, pay.Attempts)
			}
			var lastErr map[string]any
			_ = json.Unmarshal(pay.LastError, &lastErr)
			if lastErr["message"] != "card declined: the payment method is blocked" || lastErr["retryable"] != false || lastErr["kind"] != "permanent" {
				t.Errorf("blocked payment last_error = %s, want the permanent decline", pay.LastError)
			}
			if v := steps["validate_cart"]; v.State != lifecycle.StepComplete {
				t.Errorf("blocked task validate_cart is %s, want complete", v.State)
			}
			for _, name := range []string{"create_order", "send_confirmation"} {
				if st := steps[name].State; st == lifecycle.StepComplete {
					t.Errorf("blocked task step %s ran after the permanent failure", name)
				}
			}
		}
	}

	// No step of any task was completed (or reported successful) twice.
	rows, err := h.Pool.Query(ctx, `
		SELECT ws.task_uuid::text, ws.name,
		       count(*) FILTER (WHERE tr.to_state = 'complete'),
		       count(*) FILTER (WHERE tr.to_state = 'enqueued_for_orchestration')
		  FROM tasker.workflow_steps ws
		  JOIN tasker.workflow_step_transitions tr ON tr.step_uuid = ws.step_uuid
		 WHERE ws.task_uuid = ANY ($1)
		 GROUP BY ws.task_uuid, ws.name`, ids)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var task, name string
		var completed, succeeded int
		if err := rows.Scan(&task, &name, &completed, &succeeded); err != nil {
			t.Fatal(err)
		}
		if completed > 1 || succeeded > 1 {
			t.Errorf("task %s step %s completed %d times (%d successful results), want at most once", task, name, completed, succeeded)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Both languages did their share: every handler ran in its worker.
	for _, hs := range []struct {
		handlers []string
		id       string
	}{{nodeHandlers, node.id}, {goHandlers, goID}} {
		for _, handler := range hs.handlers {
			var n int
			if err := h.Pool.QueryRow(ctx, `
				SELECT count(*) FROM tasker.workflow_step_transitions tr
				  JOIN tasker.workflow_steps ws ON ws.step_uuid = tr.step_uuid
				 WHERE ws.task_uuid = ANY ($1) AND ws.handler = $2
				   AND tr.to_state = 'enqueued_for_orchestration' AND tr.metadata->>'worker_id' = $3`,
				ids, handler, hs.id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Errorf("no step of handler %s was completed by worker %s", handler, hs.id)
			}
		}
	}

	// Every run of every step is in the task's trace once: a Node.js run
	// as the orchestrator reported it, a Go run as the Go worker did.
	checkRunSpans(t, h, ids, node.id, goID)

	// The Node worker's logs are JSON lines that name the task, the step and
	// the correlation id of each step it ran.
	lines := node.logLines()
	for _, s := range tasks {
		steps := taskSteps(t, h, s.task.UUID)
		v := steps["validate_cart"]
		if !hasLog(lines, "step completed", map[string]string{
			"task_uuid": s.task.UUID.String(), "step_uuid": v.UUID.String(),
			"correlation_id": s.task.CorrelationID.String(), "step_name": "validate_cart", "worker_id": node.id,
		}) {
			t.Errorf("no \"step completed\" log line for task %s step validate_cart with its correlation id", s.task.UUID)
		}
	}
	if !hasLog(lines, "no handler registered for step messages of this handler; left for other workers", map[string]string{"queue": "worker_ecommerce_queue"}) {
		t.Log("the Node.js worker never saw a message for a Go handler (possible, but unusual)")
	}
	if node.exited() {
		t.Errorf("the Node.js worker exited during the test: %v", node.err)
	}
}

// checkRunSpans checks that each run a worker submitted (an in_progress →
// enqueued_(as_error_)for_orchestration transition) has exactly one
// step_execution span with the run's attempt: reported by the orchestrator,
// naming the worker, for the Node.js worker's runs; the Go worker's own for
// its runs.
func checkRunSpans(t *testing.T, h *enginetest.Harness, tasks []uuid.UUID, nodeID, goID string) {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `
		SELECT step_uuid::text || '/' || (metadata->>'attempt'), metadata->>'worker_id'
		  FROM tasker.workflow_step_transitions
		 WHERE task_uuid = ANY ($1) AND from_state = 'in_progress'
		   AND to_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')`, tasks)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]string{}
	for rows.Next() {
		var k, w string
		if err := rows.Scan(&k, &w); err != nil {
			t.Fatal(err)
		}
		runs[k] = w
	}
	rows.Close()
	if len(runs) == 0 {
		t.Fatal("no runs recorded")
	}
	spansOf := func() map[string][]map[string]string {
		out := map[string][]map[string]string{}
		for _, s := range h.Spans.GetSpans() {
			if s.Name != "step_execution" {
				continue
			}
			a := map[string]string{}
			for _, kv := range s.Attributes {
				a[string(kv.Key)] = kv.Value.Emit()
			}
			k := a["step_uuid"] + "/" + a["attempt"]
			out[k] = append(out[k], a)
		}
		return out
	}
	// A Go run's spans are exported when its attempt ends, which may be
	// after its task finished.
	enginetest.Eventually(t, 10*time.Second, "a step_execution span for every run", func() bool {
		got := spansOf()
		for k := range runs {
			if len(got[k]) == 0 {
				return false
			}
		}
		return true
	})
	got := spansOf()
	nodeRuns := 0
	for k, w := range runs {
		spans := got[k]
		if len(spans) != 1 {
			t.Errorf("run %s by %s has %d step_execution spans, want 1", k, w, len(spans))
			continue
		}
		a := spans[0]
		switch w {
		case nodeID:
			nodeRuns++
			if a["reported_by"] != "orchestrator" || a["worker_id"] != nodeID {
				t.Errorf("Node.js run %s: step_execution %v, want reported_by=orchestrator worker_id=%s", k, a, nodeID)
			}
		case goID:
			if a["reported_by"] != "" {
				t.Errorf("Go run %s: step_execution reported by %s, want the worker's own", k, a["reported_by"])
			}
		default:
			t.Errorf("run %s by unknown worker %q", k, w)
		}
	}
	if nodeRuns == 0 {
		t.Error("no run of the Node.js worker to check")
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// waitInProgressBy waits until the task's step is running under workerID.
func waitInProgressBy(t *testing.T, h *enginetest.Harness, task uuid.UUID, name, workerID string) {
	t.Helper()
	enginetest.Eventually(t, 30*time.Second, name+" in progress under "+workerID, func() bool {
		var state, claimedBy string
		err := h.Pool.QueryRow(context.Background(),
			`SELECT state, coalesce(claimed_by, '') FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`,
			task, name).Scan(&state, &claimedBy)
		return err == nil && state == string(lifecycle.StepInProgress) && claimedBy == workerID
	})
}

func TestNodeWorkerSIGTERMFinishesOrReleasesInFlightSteps(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)

	t.Run("finishes within the bound", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		tpl := h.RegisterFile(templatePath(root))
		node := startNode(t, h, root, map[string]string{
			"TASKER_HANDLERS":                        "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":                      "2s",
			"TASKER_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "20",
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(1))})
		waitInProgressBy(t, h, task.UUID, "validate_cart", node.id)

		sent := time.Now()
		if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := node.waitExit(30 * time.Second); code != 0 {
			t.Fatalf("the Node.js worker exited with %d after SIGTERM, want 0", code)
		}
		if took := time.Since(sent); took > 20*time.Second {
			t.Errorf("exit took %s, beyond the 20s shutdown bound", took)
		}
		// The running step was finished and submitted, not released.
		v := taskSteps(t, h, task.UUID)["validate_cart"]
		if v.Attempts != 1 {
			t.Errorf("validate_cart took %d attempts, want 1 (finished during shutdown)", v.Attempts)
		}
		var submitted bool
		for _, tr := range transitions(t, h, task.UUID) {
			if tr.name == "validate_cart" && tr.to == string(lifecycle.StepEnqueuedForOrchestration) && tr.workerID == node.id {
				submitted = true
			}
		}
		if !submitted {
			t.Error("validate_cart's result was not submitted by the Node.js worker during shutdown")
		}
		lines := node.logLines()
		if !hasLog(lines, "step completed", map[string]string{"task_uuid": task.UUID.String(), "step_name": "validate_cart"}) ||
			!hasLog(lines, "worker stopped", nil) {
			t.Error("the Node.js worker did not log the completed step and its stop")
		}

		// The rest of the workflow still runs (in Go).
		h.Worker(worker.Config{Namespaces: []string{demo.Namespace}}, subset(demo.Handlers(0), []string{
			"ecommerce.process_payment", "ecommerce.update_inventory", "ecommerce.create_order", "ecommerce.send_confirmation",
		}))
		h.WaitTask(task.UUID, 60*time.Second, lifecycle.TaskComplete)
	})

	t.Run("releases at the bound", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		tpl := h.RegisterFile(templatePath(root))
		node := startNode(t, h, root, map[string]string{
			"TASKER_HANDLERS":                        "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":                      "10m",
			"TASKER_WORKER_LEASE_SECONDS":            "60",
			"TASKER_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "1",
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(2))})
		waitInProgressBy(t, h, task.UUID, "validate_cart", node.id)

		sent := time.Now()
		if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := node.waitExit(15 * time.Second); code != 0 {
			t.Fatalf("the Node.js worker exited with %d after SIGTERM, want 0", code)
		}
		took := time.Since(sent)
		if took < 900*time.Millisecond || took > 10*time.Second {
			t.Errorf("exit took %s; want about the 1s shutdown bound", took)
		}
		if !hasLog(node.logLines(), "step released at shutdown; it will be retried if it is retryable", map[string]string{"task_uuid": task.UUID.String(), "step_name": "validate_cart"}) {
			t.Error("the Node.js worker did not log the release of its running step")
		}

		// Released, the step is retried at once rather than after its 60s
		// lease: a Go worker finishes the whole workflow well within that.
		goID := "go-test-" + uuid.NewString()[:8]
		h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, WorkerID: goID}, demo.Handlers(0))
		h.WaitTask(task.UUID, 40*time.Second, lifecycle.TaskComplete)
		v := taskSteps(t, h, task.UUID)["validate_cart"]
		if v.Attempts != 2 {
			t.Errorf("validate_cart took %d attempts, want 2 (released by Node, then run by Go)", v.Attempts)
		}
		var claims []string
		for _, tr := range transitions(t, h, task.UUID) {
			if tr.name != "validate_cart" {
				continue
			}
			if tr.to == string(lifecycle.StepInProgress) {
				claims = append(claims, tr.workerID)
			}
			if tr.from == string(lifecycle.StepInProgress) && tr.workerID == node.id {
				t.Errorf("the Node.js worker submitted a result (%s) for the step it released", tr.to)
			}
		}
		if !slices.Equal(claims, []string{node.id, goID}) {
			t.Errorf("validate_cart claimed by %v, want [%s %s]", claims, node.id, goID)
		}
	})

	// A step that is not retryable, released while its handler ran, may
	// have had side effects: it fails (promptly: the release ended its 60s
	// lease), and the failing transition says why.
	t.Run("a step that is not retryable fails when released while its handler ran", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		h.Register(`
namespace: node_release_once
name: once
version: 1.0.0
steps:
  - name: validate_cart
    handler: ecommerce.validate_cart
    retry: {max_attempts: 3, retryable: false}
`)
		node := startNode(t, h, root, map[string]string{
			"TASKER_WORKER_NAMESPACES":               "node_release_once",
			"TASKER_HANDLERS":                        "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":                      "10m",
			"TASKER_WORKER_LEASE_SECONDS":            "60",
			"TASKER_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "1",
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: "node_release_once", Name: "once", Context: json.RawMessage(demo.SampleContext(8))})
		waitInProgressBy(t, h, task.UUID, "validate_cart", node.id)
		if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := node.waitExit(15 * time.Second); code != 0 {
			t.Fatalf("the Node.js worker exited with %d after SIGTERM, want 0", code)
		}
		h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
		var trigger, why string
		if err := h.Pool.QueryRow(context.Background(), `
			SELECT metadata->>'trigger', metadata->>'why_final' FROM tasker.workflow_step_transitions
			 WHERE task_uuid = $1 AND to_state = 'error'`, task.UUID).Scan(&trigger, &why); err != nil {
			t.Fatal(err)
		}
		if trigger != string(lifecycle.StepLeaseExpiredFail) || why != "released by its worker while its handler ran, and the step is not retryable" {
			t.Errorf("validate_cart failed on %s because %q; want lease_expired_fail saying it was released while its handler ran", trigger, why)
		}
	})

	t.Run("a second signal releases at once", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		tpl := h.RegisterFile(templatePath(root))
		node := startNode(t, h, root, map[string]string{
			"TASKER_HANDLERS":                        "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":                      "10m",
			"TASKER_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "120",
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(5))})
		waitInProgressBy(t, h, task.UUID, "validate_cart", node.id)
		sent := time.Now()
		if err := node.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		enginetest.Eventually(t, 10*time.Second, "the first signal is handled", func() bool {
			return strings.Contains(node.out.String(), `"msg":"worker stopping: no new steps will be claimed"`)
		})
		if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := node.waitExit(15 * time.Second); code != 0 {
			t.Fatalf("the Node.js worker exited with %d, want 0", code)
		}
		if took := time.Since(sent); took > 15*time.Second {
			t.Errorf("exit took %s after two signals; the second must not wait for the 120s bound", took)
		}
		if !hasLog(node.logLines(), "step released at shutdown; it will be retried if it is retryable", map[string]string{"task_uuid": task.UUID.String()}) {
			t.Error("the Node.js worker did not release its running step")
		}
	})
}

// TestNodeUnitTests runs the Node worker's own unit tests (node --test).
func TestNodeUnitTests(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	node := requireNode(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test")
	cmd.Dir = filepath.Join(root, nodeDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}

func TestNodeWorkerStopsHandlersAtTimeoutAndWhenTheStepIsTakenAway(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)

	t.Run("per-step timeout", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		// The claim carries the step's timeout_seconds; one attempt only.
		h.Register(`
namespace: node_timeouts
name: slow
version: 1.0.0
steps:
  - name: validate_cart
    handler: ecommerce.validate_cart
    timeout_seconds: 1
    retry: {max_attempts: 1}
`)
		node := startNode(t, h, root, map[string]string{
			"TASKER_WORKER_NAMESPACES": "node_timeouts",
			"TASKER_HANDLERS":          "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":        "10m",
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: "node_timeouts", Name: "slow", Context: json.RawMessage(demo.SampleContext(3))})
		h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
		v := taskSteps(t, h, task.UUID)["validate_cart"]
		var lastErr map[string]any
		_ = json.Unmarshal(v.LastError, &lastErr)
		if lastErr["message"] != "step timed out after 1s" || lastErr["retryable"] != true || lastErr["kind"] != "timeout" {
			t.Errorf("last_error = %s, want the Node worker's timeout", v.LastError)
		}
		var by string
		for _, tr := range transitions(t, h, task.UUID) {
			if tr.to == string(lifecycle.StepEnqueuedAsErrorForOrchestration) {
				by = tr.workerID
			}
		}
		if by != node.id {
			t.Errorf("the timeout was reported by %q, want the Node.js worker %s", by, node.id)
		}
	})

	t.Run("cancelled task", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		tpl := h.RegisterFile(templatePath(root))
		node := startNode(t, h, root, map[string]string{
			"TASKER_HANDLERS":             "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":           "10m",
			"TASKER_WORKER_LEASE_SECONDS": "3", // heartbeat every second
		})
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(4))})
		waitInProgressBy(t, h, task.UUID, "validate_cart", node.id)
		if _, err := h.Engine.CancelTask(context.Background(), task.UUID, "customer withdrew"); err != nil {
			t.Fatal(err)
		}
		// The next heartbeat returns false: the handler is aborted and
		// nothing is submitted.
		enginetest.Eventually(t, 15*time.Second, "the Node.js worker abandons the cancelled step", func() bool {
			return strings.Contains(node.out.String(), `"msg":"step was taken away while running`)
		})
		for _, tr := range transitions(t, h, task.UUID) {
			if tr.from == string(lifecycle.StepInProgress) && tr.workerID == node.id {
				t.Errorf("the Node.js worker submitted %s for a cancelled step", tr.to)
			}
		}
		h.WaitTask(task.UUID, time.Second, lifecycle.TaskCancelled)
		if node.exited() {
			t.Errorf("the Node.js worker exited: %v", node.err)
		}
	})
}

func TestNodeWorkerRetriesWhileTheDatabaseIsUnreachable(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	h := enginetest.New(t, enginetest.Options{})
	tpl := h.RegisterFile(templatePath(root))
	u, err := url.Parse(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := enginetest.StartProxy(t, u.Host)
	u.Host = proxy.Addr()
	// The Node worker reaches the database through the proxy (a later
	// DATABASE_URL in the child's environment wins).
	node := startNode(t, h, root, map[string]string{"DATABASE_URL": u.String(), "TASKER_DEMO_DELAY": "0"})
	submit := func(i int) uuid.UUID {
		return h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(i))}).UUID
	}
	h.WaitTask(submit(1), 30*time.Second, lifecycle.TaskComplete)

	proxy.Cut()
	during := submit(2) // the orchestrator still reaches the database
	// Keep the database away until the worker has failed to read and its
	// listener has failed to reconnect a few times (backing off: 100ms, 200ms,
	// 400ms, ...).
	enginetest.Eventually(t, 20*time.Second, "the Node.js worker retries through the outage", func() bool {
		out := node.out.String()
		return strings.Contains(out, `"msg":"reading step messages failed; retrying with backoff"`) &&
			strings.Count(out, `"msg":"queue listener lost its connection; reconnecting"`) >= 4
	})
	if st := taskSteps(t, h, during)["validate_cart"].State; st == lifecycle.StepComplete {
		t.Fatalf("validate_cart completed while the worker could not reach the database")
	}
	proxy.Restore()
	h.WaitTask(during, 30*time.Second, lifecycle.TaskComplete)
	if !strings.Contains(node.out.String(), `"msg":"reading step messages recovered"`) {
		t.Error("the Node.js worker did not log its recovery")
	}
	if node.exited() {
		t.Errorf("the Node.js worker exited during the outage: %v", node.err)
	}
}

func TestNodeWorkerDropsDuplicateAndPoisonMessages(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	h := enginetest.New(t, enginetest.Options{})
	tpl := h.RegisterFile(templatePath(root))
	ctx := context.Background()
	task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Context: json.RawMessage(demo.SampleContext(6))})
	enginetest.Eventually(t, 15*time.Second, "validate_cart's message is queued", func() bool {
		var n int
		_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_worker_ecommerce_queue`).Scan(&n)
		return n == 1
	})
	// Before the worker starts: a second delivery of the same message, and
	// a message that names no step.
	if _, err := h.Pool.Exec(ctx, `
		SELECT pgmq.send('worker_ecommerce_queue', message, headers, 0)
		  FROM pgmq.q_worker_ecommerce_queue`); err != nil {
		t.Fatal(err)
	}
	var poisonID int64
	if err := h.Pool.QueryRow(ctx, `SELECT pgmq.send('worker_ecommerce_queue', '{"hello":"world"}'::jsonb, '{}'::jsonb, 0)`).Scan(&poisonID); err != nil {
		t.Fatal(err)
	}

	node := startNode(t, h, root, map[string]string{"TASKER_DEMO_DELAY": "0"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	claims := 0
	for _, tr := range transitions(t, h, task.UUID) {
		if tr.name == "validate_cart" && tr.to == string(lifecycle.StepInProgress) {
			claims++
		}
	}
	if claims != 1 {
		t.Errorf("validate_cart was claimed %d times, want 1 (the duplicate message must not start a second run)", claims)
	}
	enginetest.Eventually(t, 10*time.Second, "the worker queue is empty and the poison message archived", func() bool {
		var queued, archived int
		_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_worker_ecommerce_queue`).Scan(&queued)
		_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_worker_ecommerce_queue WHERE msg_id = $1`, poisonID).Scan(&archived)
		return queued == 0 && archived == 1
	})
	if !hasLog(node.logLines(), "poison step message archived", nil) {
		t.Error("the Node.js worker did not log the poison message")
	}
}
