package telemetry_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/traceparent"
	"github.com/tasker/tasker/worker"
)

// scenario runs one lifecycle and returns the task uuids it involved.
type scenario struct {
	name string
	run  func(t *testing.T, h *enginetest.Harness) []uuid.UUID
}

func submitDemo(t *testing.T, h *enginetest.Harness, ctxJSON string) uuid.UUID {
	t.Helper()
	return h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "order_fulfillment", Context: json.RawMessage(ctxJSON)}).UUID
}

const flakyTemplate = `
namespace: ecommerce
name: single_flaky
version: 1.0.0
steps:
  - name: charge
    handler: ecommerce.process_payment_flaky
    retry: {max_attempts: 3, backoff: {base_ms: 100, cap_ms: 200}}
`

func stepUUID(t *testing.T, h *enginetest.Harness, task uuid.UUID, name string) uuid.UUID {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Name == name {
			return s.UUID
		}
	}
	t.Fatalf("no step %s", name)
	return uuid.Nil
}

var scenarios = []scenario{
	{"happy path", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		id := submitDemo(t, h, demo.SampleContext(1))
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
		return []uuid.UUID{id}
	}},
	{"retry then success", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		id := h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "single_flaky"}).UUID
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
		return []uuid.UUID{id}
	}},
	{"permanent failure", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		id := submitDemo(t, h, `{"customer_id":"blocked-7","items":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`)
		h.WaitTask(id, 30*time.Second, lifecycle.TaskError)
		return []uuid.UUID{id}
	}},
	{"cancellation", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		// Payment keeps failing with a long backoff, so the task is still
		// running when it is cancelled. The cancel waits for the parallel
		// update_inventory to have submitted its result: a step still
		// running at the cancel would end its span after the task's root
		// span, which checkNesting rejects.
		id := submitDemo(t, h, `{"customer_id":"c-9","items":[{"sku":"A","quantity":1,"unit_price_cents":5}],"simulate":{"payment_failures":5}}`)
		enginetest.Eventually(t, 30*time.Second, "payment failed once, inventory done", func() bool {
			steps, _ := h.Store.TaskSteps(context.Background(), id)
			paymentWaits, inventoryDone := false, false
			for _, s := range steps {
				switch s.Name {
				case "process_payment":
					paymentWaits = s.State == lifecycle.StepWaitingForRetry
				case "update_inventory":
					inventoryDone = s.State == lifecycle.StepEnqueuedForOrchestration || s.State == lifecycle.StepComplete
				}
			}
			return paymentWaits && inventoryDone
		})
		if _, err := h.Engine.CancelTask(context.Background(), id, "test"); err != nil {
			t.Fatal(err)
		}
		return []uuid.UUID{id}
	}},
	{"manual resolution of a step", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		id := submitDemo(t, h, `{"customer_id":"blocked-8","items":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`)
		h.WaitTask(id, 30*time.Second, lifecycle.TaskError)
		_, _, err := h.Engine.StepOperate(context.Background(), stepUUID(t, h, id, "process_payment"),
			orchestration.StepActionResolve, json.RawMessage(`{"payment_id":"manual-1","amount_cents":5}`), "paid by phone")
		if err != nil {
			t.Fatal(err)
		}
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
		return []uuid.UUID{id}
	}},
	{"operator retry of a failed task, and resolution of a task", func(t *testing.T, h *enginetest.Harness) []uuid.UUID {
		id := submitDemo(t, h, `{"customer_id":"blocked-9","items":[{"sku":"A","quantity":1,"unit_price_cents":5}]}`)
		h.WaitTask(id, 30*time.Second, lifecycle.TaskError)
		if _, err := h.Engine.RetryTask(context.Background(), id, "try again"); err != nil {
			t.Fatal(err)
		}
		h.WaitTask(id, 30*time.Second, lifecycle.TaskError) // still blocked: fails again
		if _, err := h.Engine.ResolveTask(context.Background(), id, "refunded by hand"); err != nil {
			t.Fatal(err)
		}
		return []uuid.UUID{id}
	}},
}

func flakyHandler() worker.Handler {
	return func(ctx context.Context, s *worker.Step) (any, error) {
		if s.Attempt < 2 {
			return nil, worker.Retryable(context.DeadlineExceeded)
		}
		return map[string]int{"attempt": s.Attempt}, nil
	}
}

// afterPaymentProcessed runs h, in a task whose payment will succeed (the
// happy path), once the orchestrator has processed the result of the task's
// process_payment step (or after 5 s), so that the task waits for this
// step, the other branch of the diamond, in waiting_for_dependencies:
// task.awaiting_dependencies and task.dependencies_satisfied then happen on
// every run, not only when the two results happen to arrive in different
// batches. (Where payment fails, the task ends without this step, whose
// span would then outlast the task's root.)
func afterPaymentProcessed(hs *enginetest.Harness, h worker.Handler) worker.Handler {
	return func(ctx context.Context, s *worker.Step) (any, error) {
		var order struct {
			CustomerID string          `json:"customer_id"`
			Simulate   json.RawMessage `json:"simulate"`
		}
		if err := s.DecodeContext(&order); err != nil || strings.HasPrefix(order.CustomerID, "blocked") || order.Simulate != nil {
			return h(ctx, s)
		}
		if err := waitForStepPast(ctx, hs, s.TaskUUID, "process_payment", "pending", "enqueued", "in_progress",
			"enqueued_for_orchestration", "enqueued_as_error_for_orchestration"); err != nil {
			return nil, err
		}
		return h(ctx, s)
	}
}

// blockedAfterInventorySubmitted runs h, in a task whose payment is
// declined (a "blocked" customer), once the task's update_inventory step
// has submitted its result (or after 5 s). The decline fails the task at
// once (fail_fast); an update_inventory still running then would end its
// span after the task's root span, which checkNesting rejects — a race the
// loaded test machine lost now and then.
func blockedAfterInventorySubmitted(hs *enginetest.Harness, h worker.Handler) worker.Handler {
	return func(ctx context.Context, s *worker.Step) (any, error) {
		var order struct {
			CustomerID string `json:"customer_id"`
		}
		if err := s.DecodeContext(&order); err != nil || !strings.HasPrefix(order.CustomerID, "blocked") {
			return h(ctx, s)
		}
		if err := waitForStepPast(ctx, hs, s.TaskUUID, "update_inventory", "pending", "enqueued", "in_progress"); err != nil {
			return nil, err
		}
		return h(ctx, s)
	}
}

// waitForStepPast waits (5 s at most) until the task's step name is in none
// of the states.
func waitForStepPast(ctx context.Context, hs *enginetest.Harness, task uuid.UUID, name string, states ...string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var state string
		err := hs.Pool.QueryRow(ctx, `SELECT state FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`,
			task, name).Scan(&state)
		if err != nil || !slices.Contains(states, state) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// TestEveryCatalogEventIsPublishedAtItsSpan runs the lifecycle scenarios
// against a real orchestrator and worker with an in-memory span recorder and
// checks that between them every one of the 35 catalog events appears, on
// the span the catalog names, with correlation_id; that every task has
// exactly one trace with one root; and that the Prometheus registry shows
// the transition counters, durations and tasker_events_total.
func TestEveryCatalogEventIsPublishedAtItsSpan(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.RegisterFile(filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml"))
	h.Register(flakyTemplate)
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	handlers := demo.Handlers(0)
	handlers["ecommerce.process_payment_flaky"] = flakyHandler()
	handlers["ecommerce.update_inventory"] = afterPaymentProcessed(h, handlers["ecommerce.update_inventory"])
	handlers["ecommerce.process_payment"] = blockedAfterInventorySubmitted(h, handlers["ecommerce.process_payment"])
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, Observer: obs, Concurrency: 4}, handlers)

	var tasks []uuid.UUID
	for _, sc := range scenarios {
		tasks = append(tasks, sc.run(t, h)...)
	}
	// Spans of a step are exported when its worker finishes the attempt;
	// wait until the cancelled task's abandoned attempts are done too.
	enginetest.Eventually(t, 20*time.Second, "all root spans exported", func() bool {
		roots := 0
		for _, s := range h.Spans.GetSpans() {
			if s.Name == "task_orchestration" {
				roots++
			}
		}
		return roots >= len(tasks)
	})
	spans := h.Spans.GetSpans()

	seen := map[lifecycle.EventName]map[string]bool{} // event -> span names it appeared on
	// A step's uuid names one step: the same name wherever it appears.
	stepNames := map[string]string{} // task_uuid/step_uuid -> step_name
	sameStep := func(where string, a map[string]string) {
		if a["step_uuid"] == "" {
			return
		}
		k := a["task_uuid"] + "/" + a["step_uuid"]
		if name, ok := stepNames[k]; !ok {
			stepNames[k] = a["step_name"]
		} else if name != a["step_name"] {
			t.Errorf("%s: step %s is %q here and %q elsewhere", where, a["step_uuid"], a["step_name"], name)
		}
	}
	for _, s := range spans {
		attrs := attrMap(s.Attributes)
		if attrs["correlation_id"] == "" {
			t.Errorf("span %s has no correlation_id", s.Name)
		}
		if s.Name == "step_state_transition" && (attrs["step_uuid"] == "" || attrs["step_name"] == "") {
			t.Errorf("a step_state_transition span lacks step_uuid or step_name: %v", attrs)
		}
		sameStep("span "+s.Name, attrs)
		for _, ev := range s.Events {
			ea := attrMap(ev.Attributes)
			if ea["correlation_id"] == "" || ea["correlation_id"] != attrs["correlation_id"] {
				t.Errorf("event %s on span %s has correlation_id %q, span has %q", ev.Name, s.Name, ea["correlation_id"], attrs["correlation_id"])
			}
			if ea["task_uuid"] == "" || ea["namespace"] == "" {
				t.Errorf("event %s lacks task_uuid or namespace", ev.Name)
			}
			if attrs["step_uuid"] != "" && ea["step_uuid"] != attrs["step_uuid"] {
				t.Errorf("event %s on span %s of step %s has step_uuid %q", ev.Name, s.Name, attrs["step_uuid"], ea["step_uuid"])
			}
			sameStep("event "+ev.Name, ea)
			name := lifecycle.EventName(ev.Name)
			if seen[name] == nil {
				seen[name] = map[string]bool{}
			}
			seen[name][s.Name] = true
		}
	}
	for _, info := range lifecycle.Catalog() {
		where := seen[info.Name]
		if len(where) == 0 {
			t.Errorf("catalog event %s was never published", info.Name)
			continue
		}
		extra := len(where) - 1
		if (info.Span == "task_orchestration" || info.Span == "task_state_transition") && where["result_evaluation"] {
			// A command that moved no task state (a late result for a task
			// that already ended; the second end of a task an operator
			// revived, whose root was emitted at its first end) has no
			// transition or root span to carry its task-level events: they
			// go on a result_evaluation span.
			extra--
		}
		if !where[info.Span] || extra != 0 {
			t.Errorf("event %s appeared on spans %v, the catalog says %s", info.Name, keys(where), info.Span)
		}
	}

	// One trace per task, with exactly one root carrying the stored ids.
	for _, id := range tasks {
		task, err := h.Store.TaskGet(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		sc, ok := traceparent.SpanContext(task.TraceParent)
		if !ok {
			t.Fatalf("task %s has no traceparent", id)
		}
		roots := 0
		n := 0
		for _, s := range spans {
			if attrMap(s.Attributes)["task_uuid"] != id.String() {
				continue
			}
			n++
			if s.SpanContext.TraceID() != sc.TraceID() {
				t.Errorf("task %s: span %s is in trace %s, the task's trace is %s", id, s.Name, s.SpanContext.TraceID(), sc.TraceID())
			}
			if s.Name == "task_orchestration" {
				roots++
				if s.SpanContext.SpanID() != sc.SpanID() || s.Parent.IsValid() {
					t.Errorf("task %s: root span has id %s parent %v; want the stored id %s and no parent", id, s.SpanContext.SpanID(), s.Parent.SpanID(), sc.SpanID())
				}
			} else if !s.Parent.IsValid() {
				t.Errorf("task %s: span %s has no parent", id, s.Name)
			}
		}
		if n == 0 {
			t.Errorf("task %s has no spans", id)
		}
		if task.State.Terminal() && roots != 1 {
			t.Errorf("task %s (%s): %d root spans, want 1", id, task.State, roots)
		}
	}
	checkHierarchy(t, spans)
	checkNesting(t, spans)
	checkMetrics(t, h)
}

// checkHierarchy checks the parent of each span kind (DESIGN §5).
func checkHierarchy(t *testing.T, spans tracetest.SpanStubs) {
	t.Helper()
	byID := map[string]string{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID().String()] = s.Name
	}
	allowed := map[string][]string{
		"task_state_transition": {"task_orchestration"},
		"step_execution":        {"task_orchestration"},
		"step_discovery":        {"task_state_transition", "task_orchestration"},
		"step_enqueuing":        {"task_state_transition", "task_orchestration"},
		"result_evaluation":     {"task_state_transition", "task_orchestration"},
		"step_state_transition": {"step_execution", "step_enqueuing", "result_evaluation", "step_discovery", "task_state_transition", "task_orchestration"},
		"handler_execution":     {"step_execution"},
		"result_submission":     {"step_execution"},
	}
	for _, s := range spans {
		if s.Name == "task_orchestration" {
			continue
		}
		parent := byID[s.Parent.SpanID().String()]
		if parent == "" {
			// The parent is the task root, emitted with the stored ids.
			parent = "task_orchestration"
		}
		ok := false
		for _, p := range allowed[s.Name] {
			ok = ok || p == parent
		}
		if !ok {
			t.Errorf("span %s has parent %s; allowed: %v", s.Name, parent, allowed[s.Name])
		}
	}
}

func checkMetrics(t *testing.T, h *enginetest.Harness) {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	get := func(name string) *dto.MetricFamily {
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf
			}
		}
		t.Errorf("metric %s not exposed", name)
		return &dto.MetricFamily{}
	}
	has := func(mf *dto.MetricFamily, want map[string]string) bool {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			match := true
			for k, v := range want {
				match = match && labels[k] == v
			}
			if match {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		metric string
		labels map[string]string
	}{
		{"tasker_task_state_transitions_total", map[string]string{"from_state": "evaluating_results", "to_state": "complete", "namespace": "ecommerce"}},
		{"tasker_task_state_transitions_total", map[string]string{"from_state": "blocked_by_failures", "to_state": "error", "namespace": "ecommerce"}},
		{"tasker_task_state_duration_seconds", map[string]string{"state": "steps_in_process", "namespace": "ecommerce"}},
		{"tasker_task_completion_duration_seconds", map[string]string{"namespace": "ecommerce", "outcome": "complete"}},
		{"tasker_task_completion_duration_seconds", map[string]string{"namespace": "ecommerce", "outcome": "error"}},
		{"tasker_step_state_transitions_total", map[string]string{"from_state": "enqueued", "to_state": "in_progress", "namespace": "ecommerce"}},
		{"tasker_step_state_transitions_total", map[string]string{"from_state": "enqueued_for_orchestration", "to_state": "complete", "namespace": "ecommerce"}},
		{"tasker_step_execution_duration_seconds", map[string]string{"handler_name": "ecommerce.validate_cart", "namespace": "ecommerce", "outcome": "success"}},
		{"tasker_step_attempts_total", map[string]string{"handler_name": "ecommerce.process_payment", "namespace": "ecommerce", "outcome": "failure"}},
		{"tasker_events_total", map[string]string{"event": "workflow.task_completed", "namespace": "ecommerce"}},
		{"tasker_events_total", map[string]string{"event": "step.handle", "namespace": "ecommerce"}},
	} {
		if !has(get(c.metric), c.labels) {
			t.Errorf("%s has no series with %v", c.metric, c.labels)
		}
	}
	events := get("tasker_events_total")
	for _, info := range lifecycle.Catalog() {
		if !has(events, map[string]string{"event": string(info.Name)}) {
			t.Errorf("tasker_events_total has no series for %s", info.Name)
		}
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if _, err := uuid.Parse(l.GetValue()); err == nil {
					t.Errorf("metric %s has a uuid label value %s=%s: labels must be bounded", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
