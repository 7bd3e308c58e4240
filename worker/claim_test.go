package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/worker"
)

// Claims commit asynchronously in their own implicit transaction only: a
// worker whose sessions run with synchronous_commit on still has it on
// after claiming, so that its submissions stay durable.
func TestAsyncClaimsLeaveSubmissionsDurable(t *testing.T) {
	t.Parallel()
	const ns = "asyncclaim"
	h := setup(t, ns, 30, 1)
	cfg, err := pgxpool.ParseConfig(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The test cluster may run with synchronous_commit off: these sessions
	// turn it on, so that a setting leaking out of a claim would show.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	worker.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	w, err := worker.New(pool, worker.Config{Namespaces: []string{ns}, Concurrency: 4, Logger: h.Logger})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) { return "ok", nil })
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	for _, id := range submitN(h, ns, "one", 6, `{}`) {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	w.Stop()

	ctx := context.Background()
	conns := pool.AcquireAllIdle(ctx)
	if len(conns) == 0 {
		t.Fatal("no idle connection left in the worker's pool")
	}
	for _, c := range conns {
		var setting string
		err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting)
		c.Release()
		if err != nil {
			t.Fatal(err)
		}
		if setting != "on" {
			t.Errorf("a worker session has synchronous_commit = %s after its claims, want on", setting)
		}
	}
}
