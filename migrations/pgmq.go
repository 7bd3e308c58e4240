package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	_ "embed" // the SQL implementation of PGMQ is embedded in the binary
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pressly/goose/v3"
)

// pgmqSQL is our implementation of the PGMQ 1.5-1.9 SQL API, used where the
// server has no pgmq extension. It lives outside the top-level folder because
// every top-level *.sql file is a goose migration.
//
//go:embed pgmq_impl/pgmq.sql
var pgmqSQL string

// pgmqImplEnv chooses the PGMQ implementation when migration 1 runs:
//
//	"" or "auto"  the pgmq extension when the server offers it, else our SQL;
//	"sql"         always our SQL, even where the extension exists (to test it,
//	              or to avoid an extension version we cannot use);
//	"extension"   the extension, failing when the server does not offer it.
//
// It is read when the migration runs; migration 1 runs once per database, so
// changing it later does not switch an existing database.
const pgmqImplEnv = "TASKER_PGMQ_IMPL"

// The extension versions whose API matches pgmq-go v0.6.0: 1.5 added the
// headers column it scans, and 1.10 added a seventh message column
// (last_read_at) that it cannot scan.
const (
	minPGMQMinor = 5
	maxPGMQMinor = 9
)

// pgmqMigrationIdentity feeds Hash, so that a test template database migrated
// with an older pgmq.sql (or under another TASKER_PGMQ_IMPL) is not reused.
// Bump the "v1" when the Go logic below changes behaviour.
var pgmqMigrationIdentity = "pgmq-v1:" + os.Getenv(pgmqImplEnv) + ":" + sha256Hex(pgmqSQL)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Name is how a migration is shown in logs and status: its file, or, for
// the Go migration that installs PGMQ, what it does.
func Name(version int64, path string) string {
	switch {
	case path != "":
		return path
	case version == 1:
		return "pgmq (extension or SQL implementation)"
	default:
		return "go migration " + strconv.FormatInt(version, 10)
	}
}

// pgmqMigration installs PGMQ as migration version 1.
//
// Because goose records version 1 as applied, editing pgmq.sql changes nothing
// in databases already migrated: ship such a change as a new migration that
// executes pgmqSQL again (the file is written to be re-runnable).
func pgmqMigration() *goose.Migration {
	return goose.NewGoMigration(1,
		&goose.GoFunc{RunTx: upPGMQ},
		&goose.GoFunc{RunTx: downPGMQ},
	)
}

func upPGMQ(ctx context.Context, tx *sql.Tx) error {
	impl := os.Getenv(pgmqImplEnv)
	switch impl {
	case "", "auto", "sql", "extension":
	default:
		return fmt.Errorf("%s=%q: want auto, sql or extension", pgmqImplEnv, impl)
	}
	if impl == "sql" {
		return installPGMQSQL(ctx, tx)
	}
	available, err := pgmqExtensionAvailable(ctx, tx)
	if err != nil {
		return err
	}
	if available {
		return installPGMQExtension(ctx, tx)
	}
	if impl == "extension" {
		return fmt.Errorf("%s=extension, but the server does not offer the pgmq extension", pgmqImplEnv)
	}
	return installPGMQSQL(ctx, tx)
}

func pgmqExtensionAvailable(ctx context.Context, tx *sql.Tx) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq'`).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for the pgmq extension: %w", err)
	}
	return true, nil
}

func installPGMQExtension(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pgmq CASCADE`); err != nil {
		return fmt.Errorf("create extension pgmq: %w", err)
	}
	var version string
	if err := tx.QueryRowContext(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'pgmq'`).Scan(&version); err != nil {
		return fmt.Errorf("read pgmq extension version: %w", err)
	}
	return checkPGMQVersion(version)
}

// checkPGMQVersion accepts 1.5.x to 1.9.x. The error names the version and the
// way out, because the failure otherwise surfaces much later as scan errors.
func checkPGMQVersion(version string) error {
	major, minor, ok := parseMajorMinor(version)
	if !ok || major != 1 || minor < minPGMQMinor || minor > maxPGMQMinor {
		return fmt.Errorf("pgmq extension version %s is not supported: need 1.%d to 1.%d (pgmq-go v0.6.0 cannot read 1.10+ messages); install a supported version or set %s=sql",
			version, minPGMQMinor, maxPGMQMinor, pgmqImplEnv)
	}
	return nil
}

func parseMajorMinor(version string) (major, minor int, ok bool) {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

func installPGMQSQL(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, pgmqSQL); err != nil {
		return fmt.Errorf("install pgmq sql implementation: %w", err)
	}
	return nil
}

// downPGMQ removes whichever implementation is installed, with every queue.
func downPGMQ(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `DROP EXTENSION IF EXISTS pgmq CASCADE`); err != nil {
		return fmt.Errorf("drop extension pgmq: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DROP SCHEMA IF EXISTS pgmq CASCADE`); err != nil {
		return fmt.Errorf("drop schema pgmq: %w", err)
	}
	return nil
}
