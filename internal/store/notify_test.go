package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

// Queue wake-ups: writers that set tasker.notify = after_commit skip the
// insert trigger's in-transaction NOTIFY, and the store sends the wake-up
// after its commit (never for a rolled-back insert); every other writer
// keeps the trigger's notification.
func TestQueueWakeUpsAfterCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.URL(t)
	plain := testdb.Pool(t, url)
	after := testdb.Pool(t, url, store.WithNotifyAfterCommit)
	st := store.New(after)
	if _, err := plain.Exec(ctx, `SELECT tasker.namespace_provision('wake')`); err != nil {
		t.Fatal(err)
	}
	q, err := queue.WorkerQueue("wake")
	if err != nil {
		t.Fatal(err)
	}

	lc, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lc.Close(context.Background()) })
	if _, err := lc.Exec(ctx, "LISTEN "+pgx.Identifier{queue.NotifyChannel(q)}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	// woken reports whether a wake-up arrives within d, and drains any
	// further ones already queued.
	woken := func(d time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := lc.WaitForNotification(wctx)
		if err != nil {
			return false
		}
		for {
			dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, err := lc.WaitForNotification(dctx)
			dcancel()
			if err != nil {
				return true
			}
		}
	}
	const quiet = 300 * time.Millisecond

	if _, err := plain.Exec(ctx, `SELECT pgmq.send($1, '{}'::jsonb)`, q); err != nil {
		t.Fatal(err)
	}
	if !woken(5 * time.Second) {
		t.Fatal("an insert by a plain session sent no wake-up")
	}

	if _, err := after.Exec(ctx, `SELECT pgmq.send($1, '{}'::jsonb)`, q); err != nil {
		t.Fatal(err)
	}
	if woken(quiet) {
		t.Fatal("an insert by an after_commit session was notified by the trigger")
	}

	errRollback := errors.New("roll back")
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := st.MessageSendTx(ctx, tx, q, []byte(`{}`), nil); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("InTx = %v", err)
	}
	if woken(quiet) {
		t.Fatal("a rolled-back insert sent a wake-up")
	}

	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := st.MessageSendTx(ctx, tx, q, []byte(`{}`), nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !woken(5 * time.Second) {
		t.Fatal("a committed insert by the store sent no wake-up")
	}

	// A transaction that fails at its commit (here a deferred unique
	// constraint) reports it and sends no wake-up, nor does one whose
	// statement failed while the caller went on.
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := st.MessageSendTx(ctx, tx, q, []byte(`{}`), nil); err != nil {
			return err
		}
		if err := store.ExecTx(ctx, tx, `CREATE TEMP TABLE wake_deferred (k int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP`); err != nil {
			return err
		}
		return store.ExecTx(ctx, tx, `INSERT INTO wake_deferred VALUES (1), (1)`)
	})
	if err == nil || !strings.Contains(err.Error(), "commit") || !strings.Contains(err.Error(), "23505") {
		t.Fatalf("InTx with a commit that fails = %v, want the commit's unique violation", err)
	}
	if woken(quiet) {
		t.Fatal("a transaction whose commit failed sent a wake-up")
	}
	err = st.InTx(ctx, func(tx store.Tx) error {
		if _, err := st.MessageSendTx(ctx, tx, q, []byte(`{}`), nil); err != nil {
			return err
		}
		_ = store.ExecTx(ctx, tx, `SELECT 1/0`)
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("InTx after a failed statement = %v, want %v", err, pgx.ErrTxCommitRollback)
	}
	if woken(quiet) {
		t.Fatal("a transaction that rolled back at its commit sent a wake-up")
	}

	if _, err := st.MessageSend(ctx, q, []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	if !woken(5 * time.Second) {
		t.Fatal("MessageSend sent no wake-up")
	}

	var n int
	if err := plain.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_worker_wake_queue`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("%d messages in the queue, want 4 (the rolled-back one is not)", n)
	}
}
