package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ExecTx runs a statement in tx, for tests that need one the store has no
// method for.
func ExecTx(ctx context.Context, tx Tx, sql string, args ...any) error {
	_, err := tx.tx.Exec(ctx, sql, args...)
	return err
}

// ExpiredLeasesSQL is the reaper's query (tests).
const ExpiredLeasesSQL = expiredLeasesSQL

// QueryRowTx runs a one-row query in tx (tests).
func QueryRowTx(ctx context.Context, tx Tx, sql string, args ...any) pgx.Row {
	return tx.tx.QueryRow(ctx, sql, args...)
}

// QueryTx runs a query in tx (tests).
func QueryTx(ctx context.Context, tx Tx, sql string, args ...any) (pgx.Rows, error) {
	return tx.tx.Query(ctx, sql, args...)
}

// PendingCreates is the number of tasks created in tx and not written yet
// (tests).
func PendingCreates(tx Tx) int {
	if tx.tx.buf == nil {
		return 0
	}
	return len(tx.tx.buf.creates.list)
}
