package bench

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// WaitShare is the average number of the benchmark database's sessions in
// one state during the run (active session history): "CPU" is running (or
// waiting for a CPU), "Lock:transactionid" waits for another transaction's
// row lock, "IO:WALSync" for the WAL flush, "idle in transaction" for the
// client in the middle of a transaction (a round trip of the application).
type WaitShare struct {
	Event    string  `json:"event"`
	Sessions float64 `json:"avg_sessions"`
}

// waitSampler samples pg_stat_activity of the benchmark database.
type waitSampler struct {
	every   time.Duration
	mu      sync.Mutex
	counts  map[string]int64
	samples int64
}

func newWaitSampler(every time.Duration) *waitSampler {
	return &waitSampler{every: every, counts: map[string]int64{}}
}

// run samples until ctx is cancelled.
func (w *waitSampler) run(ctx context.Context, pool *pgxpool.Pool) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, err := pool.Query(ctx, `
			SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU') ELSE state END, count(*)
			  FROM pg_stat_activity
			 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
			   AND state IN ('active', 'idle in transaction')
			 GROUP BY 1`)
		if err != nil {
			continue // the sample is lost; the run goes on
		}
		got := map[string]int64{}
		for rows.Next() {
			var ev string
			var n int64
			if rows.Scan(&ev, &n) == nil {
				got[ev] = n
			}
		}
		rows.Close()
		if rows.Err() != nil {
			continue
		}
		w.mu.Lock()
		w.samples++
		for ev, n := range got {
			w.counts[ev] += n
		}
		w.mu.Unlock()
	}
}

// shares returns the average sessions per state, largest first, leaving out
// states seen in under 2% of the samples.
func (w *waitSampler) shares() []WaitShare {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.samples == 0 {
		return nil
	}
	var out []WaitShare
	for ev, n := range w.counts {
		avg := float64(n) / float64(w.samples)
		if avg >= 0.02 {
			out = append(out, WaitShare{Event: ev, Sessions: avg})
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Sessions > out[k].Sessions })
	return out
}
