package daemon

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors an operator can act on, for callers that branch on them.
var (
	// ErrNotMigrated: the engine's schema or one of its tables is missing.
	ErrNotMigrated = errors.New("the database is not migrated; run `orchestrator migrate`")
	// ErrUnreachable: no connection could be made (refused, timed out,
	// the server is starting or stopping).
	ErrUnreachable = errors.New("cannot reach the database")
)

// ExplainDatabaseError returns err wrapped with what an operator should do
// about it when it is one of the errors above, else err unchanged. It is
// the one place the daemon and the operator commands (prune, events tail)
// turn raw SQL errors into advice.
func ExplainDatabaseError(err error) error {
	if err == nil || errors.Is(err, ErrNotMigrated) || errors.Is(err, ErrUnreachable) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "3F000" || pgErr.Code == "42P01") {
		// 3F000 invalid_schema_name (schema "tasker" or "pgmq"),
		// 42P01 undefined_table: migrations were not applied.
		return fmt.Errorf("%w: %w", ErrNotMigrated, err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) && connectRetryable(err) {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}
