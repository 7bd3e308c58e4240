package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/worker"
)

// flakyError is the error flakyHandler's first attempt fails with.
var flakyError = context.DeadlineExceeded.Error()

// recordedRun is one attempt of a step as its transitions recorded it.
type recordedRun struct {
	step               uuid.UUID
	attempt            int
	worker             string
	claimed, submitted time.Time
	outcome            string
}

func recordedRuns(t *testing.T, h *enginetest.Harness, tasks []uuid.UUID) []recordedRun {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `
		SELECT sub.step_uuid, (sub.metadata->>'attempt')::integer, sub.metadata->>'worker_id',
		       cl.created_at, sub.created_at, sub.to_state
		  FROM tasker.workflow_step_transitions sub
		  JOIN tasker.workflow_step_transitions cl
		    ON cl.step_uuid = sub.step_uuid AND cl.sort_key = sub.sort_key - 1 AND cl.to_state = 'in_progress'
		 WHERE sub.task_uuid = ANY ($1) AND sub.from_state = 'in_progress'
		   AND sub.to_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')`, tasks)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []recordedRun
	for rows.Next() {
		var r recordedRun
		var to string
		if err := rows.Scan(&r.step, &r.attempt, &r.worker, &r.claimed, &r.submitted, &to); err != nil {
			t.Fatal(err)
		}
		r.outcome = "success"
		if to == string(lifecycle.StepEnqueuedAsErrorForOrchestration) {
			r.outcome = "failure"
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// runFlakyTasks runs n single_flaky tasks (the step fails its first attempt
// and succeeds on its second) with a worker built from cfg, and returns the
// runs their transitions recorded.
func runFlakyTasks(t *testing.T, h *enginetest.Harness, cfg worker.Config, n int) []recordedRun {
	t.Helper()
	h.Register(flakyTemplate)
	cfg.Namespaces = []string{"ecommerce"}
	h.Worker(cfg, map[string]worker.Handler{"ecommerce.process_payment_flaky": flakyHandler()})
	var tasks []uuid.UUID
	for i := 0; i < n; i++ {
		id := h.Submit(orchestration.TaskRequest{Namespace: "ecommerce", Name: "single_flaky"}).UUID
		tasks = append(tasks, id)
	}
	for _, id := range tasks {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	runs := recordedRuns(t, h, tasks)
	if len(runs) != 2*n {
		t.Fatalf("%d runs recorded for %d tasks, want %d (a failure and a success each)", len(runs), n, 2*n)
	}
	return runs
}

// checkWorkerRunMetrics checks that the registry counts each run's
// worker-side events, transitions and attempt once.
func checkWorkerRunMetrics(t *testing.T, h *enginetest.Harness, runs []recordedRun) {
	t.Helper()
	with := func(kv ...string) map[string]string {
		m := map[string]string{"namespace": "ecommerce"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	failures := 0
	for _, r := range runs {
		if r.outcome == "failure" {
			failures++
		}
	}
	n := float64(len(runs))
	for _, ev := range []lifecycle.EventName{lifecycle.EventStepExecutionRequested, lifecycle.EventStepBeforeHandle,
		lifecycle.EventStepHandle, lifecycle.EventStepResultSubmitted} {
		if got := h.Counter("tasker_events_total", with("event", string(ev))); got != n {
			t.Errorf("tasker_events_total{event=%q} = %v, want %v (one per run)", ev, got, n)
		}
	}
	if got := h.Counter("tasker_step_state_transitions_total", with("from_state", "enqueued", "to_state", "in_progress")); got != n {
		t.Errorf("claims counted %v times, want %v", got, n)
	}
	if got := h.Counter("tasker_step_state_transitions_total", with("from_state", "in_progress", "to_state", "enqueued_as_error_for_orchestration")); got != float64(failures) {
		t.Errorf("failed submissions counted %v times, want %d", got, failures)
	}
	handler := "ecommerce.process_payment_flaky"
	if got := h.Counter("tasker_step_attempts_total", with("handler_name", handler, "outcome", "failure")); got != float64(failures) {
		t.Errorf("tasker_step_attempts_total{outcome=failure} = %v, want %d", got, failures)
	}
	if got := h.Counter("tasker_step_attempts_total", with("handler_name", handler, "outcome", "success")); got != n-float64(failures) {
		t.Errorf("tasker_step_attempts_total{outcome=success} = %v, want %v", got, n-float64(failures))
	}
}

// workerRunSpans returns the step_execution spans of the runs, by step and
// attempt.
func workerRunSpans(spans tracetest.SpanStubs) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.Name == "step_execution" {
			a := attrMap(s.Attributes)
			k := a["step_uuid"] + "/" + a["attempt"]
			out[k] = append(out[k], s)
		}
	}
	return out
}

// TestOrchestratorPublishesTheRunsOfWorkersThatDoNot: a worker that
// publishes no worker-side events of its own (another language's, or a Go
// worker without an observer, as here) still has every run of every step in
// the task's trace and in the metrics: the orchestrator publishes them when
// it processes the result, timed by the claim and the submission the
// step's transitions recorded. A Go worker with the OTel observer says so
// in its result notices, and each event is then published once, by the
// worker.
func TestOrchestratorPublishesTheRunsOfWorkersThatDoNot(t *testing.T) {
	t.Parallel()
	t.Run("worker without observer", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		runs := runFlakyTasks(t, h, worker.Config{WorkerID: "plain-worker", Concurrency: 4}, 3)
		checkWorkerRunMetrics(t, h, runs)
		spans := h.Spans.GetSpans()
		byRun := workerRunSpans(spans)
		children := map[string][]tracetest.SpanStub{}
		for _, s := range spans {
			children[s.Parent.SpanID().String()] = append(children[s.Parent.SpanID().String()], s)
		}
		for _, r := range runs {
			k := fmt.Sprintf("%s/%d", r.step, r.attempt)
			got := byRun[k]
			if len(got) != 1 {
				t.Errorf("run %s: %d step_execution spans, want 1", k, len(got))
				continue
			}
			s := got[0]
			a := attrMap(s.Attributes)
			if a["reported_by"] != "orchestrator" || a["worker_id"] != r.worker || a["handler_name"] != "ecommerce.process_payment_flaky" ||
				a["outcome"] != r.outcome {
				t.Errorf("run %s: step_execution attributes %v; want reported_by=orchestrator, worker_id=%s, outcome=%s", k, a, r.worker, r.outcome)
			}
			if !s.StartTime.Equal(r.claimed) || s.EndTime.Before(r.submitted) {
				t.Errorf("run %s: step_execution %s..%s; the claim was at %s, the submission at %s", k,
					s.StartTime.Format(time.RFC3339Nano), s.EndTime.Format(time.RFC3339Nano),
					r.claimed.Format(time.RFC3339Nano), r.submitted.Format(time.RFC3339Nano))
			}
			// Each event on the span the catalog names, at the recorded time.
			want := map[string]struct {
				span string
				at   time.Time
			}{
				string(lifecycle.EventStepExecutionRequested): {"step_state_transition", r.claimed},
				string(lifecycle.EventStepBeforeHandle):       {"step_execution", r.claimed},
				string(lifecycle.EventStepHandle):             {"handler_execution", r.claimed},
				string(lifecycle.EventStepResultSubmitted):    {"result_submission", r.submitted},
			}
			found := map[string]int{}
			beforeTransition := 0
			for _, sp := range append([]tracetest.SpanStub{s}, children[s.SpanContext.SpanID().String()]...) {
				for _, ev := range sp.Events {
					if ev.Name == string(lifecycle.EventStepBeforeTransition) {
						beforeTransition++
						continue
					}
					if ev.Name == "exception" && sp.Name == "step_execution" && r.outcome == "failure" {
						found["exception"]++
						if msg := attrMap(ev.Attributes)["exception.message"]; msg != flakyError {
							t.Errorf("run %s: exception.message %q, want the handler's error %q", k, msg, flakyError)
						}
						continue
					}
					w, ok := want[ev.Name]
					if !ok {
						t.Errorf("run %s: unexpected event %s on %s", k, ev.Name, sp.Name)
						continue
					}
					found[ev.Name]++
					if sp.Name != w.span || !ev.Time.Equal(w.at) {
						t.Errorf("run %s: %s on %s at %s, want on %s at %s", k, ev.Name, sp.Name, ev.Time.Format(time.RFC3339Nano),
							w.span, w.at.Format(time.RFC3339Nano))
					}
					if ea := attrMap(ev.Attributes); ea["correlation_id"] == "" || ea["step_uuid"] != r.step.String() {
						t.Errorf("run %s: %s lacks correlation_id or step_uuid: %v", k, ev.Name, ea)
					}
				}
			}
			for ev := range want {
				if found[ev] != 1 {
					t.Errorf("run %s: %s published %d times, want 1", k, ev, found[ev])
				}
			}
			if r.outcome == "failure" {
				if found["exception"] != 1 || s.Status.Code != codes.Error || s.Status.Description != flakyError {
					t.Errorf("run %s failed: %d exception events, status %v %q; want one, and Error %q", k, found["exception"],
						s.Status.Code, s.Status.Description, flakyError)
				}
			} else if s.Status.Code == codes.Error {
				t.Errorf("run %s succeeded, yet its step_execution has status Error", k)
			}
			if beforeTransition != 2 {
				t.Errorf("run %s: step.before_transition published %d times, want 2 (claim, submission)", k, beforeTransition)
			}
		}
		// The orchestrator's own transition out of each failure says why.
		retries := 0
		for _, sp := range spans {
			a := attrMap(sp.Attributes)
			if sp.Name != "step_state_transition" || a["from_state"] != string(lifecycle.StepEnqueuedAsErrorForOrchestration) {
				continue
			}
			retries++
			if a["to_state"] != string(lifecycle.StepWaitingForRetry) || a["reason"] != "handler failed" || a["error"] != flakyError {
				t.Errorf("step_state_transition out of a failure has %v; want to waiting_for_retry, reason \"handler failed\", error %q", a, flakyError)
			}
		}
		if retries != 3 {
			t.Errorf("%d step_state_transition spans out of a failure, want 3 (one per task)", retries)
		}
		checkHierarchy(t, spans)
		checkNesting(t, spans)
	})
	t.Run("worker with the OTel observer", func(t *testing.T) {
		t.Parallel()
		h := enginetest.New(t, enginetest.Options{})
		obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
		if err != nil {
			t.Fatal(err)
		}
		runs := runFlakyTasks(t, h, worker.Config{Observer: obs, Concurrency: 4}, 3)
		// The worker's spans are exported when its attempts end, which can
		// be after the orchestrator has processed the result.
		enginetest.Eventually(t, 10*time.Second, "every run's step_execution span exported", func() bool {
			return len(workerRunSpans(h.Spans.GetSpans())) == len(runs)
		})
		checkWorkerRunMetrics(t, h, runs)
		for k, spans := range workerRunSpans(h.Spans.GetSpans()) {
			if len(spans) != 1 {
				t.Errorf("run %s: %d step_execution spans, want 1 (the worker's)", k, len(spans))
			}
			for _, s := range spans {
				if a := attrMap(s.Attributes); a["reported_by"] != "" {
					t.Errorf("run %s: a step_execution span reported by %s; the worker published its own", k, a["reported_by"])
				}
			}
		}
	})
}

// TestStepFailureSpansSayWhy: the orchestrator's step_state_transition
// span of a step failing for good carries the failure (reason, why_final,
// error) and has status Error with the handler's message, so a trace shows
// why a task failed without a look at the database.
func TestStepFailureSpansSayWhy(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(`
namespace: declines
name: charge
version: 1.0.0
steps:
  - name: charge
    handler: declines.charge
`)
	h.Worker(worker.Config{Namespaces: []string{"declines"}}, map[string]worker.Handler{
		"declines.charge": func(context.Context, *worker.Step) (any, error) {
			return nil, worker.Permanent(errors.New("card declined"))
		},
	})
	id := h.Submit(orchestration.TaskRequest{Namespace: "declines", Name: "charge"}).UUID
	h.WaitTask(id, 30*time.Second, lifecycle.TaskError)
	// The spans are published just after the commit that the state shows.
	intoError := func() []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range h.Spans.GetSpans() {
			a := attrMap(s.Attributes)
			if s.Name == "step_state_transition" && a["task_uuid"] == id.String() && a["to_state"] == string(lifecycle.StepError) {
				out = append(out, s)
			}
		}
		return out
	}
	enginetest.Eventually(t, 10*time.Second, "the step_state_transition span into error exported", func() bool {
		return len(intoError()) > 0
	})
	var found int
	for _, s := range intoError() {
		a := attrMap(s.Attributes)
		found++
		if a["reason"] != "handler failed" || a["why_final"] != "error is not retryable" || a["error"] != "card declined" {
			t.Errorf("step_state_transition into error has %v; want reason, why_final and error", a)
		}
		if s.Status.Code != codes.Error || s.Status.Description != "card declined" {
			t.Errorf("step_state_transition into error has status %v %q, want Error \"card declined\"", s.Status.Code, s.Status.Description)
		}
	}
	if found != 1 {
		t.Fatalf("%d step_state_transition spans into error, want 1", found)
	}
	// A step that completes has none of these.
	for _, s := range h.Spans.GetSpans() {
		a := attrMap(s.Attributes)
		if s.Name == "step_state_transition" && a["to_state"] == string(lifecycle.StepEnqueued) && (a["reason"] != "" || a["error"] != "") {
			t.Errorf("a dispatch carries failure attributes: %v", a)
		}
	}
}
