package migrations

import (
	"context"
	"database/sql"

	"github.com/pressly/goose/v3"
)

// pgmqMigration installs PGMQ as migration version 1. PLACEHOLDER: the SQL
// implementation is being written; until then this only requires the schema.
func pgmqMigration() *goose.Migration {
	return goose.NewGoMigration(1,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS pgmq`)
			return err
		}},
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `DROP SCHEMA IF EXISTS pgmq CASCADE`)
			return err
		}},
	)
}

// pgmqMigrationIdentity changes whenever the PGMQ migration's behaviour does;
// it feeds Hash.
const pgmqMigrationIdentity = "pgmq-placeholder"
