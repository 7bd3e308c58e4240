package queue_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/testdb"
)

// testCtx bounds every test, so a blocked statement (say, a read that waits on
// a row lock SKIP LOCKED should have skipped) fails the test instead of hanging.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newQueue gives the test its own migrated database with one queue in it.
func newQueue(t *testing.T, name string) (*pgxpool.Pool, context.Context) {
	t.Helper()
	pool := testdb.New(t)
	ctx := testCtx(t)
	if err := queue.Create(ctx, pool, name); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return pool, ctx
}

func body(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustSend(t *testing.T, ctx context.Context, db queue.DB, name string, v any) int64 {
	t.Helper()
	id, err := queue.Send(ctx, db, name, body(t, v), nil, 0)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return id
}

func mustRead(t *testing.T, ctx context.Context, db queue.DB, name string, vt time.Duration, qty int) []queue.Message {
	t.Helper()
	msgs, err := queue.Read(ctx, db, name, vt, qty)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return msgs
}

func ids(msgs []queue.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func wantIDs(t *testing.T, what string, got, want []int64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got ids %v, want %v", what, got, want)
	}
}

func mustMetrics(t *testing.T, ctx context.Context, db queue.DB, name string) queue.Metrics {
	t.Helper()
	m, err := queue.QueueMetrics(ctx, db, name)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return m
}

// waitFor polls cond every 20ms until it holds or timeout passes. It is the
// only way these tests wait: never a bare sleep.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// usesExtension reports whether the database runs the real pgmq extension
// rather than our SQL implementation; a few assertions differ on purpose.
func usesExtension(t *testing.T, ctx context.Context, db queue.DB) bool {
	t.Helper()
	var ext bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgmq')`).Scan(&ext); err != nil {
		t.Fatal(err)
	}
	return ext
}

func tableExists(t *testing.T, ctx context.Context, db queue.DB, table string) bool {
	t.Helper()
	var ok bool
	err := db.QueryRow(ctx, `SELECT to_regclass(format('pgmq.%I', $1::text)) IS NOT NULL`, table).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
