// Command testworker is the worker process of the chaos tests
// (internal/chaos): a Go SDK worker that the tests build, start, SIGKILL and
// restart. It registers one handler, "chaos.step", that every step of the
// chaos templates uses. The handler
//
//  1. records the execution in the side-effect ledger (public.chaos_ledger,
//     created by the test, not by a migration) in its own transaction, before
//     doing anything else, so that even an execution cut short by a kill
//     leaves a trace;
//  2. sleeps CHAOS_SLEEP (±50% jitter) to widen the crash window;
//  3. computes its result: n = 1 + the sum of its parents' n (a missing
//     parent result is a permanent failure, so a child proves it saw its
//     parents), with the attempt and worker id, so that the stored result
//     names the execution it came from;
//  4. records that result in the ledger, in its own transaction, and returns
//     it.
//
// Environment: DATABASE_URL (required); CHAOS_NAMESPACES (comma-separated,
// default "chaos"); CHAOS_WORKER_ID (default: the SDK's); CHAOS_SLEEP
// (default 20ms); CHAOS_LEASE (default 3s); CHAOS_CONCURRENCY (default 8);
// CHAOS_BATCH (default CHAOS_CONCURRENCY); CHAOS_POLL (default 200ms);
// CHAOS_MAX_CONNS (default concurrency+4); CHAOS_LOG_LEVEL (default info).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/worker"
)

// HandlerName is the handler every step of the chaos templates names.
const HandlerName = "chaos.step"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok && v != "" {
		return v
	}
	return def
}

func envDuration(k, def string) (time.Duration, error) {
	d, err := time.ParseDuration(env(k, def))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return d, nil
}

func envInt(k string, def int) (int, error) {
	n, err := strconv.Atoi(env(k, strconv.Itoa(def)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return n, nil
}

func run() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(env("CHAOS_LOG_LEVEL", "info"))); err != nil {
		return fmt.Errorf("CHAOS_LOG_LEVEL: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		return errors.New("DATABASE_URL is not set")
	}
	sleep, err := envDuration("CHAOS_SLEEP", "20ms")
	if err != nil {
		return err
	}
	lease, err := envDuration("CHAOS_LEASE", "3s")
	if err != nil {
		return err
	}
	poll, err := envDuration("CHAOS_POLL", "200ms")
	if err != nil {
		return err
	}
	concurrency, err := envInt("CHAOS_CONCURRENCY", 8)
	if err != nil {
		return err
	}
	batch, err := envInt("CHAOS_BATCH", concurrency)
	if err != nil {
		return err
	}
	maxConns, err := envInt("CHAOS_MAX_CONNS", concurrency+4)
	if err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = int32(maxConns)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "tasker-chaos-worker"
	worker.ConfigurePool(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	w, err := worker.New(pool, worker.Config{
		Namespaces: strings.Split(env("CHAOS_NAMESPACES", "chaos"), ","),
		WorkerID:   os.Getenv("CHAOS_WORKER_ID"), Concurrency: concurrency, BatchSize: batch,
		LeaseDuration: lease, PollInterval: poll, ShutdownTimeout: 5 * time.Second, Logger: logger,
	})
	if err != nil {
		return err
	}
	w.Handle(HandlerName, handler(pool, w.ID(), sleep))

	// The namespace's queue exists once an orchestrator has registered the
	// templates; until then Run fails at once and is retried.
	for {
		err = w.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		logger.Warn("worker cannot start yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// result is what every chaos step returns.
type result struct {
	Step     string         `json:"step"`
	N        int            `json:"n"`
	Attempt  int            `json:"attempt"`
	WorkerID string         `json:"worker_id"`
	Parents  map[string]int `json:"parents"`
}

func handler(pool *pgxpool.Pool, workerID string, sleep time.Duration) worker.Handler {
	return func(ctx context.Context, s *worker.Step) (any, error) {
		var id int64
		if err := pool.QueryRow(ctx, `
			INSERT INTO public.chaos_ledger (task_uuid, step_uuid, step_name, attempt, worker_id)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			s.TaskUUID, s.StepUUID, s.Name, s.Attempt, workerID).Scan(&id); err != nil {
			return nil, fmt.Errorf("ledger: record start: %w", err)
		}

		if sleep > 0 {
			d := time.Duration(float64(sleep) * (0.5 + rand.Float64()))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}

		r := result{Step: s.Name, N: 1, Attempt: s.Attempt, WorkerID: workerID, Parents: map[string]int{}}
		for name := range s.DependencyResults {
			var p result
			if err := s.DependencyResult(name, &p); err != nil {
				return nil, worker.Permanent(err)
			}
			if p.N < 1 {
				return nil, worker.Permanent(fmt.Errorf("parent %s has no result (n=%d)", name, p.N))
			}
			r.Parents[name] = p.N
			r.N += p.N
		}
		body, err := json.Marshal(r)
		if err != nil {
			return nil, worker.Permanent(err)
		}
		if _, err := pool.Exec(ctx, `
			UPDATE public.chaos_ledger SET result = $2::jsonb, finished_at = clock_timestamp() WHERE id = $1`,
			id, string(body)); err != nil {
			return nil, fmt.Errorf("ledger: record result: %w", err)
		}
		return r, nil
	}
}
