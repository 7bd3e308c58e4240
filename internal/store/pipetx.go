package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipeTx is a transaction on a pooled connection that saves two round trips
// of pgx's own: its opening statements (BEGIN and the SET LOCALs) go out in
// the pipeline of its first statement, and its COMMIT in one pipeline with
// the wake-ups that follow it (Store.notify's). Nothing else changes: the
// statements run in the same order, each sees the ones before, and a
// statement that fails aborts the transaction as before. A wake-up queued
// after the COMMIT runs only if the COMMIT succeeded (a pipeline stops at
// its first error).
type pipeTx struct {
	conn *pgxpool.Conn
	// opening are the statements that open the transaction, until they
	// have been sent; begun is set once they have.
	opening []string
	begun   bool
}

// SendBatch sends b, preceded by the opening statements if they have not
// gone out yet (their results are read here, so that b's come first to the
// caller).
func (p *pipeTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if p.begun {
		return p.conn.SendBatch(ctx, b)
	}
	all := &pgx.Batch{}
	for _, s := range p.opening {
		all.Queue(s)
	}
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	p.begun = true
	res := p.conn.SendBatch(ctx, all)
	for range p.opening {
		if _, err := res.Exec(); err != nil {
			return &failedBatch{BatchResults: res, err: fmt.Errorf("begin: %w", err)}
		}
	}
	return res
}

func (p *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !p.begun && len(args) == 0 {
		// pgx sends a statement without arguments by the simple protocol,
		// which may hold several statements; a pipeline may not: open the
		// transaction on its own first.
		p.begun = true
		if _, err := p.conn.Exec(ctx, strings.Join(p.opening, "; ")); err != nil {
			return pgconn.CommandTag{}, fmt.Errorf("begin: %w", err)
		}
	}
	if p.begun {
		return p.conn.Exec(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	res := p.SendBatch(ctx, b)
	tag, err := res.Exec()
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (p *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if p.begun {
		return p.conn.Query(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	res := p.SendBatch(ctx, b)
	rows, err := res.Query()
	if err != nil {
		_ = res.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, res: res}, nil
}

func (p *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	if err != nil {
		return errRow{err}
	}
	return &batchRow{rows: rows}
}

// commit sends COMMIT, followed in the same pipeline by notifySQL (with
// notifyArgs) when notifySQL is not empty and the transaction has not
// failed. A failed transaction's COMMIT goes alone: the server answers it
// ROLLBACK (pgx.ErrTxCommitRollback here), and a pipeline would have run the
// wake-up after it regardless. A COMMIT that fails stops the pipeline
// before the wake-up. The wake-up's own result is not the commit's.
func (p *pipeTx) commit(ctx context.Context, notifySQL string, notifyArgs ...any) error {
	if !p.begun {
		// Nothing was sent: there is no transaction to commit.
		return nil
	}
	if notifySQL == "" || p.conn.Conn().PgConn().TxStatus() != 'T' {
		tag, err := p.conn.Exec(ctx, "COMMIT")
		if err == nil && tag.String() != "COMMIT" {
			err = pgx.ErrTxCommitRollback
		}
		return err
	}
	b := &pgx.Batch{}
	b.Queue("COMMIT")
	b.Queue(notifySQL, notifyArgs...)
	res := p.conn.SendBatch(ctx, b)
	tag, err := res.Exec()
	if err == nil && tag.String() != "COMMIT" {
		err = pgx.ErrTxCommitRollback
	}
	if err == nil {
		_, _ = res.Exec()
	}
	_ = res.Close()
	return err
}

// rollback ends a transaction that was begun and not committed. A
// connection it cannot bring back to idle is not reused (pgxpool destroys
// a released connection that is still in a transaction).
func (p *pipeTx) rollback(ctx context.Context) {
	if p.begun {
		_, _ = p.conn.Exec(ctx, "ROLLBACK")
	}
}

// failedBatch answers every result with the error that stopped the batch.
type failedBatch struct {
	pgx.BatchResults
	err error
}

func (f *failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, f.err }
func (f *failedBatch) Query() (pgx.Rows, error)         { return nil, f.err }
func (f *failedBatch) QueryRow() pgx.Row                { return errRow{f.err} }
func (f *failedBatch) Close() error {
	_ = f.BatchResults.Close()
	return f.err
}

// batchRows are the rows of a one-query batch; closing them closes the
// batch, whose error (if the rows had none) Err then reports.
type batchRows struct {
	pgx.Rows
	res    pgx.BatchResults
	closed bool
	err    error
}

func (r *batchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.res.Close()
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// batchRow is QueryRow's answer from a one-query batch: pgx.Row semantics
// (pgx.ErrNoRows when there is no row; the batch closed after the scan).
type batchRow struct {
	rows pgx.Rows
}

func (r *batchRow) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
