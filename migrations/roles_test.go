package migrations_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/api"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/migrations"
	"github.com/tasker/tasker/worker"
)

// The namespaces of these tests. Their worker roles (tasker_worker_<ns>) are
// cluster-wide and shared by every test database; that is by design.
const (
	nsA = "sec_alpha"
	nsB = "sec_beta"
)

func rolesTemplate(ns, name, version string) string {
	return fmt.Sprintf(`
namespace: %s
name: %s
version: %s
steps:
  - name: first
    handler: sec.echo
  - name: second
    handler: sec.echo
    depends_on: [first]
`, ns, name, version)
}

func echoHandler(ctx context.Context, s *worker.Step) (any, error) {
	return map[string]any{"step": s.Name, "parents": len(s.DependencyResults)}, nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// loginRole creates a LOGIN role that is a member of roles, drops it when the
// test ends (roles are cluster-wide), and returns dbURL with that role's
// credentials. admin must be a superuser pool on dbURL's server.
func loginRole(t *testing.T, admin *pgxpool.Pool, dbURL string, roles ...string) string {
	t.Helper()
	ctx := context.Background()
	name := "tasker_test_login_" + randomHex(t, 6)
	password := randomHex(t, 16) // hex: safe inside a literal
	quoted := make([]string, len(roles))
	for i, r := range roles {
		quoted[i] = pgx.Identifier{r}.Sanitize()
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE %s`,
		pgx.Identifier{name}.Sanitize(), password, strings.Join(quoted, ", "))); err != nil {
		t.Fatalf("create login role: %v", err)
	}
	// Registered after admin's pool, so it runs before that pool closes; the
	// role's own pools are opened later, so they are closed by then.
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Errorf("drop login role %s: %v", name, err)
		}
	})
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(name, password)
	return u.String()
}

// provision creates the namespace's worker role and grants, as namespaceEnsure
// does when the namespace is created (it is idempotent).
func provision(t *testing.T, db *pgxpool.Pool, ns string) {
	t.Helper()
	var role string
	if err := db.QueryRow(context.Background(), `SELECT tasker.namespace_provision($1)`, ns).Scan(&role); err != nil {
		t.Fatalf("provision namespace %s: %v", ns, err)
	}
	if role != "tasker_worker_"+ns {
		t.Fatalf("namespace_provision(%s) = %q", ns, role)
	}
}

// ensureNamespace registers namespace ns as namespaceEnsure does: its row,
// then its provisioning.
func ensureNamespace(t *testing.T, db *pgxpool.Pool, ns string) {
	t.Helper()
	if _, err := db.Exec(context.Background(), `INSERT INTO tasker.namespaces (name) VALUES ($1)`, ns); err != nil {
		t.Fatal(err)
	}
	provision(t, db, ns)
}

// callWithNulls returns a call of function fn (whose name is unique) with
// NULL for every argument without a default, so that the test does not
// depend on its signature.
func callWithNulls(t *testing.T, db *pgxpool.Pool, fn string) string {
	t.Helper()
	n := scalar[int](t, db, `SELECT pronargs - pronargdefaults FROM pg_proc WHERE oid = $1::regproc`, fn)
	return "SELECT " + fn + "(" + strings.TrimSuffix(strings.Repeat("NULL, ", n), ", ") + ")"
}

// denied runs sql and requires a permission error (42501).
func denied(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := db.Exec(context.Background(), sql, args...)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("%s: want permission denied (42501), got %v", sql, err)
	}
}

// workerOfA starts an engine harness without an orchestrator on a fresh
// database, registers template name in each of namespaces and provisions
// them, and returns the harness and a pool logged in as a worker of nsA
// only (tasker_worker and tasker_worker_<nsA>).
func workerOfA(t *testing.T, name string, namespaces ...string) (*enginetest.Harness, *pgxpool.Pool) {
	t.Helper()
	dbURL := testdb.URL(t)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	for _, ns := range namespaces {
		h.Register(rolesTemplate(ns, name, "1.0.0"))
		provision(t, h.Pool, ns)
	}
	return h, testdb.Pool(t, loginRole(t, h.Pool, dbURL, "tasker_worker", "tasker_worker_"+nsA))
}

func allowed(t *testing.T, db *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(context.Background(), sql, args...); err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}

func scalar[T any](t *testing.T, db *pgxpool.Pool, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestWorkerRoleWorksOnlyItsNamespaceThroughTheProtocol(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, wp := workerOfA(t, "roles", nsA, nsB)
	taskA := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "roles", Context: json.RawMessage(`{"secret":"a"}`)})
	h.Submit(orchestration.TaskRequest{Namespace: nsB, Name: "roles", Context: json.RawMessage(`{"secret":"b"}`)})

	if su := scalar[string](t, wp, `SELECT current_setting('is_superuser')`); su != "off" {
		t.Fatalf("the worker login is a superuser (%s)", su)
	}
	qA, _ := queue.WorkerQueue(nsA)
	qB, _ := queue.WorkerQueue(nsB)

	// Read its namespace's step message and run the protocol on it.
	msgs, err := queue.Read(ctx, wp, qA, 30*time.Second, 10)
	if err != nil {
		t.Fatalf("worker reads its queue: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("read %d messages from %s, want 1", len(msgs), qA)
	}
	var body struct {
		StepUUID uuid.UUID `json:"step_uuid"`
		Attempt  int       `json:"attempt"`
	}
	if err := json.Unmarshal(msgs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	msgID := msgs[0].ID
	const wid = "restricted-worker"

	var claimed bool
	var reason string
	var claimedTask uuid.UUID
	var taskCtx json.RawMessage
	if err := wp.QueryRow(ctx, `SELECT claimed, reason, task_uuid, task_context FROM tasker.step_claim($1, $2, $3, 30)`,
		body.StepUUID, body.Attempt, wid).Scan(&claimed, &reason, &claimedTask, &taskCtx); err != nil {
		t.Fatalf("step_claim: %v", err)
	}
	if !claimed || claimedTask != taskA.UUID || !strings.Contains(string(taskCtx), `"a"`) {
		t.Fatalf("claim = %v (%s), task %s, context %s", claimed, reason, claimedTask, taskCtx)
	}
	if !scalar[bool](t, wp, `SELECT tasker.step_heartbeat($1, $2, $3, 30, $4)`, body.StepUUID, body.Attempt, wid, msgID) {
		t.Error("heartbeat of a held step returned false")
	}
	if scalar[bool](t, wp, `SELECT tasker.step_release($1, $2, 'someone-else')`, body.StepUUID, body.Attempt) {
		t.Error("release by another worker id returned true")
	}
	if !scalar[bool](t, wp, `SELECT tasker.step_submit_result($1, $2, $3, true, '{"ok":true}'::jsonb, NULL, $4, '{}'::jsonb)`,
		body.StepUUID, body.Attempt, wid, msgID) {
		t.Fatal("submit of a held step returned false")
	}
	// The submission did, as the owner, what the worker itself may not.
	if s := scalar[string](t, h.Pool, `SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1`, body.StepUUID); s != string(lifecycle.StepEnqueuedForOrchestration) {
		t.Errorf("step is %s after submit", s)
	}
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_worker_sec_alpha_queue WHERE msg_id = $1`, msgID); n != 0 {
		t.Error("the step message was not deleted by step_submit_result")
	}
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_orchestration_step_results WHERE message->>'step_uuid' = $1`, body.StepUUID.String()); n != 1 {
		t.Errorf("%d result notices, want 1", n)
	}

	// The rest of the worker's queue API on its own queue.
	allowed(t, wp, `SELECT * FROM pgmq.set_vt($1, 0, 0)`, qA)
	allowed(t, wp, `SELECT pgmq.delete($1, 0::bigint)`, qA)
	allowed(t, wp, `SELECT pgmq.archive($1, 0::bigint)`, qA)
	allowed(t, wp, `SELECT * FROM pgmq.read_with_poll($1, 30, 1, 0, 10)`, qA)
	if _, err := queue.QueueMetrics(ctx, wp, qA); err != nil {
		t.Errorf("metrics of its own queue (the SDK checks it at start): %v", err)
	}

	// Nothing else.
	denied(t, wp, `SELECT * FROM pgmq.read($1, 30, 1)`, qB)
	denied(t, wp, `SELECT * FROM pgmq.metrics($1)`, qB)
	denied(t, wp, `SELECT * FROM pgmq.read('orchestration_step_results', 30, 1)`)
	denied(t, wp, `SELECT * FROM pgmq.read('orchestration_task_requests', 30, 1)`)
	denied(t, wp, `SELECT * FROM pgmq.send('orchestration_step_results', '{}'::jsonb)`) // no forged results
	denied(t, wp, `SELECT * FROM pgmq.send($1, '{}'::jsonb)`, qA)                       // no forged step messages
	denied(t, wp, `UPDATE pgmq.q_worker_sec_alpha_queue SET message = '{}'`)
	denied(t, wp, `SELECT * FROM pgmq.list_queues()`)
	denied(t, wp, `SELECT pgmq.create('sec_evil')`)
	denied(t, wp, `SELECT count(*) FROM tasker.tasks`)
	denied(t, wp, `SELECT count(*) FROM tasker.workflow_steps`)
	denied(t, wp, `UPDATE tasker.tasks SET priority = 1`)
	denied(t, wp, `UPDATE tasker.workflow_steps SET state = 'complete'`)
	for _, fn := range []string{"tasker.transition_steps", "tasker.dispatch_steps", "tasker.log_task_transitions", "tasker.log_step_transitions"} {
		denied(t, wp, callWithNulls(t, h.Pool, fn))
	}
	denied(t, wp, `SELECT tasker.namespace_provision('sec_evil')`)
	denied(t, wp, `SELECT tasker.namespace_grant_worker_role($1)`, nsB)
	denied(t, wp, `CREATE TABLE tasker.evil (id int)`)
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_worker_sec_beta_queue`); n != 1 {
		t.Errorf("namespace B's queue holds %d messages, want its 1 untouched", n)
	}
}

// TestWorkerRoleSubmitsResultsInABatch: tasker.step_submit_results (00008)
// is part of the worker protocol: a worker login calls it and it does, as
// the owner, what the worker itself may not.
func TestWorkerRoleSubmitsResultsInABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, wp := workerOfA(t, "roles", nsA)
	h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "roles"})
	h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "roles"})

	qA, _ := queue.WorkerQueue(nsA)
	msgs, err := queue.Read(ctx, wp, qA, 30*time.Second, 10)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("worker reads its queue: %d messages, %v", len(msgs), err)
	}
	const wid = "restricted-batch-worker"
	var steps []uuid.UUID
	var msgIDs []int64
	for _, m := range msgs {
		var body struct {
			StepUUID uuid.UUID `json:"step_uuid"`
			Attempt  int       `json:"attempt"`
		}
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatal(err)
		}
		var claimed bool
		if err := wp.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim_batch(ARRAY[$1::uuid], ARRAY[$2::integer], $3, 30)`,
			body.StepUUID, body.Attempt, wid).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("step_claim_batch: %v, %v", claimed, err)
		}
		steps, msgIDs = append(steps, body.StepUUID), append(msgIDs, m.ID)
	}

	rows, err := wp.Query(ctx, `SELECT accepted FROM tasker.step_submit_results($1::uuid[], '{1,1}', $2, '{true,false}',
		ARRAY['{"ok":true}'::jsonb, NULL], ARRAY[NULL, '{"message":"no","retryable":false}'::jsonb], $3::bigint[], '{NULL,NULL}')`,
		steps, wid, msgIDs)
	if err != nil {
		t.Fatalf("step_submit_results as the worker role: %v", err)
	}
	accepted, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil || len(accepted) != 2 || !accepted[0] || !accepted[1] {
		t.Fatalf("step_submit_results as the worker role: accepted %v, %v", accepted, err)
	}
	for i, want := range []lifecycle.StepState{lifecycle.StepEnqueuedForOrchestration, lifecycle.StepEnqueuedAsErrorForOrchestration} {
		if s := scalar[string](t, h.Pool, `SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1`, steps[i]); s != string(want) {
			t.Errorf("step %d is %s after the batch, want %s", i+1, s, want)
		}
	}
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_worker_sec_alpha_queue WHERE msg_id = ANY ($1)`, msgIDs); n != 0 {
		t.Errorf("%d step messages left after step_submit_results, want 0", n)
	}
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_orchestration_step_results WHERE (message->>'step_uuid')::uuid = ANY ($1)`, steps); n != 2 {
		t.Errorf("%d result notices, want 2", n)
	}
	// The worker still cannot send notices of its own.
	denied(t, wp, `SELECT * FROM pgmq.send_batch('orchestration_step_results', ARRAY['{}'::jsonb])`)
}

func TestWorkerSDKRunsAWorkflowAsTheWorkerRole(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL}) // orchestrator as superuser
	h.Register(rolesTemplate(nsA, "roles", "1.0.0"))
	provision(t, h.Pool, nsA)

	wp := testdb.Pool(t, loginRole(t, h.Pool, dbURL, "tasker_worker", "tasker_worker_"+nsA))
	w := startWorker(t, wp, nsA)

	task := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "roles"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1 AND claimed_by = $2 AND state = 'complete'`,
		task.UUID, w.ID()); n != 2 {
		t.Errorf("%d steps completed by the restricted worker, want 2", n)
	}
}

// TestWorkerSDKArchivesAStepMessageOfAnotherNamespace: a message in the
// worker's queue naming a step of a namespace its login does not serve makes
// the claim of its batch fail (42501). The SDK claims the batch's other
// steps one by one and archives that message, instead of leaving the whole
// batch to come back after its visibility timeout and fail again.
func TestWorkerSDKArchivesAStepMessageOfAnotherNamespace(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL})
	for _, ns := range []string{nsA, nsB} {
		h.Register(rolesTemplate(ns, "foreign", "1.0.0"))
		provision(t, h.Pool, ns)
	}
	taskB := h.Submit(orchestration.TaskRequest{Namespace: nsB, Name: "foreign"})
	stepB := scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, taskB.UUID)
	qA, _ := queue.WorkerQueue(nsA)
	body := fmt.Sprintf(`{"step_uuid":"%s","handler":"sec.echo","namespace":"%s","attempt":1}`, stepB, nsA)
	if _, err := queue.Send(context.Background(), h.Pool, qA, json.RawMessage(body), nil, 0); err != nil {
		t.Fatal(err)
	}
	// Its first step's message is read in the same batch as the foreign one.
	taskA := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "foreign"})

	startWorker(t, testdb.Pool(t, loginRole(t, h.Pool, dbURL, "tasker_worker", "tasker_worker_"+nsA)), nsA)
	// Well within the 30 s visibility timeout a failed batch waits out.
	h.WaitTask(taskA.UUID, 15*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "the foreign message archived", func() bool {
		return scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.a_worker_sec_alpha_queue WHERE message->>'step_uuid' = $1`, stepB.String()) == 1
	})
	if s := scalar[string](t, h.Pool, `SELECT state || ' ' || coalesce(claimed_by, '-') FROM tasker.workflow_steps WHERE step_uuid = $1`, stepB); s != "enqueued -" {
		t.Errorf("B's step is %q, want enqueued and unclaimed", s)
	}
}

// TestWorkerSDKArchivesNothingWhenItCannotClaim: when every claim fails
// the same way (here the login may not call step_claim_batch), the fault is
// the worker's, not its messages': they are left in the queue and run once
// the claim works.
func TestWorkerSDKArchivesNothingWhenItCannotClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL})
	h.Register(rolesTemplate(nsA, "noclaim", "1.0.0"))
	provision(t, h.Pool, nsA)
	const claimFn = `tasker.step_claim_batch(uuid[], integer[], text, integer)`
	// Grants are per database: this one is the test's own.
	allowed(t, h.Pool, `REVOKE EXECUTE ON FUNCTION `+claimFn+` FROM tasker_worker`)
	task := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "noclaim"})

	w, err := worker.New(testdb.Pool(t, loginRole(t, h.Pool, dbURL, "tasker_worker", "tasker_worker_"+nsA)),
		worker.Config{Namespaces: []string{nsA}, LeaseDuration: 3 * time.Second, PollInterval: 200 * time.Millisecond, Logger: enginetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("sec.echo", echoHandler)
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	// Read twice (its claim has failed at least once), or archived.
	enginetest.Eventually(t, 20*time.Second, "the step message read twice", func() bool {
		return scalar[bool](t, h.Pool, `SELECT (SELECT coalesce(max(read_ct), 0) FROM pgmq.q_worker_sec_alpha_queue) >= 2
		                                    OR EXISTS (SELECT FROM pgmq.a_worker_sec_alpha_queue)`)
	})
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.a_worker_sec_alpha_queue`); n != 0 {
		t.Fatalf("%d messages archived because the worker could not claim at all", n)
	}
	allowed(t, h.Pool, `GRANT EXECUTE ON FUNCTION `+claimFn+` TO tasker_worker`)
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
}

func startWorker(t *testing.T, pool *pgxpool.Pool, ns string) *worker.Worker {
	t.Helper()
	w, err := worker.New(pool, worker.Config{Namespaces: []string{ns}, PollInterval: 200 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, Logger: enginetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("sec.echo", echoHandler)
	if err := w.Start(context.Background()); err != nil {
		t.Fatalf("start worker as the worker role: %v", err)
	}
	t.Cleanup(w.Stop)
	return w
}

func TestAPIRoleRunsTheDaemonWithoutDDL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	admin.Register(rolesTemplate(nsA, "roles", "1.0.0"))
	provision(t, admin.Pool, nsA)
	apiURL := loginRole(t, admin.Pool, dbURL, "tasker_api")
	workerURL := loginRole(t, admin.Pool, dbURL, "tasker_worker", "tasker_worker_"+nsA)

	// The whole daemon (engine, orchestration loops, REST API) as tasker_api,
	// the worker as the worker role.
	h := enginetest.New(t, enginetest.Options{DatabaseURL: apiURL})
	srv := httptest.NewServer(api.New(h.Engine, h.Store, h.Logger, api.Options{}).Handler())
	t.Cleanup(srv.Close)
	startWorker(t, testdb.Pool(t, workerURL), nsA)

	call := func(method, path, contentType, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		if res.StatusCode >= 300 {
			t.Logf("%s %s: %d %s", method, path, res.StatusCode, raw)
		}
		return res.StatusCode, m
	}

	// A new template version in an existing namespace: no DDL needed.
	if st, _ := call("POST", "/v1/templates", "application/yaml", rolesTemplate(nsA, "roles", "2.0.0")); st != http.StatusCreated && st != http.StatusOK {
		t.Fatalf("register template as tasker_api: status %d", st)
	}
	st, created := call("POST", "/v1/tasks", "application/json",
		fmt.Sprintf(`{"namespace":%q,"name":"roles","version":"2.0.0","context":{"n":1}}`, nsA))
	if st != http.StatusCreated {
		t.Fatalf("submit task as tasker_api: status %d", st)
	}
	id, _ := created["task_uuid"].(string)
	var state any
	err := wait.Poll(time.Now().Add(30*time.Second), 50*time.Millisecond, func() (bool, error) {
		st, got := call("GET", "/v1/tasks/"+id, "", "")
		if st != http.StatusOK {
			return false, fmt.Errorf("read task as tasker_api: status %d", st)
		}
		state = got["state"]
		return state == string(lifecycle.TaskComplete), nil
	})
	if err != nil {
		t.Fatalf("task %s is %v: %v", id, state, err)
	}
	if st, _ := call("GET", "/v1/tasks?namespace="+nsA, "", ""); st != http.StatusOK {
		t.Errorf("list tasks as tasker_api: status %d", st)
	}

	// Operator actions and the timers, on tasks no worker can run.
	if st, _ := call("POST", "/v1/templates", "application/yaml", strings.ReplaceAll(rolesTemplate(nsA, "stuck", "1.0.0"), "sec.echo", "sec.nobody")); st != http.StatusCreated {
		t.Fatalf("register template as tasker_api: status %d", st)
	}
	submitStuck := func() string {
		t.Helper()
		st, m := call("POST", "/v1/tasks", "application/json", fmt.Sprintf(`{"namespace":%q,"name":"stuck"}`, nsA))
		if st != http.StatusCreated {
			t.Fatalf("submit task as tasker_api: status %d", st)
		}
		id, _ := m["task_uuid"].(string)
		return id
	}
	if st, m := call("POST", "/v1/tasks/"+submitStuck()+"/cancel", "application/json", `{"reason":"roles test"}`); st != http.StatusOK || m["state"] != "cancelled" {
		t.Errorf("cancel as tasker_api: status %d, state %v", st, m["state"])
	}
	stale := submitStuck()
	// The task is stale once it is older than the 1 ms threshold: check
	// until the stale check (run as tasker_api) has moved it.
	enginetest.Eventually(t, 10*time.Second, "the stuck task marked stale by tasker_api", func() bool {
		if _, err := h.Engine.MarkStaleTasks(ctx, time.Millisecond, 100); err != nil {
			t.Fatalf("stale check as tasker_api: %v", err)
		}
		var n int
		_ = admin.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.dlq_entries WHERE task_uuid = $1`, stale).Scan(&n)
		return n == 1
	})
	var dlqID int64
	if err := admin.Pool.QueryRow(ctx, `SELECT dlq_id FROM tasker.dlq_entries WHERE task_uuid = $1`, stale).Scan(&dlqID); err != nil {
		t.Fatalf("DLQ entry of the stale task: %v", err)
	}
	if st, _ := call("PATCH", fmt.Sprintf("/v1/dlq/%d", dlqID), "application/json", `{"resolution_status":"resolved","resolved_by":"test"}`); st != http.StatusOK {
		t.Errorf("update DLQ entry as tasker_api: status %d", st)
	}
	if st, _ := call("GET", "/v1/dlq", "", ""); st != http.StatusOK {
		t.Errorf("list DLQ as tasker_api: status %d", st)
	}
	if _, err := h.Engine.ReapExpiredLeases(ctx, 100); err != nil {
		t.Errorf("reaper as tasker_api: %v", err)
	}
	if _, err := h.Engine.WakeDueTasks(ctx, 100); err != nil {
		t.Errorf("timer as tasker_api: %v", err)
	}
	if _, err := queue.AllMetrics(ctx, h.Pool); err != nil {
		t.Errorf("queue metrics (/metrics) as tasker_api: %v", err)
	}
	// The retention sweep deletes through its definer functions (00024):
	// the cancelled task, finished "an hour ago", goes with its rows.
	if _, err := admin.Pool.Exec(ctx, `UPDATE tasker.tasks SET completed_at = now() - interval '2 hours' WHERE state = 'cancelled'`); err != nil {
		t.Fatal(err)
	}
	policy := store.RetentionPolicy{TasksAfter: time.Hour, HistoryAfter: time.Hour, ArchiveAfter: time.Hour}
	if res, err := h.Store.Prune(ctx, policy, store.PruneOptions{}); err != nil || res.Tasks != 1 {
		t.Errorf("retention sweep as tasker_api: deleted %+v, %v; want the cancelled task", res, err)
	}
	if _, err := h.Store.PruneEstimate(ctx, policy); err != nil {
		t.Errorf("retention estimate as tasker_api: %v", err)
	}
	apiDB, err := sql.Open("pgx", apiURL)
	if err != nil {
		t.Fatal(err)
	}
	defer apiDB.Close()
	if pending, err := migrations.Pending(ctx, apiDB); err != nil || pending {
		t.Errorf("readiness check (pending migrations) as tasker_api: %v, %v", pending, err)
	}

	// A new namespace comes up through the definer function, not DDL.
	provision(t, h.Pool, "sec_gamma")
	if _, err := queue.Send(ctx, h.Pool, "domain_events_sec_gamma", json.RawMessage(`{}`), nil, 0); err != nil {
		t.Errorf("send to a namespace queue provisioned as tasker_api: %v", err)
	}
	if _, err := queue.Send(ctx, h.Pool, "worker_sec_gamma_queue", json.RawMessage(`{}`), nil, 0); err != nil {
		t.Errorf("send to a namespace queue provisioned as tasker_api: %v", err)
	}

	for _, sql := range []string{
		`CREATE TABLE tasker.evil (id int)`,
		`CREATE FUNCTION tasker.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
		`CREATE TABLE pgmq.evil (id int)`,
		`DROP TABLE tasker.tasks`,
		`ALTER TABLE tasker.tasks ADD COLUMN evil int`,
		`DROP SCHEMA tasker CASCADE`,
		`DROP FUNCTION tasker.step_claim`,
		`DELETE FROM tasker.tasks`,
		`TRUNCATE tasker.task_transitions`,
		`INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged) VALUES ('evil', false, false)`,
		`SELECT pgmq.create('sec_evil')`,
		`SELECT pgmq.drop_queue('orchestration_step_results')`,
	} {
		denied(t, h.Pool, sql)
	}
}

func TestPublicHasNoAccessAndDefinersPinSearchPath(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	for _, s := range []string{"tasker", "pgmq"} {
		if scalar[bool](t, db, `SELECT has_schema_privilege('public', $1, 'CREATE')`, s) {
			t.Errorf("PUBLIC may create in schema %s", s)
		}
	}
	rows, err := db.Query(context.Background(), `
		SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname IN ('tasker', 'pgmq') AND has_function_privilege('public', p.oid, 'EXECUTE')`)
	if err != nil {
		t.Fatal(err)
	}
	open, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(open) > 0 {
		t.Errorf("PUBLIC may execute %v", open)
	}

	// Every SECURITY DEFINER function pins its search_path, and the worker
	// protocol is SECURITY DEFINER.
	rows, err = db.Query(context.Background(), `
		SELECT p.oid::regprocedure::text, p.prosecdef,
		       coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
		  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname IN ('tasker', 'pgmq')`)
	if err != nil {
		t.Fatal(err)
	}
	definers := map[string]bool{}
	for rows.Next() {
		var fn string
		var secdef, pinned bool
		if err := rows.Scan(&fn, &secdef, &pinned); err != nil {
			t.Fatal(err)
		}
		if secdef {
			definers[strings.SplitN(fn, "(", 2)[0]] = true
			if !pinned {
				t.Errorf("%s is SECURITY DEFINER without search_path = pg_catalog, pg_temp", fn)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"tasker.step_claim", "tasker.step_claim_batch", "tasker.step_heartbeat",
		"tasker.step_release", "tasker.step_submit_result", "tasker.step_submit_results", "tasker.namespace_grant_worker_role", "tasker.namespace_provision"} {
		if !definers[fn] {
			t.Errorf("%s is not SECURITY DEFINER", fn)
		}
	}
	for _, fn := range []string{"tasker.transition_steps", "tasker.dispatch_steps"} {
		if definers[fn] {
			t.Errorf("%s is SECURITY DEFINER; only the worker protocol should be", fn)
		}
	}
	for _, r := range []string{"tasker_api", "tasker_worker"} {
		if scalar[bool](t, db, `SELECT rolcanlogin FROM pg_roles WHERE rolname = $1`, r) {
			t.Errorf("%s can log in; it should be a NOLOGIN group role", r)
		}
	}
}

func TestNamespaceFunctionsRejectBadNames(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	for _, fn := range []string{"namespace_provision", "namespace_grant_worker_role"} {
		for _, ns := range []string{"", "Upper", "1abc", "a-b", `x"; DROP ROLE tasker_api; --`, strings.Repeat("a", 34)} {
			_, err := db.Exec(context.Background(), `SELECT tasker.`+fn+`($1)`, ns)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "22023" {
				t.Errorf("%s(%q): want invalid_parameter_value, got %v", fn, ns, err)
			}
		}
	}
	_, err := db.Exec(context.Background(), `SELECT tasker.namespace_grant_worker_role('sec_nosuch')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Errorf("grant for a namespace without a queue: want undefined_table, got %v", err)
	}
	// Idempotent.
	provision(t, db, "sec_delta")
	provision(t, db, "sec_delta")
}

// Roles are cluster-wide: databases provisioning one new namespace at once
// (as parallel tests do) race to create its role, and all must succeed.
func TestConcurrentProvisioningAcrossDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := "sec_race_" + randomHex(t, 4)
	role := "tasker_worker_" + ns
	dbs := make([]*pgxpool.Pool, 4)
	for i := range dbs {
		dbs[i] = testdb.New(t)
	}
	t.Cleanup(func() { // before the pools close
		for _, db := range dbs {
			_, _ = db.Exec(context.Background(), `DROP OWNED BY `+pgx.Identifier{role}.Sanitize())
		}
		if _, err := dbs[0].Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Errorf("drop %s: %v", role, err)
		}
	})
	names := make([]string, len(dbs))
	for i, db := range dbs {
		names[i] = scalar[string](t, db, `SELECT current_database()`)
	}
	var first atomic.Bool
	start := make(chan struct{})
	errs := make(chan error, len(dbs))
	for _, db := range dbs {
		go func() {
			<-start
			errs <- pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT tasker.namespace_provision($1)`, ns); err != nil {
					return err
				}
				if !first.CompareAndSwap(false, true) {
					return nil
				}
				// The first to get here created the role: hold its
				// transaction open until the others wait on the uncommitted
				// role, so that the creations overlap. Bounded, and not an
				// error when the deadline passes: how they proceed is
				// Postgres's.
				err := wait.Poll(time.Now().Add(5*time.Second), 5*time.Millisecond, func() (bool, error) {
					var waiting int
					err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
						WHERE datname = ANY ($1) AND wait_event_type = 'Lock'`, names).Scan(&waiting)
					return waiting >= len(dbs)-1, err
				})
				if errors.Is(err, wait.ErrTimeout) {
					return nil
				}
				return err
			})
		}()
	}
	close(start)
	for range dbs {
		if err := <-errs; err != nil {
			t.Errorf("concurrent provisioning of %s: %v", ns, err)
		}
	}
	for i, db := range dbs {
		if !scalar[bool](t, db, `SELECT has_table_privilege($1, format('pgmq.%I', 'q_worker_' || $2 || '_queue'), 'SELECT')`, role, ns) {
			t.Errorf("database %d: %s cannot read its queue", i, role)
		}
	}
}

// Down revokes what Up granted, and Up again provisions the namespaces that
// exist by then.
func TestRolesMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	h.Register(rolesTemplate(nsA, "roles", "1.0.0"))
	provision(t, h.Pool, nsA)

	p := migrationProvider(t, dbURL)
	const claimFn = "tasker.step_claim_batch"
	state := func() (publicExec, secdef, workerReads bool) {
		t.Helper()
		if err := h.Pool.QueryRow(ctx, `
			SELECT has_function_privilege('public', $1::regproc, 'EXECUTE'),
			       (SELECT prosecdef FROM pg_proc WHERE oid = $1::regproc),
			       has_table_privilege('tasker_worker_sec_alpha', 'pgmq.q_worker_sec_alpha_queue', 'SELECT')`,
			claimFn).Scan(&publicExec, &secdef, &workerReads); err != nil {
			t.Fatal(err)
		}
		return
	}

	if _, err := p.DownTo(ctx, 4); err != nil {
		t.Fatalf("down to 4: %v", err)
	}
	if pub, sd, wr := state(); !pub || sd || wr {
		t.Errorf("after down: public execute %v (want true), security definer %v, worker reads %v (want false)", pub, sd, wr)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if pub, sd, wr := state(); pub || !sd || !wr {
		t.Errorf("after up: public execute %v (want false), security definer %v, worker reads %v (want true)", pub, sd, wr)
	}
}
