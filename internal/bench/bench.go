package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/daemon"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
)

// Defaults for Options.
const (
	DefaultTasks       = 1000
	DefaultWorkers     = 2
	DefaultConcurrency = 32
	// DefaultSubmitters is the closed loop's submission concurrency: enough
	// that "all submitted at once" is what the intake sees. The intake
	// creates up to 100 tasks per transaction, one transaction at a time
	// (orchestration's maxIntakeBatch), and a submitter waits for its
	// task's transaction before it submits again, so about half of them
	// are waiting for the next one: 256 fill it, as the design model's
	// creator (100 per transaction) does. 64 left creation transactions of
	// about 32 tasks (single +9 % with 256, commits per task 0.73 -> 0.60;
	// docs/performance.md row 78), and 8, before row 17, of 1-2.
	DefaultSubmitters = 256
	DefaultTimeout    = 10 * time.Minute
	// maxOpenLoopInFlight bounds the submissions an open-loop run keeps in
	// flight; when it is reached the driver falls behind its schedule and
	// says so (Report.SubmitLagMaxMs).
	maxOpenLoopInFlight = 512
)

// Options configures a run.
type Options struct {
	// DatabaseURL names the server; the run creates its own database there
	// (the URL's own database is left alone) and drops it at the end unless
	// Keep.
	DatabaseURL string
	// Config is the base configuration of the in-process orchestrator (its
	// database URL, listen address, templates and migration settings are
	// replaced). ConfigPath is passed to `serve` in Processes mode.
	Config     config.Config
	ConfigPath string

	Scenario string
	// Tasks is the number of tasks of a closed-loop run (all submitted at
	// once by Submitters goroutines).
	Tasks      int
	Submitters int
	// SubmitBatch is how many tasks a closed-loop submitter submits per
	// call (Engine.CreateTasks in process, POST /v1/tasks/batch with
	// --processes); 1 (the default) submits each alone.
	SubmitBatch int
	// ViaQueue submits the tasks as messages on the task request queue
	// (pgmq.send, or pgmq.send_batch for a batch), as a client in any
	// language can, instead of through the engine or the API.
	ViaQueue bool
	// Rate and Duration make an open-loop run: Rate tasks per second, each
	// submitted on schedule whatever happens to the others, for Duration.
	Rate     float64
	Duration time.Duration

	// Workers, each with Concurrency handler slots, claiming up to Batch
	// steps per read (0: Concurrency).
	Workers     int
	Concurrency int
	Batch       int
	// ResultBytes pads every step's result to about this many bytes (0: a
	// few bytes), as handlers returning real data would.
	ResultBytes int
	// ContextBytes pads every task's context to about this many bytes (0:
	// a few bytes), as clients submitting real data would.
	ContextBytes int
	// HandlerTime is how long every handler runs (it waits; 0: it returns
	// at once), as handlers doing real work would.
	HandlerTime time.Duration
	// AsyncSubmit makes the workers' submissions commit without waiting
	// for their WAL flush (worker.Config.AsyncSubmit).
	AsyncSubmit bool
	// DomainEvents, when not nil, are the only domain events the
	// scenario's template publishes (empty: none); nil publishes all of
	// them, the default of a template that does not choose.
	DomainEvents []string

	// Tracing exports every span: to OTLPEndpoint when set, otherwise to an
	// in-process receiver that discards them.
	Tracing      bool
	OTLPEndpoint string
	OTLPProtocol string

	// Processes runs the orchestrator (`serve`) and the workers as separate
	// processes of Executable (default: this binary); tasks are then
	// submitted through the REST API.
	Processes  bool
	Executable string

	// History is the number of completed tasks (of a four-step chain, in
	// namespace HistoryNamespace) seeded into the fresh database before the
	// run, so that the run measures an engine whose tables already hold a
	// deployment's past; 0 runs on empty tables. The run's figures count
	// only its own tasks (namespace Namespace).
	History int

	// SkipFloor skips the raw PGMQ measurement.
	SkipFloor bool
	// Model, when ModelBare or ModelFull, also runs that design model
	// (model.go) on the run's tasks, for scenarios that are one chain of
	// steps (single, linear4); "" runs none.
	Model string
	// Keep leaves the benchmark database in place.
	Keep bool
	// CPUProfile writes a CPU profile of the measured window (in-process).
	CPUProfile string
	// MemProfile writes the allocations made in the measured window
	// (in-process): the heap profile at its end, and at its start to
	// MemProfile + ".start", the base to subtract (go tool pprof -base).
	MemProfile string
	// Timeout bounds the wait for every task to finish.
	Timeout time.Duration

	// Progress receives the status line; ProgressTTY redraws it in place.
	Progress    io.Writer
	ProgressTTY bool
	// Logger receives the orchestrator's and workers' logs.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.DatabaseURL == "" {
		return errors.New("no database URL: set DATABASE_URL or database.url")
	}
	if o.Scenario == "" {
		o.Scenario = "single"
	}
	if o.Model != "" && o.Model != ModelBare && o.Model != ModelFull {
		return fmt.Errorf("--model %q: want %s (DESIGN's per-step SQL) or %s (with the task's states and domain events)", o.Model, ModelBare, ModelFull)
	}
	if o.Model != "" {
		if sc, err := ScenarioByName(o.Scenario); err == nil && sc.Chain() == 0 {
			return fmt.Errorf("--model runs chains of steps (single, linear4), not scenario %s", o.Scenario)
		}
	}
	if o.Tasks <= 0 {
		o.Tasks = DefaultTasks
	}
	if o.SubmitBatch <= 0 {
		o.SubmitBatch = 1
	}
	if o.Submitters <= 0 {
		o.Submitters = DefaultSubmitters
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Batch <= 0 || o.Batch > o.Concurrency {
		o.Batch = o.Concurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.History < 0 {
		return errors.New("--history must not be negative")
	}
	if (o.Rate > 0) != (o.Duration > 0) {
		return errors.New("an open-loop run needs both --rate and --duration")
	}
	if o.Rate > 0 && int(o.Rate*o.Duration.Seconds()) < 1 {
		return errors.New("--rate x --duration is less than one task")
	}
	if o.OTLPEndpoint != "" {
		o.Tracing = true
	}
	if o.OTLPProtocol == "" {
		o.OTLPProtocol = "grpc"
	}
	if o.CPUProfile != "" && o.Processes {
		return errors.New("--cpuprofile profiles this process: it needs the in-process mode (drop --processes)")
	}
	if o.MemProfile != "" && o.Processes {
		return errors.New("--memprofile profiles this process: it needs the in-process mode (drop --processes)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// errTimeout is returned when the tasks did not finish within Options.Timeout.
var errTimeout = errors.New("timed out")

// queueSubmit sends task requests to the task request queue: one with
// pgmq.send, several with one pgmq.send_batch.
func queueSubmit(pool *pgxpool.Pool) submitFunc {
	return func(ctx context.Context, reqs []orchestration.TaskRequest) error {
		bodies := make([]json.RawMessage, len(reqs))
		for i, r := range reqs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			bodies[i] = b
		}
		if len(bodies) == 1 {
			_, err := queue.Send(ctx, pool, queue.TaskRequestsQueue, bodies[0], nil, 0)
			return err
		}
		_, err := queue.SendBatch(ctx, pool, queue.TaskRequestsQueue, bodies, nil, 0)
		return err
	}
}

// submitFunc creates the tasks of reqs: one alone as a client submits one
// task (Engine.CreateTask, POST /v1/tasks), several as one batch
// submission (Engine.CreateTasks, POST /v1/tasks/batch).
type submitFunc func(ctx context.Context, reqs []orchestration.TaskRequest) error

// Run runs one benchmark and returns its report. Everything it creates (a
// database, processes, goroutines) is gone when it returns, except the
// database with Keep.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	sc, err := ScenarioByName(o.Scenario)
	if err != nil {
		return nil, err
	}
	tpl, err := sc.WithDomainEvents(o.DomainEvents).Template()
	if err != nil {
		return nil, err
	}
	total := o.Tasks
	if o.Rate > 0 {
		total = int(o.Rate * o.Duration.Seconds())
	}
	rep = &Report{
		Scenario: sc.Name, StepsPerTask: sc.StepsPerTask(), Mode: "in-process", Load: "closed",
		Workers: o.Workers, Concurrency: o.Concurrency, Batch: o.Batch, Tracing: o.Tracing, TraceSampling: traceSampling(o),
		ResultBytes: o.ResultBytes, ContextBytes: o.ContextBytes, HandlerTimeMs: float64(o.HandlerTime) / float64(time.Millisecond),
		AsyncSubmit: o.AsyncSubmit, DomainEvents: domainEventsLabel(o.DomainEvents),
		Started: time.Now().UTC(), Tasks: int64(total), HistoryTasks: int64(o.History),
		Machine: Machine{CPUs: runtime.NumCPU(), LoadAvgBefore: loadAvg(), GoVersion: runtime.Version()},
	}
	if o.Processes {
		rep.Mode = "processes"
	}
	if o.Rate > 0 {
		rep.Load, rep.RatePerSec, rep.DurationSec = "open", o.Rate, o.Duration.Seconds()
	} else {
		rep.Submitters = o.Submitters
		if o.SubmitBatch > 1 {
			rep.SubmitBatch = o.SubmitBatch
		}
	}

	// A fresh database: the run measures an engine on empty tables (or on
	// the seeded history alone), and its statistics are the run's alone.
	db, err := createDatabase(ctx, o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	rep.Database = db.name
	defer func() {
		if o.Keep {
			fmt.Fprintf(progressOut(o), "benchmark database kept: %s\n", redact(db.url))
			return
		}
		if derr := db.drop(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()
	if _, err := daemon.Migrate(ctx, db.url, o.Logger); err != nil {
		return nil, fmt.Errorf("migrate the benchmark database: %w", err)
	}
	if _, err := registerTemplate(ctx, db.url, tpl); err != nil {
		return nil, err
	}
	if o.History > 0 {
		h, err := seedHistory(ctx, db.url, o.History, progressOut(o))
		if err != nil {
			return nil, err
		}
		rep.HistorySeedSeconds, rep.HistoryVacuumSeconds, rep.HistoryDatabaseBytes = h.seconds, h.vacuumSeconds, h.databaseBytes
		if h.checkpointErr != nil {
			rep.Warnings = append(rep.Warnings, "no CHECKPOINT after seeding the history (the run shared the disk with its write-out): "+h.checkpointErr.Error())
		}
	}

	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if rep.Server, err = readServerInfo(ctx, conn, db.url); err != nil {
		return nil, err
	}
	probe := &cpuProbe{}
	probe.pg, probe.pgErr = findPostgres(ctx, conn, db.url)

	// The baseline: taken once the setup's connections (the seeding's
	// included) are gone and have flushed their counters, so none of the
	// setup's rows count as the run's.
	if err := waitIdle(ctx, conn, 30*time.Second); err != nil {
		return nil, err
	}
	statsBefore, err := readStats(ctx, conn)
	if err != nil {
		return nil, err
	}

	// Telemetry sink for --tracing without an endpoint.
	otlpEndpoint, otlpProtocol := o.OTLPEndpoint, o.OTLPProtocol
	var sink *otlpSink
	if o.Tracing && otlpEndpoint == "" {
		sink, err = startOTLPSink()
		if err != nil {
			return nil, err
		}
		defer sink.stop()
		otlpEndpoint, otlpProtocol = sink.endpoint(), "http/protobuf"
	}

	// The system under test.
	sut, err := startSystem(ctx, o, db.url, otlpEndpoint, otlpProtocol)
	if err != nil {
		return nil, err
	}
	probe.children = sut.children
	submit, stopSUT := sut.submit, sut.stop
	closeClients := func() {}
	if o.ViaQueue {
		// The clients' own connections, as another service's would be.
		clients, err := openPool(ctx, db.url, "tasker-bench-client", int32(min(o.Submitters, 64)+1), nil)
		if err != nil {
			return nil, err
		}
		var once sync.Once
		closeClients = func() { once.Do(clients.Close) }
		defer closeClients()
		submit = queueSubmit(clients)
		rep.Via = "queue"
	}
	sutRunning := true
	defer func() {
		if sutRunning {
			_ = stopSUT()
		}
	}()

	// The driver's own pool: progress polling and wait sampling.
	driverQueries := &queryCounter{}
	pool, err := openPool(ctx, db.url, "tasker-bench-driver", 3, driverQueries)
	if err != nil {
		return nil, err
	}
	poolOpen := true
	defer func() {
		if poolOpen {
			pool.Close()
		}
	}()

	// The measured window.
	if o.MemProfile != "" {
		if err := writeHeapProfile(o.MemProfile + ".start"); err != nil {
			return nil, err
		}
	}
	var profile *os.File
	if o.CPUProfile != "" {
		if profile, err = os.Create(o.CPUProfile); err != nil {
			return nil, err
		}
		defer profile.Close()
		if err := pprof.StartCPUProfile(profile); err != nil {
			return nil, err
		}
		rep.CPUProfile = o.CPUProfile
	}
	walBefore, err := walPosition(ctx, conn)
	if err != nil {
		return nil, err
	}
	cpuStart := probe.read()
	waits := newWaitSampler(50 * time.Millisecond)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	// Ends when the measured window does.
	go func() { waits.run(sampleCtx, pool); close(sampled) }()
	prog := newProgress(o.Progress, o.ProgressTTY, rep.Label(), int64(total), sut.stepsRun)
	lag, loadErr := drive(ctx, o, sc, total, submit, pool, prog)
	stopSampling()
	<-sampled
	cpuEnd := probe.read()
	rep.Waits = waits.shares()
	walAfter, werr := walPosition(ctx, conn)
	if profile != nil {
		pprof.StopCPUProfile()
	}
	if o.MemProfile != "" {
		if err := writeHeapProfile(o.MemProfile); err != nil {
			return nil, err
		}
		rep.MemProfile = o.MemProfile
	}
	rep.SubmitLagMaxMs = float64(lag) / float64(time.Millisecond)
	if loadErr != nil {
		return rep, loadErr
	}
	if werr != nil {
		return rep, werr
	}

	// Stop everything, so that every backend flushes its statistics.
	sutRunning = false
	if err := stopSUT(); err != nil {
		rep.Warnings = append(rep.Warnings, "stopping the orchestrator or workers: "+err.Error())
	}
	pool.Close()
	poolOpen = false
	closeClients()
	if sink != nil {
		// Read after the stop: the exporters flush their last batches then.
		rep.TraceExport = &TraceExport{Requests: sink.requests.Load(), Bytes: sink.bytes.Load()}
	}
	if err := waitIdle(ctx, conn, 30*time.Second); err != nil {
		return rep, err
	}
	statsAfter, err := readStats(ctx, conn)
	if err != nil {
		return rep, err
	}
	out, err := readOutcome(ctx, conn)
	if err != nil {
		return rep, err
	}
	rep.TasksCompleted, rep.TasksFailed, rep.StepsCompleted = out.complete, out.failed, out.stepsComplete
	rep.Latency, rep.Dispatch, rep.StateTimes = out.latency, out.dispatch, out.stateTimes
	if !out.first.IsZero() && out.last.After(out.first) {
		rep.WallSeconds = out.last.Sub(out.first).Seconds()
		rep.TasksPerSec = float64(out.complete) / rep.WallSeconds
		rep.StepsPerSec = float64(out.stepsComplete) / rep.WallSeconds
	}
	rep.DB = counters(statsBefore, statsAfter, walBefore, walAfter, int(out.stepsComplete), driverQueries.n.Load())
	if db.trackFunctions {
		rep.Functions = functionTimes(statsBefore, statsAfter, out.stepsComplete)
		rep.Protocol = protocolCalls(rep.Functions, out.stepsComplete)
	}
	rep.CPU = probe.between(cpuStart, cpuEnd)
	rep.CPUPerStepMicros = map[string]float64{}
	for name, v := range map[string]*float64{"postgres": rep.CPU.Postgres, "in_process": rep.CPU.InProcess,
		"orchestrator": rep.CPU.Orchestrator, "workers": rep.CPU.Workers, "driver": rep.CPU.Driver} {
		if v != nil && out.stepsComplete > 0 {
			rep.CPUPerStepMicros[name] = *v / float64(out.stepsComplete) * 1e6
		}
	}
	if out.complete != int64(total) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d of %d tasks did not complete (%d failed, %d not finished, %d never created)",
			int64(total)-out.complete, total, out.failed, out.notTerminal, int64(total)-out.tasks))
	}
	if rep.Load == "open" && rep.SubmitLagMaxMs > 50 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the driver fell %.0f ms behind its submission schedule (task creation did not keep up with the rate)", rep.SubmitLagMaxMs))
	}
	if rep.Load == "open" && rep.WallSeconds > rep.DurationSec*1.2+1 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("saturated: %.0f tasks/s offered for %.0fs took %.1fs to complete (%.0f tasks/s); the latencies measure the backlog",
			rep.RatePerSec, rep.DurationSec, rep.WallSeconds, rep.TasksPerSec))
	}
	if rep.DB.Deadlocks > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d deadlocks", rep.DB.Deadlocks))
	}

	if !o.SkipFloor && out.stepsComplete > 0 {
		f, err := measureFloor(ctx, o, db.url, conn, probe, int(out.stepsComplete))
		if err != nil {
			return rep, err
		}
		if f.MsgsPerSec > 0 {
			f.Ratio = rep.StepsPerSec / f.MsgsPerSec
		}
		rep.Floor = f
	}
	if o.Model != "" && out.stepsComplete > 0 {
		md, err := measureModel(ctx, o, db.url, conn, probe)
		if err != nil {
			return rep, err
		}
		// An open loop's steps/s is its rate, in the engine's run and the
		// model's alike: there the latencies compare, not the throughput.
		if md.StepsPerSec > 0 && o.Rate <= 0 {
			md.Ratio = rep.StepsPerSec / md.StepsPerSec
			md.CPURatio = cpuRatio(rep.CPU, int(out.stepsComplete), md.CPU, md.Steps)
		}
		rep.Model = md
	}
	rep.Machine.LoadAvgAfter = loadAvg()
	if rep.Machine.LoadAvgBefore > float64(rep.Machine.CPUs)/2 || rep.Machine.LoadAvgAfter > float64(rep.Machine.CPUs) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the machine was busy (load average %.1f before, %.1f after, %d CPUs): other work skews these numbers",
			rep.Machine.LoadAvgBefore, rep.Machine.LoadAvgAfter, rep.Machine.CPUs))
	}
	return rep, nil
}

func progressOut(o Options) io.Writer {
	if o.Progress == nil {
		return io.Discard
	}
	return o.Progress
}

// system is the orchestrator and the workers under test.
type system struct {
	submit   submitFunc
	stop     func() error
	children map[string][]int // --processes: role -> pids
	// stepsRun counts the steps the workers have run (nil when they are
	// other processes).
	stepsRun func() int64
}

// startSystem starts the orchestrator and the workers: in this process
// (the daemon as `serve` builds it, and Go SDK workers; tasks are created
// with Engine.CreateTask, what the API's handler calls), or as processes
// (tasks are then created through the REST API).
func startSystem(ctx context.Context, o Options, dbURL, otlpEndpoint, otlpProtocol string) (*system, error) {
	if o.Processes {
		ps, err := startProcesses(ctx, o, dbURL, otlpEndpoint, otlpProtocol)
		if err != nil {
			return nil, err
		}
		return &system{submit: ps.submit, stop: func() error { return ps.stop(30 * time.Second) }, children: ps.pids()}, nil
	}
	cfg := o.Config
	cfg.Database.URL = dbURL
	cfg.Database.MigrateOnStart = false
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Orchestrator.Enabled = true
	cfg.Orchestrator.TemplatesDir = ""
	cfg.Auth.Enabled = false
	cfg.Telemetry.TracingEnabled = o.Tracing
	cfg.Telemetry.OTLPEndpoint, cfg.Telemetry.OTLPProtocol = otlpEndpoint, otlpProtocol
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, err := daemon.Start(ctx, cfg, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("start the orchestrator: %w", err)
	}
	ws, err := startWorkers(ctx, WorkerOptions{DatabaseURL: dbURL, Concurrency: o.Concurrency, Batch: o.Batch, ResultBytes: o.ResultBytes,
		HandlerTime: o.HandlerTime, AsyncSubmit: o.AsyncSubmit, Tracing: o.Tracing, OTLPEndpoint: otlpEndpoint, OTLPProtocol: otlpProtocol, Logger: o.Logger}, o.Workers)
	if err != nil {
		_ = d.Stop()
		return nil, fmt.Errorf("start the workers: %w", err)
	}
	engine := d.Engine()
	return &system{
		submit: func(ctx context.Context, reqs []orchestration.TaskRequest) error {
			if len(reqs) == 1 {
				_, _, err := engine.CreateTask(ctx, reqs[0])
				return err
			}
			for i, r := range engine.CreateTasks(ctx, reqs) {
				if r.Err != nil {
					return fmt.Errorf("task %d of the batch: %w", i, r.Err)
				}
			}
			return nil
		},
		// Workers first: they finish their steps while the orchestrator
		// still processes results.
		stop: func() error {
			ws.stop()
			return d.Stop()
		},
		stepsRun: ws.executed.Load,
	}, nil
}

// registerTemplate registers a template, as an operator would before
// submitting tasks (it also creates the namespace's queues), and returns
// its template_id.
func registerTemplate(ctx context.Context, dbURL string, tpl *template.Template) (int64, error) {
	pool, err := openPool(ctx, dbURL, "tasker-bench-setup", 2, nil)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	rec, _, err := store.New(pool).TemplateRegister(ctx, tpl)
	if err != nil {
		return 0, fmt.Errorf("register template %s: %w", tpl.Key(), err)
	}
	return rec.ID, nil
}

// drive submits the tasks and waits until every one is finished. It returns
// the largest delay behind schedule of an open-loop submission.
func drive(ctx context.Context, o Options, sc Scenario, total int, submit submitFunc, pool *pgxpool.Pool, prog *progress) (time.Duration, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var submitted atomic.Int64
	var lastDone int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	pad := ""
	if o.ContextBytes > 0 {
		pad = `,"pad":"` + strings.Repeat("x", o.ContextBytes) + `"`
	}
	request := func(i int) orchestration.TaskRequest {
		return orchestration.TaskRequest{Namespace: Namespace, Name: sc.Name,
			Context: json.RawMessage(fmt.Sprintf(`{"i":%d%s}`, i, pad)), Initiator: "bench"}
	}
	var wg sync.WaitGroup
	var maxLag atomic.Int64
	if o.Rate <= 0 {
		var next atomic.Int64
		for s := 0; s < o.Submitters; s++ {
			wg.Add(1)
			// Ends when every task is submitted or the run fails.
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					from := int(next.Add(int64(o.SubmitBatch))) - o.SubmitBatch
					if from >= total {
						return
					}
					reqs := make([]orchestration.TaskRequest, 0, o.SubmitBatch)
					for i := from; i < min(from+o.SubmitBatch, total); i++ {
						reqs = append(reqs, request(i))
					}
					if err := submit(ctx, reqs); err != nil {
						if ctx.Err() == nil {
							fail(fmt.Errorf("submit tasks %d–%d: %w", from, from+len(reqs)-1, err))
						}
						return
					}
					submitted.Add(int64(len(reqs)))
				}
			}()
		}
	} else {
		wg.Add(1)
		// Ends when every task is submitted or the run fails.
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / o.Rate)
			sem := make(chan struct{}, maxOpenLoopInFlight)
			start := time.Now()
			var inflight sync.WaitGroup
			defer inflight.Wait()
			for i := 0; i < total && ctx.Err() == nil; i++ {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				sem <- struct{}{}
				if lag := time.Since(at); int64(lag) > maxLag.Load() {
					maxLag.Store(int64(lag))
				}
				inflight.Add(1)
				// Ends when the submission returns.
				go func() {
					defer inflight.Done()
					defer func() { <-sem }()
					if err := submit(ctx, []orchestration.TaskRequest{request(i)}); err != nil {
						if ctx.Err() == nil {
							fail(fmt.Errorf("submit task %d: %w", i, err))
						}
						return
					}
					submitted.Add(1)
				}()
			}
		}()
	}
	submitDone := make(chan struct{})
	// Ends when the submitters are done.
	go func() { wg.Wait(); close(submitDone) }()

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	active := int64(-1) // not polled yet
	var lastPoll time.Time
	for {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			<-submitDone
			prog.update(lastDone, submitted.Load(), true)
			switch {
			case firstErr != nil:
				return time.Duration(maxLag.Load()), firstErr
			case parent.Err() != nil:
				return time.Duration(maxLag.Load()), parent.Err()
			}
			return time.Duration(maxLag.Load()), fmt.Errorf("%w: %d of %d tasks submitted, %d finished within %s",
				errTimeout, submitted.Load(), total, lastDone, o.Timeout)
		}
		if !pollDue(time.Since(lastPoll), active) {
			continue // the status line waits for the next count
		}
		a, err := activeTasks(ctx, pool)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			cancel()
			<-submitDone
			return time.Duration(maxLag.Load()), fmt.Errorf("poll progress: %w", err)
		}
		active, lastPoll = a, time.Now()
		sub := submitted.Load()
		done := max(sub-active, 0)
		finished := false
		select {
		case <-submitDone:
			finished = firstErr == nil && submitted.Load() == int64(total) && active == 0
		default:
		}
		lastDone = done
		prog.update(done, sub, finished)
		if finished {
			return time.Duration(maxLag.Load()), nil
		}
	}
}

// pollDue says whether the run's active tasks are counted again, since
// past ago and active at the last count (-1: never). The count reads every
// active task's row, 5 ms at 5,000 of them: polled on every 200 ms tick it
// took about 2 % of Postgres's time in a linear4 run. So it is counted once
// a second while many tasks remain, and on every tick near the end, where
// the run's end is noticed. The figures do not depend on it: the run's span
// is read from the tasks' own timestamps.
func pollDue(ago time.Duration, active int64) bool {
	return active < 0 || active <= 500 || ago >= time.Second
}

// measureFloor runs the raw PGMQ floor and measures it like the engine run.
func measureFloor(ctx context.Context, o Options, dbURL string, conn *pgx.Conn, probe *cpuProbe, n int) (*Floor, error) {
	consumers := o.Workers
	pool, err := openPool(ctx, dbURL, "tasker-bench-floor", int32(consumers+2), nil)
	if err != nil {
		return nil, err
	}
	f := &Floor{Messages: n, Batch: o.Batch, Consumers: consumers}
	// Its queue is created through this connection, outside the window.
	if err := queue.Create(ctx, conn, floorQueue); err != nil {
		pool.Close()
		return nil, err
	}
	w, err := measureWindow(ctx, conn, probe, n, func() (time.Duration, error) {
		defer pool.Close()
		return runFloor(ctx, pool, n, o.Batch, consumers)
	})
	if err != nil {
		return nil, err
	}
	f.Seconds = w.elapsed.Seconds()
	f.MsgsPerSec = float64(n) / f.Seconds
	f.CPU, f.DB = w.cpu, w.db
	f.CPU.InProcess = nil // the driver's own CPU is not the floor's subject
	return f, nil
}

// measureModel runs the design model on as many tasks as the closed loop
// ran and measures it like the engine run.
func measureModel(ctx context.Context, o Options, dbURL string, conn *pgx.Conn, probe *cpuProbe) (*Model, error) {
	sc, err := ScenarioByName(o.Scenario)
	if err != nil {
		return nil, err
	}
	chain, tasks := sc.Chain(), o.Tasks // defaults() refused other shapes
	if o.Rate > 0 {
		tasks = int(o.Rate * o.Duration.Seconds())
	}
	// The engine's transactions run with generic plans and no sequential
	// scans (internal/store); the model's sessions do too.
	pool, err := openPool(ctx, dbURL, "tasker-bench-model", int32(o.Workers+4), nil, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
		c.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
	})
	if err != nil {
		return nil, err
	}
	md := &Model{Kind: o.Model, Tasks: tasks, StepsPerTask: chain, Steps: tasks * chain, Batch: o.Batch, Workers: o.Workers,
		ResultLoops: max(o.Config.Orchestrator.ResultLoops, 1), RatePerSec: o.Rate}
	// The model's tables and queues are created through this connection
	// before the window, so that their DDL is counted in neither its CPU
	// nor its statistics (readStats flushes this connection's), and
	// dropped after the statistics are read: a dropped table's counters
	// leave pg_stat_user_tables.
	params := modelParams{kind: o.Model, tasks: tasks, chain: chain, batch: o.Batch,
		workers: o.Workers, resultLoops: md.ResultLoops, rate: o.Rate}
	m, err := prepareModel(ctx, conn, pool, params)
	if err != nil {
		pool.Close()
		return nil, errors.Join(err, dropModel(ctx, conn))
	}
	var mr modelResult
	w, err := measureWindow(ctx, conn, probe, md.Steps, func() (time.Duration, error) {
		defer pool.Close()
		var err error
		mr, err = m.run(ctx, params)
		return mr.elapsed, err
	})
	if err != nil {
		return nil, errors.Join(err, dropModel(ctx, conn))
	}
	if o.Rate > 0 {
		md.Latency = &mr.latency
	}
	md.Seconds = w.elapsed.Seconds()
	md.StepsPerSec = float64(md.Steps) / md.Seconds
	md.CPU, md.DB = w.cpu, w.db
	return md, dropModel(ctx, conn)
}

// window is what measureWindow measured.
type window struct {
	elapsed time.Duration
	cpu     CPU
	db      DBCounters
}

// measureWindow measures run like the engine's run: CPU (the server's
// through probe's reader, and this process's) and WAL over run, then the
// database counters, per unit, once every connection has left (run closes
// its own before it returns). The counters start just before run: what
// came before it (the engine's run, the queries of its report, the floor)
// is not counted.
func measureWindow(ctx context.Context, conn *pgx.Conn, probe *cpuProbe, units int, run func() (time.Duration, error)) (window, error) {
	var w window
	before, err := readStats(ctx, conn)
	if err != nil {
		return w, err
	}
	walBefore, err := walPosition(ctx, conn)
	if err != nil {
		return w, err
	}
	p := &cpuProbe{pg: probe.pg, pgErr: probe.pgErr}
	start := p.read()
	elapsed, err := run()
	end := p.read()
	if err != nil {
		return w, err
	}
	walAfter, err := walPosition(ctx, conn)
	if err != nil {
		return w, err
	}
	w.elapsed, w.cpu = elapsed, p.between(start, end)
	if err := waitIdle(ctx, conn, 30*time.Second); err != nil {
		return w, err
	}
	after, err := readStats(ctx, conn)
	if err != nil {
		return w, err
	}
	w.db = counters(before, after, walBefore, walAfter, units, 0)
	return w, nil
}

// traceSampling says which traces a run records (telemetry.DescribeSampling);
// "" without tracing.
func traceSampling(o Options) string {
	if !o.Tracing {
		return ""
	}
	return telemetry.DescribeSampling(o.Config.Telemetry.TraceSampleRatio)
}

// writeHeapProfile writes the heap profile, whose allocation counts are
// cumulative since the process started, to path. The profile's counts are
// those of the last garbage collection, so it collects first (outside the
// window's CPU reading).
func writeHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
