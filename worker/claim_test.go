package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/worker"
)

// Claims always commit asynchronously, submissions only with AsyncSubmit,
// each in its own implicit transaction: a worker whose sessions run with
// synchronous_commit on stores its results with it on (off with
// AsyncSubmit), through the one-result function and the batch function
// alike, and still has it on afterwards.
func TestSubmissionsCommitAsConfigured(t *testing.T) {
	t.Parallel()
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("AsyncSubmit=%v", async), func(t *testing.T) {
			t.Parallel()
			const ns = "commitmode"
			h := setup(t, ns, 30, 1)
			ctx := context.Background()
			// Every statement that stores result notices records the
			// setting its transaction commits with.
			if _, err := h.Pool.Exec(ctx, `
				CREATE TABLE public.commit_modes (setting text NOT NULL, notices bigint NOT NULL);
				CREATE FUNCTION public.record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
				    INSERT INTO public.commit_modes SELECT current_setting('synchronous_commit'), count(*) FROM new_rows;
				    RETURN NULL;
				END $$;
				CREATE TRIGGER record_commit_mode AFTER INSERT ON pgmq.q_orchestration_step_results
				    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.record_commit_mode();`); err != nil {
				t.Fatal(err)
			}
			cfg, err := pgxpool.ParseConfig(h.URL)
			if err != nil {
				t.Fatal(err)
			}
			// The test cluster may run with synchronous_commit off: these
			// sessions turn it on, so that an asynchronous commit, or a
			// setting leaking out of one, shows.
			cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
			worker.ConfigurePool(cfg)
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			w, err := worker.New(pool, worker.Config{Namespaces: []string{ns}, Concurrency: 16, Logger: h.Logger, AsyncSubmit: async})
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			w.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) {
				var c struct{ Hold bool }
				if err := s.DecodeContext(&c); err != nil {
					return nil, err
				}
				if c.Hold {
					<-release
				}
				return "ok", nil
			})
			if err := w.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Stop)
			// One task alone: its result is submitted by itself.
			first := submitN(h, ns, "one", 1, `{}`)
			h.WaitTask(first[0], 30*time.Second, lifecycle.TaskComplete)
			// Then results that finish together: submitted as batches.
			ids := submitN(h, ns, "one", 12, `{"hold": true}`)
			enginetest.Eventually(t, 30*time.Second, "12 steps running", func() bool {
				return stepStates(t, h, ns)["in_progress"] == 12
			})
			close(release)
			for _, id := range ids {
				h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
			}
			w.Stop()

			want := "on"
			if async {
				want = "off"
			}
			rows, err := h.Pool.Query(ctx, `SELECT setting, notices FROM public.commit_modes`)
			if err != nil {
				t.Fatal(err)
			}
			var setting string
			var notices, total, largest int64
			for rows.Next() {
				if err := rows.Scan(&setting, &notices); err != nil {
					t.Fatal(err)
				}
				if setting != want {
					t.Errorf("a submission of %d results committed with synchronous_commit = %s, want %s", notices, setting, want)
				}
				total += notices
				largest = max(largest, notices)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if total != 13 || largest < 2 {
				t.Errorf("%d results stored, at most %d at once; want 13, some in a batch", total, largest)
			}

			conns := pool.AcquireAllIdle(ctx)
			if len(conns) == 0 {
				t.Fatal("no idle connection left in the worker's pool")
			}
			for _, c := range conns {
				err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting)
				c.Release()
				if err != nil {
					t.Fatal(err)
				}
				if setting != "on" {
					t.Errorf("a worker session has synchronous_commit = %s after its claims and submissions, want on", setting)
				}
			}
		})
	}
}
