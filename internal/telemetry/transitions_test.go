package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/traceparent"
	"github.com/tasker/tasker/worker"
)

const creationTemplate = `
namespace: created
name: pair
version: 1.0.0
steps:
  - name: a
    handler: created.a
  - name: b
    handler: created.b
    depends_on: [a]
`

// TestTaskCreationIsCountedFromNone: docs/metrics.md says a task's creation
// is a tasker_task_state_transitions_total series from "none" to the state
// it is created in; a repeated submission that returns the existing task is
// no creation.
func TestTaskCreationIsCountedFromNone(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(creationTemplate)
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair"})
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair", IdempotencyKey: "once"})
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair", IdempotencyKey: "once"})
	// Telemetry is published when CreateTask's transaction has committed,
	// before it returns.
	created := map[string]string{"from_state": "none", "to_state": "pending", "namespace": "created"}
	if got := h.Counter("tasker_task_state_transitions_total", created); got != 2 {
		t.Errorf("tasker_task_state_transitions_total%v = %v, want 2 (two tasks created)", created, got)
	}
	if got := h.Counter("tasker_task_state_transitions_total", map[string]string{"from_state": "none", "namespace": "created"}); got != 2 {
		t.Errorf("%v task transitions from none; a task is created once, in pending", got)
	}
	// Steps were counted so already.
	steps := map[string]string{"from_state": "none", "to_state": "pending", "namespace": "created"}
	if got := h.Counter("tasker_step_state_transitions_total", steps); got != 4 {
		t.Errorf("tasker_step_state_transitions_total%v = %v, want 4", steps, got)
	}
}

// TestTaskStartedIsOnTheStartTransition: workflow.task_started is on the
// pending → initializing task_state_transition span, next to
// task.initialize_requested, as docs/events.md says, and on no other span.
func TestTaskStartedIsOnTheStartTransition(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(creationTemplate)
	task := h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair"})
	var on []string
	for _, s := range h.Spans.GetSpans() {
		attrs := attrMap(s.Attributes)
		if attrs["task_uuid"] != task.UUID.String() {
			continue
		}
		names := map[string]bool{}
		for _, ev := range s.Events {
			names[ev.Name] = true
		}
		if !names[string(lifecycle.EventWorkflowTaskStarted)] {
			continue
		}
		on = append(on, s.Name+" "+attrs["from_state"]+"→"+attrs["to_state"])
		if !names[string(lifecycle.EventTaskInitializeRequested)] {
			t.Errorf("workflow.task_started is on %s %s→%s, which lacks task.initialize_requested", s.Name, attrs["from_state"], attrs["to_state"])
		}
	}
	if want := "task_state_transition pending→initializing"; len(on) != 1 || on[0] != want {
		t.Errorf("workflow.task_started is on %v, want [%s]", on, want)
	}
}

// TestRevivedTaskTraceAndCompletion pins what docs/events.md ("A task an
// operator revives") says: a task that fails, is retried by an operator and
// completes has one root span, emitted at its first end with outcome=error;
// its final workflow.task_completed is on a result_evaluation span under
// that root; and the completion histogram observed both ends, each from
// the task's creation.
func TestRevivedTaskTraceAndCompletion(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(`
namespace: revived
name: once
version: 1.0.0
steps:
  - name: only
    handler: revived.second_time
`)
	h.Worker(worker.Config{Namespaces: []string{"revived"}}, map[string]worker.Handler{
		"revived.second_time": func(_ context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, worker.Permanent(errors.New("declined"))
			}
			return map[string]int{"attempt": s.Attempt}, nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "revived", Name: "once"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	if _, err := h.Engine.RetryTask(context.Background(), task.UUID, "try again"); err != nil {
		t.Fatal(err)
	}
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)

	sc, ok := traceparent.SpanContext(task.TraceParent)
	if !ok {
		t.Fatalf("task has traceparent %q", task.TraceParent)
	}
	// on lists the spans of the task carrying event ev.
	on := func(spans tracetest.SpanStubs, ev lifecycle.EventName) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range spans {
			if attrMap(s.Attributes)["task_uuid"] != task.UUID.String() {
				continue
			}
			for _, e := range s.Events {
				if e.Name == string(ev) {
					out = append(out, s)
					break
				}
			}
		}
		return out
	}
	// The last transaction's telemetry is published just after its commit.
	enginetest.Eventually(t, 5*time.Second, "workflow.task_completed exported", func() bool {
		return len(on(h.Spans.GetSpans(), lifecycle.EventWorkflowTaskCompleted)) > 0
	})
	spans := h.Spans.GetSpans()
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "task_orchestration" && attrMap(s.Attributes)["task_uuid"] == task.UUID.String() {
			roots = append(roots, s)
		}
	}
	if len(roots) != 1 || roots[0].SpanContext.SpanID() != sc.SpanID() || attrMap(roots[0].Attributes)["outcome"] != "error" {
		t.Fatalf("root spans %d (want 1, the stored id, outcome=error)", len(roots))
	}
	if got := on(spans, lifecycle.EventWorkflowTaskFailed); len(got) != 1 || got[0].Name != "task_orchestration" {
		t.Errorf("workflow.task_failed is on %d spans, want the root alone", len(got))
	}
	completed := on(spans, lifecycle.EventWorkflowTaskCompleted)
	if len(completed) != 1 || completed[0].Name != "result_evaluation" || completed[0].Parent.SpanID() != sc.SpanID() {
		t.Errorf("workflow.task_completed is on %d spans (first: %v), want one result_evaluation under the root", len(completed), completed)
	}
	final := on(spans, lifecycle.EventTaskCompleted)
	if len(final) != 1 || final[0].Name != "task_state_transition" || final[0].StartTime.Before(roots[0].EndTime) {
		t.Errorf("task.completed is on %d spans, want one task_state_transition after the root's end", len(final))
	}

	// completion returns the histogram's observations and their sum for an
	// outcome.
	completion := func(outcome string) (uint64, float64) {
		mfs, err := h.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "tasker_task_completion_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] == "revived" && labels["outcome"] == outcome {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
		return 0, 0
	}
	enginetest.Eventually(t, 5*time.Second, "completion observed at the final end", func() bool {
		n, _ := completion("complete")
		return n > 0
	})
	nErr, sumErr := completion("error")
	nDone, sumDone := completion("complete")
	if nErr != 1 || nDone != 1 || sumDone <= sumErr {
		t.Errorf("completion observations: error %d (%.3fs), complete %d (%.3fs); want one each, the later from creation too",
			nErr, sumErr, nDone, sumDone)
	}
}

// TestBeforeTransitionMarksCommittedTransitions pins what docs/events.md
// says of task.before_transition and step.before_transition: they are
// published for the transitions that happened, after the commit, just
// ahead of each transition's own events; a rolled-back transaction's
// transitions publish none.
func TestBeforeTransitionMarksCommittedTransitions(t *testing.T) {
	t.Parallel()
	doomed := uuid.Must(uuid.NewV7())
	rollBack := func(_ context.Context, _ store.Tx, j *telemetry.Journal) error {
		for _, r := range j.Records {
			if r.Task.CorrelationID == doomed {
				return errors.New("injected failure")
			}
		}
		return nil
	}
	h := enginetest.New(t, enginetest.Options{EngineOptions: []orchestration.EngineOption{orchestration.WithBeforeCommit(rollBack)}})
	h.Register(creationTemplate)
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, *worker.Step) (any, error) { return map[string]bool{"ok": true}, nil }
	h.Worker(worker.Config{Namespaces: []string{"created"}, Observer: obs}, map[string]worker.Handler{"created.a": ok, "created.b": ok})
	ctx := context.Background()

	// The creation's transaction made pending -> initializing -> ... and
	// rolled back: none of it is published.
	if _, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{Namespace: "created", Name: "pair", CorrelationID: &doomed}); err == nil {
		t.Fatal("a creation whose transaction fails succeeded")
	}
	if n := h.Counter("tasker_events_total", map[string]string{"event": string(lifecycle.EventTaskBeforeTransition)}); n != 0 {
		t.Errorf("task.before_transition counted %v times for a rolled-back transaction", n)
	}

	task := h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	rows := func(table string) int {
		var n int
		if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.`+table+` WHERE task_uuid = $1 AND from_state IS NOT NULL`,
			task.UUID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	taskMoves, stepMoves := rows("task_transitions"), rows("workflow_step_transitions")
	if taskMoves == 0 || stepMoves == 0 {
		t.Fatalf("%d task and %d step transitions recorded", taskMoves, stepMoves)
	}
	// count returns how many times ev is on the task's spans and checks
	// each transition span: before_transition once, with the span's states,
	// ahead of the transition's own events.
	count := func(spans tracetest.SpanStubs, ev lifecycle.EventName) (n int, problems []string) {
		for _, s := range spans {
			attrs := attrMap(s.Attributes)
			if attrs["task_uuid"] != task.UUID.String() {
				continue
			}
			var own []lifecycle.EventName
			switch {
			case s.Name == "task_state_transition" && ev == lifecycle.EventTaskBeforeTransition:
				own = lifecycle.TaskMoveEvents(lifecycle.TaskState(attrs["from_state"]), lifecycle.TaskTrigger(attrs["trigger"]), lifecycle.TaskState(attrs["to_state"]))
			case s.Name == "step_state_transition" && ev == lifecycle.EventStepBeforeTransition && attrs["from_state"] != "":
				if e, ok := lifecycle.StepTransitionEvent(lifecycle.StepState(attrs["from_state"]), lifecycle.StepState(attrs["to_state"])); ok {
					own = append(own, e)
				}
			default:
				for _, e := range s.Events {
					if e.Name == string(ev) {
						n++
						problems = append(problems, fmt.Sprintf("%s on a %s span", ev, s.Name))
					}
				}
				continue
			}
			at := -1
			for i, e := range s.Events {
				if e.Name != string(ev) {
					continue
				}
				n++
				ea := attrMap(e.Attributes)
				if at >= 0 || ea["from_state"] != attrs["from_state"] || ea["to_state"] != attrs["to_state"] {
					problems = append(problems, fmt.Sprintf("%s %s→%s: %s again or with states %s→%s", s.Name, attrs["from_state"], attrs["to_state"], ev, ea["from_state"], ea["to_state"]))
				}
				at = i
			}
			if at < 0 {
				problems = append(problems, fmt.Sprintf("%s %s→%s lacks %s", s.Name, attrs["from_state"], attrs["to_state"], ev))
				continue
			}
			for i, e := range s.Events {
				for _, o := range own {
					if e.Name == string(o) && (i < at || !e.Time.Equal(s.Events[at].Time)) {
						problems = append(problems, fmt.Sprintf("%s %s→%s: %s is not just after %s", s.Name, attrs["from_state"], attrs["to_state"], o, ev))
					}
				}
			}
		}
		return n, problems
	}
	// The worker's spans end once its submission is stored, which may be
	// after the orchestrator finished the task.
	var taskN, stepN int
	var problems []string
	enginetest.Eventually(t, 10*time.Second, "every transition's before_transition exported", func() bool {
		spans := h.Spans.GetSpans()
		var p1, p2 []string
		taskN, p1 = count(spans, lifecycle.EventTaskBeforeTransition)
		stepN, p2 = count(spans, lifecycle.EventStepBeforeTransition)
		problems = append(p1, p2...)
		return taskN >= taskMoves && stepN >= stepMoves
	})
	if taskN != taskMoves || stepN != stepMoves {
		t.Errorf("task.before_transition %d times for %d task transitions, step.before_transition %d times for %d step transitions",
			taskN, taskMoves, stepN, stepMoves)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

const chainTemplate = `
namespace: staying
name: chain
version: 1.0.0
steps:
  - name: a
    handler: staying.work
  - name: b
    handler: staying.work
    depends_on: [a]
  - name: c
    handler: staying.work
    depends_on: [b]
`

// TestEachStayInAStateIsTimedFromItsEntry: a chain's task leaves
// steps_in_process and comes back in the same transaction at every result,
// and its row is not rewritten for that (migration 00038). Each stay in
// tasker_task_state_duration_seconds{state="steps_in_process"} still runs
// from the task's last entry into the state, as its transition rows record
// it, not from its first entry.
func TestEachStayInAStateIsTimedFromItsEntry(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(chainTemplate)
	h.Worker(worker.Config{Namespaces: []string{"staying"}}, map[string]worker.Handler{
		"staying.work": func(ctx context.Context, s *worker.Step) (any, error) {
			time.Sleep(40 * time.Millisecond)
			return map[string]any{"ok": true}, nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "staying", Name: "chain"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)

	// The stays as the transition rows record them: from each entry into
	// steps_in_process to the transition out of it.
	rows, err := h.Pool.Query(context.Background(), `
		SELECT extract(epoch FROM tr.created_at - prev.created_at)
		  FROM tasker.task_transitions tr
		  JOIN tasker.task_transitions prev ON prev.task_uuid = tr.task_uuid AND prev.sort_key = tr.sort_key - 1
		 WHERE tr.task_uuid = $1 AND tr.from_state = 'steps_in_process'
		 ORDER BY tr.sort_key`, task.UUID)
	if err != nil {
		t.Fatal(err)
	}
	stays, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		t.Fatal(err)
	}
	if len(stays) != 3 {
		t.Fatalf("%d stays in steps_in_process recorded, want 3 (one per step)", len(stays))
	}
	want := 0.0
	for _, s := range stays {
		want += s
	}
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "tasker_task_state_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["state"] == "steps_in_process" && labels["namespace"] == "staying" {
				count += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	// The metric's ends are the engine's clock, the rows' the database's
	// transaction starts: a few milliseconds apart at most. Timed from the
	// first entry, the three stays would add up to about twice as much.
	if count != 3 || math.Abs(sum-want) > 0.03 {
		t.Errorf("steps_in_process stays: %d observed, %.3fs in all; the transitions record 3 of %.3fs (%v)", count, sum, want, stays)
	}
}
