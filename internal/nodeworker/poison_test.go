package nodeworker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// oneStepTemplate is a template of namespace %s whose one step runs the
// demo's validate_cart, which the Node worker has.
const oneStepTemplate = `
namespace: %s
name: one
version: 1.0.0
steps:
  - name: validate_cart
    handler: ecommerce.validate_cart
`

// loginRole creates a LOGIN role that is a member of roles, drops it when the
// test ends (roles are cluster-wide), and returns the harness's database URL
// with that role's credentials (as migrations/roles_test.go does).
func loginRole(t *testing.T, h *enginetest.Harness, roles ...string) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 22)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name, password := "tasker_test_login_"+hex.EncodeToString(b[:6]), hex.EncodeToString(b[6:]) // hex: safe inside a literal
	quoted := make([]string, len(roles))
	for i, r := range roles {
		quoted[i] = pgx.Identifier{r}.Sanitize()
	}
	if _, err := h.Pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE %s`,
		pgx.Identifier{name}.Sanitize(), password, strings.Join(quoted, ", "))); err != nil {
		t.Fatalf("create login role: %v", err)
	}
	// Registered after the harness's pool, so it runs before that pool
	// closes; the Node worker started later is killed before it.
	t.Cleanup(func() {
		if _, err := h.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Errorf("drop login role %s: %v", name, err)
		}
	})
	u, err := url.Parse(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(name, password)
	return u.String()
}

// provision creates namespace ns's worker role tasker_worker_<ns> and its
// grants (idempotent).
func provision(t *testing.T, h *enginetest.Harness, ns string) {
	t.Helper()
	if _, err := h.Pool.Exec(context.Background(), `SELECT tasker.namespace_provision($1)`, ns); err != nil {
		t.Fatalf("provision namespace %s: %v", ns, err)
	}
}

func send(t *testing.T, h *enginetest.Harness, q, body string) int64 {
	t.Helper()
	id, err := queue.Send(context.Background(), h.Pool, q, json.RawMessage(body), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitQueued waits until queue q holds n messages (the orchestrator has
// enqueued the steps the test needs before the worker reads them).
func waitQueued(t *testing.T, h *enginetest.Harness, q string, n int) {
	t.Helper()
	enginetest.Eventually(t, 15*time.Second, fmt.Sprintf("%d messages in %s", n, q), func() bool {
		return count(t, h, `SELECT count(*) FROM pgmq.`+pgx.Identifier{"q_" + q}.Sanitize()) == n
	})
}

// archivedIn reports whether message id of queue q is in its archive.
func archivedIn(t *testing.T, h *enginetest.Harness, q string, id int64) bool {
	t.Helper()
	return count(t, h, `SELECT count(*) FROM pgmq.`+pgx.Identifier{"a_" + q}.Sanitize()+` WHERE msg_id = $1`, id) == 1
}

func count(t *testing.T, h *enginetest.Harness, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := h.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitPoisonLine waits up to five seconds for the worker's "poison step
// message archived" line for message id of queue q and returns it, or nil:
// the worker logs the archive after it commits, so a test that saw the
// message archived may read the output before the line is there.
func waitPoisonLine(t *testing.T, node *nodeWorker, q string, id int64) map[string]any {
	t.Helper()
	var l map[string]any
	_ = wait.Poll(time.Now().Add(5*time.Second), 20*time.Millisecond, func() (bool, error) {
		l = poisonLine(node.logLines(), q, id)
		return l != nil, nil
	})
	return l
}

// poisonLine returns the worker's "poison step message archived" line for
// message id of queue q, or nil.
func poisonLine(lines []map[string]any, q string, id int64) map[string]any {
	for _, l := range lines {
		if l["msg"] == "poison step message archived" && l["queue"] == q && fmt.Sprint(l["msg_id"]) == fmt.Sprint(id) {
			return l
		}
	}
	return nil
}

// stepRanBy reports whether worker id submitted a result for the step.
func stepRanBy(t *testing.T, h *enginetest.Harness, task uuid.UUID, step uuid.UUID, id string) bool {
	t.Helper()
	for _, tr := range transitions(t, h, task) {
		if tr.step == step.String() && tr.from == string(lifecycle.StepInProgress) && tr.workerID == id {
			return true
		}
	}
	return false
}

// TestNodeWorkerClaimsAFailedBatchOneByOne: one message that makes the claim
// of its whole batch raise does not keep the others from being claimed.
func TestNodeWorkerClaimsAFailedBatchOneByOne(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)

	// A message in the worker's queue naming a step of a namespace its login
	// does not serve makes the batch claim fail with 42501. The batch's other
	// step is claimed alone and runs well within the 30 s visibility timeout
	// a failed batch waits out (to fail again, for ever); the foreign message
	// is archived and the foreign step left alone.
	t.Run("archives the message whose own claim fails", func(t *testing.T) {
		t.Parallel()
		const nsA, nsB = "node_rejects_a", "node_rejects_b"
		h := enginetest.New(t, enginetest.Options{})
		for _, ns := range []string{nsA, nsB} {
			h.Register(fmt.Sprintf(oneStepTemplate, ns))
			provision(t, h, ns)
		}
		taskB := h.Submit(orchestration.TaskRequest{Namespace: nsB, Name: "one", Context: json.RawMessage(demo.SampleContext(1))})
		stepB := taskSteps(t, h, taskB.UUID)["validate_cart"].UUID
		qA, _ := queue.WorkerQueue(nsA)
		foreign := send(t, h, qA, fmt.Sprintf(`{"step_uuid":"%s","handler":"ecommerce.validate_cart","namespace":"%s","attempt":1}`, stepB, nsA))
		taskA := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "one", Context: json.RawMessage(demo.SampleContext(2))})
		waitQueued(t, h, qA, 2) // read in one batch

		node := startNode(t, h, root, map[string]string{
			"DATABASE_URL":             loginRole(t, h, "tasker_worker", "tasker_worker_"+nsA),
			"TASKER_WORKER_NAMESPACES": nsA,
			"TASKER_HANDLERS":          "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":        "0",
		})
		h.WaitTask(taskA.UUID, 15*time.Second, lifecycle.TaskComplete)
		enginetest.Eventually(t, 10*time.Second, "the foreign message archived", func() bool { return archivedIn(t, h, qA, foreign) })
		var state, claimedBy string
		if err := h.Pool.QueryRow(context.Background(),
			`SELECT state, coalesce(claimed_by, '-') FROM tasker.workflow_steps WHERE step_uuid = $1`, stepB).Scan(&state, &claimedBy); err != nil {
			t.Fatal(err)
		}
		if state != string(lifecycle.StepEnqueued) || claimedBy != "-" {
			t.Errorf("B's step is %s, claimed by %s; want enqueued and unclaimed", state, claimedBy)
		}
		l := waitPoisonLine(t, node, qA, foreign)
		if l == nil || l["step_uuid"] != stepB.String() || !strings.Contains(fmt.Sprint(l["reason"]), "42501") {
			t.Errorf("poison log line %v, want one naming step %s and SQLSTATE 42501", l, stepB)
		}
	})

	// When every claim fails the same way (here the login may not call
	// step_claim_batch), the fault is the worker's, not its messages': they
	// stay in the queue, and run once the claim works. (Without the claim
	// of no steps made first, each message's own claim fails and it is
	// archived.)
	t.Run("archives nothing when it cannot claim at all", func(t *testing.T) {
		t.Parallel()
		const ns = "node_noclaim"
		h := enginetest.New(t, enginetest.Options{})
		h.Register(fmt.Sprintf(oneStepTemplate, ns))
		provision(t, h, ns)
		const claimFn = `tasker.step_claim_batch(uuid[], integer[], text, integer)`
		// Grants are per database: this one is the test's own.
		if _, err := h.Pool.Exec(context.Background(), `REVOKE EXECUTE ON FUNCTION `+claimFn+` FROM tasker_worker`); err != nil {
			t.Fatal(err)
		}
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one", Context: json.RawMessage(demo.SampleContext(3))})
		q, _ := queue.WorkerQueue(ns)
		node := startNode(t, h, root, map[string]string{
			"DATABASE_URL":                loginRole(t, h, "tasker_worker", "tasker_worker_"+ns),
			"TASKER_WORKER_NAMESPACES":    ns,
			"TASKER_HANDLERS":             "ecommerce.validate_cart",
			"TASKER_WORKER_LEASE_SECONDS": "3",
			"TASKER_DEMO_DELAY":           "0",
		})
		// Read twice (its claim has failed at least once), or archived.
		enginetest.Eventually(t, 20*time.Second, "the step message read twice, or archived", func() bool {
			return count(t, h, `SELECT count(*) FROM pgmq.q_worker_node_noclaim_queue WHERE read_ct >= 2`) == 1 ||
				count(t, h, `SELECT count(*) FROM pgmq.a_worker_node_noclaim_queue`) > 0
		})
		if n := count(t, h, `SELECT count(*) FROM pgmq.a_worker_node_noclaim_queue`); n != 0 {
			t.Fatalf("%d messages archived because the worker could not claim at all", n)
		}
		if wait.Poll(time.Now().Add(5*time.Second), 20*time.Millisecond, func() (bool, error) {
			return hasLog(node.logLines(), "reading step messages failed; retrying with backoff", map[string]string{"queue": q}), nil
		}) != nil {
			t.Error("the Node.js worker did not log its failing claims")
		}
		if _, err := h.Pool.Exec(context.Background(), `GRANT EXECUTE ON FUNCTION `+claimFn+` TO tasker_worker`); err != nil {
			t.Fatal(err)
		}
		h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	})
}

// TestNodeWorkerArchivesMessagesWithAnAttemptOutOfRange: an attempt is a
// Postgres integer, so a message whose attempt is not one from 1 to
// 2147483647 is archived before any SQL, with a log line saying so, and the
// message read with it runs. (Sent to the claim, 2147483648 made the whole
// batch raise 22003, for ever.)
func TestNodeWorkerArchivesMessagesWithAnAttemptOutOfRange(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	const ns = "node_attempts"
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStepTemplate, ns))
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one", Context: json.RawMessage(demo.SampleContext(4))})
	step := taskSteps(t, h, task.UUID)["validate_cart"].UUID
	q, _ := queue.WorkerQueue(ns)
	waitQueued(t, h, q, 1)
	want := map[int64]string{} // msg_id -> what its log line's reason must say
	for attempt, why := range map[string]string{
		"0":          "no attempt",
		"-1":         "attempt -1 is out of range (1 to 2147483647)",
		"1.5":        "attempt 1.5 is not an integer",
		"2147483648": "attempt 2147483648 is out of range (1 to 2147483647)",
		"4294967297": "attempt 4294967297 is out of range (1 to 2147483647)",
	} {
		want[send(t, h, q, fmt.Sprintf(`{"step_uuid":"%s","handler":"ecommerce.validate_cart","attempt":%s}`, step, attempt))] = why
	}

	node := startNode(t, h, root, map[string]string{
		"TASKER_WORKER_NAMESPACES": ns,
		"TASKER_HANDLERS":          "ecommerce.validate_cart",
		"TASKER_DEMO_DELAY":        "0",
	})
	h.WaitTask(task.UUID, 15*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "the five messages archived", func() bool {
		return count(t, h, `SELECT count(*) FROM pgmq.a_worker_node_attempts_queue`) == len(want)
	})
	for id, why := range want {
		l := waitPoisonLine(t, node, q, id)
		if l == nil || l["step_uuid"] != step.String() || !strings.Contains(fmt.Sprint(l["reason"]), why) {
			t.Errorf("message %d: poison log line %v, want one naming step %s and saying %q", id, l, step, why)
		}
	}
}

// TestNodeWorkerArchivesAMessageForAStepThatDoesNotExist: a message naming no
// step (a forged or corrupt one, or one left over from a task that
// retention deleted) is archived with a warning, not deleted at DEBUG, and
// the step read with it runs.
func TestNodeWorkerArchivesAMessageForAStepThatDoesNotExist(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	const ns = "node_nostep"
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStepTemplate, ns))
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one", Context: json.RawMessage(demo.SampleContext(5))})
	q, _ := queue.WorkerQueue(ns)
	waitQueued(t, h, q, 1)
	missing := uuid.New()
	id := send(t, h, q, fmt.Sprintf(`{"step_uuid":"%s","handler":"ecommerce.validate_cart","attempt":1}`, missing))

	node := startNode(t, h, root, map[string]string{
		"TASKER_WORKER_NAMESPACES": ns,
		"TASKER_HANDLERS":          "ecommerce.validate_cart",
		"TASKER_DEMO_DELAY":        "0",
	})
	h.WaitTask(task.UUID, 15*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "the message archived", func() bool { return archivedIn(t, h, q, id) })
	l := waitPoisonLine(t, node, q, id)
	if l == nil || l["level"] != "WARN" || l["step_uuid"] != missing.String() || l["reason"] != "step not found" {
		t.Errorf("poison log line %v, want a warning naming step %s and reason \"step not found\"", l, missing)
	}
}

// TestNodeWorkerReleasesAStepClaimedThroughAMisleadingMessage: the claim
// checks the step and attempt a message names, nothing else. A step whose
// handler the worker lacks, or of another namespace than the queue's, is
// not run: it is given back with step_release (without msg_id) and the
// message archived from the queue it came from, and the step's own worker
// runs it with its attempts intact.
func TestNodeWorkerReleasesAStepClaimedThroughAMisleadingMessage(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)

	// Before: the Node worker called its handler for process_payment, which
	// it does not have ("fn is not a function"), and submitted that as a
	// failure of b's only attempt. Then the reaper failed b, which is not
	// retryable, when the worker released it unrun.
	t.Run("a step of a handler the worker lacks", func(t *testing.T) {
		t.Parallel()
		const ns = "node_liar"
		h := enginetest.New(t, enginetest.Options{})
		h.Register(`
namespace: node_liar
name: two
version: 1.0.0
steps:
  - name: a
    handler: ecommerce.validate_cart
  - name: b
    handler: ecommerce.process_payment
    retry: {max_attempts: 1, retryable: false, backoff: {base_ms: 50, cap_ms: 100}}
`)
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "two", Context: json.RawMessage(demo.SampleContext(6))})
		b := taskSteps(t, h, task.UUID)["b"].UUID
		q, _ := queue.WorkerQueue(ns)
		waitQueued(t, h, q, 2) // b is enqueued: the lying message claims it
		lie := send(t, h, q, fmt.Sprintf(`{"step_uuid":"%s","handler":"ecommerce.validate_cart","attempt":1}`, b))

		node := startNode(t, h, root, map[string]string{
			"TASKER_WORKER_NAMESPACES": ns,
			"TASKER_HANDLERS":          "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":        "0",
		})
		stepB := func() store.Step { return taskSteps(t, h, task.UUID)["b"] }
		enginetest.Eventually(t, 15*time.Second, "the lying message archived, or step b failed", func() bool {
			return archivedIn(t, h, q, lie) || stepB().State == lifecycle.StepError
		})
		if s := stepB(); s.State == lifecycle.StepError {
			t.Fatalf("step b failed its only attempt through the lying message: %s", s.LastError)
		}
		l := waitPoisonLine(t, node, q, lie)
		lines := node.logLines()
		if l == nil || l["step_uuid"] != b.String() || !strings.Contains(fmt.Sprint(l["reason"]), "ecommerce.process_payment") {
			t.Errorf("poison log line %v, want one for step b naming its handler ecommerce.process_payment", l)
		}
		if !hasLog(lines, "step claimed through a misleading message released unrun; it will be retried", map[string]string{"step_uuid": b.String()}) {
			t.Error("the Node.js worker did not log the release of step b")
		}

		goID := "go-test-" + uuid.NewString()[:8]
		h.Worker(worker.Config{Namespaces: []string{ns}, WorkerID: goID}, map[string]worker.Handler{
			"ecommerce.process_payment": func(ctx context.Context, s *worker.Step) (any, error) { return "b", nil },
		})
		if got := h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete, lifecycle.TaskError); got.State != lifecycle.TaskComplete {
			t.Fatalf("task is %s, want complete: step b lost its only attempt (%s)", got.State, stepB().LastError)
		}
		if s := stepB(); s.Attempts != s.MaxAttempts {
			t.Errorf("step b took %d of %d attempts, want as many attempts left as before the release (none)", s.Attempts, s.MaxAttempts)
		}
		if stepRanBy(t, h, task.UUID, b, node.id) || !stepRanBy(t, h, task.UUID, b, goID) {
			t.Errorf("step b's results came from %v, want the Go worker's only", transitions(t, h, task.UUID))
		}
	})

	// Before: node_lie_a's worker ran node_lie_b's step, and its submission
	// deleted the message's id from node_lie_b's queue, where that id is
	// another message.
	t.Run("a step of another namespace", func(t *testing.T) {
		t.Parallel()
		const nsA, nsB = "node_lie_a", "node_lie_b"
		h := enginetest.New(t, enginetest.Options{})
		for _, ns := range []string{nsA, nsB} {
			h.Register(fmt.Sprintf(oneStepTemplate, ns))
		}
		task := h.Submit(orchestration.TaskRequest{Namespace: nsB, Name: "one", Context: json.RawMessage(demo.SampleContext(7))})
		step := taskSteps(t, h, task.UUID)["validate_cart"].UUID
		qA, _ := queue.WorkerQueue(nsA)
		qB, _ := queue.WorkerQueue(nsB)
		waitQueued(t, h, qB, 1) // the step is enqueued: the lying message claims it
		lie := send(t, h, qA, fmt.Sprintf(`{"step_uuid":"%s","handler":"ecommerce.validate_cart","attempt":1}`, step))

		node := startNode(t, h, root, map[string]string{
			"TASKER_WORKER_NAMESPACES": nsA,
			"TASKER_HANDLERS":          "ecommerce.validate_cart",
			"TASKER_DEMO_DELAY":        "0",
		})
		enginetest.Eventually(t, 15*time.Second, "the message archived from node_lie_a's queue, or the step run", func() bool {
			return archivedIn(t, h, qA, lie) || stepRanBy(t, h, task.UUID, step, node.id)
		})
		if stepRanBy(t, h, task.UUID, step, node.id) {
			t.Fatalf("node_lie_a's worker ran a step of node_lie_b")
		}
		l := waitPoisonLine(t, node, qA, lie)
		if l == nil || l["step_uuid"] != step.String() || l["reason"] != "the step is of namespace node_lie_b, not node_lie_a" {
			t.Errorf("poison log line %v, want one for step %s saying it is of namespace node_lie_b", l, step)
		}

		goID := "go-test-" + uuid.NewString()[:8]
		h.Worker(worker.Config{Namespaces: []string{nsB}, WorkerID: goID}, subset(demo.Handlers(0), []string{"ecommerce.validate_cart"}))
		h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
		if !stepRanBy(t, h, task.UUID, step, goID) {
			t.Errorf("the step's result did not come from node_lie_b's worker: %v", transitions(t, h, task.UUID))
		}
	})
}
