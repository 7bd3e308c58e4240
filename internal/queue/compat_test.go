package queue_test

// The compatibility suite: assertions about the PGMQ API, run against whatever
// migration 1 installed in the test database (the pgmq extension or our SQL
// implementation), on a real Postgres. They pin the behaviour the engine and
// other PGMQ clients rely on, so that either implementation can be swapped in.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/craigpastro/pgmq-go"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/testdb"
)

type column struct{ name, typ string }

func columnsOf(t *testing.T, ctx context.Context, db queue.DB, sql string, arg any) []column {
	t.Helper()
	rows, err := db.Query(ctx, sql, arg)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.name, &c.typ)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

func tableColumns(t *testing.T, ctx context.Context, db queue.DB, table string) []column {
	t.Helper()
	return columnsOf(t, ctx, db, `SELECT column_name::text, data_type::text FROM information_schema.columns
		WHERE table_schema = 'pgmq' AND table_name = $1 ORDER BY ordinal_position`, table)
}

func typeColumns(t *testing.T, ctx context.Context, db queue.DB, typ string) []column {
	t.Helper()
	return columnsOf(t, ctx, db, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = (SELECT typrelid FROM pg_type WHERE oid = $1::regtype)
		  AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, typ)
}

func TestTableAndTypeLayout(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "layout")
	ts := "timestamp with time zone"
	wantQ := []column{{"msg_id", "bigint"}, {"read_ct", "integer"}, {"enqueued_at", ts}, {"vt", ts}, {"message", "jsonb"}, {"headers", "jsonb"}}
	wantA := []column{{"msg_id", "bigint"}, {"read_ct", "integer"}, {"enqueued_at", ts}, {"archived_at", ts}, {"vt", ts}, {"message", "jsonb"}, {"headers", "jsonb"}}
	// pgmq-go scans exactly these six columns from read and pop.
	wantRecord := []column{{"msg_id", "bigint"}, {"read_ct", "integer"}, {"enqueued_at", ts}, {"vt", ts}, {"message", "jsonb"}, {"headers", "jsonb"}}
	wantMetrics := []column{{"queue_name", "text"}, {"queue_length", "bigint"}, {"newest_msg_age_sec", "integer"}, {"oldest_msg_age_sec", "integer"},
		{"total_messages", "bigint"}, {"scrape_time", ts}, {"queue_visible_length", "bigint"}}
	wantMeta := []column{{"queue_name", "character varying"}, {"is_partitioned", "boolean"}, {"is_unlogged", "boolean"}, {"created_at", ts}}

	for _, c := range []struct {
		what      string
		got, want []column
	}{
		{"pgmq.q_layout", tableColumns(t, ctx, pool, "q_layout"), wantQ},
		{"pgmq.a_layout", tableColumns(t, ctx, pool, "a_layout"), wantA},
		{"pgmq.meta", tableColumns(t, ctx, pool, "meta"), wantMeta},
		{"pgmq.message_record", typeColumns(t, ctx, pool, "pgmq.message_record"), wantRecord},
		{"pgmq.metrics_result", typeColumns(t, ctx, pool, "pgmq.metrics_result"), wantMetrics},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s columns:\n got  %v\n want %v", c.what, c.got, c.want)
		}
	}

	var identity, pkey, vtIndex bool
	err := pool.QueryRow(ctx, `SELECT
		(SELECT identity_generation = 'ALWAYS' FROM information_schema.columns
		  WHERE table_schema = 'pgmq' AND table_name = 'q_layout' AND column_name = 'msg_id'),
		EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		  WHERE i.indrelid = 'pgmq.q_layout'::regclass AND i.indisprimary AND a.attname = 'msg_id'),
		EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'pgmq' AND tablename = 'q_layout' AND indexdef LIKE '%(vt)%')`,
	).Scan(&identity, &pkey, &vtIndex)
	if err != nil {
		t.Fatal(err)
	}
	if !identity || !pkey || !vtIndex {
		t.Errorf("q_layout: msg_id generated always as identity %v, primary key %v, index on vt %v; want all true", identity, pkey, vtIndex)
	}
}

// TestFunctionSignatures pins names, argument names, types, defaults and
// return types: clients call these positionally and by name.
func TestFunctionSignatures(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	const (
		q        = "queue_name text"
		setBig   = "SETOF bigint"
		setMsg   = "SETOF pgmq.message_record"
		void     = "void"
		boolean  = "boolean"
		readArgs = q + ", vt integer, qty integer"
	)
	want := []struct{ sig, args, result string }{
		{"pgmq.create(text)", q, void},
		{"pgmq.create_unlogged(text)", q, void},
		{"pgmq.drop_queue(text)", q, boolean},
		{"pgmq.list_queues()", "", "SETOF pgmq.queue_record"},
		{"pgmq.send(text,jsonb)", q + ", msg jsonb", setBig},
		{"pgmq.send(text,jsonb,integer)", q + ", msg jsonb, delay integer", setBig},
		{"pgmq.send(text,jsonb,timestamptz)", q + ", msg jsonb, delay timestamp with time zone", setBig},
		{"pgmq.send(text,jsonb,jsonb)", q + ", msg jsonb, headers jsonb", setBig},
		{"pgmq.send(text,jsonb,jsonb,integer)", q + ", msg jsonb, headers jsonb, delay integer", setBig},
		{"pgmq.send(text,jsonb,jsonb,timestamptz)", q + ", msg jsonb, headers jsonb, delay timestamp with time zone", setBig},
		{"pgmq.send_batch(text,jsonb[])", q + ", msgs jsonb[]", setBig},
		{"pgmq.send_batch(text,jsonb[],integer)", q + ", msgs jsonb[], delay integer", setBig},
		{"pgmq.send_batch(text,jsonb[],timestamptz)", q + ", msgs jsonb[], delay timestamp with time zone", setBig},
		{"pgmq.send_batch(text,jsonb[],jsonb[])", q + ", msgs jsonb[], headers jsonb[]", setBig},
		{"pgmq.send_batch(text,jsonb[],jsonb[],integer)", q + ", msgs jsonb[], headers jsonb[], delay integer", setBig},
		{"pgmq.send_batch(text,jsonb[],jsonb[],timestamptz)", q + ", msgs jsonb[], headers jsonb[], delay timestamp with time zone", setBig},
		{"pgmq.read(text,integer,integer,jsonb)", readArgs + ", conditional jsonb DEFAULT '{}'::jsonb", setMsg},
		{"pgmq.read_with_poll(text,integer,integer,integer,integer,jsonb)",
			readArgs + ", max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100, conditional jsonb DEFAULT '{}'::jsonb", setMsg},
		{"pgmq.archive(text,bigint)", q + ", msg_id bigint", boolean},
		{"pgmq.archive(text,bigint[])", q + ", msg_ids bigint[]", setBig},
		{"pgmq.delete(text,bigint)", q + ", msg_id bigint", boolean},
		{"pgmq.delete(text,bigint[])", q + ", msg_ids bigint[]", setBig},
		{"pgmq.set_vt(text,bigint,integer)", q + ", msg_id bigint, vt integer", setMsg},
		{"pgmq.purge_queue(text)", q, "bigint"},
		{"pgmq.metrics(text)", q, "pgmq.metrics_result"},
		{"pgmq.metrics_all()", "", "SETOF pgmq.metrics_result"},
		{"pgmq.enable_notify_insert(text)", q, void},
		{"pgmq.disable_notify_insert(text)", q, void},
	}
	for _, w := range want {
		var args, result *string
		err := pool.QueryRow(ctx, `SELECT pg_get_function_arguments(p), pg_get_function_result(p)
			FROM to_regprocedure($1) AS p`, w.sig).Scan(&args, &result)
		if err != nil {
			t.Fatalf("%s: %v", w.sig, err)
		}
		if args == nil {
			t.Errorf("%s does not exist", w.sig)
			continue
		}
		if *args != w.args || *result != w.result {
			t.Errorf("%s:\n got  (%s) %s\n want (%s) %s", w.sig, *args, *result, w.args, w.result)
		}
	}
	// pop gained an optional qty in 1.7; pop(q) must work either way.
	var popOK bool
	if err := pool.QueryRow(ctx, `SELECT to_regprocedure('pgmq.pop(text)') IS NOT NULL
		OR to_regprocedure('pgmq.pop(text,integer)') IS NOT NULL`).Scan(&popOK); err != nil || !popOK {
		t.Errorf("pgmq.pop(text) missing (err %v)", err)
	}
}

func TestCreateIsIdempotentAndSafeConcurrently(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- queue.Create(ctx, pool, "racy") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent create: %v", err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.meta WHERE queue_name = 'racy'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("racy is listed %d times in pgmq.meta (%v), want once", n, err)
	}
}

// listWithout lists the queues, leaving out those the schema migrations
// create, which are not the test's business.
func listWithout(t *testing.T, ctx context.Context, db queue.DB, baseline []string) []string {
	t.Helper()
	names, err := queue.List(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(names) {
		t.Fatalf("List is not sorted: %v", names)
	}
	return slices.DeleteFunc(names, func(n string) bool { return slices.Contains(baseline, n) })
}

func wantNames(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCreateUnlogged(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	if err := queue.CreateUnlogged(ctx, pool, "fast"); err != nil {
		t.Fatal(err)
	}
	var persistence string
	var unlogged bool
	err := pool.QueryRow(ctx, `SELECT relpersistence::text, (SELECT is_unlogged FROM pgmq.meta WHERE queue_name = 'fast')
		FROM pg_class WHERE oid = 'pgmq.q_fast'::regclass`).Scan(&persistence, &unlogged)
	if err != nil {
		t.Fatal(err)
	}
	if persistence != "u" || !unlogged {
		t.Fatalf("relpersistence %q, meta.is_unlogged %v; want u, true", persistence, unlogged)
	}
	mustSend(t, ctx, pool, "fast", map[string]int{"n": 1})
	if got := mustRead(t, ctx, pool, "fast", time.Minute, 1); len(got) != 1 {
		t.Fatalf("read %d messages from unlogged queue, want 1", len(got))
	}
}

func TestVisibilityTimeoutAndReadCount(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "vt")
	id := mustSend(t, ctx, pool, "vt", map[string]string{"k": "v"})

	first := mustRead(t, ctx, pool, "vt", 30*time.Second, 5)
	wantIDs(t, "first read", ids(first), []int64{id})
	m := first[0]
	if m.ReadCount != 1 || string(m.Body) != `{"k": "v"}` || m.Headers != nil {
		t.Fatalf("first read: %+v; want read count 1, body {\"k\": \"v\"}, no headers", m)
	}
	if lease := m.VisibleAt.Sub(m.EnqueuedAt); lease < 30*time.Second || lease > 40*time.Second {
		t.Fatalf("visible %v after enqueue, want about 30s", lease)
	}

	wantIDs(t, "read while invisible", ids(mustRead(t, ctx, pool, "vt", 30*time.Second, 5)), []int64{})

	released, err := queue.SetVT(ctx, pool, "vt", id, 0)
	if err != nil || released == nil || released.ID != id {
		t.Fatalf("set vt 0: %+v, %v", released, err)
	}
	second := mustRead(t, ctx, pool, "vt", time.Minute, 5)
	wantIDs(t, "read after set_vt 0", ids(second), []int64{id})
	if second[0].ReadCount != 2 {
		t.Fatalf("read count %d after two reads, want 2", second[0].ReadCount)
	}

	missing, err := queue.SetVT(ctx, pool, "vt", id+100, 0)
	if err != nil || missing != nil {
		t.Fatalf("set vt of missing message: %+v, %v; want nil, nil", missing, err)
	}
}

// TestSubSecondDurationsRoundUp: a positive duration must never become 0, which
// would make a leased message visible to the next reader at once.
func TestSubSecondDurationsRoundUp(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "round")
	id, err := queue.Send(ctx, pool, "round", body(t, 1), nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var delay time.Duration
	if err := pool.QueryRow(ctx, `SELECT vt - enqueued_at FROM pgmq.q_round WHERE msg_id = $1`, id).Scan(&delay); err != nil {
		t.Fatal(err)
	}
	if delay < time.Second || delay > 10*time.Second {
		t.Fatalf("1ms delay became %v, want about 1s", delay)
	}
}

func TestDelay(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "later")
	if _, err := queue.Send(ctx, pool, "later", body(t, "hour"), nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := pgmq.SendWithDelayTimestamp(ctx, pool, "later", body(t, "tomorrow"), time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.SendBatch(ctx, pool, "later", []json.RawMessage{body(t, 1), body(t, 2)}, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	nowID := mustSend(t, ctx, pool, "later", "now")

	wantIDs(t, "read with delayed messages", ids(mustRead(t, ctx, pool, "later", time.Minute, 10)), []int64{nowID})
	m := mustMetrics(t, ctx, pool, "later")
	if m.Length != 5 || m.VisibleLength != 0 {
		t.Fatalf("metrics: length %d, visible %d; want 5, 0", m.Length, m.VisibleLength)
	}
}

func TestFIFOOrder(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "fifo")
	var want []int64
	for i := range 3 {
		want = append(want, mustSend(t, ctx, pool, "fifo", i))
	}
	batch, err := queue.SendBatch(ctx, pool, "fifo", []json.RawMessage{body(t, 3), body(t, 4), body(t, 5)}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, batch...)
	if !slices.IsSorted(want) {
		t.Fatalf("ids not increasing in send order: %v", want)
	}
	got := mustRead(t, ctx, pool, "fifo", time.Minute, 4)
	wantIDs(t, "first four", ids(got), want[:4])
	got = append(got, mustRead(t, ctx, pool, "fifo", time.Minute, 10)...)
	wantIDs(t, "all", ids(got), want)
	for i, m := range got {
		var n int
		if err := json.Unmarshal(m.Body, &n); err != nil || n != i {
			t.Fatalf("message %d has body %s, want %d", i, m.Body, i)
		}
	}
}

func TestConditionalRead(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "cond")
	mustSend(t, ctx, pool, "cond", map[string]string{"kind": "a"})
	b := mustSend(t, ctx, pool, "cond", map[string]string{"kind": "b"})
	rows, err := pool.Query(ctx, `SELECT msg_id FROM pgmq.read('cond', 30, 10, '{"kind": "b"}')`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "conditional read", got, []int64{b})
}

// TestSkipLocked: a reader must pass over rows another open transaction has
// claimed, rather than wait for it or return them twice.
func TestSkipLocked(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "locked")
	var all []int64
	for i := range 6 {
		all = append(all, mustSend(t, ctx, pool, "locked", i))
	}
	tx1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx)

	first := mustRead(t, ctx, tx1, "locked", time.Minute, 3)
	// Without SKIP LOCKED this read blocks on tx1's row locks; the short
	// deadline turns that into a failure.
	ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	second := mustRead(t, ctx2, tx2, "locked", time.Minute, 10)
	wantIDs(t, "tx1", ids(first), all[:3])
	wantIDs(t, "tx2", ids(second), all[3:])
}

func TestConcurrentReadersNeverShareAMessage(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "shared")
	const n = 200
	bodies := make([]json.RawMessage, n)
	for i := range bodies {
		bodies[i] = body(t, i)
	}
	if _, err := queue.SendBatch(ctx, pool, "shared", bodies, nil, 0); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int64]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				msgs, err := queue.Read(ctx, pool, "shared", time.Hour, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(msgs) == 0 {
					return
				}
				mu.Lock()
				for _, m := range msgs {
					seen[m.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("readers got %d distinct messages, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("message %d delivered %d times", id, c)
		}
	}
}

func TestBatchSendReadDeleteArchive(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "batch")
	headers := []map[string]string{{"n": "0"}, nil, {"n": "2"}, {}, {"n": "4"}}
	bodies := make([]json.RawMessage, len(headers))
	for i := range bodies {
		bodies[i] = body(t, i)
	}
	sent, err := queue.SendBatch(ctx, pool, "batch", bodies, headers, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 5 {
		t.Fatalf("sent %d ids, want 5", len(sent))
	}
	got := mustRead(t, ctx, pool, "batch", time.Minute, 10)
	wantIDs(t, "read batch", ids(got), sent)
	for i, m := range got {
		if !equalHeaders(m.Headers, headers[i]) {
			t.Errorf("message %d headers %#v, want %#v", i, m.Headers, headers[i])
		}
	}

	deleted, err := queue.DeleteBatch(ctx, pool, "batch", []int64{sent[0], sent[1], 999999})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	wantIDs(t, "deleted", deleted, sent[:2])

	archived, err := queue.ArchiveBatch(ctx, pool, "batch", []int64{sent[2], sent[3], sent[0]})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(archived)
	wantIDs(t, "archived", archived, sent[2:4])

	if ok, err := queue.Archive(ctx, pool, "batch", sent[4]); err != nil || !ok {
		t.Fatalf("archive %d: %v, %v", sent[4], ok, err)
	}
	if ok, err := queue.Archive(ctx, pool, "batch", sent[4]); err != nil || ok {
		t.Fatalf("archive twice: %v, %v; want false", ok, err)
	}
	if ok, err := queue.Delete(ctx, pool, "batch", sent[4]); err != nil || ok {
		t.Fatalf("delete archived: %v, %v; want false", ok, err)
	}

	rows, err := pool.Query(ctx, `SELECT msg_id FROM pgmq.a_batch ORDER BY msg_id`)
	if err != nil {
		t.Fatal(err)
	}
	inArchive, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "archive table", inArchive, sent[2:])
	if m := mustMetrics(t, ctx, pool, "batch"); m.Length != 0 {
		t.Fatalf("queue length %d after settling everything, want 0", m.Length)
	}
	if _, err := queue.SendBatch(ctx, pool, "batch", bodies, headers[:2], 0); err == nil {
		t.Fatal("send batch with 2 headers for 5 bodies: no error")
	}
}

func equalHeaders(got, want map[string]string) bool {
	if (got == nil) != (want == nil) {
		return false
	}
	return len(got) == len(want) && func() bool {
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	}()
}

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "hdr")
	want := map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"quote\"d":    "line\nbreak ✓",
	}
	if _, err := queue.Send(ctx, pool, "hdr", body(t, "x"), want, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Send(ctx, pool, "hdr", body(t, "y"), map[string]string{}, 0); err != nil {
		t.Fatal(err)
	}
	// Another client may put non-string values in headers.
	if _, err := pool.Exec(ctx, `SELECT pgmq.send('hdr', '"z"'::jsonb, '{"n": 1, "b": true, "s": "x"}'::jsonb)`); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, ctx, pool, "hdr", time.Minute, 3)
	if len(got) != 3 {
		t.Fatalf("read %d messages, want 3", len(got))
	}
	for i, w := range []map[string]string{want, {}, {"n": "1", "b": "true", "s": "x"}} {
		if !equalHeaders(got[i].Headers, w) {
			t.Errorf("message %d headers %#v, want %#v", i, got[i].Headers, w)
		}
	}
}

func TestReadWithPoll(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "poll")

	t.Run("empty after max poll", func(t *testing.T) {
		start := time.Now()
		msgs, err := queue.ReadWithPoll(ctx, pool, "poll", time.Minute, 1, time.Second, 50*time.Millisecond)
		elapsed := time.Since(start)
		if err != nil || len(msgs) != 0 {
			t.Fatalf("got %d messages, %v; want none", len(msgs), err)
		}
		if elapsed < time.Second || elapsed > 5*time.Second {
			t.Fatalf("returned after %v, want about 1s", elapsed)
		}
	})

	t.Run("returns when a message arrives", func(t *testing.T) {
		type result struct {
			msgs []queue.Message
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			msgs, err := queue.ReadWithPoll(ctx, pool, "poll", time.Minute, 5, 30*time.Second, 50*time.Millisecond)
			done <- result{msgs, err, time.Since(start)}
		}()
		// Send only once the poller is waiting on the server, so the test
		// proves it picks up a message that arrives during the poll.
		waitFor(t, 10*time.Second, "read_with_poll to start", func() (bool, error) {
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND state = 'active'
				  AND query LIKE '%pgmq.read_with_poll%' AND pid <> pg_backend_pid()`).Scan(&n)
			return n == 1, err
		})
		id := mustSend(t, ctx, pool, "poll", "wake")
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		wantIDs(t, "polled", ids(r.msgs), []int64{id})
		if r.took > 10*time.Second {
			t.Fatalf("poll returned after %v, want soon after the send (max poll 30s)", r.took)
		}
	})
}

func TestPop(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "pop")
	a := mustSend(t, ctx, pool, "pop", "a")
	b := mustSend(t, ctx, pool, "pop", "b")
	c := mustSend(t, ctx, pool, "pop", "c")
	wantIDs(t, "lease a", ids(mustRead(t, ctx, pool, "pop", time.Hour, 1)), []int64{a})

	for _, want := range []int64{b, c} {
		m, err := queue.Pop(ctx, pool, "pop")
		if err != nil || m == nil || m.ID != want {
			t.Fatalf("pop: %+v, %v; want message %d", m, err, want)
		}
	}
	if m, err := queue.Pop(ctx, pool, "pop"); err != nil || m != nil {
		t.Fatalf("pop with only an invisible message: %+v, %v; want nil, nil", m, err)
	}
	if got := mustMetrics(t, ctx, pool, "pop"); got.Length != 1 {
		t.Fatalf("length %d after popping two of three, want 1", got.Length)
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "purge")
	for i := range 3 {
		mustSend(t, ctx, pool, "purge", i)
	}
	archived := mustSend(t, ctx, pool, "purge", "keep")
	if ok, err := queue.Archive(ctx, pool, "purge", archived); err != nil || !ok {
		t.Fatalf("archive: %v, %v", ok, err)
	}
	n, err := queue.Purge(ctx, pool, "purge")
	if err != nil || n != 3 {
		t.Fatalf("purge: %d, %v; want 3", n, err)
	}
	m := mustMetrics(t, ctx, pool, "purge")
	if m.Length != 0 || m.TotalMessages != 4 {
		t.Fatalf("after purge: length %d, total %d; want 0, 4", m.Length, m.TotalMessages)
	}
	var inArchive int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_purge`).Scan(&inArchive); err != nil || inArchive != 1 {
		t.Fatalf("archive holds %d rows (%v), want 1: purge must not touch it", inArchive, err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "metered")
	if err := queue.Create(ctx, pool, "idle"); err != nil {
		t.Fatal(err)
	}
	empty := mustMetrics(t, ctx, pool, "metered")
	if empty != (queue.Metrics{Queue: "metered", ScrapedAt: empty.ScrapedAt}) || empty.ScrapedAt.IsZero() {
		t.Fatalf("empty queue metrics %+v", empty)
	}

	first := mustSend(t, ctx, pool, "metered", 1)
	mustSend(t, ctx, pool, "metered", 2)
	if _, err := queue.Send(ctx, pool, "metered", body(t, 3), nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	mustRead(t, ctx, pool, "metered", time.Hour, 1)
	if ok, err := queue.Delete(ctx, pool, "metered", first); err != nil || !ok {
		t.Fatal(ok, err)
	}
	mustSend(t, ctx, pool, "metered", 4)

	// Queued: 2 (visible), 3 (delayed), 4 (visible); 1 was read then deleted.
	m := mustMetrics(t, ctx, pool, "metered")
	if m.Queue != "metered" || m.Length != 3 || m.VisibleLength != 2 || m.TotalMessages != 4 {
		t.Fatalf("metrics %+v; want length 3, visible 2, total 4", m)
	}
	if m.OldestAge < m.NewestAge || m.NewestAge < 0 || m.OldestAge > time.Minute {
		t.Fatalf("ages: oldest %v, newest %v", m.OldestAge, m.NewestAge)
	}

	all, err := queue.AllMetrics(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]queue.Metrics{}
	for _, x := range all {
		byName[x.Queue] = x
	}
	names, err := queue.List(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	idle, ok := byName["idle"]
	metered := byName["metered"]
	metered.ScrapedAt = m.ScrapedAt
	if len(all) != len(names) || metered != m || !ok || idle.Length != 0 || idle.TotalMessages != 0 {
		t.Fatalf("all metrics %+v for queues %v", all, names)
	}
}

func TestDropAndList(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	baseline := listWithout(t, ctx, pool, nil)
	for _, name := range []string{"b_queue", "a_queue"} {
		if err := queue.Create(ctx, pool, name); err != nil {
			t.Fatal(err)
		}
	}
	mustSend(t, ctx, pool, "a_queue", "x")
	wantNames(t, listWithout(t, ctx, pool, baseline), []string{"a_queue", "b_queue"})

	if ok, err := queue.Drop(ctx, pool, "a_queue"); err != nil || !ok {
		t.Fatalf("drop: %v, %v; want true", ok, err)
	}
	if ok, err := queue.Drop(ctx, pool, "a_queue"); err != nil || ok {
		t.Fatalf("drop again: %v, %v; want false", ok, err)
	}
	if ok, err := queue.Drop(ctx, pool, "never_was"); err != nil || ok {
		t.Fatalf("drop unknown: %v, %v; want false", ok, err)
	}
	if tableExists(t, ctx, pool, "q_a_queue") || tableExists(t, ctx, pool, "a_a_queue") {
		t.Fatal("tables of a dropped queue remain")
	}
	wantNames(t, listWithout(t, ctx, pool, baseline), []string{"b_queue"})
}

// TestMissingQueueFails: operations on a queue that does not exist must fail,
// not look like an empty queue (pgmq-go's row-set functions hide this error).
func TestMissingQueueFails(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	const q = "absent"
	checks := map[string]func() error{
		"send": func() error { _, err := queue.Send(ctx, pool, q, body(t, 1), nil, 0); return err },
		"send headers": func() error {
			_, err := queue.Send(ctx, pool, q, body(t, 1), map[string]string{"a": "b"}, 0)
			return err
		},
		"send batch": func() error {
			_, err := queue.SendBatch(ctx, pool, q, []json.RawMessage{body(t, 1)}, nil, 0)
			return err
		},
		"read":          func() error { _, err := queue.Read(ctx, pool, q, time.Second, 1); return err },
		"read poll":     func() error { _, err := queue.ReadWithPoll(ctx, pool, q, time.Second, 1, 0, 0); return err },
		"pop":           func() error { _, err := queue.Pop(ctx, pool, q); return err },
		"delete":        func() error { _, err := queue.Delete(ctx, pool, q, 1); return err },
		"delete batch":  func() error { _, err := queue.DeleteBatch(ctx, pool, q, []int64{1}); return err },
		"archive":       func() error { _, err := queue.Archive(ctx, pool, q, 1); return err },
		"archive batch": func() error { _, err := queue.ArchiveBatch(ctx, pool, q, []int64{1}); return err },
		"set vt":        func() error { _, err := queue.SetVT(ctx, pool, q, 1, 0); return err },
		"purge":         func() error { _, err := queue.Purge(ctx, pool, q); return err },
		"metrics":       func() error { _, err := queue.QueueMetrics(ctx, pool, q); return err },
		"enable notify": func() error { return queue.EnableNotify(ctx, pool, q) },
	}
	for what, call := range checks {
		err := call()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
			t.Errorf("%s on a missing queue: %v; want undefined_table (42P01)", what, err)
		} else if !strings.Contains(err.Error(), q) {
			t.Errorf("%s: error %q does not name the queue", what, err)
		}
	}
}

// TestInvalidAndHostileNames: names are refused by the Go validation, and also
// by the SQL functions when a client skips it; nothing is ever injected.
func TestInvalidAndHostileNames(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	ext := usesExtension(t, ctx, pool)
	tablesBefore := queueTables(t, ctx, pool)

	// The extension rejects these too; our implementation rejects anything
	// that is not a plain lowercase name.
	hostile := []string{"x; drop table pgmq.meta", "x'; drop table pgmq.meta; --", "a$b", "a--b"}
	strict := []string{"", "Upper", "1abc", "a-b", `a"b`, "a b", "é", strings.Repeat("a", 48)}
	names := hostile
	if !ext {
		names = append(slices.Clone(hostile), strict...)
	}
	sqlCalls := []string{
		`SELECT pgmq.create($1::text)`,
		`SELECT pgmq.create_unlogged($1::text)`,
		`SELECT pgmq.drop_queue($1::text)`,
		`SELECT * FROM pgmq.send($1::text, '1'::jsonb)`,
		`SELECT * FROM pgmq.send_batch($1::text, ARRAY['1']::jsonb[])`,
		`SELECT * FROM pgmq.read($1::text, 1, 1)`,
		`SELECT * FROM pgmq.read_with_poll($1::text, 1, 1, 1, 10)`,
		`SELECT * FROM pgmq.pop($1::text)`,
		`SELECT pgmq.delete($1::text, 1::bigint)`,
		`SELECT pgmq.archive($1::text, 1::bigint)`,
		`SELECT * FROM pgmq.set_vt($1::text, 1, 0)`,
		`SELECT pgmq.purge_queue($1::text)`,
		`SELECT * FROM pgmq.metrics($1::text)`,
		`SELECT pgmq.enable_notify_insert($1::text)`,
	}
	for _, name := range names {
		if err := queue.Create(ctx, pool, name); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("queue.Create(%q): %v; want ErrInvalidName", name, err)
		}
		if _, err := queue.Send(ctx, pool, name, body(t, 1), nil, 0); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("queue.Send(%q): %v; want ErrInvalidName", name, err)
		}
		if _, err := queue.Read(ctx, pool, name, time.Second, 1); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("queue.Read(%q): %v; want ErrInvalidName", name, err)
		}
		for _, sql := range sqlCalls {
			_, err := pool.Exec(ctx, sql, name)
			if err == nil {
				t.Errorf("%s with %q: no error", sql, name)
				continue
			}
			var pgErr *pgconn.PgError
			if !ext && (!errors.As(err, &pgErr) || pgErr.Code != "42602" || !strings.Contains(pgErr.Message, "invalid pgmq queue name")) {
				t.Errorf("%s with %q: %v; want invalid_name (42602) naming the problem", sql, name, err)
			}
		}
	}
	if !tableExists(t, ctx, pool, "meta") {
		t.Fatal("pgmq.meta is gone: a queue name was injected")
	}
	if after := queueTables(t, ctx, pool); !slices.Equal(after, tablesBefore) {
		t.Fatalf("pgmq tables changed after only invalid names were used:\n before %v\n after  %v", tablesBefore, after)
	}
	if err := queue.Create(ctx, pool, strings.Repeat("a", 47)); err != nil {
		t.Fatalf("a 47-character name must be accepted: %v", err)
	}
}

// TestPGMQGoClient runs pgmq-go's own functions, unchanged, against the
// installed PGMQ.
func TestPGMQGoClient(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := testCtx(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pgmq.CreateQueue(ctx, pool, "client"))
	must(pgmq.CreateUnloggedQueue(ctx, pool, "client_unlogged"))

	id1, err := pgmq.Send(ctx, pool, "client", json.RawMessage(`{"n": 1}`))
	must(err)
	_, err = pgmq.SendWithDelay(ctx, pool, "client", json.RawMessage(`{"n": "later"}`), 3600)
	must(err)
	batch, err := pgmq.SendBatch(ctx, pool, "client", []json.RawMessage{[]byte(`{"n": 2}`), []byte(`{"n": 3}`)})
	must(err)
	_, err = pgmq.SendBatchWithDelay(ctx, pool, "client", []json.RawMessage{[]byte(`{"n": "later2"}`)}, 3600)
	must(err)
	if len(batch) != 2 || batch[0] != id1+2 || batch[1] != id1+3 {
		t.Fatalf("batch ids %v after first id %d", batch, id1)
	}

	m, err := pgmq.Read(ctx, pool, "client", 60)
	must(err)
	if m.MsgID != id1 || m.ReadCount != 1 || string(m.Message) != `{"n": 1}` || m.VT.Before(m.EnqueuedAt.Add(59*time.Second)) {
		t.Fatalf("pgmq.Read: %+v", m)
	}
	msgs, err := pgmq.ReadBatch(ctx, pool, "client", 60, 10)
	must(err)
	if len(msgs) != 2 || msgs[0].MsgID != batch[0] || msgs[1].MsgID != batch[1] {
		t.Fatalf("pgmq.ReadBatch: %+v", msgs)
	}

	ok, err := pgmq.Archive(ctx, pool, "client", id1)
	must(err)
	archived, err := pgmq.ArchiveBatch(ctx, pool, "client", []int64{batch[0]})
	must(err)
	deleted, err := pgmq.Delete(ctx, pool, "client", batch[1])
	must(err)
	if !ok || !slices.Equal(archived, batch[:1]) || !deleted {
		t.Fatalf("archive %v, archive batch %v, delete %v", ok, archived, deleted)
	}
	gone, err := pgmq.DeleteBatch(ctx, pool, "client", []int64{batch[1]})
	must(err)
	if len(gone) != 0 {
		t.Fatalf("delete batch of a deleted message: %v", gone)
	}

	_, err = pgmq.Send(ctx, pool, "client_unlogged", json.RawMessage(`{"pop": true}`))
	must(err)
	popped, err := pgmq.Pop(ctx, pool, "client_unlogged")
	must(err)
	if string(popped.Message) != `{"pop": true}` {
		t.Fatalf("pgmq.Pop: %+v", popped)
	}
	if _, err := pgmq.Pop(ctx, pool, "client_unlogged"); !errors.Is(err, pgmq.ErrNoRows) {
		t.Fatalf("pgmq.Pop on empty queue: %v; want ErrNoRows", err)
	}
	if _, err := pgmq.Read(ctx, pool, "client", 60); !errors.Is(err, pgmq.ErrNoRows) {
		t.Fatalf("pgmq.Read with only delayed messages: %v; want ErrNoRows", err)
	}

	must(pgmq.DropQueue(ctx, pool, "client"))
	must(pgmq.DropQueue(ctx, pool, "client_unlogged"))
	if tableExists(t, ctx, pool, "q_client") {
		t.Fatal("pgmq.DropQueue left the table")
	}
}

// TestJoinsCallerTransaction: a send in a rolled-back transaction never
// happened.
func TestJoinsCallerTransaction(t *testing.T) {
	t.Parallel()
	pool, ctx := newQueue(t, "txq")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Send(ctx, tx, "txq", body(t, 1), map[string]string{"a": "b"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.SendBatch(ctx, tx, "txq", []json.RawMessage{body(t, 2)}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if m := mustMetrics(t, ctx, pool, "txq"); m.Length != 0 {
		t.Fatalf("length %d after rollback, want 0", m.Length)
	}
}

// TestNotifyOnInsert: after EnableNotify, a committed insert statement wakes a
// LISTENing connection, once per statement. A sentinel notification sent after
// the inserts marks the end of what to count, so no test waits on a timer.
func TestNotifyOnInsert(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t)
	pool := testdb.Pool(t, url)
	ctx := testCtx(t)
	const q = "woken"
	if err := queue.Create(ctx, pool, q); err != nil {
		t.Fatal(err)
	}
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close(context.Background()) })
	channel := queue.NotifyChannel(q)
	if channel != "pgmq.q_woken.INSERT" {
		t.Fatalf("channel %q", channel)
	}
	for _, ch := range []string{channel, "sentinel"} {
		if _, err := listener.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	countUntilSentinel := func() int {
		t.Helper()
		if _, err := pool.Exec(ctx, `SELECT pg_notify('sentinel', '')`); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			note, err := listener.WaitForNotification(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if note.Channel == "sentinel" {
				return n
			}
			if note.Channel != channel {
				t.Fatalf("notification on %q", note.Channel)
			}
			n++
		}
	}

	mustSend(t, ctx, pool, q, "before")
	if n := countUntilSentinel(); n != 0 {
		t.Fatalf("%d notifications before EnableNotify, want 0", n)
	}

	for range 2 { // idempotent
		if err := queue.EnableNotify(ctx, pool, q); err != nil {
			t.Fatal(err)
		}
	}
	if !usesExtension(t, ctx, pool) {
		// Postgres folds identical notifications within a transaction, so a
		// row-level trigger would also deliver one per batch; only the catalog
		// shows that ours runs once per statement.
		var perRow bool
		err := pool.QueryRow(ctx, `SELECT (tgtype & 1) = 1 FROM pg_trigger
			WHERE tgrelid = 'pgmq.q_woken'::regclass AND tgname = 'trigger_notify_queue_insert_listeners'`).Scan(&perRow)
		if err != nil || perRow {
			t.Fatalf("notify trigger per row %v (%v); want a statement-level trigger", perRow, err)
		}
	}
	mustSend(t, ctx, pool, q, "one")
	if n := countUntilSentinel(); n != 1 {
		t.Fatalf("%d notifications for one send, want 1", n)
	}

	bodies := []json.RawMessage{body(t, 1), body(t, 2), body(t, 3), body(t, 4)}
	if _, err := queue.SendBatch(ctx, pool, q, bodies, nil, 0); err != nil {
		t.Fatal(err)
	}
	if n := countUntilSentinel(); n != 1 {
		t.Fatalf("%d notifications for one batch send, want 1", n)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, ctx, tx, q, "rolled back")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countUntilSentinel(); n != 0 {
		t.Fatalf("%d notifications for a rolled-back send, want 0", n)
	}

	if _, err := pool.Exec(ctx, `SELECT pgmq.disable_notify_insert($1)`, q); err != nil {
		t.Fatal(err)
	}
	mustSend(t, ctx, pool, q, "after")
	if n := countUntilSentinel(); n != 0 {
		t.Fatalf("%d notifications after disable_notify_insert, want 0", n)
	}
}

func queueTables(t *testing.T, ctx context.Context, db queue.DB) []string {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT tablename::text FROM pg_tables WHERE schemaname = 'pgmq' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}
