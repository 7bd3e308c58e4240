package queue_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// A message whose headers are not a JSON object (written by another client)
// is read with no headers, by the plain and the asynchronous read alike,
// instead of failing every read of its queue.
func TestOddHeadersDoNotBlockReads(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "odd")
	if _, err := pool.Exec(ctx, `INSERT INTO pgmq.q_odd (vt, message, headers) VALUES (now(), '1', '[1, 2]'), (now(), '2', '"x"')`); err != nil {
		t.Fatal(err)
	}
	after := mustSend(t, ctx, pool, "odd", 3)
	got, err := queue.ReadAsync(ctx, pool, "odd", time.Minute, 10)
	if err != nil {
		t.Fatalf("ReadAsync: %v", err)
	}
	if len(got) != 3 || got[2].ID != after || got[0].Headers != nil || got[1].Headers != nil {
		t.Fatalf("read %v (headers %v, %v), want the two odd messages with no headers and %d", ids(got), got[0].Headers, got[1].Headers, after)
	}
	if _, err := pool.Exec(ctx, `UPDATE pgmq.q_odd SET vt = now()`); err != nil {
		t.Fatal(err)
	}
	if again := mustRead(t, ctx, pool, "odd", time.Minute, 10); len(again) != 3 {
		t.Fatalf("Read returned %d messages, want 3", len(again))
	}
}

// ReadAsync reads like Read (visibility timeout, read count) and leaves the
// session's synchronous_commit, plan_cache_mode and enable_seqscan as they
// were.
func TestReadAsyncCommitSettingStaysInItsTransaction(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "lazy")
	id := mustSend(t, ctx, pool, "lazy", 1)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The test cluster may run with synchronous_commit off: the session
	// turns it on, so that a setting leaking out of the read would show.
	if _, err := conn.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		t.Fatal(err)
	}
	before := "on"
	got, err := queue.ReadAsync(ctx, conn.Conn(), "lazy", time.Minute, 5)
	if err != nil || len(got) != 1 || got[0].ID != id || got[0].ReadCount != 1 {
		t.Fatalf("ReadAsync = %+v, %v; want message %d read once", got, err, id)
	}
	var after string
	if err := conn.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("synchronous_commit is %q after ReadAsync, was %q", after, before)
	}
	var mode string
	if err := conn.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != "auto" {
		t.Fatalf("plan_cache_mode is %q (%v) after ReadAsync, want auto", mode, err)
	}
	var seqscan string
	if err := conn.QueryRow(ctx, `SHOW enable_seqscan`).Scan(&seqscan); err != nil || seqscan != "on" {
		t.Fatalf("enable_seqscan is %q (%v) after ReadAsync, want on", seqscan, err)
	}
	if again := mustRead(t, ctx, pool, "lazy", time.Minute, 5); len(again) != 0 {
		t.Fatalf("message visible again within its visibility timeout: %v", ids(again))
	}
}

// The direct reads take what their functions take: ReadAsync what
// pgmq.read does, WorkerReadAsync what tasker.worker_read does (messages
// of the worker's handlers and ones with no string handler, FIFO), each
// hiding them for the visibility timeout and counting the read.
func TestDirectReadsMatchTheirFunctions(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "by_fn")
	if err := queue.Create(ctx, pool, "direct_r"); err != nil {
		t.Fatal(err)
	}
	bodies := []string{`{"handler":"a"}`, `{"handler":"b"}`, `{"x":1}`, `{"handler":"a"}`, `{"handler":7}`, `{"handler":"c"}`, `{"handler":"b"}`}
	for _, q := range []string{"by_fn", "direct_r"} {
		for _, b := range bodies {
			if _, err := queue.Send(ctx, pool, q, json.RawMessage(b), nil, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	type read struct {
		bodies []string
		counts []int
	}
	summary := func(msgs []queue.Message) read {
		var r read
		for _, m := range msgs {
			r.bodies = append(r.bodies, string(m.Body))
			r.counts = append(r.counts, m.ReadCount)
		}
		return r
	}
	viaFunction := func(sql string, args ...any) read {
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var r read
		for rows.Next() {
			var b string
			var n int
			if err := rows.Scan(&b, &n); err != nil {
				t.Fatal(err)
			}
			r.bodies, r.counts = append(r.bodies, b), append(r.counts, n)
		}
		return r
	}
	handlers := []string{"a", "b"}
	want := viaFunction(`SELECT message::text, read_ct FROM tasker.worker_read('by_fn', 60, 3, $1)`, handlers)
	got, err := queue.WorkerReadAsync(ctx, pool, "direct_r", time.Minute, 3, handlers)
	if err != nil {
		t.Fatal(err)
	}
	if g := summary(got); !reflect.DeepEqual(g, want) || len(g.bodies) != 3 {
		t.Fatalf("WorkerReadAsync read %v, worker_read %v", g, want)
	}
	want = viaFunction(`SELECT message::text, read_ct FROM tasker.worker_read('by_fn', 60, 10, $1)`, handlers)
	got, err = queue.WorkerReadAsync(ctx, pool, "direct_r", time.Minute, 10, handlers)
	if err != nil {
		t.Fatal(err)
	}
	if g := summary(got); !reflect.DeepEqual(g, want) || len(g.bodies) != 3 {
		t.Fatalf("second read: WorkerReadAsync %v, worker_read %v (want the rest but handler c)", g, want)
	}
	// What is left: handler c, for pgmq.read and ReadAsync alike; then nothing.
	want = viaFunction(`SELECT message::text, read_ct FROM pgmq.read('by_fn', 60, 10)`)
	got, err = queue.ReadAsync(ctx, pool, "direct_r", time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if g := summary(got); !reflect.DeepEqual(g, want) || len(g.bodies) != 1 {
		t.Fatalf("ReadAsync read %v, pgmq.read %v", g, want)
	}
	if _, err := pool.Exec(ctx, `UPDATE pgmq.q_direct_r SET vt = now() WHERE message->>'handler' = 'a'`); err != nil {
		t.Fatal(err)
	}
	got, err = queue.ReadAsync(ctx, pool, "direct_r", time.Minute, 10)
	if err != nil || len(got) != 2 || got[0].ReadCount != 2 || got[0].ID >= got[1].ID {
		t.Fatalf("read of the two messages made visible again: %+v, %v; want them in order, read twice", got, err)
	}
}

// The direct reads are planned on the primary key even where the queue
// table looks small to the planner (a sequential scan, a sort and a hash
// join would read every row of the table on every read as it grows).
func TestDirectReadsAreKeyedPlans(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "planned")
	for i := range 5 {
		mustSend(t, ctx, pool, "planned", i)
	}
	if _, err := pool.Exec(ctx, `ANALYZE pgmq.q_planned`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, filter, prepare, execute string
	}{
		{"ReadAsync", "", "read_plain(int, int)", "read_plain(5, 30)"},
		{"WorkerReadAsync", queue.WorkerFilterForTest, "read_worker(int, int, text[])", "read_worker(5, 30, ARRAY['h'])"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			// The pipeline's settings, then the statement as it is prepared.
			if _, err := tx.Exec(ctx, queue.AsyncCommitForTest); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `PREPARE `+c.prepare+` AS `+queue.ReadSQLForTest(`pgmq.q_planned`, c.filter)); err != nil {
				t.Fatal(err)
			}
			rows, err := tx.Query(ctx, `EXPLAIN EXECUTE `+c.execute)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index Scan using q_planned_pkey") {
				t.Errorf("plan of the read:\n%s\nwant index scans on the primary key only", plan)
			}
		})
	}
}

// DeleteSQL deletes what pgmq.delete deletes, and only that.
func TestDeleteSQLIsDelete(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "gone")
	var sent []int64
	for i := range 4 {
		sent = append(sent, mustSend(t, ctx, pool, "gone", i))
	}
	sql, err := queue.DeleteSQL("gone")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, sql, []int64{sent[0], sent[2], 999999}).Scan(&n); err != nil || n != 2 {
		t.Fatalf("DeleteSQL deleted %d (%v), want 2", n, err)
	}
	left := mustRead(t, ctx, pool, "gone", time.Minute, 10)
	if want := []int64{sent[1], sent[3]}; !slices.Equal(ids(left), want) {
		t.Fatalf("left %v, want %v", ids(left), want)
	}
	if _, err := queue.DeleteSQL("no such queue!"); err == nil {
		t.Fatal("DeleteSQL accepted an invalid queue name")
	}
}
