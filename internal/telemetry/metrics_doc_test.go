package telemetry_test

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

// docMetric is a row of docs/metrics.md.
type docMetric struct {
	typ       string
	labels    []string
	exposedBy []string // "orchestrator", "worker"
}

func readMetricsDoc(t *testing.T) map[string]docMetric {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(tasker_[a-z_]+)` \\| ([a-z]+) \\|[^|]*\\|([^|]*)\\|([^|]*)\\|")
	out := map[string]docMetric{}
	for _, line := range strings.Split(string(raw), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range strings.Split(m[3], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels = append(labels, l)
			}
		}
		sort.Strings(labels)
		var by []string
		for _, b := range strings.Split(m[4], ",") {
			by = append(by, strings.TrimSpace(b))
		}
		out[m[1]] = docMetric{typ: m[2], labels: labels, exposedBy: by}
	}
	if len(out) < 10 {
		t.Fatalf("docs/metrics.md lists only %d metrics; the table format changed?", len(out))
	}
	return out
}

// TestMetricsDocMatchesExposition runs a task (with a worker in the same
// process), a poison message, a retention sweep and an HTTP request, then compares every
// tasker_* metric family the registry exposes with docs/metrics.md — names,
// types and label sets — and lints the exposition with Prometheus's linter.
func TestMetricsDocMatchesExposition(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{
		Retention: store.RetentionPolicy{TasksAfter: time.Hour}, RetentionInterval: time.Hour}})
	h.RegisterFile(filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml"))
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, Observer: obs}, demo.Handlers(0))
	task := h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "order_fulfillment", Context: json.RawMessage(demo.SampleContext(3))})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if _, err := queue.Send(context.Background(), h.Pool, queue.StepResultsQueue, json.RawMessage(`{"not":"a notice"}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 10*time.Second, "poison message archived", func() bool {
		var n int
		_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pgmq.a_orchestration_step_results`).Scan(&n)
		return n == 1
	})
	if _, err := h.Pool.Exec(context.Background(),
		`UPDATE tasker.tasks SET completed_at = now() - interval '2 hours' WHERE task_uuid = $1`, task.UUID); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Orch.RetentionOnce(context.Background()); err != nil || res.Tasks != 1 {
		t.Fatalf("retention sweep: %+v, %v", res, err)
	}
	srv := httptest.NewServer(h.Provider.HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})))
	defer srv.Close()
	if resp, err := http.Get(srv.URL + "/x"); err == nil {
		resp.Body.Close()
	}

	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	compareWithMetricsDoc(t, mfs, "")
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "tasker_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestWorkerExposesItsRowsOfTheMetricsDoc: a Go worker with a provider of
// its own, as cmd/example-worker runs it, exposes exactly the metrics whose
// "exposed by" in docs/metrics.md names the worker, with their types and
// labels. It runs a task and archives a poison step message.
func TestWorkerExposesItsRowsOfTheMetricsDoc(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{})
	h.RegisterFile(filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml"))
	reg := prometheus.NewRegistry()
	tel, err := telemetry.NewProvider(ctx, telemetry.Options{ServiceName: "tasker-test-worker", MetricsEnabled: true, Registry: reg, Logger: h.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	obs, err := worker.NewOTelObserver(tel.TracerProvider(), tel.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	q, _ := queue.WorkerQueue(demo.Namespace)
	if _, err := queue.Send(ctx, h.Pool, q, json.RawMessage(`{"not":"a step message"}`), nil, 0); err != nil {
		t.Fatal(err)
	}
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}, Observer: obs}, demo.Handlers(0))
	task := h.Submit(orchestration.TaskRequest{Namespace: demo.Namespace, Name: "order_fulfillment", Context: json.RawMessage(demo.SampleContext(3))})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	enginetest.Eventually(t, 10*time.Second, "poison step message archived", func() bool {
		var n int
		_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_`+q).Scan(&n)
		return n == 1
	})

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	compareWithMetricsDoc(t, mfs, "worker")
}

// compareWithMetricsDoc checks the tasker_* families of an exposition
// against docs/metrics.md: every family documented with its type and
// labels, and every documented row exposed. With by set, only the rows
// whose "exposed by" names it count, and the exposition must have no
// other family.
func compareWithMetricsDoc(t *testing.T, mfs []*dto.MetricFamily, by string) {
	t.Helper()
	doc := readMetricsDoc(t)
	exposed := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "tasker_") {
			continue
		}
		exposed[name] = true
		d, ok := doc[name]
		switch {
		case !ok:
			t.Errorf("metric %s is exposed but not in docs/metrics.md", name)
			continue
		case by != "" && !slices.Contains(d.exposedBy, by):
			t.Errorf("the %s exposes %s; docs/metrics.md does not say so", by, name)
			continue
		}
		if got := strings.ToLower(mf.GetType().String()); got != d.typ {
			t.Errorf("metric %s is a %s; docs/metrics.md says %s", name, got, d.typ)
		}
		for _, m := range mf.GetMetric() {
			if got := labelNames(m); strings.Join(got, ",") != strings.Join(d.labels, ",") {
				t.Errorf("metric %s has labels %v; docs/metrics.md says %v", name, got, d.labels)
				break
			}
		}
	}
	for name, d := range doc {
		if (by == "" || slices.Contains(d.exposedBy, by)) && !exposed[name] {
			t.Errorf("docs/metrics.md lists %s as exposed by %s; it is not", name, cmp.Or(by, "the orchestrator's registry"))
		}
	}
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}
