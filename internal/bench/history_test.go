package bench

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/enginetest"
)

// TestRunWithHistory seeds completed tasks before a tiny run and checks that
// the history is what the engine would have left behind (counts, one current
// transition per task and step, unbroken transition chains, a chain of
// edges), and that the report counts only the run's own tasks.
func TestRunWithHistory(t *testing.T) {
	t.Parallel()
	const history, tasks = 2000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, conn := runKept(t, ctx, Options{Scenario: "linear4", Tasks: tasks, History: history, Workers: 2, Submitters: 4, Progress: &progress})

	// The report is the run's alone.
	if rep.HistoryTasks != history || rep.HistorySeedSeconds <= 0 || rep.HistoryDatabaseBytes <= 0 {
		t.Errorf("history: %d tasks, seeded in %.2fs, database %d bytes; want %d, > 0, > 0",
			rep.HistoryTasks, rep.HistorySeedSeconds, rep.HistoryDatabaseBytes, history)
	}
	if rep.Tasks != tasks || rep.TasksCompleted != tasks || rep.TasksFailed != 0 || rep.StepsCompleted != 4*tasks {
		t.Errorf("report: %d tasks, %d complete, %d failed, %d steps; want %d, %d, 0, %d (the run's only)",
			rep.Tasks, rep.TasksCompleted, rep.TasksFailed, rep.StepsCompleted, tasks, tasks, 4*tasks)
	}
	if rep.Latency.N != tasks || rep.Dispatch.N != 4*tasks {
		t.Errorf("latency samples %d, dispatch samples %d; want %d and %d", rep.Latency.N, rep.Dispatch.N, tasks, 4*tasks)
	}
	// Seeding wrote 43 rows per history task, over 2,000 per step of this
	// run: had the baseline been taken before it, rows per step would show.
	if rep.DB.RowsPerStep < 5 || rep.DB.RowsPerStep > 100 {
		t.Errorf("rows written per step = %.1f, want the run's own (5..100)", rep.DB.RowsPerStep)
	}
	// Its tasks started after the history was seeded.
	if rep.WallSeconds <= 0 || rep.WallSeconds > 60 {
		t.Errorf("wall = %.2fs: the first task's creation to the last completion should be the run's", rep.WallSeconds)
	}
	if !strings.Contains(progress.String(), "history: 2000/2000 tasks seeded") {
		t.Errorf("no seeding progress on the progress writer:\n%s", progress.String())
	}
	if !strings.Contains(rep.Label(), "history 2000") {
		t.Errorf("label %q does not name the history (summaries would mix it with empty-table runs)", rep.Label())
	}
	var table, js bytes.Buffer
	rep.Print(&table)
	if !strings.Contains(table.String(), "2000 completed tasks seeded") {
		t.Errorf("table lacks the history row:\n%s", table.String())
	}
	if err := rep.JSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"history_tasks": 2000`) {
		t.Errorf("JSON lacks history_tasks: %s", js.String())
	}

	// The seeded rows.
	for _, c := range []struct {
		what  string
		query string
		want  int64
	}{
		{"history tasks", `SELECT count(*) FROM tasker.tasks WHERE namespace = 'history'`, history},
		{"complete history tasks, as the engine leaves them", `SELECT count(*) FROM tasker.tasks t
			JOIN tasker.task_templates tt ON tt.template_id = t.template_id AND tt.namespace = 'history' AND tt.name = t.name
			WHERE t.namespace = 'history' AND t.state = 'complete' AND t.completed_at > t.created_at
			  AND t.root_span_emitted AND t.transition_count = 15 AND t.identity_hash LIKE 'history:%'
			  AND t.created_at > now() - interval '30 days 5 minutes' AND t.completed_at < now()`, history},
		{"the run's tasks", `SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench'`, tasks},
		{"history steps", `SELECT count(*) FROM tasker.workflow_steps ws JOIN tasker.tasks t USING (task_uuid)
			WHERE t.namespace = 'history'`, 4 * history},
		{"complete history steps", `SELECT count(*) FROM tasker.workflow_steps ws JOIN tasker.tasks t USING (task_uuid)
			WHERE t.namespace = 'history' AND ws.state = 'complete' AND ws.attempts = 1 AND ws.results = '{"ok": true}'
			  AND ws.transition_count = 5 AND ws.completed_at IS NOT NULL`, 4 * history},
		{"steps without a task", `SELECT count(*) FROM tasker.workflow_steps ws
			WHERE NOT EXISTS (SELECT 1 FROM tasker.tasks t WHERE t.task_uuid = ws.task_uuid)`, 0},
		{"history edges", `SELECT count(*) FROM tasker.workflow_step_edges e JOIN tasker.tasks t USING (task_uuid)
			WHERE t.namespace = 'history'`, 3 * history},
		{"history edges chaining positions within their task", `SELECT count(*) FROM tasker.workflow_step_edges e
			JOIN tasker.tasks t USING (task_uuid)
			JOIN tasker.workflow_steps a ON a.step_uuid = e.from_step AND a.task_uuid = e.task_uuid
			JOIN tasker.workflow_steps b ON b.step_uuid = e.to_step AND b.task_uuid = e.task_uuid AND b.position = a.position + 1
			WHERE t.namespace = 'history'`, 3 * history},
		{"history task transitions", `SELECT count(*) FROM tasker.task_transitions tr JOIN tasker.tasks t USING (task_uuid)
			WHERE t.namespace = 'history'`, 15 * history},
		{"history tasks with sort keys 1..15", `SELECT count(*) FROM (SELECT tr.task_uuid FROM tasker.task_transitions tr
			JOIN tasker.tasks t USING (task_uuid) WHERE t.namespace = 'history'
			GROUP BY tr.task_uuid HAVING count(*) = 15 AND min(sort_key) = 1 AND max(sort_key) = 15) x`, history},
		{"history tasks whose one current transition is the last, to complete", `SELECT count(*) FROM (SELECT tr.task_uuid
			FROM tasker.task_transitions tr JOIN tasker.tasks t USING (task_uuid) WHERE t.namespace = 'history'
			GROUP BY tr.task_uuid
			HAVING count(*) FILTER (WHERE most_recent) = 1
			   AND bool_and(most_recent = (sort_key = 15)) AND bool_or(most_recent AND to_state = 'complete')) x`, history},
		{"history task transitions not starting where the previous ended", `SELECT count(*) FROM tasker.task_transitions a
			JOIN tasker.tasks t USING (task_uuid)
			JOIN tasker.task_transitions b ON b.task_uuid = a.task_uuid AND b.sort_key = a.sort_key + 1
			WHERE t.namespace = 'history' AND (b.from_state IS DISTINCT FROM a.to_state OR b.created_at < a.created_at)`, 0},
		{"history step transitions", `SELECT count(*) FROM tasker.workflow_step_transitions tr
			JOIN tasker.workflow_steps ws ON ws.step_uuid = tr.step_uuid AND ws.task_uuid = tr.task_uuid
			JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid WHERE t.namespace = 'history'`, 20 * history},
		{"history steps whose one current transition is the fifth, to complete", `SELECT count(*) FROM (SELECT tr.step_uuid
			FROM tasker.workflow_step_transitions tr JOIN tasker.tasks t USING (task_uuid) WHERE t.namespace = 'history'
			GROUP BY tr.step_uuid
			HAVING count(*) = 5 AND min(sort_key) = 1 AND max(sort_key) = 5 AND count(*) FILTER (WHERE most_recent) = 1
			   AND bool_and(most_recent = (sort_key = 5)) AND bool_or(most_recent AND to_state = 'complete')) x`, 4 * history},
		{"history step transitions not starting where the previous ended", `SELECT count(*) FROM tasker.workflow_step_transitions a
			JOIN tasker.tasks t USING (task_uuid)
			JOIN tasker.workflow_step_transitions b ON b.step_uuid = a.step_uuid AND b.sort_key = a.sort_key + 1
			WHERE t.namespace = 'history' AND (b.from_state IS DISTINCT FROM a.to_state OR b.created_at < a.created_at)`, 0},
		{"seeded tables not vacuumed and analyzed", `SELECT count(*) FROM pg_stat_user_tables
			WHERE schemaname = 'tasker' AND relname IN ('tasks', 'workflow_steps', 'workflow_step_edges', 'task_transitions', 'workflow_step_transitions')
			  AND (last_vacuum IS NULL OR last_analyze IS NULL)`, 0},
	} {
		var got int64
		if err := conn.QueryRow(ctx, c.query).Scan(&got); err != nil {
			t.Errorf("%s: %v", c.what, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
}

// runKept runs o (on the test server, with Keep and the tests' small
// defaults for what o leaves zero; its progress goes to o.Progress when
// that is a *bytes.Buffer) and returns its report and a connection to the
// run's database, which the test's cleanup drops.
func runKept(t *testing.T, ctx context.Context, o Options) (*Report, *pgx.Conn) {
	t.Helper()
	progress, ok := o.Progress.(*bytes.Buffer)
	if !ok {
		progress = &bytes.Buffer{}
	}
	o.DatabaseURL, o.Config, o.Keep, o.SkipFloor = serverURL(t), config.Default(), true, true
	o.Progress, o.Logger = progress, enginetest.Logger(t)
	o.Concurrency = max(o.Concurrency, 4)
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	rep, err := Run(ctx, o)
	if rep != nil && rep.Database != "" {
		t.Cleanup(func() {
			if err := (&freshDatabase{serverURL: serverURL(t), name: rep.Database}).drop(context.Background()); err != nil {
				t.Errorf("drop %s: %v", rep.Database, err)
			}
		})
	}
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	u, err := url.Parse(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + rep.Database
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return rep, conn
}
