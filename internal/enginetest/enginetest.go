// Package enginetest runs a real orchestrator (engine and background loops)
// and real Go workers in-process against a fresh migrated database, for
// integration tests of the whole engine. Nothing is mocked.
package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// Options tunes a harness.
type Options struct {
	// NoOrchestrator skips the background loops (tests drive the engine).
	NoOrchestrator bool
	// Service overrides the loops' configuration.
	Service orchestration.ServiceConfig
	// EngineOptions are passed to the engine.
	EngineOptions []orchestration.EngineOption
	// DatabaseURL reuses an existing test database instead of a new one.
	DatabaseURL string
	// TraceSampleRatio is the share of tasks traced (nil: all).
	TraceSampleRatio *float64
}

// Harness is a running in-process orchestrator.
type Harness struct {
	T        testing.TB
	URL      string
	Pool     *pgxpool.Pool
	Store    *store.Store
	Engine   *orchestration.Engine
	Orch     *orchestration.Orchestrator
	Provider *telemetry.Provider
	Spans    *tracetest.InMemoryExporter
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Logger returns a test logger: quiet unless TASKER_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelError + 4
	if v := os.Getenv("TASKER_TEST_LOG"); v != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// New starts a harness with in-memory span recording and a private
// Prometheus registry.
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	h := &Harness{T: t, Logger: Logger(t)}
	h.URL = opts.DatabaseURL
	if h.URL == "" {
		h.URL = testdb.URL(t)
	}
	h.Pool = testdb.Pool(t, h.URL)
	// The engine's own pool is configured as the daemon's is: queue
	// wake-ups after commit.
	h.Store = store.New(testdb.Pool(t, h.URL, store.WithNotifyAfterCommit, store.WithBinaryUUIDs, store.WithoutJIT))
	h.Spans = tracetest.NewInMemoryExporter()
	h.Registry = prometheus.NewRegistry()
	ctx := context.Background()
	var err error
	h.Provider, err = telemetry.NewProvider(ctx, telemetry.Options{
		ServiceName: "tasker-test", SpanExporter: h.Spans, SyncExport: true, TraceSampleRatio: opts.TraceSampleRatio,
		MetricsEnabled: true, Registry: h.Registry, Logger: h.Logger,
	})
	if err != nil {
		t.Fatalf("telemetry: %v", err)
	}
	t.Cleanup(func() { _ = h.Provider.Shutdown(context.Background()) })
	if err := h.Provider.ObserveStore(h.Store); err != nil {
		t.Fatalf("observe store: %v", err)
	}
	h.Engine = orchestration.NewEngine(h.Store, h.Provider.Publisher(), h.Logger, opts.EngineOptions...)
	if !opts.NoOrchestrator {
		svc := opts.Service
		if svc.PollInterval == 0 {
			svc.PollInterval = 200 * time.Millisecond
		}
		if svc.TimerInterval == 0 {
			svc.TimerInterval = 100 * time.Millisecond
		}
		if svc.ReapInterval == 0 {
			svc.ReapInterval = 200 * time.Millisecond
		}
		if svc.Pruned == nil {
			svc.Pruned = h.Provider.RetentionDeleted
		}
		lis := queue.NewListener(h.Pool, h.Logger)
		// As the daemon does: template lookups cached until a change is
		// announced.
		h.Store.CacheLatestTemplates(lis.SubscribeChannel(store.TemplatesChannel))
		h.Orch = orchestration.NewOrchestrator(h.Engine, svc, lis, h.Provider, h.Logger)
		if err := lis.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.Orch.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Orch.Stop(); lis.Stop() })
	}
	return h
}

// Register parses and registers a YAML template.
func (h *Harness) Register(yamlDoc string) *template.Template {
	h.T.Helper()
	tpl, err := template.Parse([]byte(yamlDoc))
	if err != nil {
		h.T.Fatalf("template: %v", err)
	}
	if _, _, err := h.Store.TemplateRegister(context.Background(), tpl); err != nil {
		h.T.Fatalf("register template: %v", err)
	}
	return tpl
}

// RegisterFile registers a template file.
func (h *Harness) RegisterFile(path string) *template.Template {
	h.T.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		h.T.Fatal(err)
	}
	return h.Register(string(b))
}

// Worker starts a Go SDK worker with the given handlers, stopped at cleanup.
func (h *Harness) Worker(cfg worker.Config, handlers map[string]worker.Handler) *worker.Worker {
	h.T.Helper()
	if cfg.Logger == nil {
		cfg.Logger = h.Logger
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	w, err := worker.New(h.Pool, cfg)
	if err != nil {
		h.T.Fatal(err)
	}
	for name, fn := range handlers {
		w.Handle(name, fn)
	}
	if err := w.Start(context.Background()); err != nil {
		h.T.Fatal(err)
	}
	h.T.Cleanup(w.Stop)
	return w
}

// Submit creates a task.
func (h *Harness) Submit(req orchestration.TaskRequest) store.Task {
	h.T.Helper()
	t, _, err := h.Engine.CreateTask(context.Background(), req)
	if err != nil {
		h.T.Fatalf("create task: %v", err)
	}
	return t
}

// WaitTask polls (bounded) until the task is in one of states, and fails
// the test with the task's step states if it is not within timeout.
func (h *Harness) WaitTask(id uuid.UUID, timeout time.Duration, states ...lifecycle.TaskState) store.Task {
	h.T.Helper()
	var t store.Task
	err := wait.Poll(time.Now().Add(timeout), 20*time.Millisecond, func() (bool, error) {
		var err error
		if t, err = h.Store.TaskGet(context.Background(), id); err != nil {
			return false, fmt.Errorf("get task: %w", err)
		}
		return slices.Contains(states, t.State), nil
	})
	if err == nil {
		return t
	}
	if !errors.Is(err, wait.ErrTimeout) {
		h.T.Fatal(err)
	}
	steps, _ := h.Store.TaskSteps(context.Background(), id)
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(" " + s.Name + "=" + string(s.State))
	}
	h.T.Fatalf("task %s is %s after %s, want one of %v; steps:%s", id, t.State, timeout, states, b.String())
	return t
}

// QueueStepDuplicates leaves step, of a task of namespace ns whose only
// message is queued, enqueued for attempt real (each earlier attempt claimed
// and failed, retryably, by hand; the orchestrator must be running and the
// step must have max_attempts of at least real), and queues, next to its
// real message, one more message naming the step for each attempt in
// extra: a copy of that attempt's real message for an earlier attempt, the
// real message with its attempt changed (a forged or corrupt one)
// otherwise. It returns the queue.
func (h *Harness) QueueStepDuplicates(ns string, step uuid.UUID, real int, extra []int) string {
	h.T.Helper()
	ctx := context.Background()
	q, err := queue.WorkerQueue(ns)
	if err != nil {
		h.T.Fatal(err)
	}
	bodies := map[int]json.RawMessage{} // attempt -> its real message
	for a := 1; ; a++ {
		var id int64
		var body json.RawMessage
		Eventually(h.T, 10*time.Second, fmt.Sprintf("the message of attempt %d queued", a), func() bool {
			return h.Pool.QueryRow(ctx, fmt.Sprintf(`SELECT msg_id, message FROM pgmq.q_%s
				WHERE message->>'step_uuid' = $1 AND (message->>'attempt')::int = $2`, q), step.String(), a).Scan(&id, &body) == nil
		})
		bodies[a] = body
		if a == real {
			break
		}
		var claimed bool
		if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, $2, 'earlier-worker', 30)`, step, a).
			Scan(&claimed); err != nil || !claimed {
			h.T.Fatalf("claim attempt %d of step %s by hand: claimed %v, %v", a, step, claimed, err)
		}
		var accepted bool
		if err := h.Pool.QueryRow(ctx, `SELECT tasker.step_submit_result($1, $2, 'earlier-worker', false, NULL,
			'{"message":"failed by the test","retryable":true,"kind":"error"}'::jsonb, $3, '{}'::jsonb)`, step, a, id).
			Scan(&accepted); err != nil || !accepted {
			h.T.Fatalf("fail attempt %d of step %s by hand: accepted %v, %v", a, step, accepted, err)
		}
	}
	for _, a := range extra {
		body, ok := bodies[a]
		if !ok {
			var m map[string]any
			if err := json.Unmarshal(bodies[real], &m); err != nil {
				h.T.Fatal(err)
			}
			m["attempt"] = a
			body, _ = json.Marshal(m)
		}
		if _, err := queue.Send(ctx, h.Pool, q, body, nil, 0); err != nil {
			h.T.Fatal(err)
		}
	}
	return q
}

// Counter sums the series of the counter name in the harness's registry whose
// labels include labels (0 when there is none).
func (h *Harness) Counter(name string, labels map[string]string) float64 {
	h.T.Helper()
	return Counter(h.T, h.Registry, name, labels)
}

// Gauge sums the series of the gauge name in the harness's registry whose
// labels include labels (0 when there is none).
func (h *Harness) Gauge(name string, labels map[string]string) float64 {
	h.T.Helper()
	return sumSeries(h.T, h.Registry, name, labels, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

// Counter sums the series of the counter name that g gathers whose labels
// include labels (0 when there is none).
func Counter(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	return sumSeries(t, g, name, labels, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

// sumSeries sums value over the series of the family name that g gathers
// whose labels include labels.
func sumSeries(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string, value func(*dto.Metric) float64) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					matched++
				}
			}
			if matched == len(labels) {
				sum += value(m)
			}
		}
	}
	return sum
}

// Eventually polls cond (bounded) and fails with msg if it never holds.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	if err := wait.Poll(time.Now().Add(timeout), 20*time.Millisecond, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("condition not met within %s: %s", timeout, msg)
	}
}

var _ sdktrace.SpanExporter = (*tracetest.InMemoryExporter)(nil)
