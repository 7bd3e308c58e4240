package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// sessionStat reads the session's statistics counter
// pg_stat_get_xact_<counter> for relation rel. The counters are the ones
// the session has not reported yet, which may include earlier transactions
// and are reset when reported (only ever between transactions): read one
// twice inside a transaction and take the difference.
func sessionStat(t *testing.T, tx pgx.Tx, counter, rel string) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(context.Background(), `SELECT pg_stat_get_xact_`+counter+`($1::regclass)`, rel).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
