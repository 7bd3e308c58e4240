package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/template"
)

// HistoryNamespace is the namespace of the completed tasks seeded before a
// run (Options.History). No worker serves it: its tasks are history only.
const HistoryNamespace = "history"

// historyChunk is the number of tasks one seeding statement inserts (with
// their steps, edges and transitions: 43 rows a task).
const historyChunk = 20_000

// historySpan is how far back the seeded tasks' timestamps reach.
const historySpan = 30 * 24 * time.Hour

// historyTemplateYAML is the template of the seeded tasks: linear4's shape
// in a namespace of its own, so that the run's queries and the engine's
// per-namespace work never mistake history for the run's tasks. The seeding
// SQL's transition rows and timings assume this shape (four steps in a
// chain).
const historyTemplateYAML = `namespace: ` + HistoryNamespace + `
name: linear4
version: "1"
description: "completed tasks seeded before a benchmark run (--history)"
steps:
  - name: s1
    handler: ` + Handler + `
  - name: s2
    handler: ` + Handler + `
    depends_on: [s1]
  - name: s3
    handler: ` + Handler + `
    depends_on: [s2]
  - name: s4
    handler: ` + Handler + `
    depends_on: [s3]
`

// historySeed is what seeding took.
type historySeed struct {
	seconds       float64 // inserting the rows
	vacuumSeconds float64 // VACUUM ANALYZE and CHECKPOINT afterwards
	databaseBytes int64   // pg_database_size once done
	// checkpointErr is why the CHECKPOINT after seeding failed (it needs
	// a superuser or pg_checkpoint); the run then shares the disk with the
	// write-out of the seeded pages.
	checkpointErr error
}

// uuidV7SQL is an SQL expression for a version-7 UUID whose timestamp is
// ts: random bits with the first 48 replaced by the Unix time in
// milliseconds and the version nibble set to 7. The engine's UUIDs are
// version 7 (uuid.NewV7), so seeded rows sort before the run's in every
// UUID index, as a deployment's older rows would.
func uuidV7SQL(ts string) string {
	return `encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
		placing substring(int8send((extract(epoch FROM ` + ts + `) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
		52, 1), 53, 1), 'hex')::uuid`
}

// seedHistorySQL inserts tasks $1..$2 (of $3) of the history template, all
// complete, with the rows the engine leaves behind for such a task: 15 task
// transitions, 4 steps with 5 transitions each, 3 edges. Their timestamps
// are spread evenly from $4 over $5 seconds in task order; within a task,
// each step takes 40 ms. One statement per chunk: the data-modifying CTEs
// share the generated UUIDs (t and s are materialized once), and the
// foreign keys are checked at the end of the statement, when every row is
// in.
//
// $6 template_id, $7 namespace, $8 name, $9 version; $10.. the steps'
// columns in topological order; $17, $18 the edges as positions.
var seedHistorySQL = `
WITH t AS MATERIALIZED (
    SELECT g, ` + uuidV7SQL("c") + ` AS task_uuid, ` + uuidV7SQL("c") + ` AS correlation_id, c AS created_at
      FROM (SELECT g, $4::timestamptz + make_interval(secs => (g - 1) * $5::float8 / $3::bigint) AS c
              FROM generate_series($1::bigint, $2::bigint) AS g) x
), s AS MATERIALIZED (
    SELECT t.task_uuid, t.created_at, p.pos::int - 1 AS position, p.name, p.handler, p.max_attempts, p.retryable,
           p.backoff_base_ms, p.backoff_cap_ms, p.timeout_seconds,
           ` + uuidV7SQL("t.created_at") + ` AS step_uuid
      FROM t CROSS JOIN unnest($10::text[], $11::text[], $12::int[], $13::bool[], $14::int[], $15::int[], $16::int[])
           WITH ORDINALITY AS p(name, handler, max_attempts, retryable, backoff_base_ms, backoff_cap_ms, timeout_seconds, pos)
), tasks AS (
    INSERT INTO tasker.tasks (task_uuid, template_id, namespace, name, version, state, transition_count, context,
                              initiator, source_system, correlation_id, identity_hash, traceparent, root_span_emitted,
                              created_at, updated_at, state_entered_at, completed_at)
    SELECT task_uuid, $6, $7, $8, $9, 'complete', 15, jsonb_build_object('i', g),
           'bench', 'unknown', correlation_id, 'history:' || g,
           '00-' || replace(task_uuid::text, '-', '') || '-' || right(replace(correlation_id::text, '-', ''), 16) || '-01', true,
           created_at, created_at + interval '160 ms', created_at + interval '160 ms', created_at + interval '160 ms'
      FROM t
), task_transitions AS (
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata, created_at)
    SELECT t.task_uuid, v.from_state, v.to_state, v.sort_key, v.sort_key = 15, v.metadata::jsonb, t.created_at + v.after::interval
      FROM t CROSS JOIN (VALUES
        (1, NULL, 'pending', '{"trigger": "created"}', '0 ms'),
        (2, 'pending', 'initializing', '{"trigger": "start"}', '0 ms'),
        (3, 'initializing', 'enqueuing_steps', '{"ready": 1, "trigger": "ready_steps_found"}', '0 ms'),
        (4, 'enqueuing_steps', 'steps_in_process', '{"trigger": "steps_enqueued", "enqueued": 1}', '0 ms'),
        (5, 'steps_in_process', 'evaluating_results', '{"trigger": "step_result_received"}', '40 ms'),
        (6, 'evaluating_results', 'enqueuing_steps', '{"ready": 1, "total": 4, "failed": 0, "backoff": 0, "trigger": "ready_steps_found", "in_flight": 0, "satisfied": 1}', '40 ms'),
        (7, 'enqueuing_steps', 'steps_in_process', '{"trigger": "steps_enqueued", "enqueued": 1}', '40 ms'),
        (8, 'steps_in_process', 'evaluating_results', '{"trigger": "step_result_received"}', '80 ms'),
        (9, 'evaluating_results', 'enqueuing_steps', '{"ready": 1, "total": 4, "failed": 0, "backoff": 0, "trigger": "ready_steps_found", "in_flight": 0, "satisfied": 2}', '80 ms'),
        (10, 'enqueuing_steps', 'steps_in_process', '{"trigger": "steps_enqueued", "enqueued": 1}', '80 ms'),
        (11, 'steps_in_process', 'evaluating_results', '{"trigger": "step_result_received"}', '120 ms'),
        (12, 'evaluating_results', 'enqueuing_steps', '{"ready": 1, "total": 4, "failed": 0, "backoff": 0, "trigger": "ready_steps_found", "in_flight": 0, "satisfied": 3}', '120 ms'),
        (13, 'enqueuing_steps', 'steps_in_process', '{"trigger": "steps_enqueued", "enqueued": 1}', '120 ms'),
        (14, 'steps_in_process', 'evaluating_results', '{"trigger": "step_result_received"}', '160 ms'),
        (15, 'evaluating_results', 'complete', '{"ready": 0, "total": 4, "failed": 0, "backoff": 0, "trigger": "all_steps_complete", "in_flight": 0, "satisfied": 4}', '160 ms')
      ) AS v(sort_key, from_state, to_state, metadata, after)
), steps AS (
    INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, handler, position, state, transition_count, attempts,
                                       max_attempts, retryable, backoff_base_ms, backoff_cap_ms, timeout_seconds,
                                       claimed_by, results, created_at, updated_at, state_entered_at, completed_at)
    SELECT step_uuid, task_uuid, name, handler, position, 'complete', 5, 1,
           max_attempts, retryable, backoff_base_ms, backoff_cap_ms, timeout_seconds,
           'history', '{"ok": true}', created_at, created_at + (position + 1) * interval '40 ms',
           created_at + (position + 1) * interval '40 ms', created_at + (position + 1) * interval '40 ms'
      FROM s
), step_transitions AS (
    INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata, created_at)
    SELECT s.step_uuid, s.task_uuid, v.from_state, v.to_state, v.sort_key, v.sort_key = 5, v.metadata::jsonb,
           s.created_at + CASE WHEN v.sort_key = 1 THEN interval '0 ms'
                               ELSE s.position * interval '40 ms' + v.after::interval END
      FROM s CROSS JOIN (VALUES
        (1, NULL, 'pending', '{"trigger": "created"}', '0 ms'),
        (2, 'pending', 'enqueued', '{"trigger": "enqueue"}', '2 ms'),
        (3, 'enqueued', 'in_progress', '{"trigger": "claim", "worker_id": "history"}', '10 ms'),
        (4, 'in_progress', 'enqueued_for_orchestration', '{"attempt": 1, "worker_id": "history"}', '20 ms'),
        (5, 'enqueued_for_orchestration', 'complete', '{"trigger": "result_processed"}', '40 ms')
      ) AS v(sort_key, from_state, to_state, metadata, after)
), edges AS (
    INSERT INTO tasker.workflow_step_edges (task_uuid, from_step, to_step)
    SELECT a.task_uuid, a.step_uuid, b.step_uuid
      FROM unnest($17::int[], $18::int[]) AS e(from_pos, to_pos)
      JOIN s a ON a.position = e.from_pos
      JOIN s b ON b.task_uuid = a.task_uuid AND b.position = e.to_pos
)
SELECT count(*) FROM t`

// seedHistory registers the history template and inserts n completed tasks
// of it, then runs VACUUM ANALYZE on the tasker tables, as autovacuum would
// have done on a deployment that ran those tasks: the run then starts with
// planner statistics that know the tables' size, and with no autovacuum of
// the seeded rows pending that would fire during the run. It works on a
// connection of its own, closed before it returns, so the statistics
// baseline taken afterwards (once the database is idle) already includes
// every counter the seeding moved.
func seedHistory(ctx context.Context, dbURL string, n int, w io.Writer) (historySeed, error) {
	var res historySeed
	tpl, err := template.Parse([]byte(historyTemplateYAML))
	if err != nil {
		return res, fmt.Errorf("history template: %w", err)
	}
	templateID, err := registerTemplate(ctx, dbURL, tpl)
	if err != nil {
		return res, err
	}
	var names, handlers []string
	var maxAttempts, backoffBase, backoffCap, timeouts []int32
	var retryable []bool
	pos := map[string]int32{}
	var edgeFrom, edgeTo []int32
	for i, name := range tpl.TopologicalOrder() {
		st, _ := tpl.StepByName(name)
		pos[name] = int32(i)
		names, handlers = append(names, st.Name), append(handlers, st.Handler)
		maxAttempts, retryable = append(maxAttempts, int32(st.Retry.MaxAttempts)), append(retryable, st.Retry.Retryable)
		backoffBase, backoffCap = append(backoffBase, int32(st.Retry.BackoffBaseMs)), append(backoffCap, int32(st.Retry.BackoffCapMs))
		timeouts = append(timeouts, int32(st.TimeoutSeconds))
		for _, p := range st.DependsOn {
			edgeFrom, edgeTo = append(edgeFrom, pos[p]), append(edgeTo, int32(i))
		}
	}

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The foreign-key checks are a third to a half of the seeding time
	// (one index probe per transition, step and edge), and the rows are
	// consistent by construction (TestRunWithHistory checks them): skip
	// the checks where allowed (a superuser). Elsewhere they simply run.
	_, _ = conn.Exec(ctx, `SET session_replication_role = replica`)
	const rowsPerTask = 1 + 15 + 4 + 4*5 + 3
	start := time.Now()
	from := start.Add(-historySpan)
	for first := 1; first <= n; first += historyChunk {
		last := min(first+historyChunk-1, n)
		if _, err := conn.Exec(ctx, seedHistorySQL, first, last, n, from, historySpan.Seconds(),
			templateID, tpl.Namespace, tpl.Name, tpl.Version,
			names, handlers, maxAttempts, retryable, backoffBase, backoffCap, timeouts, edgeFrom, edgeTo); err != nil {
			return res, fmt.Errorf("seed history tasks %d-%d: %w", first, last, err)
		}
		elapsed := time.Since(start)
		rate := float64(last) / elapsed.Seconds()
		eta := time.Duration(float64(n-last) / rate * float64(time.Second))
		fmt.Fprintf(w, "history: %d/%d tasks seeded (%d rows), %.0f tasks/s (%.0f rows/s), ETA %s\n",
			last, n, last*rowsPerTask, rate, rate*rowsPerTask, eta.Round(time.Second))
	}
	res.seconds = time.Since(start).Seconds()

	vstart := time.Now()
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'tasker' ORDER BY 1`)
	if err != nil {
		return res, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return res, fmt.Errorf("list tasker tables: %w", err)
	}
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE `+strings.Join(tables, ", ")); err != nil {
		return res, fmt.Errorf("vacuum analyze the seeded tables: %w", err)
	}
	if _, err := conn.Exec(ctx, `RESET session_replication_role`); err != nil {
		return res, err
	}
	// A checkpoint now writes the seeded pages out before the run instead
	// of during it: a deployment's history was written out long ago, and
	// a spread checkpoint of gigabytes competing with the run's WAL
	// flushes would be an artifact of seeding just before.
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		res.checkpointErr = err
	}
	res.vacuumSeconds = time.Since(vstart).Seconds()
	if err := conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&res.databaseBytes); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "history: %d tasks seeded in %.1fs, VACUUM ANALYZE and CHECKPOINT %.1fs, database %s\n",
		n, res.seconds, res.vacuumSeconds, byteSize(res.databaseBytes))
	return res, nil
}

// byteSize formats a size in bytes with a binary unit.
func byteSize(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
