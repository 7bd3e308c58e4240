package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/queue"
)

// floorQueue is the queue the floor measurement uses; it is created and
// dropped in the benchmark database.
const floorQueue = "bench_floor"

// Floor is raw PGMQ throughput on the same database: as many messages as the
// run had steps, sent with send_batch, read in batches and deleted in
// batches, without any engine around them. A step needs at least this (its
// step message), so the engine's steps/s over the floor's messages/s says
// how much of PGMQ's own speed the engine keeps.
type Floor struct {
	Messages   int     `json:"messages"`
	Batch      int     `json:"batch"`
	Consumers  int     `json:"consumers"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// Ratio is the engine's steps/s divided by MsgsPerSec.
	Ratio float64    `json:"ratio"`
	CPU   CPU        `json:"cpu"`
	DB    DBCounters `json:"db"`
}

// runFloor pushes n messages through the floor queue, which its caller
// creates: one producer sending batches, consumers reading and deleting
// batches, concurrently. It returns the elapsed time from the first send
// to the last delete.
func runFloor(ctx context.Context, pool *pgxpool.Pool, n, batch, consumers int) (time.Duration, error) {
	// A body the size and shape of a step message, with the same headers.
	body, _ := json.Marshal(map[string]any{
		"task_uuid": uuid.New(), "step_uuid": uuid.New(), "step_name": "only", "handler": Handler,
		"namespace": Namespace, "correlation_id": uuid.New(), "attempt": 1,
	})
	hdr := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deleted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, consumers+1)
	start := time.Now()
	wg.Add(1)
	// Ends when every message is sent or ctx is cancelled.
	go func() {
		defer wg.Done()
		for sent := 0; sent < n && ctx.Err() == nil; {
			k := min(batch, n-sent)
			bodies := make([]json.RawMessage, k)
			headers := make([]map[string]string, k)
			for i := range bodies {
				bodies[i], headers[i] = body, hdr
			}
			if _, err := queue.SendBatch(ctx, pool, floorQueue, bodies, headers, 0); err != nil {
				errs <- err
				cancel()
				return
			}
			sent += k
		}
	}()
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		// Ends when every message is deleted or ctx is cancelled.
		go func() {
			defer wg.Done()
			for deleted.Load() < int64(n) && ctx.Err() == nil {
				msgs, err := queue.Read(ctx, pool, floorQueue, 30*time.Second, batch)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
						cancel()
					}
					return
				}
				if len(msgs) == 0 {
					// Ahead of the producer: a short pause rather than a busy
					// loop of empty reads, which would steal the server's CPU.
					time.Sleep(2 * time.Millisecond)
					continue
				}
				ids := make([]int64, len(msgs))
				for i, m := range msgs {
					ids[i] = m.ID
				}
				gone, err := queue.DeleteBatch(ctx, pool, floorQueue, ids)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
						cancel()
					}
					return
				}
				deleted.Add(int64(len(gone)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return elapsed, fmt.Errorf("floor: %w", err)
	}
	if deleted.Load() < int64(n) {
		return elapsed, fmt.Errorf("floor: %d of %d messages deleted: %w", deleted.Load(), n, ctx.Err())
	}
	return elapsed, nil
}
