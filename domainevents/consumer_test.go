package domainevents_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

// newHarness starts an engine that publishes domain events.
func newHarness(t *testing.T, opts enginetest.Options) *enginetest.Harness {
	t.Helper()
	url := testdb.URL(t)
	st := store.New(testdb.Pool(t, url))
	opts.DatabaseURL = url
	opts.EngineOptions = append(opts.EngineOptions, orchestration.WithBeforeCommit(ide.Hook(st, ide.StoreTemplates(st))))
	return enginetest.New(t, opts)
}

func template(ns string) string {
	return fmt.Sprintf(`
namespace: %s
name: job
version: 1.0.0
steps:
  - name: work
    handler: %s.work
`, ns, ns)
}

// createAndCancel makes a task publish TaskInitiated then TaskCancelled
// (no worker runs its step).
func createAndCancel(t *testing.T, h *enginetest.Harness, ns string) uuid.UUID {
	t.Helper()
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "job"})
	if _, err := h.Engine.CancelTask(context.Background(), task.UUID, "test"); err != nil {
		t.Fatal(err)
	}
	return task.UUID
}

// recorder records what a handler saw.
type recorder struct {
	mu  sync.Mutex
	evs []domainevents.Event
	dls []domainevents.DeadLetter
}

func (r *recorder) add(ev domainevents.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func (r *recorder) events() []domainevents.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]domainevents.Event(nil), r.evs...)
}

func (r *recorder) deadLetter(_ context.Context, dl domainevents.DeadLetter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dls = append(r.dls, dl)
}

func (r *recorder) deadLetters() []domainevents.DeadLetter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]domainevents.DeadLetter(nil), r.dls...)
}

func startConsumer(t *testing.T, h *enginetest.Harness, cfg domainevents.Config) *domainevents.Consumer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = h.Logger
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	c, err := domainevents.NewConsumer(h.Pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func queueLen(t *testing.T, h *enginetest.Harness, ns string) int64 {
	t.Helper()
	m, err := queue.QueueMetrics(context.Background(), h.Pool, "domain_events_"+ns)
	if err != nil {
		t.Fatal(err)
	}
	return m.Length
}

// A handler that fails sees the event again after the visibility timeout;
// after MaxAttempts deliveries the event is archived and reported, and the
// task's later event, held back meanwhile, is handled after it.
func TestConsumerRedeliversThenDeadLetters(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(template("cons"))
	task := createAndCancel(t, h, "cons")

	var rec recorder
	startConsumer(t, h, domainevents.Config{
		Namespaces: []string{"cons"}, VisibilityTimeout: time.Second, MaxAttempts: 3, BatchSize: 10,
		Handler: func(_ context.Context, ev domainevents.Event) error {
			rec.add(ev)
			if ev.EventType == domainevents.TaskInitiated {
				return errors.New("downstream is down")
			}
			return nil
		},
		OnDeadLetter: rec.deadLetter,
	})
	enginetest.Eventually(t, 20*time.Second, "TaskCancelled handled", func() bool {
		evs := rec.events()
		return len(evs) > 0 && evs[len(evs)-1].EventType == domainevents.TaskCancelled
	})

	evs := rec.events()
	if len(evs) != 4 {
		t.Fatalf("handled %d events, want TaskInitiated ×3 then TaskCancelled: %+v", len(evs), evs)
	}
	for i := 0; i < 3; i++ {
		if evs[i].EventType != domainevents.TaskInitiated || evs[i].EventID != evs[0].EventID || evs[i].TaskUUID != task {
			t.Fatalf("delivery %d: %s %s", i, evs[i].EventType, evs[i].EventID)
		}
		if i > 0 && evs[i].ReadCount <= evs[i-1].ReadCount {
			t.Fatalf("read counts %d then %d", evs[i-1].ReadCount, evs[i].ReadCount)
		}
	}
	dls := rec.deadLetters()
	if len(dls) != 1 || dls[0].MsgID != evs[0].MsgID || dls[0].Event == nil || dls[0].Event.EventType != domainevents.TaskInitiated ||
		dls[0].Err == nil || dls[0].Err.Error() != "downstream is down" || dls[0].Namespace != "cons" || dls[0].Reason == "" {
		t.Fatalf("dead letters %+v", dls)
	}
	t.Logf("dead letter reason: %s", dls[0].Reason)
	archived, err := queue.BrowseIDs(context.Background(), h.Pool, "domain_events_cons", []int64{evs[0].MsgID})
	if err != nil || len(archived) != 1 || !archived[0].Archived {
		t.Fatalf("the dead letter is not in the archive: %+v %v", archived, err)
	}
	enginetest.Eventually(t, 5*time.Second, "queue empty", func() bool { return queueLen(t, h, "cons") == 0 })
}

// Two namespaces, two consumers with different filters: each sees only its
// namespace's events of its types, and the events filtered out are
// acknowledged.
func TestConsumersOfTwoNamespaces(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{})
	h.Register(template("alpha"))
	h.Register(template("beta"))
	ok := func(_ context.Context, s *worker.Step) (any, error) { return map[string]any{"ns": s.Namespace}, nil }
	h.Worker(worker.Config{Namespaces: []string{"alpha", "beta"}, PollInterval: 100 * time.Millisecond},
		map[string]worker.Handler{"alpha.work": ok, "beta.work": ok})

	var a, b recorder
	startConsumer(t, h, domainevents.Config{Namespaces: []string{"alpha"}, EventTypes: []string{domainevents.TaskCompleted},
		Handler: func(_ context.Context, ev domainevents.Event) error { a.add(ev); return nil }})
	startConsumer(t, h, domainevents.Config{Namespaces: []string{"beta"}, EventTypes: []string{domainevents.TaskInitiated, domainevents.StepCompleted},
		Handler: func(_ context.Context, ev domainevents.Event) error { b.add(ev); return nil }})

	ta := h.Submit(orchestration.TaskRequest{Namespace: "alpha", Name: "job"})
	tb := h.Submit(orchestration.TaskRequest{Namespace: "beta", Name: "job"})
	h.WaitTask(ta.UUID, 20*time.Second, lifecycle.TaskComplete)
	h.WaitTask(tb.UUID, 20*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "both queues drained", func() bool {
		return queueLen(t, h, "alpha") == 0 && queueLen(t, h, "beta") == 0
	})

	ae, be := a.events(), b.events()
	if len(ae) != 1 || ae[0].EventType != domainevents.TaskCompleted || ae[0].TaskUUID != ta.UUID || ae[0].Namespace != "alpha" {
		t.Fatalf("alpha consumer saw %+v", ae)
	}
	if len(be) != 2 || be[0].EventType != domainevents.TaskInitiated || be[1].EventType != domainevents.StepCompleted ||
		be[0].TaskUUID != tb.UUID || be[1].TaskUUID != tb.UUID || be[1].Namespace != "beta" {
		t.Fatalf("beta consumer saw %+v", be)
	}
	if be[0].Headers["traceparent"] != tb.TraceParent {
		t.Fatalf("traceparent header %q, task %q", be[0].Headers["traceparent"], tb.TraceParent)
	}
}

// A consumer that dies while handling an event loses nothing: another one
// receives the event once its visibility timeout has passed.
func TestKilledConsumerLosesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(template("kill"))
	task := h.Submit(orchestration.TaskRequest{Namespace: "kill", Name: "job"})

	started := make(chan domainevents.Event, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	first := startConsumer(t, h, domainevents.Config{
		Namespaces: []string{"kill"}, VisibilityTimeout: 2 * time.Second, ShutdownTimeout: 100 * time.Millisecond,
		// The hung handler returns after the test, when nothing may log to t.
		Logger: slog.New(slog.DiscardHandler),
		Handler: func(_ context.Context, ev domainevents.Event) error {
			started <- ev
			<-release // hangs, deaf to its context, like a process about to be killed
			return nil
		},
	})
	var ev domainevents.Event
	select {
	case ev = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first consumer never got the event")
	}
	stopped := time.Now()
	first.Stop() // gives up on the hung handler: the process is gone
	if d := time.Since(stopped); d > 5*time.Second {
		t.Fatalf("Stop took %s with a hung handler", d)
	}

	var rec recorder
	startConsumer(t, h, domainevents.Config{Namespaces: []string{"kill"}, VisibilityTimeout: 2 * time.Second,
		Handler: func(_ context.Context, ev domainevents.Event) error { rec.add(ev); return nil }})
	enginetest.Eventually(t, 15*time.Second, "the second consumer receives the event", func() bool { return len(rec.events()) == 1 })
	got := rec.events()[0]
	if got.EventID != ev.EventID || got.TaskUUID != task.UUID || got.ReadCount != 2 {
		t.Fatalf("second consumer got %+v, want event %s on its second read", got, ev.EventID)
	}
	enginetest.Eventually(t, 5*time.Second, "queue empty", func() bool { return queueLen(t, h, "kill") == 0 })
}

// Stop lets a running handler finish and acknowledges its event.
func TestConsumerStopsGracefully(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(template("grace"))
	h.Submit(orchestration.TaskRequest{Namespace: "grace", Name: "job"})
	started := make(chan struct{}, 1)
	var finished sync.WaitGroup
	finished.Add(1)
	c := startConsumer(t, h, domainevents.Config{Namespaces: []string{"grace"}, ShutdownTimeout: 5 * time.Second,
		Handler: func(ctx context.Context, _ domainevents.Event) error {
			started <- struct{}{}
			defer finished.Done()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
				return nil
			}
		}})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never started")
	}
	c.Stop()
	finished.Wait()
	if n := queueLen(t, h, "grace"); n != 0 {
		t.Fatalf("%d events left after a graceful stop; the handled one should be acknowledged", n)
	}
}

// With several events handled at once, each task's events are still
// handled one at a time, in order.
func TestConsumerKeepsTaskOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(template("order"))
	var tasks []uuid.UUID
	for i := 0; i < 8; i++ {
		tasks = append(tasks, createAndCancel(t, h, "order"))
	}
	var mu sync.Mutex
	seen := map[uuid.UUID][]string{}
	running := map[uuid.UUID]bool{}
	var overlap bool
	startConsumer(t, h, domainevents.Config{Namespaces: []string{"order"}, Concurrency: 4, BatchSize: 16,
		Handler: func(_ context.Context, ev domainevents.Event) error {
			mu.Lock()
			if running[ev.TaskUUID] {
				overlap = true
			}
			running[ev.TaskUUID] = true
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // simulated work, so that handlers overlap
			mu.Lock()
			running[ev.TaskUUID] = false
			seen[ev.TaskUUID] = append(seen[ev.TaskUUID], ev.EventType)
			mu.Unlock()
			return nil
		}})
	enginetest.Eventually(t, 10*time.Second, "all handled", func() bool { return queueLen(t, h, "order") == 0 })
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Fatal("two events of one task were handled at once")
	}
	for _, id := range tasks {
		if got := seen[id]; len(got) != 2 || got[0] != domainevents.TaskInitiated || got[1] != domainevents.TaskCancelled {
			t.Fatalf("task %s: handled %v", id, got)
		}
	}
}

func TestNewConsumerChecksConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	handler := func(context.Context, domainevents.Event) error { return nil }
	for name, cfg := range map[string]domainevents.Config{
		"no namespaces": {Handler: handler},
		"bad namespace": {Namespaces: []string{"Bad"}, Handler: handler},
		"no handler":    {Namespaces: []string{"ok"}},
		"short vt":      {Namespaces: []string{"ok"}, Handler: handler, VisibilityTimeout: time.Millisecond},
	} {
		if _, err := domainevents.NewConsumer(h.Pool, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := domainevents.NewConsumer(h.Pool, domainevents.Config{Namespaces: []string{"unknown"}, Handler: handler})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err == nil {
		c.Stop()
		t.Fatal("started on a namespace without a queue")
	}
}
