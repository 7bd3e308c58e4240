// Package testdb gives each test its own freshly migrated Postgres database,
// cloned from a template database that is migrated once per schema version.
//
// The server is the one DATABASE_URL names (scripts/with-postgres.sh starts a
// throwaway one for `make test`). Tests fail, rather than skip, when it is
// unset: a suite that silently runs nothing proves nothing.
package testdb

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver for pgtestdb
	"github.com/peterldowns/pgtestdb"

	"github.com/tasker/tasker/migrations"
)

type migrator struct{}

func (migrator) Hash() (string, error) { return migrations.Hash() }

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	_, err := migrations.Up(ctx, db, nil)
	return err
}

// Config returns the pgtestdb configuration for the server in DATABASE_URL.
func Config(t testing.TB) pgtestdb.Config {
	t.Helper()
	raw := os.Getenv("DATABASE_URL")
	if raw == "" {
		t.Fatalf("DATABASE_URL is not set: run the tests with `make test`, which starts a throwaway Postgres")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	pw, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return pgtestdb.Config{
		DriverName: "pgx",
		Host:       u.Hostname(),
		Port:       port,
		User:       u.User.Username(),
		Password:   pw,
		Database:   strings.TrimPrefix(u.Path, "/"),
		Options:    u.RawQuery,
		// The schema's migrations create roles and may create extensions, as
		// they do in production with the owner role: test with a superuser.
		TestRole: &pgtestdb.Role{
			Username:     "tasker_test",
			Password:     "tasker_test",
			Capabilities: "SUPERUSER",
		},
		ForceTerminateConnections: true,
	}
}

// URL creates a fresh migrated database for the test and returns its URL.
// The database is dropped when the test passes and kept (and logged) when it
// fails, for inspection.
func URL(t testing.TB) string {
	t.Helper()
	conf := pgtestdb.Custom(t, Config(t), migrator{})
	return conf.URL()
}

// EmptyURL creates a fresh database without any migration (for tests of
// migrating itself) and returns its URL; dropped like URL's.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, Config(t), pgtestdb.NoopMigrator{}).URL()
}

// New creates a fresh migrated database for the test and returns a pool on it,
// closed when the test ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, URL(t))
}

// Pool opens a pool on dbURL that is closed when the test ends; opts adjust
// its configuration.
func Pool(t testing.TB, dbURL string, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatalf("parse database url: %v", err)
	}
	cfg.MaxConns = 20
	for _, o := range opts {
		o(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
