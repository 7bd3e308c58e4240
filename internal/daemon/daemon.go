// Package daemon is the composition root: it builds the pool, store,
// telemetry, services and HTTP server from a Config, starts them in order and
// stops them in the reverse order (STYLE: not ready -> stop API -> stop
// claiming -> wait for in-flight work -> flush telemetry -> close pools).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tasker/tasker/internal/api"
	"github.com/tasker/tasker/internal/config"
	internaldomainevents "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
	"github.com/tasker/tasker/migrations"
)

// Daemon is a running orchestrator process.
type Daemon struct {
	cfg    config.Config
	logger *slog.Logger

	pool         *pgxpool.Pool
	store        *store.Store
	engine       *orchestration.Engine
	orchestrator *orchestration.Orchestrator
	listener     *queue.Listener
	telemetry    *telemetry.Provider
	api          *api.Server
	http         *http.Server
	ln           net.Listener
	serveErr     chan error

	ready     readiness
	stopOnce  sync.Once
	stopErr   error
	startedAt time.Time
}

// Run starts the daemon and blocks until ctx is cancelled, then shuts down
// gracefully within the configured bound.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	d, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return d.Wait(ctx)
}

// ErrServeFailed is Wait's error when the HTTP server stopped on its own
// (its listener failed): the daemon then shuts down, and serve exits 1 so
// that a supervisor restarts it.
var ErrServeFailed = errors.New("HTTP server failed")

// Wait blocks until ctx is cancelled or the HTTP server fails, then stops
// the daemon (Stop). It returns Stop's error, joined with one wrapping
// ErrServeFailed when the server failed; both are logged at ERROR first.
func (d *Daemon) Wait(ctx context.Context) error {
	var served error
	select {
	case <-ctx.Done():
	case err := <-d.serveErr:
		d.logger.Error("HTTP server failed; shutting down", "error", err)
		served = fmt.Errorf("%w: %v", ErrServeFailed, err)
	}
	return errors.Join(served, d.Stop())
}

// Start builds and starts everything; startup errors are returned
// synchronously. Stop the daemon with Stop.
func Start(ctx context.Context, cfg config.Config, logger *slog.Logger) (*Daemon, error) {
	d, err := start(ctx, cfg, logger)
	// A database without the schema (serve --no-migrate, or
	// database.migrate_on_start = false) fails on its first query.
	return d, ExplainDatabaseError(err)
}

func start(ctx context.Context, cfg config.Config, logger *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, logger: logger, serveErr: make(chan error, 1), startedAt: time.Now()}
	ok := false
	defer func() {
		if !ok {
			d.closeAll()
		}
	}()

	pool, err := openPool(ctx, cfg.Database, logger)
	if err != nil {
		return nil, err
	}
	d.pool = pool
	d.store = store.New(pool)
	if cfg.Database.MigrateOnStart {
		if _, err := migrate(ctx, pool, logger); err != nil {
			return nil, err
		}
	}
	d.ready = readiness{pool: pool, store: d.store}

	d.telemetry, err = telemetry.NewProvider(ctx, telemetry.Options{
		ServiceName: cfg.Telemetry.ServiceName, TracingEnabled: cfg.Telemetry.TracingEnabled,
		OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, OTLPProtocol: cfg.Telemetry.OTLPProtocol,
		OTLPEncoder:      cfg.Telemetry.OTLPEncoder,
		TraceSampleRatio: &cfg.Telemetry.TraceSampleRatio, MetricsEnabled: cfg.Telemetry.MetricsEnabled, Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if err := d.telemetry.ObserveStore(d.store); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	// Domain events are written by a hook inside every orchestration
	// transaction, so they commit (or roll back) with the change.
	var eng *orchestration.Engine
	hook := internaldomainevents.Hook(d.store, func(ctx context.Context, id int64) (*template.Template, error) {
		return eng.Template(ctx, id)
	})
	eng = orchestration.NewEngine(d.store, d.telemetry.Publisher(), logger, orchestration.WithBeforeCommit(hook))
	d.engine = eng

	if cfg.Orchestrator.TemplatesDir != "" {
		if err := registerTemplates(ctx, d.store, cfg.Orchestrator.TemplatesDir, logger); err != nil {
			return nil, err
		}
	}

	if cfg.Orchestrator.Enabled {
		d.listener = queue.NewListener(pool, logger)
		// Template lookups by name are cached until a registration
		// anywhere is announced (or the listener reconnects).
		d.store.CacheLatestTemplates(d.listener.SubscribeChannel(store.TemplatesChannel))
		d.orchestrator = orchestration.NewOrchestrator(d.engine, orchestration.ServiceConfig{
			BatchSize: cfg.Orchestrator.BatchSize, ResultLoops: cfg.Orchestrator.ResultLoops,
			VisibilityTimeout: cfg.Orchestrator.VisibilityTimeout.Duration,
			PollInterval:      cfg.Orchestrator.PollInterval.Duration, TimerInterval: cfg.Orchestrator.TimerInterval.Duration,
			ReapInterval: cfg.Orchestrator.ReapInterval.Duration, ReapGrace: cfg.Orchestrator.ReapGrace.Duration, MaxReadCount: cfg.Orchestrator.MaxReadCount,
			StaleAfter: cfg.Orchestrator.StaleTaskTimeout.Duration, StaleInterval: cfg.Orchestrator.StaleCheckInterval.Duration,
			Retention: RetentionPolicy(cfg.Retention), RetentionInterval: cfg.Retention.Interval.Duration,
			Pruned: d.telemetry.RetentionDeleted,
		}, d.listener, d.telemetry, logger)
		if err := d.listener.Start(ctx); err != nil {
			return nil, err
		}
		if err := d.orchestrator.Start(ctx); err != nil {
			return nil, err
		}
	}

	creds := make([]api.Credential, 0, len(cfg.Auth.Keys))
	for _, k := range cfg.Auth.Keys {
		creds = append(creds, api.Credential{Name: k.Name, Key: k.Key, Level: api.LevelOf(k.Permissions)})
	}
	extra := map[string]http.Handler{}
	if h := d.telemetry.MetricsHandler(); h != nil {
		extra["GET /metrics"] = h
	}
	d.api = api.New(d.engine, d.store, logger, api.Options{
		MaxBodyBytes: cfg.Server.MaxBodyBytes, Ready: &d.ready,
		Auth:  api.NewAuthenticator(cfg.Auth.Enabled, cfg.Auth.PublicHealth, cfg.Auth.PublicMetrics, creds, logger),
		Extra: extra,
	})
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return nil, fmt.Errorf("server.listen %s: %w", cfg.Server.Listen, err)
	}
	d.ln = ln
	d.http = &http.Server{
		Handler:           d.telemetry.HTTPMiddleware(d.api.Handler()),
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		ReadHeaderTimeout: cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Ends when Stop shuts the server down.
	go func() {
		if err := d.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.serveErr <- err
		}
	}()
	logger.Info("orchestrator started", "listen", ln.Addr().String(), "orchestration", cfg.Orchestrator.Enabled,
		"tracing", cfg.Telemetry.TracingEnabled, "auth", cfg.Auth.Enabled)
	ok = true
	return d, nil
}

// Addr is the address the API listens on.
func (d *Daemon) Addr() string { return d.ln.Addr().String() }

// Engine exposes the orchestration engine (tests, bench).
func (d *Daemon) Engine() *orchestration.Engine { return d.engine }

// ErrShutdownIncomplete is Stop's error when a step of the shutdown did
// not finish within its share of orchestrator.shutdown_timeout; serve then
// exits 1.
var ErrShutdownIncomplete = errors.New("shutdown incomplete")

// Stop shuts down in order. Each step has its own bound, so that one that
// hangs does not take the time of the next: in-flight HTTP requests get up
// to half of orchestrator.shutdown_timeout, the orchestration loops what is
// left of it (at least the other half), and the telemetry flush and the
// pool close a tenth of it more each. A step that does not finish in time
// is logged at ERROR and named in the returned error (wrapping
// ErrShutdownIncomplete). Safe to call twice.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() {
		start := time.Now()
		total := d.cfg.Orchestrator.ShutdownTimeout.Duration
		deadline := start.Add(total)
		extra := max(total/10, 100*time.Millisecond)
		var unfinished []string
		d.logger.Info("shutting down", "shutdown_timeout", total.String())
		// 1. Not ready: load balancers stop sending work.
		d.api.SetShuttingDown()
		// 2. Stop the API: finish in-flight requests, refuse new ones.
		httpCtx, cancel := context.WithTimeout(context.Background(), total/2)
		err := d.http.Shutdown(httpCtx)
		cancel()
		if err != nil {
			d.logger.Error("HTTP requests did not finish in time; closing their connections",
				"error", err, "waited", (total / 2).String())
			unfinished = append(unfinished, "HTTP requests")
			_ = d.http.Close()
		}
		// 3+4. Stop the loops: each finishes (or rolls back) the transaction
		// it is in; nothing is half-applied, unprocessed messages reappear
		// after their visibility timeout for another replica.
		loopsStopped := true
		if d.orchestrator != nil {
			if !within(time.Until(deadline), d.orchestrator.Stop) {
				loopsStopped = false
				d.logger.Error("orchestration loops did not stop in time", "waited", time.Since(start).String())
				unfinished = append(unfinished, "orchestration loops")
			}
		}
		if d.listener != nil {
			d.listener.Stop()
		}
		// 5. Flush telemetry, then 6. close the pool last.
		flushCtx, cancel := context.WithTimeout(context.Background(), extra)
		if err := d.telemetry.Shutdown(flushCtx); err != nil {
			d.logger.Warn("telemetry flush failed", "error", err)
		}
		cancel()
		// Close waits for every connection to be released: loops that
		// did not stop may hold one for as long as their statement runs.
		switch {
		case !loopsStopped:
			// Ends when the loops release their connections.
			go d.pool.Close()
			unfinished = append(unfinished, "database pool close")
		case !within(extra, d.pool.Close):
			unfinished = append(unfinished, "database pool close")
		}
		if len(unfinished) > 0 {
			d.stopErr = fmt.Errorf("%w within orchestrator.shutdown_timeout (%s): %s did not finish",
				ErrShutdownIncomplete, total, strings.Join(unfinished, ", "))
			d.logger.Error("stopped; shutdown incomplete", "unfinished", unfinished,
				"shutdown_seconds", time.Since(start).Seconds())
			return
		}
		d.logger.Info("stopped", "shutdown_seconds", time.Since(start).Seconds())
	})
	return d.stopErr
}

// within runs fn and reports whether it returned within d; if not, fn
// goes on in the background.
func within(d time.Duration, fn func()) bool {
	done := make(chan struct{})
	// Ends when fn returns (the process may exit first).
	go func() { fn(); close(done) }()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// closeAll releases what a failed Start built.
func (d *Daemon) closeAll() {
	if d.orchestrator != nil {
		d.orchestrator.Stop()
	}
	if d.listener != nil {
		d.listener.Stop()
	}
	if d.telemetry != nil {
		_ = d.telemetry.Shutdown(context.Background())
	}
	if d.pool != nil {
		d.pool.Close()
	}
}

// openPool connects with the daemon's settings. With db.ConnectWait set it
// keeps trying for that long, with backoff and a log line per failure,
// while the database cannot be reached (refused, timed out, starting up);
// a refused login or an unknown database fails at once.
func openPool(ctx context.Context, db config.Database, logger *slog.Logger) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	pc.MaxConns = int32(db.MaxConns)
	if db.StatementTimeout.Duration > 0 {
		pc.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(db.StatementTimeout.Milliseconds())
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "tasker-orchestrator"
	store.WithNotifyAfterCommit(pc)
	store.WithBinaryUUIDs(pc)
	store.WithoutJIT(pc)
	wait := db.ConnectWait.Duration
	start := time.Now()
	for attempt := 1; ; attempt++ {
		pool, err := connectOnce(ctx, pc.Copy())
		if err == nil {
			if attempt > 1 {
				logger.Info("database reachable", "after", time.Since(start).Round(time.Millisecond).String())
			}
			return pool, nil
		}
		if wait <= 0 || !connectRetryable(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to database: %w", err)
		}
		if waited := time.Since(start); waited >= wait {
			return nil, fmt.Errorf("connect to database: gave up after %s (database.connect_wait): %w", waited.Round(time.Second), err)
		}
		pause := min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)
		logger.Warn("database not reachable yet; retrying", "error", err.Error(), "retry_in", pause.String(),
			"waiting_up_to", wait.String())
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to database: %w", ctx.Err())
		case <-time.After(pause):
		}
	}
}

// connectOnce makes a pool and checks that a connection can be made.
func connectOnce(ctx context.Context, pc *pgxpool.Config) (*pgxpool.Pool, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(cctx, pc)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(cctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// connectRetryable reports whether a failed connection may succeed later:
// the server refused the connection, did not answer, or is starting or
// shutting down. A refused login (SQLSTATE class 28), an unknown database
// (3D000) or any other answer from the server will not change by waiting.
func connectRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P03" || strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01"
	}
	return true
}

// AppliedMigration is a migration that Migrate applied.
type AppliedMigration struct {
	Version int64   `json:"version"`
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Migrate applies pending migrations with the pool's connection settings,
// logs each one it applies and returns them (none when the database was up
// to date).
func Migrate(ctx context.Context, dbURL string, logger *slog.Logger) ([]AppliedMigration, error) {
	pool, err := openPool(ctx, config.Database{URL: dbURL, MaxConns: 2}, logger)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	return migrate(ctx, pool, logger)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) ([]AppliedMigration, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	res, err := migrations.Up(ctx, db, nil)
	if err != nil {
		return nil, err
	}
	out := make([]AppliedMigration, 0, len(res))
	for _, r := range res {
		m := AppliedMigration{Version: r.Source.Version, Name: migrations.Name(r.Source.Version, r.Source.Path), Seconds: r.Duration.Seconds()}
		logger.Info("migration applied", "version", m.Version, "name", m.Name, "seconds", m.Seconds)
		out = append(out, m)
	}
	return out, nil
}

func registerTemplates(ctx context.Context, st *store.Store, dir string, logger *slog.Logger) error {
	tpls, err := template.LoadDir(dir)
	if err != nil {
		// A relative directory (the default config/templates among them)
		// is relative to the working directory: say which one was meant.
		where := dir
		if abs, aerr := filepath.Abs(dir); aerr == nil && abs != dir {
			where = fmt.Sprintf("%s (%s)", dir, abs)
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("orchestrator.templates_dir %s: no such directory; set orchestrator.templates_dir "+
				"(or TASKER_ORCHESTRATOR_TEMPLATES_DIR) to the directory of the task templates, or to \"\" to register none: %w", where, err)
		}
		return fmt.Errorf("orchestrator.templates_dir %s: %w", where, err)
	}
	for _, t := range tpls {
		_, created, err := st.TemplateRegister(ctx, t)
		if err != nil {
			return fmt.Errorf("register template %s: %w", t.Key(), err)
		}
		if created {
			logger.Info("template registered", "template", t.Key(), "steps", len(t.Steps))
		}
	}
	return nil
}

// readiness answers /readyz: the database answers and its schema is current.
type readiness struct {
	pool  *pgxpool.Pool
	store *store.Store

	mu        sync.Mutex
	checkedAt time.Time
	current   bool
}

func (r *readiness) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.store.Ping(ctx); err != nil {
		return errors.New("database unreachable")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checkedAt) > 10*time.Second || !r.current {
		db := stdlib.OpenDBFromPool(r.pool)
		pending, err := migrations.Pending(ctx, db)
		_ = db.Close()
		if err != nil {
			return errors.New("cannot read the migration version")
		}
		r.current, r.checkedAt = !pending, time.Now()
	}
	if !r.current {
		return errors.New("database migrations are not current; run `orchestrator migrate`")
	}
	return nil
}

// MigrationState is one migration's status.
type MigrationState struct {
	Version   int64  `json:"version"`
	Name      string `json:"name"`
	Applied   bool   `json:"applied"`
	AppliedAt string `json:"applied_at,omitempty"`
}

// MigrationStatus lists the embedded migrations and whether each is applied.
func MigrationStatus(ctx context.Context, dbURL string) ([]MigrationState, error) {
	pool, err := openPool(ctx, config.Database{URL: dbURL, MaxConns: 2}, slog.Default())
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := migrations.NewProvider(db, nil)
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationState, 0, len(st))
	for _, s := range st {
		ms := MigrationState{Version: s.Source.Version, Name: migrations.Name(s.Source.Version, s.Source.Path), Applied: s.State == "applied"}
		if !s.AppliedAt.IsZero() {
			ms.AppliedAt = s.AppliedAt.Format(time.RFC3339)
		}
		out = append(out, ms)
	}
	return out, nil
}

// RetentionPolicy is the retention sweep's policy for the [retention]
// settings.
func RetentionPolicy(r config.Retention) store.RetentionPolicy {
	return store.RetentionPolicy{ArchiveAfter: r.ArchiveAfter.Duration, HistoryAfter: r.HistoryAfter.Duration,
		TasksAfter: r.TasksAfter.Duration, BatchSize: r.BatchSize}
}

// OpenStore connects to the database as the daemon does, for operator
// commands that work on it directly (orchestrator prune). close releases
// the pool.
func OpenStore(ctx context.Context, db config.Database) (st *store.Store, close func(), err error) {
	// An operator's command fails at once rather than wait for the
	// database as the daemon does.
	db.ConnectWait = config.Duration{}
	pool, err := openPool(ctx, db, slog.Default())
	if err != nil {
		return nil, nil, err
	}
	return store.New(pool), pool.Close, nil
}
