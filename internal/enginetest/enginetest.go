// Package enginetest runs a real orchestrator (engine and background loops)
// and real Go workers in-process against a fresh migrated database, for
// integration tests of the whole engine. Nothing is mocked.
package enginetest

import (
	"context"
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
	h.Store = store.New(testdb.Pool(t, h.URL, store.WithNotifyAfterCommit, store.WithBinaryUUIDs))
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

// Counter sums the series of the counter name in the harness's registry whose
// labels include labels (0 when there is none).
func (h *Harness) Counter(name string, labels map[string]string) float64 {
	h.T.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		h.T.Fatalf("gather metrics: %v", err)
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
				sum += m.GetCounter().GetValue()
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
