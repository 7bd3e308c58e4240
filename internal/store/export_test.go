package store

import "context"

// ExecTx runs a statement in tx, for tests that need one the store has no
// method for.
func ExecTx(ctx context.Context, tx Tx, sql string, args ...any) error {
	_, err := tx.tx.Exec(ctx, sql, args...)
	return err
}
