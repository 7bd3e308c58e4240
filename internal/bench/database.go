package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/config"
)

// freshDatabase is a database created for one benchmark run on the server
// the configured URL names.
type freshDatabase struct {
	serverURL string // the URL the user gave (its database is left alone)
	name      string
	url       string
	// trackFunctions is set when the database times function calls.
	trackFunctions bool
}

// createDatabase creates an empty database with a unique name on the server
// of serverURL.
func createDatabase(ctx context.Context, serverURL string) (*freshDatabase, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("tasker_bench_%s_%s", time.Now().UTC().Format("20060102_150405"), hex.EncodeToString(rnd[:]))
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(serverURL), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s (the benchmark needs CREATEDB on the server): %w", name, err)
	}
	// Time every function call: the engine's hot paths are SQL functions
	// (dispatch, claim, submit, transitions, PGMQ), so per-function times
	// say where the server's time goes. It needs a superuser; without one
	// the report simply has no function times.
	_, ferr := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` SET track_functions = 'all'`)
	u.Path = "/" + name
	return &freshDatabase{serverURL: serverURL, name: name, url: u.String(), trackFunctions: ferr == nil}, nil
}

// drop removes the database, terminating any connection left on it.
func (d *freshDatabase) drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.serverURL)
	if err != nil {
		return fmt.Errorf("connect to drop %s: %w", d.name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{d.name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// redact hides the URL's passwords (user info and query string).
func redact(raw string) string { return config.MaskURL(raw) }

// isLocalServer reports whether the URL names a server on this machine, so
// that its processes can be found in /proc.
func isLocalServer(raw string) bool {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return false
	}
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		return true // unix socket
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// queryCounter counts the statements a pool runs (each of the driver's is
// a transaction of its own, to be taken out of the engine's commits).
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// openPool opens a pool named app (application_name); counter, when not
// nil, counts its statements; configure adjusts its configuration.
func openPool(ctx context.Context, dbURL, app string, maxConns int32, counter *queryCounter, configure ...func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	for _, c := range configure {
		c(cfg)
	}
	if counter != nil {
		cfg.ConnConfig.Tracer = counter
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// ServerInfo describes the Postgres server a run used.
type ServerInfo struct {
	Version           string `json:"version"`
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
	FullPageWrites    string `json:"full_page_writes"`
	SharedBuffers     string `json:"shared_buffers"`
	// Local is true when the server runs on this machine (its CPU time is
	// then read from /proc).
	Local bool `json:"local"`
}

func readServerInfo(ctx context.Context, conn *pgx.Conn, dbURL string) (ServerInfo, error) {
	var si ServerInfo
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('full_page_writes'), current_setting('shared_buffers')`).
		Scan(&si.Version, &si.Fsync, &si.SynchronousCommit, &si.FullPageWrites, &si.SharedBuffers)
	si.Local = isLocalServer(dbURL)
	return si, err
}

// dbStats are cumulative counters of the benchmark database.
type dbStats struct {
	commits, rollbacks         int64
	inserted, updated, deleted int64
	deadlocks                  int64
	seqScans, seqTupRead       int64
	idxScans                   int64
	// blksHit and blksRead are the database's shared-buffer page accesses
	// (pg_stat_database): hits, and pages read from the kernel.
	blksHit, blksRead int64
	hotUpdated        int64
	// walRecords and walFPI are server-wide (pg_stat_wal), as WAL bytes are;
	// walOK is false where the server has no pg_stat_wal (before 14).
	walRecords, walFPI int64
	walOK              bool
	// tables are the page accesses of each table with its indexes and
	// TOAST (pg_statio_user_tables), by schema-qualified name.
	tables    map[string]int64
	functions map[string]funcStat
}

type funcStat struct {
	calls       int64
	total, self float64 // milliseconds
}

// waitIdle waits until no client connection but conn is open on the
// database, so that every backend has flushed its statistics (a backend
// sends its pending counters when it exits; while it lives they can lag by
// seconds).
func waitIdle(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			// A backend leaves pg_stat_activity just before it flushes its
			// counters on exit: give the last ones a moment.
			time.Sleep(300 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections still open on the benchmark database after %s", n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readStats(ctx context.Context, conn *pgx.Conn) (dbStats, error) {
	var s dbStats
	// This connection's own counters (the report's queries over the run's
	// rows, hundreds of thousands of page accesses) reach the shared
	// statistics only when its backend next goes idle, and from PostgreSQL
	// 15 at most once a second: unflushed, they would be counted in the
	// next window (the design model's). pg_stat_force_next_flush (15 on)
	// makes the end of that statement flush them.
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return s, fmt.Errorf("read the server version: %w", err)
	}
	if version >= 150000 {
		if _, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			return s, fmt.Errorf("flush statistics: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		return s, err
	}
	err := conn.QueryRow(ctx, `SELECT xact_commit, xact_rollback, deadlocks, blks_hit, blks_read
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.commits, &s.rollbacks, &s.deadlocks, &s.blksHit, &s.blksRead)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_database: %w", err)
	}
	err = conn.QueryRow(ctx, `SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
		coalesce(sum(n_tup_del), 0)::bigint, coalesce(sum(seq_scan), 0)::bigint, coalesce(sum(seq_tup_read), 0)::bigint,
		coalesce(sum(idx_scan), 0)::bigint, coalesce(sum(n_tup_hot_upd), 0)::bigint
		FROM pg_stat_user_tables`).Scan(&s.inserted, &s.updated, &s.deleted, &s.seqScans, &s.seqTupRead, &s.idxScans, &s.hotUpdated)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	if err := readWALStats(ctx, conn, &s); err != nil {
		return s, err
	}
	tables, err := conn.Query(ctx, `SELECT schemaname || '.' || relname,
		heap_blks_hit + heap_blks_read + coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0)
		+ coalesce(toast_blks_hit, 0) + coalesce(toast_blks_read, 0) + coalesce(tidx_blks_hit, 0) + coalesce(tidx_blks_read, 0)
		FROM pg_statio_user_tables`)
	if err != nil {
		return s, fmt.Errorf("read pg_statio_user_tables: %w", err)
	}
	s.tables = map[string]int64{}
	for tables.Next() {
		var name string
		var n int64
		if err := tables.Scan(&name, &n); err != nil {
			return s, fmt.Errorf("read pg_statio_user_tables: %w", err)
		}
		s.tables[name] = n
	}
	if err := tables.Err(); err != nil {
		return s, fmt.Errorf("read pg_statio_user_tables: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT funcid::regprocedure::text, calls, total_time, self_time FROM pg_stat_user_functions`)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_user_functions: %w", err)
	}
	defer rows.Close()
	s.functions = map[string]funcStat{}
	for rows.Next() {
		var name string
		var f funcStat
		if err := rows.Scan(&name, &f.calls, &f.total, &f.self); err != nil {
			return s, fmt.Errorf("read pg_stat_user_functions: %w", err)
		}
		s.functions[name] = f
	}
	return s, rows.Err()
}

// readWALStats reads the server's WAL record counts into s; a server
// without pg_stat_wal (before PostgreSQL 14) leaves s.walOK false.
func readWALStats(ctx context.Context, conn *pgx.Conn, s *dbStats) error {
	var has bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pg_catalog.pg_stat_wal') IS NOT NULL`).Scan(&has); err != nil {
		return fmt.Errorf("look for pg_stat_wal: %w", err)
	}
	if !has {
		return nil
	}
	if err := conn.QueryRow(ctx, `SELECT wal_records, wal_fpi FROM pg_stat_wal`).Scan(&s.walRecords, &s.walFPI); err != nil {
		return fmt.Errorf("read pg_stat_wal: %w", err)
	}
	s.walOK = true
	return nil
}

// FuncTime is the time Postgres spent in one SQL function during the
// measured window (track_functions): Self excludes the functions it called.
type FuncTime struct {
	Name              string  `json:"name"`
	Calls             int64   `json:"calls"`
	TotalMs           float64 `json:"total_ms"`
	SelfMs            float64 `json:"self_ms"`
	SelfPerCallMs     float64 `json:"self_per_call_ms"`
	SelfPerStepMicros float64 `json:"self_per_step_us"`
}

// ProtocolCalls is how the steps went through the worker protocol: the
// calls of the claim and of the two submissions (from the functions'
// statistics) and the steps each carried on average. Fewer, fuller calls
// pay the functions' fixed cost less often (docs/performance.md, rows 59
// and 60); unlike throughput on a shared machine, these counts do not move
// with the host.
type ProtocolCalls struct {
	Claims int64 `json:"claims"`
	// Submissions counts both functions' calls; SingleSubmissions those of
	// tasker.step_submit_result, one result each.
	Submissions        int64   `json:"submissions"`
	SingleSubmissions  int64   `json:"single_submissions"`
	StepsPerClaim      float64 `json:"steps_per_claim"`
	StepsPerSubmission float64 `json:"steps_per_submission"`
}

// protocolCalls sums the worker protocol's calls among fns for steps
// completed steps; nil when no claim was counted (functions not tracked).
func protocolCalls(fns []FuncTime, steps int64) *ProtocolCalls {
	var p ProtocolCalls
	for _, f := range fns {
		switch f.Name {
		case "tasker.step_claim_batch(uuid[],integer[],text,integer)":
			p.Claims += f.Calls
		case "tasker.step_submit_results(uuid[],integer[],text,boolean[],jsonb[],jsonb[],bigint[],jsonb[])":
			p.Submissions += f.Calls
		case "tasker.step_submit_result(uuid,integer,text,boolean,jsonb,jsonb,bigint,jsonb)":
			p.Submissions += f.Calls
			p.SingleSubmissions += f.Calls
		}
	}
	if p.Claims == 0 {
		return nil
	}
	p.StepsPerClaim = float64(steps) / float64(p.Claims)
	if p.Submissions > 0 {
		p.StepsPerSubmission = float64(steps) / float64(p.Submissions)
	}
	return &p
}

// functionTimes returns the functions by self time, largest first.
func functionTimes(before, after dbStats, steps int64) []FuncTime {
	var out []FuncTime
	for name, a := range after.functions {
		b := before.functions[name]
		ft := FuncTime{Name: name, Calls: a.calls - b.calls, TotalMs: a.total - b.total, SelfMs: a.self - b.self}
		if ft.Calls <= 0 {
			continue
		}
		ft.SelfPerCallMs = ft.SelfMs / float64(ft.Calls)
		if steps > 0 {
			ft.SelfPerStepMicros = ft.SelfMs * 1000 / float64(steps)
		}
		out = append(out, ft)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].SelfMs > out[k].SelfMs })
	return out
}

func walPosition(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int64, error) {
	var lsn int64
	err := q.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&lsn)
	if err != nil {
		return 0, fmt.Errorf("read WAL position: %w", err)
	}
	return lsn, nil
}

// DBCounters are what the database did during a measured window.
type DBCounters struct {
	Commits   int64 `json:"commits"`
	Rollbacks int64 `json:"rollbacks"`
	// Rows are tuples inserted, updated and deleted in the benchmark
	// database's tables (tasker and pgmq schemas).
	RowsInserted int64 `json:"rows_inserted"`
	RowsUpdated  int64 `json:"rows_updated"`
	RowsDeleted  int64 `json:"rows_deleted"`
	// WALBytes is server-wide: other databases' writes count too.
	WALBytes  int64 `json:"wal_bytes"`
	Deadlocks int64 `json:"deadlocks"`
	// SeqScans and SeqTuplesRead count sequential scans of the benchmark
	// database's tables and the rows they read; IndexScans the index scans
	// (each loop of a nested loop counts). Rows read by sequential scans
	// growing with the tables is the sign of a plan gone wrong.
	SeqScans      int64 `json:"seq_scans"`
	SeqTuplesRead int64 `json:"seq_tuples_read"`
	IndexScans    int64 `json:"index_scans"`
	// DriverCommits are the benchmark driver's own transactions (progress
	// polls, session sampling), left out of Commits.
	DriverCommits int64 `json:"driver_commits"`
	// Per step (or per message, for the floor).
	CommitsPerStep       float64 `json:"commits_per_step"`
	RowsPerStep          float64 `json:"rows_per_step"`
	WALBytesPerStep      float64 `json:"wal_bytes_per_step"`
	SeqTuplesReadPerStep float64 `json:"seq_tuples_read_per_step"`
	IndexScansPerStep    float64 `json:"index_scans_per_step"`
	// BufferAccesses are the pages of shared buffers the benchmark
	// database's statements touched (pg_stat_database: blks_hit + blks_read;
	// BufferReads the part that came from the kernel). They count the work
	// of the plans, rows and index entries, and unlike CPU time they barely
	// move with the host (a few per cent with the run's batching): what a
	// change removes from them it removed from what the engine asks of
	// Postgres, whatever that was worth in CPU.
	BufferAccesses int64 `json:"buffer_accesses"`
	BufferReads    int64 `json:"buffer_reads"`
	// HOTUpdates are the updates that wrote no index entry (heap-only
	// tuples): the cheap ones.
	HOTUpdates int64 `json:"hot_updates"`
	// WALRecords and WALFullPages count the WAL records written and the
	// full-page images among them (pg_stat_wal; server-wide like WALBytes,
	// and -1 where the server has no pg_stat_wal).
	WALRecords   int64 `json:"wal_records"`
	WALFullPages int64 `json:"wal_full_pages"`
	// Tables are the buffer accesses by table, its indexes and TOAST
	// included, most first (those of at least 1 % of all).
	Tables              []TableBuffers `json:"tables,omitempty"`
	BuffersPerStep      float64        `json:"buffers_per_step"`
	WALRecordsPerStep   float64        `json:"wal_records_per_step"`
	WALFullPagesPerStep float64        `json:"wal_full_pages_per_step"`
}

// TableBuffers are one table's buffer accesses in a measured window: its
// heap, indexes and TOAST.
type TableBuffers struct {
	Table    string  `json:"table"`
	Accesses int64   `json:"accesses"`
	PerStep  float64 `json:"per_step"`
}

func counters(before, after dbStats, walBefore, walAfter int64, units int, driverCommits int64) DBCounters {
	c := DBCounters{
		Commits: after.commits - before.commits - driverCommits, DriverCommits: driverCommits,
		Rollbacks:    after.rollbacks - before.rollbacks,
		RowsInserted: after.inserted - before.inserted, RowsUpdated: after.updated - before.updated,
		RowsDeleted: after.deleted - before.deleted, WALBytes: walAfter - walBefore,
		Deadlocks: after.deadlocks - before.deadlocks, SeqScans: after.seqScans - before.seqScans,
		SeqTuplesRead: after.seqTupRead - before.seqTupRead, IndexScans: after.idxScans - before.idxScans,
		BufferAccesses: after.blksHit + after.blksRead - before.blksHit - before.blksRead,
		BufferReads:    after.blksRead - before.blksRead, HOTUpdates: after.hotUpdated - before.hotUpdated,
		WALRecords: -1, WALFullPages: -1,
	}
	if before.walOK && after.walOK {
		c.WALRecords, c.WALFullPages = after.walRecords-before.walRecords, after.walFPI-before.walFPI
	}
	for name, n := range after.tables {
		if d := n - before.tables[name]; d > 0 && c.BufferAccesses > 0 && d*100 >= c.BufferAccesses {
			c.Tables = append(c.Tables, TableBuffers{Table: name, Accesses: d})
		}
	}
	sort.Slice(c.Tables, func(i, k int) bool {
		if c.Tables[i].Accesses != c.Tables[k].Accesses {
			return c.Tables[i].Accesses > c.Tables[k].Accesses
		}
		return c.Tables[i].Table < c.Tables[k].Table
	})
	if units > 0 {
		c.BuffersPerStep = float64(c.BufferAccesses) / float64(units)
		if c.WALRecords >= 0 {
			c.WALRecordsPerStep = float64(c.WALRecords) / float64(units)
			c.WALFullPagesPerStep = float64(c.WALFullPages) / float64(units)
		}
		for i := range c.Tables {
			c.Tables[i].PerStep = float64(c.Tables[i].Accesses) / float64(units)
		}
		c.CommitsPerStep = float64(c.Commits) / float64(units)
		c.RowsPerStep = float64(c.RowsInserted+c.RowsUpdated+c.RowsDeleted) / float64(units)
		c.WALBytesPerStep = float64(c.WALBytes) / float64(units)
		c.SeqTuplesReadPerStep = float64(c.SeqTuplesRead) / float64(units)
		c.IndexScansPerStep = float64(c.IndexScans) / float64(units)
	}
	return c
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	N   int64   `json:"n"`
}

// outcome is what the tables say about the run.
type outcome struct {
	tasks, complete, failed int64
	stepsComplete           int64
	first, last             time.Time
	latency                 Latency
	dispatch                Latency
	// stateTimes is how long steps stayed in each state of StateTimeStates.
	stateTimes  map[string]Latency
	notTerminal int64
}

// StateTimeStates are the step states whose dwell times a run reports:
// waiting for a worker (enqueued), with the worker (in_progress: the claim,
// the handler and the submission) and waiting for the orchestrator
// (enqueued_for_orchestration: the notice, the wake-up and the result
// transaction). For a single-step task they add up to its latency.
var StateTimeStates = []string{"enqueued", "in_progress", "enqueued_for_orchestration"}

// readOutcome reads completion, throughput bounds and latencies from the
// tables. Timestamps are the database's transaction start times (now()):
// created_at is the start of the transaction that created the task,
// completed_at the start of the one that completed it.
//
// Only the run's tasks count: those of the benchmark namespace, not the
// seeded history (Options.History). Every query starts from the run's
// tasks (tasks_namespace_created_idx) and reaches their steps and
// transitions through the task_uuid indexes, so reading the outcome does
// not grow with the history.
func readOutcome(ctx context.Context, conn *pgx.Conn) (outcome, error) {
	var o outcome
	var first, last *time.Time
	var p50, p95, p99, mx *float64
	err := conn.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE state = 'complete'),
		       count(*) FILTER (WHERE state IN ('error', 'cancelled', 'resolved_manually')),
		       count(*) FILTER (WHERE completed_at IS NULL),
		       min(created_at), max(completed_at),
		       percentile_cont(0.50) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		  FROM (SELECT state, created_at, completed_at,
		               extract(epoch FROM completed_at - created_at) * 1000 AS ms
		          FROM tasker.tasks WHERE namespace = $1) t`, Namespace).
		Scan(&o.tasks, &o.complete, &o.failed, &o.notTerminal, &first, &last, &p50, &p95, &p99, &mx)
	if err != nil {
		return o, fmt.Errorf("read task outcome: %w", err)
	}
	if first != nil {
		o.first = *first
	}
	if last != nil {
		o.last = *last
	}
	o.latency = Latency{P50: deref(p50), P95: deref(p95), P99: deref(p99), Max: deref(mx), N: o.complete + o.failed}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks t
		JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
		WHERE t.namespace = $1 AND ws.state = 'complete'`, Namespace).Scan(&o.stepsComplete); err != nil {
		return o, fmt.Errorf("count steps: %w", err)
	}
	// Dispatch latency: from the transaction that found the step ready and
	// enqueued it (pending -> enqueued) to the one that claimed it
	// (enqueued -> in_progress, the next transition of the same step).
	var d50, d95, d99, dmax *float64
	err = conn.QueryRow(ctx, `
		SELECT count(*), percentile_cont(0.50) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		  FROM (SELECT extract(epoch FROM c.created_at - e.created_at) * 1000 AS ms
		          FROM tasker.tasks t
		          JOIN tasker.workflow_steps s ON s.task_uuid = t.task_uuid
		          JOIN tasker.workflow_step_transitions e ON e.step_uuid = s.step_uuid
		          JOIN tasker.workflow_step_transitions c
		            ON c.step_uuid = e.step_uuid AND c.sort_key = e.sort_key + 1
		         WHERE t.namespace = $1
		           AND e.from_state = 'pending' AND e.to_state = 'enqueued'
		           AND c.from_state = 'enqueued' AND c.to_state = 'in_progress') d`, Namespace).
		Scan(&o.dispatch.N, &d50, &d95, &d99, &dmax)
	if err != nil {
		return o, fmt.Errorf("read dispatch latency: %w", err)
	}
	o.dispatch.P50, o.dispatch.P95, o.dispatch.P99, o.dispatch.Max = deref(d50), deref(d95), deref(d99), deref(dmax)
	if o.stateTimes, err = readStateTimes(ctx, conn); err != nil {
		return o, err
	}
	return o, nil
}

// readStateTimes reads how long the run's steps stayed in each state of
// StateTimeStates: from the transition into the state to the next
// transition of the same step (both at their transactions' start).
func readStateTimes(ctx context.Context, conn *pgx.Conn) (map[string]Latency, error) {
	rows, err := conn.Query(ctx, `
		SELECT e.to_state, count(*),
		       percentile_cont(0.50) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		  FROM (SELECT e.to_state, extract(epoch FROM c.created_at - e.created_at) * 1000 AS ms
		          FROM tasker.tasks t
		          JOIN tasker.workflow_steps s ON s.task_uuid = t.task_uuid
		          JOIN tasker.workflow_step_transitions e ON e.step_uuid = s.step_uuid
		          JOIN tasker.workflow_step_transitions c
		            ON c.step_uuid = e.step_uuid AND c.sort_key = e.sort_key + 1
		         WHERE t.namespace = $1 AND e.to_state = ANY ($2)) e
		 GROUP BY e.to_state`, Namespace, StateTimeStates)
	if err != nil {
		return nil, fmt.Errorf("read step state times: %w", err)
	}
	defer rows.Close()
	out := map[string]Latency{}
	for rows.Next() {
		var state string
		var l Latency
		var p50, p95, p99, mx *float64
		if err := rows.Scan(&state, &l.N, &p50, &p95, &p99, &mx); err != nil {
			return nil, fmt.Errorf("read step state times: %w", err)
		}
		l.P50, l.P95, l.P99, l.Max = deref(p50), deref(p95), deref(p99), deref(mx)
		out[state] = l
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read step state times: %w", err)
	}
	return out, nil
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// activeTasks counts the run's tasks not yet in a terminal state. The state
// predicate is the one of the partial index tasks_active_idx, so this stays
// cheap while the benchmark polls it, however much finished history the
// tables hold; the namespace is checked on the few rows the index returns.
func activeTasks(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	// Requests still waiting on the task request queue (--via-queue) are
	// tasks to come.
	err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasker.tasks
		WHERE state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually') AND namespace = $1)
		+ (SELECT count(*) FROM pgmq.q_orchestration_task_requests)`, Namespace).Scan(&n)
	return n, err
}
