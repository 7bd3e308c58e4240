package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one benchmark run.
type Report struct {
	Scenario     string `json:"scenario"`
	StepsPerTask int    `json:"steps_per_task"`
	// Mode is "in-process" (orchestrator and workers in this process) or
	// "processes" (orchestrator serve and worker processes).
	Mode string `json:"mode"`
	// Load is "closed" (every task submitted at once) or "open" (RatePerSec
	// for DurationSec).
	Load        string  `json:"load"`
	RatePerSec  float64 `json:"rate_per_sec,omitempty"`
	DurationSec float64 `json:"duration_sec,omitempty"`
	Workers     int     `json:"workers"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch"`
	Submitters  int     `json:"submitters,omitempty"`
	SubmitBatch int     `json:"submit_batch,omitempty"`
	// Via is "queue" when the tasks were sent to the task request queue.
	Via     string `json:"via,omitempty"`
	Tracing bool   `json:"tracing"`
	// TraceSampling is which traces were recorded when Tracing: a
	// ratio ("1": all) or the OTEL_TRACES_SAMPLER setting.
	TraceSampling string `json:"trace_sampling,omitempty"`
	// ResultBytes is the size each step's result was padded to (0: none).
	ResultBytes int `json:"result_bytes,omitempty"`
	// ContextBytes is the size each task's context was padded to (0: none).
	ContextBytes int `json:"context_bytes,omitempty"`
	// HandlerTimeMs is how long each handler ran (0: it returned at once).
	HandlerTimeMs float64 `json:"handler_time_ms,omitempty"`
	// AsyncSubmit is set when the workers' submissions did not wait for
	// their WAL flush.
	AsyncSubmit bool `json:"async_submit,omitempty"`
	// DomainEvents are the domain events the template published: empty
	// for all of them (the default), "none", or a comma-separated list.
	DomainEvents string `json:"domain_events,omitempty"`

	// HistoryTasks is the number of completed tasks seeded before the run
	// (Options.History, namespace "history"); the task, step and latency
	// figures below are the run's own, without them. HistorySeedSeconds and
	// HistoryVacuumSeconds are what seeding and the VACUUM ANALYZE and
	// CHECKPOINT after it took; HistoryDatabaseBytes is pg_database_size
	// once seeded.
	HistoryTasks         int64   `json:"history_tasks"`
	HistorySeedSeconds   float64 `json:"history_seed_s,omitempty"`
	HistoryVacuumSeconds float64 `json:"history_vacuum_s,omitempty"`
	HistoryDatabaseBytes int64   `json:"history_database_bytes,omitempty"`

	Database string     `json:"database"`
	Server   ServerInfo `json:"server"`
	Machine  Machine    `json:"machine"`
	Started  time.Time  `json:"started"`

	Tasks          int64 `json:"tasks"`
	TasksCompleted int64 `json:"tasks_completed"`
	TasksFailed    int64 `json:"tasks_failed"`
	StepsCompleted int64 `json:"steps_completed"`
	// WallSeconds runs from the first task's creation to the last task's
	// completion (database timestamps).
	WallSeconds float64 `json:"wall_s"`
	TasksPerSec float64 `json:"tasks_per_sec"`
	StepsPerSec float64 `json:"steps_per_sec"`
	// Latency is submit-to-complete per task (tasks.created_at to
	// completed_at).
	Latency Latency `json:"latency"`
	// Dispatch is per step, from the transaction that enqueued it (it was
	// found ready) to the one that claimed it.
	Dispatch Latency `json:"dispatch"`
	// StateTimes is, per step state of StateTimeStates, how long steps
	// stayed in it: where a task's latency went.
	StateTimes map[string]Latency `json:"step_state_times,omitempty"`
	DB         DBCounters         `json:"db"`
	CPU        CPU                `json:"cpu"`
	// Functions is where Postgres spent its time, by SQL function, largest
	// self time first (empty when the server would not time functions).
	Functions []FuncTime `json:"functions,omitempty"`
	// Protocol is how many claim and submission calls the steps took
	// (with Functions only).
	Protocol *ProtocolCalls `json:"protocol,omitempty"`
	// Waits is what the database's sessions were doing, on average, while
	// the tasks ran (pg_stat_activity sampled every 50 ms).
	Waits []WaitShare `json:"waits,omitempty"`
	// CPUPerStepMicros is CPU time per completed step, by component.
	CPUPerStepMicros map[string]float64 `json:"cpu_per_step_us,omitempty"`
	Floor            *Floor             `json:"floor,omitempty"`
	Model            *Model             `json:"model,omitempty"`
	// TraceExport is what the in-process OTLP receiver got (--tracing
	// without an endpoint).
	TraceExport *TraceExport `json:"trace_export,omitempty"`
	// SubmitLagMaxMs is, in open loop, how far behind its schedule the
	// latest submission started (a large value means the driver could not
	// keep the rate).
	SubmitLagMaxMs float64  `json:"submit_lag_max_ms,omitempty"`
	CPUProfile     string   `json:"cpu_profile,omitempty"`
	MemProfile     string   `json:"mem_profile,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
}

// TraceExport counts OTLP export requests received and discarded.
type TraceExport struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs int `json:"cpus"`
	// LoadAvg is /proc/loadavg's 1-minute figure before and after the run:
	// other work on the machine skews every number.
	LoadAvgBefore float64 `json:"loadavg_before"`
	LoadAvgAfter  float64 `json:"loadavg_after"`
	GoVersion     string  `json:"go_version"`
}

func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	_, _ = fmt.Sscan(string(b), &v)
	return v
}

// Label identifies a configuration, for grouping repeated runs.
func (r *Report) Label() string {
	s := r.Scenario
	if r.SubmitBatch > 1 {
		s += fmt.Sprintf(" submit-batch %d", r.SubmitBatch)
	}
	if r.Via == "queue" {
		s += " via-queue"
	}
	if r.Load == "open" {
		s += fmt.Sprintf(" open %.0f/s %.0fs", r.RatePerSec, r.DurationSec)
	}
	if r.Mode == "processes" {
		s += " processes"
	}
	if r.Tracing {
		s += " tracing"
		if r.TraceSampling != "" && r.TraceSampling != "1" {
			s += " sampled " + r.TraceSampling
		}
	}
	if r.HistoryTasks > 0 {
		s += fmt.Sprintf(" history %d", r.HistoryTasks)
	}
	if r.ResultBytes > 0 {
		s += fmt.Sprintf(" results %dB", r.ResultBytes)
	}
	if r.ContextBytes > 0 {
		s += fmt.Sprintf(" contexts %dB", r.ContextBytes)
	}
	if r.HandlerTimeMs > 0 {
		s += " handlers " + ms(r.HandlerTimeMs)
	}
	if r.AsyncSubmit {
		s += " async-submit"
	}
	if r.DomainEvents != "" {
		s += " domain-events " + r.DomainEvents
	}
	if r.Model != nil && r.Model.Kind != ModelBare {
		s += " model " + r.Model.Kind
	}
	return s
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	load := fmt.Sprintf("closed loop (all submitted at once by %d submitters)", r.Submitters)
	if r.SubmitBatch > 1 {
		load = fmt.Sprintf("closed loop (all submitted at once by %d submitters, in batches of %d)", r.Submitters, r.SubmitBatch)
	}
	if r.Load == "open" {
		load = fmt.Sprintf("open loop, %.0f tasks/s for %.0fs", r.RatePerSec, r.DurationSec)
	}
	if r.Via == "queue" {
		load += ", sent to the task request queue"
	}
	row("scenario", "%s (%d steps/task), %s", r.Scenario, r.StepsPerTask, load)
	tracing := fmt.Sprint(r.Tracing)
	if r.Tracing && r.TraceSampling != "" {
		tracing += " (sampling " + r.TraceSampling + ")"
	}
	results := ""
	if r.ResultBytes > 0 {
		results = fmt.Sprintf(", results of ~%d bytes", r.ResultBytes)
	}
	if r.ContextBytes > 0 {
		results += fmt.Sprintf(", contexts of ~%d bytes", r.ContextBytes)
	}
	if r.HandlerTimeMs > 0 {
		results += ", handlers of " + ms(r.HandlerTimeMs)
	}
	if r.AsyncSubmit {
		results += ", submissions not waiting for their flush"
	}
	events := "all domain events"
	if r.DomainEvents == "none" {
		events = "no domain events"
	} else if r.DomainEvents != "" {
		events = "domain events " + r.DomainEvents
	}
	row("setup", "%s, %d workers x concurrency %d, batch %d, tracing %s%s, %s", r.Mode, r.Workers, r.Concurrency, r.Batch, tracing, results, events)
	row("server", "PostgreSQL %s, fsync=%s synchronous_commit=%s, database %s", r.Server.Version, r.Server.Fsync, r.Server.SynchronousCommit, r.Database)
	if r.HistoryTasks > 0 {
		row("history", "%d completed tasks seeded (namespace history, not counted below) in %.1fs, VACUUM ANALYZE + CHECKPOINT %.1fs, database %s",
			r.HistoryTasks, r.HistorySeedSeconds, r.HistoryVacuumSeconds, byteSize(r.HistoryDatabaseBytes))
	} else {
		row("history", "none (empty tables)")
	}
	row("machine", "%d CPUs, load average %.2f before / %.2f after", r.Machine.CPUs, r.Machine.LoadAvgBefore, r.Machine.LoadAvgAfter)
	row("tasks", "%d submitted, %d complete, %d failed", r.Tasks, r.TasksCompleted, r.TasksFailed)
	row("steps", "%d complete in %.2fs", r.StepsCompleted, r.WallSeconds)
	row("throughput", "%.0f tasks/s, %.0f steps/s", r.TasksPerSec, r.StepsPerSec)
	row("latency submit->complete", "p50 %s  p95 %s  p99 %s  max %s", ms(r.Latency.P50), ms(r.Latency.P95), ms(r.Latency.P99), ms(r.Latency.Max))
	row("dispatch ready->claimed", "p50 %s  p99 %s  max %s", ms(r.Dispatch.P50), ms(r.Dispatch.P99), ms(r.Dispatch.Max))
	for i, st := range StateTimeStates {
		l, ok := r.StateTimes[st]
		if !ok {
			continue
		}
		label := ""
		if i == 0 {
			label = "time in step state"
		}
		row(label, "%-26s p50 %s  p99 %s  max %s", st, ms(l.P50), ms(l.P99), ms(l.Max))
	}
	row("database per step", "%.2f commits, %.1f rows written (ins %d, upd %d, del %d), %.0f B WAL%s",
		r.DB.CommitsPerStep, r.DB.RowsPerStep, r.DB.RowsInserted, r.DB.RowsUpdated, r.DB.RowsDeleted, r.DB.WALBytesPerStep, walRecords(r.DB))
	if r.DB.BufferAccesses > 0 {
		row("buffers per step", "%s", buffersLine(r.DB))
	}
	row("table reads per step", "%.0f rows by sequential scans (%d scans), %.0f index scans",
		r.DB.SeqTuplesReadPerStep, r.DB.SeqScans, r.DB.IndexScansPerStep)
	if r.DB.Rollbacks > 0 || r.DB.Deadlocks > 0 {
		row("database", "%d rollbacks, %d deadlocks", r.DB.Rollbacks, r.DB.Deadlocks)
	}
	if p := r.Protocol; p != nil {
		row("worker protocol calls", "%d claims (%.1f steps each), %d submissions (%.1f steps each; %d of one result)",
			p.Claims, p.StepsPerClaim, p.Submissions, p.StepsPerSubmission, p.SingleSubmissions)
	}
	row("cpu", "%s", r.cpuLine())
	if len(r.Waits) > 0 {
		row("db sessions (avg)", "%s", waitLine(r.Waits))
	}
	for i, f := range r.Functions {
		if i == 6 {
			break
		}
		k := ""
		if i == 0 {
			k = "postgres functions (self)"
		}
		row(k, "%.0f µs/step  %.2f ms/call x %d  %s", f.SelfPerStepMicros, f.SelfPerCallMs, f.Calls, f.Name)
	}
	if r.Floor != nil {
		f := r.Floor
		row("pgmq floor", "%d msgs in %.2fs = %.0f msgs/s (batch %d, %d consumers); engine = %.1f%% of floor",
			f.Messages, f.Seconds, f.MsgsPerSec, f.Batch, f.Consumers, 100*f.Ratio)
		row("pgmq floor per msg", "%.2f commits, %.1f rows, %.0f B WAL, postgres CPU %s",
			f.DB.CommitsPerStep, f.DB.RowsPerStep, f.DB.WALBytesPerStep, perUnit(f.CPU.Postgres, f.Messages))
	}
	if md := r.Model; md != nil {
		if l := md.Latency; l != nil {
			row("design model ("+md.Kind+")", "open loop, %d tasks at %.0f/s: submit-to-complete p50 %s, p95 %s, p99 %s, max %s (engine: p50 %s, p99 %s)",
				md.Tasks, md.RatePerSec, ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max), ms(r.Latency.P50), ms(r.Latency.P99))
		} else {
			row("design model ("+md.Kind+")", "%d steps (%d tasks) in %.2fs = %.0f steps/s (batch %d, %d workers, %d result loops); engine = %.1f%% of model%s",
				md.Steps, md.Tasks, md.Seconds, md.StepsPerSec, md.Batch, md.Workers, md.ResultLoops, 100*md.Ratio, cpuShare(md.CPURatio))
		}
		row("design model per step", "%.2f commits, %.1f rows, %.0f B WAL, %.0f buffers, postgres CPU %s, driver CPU %s",
			md.DB.CommitsPerStep, md.DB.RowsPerStep, md.DB.WALBytesPerStep, md.DB.BuffersPerStep, perUnit(md.CPU.Postgres, md.Steps), perUnit(md.CPU.InProcess, md.Steps))
	}
	if t := r.TraceExport; t != nil {
		row("traces exported", "%d OTLP requests, %.1f KB per step (received and discarded)", t.Requests, float64(t.Bytes)/1024/float64(max(r.StepsCompleted, 1)))
	}
	if r.SubmitLagMaxMs > 0 {
		row("submit lag max", "%s", ms(r.SubmitLagMaxMs))
	}
	if r.CPUProfile != "" {
		row("cpu profile", "%s", r.CPUProfile)
	}
	if r.MemProfile != "" {
		row("alloc profile", "%s (go tool pprof -sample_index=alloc_space -base %s.start %s)", r.MemProfile, r.MemProfile, r.MemProfile)
	}
	_ = tw.Flush()
	for _, wmsg := range r.Warnings {
		fmt.Fprintln(w, "warning:", wmsg)
	}
}

func (r *Report) cpuLine() string {
	var parts []string
	add := func(name string, v *float64) {
		if v != nil {
			parts = append(parts, fmt.Sprintf("%s %.2fs (%.2f cores, %s/step)", name, *v, *v/r.CPU.Wall, perUnit(v, int(r.StepsCompleted))))
		}
	}
	add("postgres", r.CPU.Postgres)
	add("orchestrator+workers (in-process, combined)", r.CPU.InProcess)
	add("orchestrator", r.CPU.Orchestrator)
	add("workers", r.CPU.Workers)
	add("driver", r.CPU.Driver)
	if r.CPU.Note != "" {
		parts = append(parts, r.CPU.Note)
	}
	return strings.Join(parts, "; ")
}

// measured prints a per-step figure, or "-" for one that saved reports
// from before it was measured lack.
func measured(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// walRecords is the WAL's record count per step for the database line
// ("" where it was not measured).
func walRecords(db DBCounters) string {
	if db.WALRecords < 0 || db.BufferAccesses == 0 {
		return ""
	}
	return fmt.Sprintf(" in %.1f records (%.2f full-page images)", db.WALRecordsPerStep, db.WALFullPagesPerStep)
}

// buffersLine says how many shared-buffer pages a step touched, how many
// updates were HOT, and which tables the pages were of (their indexes and
// TOAST included; the tasker schema's names unqualified).
func buffersLine(db DBCounters) string {
	hot := ""
	if db.RowsUpdated > 0 {
		hot = fmt.Sprintf(", %.0f%% of %d updates HOT", 100*float64(db.HOTUpdates)/float64(db.RowsUpdated), db.RowsUpdated)
	}
	var tables []string
	for i, t := range db.Tables {
		if i == 6 {
			break
		}
		tables = append(tables, fmt.Sprintf("%s %.1f", strings.TrimPrefix(t.Table, "tasker."), t.PerStep))
	}
	by := ""
	if len(tables) > 0 {
		by = "; by table: " + strings.Join(tables, ", ")
	}
	return fmt.Sprintf("%.0f accessed (%.1f read in)%s%s", db.BuffersPerStep, db.BuffersPerStep*float64(db.BufferReads)/float64(db.BufferAccesses), hot, by)
}

func waitLine(ws []WaitShare) string {
	parts := make([]string, 0, len(ws))
	for _, w := range ws {
		parts = append(parts, fmt.Sprintf("%s %.2f", w.Event, w.Sessions))
	}
	return strings.Join(parts, ", ")
}

func perUnit(v *float64, n int) string {
	if v == nil || n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0fµs", *v/float64(n)*1e6)
}

func ms(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// JSON writes the report as indented JSON.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Summary is the median, over repeated runs of one configuration, of the
// headline numbers.
type Summary struct {
	Label       string  `json:"label"`
	Runs        int     `json:"runs"`
	Tasks       int64   `json:"tasks"`
	TasksPerSec float64 `json:"tasks_per_sec"`
	StepsPerSec float64 `json:"steps_per_sec"`
	LatencyP50  float64 `json:"latency_p50_ms"`
	LatencyP95  float64 `json:"latency_p95_ms"`
	LatencyP99  float64 `json:"latency_p99_ms"`
	LatencyMax  float64 `json:"latency_max_ms"`
	DispatchP50 float64 `json:"dispatch_p50_ms"`
	DispatchP99 float64 `json:"dispatch_p99_ms"`
	// StateP50 and StateP99 are, per step state of StateTimeStates, the
	// medians of the runs' p50 and p99 time in it.
	StateP50     map[string]float64 `json:"step_state_p50_ms,omitempty"`
	StateP99     map[string]float64 `json:"step_state_p99_ms,omitempty"`
	CommitsPerSt float64            `json:"commits_per_step"`
	RowsPerStep  float64            `json:"rows_per_step"`
	WALPerStep   float64            `json:"wal_bytes_per_step"`
	// BuffersPerStep is the median of the runs' shared-buffer pages
	// accessed per step (0 in reports from before it was measured).
	BuffersPerStep float64 `json:"buffers_per_step,omitempty"`
	SeqReadPerSt   float64 `json:"seq_tuples_read_per_step"`
	PgCPUPerStep   float64 `json:"postgres_cpu_per_step_us"`
	AppCPUPerStep  float64 `json:"app_cpu_per_step_us"`
	PgCores        float64 `json:"postgres_cores"`
	AppCores       float64 `json:"app_cores"`
	FloorMsgsPS    float64 `json:"floor_msgs_per_sec"`
	FloorRatio     float64 `json:"floor_ratio"`
	// StepsPerClaim and StepsPerSubmit are the medians of the runs'
	// ProtocolCalls (0 without function statistics).
	StepsPerClaim  float64 `json:"steps_per_claim,omitempty"`
	StepsPerSubmit float64 `json:"steps_per_submission,omitempty"`
	// ModelStepsPS and ModelRatio are the design model's (runs with --model
	// only; 0 otherwise), ModelPgCPU its Postgres µs per step.
	ModelStepsPS float64 `json:"model_steps_per_sec,omitempty"`
	ModelRatio   float64 `json:"model_ratio,omitempty"`
	ModelPgCPU   float64 `json:"model_postgres_cpu_per_step_us,omitempty"`
	// ModelBuffers is the model's shared-buffer pages accessed per step.
	ModelBuffers float64 `json:"model_buffers_per_step,omitempty"`
	// ModelCPURatio is the median of the runs' Model.CPURatio.
	ModelCPURatio float64 `json:"model_cpu_ratio,omitempty"`
	// ModelP50 and ModelP99 are an open-loop design model's latencies
	// (runs with --model and --rate only; 0 otherwise).
	ModelP50   float64 `json:"model_p50_ms,omitempty"`
	ModelP99   float64 `json:"model_p99_ms,omitempty"`
	LoadAvgMax float64 `json:"loadavg_max"`
	Incomplete int     `json:"incomplete_runs"`
	// Functions are the SQL functions with the most self time per step
	// (median across runs; calls and per-call times likewise).
	Functions []FuncTime `json:"functions,omitempty"`
	// Waits are the median average sessions per state.
	Waits []WaitShare `json:"waits,omitempty"`
}

// Summarize groups reports by configuration and takes the median of each
// number across the runs of a group (each number independently).
func Summarize(reports []*Report) []Summary {
	groups := map[string][]*Report{}
	var order []string
	for _, r := range reports {
		l := r.Label()
		if _, ok := groups[l]; !ok {
			order = append(order, l)
		}
		groups[l] = append(groups[l], r)
	}
	var out []Summary
	for _, l := range order {
		rs := groups[l]
		med := func(f func(*Report) float64) float64 {
			v := make([]float64, 0, len(rs))
			for _, r := range rs {
				v = append(v, f(r))
			}
			return median(v)
		}
		s := Summary{Label: l, Runs: len(rs), Tasks: rs[0].Tasks,
			TasksPerSec:    med(func(r *Report) float64 { return r.TasksPerSec }),
			StepsPerSec:    med(func(r *Report) float64 { return r.StepsPerSec }),
			LatencyP50:     med(func(r *Report) float64 { return r.Latency.P50 }),
			LatencyP95:     med(func(r *Report) float64 { return r.Latency.P95 }),
			LatencyP99:     med(func(r *Report) float64 { return r.Latency.P99 }),
			LatencyMax:     med(func(r *Report) float64 { return r.Latency.Max }),
			DispatchP50:    med(func(r *Report) float64 { return r.Dispatch.P50 }),
			DispatchP99:    med(func(r *Report) float64 { return r.Dispatch.P99 }),
			CommitsPerSt:   med(func(r *Report) float64 { return r.DB.CommitsPerStep }),
			RowsPerStep:    med(func(r *Report) float64 { return r.DB.RowsPerStep }),
			WALPerStep:     med(func(r *Report) float64 { return r.DB.WALBytesPerStep }),
			BuffersPerStep: med(func(r *Report) float64 { return r.DB.BuffersPerStep }),
			SeqReadPerSt:   med(func(r *Report) float64 { return r.DB.SeqTuplesReadPerStep }),
			PgCPUPerStep:   med(func(r *Report) float64 { return r.CPUPerStepMicros["postgres"] }),
			AppCPUPerStep:  med(appCPU),
			PgCores:        med(func(r *Report) float64 { return cores(r.CPU.Postgres, r.CPU.Wall) }),
			AppCores: med(func(r *Report) float64 {
				return cores(r.CPU.InProcess, r.CPU.Wall) + cores(r.CPU.Orchestrator, r.CPU.Wall) + cores(r.CPU.Workers, r.CPU.Wall)
			}),
		}
		protocol := func(f func(*ProtocolCalls) float64) float64 {
			return med(func(r *Report) float64 {
				if p := r.protocol(); p != nil {
					return f(p)
				}
				return 0
			})
		}
		s.StepsPerClaim = protocol(func(p *ProtocolCalls) float64 { return p.StepsPerClaim })
		s.StepsPerSubmit = protocol(func(p *ProtocolCalls) float64 { return p.StepsPerSubmission })
		s.FloorMsgsPS = med(func(r *Report) float64 {
			if r.Floor == nil {
				return 0
			}
			return r.Floor.MsgsPerSec
		})
		s.FloorRatio = med(func(r *Report) float64 {
			if r.Floor == nil {
				return 0
			}
			return r.Floor.Ratio
		})
		if rs[0].Model != nil {
			model := func(f func(*Model) float64) float64 {
				return med(func(r *Report) float64 {
					if r.Model == nil || r.Model.Steps == 0 {
						return 0
					}
					return f(r.Model)
				})
			}
			s.ModelStepsPS = model(func(m *Model) float64 { return m.StepsPerSec })
			s.ModelRatio = model(func(m *Model) float64 { return m.Ratio })
			s.ModelCPURatio = model(func(m *Model) float64 { return m.CPURatio })
			latency := func(f func(*Latency) float64) float64 {
				return model(func(m *Model) float64 {
					if m.Latency == nil {
						return 0
					}
					return f(m.Latency)
				})
			}
			s.ModelP50 = latency(func(l *Latency) float64 { return l.P50 })
			s.ModelP99 = latency(func(l *Latency) float64 { return l.P99 })
			s.ModelPgCPU = model(func(m *Model) float64 {
				if m.CPU.Postgres == nil {
					return 0
				}
				return *m.CPU.Postgres * 1e6 / float64(m.Steps)
			})
			s.ModelBuffers = model(func(m *Model) float64 { return m.DB.BuffersPerStep })
		}
		for _, st := range StateTimeStates {
			if _, ok := rs[0].StateTimes[st]; !ok {
				continue
			}
			if s.StateP50 == nil {
				s.StateP50, s.StateP99 = map[string]float64{}, map[string]float64{}
			}
			s.StateP50[st] = med(func(r *Report) float64 { return r.StateTimes[st].P50 })
			s.StateP99[st] = med(func(r *Report) float64 { return r.StateTimes[st].P99 })
		}
		s.Functions = medianFunctions(rs, 6)
		s.Waits = medianWaits(rs)
		for _, r := range rs {
			s.LoadAvgMax = max(s.LoadAvgMax, r.Machine.LoadAvgBefore, r.Machine.LoadAvgAfter)
			if r.TasksCompleted != r.Tasks {
				s.Incomplete++
			}
		}
		out = append(out, s)
	}
	return out
}

// medianWaits takes the median, across runs, of the sessions in each state.
func medianWaits(rs []*Report) []WaitShare {
	byEvent := map[string][]float64{}
	for _, r := range rs {
		for _, w := range r.Waits {
			byEvent[w.Event] = append(byEvent[w.Event], w.Sessions)
		}
	}
	var out []WaitShare
	for ev, v := range byEvent {
		for len(v) < len(rs) {
			v = append(v, 0)
		}
		if m := median(v); m >= 0.02 {
			out = append(out, WaitShare{Event: ev, Sessions: m})
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Sessions > out[k].Sessions })
	return out
}

// medianFunctions takes, per SQL function, the median of its numbers across
// runs (a run where it was not called counts as zero) and returns the top n
// by self time per step.
func medianFunctions(rs []*Report, n int) []FuncTime {
	byName := map[string][]FuncTime{}
	for _, r := range rs {
		for _, f := range r.Functions {
			byName[f.Name] = append(byName[f.Name], f)
		}
	}
	var out []FuncTime
	for name, fs := range byName {
		col := func(get func(FuncTime) float64) float64 {
			v := make([]float64, len(rs))
			for i, f := range fs {
				v[i] = get(f)
			}
			return median(v)
		}
		out = append(out, FuncTime{Name: name,
			Calls:             int64(col(func(f FuncTime) float64 { return float64(f.Calls) })),
			TotalMs:           col(func(f FuncTime) float64 { return f.TotalMs }),
			SelfMs:            col(func(f FuncTime) float64 { return f.SelfMs }),
			SelfPerCallMs:     col(func(f FuncTime) float64 { return f.SelfPerCallMs }),
			SelfPerStepMicros: col(func(f FuncTime) float64 { return f.SelfPerStepMicros }),
		})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].SelfPerStepMicros > out[k].SelfPerStepMicros })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func cores(v *float64, wall float64) float64 {
	if v == nil || wall <= 0 {
		return 0
	}
	return *v / wall
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// protocol is the report's ProtocolCalls, worked out from its functions
// for a report saved before it had them.
func (r *Report) protocol() *ProtocolCalls {
	if r.Protocol != nil {
		return r.Protocol
	}
	return protocolCalls(r.Functions, r.StepsCompleted)
}

// perCall formats steps per protocol call, "-" when not measured.
func perCall(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// PrintSummaries writes medians as two tables: speed, then cost per step.
func PrintSummaries(w io.Writer, ss []Summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "configuration\truns\ttasks\ttasks/s\tsteps/s\tp50\tp95\tp99\tmax\tdispatch p50\tdispatch p99\tfloor msgs/s\tof floor\tload avg\t")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.1f%%\t%.1f\t\n",
			s.Label, s.Runs, s.Tasks, s.TasksPerSec, s.StepsPerSec, ms(s.LatencyP50), ms(s.LatencyP95), ms(s.LatencyP99),
			ms(s.LatencyMax), ms(s.DispatchP50), ms(s.DispatchP99), s.FloorMsgsPS, 100*s.FloorRatio, s.LoadAvgMax)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "configuration\tcommits/step\tsteps/claim\tsteps/submit\trows/step\tWAL B/step\tbuffers/step\tseq-scan rows/step\tpostgres µs/step\tapp µs/step\tpostgres cores\tapp cores\t")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%.1f\t%.0f\t%s\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t\n",
			s.Label, s.CommitsPerSt, perCall(s.StepsPerClaim), perCall(s.StepsPerSubmit), s.RowsPerStep, s.WALPerStep, measured(s.BuffersPerStep), s.SeqReadPerSt,
			s.PgCPUPerStep, s.AppCPUPerStep, s.PgCores, s.AppCores)
	}
	_ = tw.Flush()
	modelled, modelledLatency := false, false
	for _, s := range ss {
		modelled = modelled || (s.ModelStepsPS > 0 && s.ModelRatio > 0)
		modelledLatency = modelledLatency || s.ModelP50 > 0
	}
	if modelled {
		fmt.Fprintln(w, "\nthe design model (DESIGN's per-step SQL, no engine; same runs, median)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "configuration\tmodel steps/s\tengine of model\tby CPU per step\tmodel postgres µs/step\tmodel buffers/step\t")
		for _, s := range ss {
			if s.ModelStepsPS > 0 && s.ModelRatio > 0 {
				byCPU := "-"
				if s.ModelCPURatio > 0 {
					byCPU = fmt.Sprintf("%.1f%%", 100*s.ModelCPURatio)
				}
				fmt.Fprintf(tw, "%s\t%.0f\t%.1f%%\t%s\t%.0f\t%s\t\n", s.Label, s.ModelStepsPS, 100*s.ModelRatio, byCPU, s.ModelPgCPU, measured(s.ModelBuffers))
			}
		}
		_ = tw.Flush()
	}
	if modelledLatency {
		fmt.Fprintln(w, "\nthe design model in the open loop (same rate; same runs, median of the runs' percentiles)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "configuration\tmodel p50\tmodel p99\tengine p50\tengine p99\t")
		for _, s := range ss {
			if s.ModelP50 > 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", s.Label, ms(s.ModelP50), ms(s.ModelP99), ms(s.LatencyP50), ms(s.LatencyP99))
			}
		}
		_ = tw.Flush()
	}
	printVerdicts(w, Verdicts(ss))
	timed := false
	for _, s := range ss {
		timed = timed || len(s.StateP50) > 0
	}
	if timed {
		fmt.Fprintln(w, "\ntime in step state: waiting for a worker, with the worker, waiting for the orchestrator (median of the runs' p50 / p99)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "configuration\t")
		for _, st := range StateTimeStates {
			fmt.Fprintf(tw, "%s\t", st)
		}
		fmt.Fprintln(tw)
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t", s.Label)
			for _, st := range StateTimeStates {
				if p50, ok := s.StateP50[st]; ok {
					fmt.Fprintf(tw, "%s / %s\t", ms(p50), ms(s.StateP99[st]))
				} else {
					fmt.Fprint(tw, "-\t")
				}
			}
			fmt.Fprintln(tw)
		}
		_ = tw.Flush()
	}
	fmt.Fprintln(w, "\nwhat the database sessions were doing (average sessions, sampled; median)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\n", s.Label, waitLine(s.Waits))
	}
	_ = tw.Flush()
	if len(ss) == 0 || len(ss[0].Functions) == 0 {
		return
	}
	fmt.Fprintln(w, "\nwhere Postgres spends its time: SQL functions by self time per step (median)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range ss {
		for i, f := range s.Functions {
			label := ""
			if i == 0 {
				label = s.Label
			}
			fmt.Fprintf(tw, "%s\t%6.0f µs/step\t%6.2f ms/call\t%s\n", label, f.SelfPerStepMicros, f.SelfPerCallMs, f.Name)
		}
	}
	_ = tw.Flush()
}

// cpuShare is the text after a run's "engine = x% of model": the share by
// CPU time per step, when it was measured.
func cpuShare(r float64) string {
	if r <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%.1f%% by CPU per step)", 100*r)
}
