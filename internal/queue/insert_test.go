package queue_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/queue"
)

// InsertSQL writes what pgmq.send_batch writes: messages visible at once, in
// array order after the ones sent before, with their headers (SQL NULL for
// none), read back by the PGMQ API like any other.
func TestInsertSQLIsSendBatch(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "direct")
	first := mustSend(t, ctx, pool, "direct", 0)
	sql, err := queue.InsertSQL("direct")
	if err != nil {
		t.Fatal(err)
	}
	h, err := queue.EncodeHeaders(map[string]string{"traceparent": "tp"})
	if err != nil {
		t.Fatal(err)
	}
	none, err := queue.EncodeHeaders(nil)
	if err != nil || none != nil {
		t.Fatalf("EncodeHeaders(nil) = %q, %v; want nil", none, err)
	}
	if _, err := pool.Exec(ctx, sql, [][]byte{body(t, 1), body(t, 2), body(t, 3)}, [][]byte{h, none, h}); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, ctx, pool, "direct", time.Minute, 10)
	if len(got) != 4 || got[0].ID != first || !slices.IsSorted(ids(got)) {
		t.Fatalf("read %v, want the sent message %d then three in order", ids(got), first)
	}
	for i, m := range got {
		var n int
		if err := json.Unmarshal(m.Body, &n); err != nil || n != i {
			t.Fatalf("message %d has body %s, want %d", i, m.Body, i)
		}
	}
	if got[1].Headers["traceparent"] != "tp" || got[2].Headers != nil || got[3].Headers["traceparent"] != "tp" {
		t.Fatalf("headers %v, %v, %v; want tp, none, tp", got[1].Headers, got[2].Headers, got[3].Headers)
	}
	if _, err := queue.InsertSQL(`x"; DROP TABLE pgmq.meta; --`); !errors.Is(err, queue.ErrInvalidName) {
		t.Fatalf("InsertSQL of a bad name: %v, want ErrInvalidName", err)
	}
}
