package daemon_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/daemon"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

func status(url string) int {
	res, err := http.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestPostgresRestartMidRun stops Postgres while tasks run and starts it
// again: /readyz reports not ready while the database is away and /healthz
// stays alive; the orchestrator and the worker reconnect with backoff and
// finish every task.
func TestPostgresRestartMidRun(t *testing.T) {
	t.Parallel()
	c := testdb.StartCluster(t)
	cfg := testConfig(t, c.URL())
	d, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	base := "http://" + d.Addr()

	pc, err := pgxpool.ParseConfig(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	w, err := worker.New(pool, worker.Config{Namespaces: []string{demo.Namespace}, Logger: enginetest.Logger(t),
		PollInterval: 200 * time.Millisecond, LeaseDuration: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range demo.Handlers(100 * time.Millisecond) {
		w.Handle(name, h)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)

	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, postTask(t, base, i))
	}
	c.Stop()
	enginetest.Eventually(t, 10*time.Second, "/readyz reports not ready", func() bool { return status(base+"/readyz") == http.StatusServiceUnavailable })
	if s := status(base + "/healthz"); s != http.StatusOK {
		t.Errorf("/healthz = %d while the database is away; liveness must not depend on it", s)
	}
	time.Sleep(2 * time.Second) // the outage: loops fail and back off meanwhile
	c.Start()
	enginetest.Eventually(t, 20*time.Second, "/readyz ready again", func() bool { return status(base+"/readyz") == http.StatusOK })
	for _, id := range ids {
		enginetest.Eventually(t, 90*time.Second, "task completes after the restart", func() bool {
			res, err := http.Get(base + "/v1/tasks/" + id)
			if err != nil {
				return false
			}
			defer res.Body.Close()
			var v struct{ State string }
			_ = json.NewDecoder(res.Body).Decode(&v)
			return v.State == "complete"
		})
	}
}
