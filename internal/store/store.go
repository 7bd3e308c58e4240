// Package store is the only package that speaks SQL. It returns domain values
// and maps pgx errors to the sentinel errors below; pgx types do not leave it.
//
// Every state change is a compare-and-swap on the parent row's state column
// (`WHERE state = $expected`), logged as a transition row in the same
// transaction. A lost race affects no row and is reported as such, never as a
// corruption.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/pgxcodec"
	"github.com/tasker/tasker/internal/queue"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// conflictError is an ErrConflict whose message is complete in itself (no
// trailing ": conflict"), for errors a client reads.
type conflictError struct{ msg string }

func (e conflictError) Error() string { return e.msg }
func (e conflictError) Unwrap() error { return ErrConflict }

// Conflict returns an error that is ErrConflict with the given message.
func Conflict(format string, args ...any) error {
	return conflictError{msg: fmt.Sprintf(format, args...)}
}

// IsLockTimeout reports whether err is Postgres giving up on a row lock
// after the transaction's lock_timeout (SQLSTATE 55P03).
func IsLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// Store wraps the connection pool.
type Store struct {
	pool *pgxpool.Pool
	// parsed caches parsed template versions by id: a version's
	// definition never changes once registered, and parsing and
	// validating it again for every task creation cost more than the
	// insertion of the task.
	parsed sync.Map // int64 -> *template.Template
	// afterCommit: the pool's sessions set tasker.notify = after_commit, so
	// the queue triggers do not notify and the store sends the wake-ups of
	// its transactions after they commit (migration 00009).
	afterCommit bool
	// templates caches template lookups by name (templates.go).
	templates templateCache
}

// NotifySetting is the session setting (a startup parameter of the pool's
// connections, see WithNotifyAfterCommit) that moves the wake-ups of queue
// inserts out of the inserting transaction.
const NotifySetting = "tasker.notify"

// WithNotifyAfterCommit configures a pool so that its transactions send
// their queue wake-ups after committing rather than from the queues'
// insert triggers: a NOTIFY inside a transaction serialises its commit with
// every other notifying commit (docs/performance.md).
func WithNotifyAfterCommit(cfg *pgxpool.Config) {
	cfg.ConnConfig.RuntimeParams[NotifySetting] = "after_commit"
}

// WithoutJIT turns Postgres's JIT compilation off for the pool's sessions.
// The engine's statements touch a few dozen rows each, through generic plans
// whose cost estimates can pass jit_above_cost for large templates; they were
// then compiled on every run, 8 ms for 0.6 ms of work, while task locks were
// held (migration 00032, docs/performance.md).
func WithoutJIT(cfg *pgxpool.Config) { cfg.ConnConfig.RuntimeParams["jit"] = "off" }

// WithBinaryUUIDs makes the pool's connections send and receive
// github.com/google/uuid values in binary form (internal/pgxcodec): pgx
// otherwise encodes them as text through driver.Valuer, 15 % of the
// orchestrator's CPU under load. The same codecs write the engine's array
// parameters (uuid[], text[], jsonb[], ...) without boxing each element, and
// copy json and jsonb values read into a json.RawMessage instead of
// parsing them again. An AfterConnect hook already set still runs.
func WithBinaryUUIDs(cfg *pgxpool.Config) { pgxcodec.ConfigurePool(cfg) }

// New returns a store over pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, afterCommit: pool.Config().ConnConfig.RuntimeParams[NotifySetting] == "after_commit"}
}

// notify wakes the listeners of queues this process inserted into, after
// the insert committed. A wake-up lost to a crash right after the commit
// costs latency only: consumers poll as a fallback.
func (s *Store) notify(ctx context.Context, queues map[string]struct{}) {
	if sql, args := s.notifyStatement(queues); sql != "" {
		_, _ = s.pool.Exec(context.WithoutCancel(ctx), sql, args...)
	}
}

// notifyStatement is the statement (and its arguments) that wakes the
// listeners of queues, or "" when there is nothing to send: no queues, or a
// pool whose insert triggers notify themselves.
func (s *Store) notifyStatement(queues map[string]struct{}) (string, []any) {
	if !s.afterCommit || len(queues) == 0 {
		return "", nil
	}
	chans := make([]string, 0, len(queues))
	for q := range queues {
		chans = append(chans, queue.NotifyChannel(q))
	}
	return `SELECT pg_notify(c, '') FROM unnest($1::text[]) AS c`, []any{chans}
}

// Tx is an open transaction; obtain one with InTx or InTxDeferred.
type Tx struct {
	tx *txConn
}

// Deferred reports whether the transaction buffers the compare-and-swaps of
// orchestrator-owned states (see InTxDeferred).
func (t Tx) Deferred() bool { return t.tx.buf != nil }

// InTx runs fn in a transaction, committing when fn returns nil and rolling
// back otherwise. It retries fn (at most 3 times in all) when Postgres aborts
// the transaction for a deadlock or a serialization failure; fn must
// therefore be safe to run again (reset what it collects).
func (s *Store) InTx(ctx context.Context, fn func(Tx) error) error {
	return s.inTx(ctx, false, fn)
}

// InTxDeferred is InTx for transactions that hold the row locks of the tasks
// they change (every orchestrator action does). Task transitions, wake-up
// times and the transitions of steps out of orchestrator-owned states
// (pending, waiting_for_retry, enqueued_for_orchestration,
// enqueued_as_error_for_orchestration) and their dispatch are then buffered
// and applied in bulk, in one round trip, before the next statement of the
// transaction or its commit: a result batch of fifty tasks costs a handful
// of statements instead of hundreds. The compare-and-swaps are still
// checked when applied; one that finds its row elsewhere aborts the
// transaction (under the task lock that is a bug, never a race). States that
// workers also move (enqueued, in_progress) are never buffered.
func (s *Store) InTxDeferred(ctx context.Context, fn func(Tx) error) error {
	return s.inTx(ctx, true, fn)
}

func (s *Store) inTx(ctx context.Context, deferred bool, fn func(Tx) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = s.inTxOnce(ctx, deferred, fn)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

// deferredBegin starts an engine transaction with generic plans and without
// sequential scans: its statements are lookups by keys with an index, and
// their custom plans were made again on almost every execution (the
// protocol functions do the same, migrations 00012 and 00013). Like a plain
// BEGIN it goes out with the transaction's first statement (pipeTx).
var (
	deferredBegin = []string{"BEGIN", "SET LOCAL plan_cache_mode = force_generic_plan", "SET LOCAL enable_seqscan = off"}
	plainBegin    = []string{"BEGIN"}
)

func (s *Store) inTxOnce(ctx context.Context, deferred bool, fn func(Tx) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	p := &pipeTx{conn: conn, opening: plainBegin}
	if deferred {
		p.opening = deferredBegin
	}
	ended := false
	// A transaction that did not reach its COMMIT is rolled back; the
	// connection goes back to the pool (or, when it is not idle, is closed).
	defer func() {
		if !ended {
			p.rollback(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()
	c := &txConn{raw: p}
	if deferred {
		c.buf = &writeBuffer{}
	}
	if err := fn(Tx{tx: c}); err != nil {
		return err
	}
	if err := c.flush(ctx); err != nil {
		return err
	}
	// Sent or not, the COMMIT ends the transaction: one that failed is
	// rolled back by the server, and a connection left in a transaction is
	// not reused.
	ended = true
	sql, args := s.notifyStatement(c.sent)
	if err := p.commit(ctx, sql, args...); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func retryable(err error) bool {
	if errors.Is(err, errCreateRaced) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40P01" || pgErr.Code == "40001"
	}
	return false
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// PoolStats are connection pool figures for metrics.
type PoolStats struct {
	Total, Idle, Acquired, Max int32
	AcquireCount               int64
	AcquireWait                time.Duration
	EmptyAcquireCount          int64
}

// PoolStats reports the pool's current figures.
func (s *Store) PoolStats() PoolStats {
	st := s.pool.Stat()
	return PoolStats{
		Total: st.TotalConns(), Idle: st.IdleConns(), Acquired: st.AcquiredConns(), Max: st.MaxConns(),
		AcquireCount: st.AcquireCount(), AcquireWait: st.AcquireDuration(), EmptyAcquireCount: st.EmptyAcquireCount(),
	}
}

// Now returns the database clock, so that timing decisions agree with
// timestamps written by SQL functions.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t)
	return t, err
}

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
