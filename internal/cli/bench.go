package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/api"
	"github.com/tasker/tasker/internal/bench"
	"github.com/tasker/tasker/internal/config"
)

// benchCmd is `orchestrator bench`: the engine benchmark (internal/bench),
// plus `bench summarize` (medians of saved reports) and the hidden
// `bench worker` (the worker process of --processes).
func benchCmd(g *globals) *cobra.Command {
	var o bench.Options
	var logLevel, domainEvents string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark the engine on a fresh database: throughput, latency, database and CPU cost per step",
		Long: `Benchmark the whole engine (orchestrator, Go workers, Postgres) on a
workflow scenario, against a fresh database created for the run on the server
in DATABASE_URL / database.url (dropped at the end unless --keep):

  single    1 step
  linear4   4 steps in a chain
  diamond   1 step, 2 in parallel, 1 joining them
  fanout    1 step, 50 in parallel, 1 joining them

Closed loop (default): --tasks tasks are submitted at once by --submitters
goroutines. Open loop: --rate tasks/s for --duration, each submitted on
schedule whatever happens to the others.

The scenario's template publishes every domain event, as a template that
does not choose does; --domain-events none (or a list of types) measures the
engine with only those a deployment selects.

--history N first seeds N completed tasks (a four-step chain, namespace
"history") into the fresh database and runs VACUUM ANALYZE, so that the run
measures an engine whose tables hold a deployment's past; the figures count
only the run's own tasks.

The orchestrator and --workers Go workers (no-op handlers) run in this
process, or, with --processes, as "orchestrator serve" and worker processes
of this binary (tasks are then submitted through the REST API). The
default of 2 workers x 32 slots keeps figures comparable with earlier
runs; few workers with many slots cost Postgres less per step (each claim
carries more steps), and "make bench" runs its throughput stages with
--workers 1 --concurrency 128.

Reported: tasks/s and steps/s; submit-to-complete latency (tasks.created_at
to completed_at); step dispatch latency (enqueued to claimed); commits, rows
written, WAL bytes and records per step; the shared-buffer pages a step
touched, by table, and the share of HOT updates (counts of the work asked
of Postgres, which do not move with the host as CPU time does); CPU time
of Postgres, the orchestrator and the workers; and the raw PGMQ floor: as many messages as steps through
send_batch/read/delete on the same database, with the engine's steps/s as a
share of it. With --model (single and linear4) the same database then
runs the design model: DESIGN's per-step SQL with no engine around it, on
as many tasks (--model=full adds the task's per-result states and the
domain events). In a closed loop the engine's steps/s is reported as a
share of the model's, and so is its CPU time per step (the model's over
the engine's: the same share where CPU is the limit, without the host's
stolen time); in an open loop the model runs the same schedule,
its idle loops woken by NOTIFY as the engine's are, and its
submit-to-complete latencies are reported beside the engine's.
A status line is drawn on stderr while the run goes.

Numbers worth quoting come from a server with its default durability
("make bench" starts one); a server with fsync off flatters every commit.`,
		Args: func(cmd *cobra.Command, args []string) error {
			// --model's value is optional, so "--model full" leaves "full"
			// as an argument.
			if len(args) > 0 && (args[0] == bench.ModelBare || args[0] == bench.ModelFull) && cmd.Flags().Changed("model") {
				return &usageError{fmt.Sprintf("bench: give --model its value with '=': --model=%s", args[0])}
			}
			return noArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Flags first: a wrong flag is a usage error whatever the
			// configuration.
			if err := checkBenchFlags(&o); err != nil {
				return err
			}
			var err error
			if o.DomainEvents, err = bench.ParseDomainEvents(domainEvents); err != nil {
				return &usageError{"bench: --domain-events: " + err.Error()}
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			o.DatabaseURL, o.Config, o.ConfigPath = cfg.Database.URL, cfg, g.configPath
			o.Logger = NewLogger(config.Log{Level: logLevel, Format: "text"}, g.stderr)
			o.Progress, o.ProgressTTY = g.stderr, isTerminal(g.stderr)
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return fmt.Errorf("bench %s: %w", o.Scenario, err)
			}
			if g.jsonOut {
				return rep.JSON(g.stdout)
			}
			rep.Print(g.stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Scenario, "scenario", "single", "workflow shape: "+strings.Join(bench.ScenarioNames(), ", "))
	f.IntVar(&o.Tasks, "tasks", bench.DefaultTasks, "tasks to run (closed loop)")
	f.IntVar(&o.Submitters, "submitters", bench.DefaultSubmitters, "concurrent submitters (closed loop)")
	f.IntVar(&o.SubmitBatch, "submit-batch", 1, fmt.Sprintf("tasks each submitter submits per call, as one batch submission (POST /v1/tasks/batch; closed loop; 1 to %d)", api.MaxBatchTasks))
	f.Float64Var(&o.Rate, "rate", 0, "open loop: tasks submitted per second (with --duration)")
	f.DurationVar(&o.Duration, "duration", 0, "open loop: how long to submit at --rate")
	f.BoolVar(&o.ViaQueue, "via-queue", false, "send the tasks to the orchestration_task_requests queue (pgmq.send; pgmq.send_batch with --submit-batch), as clients in any language can, instead of through the engine (in-process) or the REST API (--processes)")
	f.IntVar(&o.Workers, "workers", bench.DefaultWorkers, "worker count (each with its own connection pool)")
	f.IntVar(&o.Concurrency, "concurrency", bench.DefaultConcurrency, "steps each worker runs at once")
	f.IntVar(&o.Batch, "batch", 0, "steps a worker claims per read (default: --concurrency)")
	f.IntVar(&o.ResultBytes, "result-bytes", 0, "pad each step's result to about this many bytes (0: {\"ok\": true})")
	f.IntVar(&o.ContextBytes, "context-bytes", 0, "pad each task's context to about this many bytes (0: {\"i\": n})")
	f.DurationVar(&o.HandlerTime, "handler-time", 0, "how long each handler runs (it waits; 0: it returns at once), as handlers doing real work would")
	f.BoolVar(&o.AsyncSubmit, "async-submit", false, "the workers submit results without waiting for their WAL flush (worker.Config.AsyncSubmit: a Postgres crash may then forget the last results, whose steps run again)")
	f.StringVar(&domainEvents, "domain-events", "all", "domain events the scenario's template publishes: all, none, or a comma-separated list (TaskInitiated,StepCompleted,…)")
	f.BoolVar(&o.Tracing, "tracing", false, "export every span (to --otlp-endpoint, or to an in-process receiver that discards them)")
	f.StringVar(&o.OTLPEndpoint, "otlp-endpoint", "", "OTLP endpoint for --tracing (implies --tracing)")
	f.StringVar(&o.OTLPProtocol, "otlp-protocol", "grpc", "OTLP protocol for --otlp-endpoint: grpc or http/protobuf")
	f.IntVar(&o.History, "history", 0, "completed tasks to seed into the fresh database before the run (0: empty tables)")
	f.BoolVar(&o.Processes, "processes", false, "run the orchestrator and workers as separate processes")
	f.BoolVar(&o.Keep, "keep", false, "keep the benchmark database")
	f.BoolVar(&o.SkipFloor, "no-floor", false, "skip the raw PGMQ floor measurement")
	f.StringVar(&o.Model, "model", "", "also run a design model on as many tasks (single, linear4): "+
		"bare (DESIGN's per-step SQL, no engine around it; the default of a bare --model) or full (with the task's per-result states and domain events)")
	f.Lookup("model").NoOptDefVal = bench.ModelBare
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the measured window to this file (in-process only)")
	f.StringVar(&o.MemProfile, "memprofile", "", "write the allocations of the measured window to this file, as the heap profiles at its end (this file) and start (file.start) (in-process only)")
	f.DurationVar(&o.Timeout, "timeout", bench.DefaultTimeout, "give up when the tasks have not finished after this long")
	f.StringVar(&logLevel, "log-level", "warn", "log level of the orchestrator and workers")
	cmd.AddCommand(benchSummarizeCmd(g), benchWorkerCmd(g))
	return cmd
}

// checkBenchFlags refuses values that bench.Run would otherwise replace
// with its defaults without a word (--tasks -5 ran 1000 tasks).
func checkBenchFlags(o *bench.Options) error {
	if _, err := bench.ScenarioByName(o.Scenario); err != nil {
		return &usageError{"bench: --scenario: " + err.Error()}
	}
	for _, f := range []struct {
		name     string
		v, least int
	}{
		{"tasks", o.Tasks, 1}, {"submitters", o.Submitters, 1}, {"submit-batch", o.SubmitBatch, 1}, {"workers", o.Workers, 1},
		{"concurrency", o.Concurrency, 1}, {"batch", o.Batch, 0}, {"result-bytes", o.ResultBytes, 0}, {"context-bytes", o.ContextBytes, 0},
		{"history", o.History, 0},
	} {
		if f.v < f.least {
			return &usageError{fmt.Sprintf("bench: --%s must be at least %d, got %d", f.name, f.least, f.v)}
		}
	}
	switch {
	case o.Rate < 0:
		return &usageError{fmt.Sprintf("bench: --rate must not be negative, got %v", o.Rate)}
	case o.Duration < 0:
		return &usageError{fmt.Sprintf("bench: --duration must not be negative, got %s", o.Duration)}
	case o.HandlerTime < 0:
		return &usageError{fmt.Sprintf("bench: --handler-time must not be negative, got %s", o.HandlerTime)}
	case o.Timeout <= 0:
		return &usageError{fmt.Sprintf("bench: --timeout must be positive, got %s", o.Timeout)}
	case (o.Rate > 0) != (o.Duration > 0):
		return &usageError{"bench: an open-loop run needs both --rate and --duration"}
	case o.SubmitBatch > api.MaxBatchTasks:
		return &usageError{fmt.Sprintf("bench: --submit-batch must be at most %d (a batch submission's limit), got %d", api.MaxBatchTasks, o.SubmitBatch)}
	case o.SubmitBatch > 1 && o.Rate > 0:
		return &usageError{"bench: --submit-batch is for the closed loop; an open loop submits each task on its own schedule"}
	}
	if o.Model != "" {
		sc, _ := bench.ScenarioByName(o.Scenario)
		switch {
		case o.Model != bench.ModelBare && o.Model != bench.ModelFull:
			return &usageError{fmt.Sprintf("bench: --model %q: want %s or %s", o.Model, bench.ModelBare, bench.ModelFull)}
		case sc.Chain() == 0:
			return &usageError{fmt.Sprintf("bench: --model runs chains of steps (single, linear4), not scenario %s", o.Scenario)}
		}
	}
	return nil
}

func benchSummarizeCmd(g *globals) *cobra.Command {
	var pairs bool
	cmd := &cobra.Command{
		Use:   "summarize REPORT.json...",
		Short: "Print the median of repeated runs from saved `bench --json` reports",
		Long: `Read reports written by "orchestrator bench --json", group them by
configuration (scenario, load, mode, tracing, history) and print, per group,
the median of each number across its runs.

With --pairs the reports are alternating pairs instead, in the order given:
BASE TREATED BASE TREATED ... (each pair run back to back, say without and
with --tracing, or an old and a new build). Each pair's change of steps/s is
printed, and their median: the host's drift between pairs cancels out of it,
as it does not out of the medians of runs made one configuration after the
other ("make bench" measures tracing that way). So is the change of the
shared-buffer pages touched per step, which barely moves with the host:
what a build removes from it, it removed from Postgres's work.`,
		Example: `  orchestrator bench summarize .cache/bench/20261128-064530/*.json
  orchestrator bench summarize --pairs off-1.json on-1.json off-2.json on-2.json off-3.json on-3.json`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []*bench.Report
			for _, path := range args {
				rs, err := readReports(path)
				if err != nil {
					return err
				}
				reports = append(reports, rs...)
			}
			if pairs {
				ps, med, err := bench.Pairs(reports)
				if err != nil {
					return &usageError{"bench summarize --pairs: " + err.Error()}
				}
				if g.jsonOut {
					return printJSON(g.stdout, map[string]any{"pairs": ps, "median_change": med})
				}
				bench.PrintPairs(g.stdout, ps, med)
				return nil
			}
			ss := bench.Summarize(reports)
			if g.jsonOut {
				return printJSON(g.stdout, ss)
			}
			bench.PrintSummaries(g.stdout, ss)
			return nil
		},
	}
	cmd.Flags().BoolVar(&pairs, "pairs", false, "the reports are alternating (base, treated) pairs: print each pair's change of steps/s and their median")
	return cmd
}

// readReports reads one or more concatenated JSON reports from a file.
func readReports(path string) ([]*bench.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	var out []*bench.Report
	for {
		var r bench.Report
		err := dec.Decode(&r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: not a bench --json report: %w", path, err)
		}
		out = append(out, &r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no report", path)
	}
	return out, nil
}

// benchWorkerCmd is the worker process of `bench --processes`. Its database
// comes from TASKER_BENCH_DATABASE_URL, set by the parent, so that no URL
// (with a password) appears in the process list.
func benchWorkerCmd(g *globals) *cobra.Command {
	var o bench.WorkerOptions
	var logLevel string
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run a benchmark worker (no-op handlers); started by bench --processes",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.DatabaseURL = envOr("TASKER_BENCH_DATABASE_URL", os.Getenv("DATABASE_URL"))
			if o.DatabaseURL == "" {
				return errors.New("bench worker: TASKER_BENCH_DATABASE_URL is not set")
			}
			o.Logger = NewLogger(config.Log{Level: logLevel, Format: "text"}, g.stderr)
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			return bench.RunWorker(ctx, o, g.stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Concurrency, "concurrency", bench.DefaultConcurrency, "steps run at once")
	f.IntVar(&o.Batch, "batch", 0, "steps claimed per read (default: --concurrency)")
	f.IntVar(&o.ResultBytes, "result-bytes", 0, "pad each result to about this many bytes")
	f.DurationVar(&o.HandlerTime, "handler-time", 0, "how long each handler runs")
	f.BoolVar(&o.AsyncSubmit, "async-submit", false, "submit results without waiting for their WAL flush")
	f.BoolVar(&o.Tracing, "tracing", false, "export spans by OTLP")
	f.StringVar(&o.OTLPEndpoint, "otlp-endpoint", "", "OTLP endpoint")
	f.StringVar(&o.OTLPProtocol, "otlp-protocol", "grpc", "OTLP protocol: grpc or http/protobuf")
	f.StringVar(&logLevel, "log-level", "warn", "log level")
	return cmd
}
