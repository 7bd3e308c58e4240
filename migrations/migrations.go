// Package migrations holds the database schema as goose migrations embedded in
// the binary, and the one way to apply them.
//
// Version 1 installs PGMQ (the extension where the server has it, otherwise our
// SQL implementation of the same API, see pgmq.go); later versions are plain
// SQL files in this folder.
package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var sqlFiles embed.FS

// lockID is the advisory lock key held while migrating, so that replicas
// starting at once apply migrations one at a time (the others wait, then find
// nothing to do). The value is arbitrary but fixed forever.
const lockID int64 = 0x7461736b6572 // "tasker"

// NewProvider returns a goose provider over the embedded migrations, guarded
// by a Postgres session advisory lock. logger may be nil.
func NewProvider(db *sql.DB, logger *slog.Logger) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithGoMigrations(pgmqMigration()),
	}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sqlFiles, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// Up applies every pending migration.
func Up(ctx context.Context, db *sql.DB, logger *slog.Logger) ([]*goose.MigrationResult, error) {
	p, err := NewProvider(db, logger)
	if err != nil {
		return nil, err
	}
	res, err := p.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("apply migrations: %w", err)
	}
	return res, nil
}

// Pending reports whether the database lacks some of the embedded migrations.
func Pending(ctx context.Context, db *sql.DB) (bool, error) {
	p, err := NewProvider(db, nil)
	if err != nil {
		return false, err
	}
	return p.HasPending(ctx)
}

// Hash identifies the embedded schema: it changes whenever a migration file
// changes. Test harnesses use it to reuse a migrated template database.
func Hash() (string, error) {
	h := sha256.New()
	h.Write([]byte(pgmqMigrationIdentity))
	entries, err := fs.ReadDir(sqlFiles, ".")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := fs.ReadFile(sqlFiles, e.Name())
		if err != nil {
			return "", err
		}
		h.Write([]byte(e.Name()))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
