package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/lockedbuf"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// logLines collects a worker's JSON log lines.
type logLines struct{ lockedbuf.Buffer }

func (l *logLines) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// atLeast waits up to five seconds for n lines whose msg is msg and returns
// the lines with that msg: the worker logs an archive after it commits, so
// a test that saw the message archived may look before the line is there.
func (l *logLines) atLeast(t *testing.T, n int, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	_ = wait.Poll(time.Now().Add(5*time.Second), 10*time.Millisecond, func() (bool, error) {
		out = l.with(t, msg)
		return len(out) >= n, nil
	})
	return out
}

// with returns the lines whose msg is msg.
func (l *logLines) with(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if line["msg"] == msg {
			out = append(out, line)
		}
	}
	return out
}

// archived returns the bodies of the messages archived from queue q.
func archived(t *testing.T, h *enginetest.Harness, q string) []string {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), fmt.Sprintf(`SELECT message::text FROM pgmq.a_%s ORDER BY msg_id`, q))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		out = append(out, body)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func onlyStep(t *testing.T, h *enginetest.Harness, task uuid.UUID) uuid.UUID {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil || len(steps) != 1 {
		t.Fatalf("steps of task %s: %d, %v", task, len(steps), err)
	}
	return steps[0].UUID
}

// TestMalformedStepMessagesAreArchivedWithAReason: messages without a step,
// without an attempt, or with an attempt Postgres cannot hold are archived
// next to a good message, each with a log line saying what is wrong with
// it; the good one runs. (An attempt of 2^32+1 would have been sent to the
// claim as attempt 1.)
func TestMalformedStepMessagesAreArchivedWithAReason(t *testing.T) {
	t.Parallel()
	const ns = "malformed"
	h := setup(t, ns, 30, 1)
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one"})
	step := onlyStep(t, h, task.UUID)
	q, _ := queue.WorkerQueue(ns)
	want := map[string]string{ // body -> what the log line must say
		`{"handler":"t.only","attempt":1}`:                                              "no step_uuid",
		fmt.Sprintf(`{"step_uuid":"%s","handler":"t.only","attempt":0}`, step):          "no attempt",
		fmt.Sprintf(`{"step_uuid":"%s","handler":"t.only","attempt":2147483648}`, step): "attempt 2147483648 is out of range",
		fmt.Sprintf(`{"step_uuid":"%s","handler":"t.only","attempt":4294967297}`, step): "attempt 4294967297 is out of range",
	}
	ids := map[int64]string{}
	for body := range want {
		id, err := queue.Send(context.Background(), h.Pool, q, json.RawMessage(body), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = body
	}
	logs := &logLines{}
	ran := make(chan uuid.UUID, 10)
	h.Worker(worker.Config{Namespaces: []string{ns}, Logger: logs.logger()}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { ran <- s.StepUUID; return "ok", nil },
	})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	if got := <-ran; got != step || len(ran) != 0 {
		t.Errorf("ran step %s and %d more, want %s once", got, len(ran), step)
	}
	enginetest.Eventually(t, 10*time.Second, "the four messages archived", func() bool { return len(archived(t, h, q)) == 4 })

	lines := logs.atLeast(t, 4, "poison step message archived")
	if len(lines) != 4 {
		t.Fatalf("%d poison log lines, want 4: %v", len(lines), lines)
	}
	for _, l := range lines {
		id, _ := l["msg_id"].(float64)
		body, ok := ids[int64(id)]
		if !ok || l["queue"] != q {
			t.Errorf("log line %v does not name a message of %s", l, q)
			continue
		}
		if reason, _ := l["reason"].(string); !strings.Contains(reason, want[body]) {
			t.Errorf("message %s logged with reason %q, want %q", body, reason, want[body])
		}
		if strings.Contains(body, step.String()) && l["step_uuid"] != step.String() {
			t.Errorf("message %s logged without its step: %v", body, l)
		}
	}
}

// TestStepMessageForAnUnknownStepIsArchived: a message naming a step that
// does not exist (or no longer does: its task was deleted) is archived with
// a log line, not dropped, and the step claimed in the same batch runs.
func TestStepMessageForAnUnknownStepIsArchived(t *testing.T) {
	t.Parallel()
	const ns = "unknownstep"
	h := setup(t, ns, 30, 1)
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one"})
	q, _ := queue.WorkerQueue(ns)
	step := uuid.New()
	id, err := queue.Send(context.Background(), h.Pool, q,
		json.RawMessage(fmt.Sprintf(`{"step_uuid":"%s","handler":"t.only","attempt":1}`, step)), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	h.Worker(worker.Config{Namespaces: []string{ns}, Logger: logs.logger()}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { return "ok", nil },
	})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "the message archived", func() bool { return len(archived(t, h, q)) == 1 })
	lines := logs.atLeast(t, 1, "poison step message archived")
	if len(lines) != 1 || lines[0]["msg_id"] != float64(id) || lines[0]["step_uuid"] != step.String() ||
		lines[0]["reason"] != "step not found" {
		t.Errorf("poison log lines %v, want one for msg_id %d, step %s, reason \"step not found\"", lines, id, step)
	}
}

const twoHandlers = `
namespace: %s
name: two
version: 1.0.0
steps:
  - name: a
    handler: t.a
  - name: b
    handler: t.b
    retry: {max_attempts: 1, retryable: false, backoff: {base_ms: 50, cap_ms: 100}}
`

// TestStepMessageNamingAnotherHandlersStepUsesNoAttempt: a message that
// claims, in the name of a handler this worker has, a step whose handler it
// lacks does not run anything (a nil handler) nor use up the step's one
// attempt: the step is given back, the message archived, and a worker with
// the step's handler runs it. Step b is not retryable: released unrun, it
// is retried all the same (the reaper used to fail it for good).
func TestStepMessageNamingAnotherHandlersStepUsesNoAttempt(t *testing.T) {
	t.Parallel()
	const ns = "liar"
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(twoHandlers, ns))
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "two"})
	steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
	if err != nil || len(steps) != 2 {
		t.Fatalf("steps: %d, %v", len(steps), err)
	}
	b := steps[1]
	if b.Name != "b" {
		t.Fatalf("steps in order %s, %s", steps[0].Name, b.Name)
	}
	q, _ := queue.WorkerQueue(ns)
	if _, err := queue.Send(context.Background(), h.Pool, q,
		json.RawMessage(fmt.Sprintf(`{"step_uuid":"%s","handler":"t.a","attempt":1}`, b.UUID)), nil, 0); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	ranA := make(chan string, 10)
	h.Worker(worker.Config{Namespaces: []string{ns}, Logger: logs.logger()}, map[string]worker.Handler{
		"t.a": func(ctx context.Context, s *worker.Step) (any, error) { ranA <- s.Name; return "a", nil },
	})
	stepB := func() store.Step {
		steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
		if err != nil {
			t.Fatal(err)
		}
		return steps[1]
	}
	enginetest.Eventually(t, 10*time.Second, "the lying message archived, or step b failed", func() bool {
		return len(archived(t, h, q)) == 1 || stepB().State == lifecycle.StepError
	})
	if b := stepB(); b.State == lifecycle.StepError {
		t.Fatalf("step b failed its only attempt through the lying message: %s", b.LastError)
	}
	lines := logs.atLeast(t, 1, "poison step message archived")
	if len(lines) != 1 || lines[0]["step_uuid"] != b.UUID.String() || !strings.Contains(fmt.Sprint(lines[0]["reason"]), "t.b") {
		t.Errorf("poison log lines %v, want one for step b naming its handler t.b", lines)
	}

	h.Worker(worker.Config{Namespaces: []string{ns}}, map[string]worker.Handler{
		"t.b": func(ctx context.Context, s *worker.Step) (any, error) { return "b", nil },
	})
	if got := h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete, lifecycle.TaskError); got.State != lifecycle.TaskComplete {
		b := stepB()
		t.Fatalf("task is %s (step b %s, last error %s), want complete: step b lost its only attempt", got.State, b.State, b.LastError)
	}
	if got := <-ranA; got != "a" || len(ranA) != 0 {
		t.Errorf("t.a ran for step %s and %d more, want step a once", got, len(ranA))
	}
	if b = stepB(); b.MaxAttempts-b.Attempts != 0 || b.State != lifecycle.StepComplete {
		t.Errorf("step b is %s after %d of %d attempts, want complete with none left over", b.State, b.Attempts, b.MaxAttempts)
	}
}

// TestStepMessageInAnotherNamespacesQueueIsArchived: a message in one
// namespace's queue naming a step of another is archived from the queue it
// came from, and the step, given back unrun, is run by its own namespace's
// worker.
func TestStepMessageInAnotherNamespacesQueueIsArchived(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStep, "lie_a", 30, 1))
	h.Register(fmt.Sprintf(oneStep, "lie_b", 30, 1))
	task := h.Submit(orchestration.TaskRequest{Namespace: "lie_b", Name: "one"})
	step := onlyStep(t, h, task.UUID)
	qA, _ := queue.WorkerQueue("lie_a")
	if _, err := queue.Send(context.Background(), h.Pool, qA,
		json.RawMessage(fmt.Sprintf(`{"step_uuid":"%s","handler":"t.only","attempt":1}`, step)), nil, 0); err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 10)
	handlers := map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { ran <- s.Namespace; return "ok", nil },
	}
	h.Worker(worker.Config{Namespaces: []string{"lie_a"}}, handlers)
	enginetest.Eventually(t, 10*time.Second, "the message archived from lie_a's queue, or the step run", func() bool {
		return len(archived(t, h, qA)) == 1 || len(ran) > 0
	})
	if len(ran) != 0 {
		t.Fatalf("lie_a's worker ran a step of %s", <-ran)
	}
	h.Worker(worker.Config{Namespaces: []string{"lie_b"}}, handlers)
	if got := h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete, lifecycle.TaskError); got.State != lifecycle.TaskComplete {
		t.Fatalf("task is %s, want complete", got.State)
	}
	if got := <-ran; got != "lie_b" || len(ran) != 0 {
		t.Errorf("ran a step of %s and %d more, want lie_b's once", got, len(ran))
	}
}

// TestWorkerCountsPoisonMessages: the worker's poison is counted in
// tasker_poison_messages_total{queue,reason} through worker.NewOTelObserver,
// as README's Operations promises for every queue.
func TestWorkerCountsPoisonMessages(t *testing.T) {
	t.Parallel()
	const ns = "counted"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(fmt.Sprintf(twoHandlers, ns))
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "two"})
	steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
	if err != nil || len(steps) != 2 {
		t.Fatalf("steps: %d, %v", len(steps), err)
	}
	q, _ := queue.WorkerQueue(ns)
	for _, body := range []string{
		`{"hello":"world"}`, `[1]`, // malformed
		fmt.Sprintf(`{"step_uuid":"%s","handler":"t.a","attempt":1}`, uuid.New()),    // unknown_step
		fmt.Sprintf(`{"step_uuid":"%s","handler":"t.a","attempt":1}`, steps[1].UUID), // misrouted: b's handler is t.b
	} {
		if _, err := queue.Send(context.Background(), h.Pool, q, json.RawMessage(body), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	h.Worker(worker.Config{Namespaces: []string{ns}, Observer: obs}, map[string]worker.Handler{
		"t.a": func(ctx context.Context, s *worker.Step) (any, error) { return "a", nil },
	})
	enginetest.Eventually(t, 10*time.Second, "the four messages archived", func() bool { return len(archived(t, h, q)) == 4 })

	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tasker_poison_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == q {
				got[labels["reason"]] = m.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"malformed": 2, "unknown_step": 1, "misrouted": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tasker_poison_messages_total{queue=%q} by reason = %v, want %v", q, got, want)
	}
}
