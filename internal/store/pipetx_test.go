package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

// A store transaction opens with its first statement, whichever kind it is
// (a query, a one-row query, a batch, a statement without arguments that
// may hold several), and commits with its wake-ups: every statement runs in
// the one transaction, an engine transaction has its plan settings, a
// failed transaction leaves nothing behind, and its connection serves the
// next transaction cleanly.
func TestTransactionsOpenWithTheirFirstStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.URL(t))
	st := store.New(pool)
	if _, err := pool.Exec(ctx, `CREATE TABLE public.pipe_t (k int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM public.pipe_t`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	errFail := errors.New("the caller fails")

	// A one-row query first, with no row: pgx.ErrNoRows, and the
	// transaction goes on; every statement sees the same transaction id.
	var first, last int64
	if err := st.InTx(ctx, func(tx store.Tx) error {
		var k int
		if err := store.QueryRowTx(ctx, tx, `SELECT k FROM public.pipe_t WHERE k = $1`, 1).Scan(&k); !errors.Is(err, pgx.ErrNoRows) {
			t.Errorf("first statement, no row: %v, want pgx.ErrNoRows", err)
		}
		if err := store.QueryRowTx(ctx, tx, `SELECT txid_current()`).Scan(&first); err != nil {
			return err
		}
		if err := store.ExecTx(ctx, tx, `INSERT INTO public.pipe_t VALUES ($1)`, 1); err != nil {
			return err
		}
		return store.QueryRowTx(ctx, tx, `SELECT txid_current()`).Scan(&last)
	}); err != nil {
		t.Fatal(err)
	}
	if first == 0 || first != last || count() != 1 {
		t.Errorf("transaction ids %d and %d, %d rows: want one transaction that committed its row", first, last, count())
	}

	// Rows first, then a write; the caller's failure rolls both back.
	if err := st.InTx(ctx, func(tx store.Tx) error {
		rows, err := store.QueryTx(ctx, tx, `SELECT k FROM public.pipe_t WHERE k > $1 ORDER BY k`, 0)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil || n != 1 {
			t.Errorf("first statement's rows: %d, %v; want 1 row", n, err)
		}
		if err := store.ExecTx(ctx, tx, `INSERT INTO public.pipe_t VALUES ($1)`, 2); err != nil {
			return err
		}
		return errFail
	}); !errors.Is(err, errFail) {
		t.Fatalf("InTx = %v, want the caller's error", err)
	}
	// Several statements without arguments first: both are undone with
	// the transaction.
	if err := st.InTx(ctx, func(tx store.Tx) error {
		if err := store.ExecTx(ctx, tx, `INSERT INTO public.pipe_t VALUES (3); INSERT INTO public.pipe_t VALUES (4)`); err != nil {
			return err
		}
		return errFail
	}); !errors.Is(err, errFail) {
		t.Fatalf("InTx = %v, want the caller's error", err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d rows after two rolled-back transactions, want 1", n)
	}

	// An engine transaction has its plan settings from its first
	// statement on; a plain one and the pool keep the defaults.
	settings := func(in func(context.Context, func(store.Tx) error) error) (mode, seq string) {
		if err := in(ctx, func(tx store.Tx) error {
			return store.QueryRowTx(ctx, tx, `SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')`).Scan(&mode, &seq)
		}); err != nil {
			t.Fatal(err)
		}
		return mode, seq
	}
	if mode, seq := settings(st.InTxDeferred); mode != "force_generic_plan" || seq != "off" {
		t.Errorf("engine transaction: plan_cache_mode %s, enable_seqscan %s; want force_generic_plan, off", mode, seq)
	}
	if mode, seq := settings(st.InTx); mode != "auto" || seq != "on" {
		t.Errorf("plain transaction: plan_cache_mode %s, enable_seqscan %s; want auto, on", mode, seq)
	}

	// A first statement that fails fails the transaction with its error,
	// and more transactions than the pool has connections run cleanly
	// after it (each connection is back to idle, or replaced).
	for i := 0; i < 2*int(pool.Config().MaxConns)+2; i++ {
		err := st.InTx(ctx, func(tx store.Tx) error {
			return store.ExecTx(ctx, tx, `INSERT INTO public.pipe_t VALUES ($1)`, 1)
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
			t.Fatalf("a duplicate key first: %v, want 23505", err)
		}
		var n int
		if err := st.InTxDeferred(ctx, func(tx store.Tx) error {
			return store.QueryRowTx(ctx, tx, `SELECT count(*) FROM public.pipe_t`).Scan(&n)
		}); err != nil || n != 1 {
			t.Fatalf("the transaction after a failed one: %d rows, %v", n, err)
		}
	}
}
