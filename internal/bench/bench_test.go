package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/enginetest"
)

func serverURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("DATABASE_URL")
	if u == "" {
		t.Fatalf("DATABASE_URL is not set: run the tests with `make test`, which starts a throwaway Postgres")
	}
	return u
}

// TestRunReportsACompleteRun runs tiny benchmarks in-process and checks that
// every number a user reads in the report is there and consistent with
// what ran.
func TestRunReportsACompleteRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scenario    string
		tasks       int
		submitBatch int
		viaQueue    bool
		handlerTime time.Duration
		// profiles: the run writes its CPU and allocation profiles (one
		// case only: the CPU profiler is the process's).
		profiles bool
	}{{"single", 20, 0, false, 0, true}, {"linear4", 5, 0, false, 0, false}, {"single", 23, 5, false, 0, false}, {"single", 12, 0, true, 0, false},
		{"single", 17, 4, true, 0, false}, {"single", 8, 0, false, 5 * time.Millisecond, false}} {
		name := tc.scenario
		if tc.submitBatch > 1 {
			name += fmt.Sprintf("/batches_of_%d", tc.submitBatch)
		}
		if tc.viaQueue {
			name += "/via_queue"
		}
		if tc.handlerTime > 0 {
			name += "/handlers_of_" + tc.handlerTime.String()
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var progress bytes.Buffer
			var cpuProfile, memProfile string
			if tc.profiles {
				dir := t.TempDir()
				cpuProfile, memProfile = filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "allocs.pprof")
			}
			rep, err := Run(ctx, Options{
				DatabaseURL: serverURL(t), Config: config.Default(), Scenario: tc.scenario, Tasks: tc.tasks,
				Workers: 2, Concurrency: 4, Submitters: 4, SubmitBatch: tc.submitBatch, ViaQueue: tc.viaQueue, HandlerTime: tc.handlerTime, Timeout: time.Minute, Model: ModelBare,
				CPUProfile: cpuProfile, MemProfile: memProfile,
				Progress: &progress, Logger: enginetest.Logger(t),
			})
			if err != nil {
				t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
			}
			if tc.profiles {
				if rep.CPUProfile != cpuProfile || rep.MemProfile != memProfile {
					t.Errorf("report names profiles %q and %q, want %q and %q", rep.CPUProfile, rep.MemProfile, cpuProfile, memProfile)
				}
				// pprof's format: a gzipped protocol buffer.
				for _, f := range []string{cpuProfile, memProfile, memProfile + ".start"} {
					if b, err := os.ReadFile(f); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
						t.Errorf("profile %s: %d bytes, error %v; want a gzipped pprof profile", f, len(b), err)
					}
				}
			}
			sc, _ := ScenarioByName(tc.scenario)
			steps := int64(tc.tasks * sc.StepsPerTask())

			if rep.Tasks != int64(tc.tasks) || rep.TasksCompleted != int64(tc.tasks) || rep.TasksFailed != 0 {
				t.Errorf("tasks: %d submitted, %d complete, %d failed; want %d complete", rep.Tasks, rep.TasksCompleted, rep.TasksFailed, tc.tasks)
			}
			if rep.StepsCompleted != steps {
				t.Errorf("steps completed = %d, want %d", rep.StepsCompleted, steps)
			}
			if rep.WallSeconds <= 0 || rep.TasksPerSec <= 0 {
				t.Errorf("wall %.3fs, %.1f tasks/s: want both > 0", rep.WallSeconds, rep.TasksPerSec)
			}
			if got, want := rep.StepsPerSec, rep.TasksPerSec*float64(sc.StepsPerTask()); got < want*0.999 || got > want*1.001 {
				t.Errorf("steps/s = %.2f, want tasks/s x steps per task = %.2f", got, want)
			}
			l := rep.Latency
			if l.N != int64(tc.tasks) || l.P50 <= 0 || l.P50 > l.P95 || l.P95 > l.P99 || l.P99 > l.Max {
				t.Errorf("latency %+v: want %d samples, 0 < p50 <= p95 <= p99 <= max", l, tc.tasks)
			}
			if rep.Dispatch.N != steps || rep.Dispatch.P50 < 0 || rep.Dispatch.P99 < rep.Dispatch.P50 {
				t.Errorf("dispatch latency %+v: want %d samples, 0 <= p50 <= p99", rep.Dispatch, steps)
			}
			// Without retries every step passes once through each reported
			// state; time in enqueued is the dispatch latency.
			for _, st := range StateTimeStates {
				l, ok := rep.StateTimes[st]
				if !ok || l.N != steps || l.P50 < 0 || l.P50 > l.P95 || l.P95 > l.P99 || l.P99 > l.Max {
					t.Errorf("time in %s = %+v (reported %v): want %d samples, 0 <= p50 <= p95 <= p99 <= max", st, l, ok, steps)
				}
			}
			// Handlers that take their time keep each step with its worker
			// at least that long, and the report says how long they took.
			if tc.handlerTime > 0 {
				if got := rep.StateTimes["in_progress"]; got.P50 < float64(tc.handlerTime)/float64(time.Millisecond) {
					t.Errorf("time in in_progress p50 %.2fms with handlers of %s", got.P50, tc.handlerTime)
				}
			}
			if got, want := rep.HandlerTimeMs, float64(tc.handlerTime)/float64(time.Millisecond); got != want {
				t.Errorf("report's handler time = %vms, want %vms", got, want)
			}
			if got := rep.StateTimes["enqueued"]; got != rep.Dispatch {
				t.Errorf("time in enqueued = %+v, want the dispatch latency %+v", got, rep.Dispatch)
			}
			// Every step writes at least its five transition rows (pending,
			// enqueued, in_progress, enqueued_for_orchestration, complete)
			// in at least three transactions (claim, submit, result).
			if rep.DB.RowsPerStep < 5 || rep.DB.CommitsPerStep < 3 {
				t.Errorf("database per step: %.2f commits, %.1f rows; want >= 3 and >= 5", rep.DB.CommitsPerStep, rep.DB.RowsPerStep)
			}
			// Pages: every step touches its step row, its transitions and
			// its messages, each through an index; the tables are the
			// engine's, most first, and a share of all; a server from 14 on
			// counts WAL records, at least one per row written.
			checkBuffers(t, "engine", rep.DB, "tasker.workflow_steps")
			if rep.DB.WALRecords < rep.DB.RowsInserted+rep.DB.RowsUpdated+rep.DB.RowsDeleted || rep.DB.WALRecordsPerStep <= 0 {
				t.Errorf("WAL records = %d (%.1f per step) for %d rows written: want at least one a row",
					rep.DB.WALRecords, rep.DB.WALRecordsPerStep, rep.DB.RowsInserted+rep.DB.RowsUpdated+rep.DB.RowsDeleted)
			}
			if rep.CPU.InProcess == nil || *rep.CPU.InProcess <= 0 {
				t.Errorf("in-process CPU = %v, want > 0", deref(rep.CPU.InProcess))
			}
			if rep.Server.Local && (rep.CPU.Postgres == nil || *rep.CPU.Postgres <= 0) {
				t.Errorf("local server, postgres CPU = %v (%s), want > 0", deref(rep.CPU.Postgres), rep.CPU.Note)
			}
			claimTimed := false
			for _, fn := range rep.Functions {
				claimTimed = claimTimed || strings.Contains(fn.Name, "step_claim_batch") && fn.Calls > 0 && fn.SelfMs > 0
			}
			if !claimTimed {
				t.Errorf("functions = %+v, want tasker.step_claim_batch timed (the test server is a superuser's)", rep.Functions)
			}
			// Every step was claimed and submitted once (no retries here),
			// in calls of at least one step each.
			if p := rep.Protocol; p == nil || p.Claims < 1 || p.Claims > steps || p.Submissions < 1 || p.Submissions > steps ||
				p.SingleSubmissions > p.Submissions || p.StepsPerClaim != float64(steps)/float64(p.Claims) ||
				p.StepsPerSubmission != float64(steps)/float64(p.Submissions) {
				t.Errorf("protocol calls = %+v for %d steps: want 1 to %d claims and submissions, and the steps per call", p, steps, steps)
			}
			if f := rep.Floor; f == nil || f.Messages != int(steps) || f.MsgsPerSec <= 0 || f.Ratio <= 0 || f.DB.Commits <= 0 {
				t.Errorf("floor = %+v, want %d messages, rate, ratio and commits > 0", f, steps)
			}
			if md := rep.Model; md == nil || md.Steps != int(steps) || md.StepsPerTask != sc.StepsPerTask() || md.StepsPerSec <= 0 || md.Ratio <= 0 ||
				md.DB.Commits <= 0 || md.DB.RowsPerStep < 5 {
				t.Errorf("model = %+v, want %d steps, rate, ratio, commits > 0 and >= 5 rows per step", md, steps)
			}
			if md := rep.Model; md != nil {
				checkBuffers(t, "model", md.DB, "bench_model.steps")
			}
			// The floor's and the model's windows count their own work
			// only, not the report's queries over the engine's tables just
			// before them (hundreds of page accesses: a third of a small
			// floor's). An autovacuum worker may analyze a few pages of
			// them meanwhile: 5 % of the window is let through.
			for what, db := range map[string]*DBCounters{"floor": floorDB(rep.Floor), "model": modelDB(rep.Model)} {
				for _, tb := range db.Tables {
					if strings.HasPrefix(tb.Table, "tasker.") && tb.Accesses*20 > db.BufferAccesses {
						t.Errorf("the %s's window counts %d page accesses of the engine's table %s", what, tb.Accesses, tb.Table)
					}
				}
			}
			// The share by CPU is the model's CPU per step over the
			// engine's, from the two windows' own readings.
			if md := rep.Model; md != nil && rep.Server.Local {
				e, _ := rep.CPU.total()
				m, _ := md.CPU.total()
				want := (m / float64(md.Steps)) / (e / float64(steps))
				if md.CPURatio <= 0 || math.Abs(md.CPURatio-want) > 1e-9*want {
					t.Errorf("model's share by CPU = %v, want %v (model %v s for %d steps, engine %v s for %d)", md.CPURatio, want, m, md.Steps, e, steps)
				}
			}
			if rep.SubmitBatch != tc.submitBatch || (rep.Via == "queue") != tc.viaQueue {
				t.Errorf("report's submit batch = %d, via %q; want %d, via the queue %v", rep.SubmitBatch, rep.Via, tc.submitBatch, tc.viaQueue)
			}
			if !strings.Contains(progress.String(), "tasks done") {
				t.Errorf("no progress line on the progress writer: %q", progress.String())
			}

			// The database is gone.
			conn, err := pgx.Connect(ctx, serverURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var left bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, rep.Database).Scan(&left); err != nil || left {
				t.Errorf("benchmark database %s still exists (%v)", rep.Database, err)
			}

			// Both outputs render, and saved reports summarize to themselves.
			var table bytes.Buffer
			rep.Print(&table)
			for _, want := range []string{"tasks/s", "p99", "commits", "pgmq floor", "design model", "time in step state", "enqueued_for_orchestration", "worker protocol calls",
				"buffers per step", "updates HOT", "by table: ", fmt.Sprintf("%.0f buffers", rep.Model.DB.BuffersPerStep), " records ("} {
				if !strings.Contains(table.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, table.String())
				}
			}
			back := savedAndRead(t, rep)
			sum := Summarize([]*Report{back, rep, back})
			if len(sum) != 1 || sum[0].Runs != 3 || sum[0].StepsPerSec != rep.StepsPerSec || sum[0].LatencyP99 != rep.Latency.P99 ||
				sum[0].ModelStepsPS != rep.Model.StepsPerSec || sum[0].StepsPerClaim != rep.Protocol.StepsPerClaim ||
				sum[0].StepsPerSubmit != rep.Protocol.StepsPerSubmission || sum[0].ModelCPURatio != rep.Model.CPURatio ||
				sum[0].BuffersPerStep != rep.DB.BuffersPerStep || sum[0].ModelBuffers != rep.Model.DB.BuffersPerStep {
				t.Errorf("summary of three copies = %+v, want the report's own numbers", sum)
			}
			for _, st := range StateTimeStates {
				if len(sum) == 1 && (sum[0].StateP50[st] != rep.StateTimes[st].P50 || sum[0].StateP99[st] != rep.StateTimes[st].P99) {
					t.Errorf("summary's time in %s = %v / %v, want the report's %+v", st, sum[0].StateP50[st], sum[0].StateP99[st], rep.StateTimes[st])
				}
			}
			var summary bytes.Buffer
			PrintSummaries(&summary, sum)
			wantSummary := []string{"time in step state", "steps/claim", fmt.Sprintf("%.1f", rep.Protocol.StepsPerClaim),
				"buffers/step", fmt.Sprintf("%.0f", rep.DB.BuffersPerStep), "model buffers/step"}
			if rep.Model.CPURatio > 0 {
				wantSummary = append(wantSummary, "by CPU per step", fmt.Sprintf("%.1f%%", 100*rep.Model.CPURatio))
				if want := fmt.Sprintf("(%.1f%% by CPU per step)", 100*rep.Model.CPURatio); !strings.Contains(table.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, table.String())
				}
			}
			for _, want := range wantSummary {
				if !strings.Contains(summary.String(), want) {
					t.Errorf("summary lacks %q:\n%s", want, summary.String())
				}
			}
		})
	}
}

func TestScenarioTemplates(t *testing.T) {
	t.Parallel()
	want := map[string]int{"single": 1, "linear4": 4, "diamond": 4, "fanout": FanoutWidth + 2}
	if len(Scenarios()) != len(want) {
		t.Fatalf("scenarios = %v, want %d", ScenarioNames(), len(want))
	}
	for name, n := range want {
		sc, err := ScenarioByName(name)
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := sc.Template()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(tpl.Steps) != n || sc.StepsPerTask() != n {
			t.Errorf("%s: %d steps, want %d", name, len(tpl.Steps), n)
		}
		roots := 0
		for _, st := range tpl.Steps {
			if st.Handler != Handler {
				t.Errorf("%s: step %s has handler %s, want %s", name, st.Name, st.Handler, Handler)
			}
			if len(st.DependsOn) == 0 {
				roots++
			}
		}
		if roots != 1 {
			t.Errorf("%s: %d root steps, want 1", name, roots)
		}
	}
	if _, err := ScenarioByName("nope"); err == nil || !strings.Contains(err.Error(), "linear4") {
		t.Errorf("unknown scenario error = %v, want one listing the scenarios", err)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestReadProcStatOfSelf(t *testing.T) {
	t.Parallel()
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatalf("read /proc of this process (the bench measures CPU from /proc; Linux only): %v", err)
	}
	if st.ppid != os.Getppid() {
		t.Errorf("ppid = %d, want %d", st.ppid, os.Getppid())
	}
	if st.comm == "" {
		t.Error("empty comm")
	}
}

// TestDomainEventsOption: --domain-events chooses what the scenario's
// template publishes, so that a run measures the engine with the domain
// events a deployment selects; the report says which.
func TestDomainEventsOption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag  string
		label string
		want  map[string]int // domain events per type, for 3 linear4 tasks
	}{
		{"none", "none", map[string]int{}},
		{"TaskCompleted, StepCompleted,TaskCompleted", "TaskCompleted,StepCompleted", map[string]int{"TaskCompleted": 3, "StepCompleted": 12}},
		{"all", "", map[string]int{"TaskInitiated": 3, "StepCompleted": 12, "WorkflowProgressed": 12, "TaskCompleted": 3}},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			t.Parallel()
			events, err := ParseDomainEvents(tc.flag)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Options{
				DatabaseURL: serverURL(t), Config: config.Default(), Scenario: "linear4", Tasks: 3, DomainEvents: events,
				Workers: 1, Concurrency: 4, Submitters: 2, Timeout: time.Minute, SkipFloor: true, Keep: true,
				Progress: io.Discard, Logger: enginetest.Logger(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(serverURL(t))
			server, err := pgx.Connect(ctx, serverURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close(ctx)
			t.Cleanup(func() {
				_, _ = server.Exec(context.Background(), `DROP DATABASE IF EXISTS "`+rep.Database+`" WITH (FORCE)`)
			})
			u.Path = "/" + rep.Database
			conn, err := pgx.Connect(ctx, u.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			rows, err := conn.Query(ctx, `SELECT message->>'event_type', count(*)::int FROM pgmq.q_domain_events_bench GROUP BY 1`)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for rows.Next() {
				var typ string
				var n int
				if err := rows.Scan(&typ, &n); err != nil {
					t.Fatal(err)
				}
				got[typ] = n
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("--domain-events %q published %v, want %v", tc.flag, got, tc.want)
			}
			if rep.DomainEvents != tc.label {
				t.Errorf("report's domain_events = %q, want %q", rep.DomainEvents, tc.label)
			}
			var table bytes.Buffer
			rep.Print(&table)
			if want := map[string]string{"none": "no domain events", "": "all domain events"}[tc.label]; want != "" && !strings.Contains(table.String(), want) {
				t.Errorf("table does not say %q:\n%s", want, table.String())
			}
		})
	}
	if _, err := ParseDomainEvents("TaskCompleted,StepDone"); err == nil || !strings.Contains(err.Error(), `"StepDone"`) ||
		!strings.Contains(err.Error(), "WorkflowProgressed") {
		t.Errorf("unknown type: error %v, want one naming it and listing the types", err)
	}
}

// With --processes the orchestrator and the workers are processes of the
// orchestrator binary and tasks go through the REST API: one alone with
// POST /v1/tasks, several with POST /v1/tasks/batch (11 tasks in batches of
// 5: two batches and one lone task).
func TestRunWithProcessesSubmitsThroughTheAPI(t *testing.T) {
	t.Parallel()
	exe := filepath.Join(t.TempDir(), "orchestrator")
	build := exec.Command("go", "build", "-o", exe, "github.com/tasker/tasker/cmd/orchestrator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the orchestrator: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		DatabaseURL: serverURL(t), Config: config.Default(), Scenario: "single", Tasks: 31, SubmitBatch: 5,
		Workers: 1, Concurrency: 4, Submitters: 2, Timeout: time.Minute, SkipFloor: true,
		Processes: true, Executable: exe, Progress: io.Discard, Logger: enginetest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TasksCompleted != 31 || rep.TasksFailed != 0 || rep.StepsCompleted != 31 {
		t.Errorf("%d tasks complete, %d failed, %d steps; want 31, 0, 31", rep.TasksCompleted, rep.TasksFailed, rep.StepsCompleted)
	}
	// Measured per process, in clock ticks of 10 ms: a small run's
	// orchestrator or workers alone may use less than one, the two together
	// do not. (With 11 tasks and the orchestrator alone checked, the test
	// failed once in a run of the whole suite under the race detector; its
	// message was lost, and a reading under one tick is the likely cause.)
	if rep.CPU.Orchestrator == nil || rep.CPU.Workers == nil || *rep.CPU.Orchestrator+*rep.CPU.Workers <= 0 ||
		*rep.CPU.Orchestrator < 0 || *rep.CPU.Workers < 0 || rep.CPU.InProcess != nil {
		t.Errorf("CPU of the orchestrator %v, the workers %v, in-process %v: want the first two measured, the last absent",
			deref(rep.CPU.Orchestrator), deref(rep.CPU.Workers), deref(rep.CPU.InProcess))
	}
}

// TestProtocolCalls: the claim and both submissions are counted by their
// signatures, other functions are not, and without a claim (functions not
// tracked) there is no figure.
func TestProtocolCalls(t *testing.T) {
	t.Parallel()
	fns := []FuncTime{
		{Name: "tasker.step_claim_batch(uuid[],integer[],text,integer)", Calls: 25},
		{Name: "tasker.step_claim_cas(uuid[],integer[],text,integer)", Calls: 25},
		{Name: "tasker.step_submit_results(uuid[],integer[],text,boolean[],jsonb[],jsonb[],bigint[],jsonb[])", Calls: 15},
		{Name: "tasker.step_submit_result(uuid,integer,text,boolean,jsonb,jsonb,bigint,jsonb)", Calls: 5},
		{Name: "tasker.apply_step_moves(uuid[])", Calls: 40},
	}
	got := protocolCalls(fns, 400)
	want := &ProtocolCalls{Claims: 25, Submissions: 20, SingleSubmissions: 5, StepsPerClaim: 16, StepsPerSubmission: 20}
	if got == nil || *got != *want {
		t.Errorf("protocolCalls = %+v, want %+v", got, want)
	}
	if got := protocolCalls(fns[2:], 400); got != nil {
		t.Errorf("without claims: %+v, want nil", got)
	}
	// A report saved before it had the figure gets it from its functions.
	old := &Report{Functions: fns, StepsCompleted: 400}
	if got := old.protocol(); got == nil || *got != *want {
		t.Errorf("from a report's functions: %+v, want %+v", got, want)
	}
	if sum := Summarize([]*Report{old}); len(sum) != 1 || sum[0].StepsPerClaim != 16 || sum[0].StepsPerSubmit != 20 {
		t.Errorf("summary of that report = %+v, want 16 steps per claim and 20 per submission", sum)
	}
}

// savedAndRead is rep written as JSON (as --json writes it) and read back.
func savedAndRead(t *testing.T, rep *Report) *Report {
	t.Helper()
	var js bytes.Buffer
	if err := rep.JSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	return &back
}

// checkBuffers checks a window's page counts: some pages per step, no more
// read in than accessed, HOT updates among the updates, and the tables by
// accesses, most first, each at least 1 % of all and together no more,
// with want among them.
func checkBuffers(t *testing.T, what string, db DBCounters, want string) {
	t.Helper()
	if db.BufferAccesses <= 0 || db.BuffersPerStep < 5 || db.BufferReads < 0 || db.BufferReads > db.BufferAccesses {
		t.Errorf("%s: %d buffer accesses (%.1f per step), %d read in: want at least 5 a step, no more read in than accessed",
			what, db.BufferAccesses, db.BuffersPerStep, db.BufferReads)
	}
	if db.HOTUpdates < 0 || db.HOTUpdates > db.RowsUpdated {
		t.Errorf("%s: %d HOT updates of %d updates", what, db.HOTUpdates, db.RowsUpdated)
	}
	var sum int64
	found := false
	for i, tb := range db.Tables {
		sum += tb.Accesses
		found = found || tb.Table == want
		if tb.Accesses*100 < db.BufferAccesses || tb.PerStep <= 0 || (i > 0 && tb.Accesses > db.Tables[i-1].Accesses) {
			t.Errorf("%s: table %d %+v of %d accesses: want at least 1 %%, most first", what, i, tb, db.BufferAccesses)
		}
	}
	if !found || sum > db.BufferAccesses {
		t.Errorf("%s: tables %+v (%d accesses of %d): want %s among them, and no more than all", what, db.Tables, sum, db.BufferAccesses, want)
	}
}

func floorDB(f *Floor) *DBCounters {
	if f == nil {
		return &DBCounters{}
	}
	return &f.DB
}

func modelDB(m *Model) *DBCounters {
	if m == nil {
		return &DBCounters{}
	}
	return &m.DB
}
