package domainevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

const otherTemplate = `
namespace: other
name: other
version: 1.0.0
steps:
  - name: only
    handler: other.ok
`

// The demo workflow with one simulated payment failure publishes, on its
// own namespace's queue only, every event in an order consistent with what
// happened.
func TestOrderFulfillmentEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.RegisterFile("../../config/templates/order_fulfillment.yaml")
	h.Register(otherTemplate)
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, PollInterval: 100 * time.Millisecond}, demo.Handlers(0))

	ctxJSON := `{"customer_id":"cust-1","currency":"USD","items":[{"sku":"BOOK-1","quantity":2,"unit_price_cents":1299}],"simulate":{"payment_failures":1}}`
	task := h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "order_fulfillment",
		Context: json.RawMessage(ctxJSON), Initiator: "tests", SourceSystem: "domainevents_test"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)

	all := queueEvents(t, h, demo.Namespace)
	evs := taskEvents(all, task.UUID)
	if len(evs) != len(all) {
		t.Fatalf("%d events in the queue, %d of the task", len(all), len(evs))
	}
	if other := queueEvents(t, h, "other"); len(other) != 0 {
		t.Fatalf("queue of namespace other has %d events: %v", len(other), labels(other))
	}
	ls := labels(evs)
	t.Logf("events: %v", ls)

	// Envelope.
	for i, e := range evs {
		if e.CorrelationID != task.CorrelationID || e.SchemaVersion != domainevents.SchemaVersion {
			t.Fatalf("event %d: correlation %s schema %d", i, e.CorrelationID, e.SchemaVersion)
		}
		if e.Headers["traceparent"] != task.TraceParent {
			t.Fatalf("event %d: traceparent header %q, task %q", i, e.Headers["traceparent"], task.TraceParent)
		}
		if i > 0 && e.OccurredAt.Before(evs[i-1].OccurredAt) {
			t.Fatalf("event %d (%s) occurred before event %d (%s)", i, ls[i], i-1, ls[i-1])
		}
		if e.EventID.Version() != 7 {
			t.Fatalf("event id %s is not a UUIDv7", e.EventID)
		}
	}

	// Exactly these events, each once, except WorkflowProgressed.
	steps := []string{"validate_cart", "process_payment", "update_inventory", "create_order", "send_confirmation"}
	want := map[string]int{"TaskInitiated": 1, "TaskCompleted": 1, "StepFailed:process_payment": 1,
		"PaymentCaptured:process_payment": 1, "OrderCreated:create_order": 1}
	for _, s := range steps {
		want["StepCompleted:"+s] = 1
	}
	progressed := count(ls, "WorkflowProgressed")
	// One per result-processing transaction: six results, two of which
	// (payment and inventory, in parallel) may be processed together.
	if progressed < 5 || progressed > 6 {
		t.Fatalf("%d WorkflowProgressed, want 5 or 6: %v", progressed, ls)
	}
	if len(ls)-progressed != 10 {
		t.Fatalf("%d events besides WorkflowProgressed, want 10: %v", len(ls)-progressed, ls)
	}
	for l, n := range want {
		if got := count(ls, l); got != n {
			t.Fatalf("%d × %s, want %d: %v", got, l, n, ls)
		}
	}

	// In the order it happened.
	if ls[0] != "TaskInitiated" || ls[len(ls)-1] != "TaskCompleted" || ls[len(ls)-2] != "WorkflowProgressed" {
		t.Fatalf("sequence does not start with TaskInitiated and end with WorkflowProgressed, TaskCompleted: %v", ls)
	}
	before := func(a, b string) {
		t.Helper()
		if indexOf(t, ls, a) >= indexOf(t, ls, b) {
			t.Fatalf("%s is not before %s: %v", a, b, ls)
		}
	}
	before("StepCompleted:validate_cart", "StepFailed:process_payment")
	before("StepFailed:process_payment", "StepCompleted:process_payment")
	before("StepCompleted:validate_cart", "StepCompleted:update_inventory")
	before("StepCompleted:process_payment", "StepCompleted:create_order")
	before("StepCompleted:update_inventory", "StepCompleted:create_order")
	before("StepCompleted:create_order", "StepCompleted:send_confirmation")
	if indexOf(t, ls, "PaymentCaptured:process_payment") != indexOf(t, ls, "StepCompleted:process_payment")+1 ||
		indexOf(t, ls, "OrderCreated:create_order") != indexOf(t, ls, "StepCompleted:create_order")+1 {
		t.Fatalf("a business event does not follow its step's StepCompleted: %v", ls)
	}
	// Every step event is followed by a WorkflowProgressed before the next
	// step event of another transaction; at most two step events share one.
	run := 0
	for _, l := range ls[1:] {
		switch {
		case strings.HasPrefix(l, "StepCompleted:"), strings.HasPrefix(l, "StepFailed:"):
			run++
			if run > 2 {
				t.Fatalf("three step events without a WorkflowProgressed: %v", ls)
			}
		case l == "WorkflowProgressed":
			if run == 0 {
				t.Fatalf("WorkflowProgressed without a step event before it: %v", ls)
			}
			run = 0
		}
	}

	// Payloads.
	init := payload[domainevents.TaskInitiatedPayload](t, evs[0])
	if init.TaskName != "order_fulfillment" || init.TaskVersion != "1.0.0" || init.StepCount != 5 ||
		init.Initiator != "tests" || init.SourceSystem != "domainevents_test" || !strings.Contains(string(init.Context), `"cust-1"`) {
		t.Fatalf("TaskInitiated payload %+v", init)
	}
	failed := payload[domainevents.StepFailedPayload](t, evs[indexOf(t, ls, "StepFailed:process_payment")])
	if !failed.WillRetry || failed.Attempt != 1 || failed.MaxAttempts != 5 || failed.NextAttemptAt == nil ||
		!strings.Contains(failed.Error.Message, "payment gateway timed out") || failed.Handler != "ecommerce.process_payment" {
		t.Fatalf("StepFailed payload %+v", failed)
	}
	pay := payload[domainevents.StepCompletedPayload](t, evs[indexOf(t, ls, "StepCompleted:process_payment")])
	if pay.Attempt != 2 || pay.ResolvedManually || !strings.Contains(string(pay.Result), `"payment_id"`) {
		t.Fatalf("StepCompleted payload %+v", pay)
	}
	captured := evs[indexOf(t, ls, "PaymentCaptured:process_payment")]
	cp := payload[domainevents.StepEventPayload](t, captured)
	if cp.Outcome != domainevents.OutcomeSuccess || string(cp.Result) != string(pay.Result) || *captured.StepUUID != *evs[indexOf(t, ls, "StepCompleted:process_payment")].StepUUID {
		t.Fatalf("PaymentCaptured payload %+v", cp)
	}
	last := payload[domainevents.WorkflowProgressedPayload](t, evs[len(evs)-2])
	if last.TaskState != "complete" || last.TotalSteps != 5 || last.CompletedSteps != 5 || last.StepCounts["complete"] != 5 || len(last.StepCounts) != 10 {
		t.Fatalf("last WorkflowProgressed %+v", last)
	}
	first := payload[domainevents.WorkflowProgressedPayload](t, evs[indexOf(t, ls, "WorkflowProgressed")])
	if first.CompletedSteps != 1 || first.TaskState != "steps_in_process" || first.StepCounts["enqueued"] != 2 || first.StepCounts["pending"] != 2 {
		t.Fatalf("first WorkflowProgressed %+v", first)
	}
	done := payload[domainevents.TaskCompletedPayload](t, evs[len(evs)-1])
	if done.TotalSteps != 5 || done.StepCounts["complete"] != 5 || done.DurationMs < 1000 || done.CompletedAt.Before(done.StartedAt) {
		// ≥ 1s: the payment retry waited out a backoff of at least 1s.
		t.Fatalf("TaskCompleted payload %+v", done)
	}
}

const seqTemplate = `
namespace: seq
name: seq
version: 2.0.0
steps:
  - name: first
    handler: seq.ok
  - name: second
    handler: seq.flaky
    depends_on: [first]
    retry:
      max_attempts: 3
      backoff: {base_ms: 0, cap_ms: 0}
    events:
      - {name: SecondDone, on: success}
      - {name: SecondFinished, on: always}
      - {name: SecondGaveUp, on: failure}
  - name: third
    handler: seq.ok
    depends_on: [second]
`

// A linear workflow publishes exactly the expected sequence.
func TestLinearWorkflowExactSequence(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.Register(seqTemplate)
	var flaky atomic.Int32
	startWorker(h, "seq", map[string]worker.Handler{
		"seq.ok": okHandler,
		"seq.flaky": func(ctx context.Context, s *worker.Step) (any, error) {
			if flaky.Add(1) == 1 {
				return nil, errors.New("transient trouble")
			}
			return okHandler(ctx, s)
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "seq", Name: "seq"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	evs := queueEvents(t, h, "seq")
	assertSeq(t, evs,
		"TaskInitiated",
		"StepCompleted:first", "WorkflowProgressed",
		"StepFailed:second", "WorkflowProgressed",
		"StepCompleted:second", "SecondDone:second", "SecondFinished:second", "WorkflowProgressed",
		"StepCompleted:third", "WorkflowProgressed", "TaskCompleted")
	f := payload[domainevents.StepFailedPayload](t, evs[3])
	if !f.WillRetry || f.NextAttemptAt == nil || f.Attempt != 1 || f.MaxAttempts != 3 || f.Error.Message != "transient trouble" || f.Error.Retryable == nil || !*f.Error.Retryable {
		t.Fatalf("StepFailed payload %+v", f)
	}
	wp := payload[domainevents.WorkflowProgressedPayload](t, evs[4])
	// The retry has no backoff: the same transaction dispatched it again.
	if wp.StepCounts["complete"] != 1 || wp.StepCounts["enqueued"] != 1 || wp.StepCounts["pending"] != 1 || wp.TaskState != "steps_in_process" {
		t.Fatalf("WorkflowProgressed after the failure %+v", wp)
	}
	done := payload[domainevents.StepEventPayload](t, evs[6])
	if done.Outcome != "success" || done.Attempt != 2 || jsonOf(t, done.Result)["attempt"] != 2.0 || done.Error != nil {
		t.Fatalf("SecondDone payload %+v", done)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].MsgID <= evs[i-1].MsgID {
			t.Fatal("msg ids not increasing")
		}
	}
}

// A transaction that rolls back after its transitions publishes nothing;
// when the work is done again and commits, its events are published once.
func TestRolledBackTransactionPublishesNothing(t *testing.T) {
	t.Parallel()
	doomed := uuid.Must(uuid.NewV7())
	failCreate, createFailures := failWhen(func(r telemetry.Record) bool { return r.Task.CorrelationID == doomed }, 1000)
	// Fails the first transaction that completes step "second" of any task.
	failResult, resultFailures := failWhen(func(r telemetry.Record) bool {
		return r.Kind == telemetry.KindStepTransition && r.Step != nil && r.Step.Name == "second" && r.To == "complete"
	}, 1)
	h := newHarness(t, enginetest.Options{Service: orchestration.ServiceConfig{VisibilityTimeout: time.Second}}, failCreate, failResult)
	h.Register(seqTemplate)
	startWorker(h, "seq", map[string]worker.Handler{"seq.ok": okHandler, "seq.flaky": okHandler})

	_, _, err := h.Engine.CreateTask(context.Background(), orchestration.TaskRequest{Namespace: "seq", Name: "seq", CorrelationID: &doomed})
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("create task with a failing hook: %v", err)
	}
	if createFailures() != 1 {
		t.Fatalf("failing hook ran %d times", createFailures())
	}

	task := h.Submit(orchestration.TaskRequest{Namespace: "seq", Name: "seq"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	if resultFailures() != 1 {
		t.Fatalf("the result transaction failed %d times, want 1", resultFailures())
	}
	evs := queueEvents(t, h, "seq")
	for _, e := range evs {
		if e.CorrelationID == doomed {
			t.Fatalf("event %s of the rolled-back task creation was published", e.EventType)
		}
	}
	assertSeq(t, evs,
		"TaskInitiated",
		"StepCompleted:first", "WorkflowProgressed",
		"StepCompleted:second", "SecondDone:second", "SecondFinished:second", "WorkflowProgressed",
		"StepCompleted:third", "WorkflowProgressed", "TaskCompleted")
}

// domain_events: [] publishes no built-in event; a step's declared business
// event is published anyway, with the step's result.
func TestTemplateSelection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.Register(`
namespace: quiet
name: quiet
version: 1.0.0
domain_events: []
steps:
  - name: a
    handler: quiet.ok
  - name: b
    handler: quiet.ok
    depends_on: [a]
`)
	h.Register(`
namespace: picky
name: picky
version: 1.0.0
domain_events: []
steps:
  - name: ship
    handler: picky.ship
    events:
      - name: Shipped
`)
	h.Register(`
namespace: some
name: some
version: 1.0.0
domain_events: [TaskCompleted, StepFailed]
steps:
  - name: a
    handler: some.ok
`)
	ship := func(_ context.Context, s *worker.Step) (any, error) {
		return map[string]any{"tracking": "TRK-42"}, nil
	}
	startWorker(h, "quiet", map[string]worker.Handler{"quiet.ok": okHandler})
	startWorker(h, "picky", map[string]worker.Handler{"picky.ship": ship})
	startWorker(h, "some", map[string]worker.Handler{"some.ok": okHandler})

	q := h.Submit(orchestration.TaskRequest{Namespace: "quiet", Name: "quiet"})
	p := h.Submit(orchestration.TaskRequest{Namespace: "picky", Name: "picky"})
	s := h.Submit(orchestration.TaskRequest{Namespace: "some", Name: "some"})
	for _, id := range []uuid.UUID{q.UUID, p.UUID, s.UUID} {
		h.WaitTask(id, 20*time.Second, lifecycle.TaskComplete)
	}
	if evs := queueEvents(t, h, "quiet"); len(evs) != 0 {
		t.Fatalf("domain_events: [] published %v", labels(evs))
	}
	picky := queueEvents(t, h, "picky")
	assertSeq(t, picky, "Shipped:ship")
	sp := payload[domainevents.StepEventPayload](t, picky[0])
	if sp.Outcome != "success" || jsonOf(t, sp.Result)["tracking"] != "TRK-42" {
		t.Fatalf("Shipped payload %+v (result %s)", sp, sp.Result)
	}
	assertSeq(t, queueEvents(t, h, "some"), "TaskCompleted")
}

const payTemplate = `
namespace: pay
name: pay
version: 1.0.0
steps:
  - name: charge
    handler: pay.charge
    events:
      - {name: ChargeFailed, on: failure}
  - name: ship
    handler: pay.ok
    depends_on: [charge]
`

// A permanent failure publishes StepFailed (no retry), the step's failure
// event and TaskFailed; an operator's resolution of the step with a result
// publishes StepCompleted (resolved manually) and the rest of the run;
// cancelling publishes TaskCancelled with the reason.
func TestFailureResolutionAndCancellation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.Register(payTemplate)
	h.Register(`
namespace: idle
name: idle
version: 1.0.0
steps:
  - name: wait
    handler: idle.nobody
`)
	startWorker(h, "pay", map[string]worker.Handler{
		"pay.charge": func(context.Context, *worker.Step) (any, error) {
			return nil, worker.Permanent(errors.New("card declined"))
		},
		"pay.ok": okHandler,
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "pay", Name: "pay"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	evs := queueEvents(t, h, "pay")
	assertSeq(t, evs, "TaskInitiated", "StepFailed:charge", "ChargeFailed:charge", "WorkflowProgressed", "TaskFailed")
	sf := payload[domainevents.StepFailedPayload](t, evs[1])
	if sf.WillRetry || sf.NextAttemptAt != nil || sf.Attempt != 1 || sf.Error.Message != "card declined" || sf.Error.Kind != "permanent" {
		t.Fatalf("StepFailed payload %+v", sf)
	}
	cf := payload[domainevents.StepEventPayload](t, evs[2])
	if cf.Outcome != "failure" || cf.Error == nil || cf.Error.Message != "card declined" || cf.Result != nil {
		t.Fatalf("ChargeFailed payload %+v", cf)
	}
	wp := payload[domainevents.WorkflowProgressedPayload](t, evs[3])
	if wp.TaskState != "error" || wp.StepCounts["error"] != 1 || wp.StepCounts["pending"] != 1 || wp.CompletedSteps != 0 {
		t.Fatalf("WorkflowProgressed payload %+v", wp)
	}
	tf := payload[domainevents.TaskFailedPayload](t, evs[4])
	if len(tf.FailedSteps) != 1 || tf.FailedSteps[0].StepName != "charge" || tf.FailedSteps[0].Error.Message != "card declined" ||
		tf.FailedSteps[0].StepUUID != *evs[1].StepUUID || tf.TotalSteps != 2 || tf.StepCounts["error"] != 1 {
		t.Fatalf("TaskFailed payload %+v", tf)
	}

	// The operator resolves the failed step with a result: the task resumes.
	_, _, err := h.Engine.StepOperate(context.Background(), *evs[1].StepUUID, orchestration.StepActionResolve,
		json.RawMessage(`{"charged_by":"phone"}`), "charged over the phone")
	if err != nil {
		t.Fatal(err)
	}
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	evs = queueEvents(t, h, "pay")
	assertSeq(t, evs[5:], "StepCompleted:charge", "WorkflowProgressed", "StepCompleted:ship", "WorkflowProgressed", "TaskCompleted")
	rc := payload[domainevents.StepCompletedPayload](t, evs[5])
	if !rc.ResolvedManually || jsonOf(t, rc.Result)["charged_by"] != "phone" {
		t.Fatalf("StepCompleted of the resolution %+v (result %s)", rc, rc.Result)
	}

	// Cancellation.
	idle := h.Submit(orchestration.TaskRequest{Namespace: "idle", Name: "idle"})
	if _, err := h.Engine.CancelTask(context.Background(), idle.UUID, "customer changed their mind"); err != nil {
		t.Fatal(err)
	}
	ievs := queueEvents(t, h, "idle")
	assertSeq(t, ievs, "TaskInitiated", "TaskCancelled")
	tc := payload[domainevents.TaskCancelledPayload](t, ievs[1])
	if tc.Reason != "customer changed their mind" || tc.StepCounts["cancelled"] != 1 || tc.TotalSteps != 1 {
		t.Fatalf("TaskCancelled payload %+v", tc)
	}
}

// A worker that dies mid-step (its lease expires) fails the attempt: the
// reaper's transaction publishes StepFailed with a lease_expired error, and
// TaskFailed names it when no attempt is left.
func TestLeaseExpiryPublishesStepFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.Register(`
namespace: lease
name: lease
version: 1.0.0
steps:
  - name: work
    handler: lease.work
    retry:
      max_attempts: 2
      backoff: {base_ms: 0, cap_ms: 0}
`)
	task := h.Submit(orchestration.TaskRequest{Namespace: "lease", Name: "lease"})
	ctx := context.Background()
	claimAndDie := func(attempt int) {
		t.Helper()
		enginetest.Eventually(t, 10*time.Second, "step enqueued for the attempt", func() bool {
			steps, err := h.Store.TaskSteps(ctx, task.UUID)
			return err == nil && steps[0].State == lifecycle.StepEnqueued && steps[0].Attempts == attempt-1
		})
		steps, _ := h.Store.TaskSteps(ctx, task.UUID)
		var claimed bool
		if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, $2, 'doomed-worker', 1)`,
			steps[0].UUID, attempt).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("claim attempt %d: %v %v", attempt, claimed, err)
		}
	}
	claimAndDie(1)
	claimAndDie(2)
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	evs := queueEvents(t, h, "lease")
	assertSeq(t, evs, "TaskInitiated", "StepFailed:work", "WorkflowProgressed", "StepFailed:work", "WorkflowProgressed", "TaskFailed")
	first := payload[domainevents.StepFailedPayload](t, evs[1])
	second := payload[domainevents.StepFailedPayload](t, evs[3])
	if !first.WillRetry || first.Attempt != 1 || first.Error.Kind != "lease_expired" ||
		second.WillRetry || second.Attempt != 2 || second.Error.Kind != "lease_expired" {
		t.Fatalf("StepFailed payloads %+v then %+v", first, second)
	}
	tf := payload[domainevents.TaskFailedPayload](t, evs[5])
	if len(tf.FailedSteps) != 1 || tf.FailedSteps[0].Error.Kind != "lease_expired" || tf.FailedSteps[0].Attempt != 2 {
		t.Fatalf("TaskFailed payload %+v", tf)
	}
}

// A worker that gives a step back before its handler ran (tasker.step_release
// with handler_started false) ends an attempt in which nothing failed: the
// reaper's retry publishes no StepFailed, and the step's later success is
// the only step event. A release after the handler started is an abandoned
// attempt and still publishes StepFailed.
func TestReleaseBeforeTheHandlerPublishesNoStepFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{Service: orchestration.ServiceConfig{ReapInterval: 50 * time.Millisecond}})
	h.Register(`
namespace: giveback
name: giveback
version: 1.0.0
steps:
  - name: work
    handler: giveback.work
    retry:
      max_attempts: 3
      backoff: {base_ms: 0, cap_ms: 0}
`)
	ctx := context.Background()
	claimAndRelease := func(task uuid.UUID, attempt int, started bool) {
		t.Helper()
		var step uuid.UUID
		enginetest.Eventually(t, 10*time.Second, "step enqueued for the attempt", func() bool {
			steps, err := h.Store.TaskSteps(ctx, task)
			if err != nil || steps[0].State != lifecycle.StepEnqueued || steps[0].Attempts != attempt-1 {
				return false
			}
			step = steps[0].UUID
			return true
		})
		var ok bool
		if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, $2, 'shy-worker', 60)`,
			step, attempt).Scan(&ok); err != nil || !ok {
			t.Fatalf("claim attempt %d: %v %v", attempt, ok, err)
		}
		if err := h.Pool.QueryRow(ctx, `SELECT tasker.step_release($1, $2, 'shy-worker', NULL, $3)`,
			step, attempt, started).Scan(&ok); err != nil || !ok {
			t.Fatalf("release attempt %d: %v %v", attempt, ok, err)
		}
	}
	unrun := h.Submit(orchestration.TaskRequest{Namespace: "giveback", Name: "giveback"})
	ran := h.Submit(orchestration.TaskRequest{Namespace: "giveback", Name: "giveback"})
	claimAndRelease(unrun.UUID, 1, false)
	claimAndRelease(ran.UUID, 1, true)
	startWorker(h, "giveback", map[string]worker.Handler{"giveback.work": okHandler})
	h.WaitTask(unrun.UUID, 20*time.Second, lifecycle.TaskComplete)
	h.WaitTask(ran.UUID, 20*time.Second, lifecycle.TaskComplete)
	evs := queueEvents(t, h, "giveback")
	assertSeq(t, taskEvents(evs, unrun.UUID), "TaskInitiated", "StepCompleted:work", "WorkflowProgressed", "TaskCompleted")
	assertSeq(t, taskEvents(evs, ran.UUID), "TaskInitiated", "StepFailed:work", "WorkflowProgressed",
		"StepCompleted:work", "WorkflowProgressed", "TaskCompleted")
}
