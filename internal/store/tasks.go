package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/jsonenc"
	"github.com/tasker/tasker/internal/lifecycle"
)

// Task is a task row.
type Task struct {
	UUID                uuid.UUID
	TemplateID          int64
	Namespace           string
	Name                string
	Version             string
	State               lifecycle.TaskState
	Context             json.RawMessage
	Tags                []string
	Priority            int
	Initiator           string
	SourceSystem        string
	Reason              string
	CorrelationID       uuid.UUID
	ParentCorrelationID *uuid.UUID
	TraceParent         string
	WakeAt              *time.Time
	StaleAfterSeconds   int
	CreatedAt           time.Time
	UpdatedAt           time.Time
	StateEnteredAt      time.Time
	CompletedAt         *time.Time
	// RootSpanEmitted is set once the task's root span has been emitted (at
	// its first terminal state).
	RootSpanEmitted bool
}

// Step is a workflow step row, with the uuids of the steps it depends on.
type Step struct {
	UUID           uuid.UUID
	TaskUUID       uuid.UUID
	Name           string
	Handler        string
	Position       int
	State          lifecycle.StepState
	Attempts       int
	MaxAttempts    int
	Retryable      bool
	BackoffBaseMs  int
	BackoffCapMs   int
	TimeoutSeconds int
	NextAttemptAt  *time.Time
	ClaimedBy      string
	LeaseExpiresAt *time.Time
	Inputs         json.RawMessage
	Results        json.RawMessage
	LastError      json.RawMessage
	// Parents are the steps this one depends on (workflow_step_edges); nil
	// in the steps TasksLockWithStepsTx returns, which the engine evaluates
	// by their template instead.
	Parents        []uuid.UUID
	CreatedAt      time.Time
	UpdatedAt      time.Time
	StateEnteredAt time.Time
	CompletedAt    *time.Time
}

// NewTask is what TaskCreateTx inserts.
type NewTask struct {
	UUID                uuid.UUID
	TemplateID          int64
	Namespace           string
	Name                string
	Version             string
	Context             json.RawMessage
	Tags                []string
	Priority            int
	Initiator           string
	SourceSystem        string
	Reason              string
	CorrelationID       uuid.UUID
	ParentCorrelationID *uuid.UUID
	IdentityHash        string
	TraceParent         string
	StaleAfterSeconds   int
	Steps               []NewStep
}

// NewStep is a step of a NewTask.
type NewStep struct {
	UUID           uuid.UUID
	Name           string
	Handler        string
	Position       int
	MaxAttempts    int
	Retryable      bool
	BackoffBaseMs  int
	BackoffCapMs   int
	TimeoutSeconds int
	Parents        []uuid.UUID
}

const taskColumns = `t.task_uuid, t.template_id, t.namespace, t.name, t.version, t.state, t.context, t.tags,
	t.priority, t.initiator, t.source_system, t.reason, t.correlation_id, t.parent_correlation_id,
	t.traceparent, t.wake_at, t.stale_after_seconds, t.created_at, t.updated_at, t.state_entered_at, t.completed_at,
	t.root_span_emitted, ` + lastTransitionAt

// lastTransitionAt is when the task's most recent transition happened:
// when it entered its current state, and its last change. A task's row is
// not rewritten when a result transaction's moves leave it in the state
// it was in (migration 00038), so its updated_at and state_entered_at are
// as of the row's last write; the reads take the transition's time
// (Task.lastTransition).
const lastTransitionAt = `(SELECT tr.created_at FROM tasker.task_transitions tr
	  WHERE tr.task_uuid = t.task_uuid AND tr.most_recent)`

// lastTransition sets StateEnteredAt and UpdatedAt from the time of the
// task's most recent transition (nil: none, which only a row written
// without its transitions has).
func (t *Task) lastTransition(at *time.Time) {
	if at == nil {
		return
	}
	t.StateEnteredAt = *at
	if at.After(t.UpdatedAt) {
		t.UpdatedAt = *at
	}
}

func scanTask(row pgx.Row) (Task, error) {
	var t Task
	var state string
	var last *time.Time
	err := row.Scan(&t.UUID, &t.TemplateID, &t.Namespace, &t.Name, &t.Version, &state, &t.Context, &t.Tags,
		&t.Priority, &t.Initiator, &t.SourceSystem, &t.Reason, &t.CorrelationID, &t.ParentCorrelationID,
		&t.TraceParent, &t.WakeAt, &t.StaleAfterSeconds, &t.CreatedAt, &t.UpdatedAt, &t.StateEnteredAt, &t.CompletedAt,
		&t.RootSpanEmitted, &last)
	t.State = lifecycle.TaskState(state)
	t.lastTransition(last)
	return t, err
}

const stepColumns = stepColumnsHead + `s.inputs, s.results, s.last_error,
	coalesce((SELECT array_agg(e.from_step ORDER BY e.from_step) FROM tasker.workflow_step_edges e WHERE e.to_step = s.step_uuid), '{}')` + stepColumnsTail

// stepColumnsHead and stepColumnsTail surround the JSON columns and the
// parents in stepColumns and lockedStepColumns.
const (
	stepColumnsHead = `s.step_uuid, s.task_uuid, s.name, s.handler, s.position, s.state, s.attempts, s.max_attempts,
	s.retryable, s.backoff_base_ms, s.backoff_cap_ms, s.timeout_seconds, s.next_attempt_at,
	coalesce(s.claimed_by, ''), s.lease_expires_at, `
	stepColumnsTail = `,
	s.created_at, s.updated_at, s.state_entered_at, s.completed_at`
)

func scanStep(row pgx.Row) (Step, error) {
	var s Step
	var state string
	err := row.Scan(&s.UUID, &s.TaskUUID, &s.Name, &s.Handler, &s.Position, &state, &s.Attempts, &s.MaxAttempts,
		&s.Retryable, &s.BackoffBaseMs, &s.BackoffCapMs, &s.TimeoutSeconds, &s.NextAttemptAt,
		&s.ClaimedBy, &s.LeaseExpiresAt, &s.Inputs, &s.Results, &s.LastError, &s.Parents,
		&s.CreatedAt, &s.UpdatedAt, &s.StateEnteredAt, &s.CompletedAt)
	s.State = lifecycle.StepState(state)
	return s, err
}

// TaskCreateTx inserts a pending task with its pending steps, their
// dependency edges and the first transition rows, in one statement, and
// returns the task and its steps (in template order) as inserted. When a task
// with the same identity hash exists, nothing is inserted and the existing
// task is returned with created=false (and no steps). In a deferred
// transaction the insert waits for the next flush, with the moves made on
// the new task until then folded into it (create.go).
func (s *Store) TaskCreateTx(ctx context.Context, tx Tx, nt NewTask) (Task, []Step, bool, error) {
	if tx.tx.buf != nil {
		return s.taskCreateDeferred(ctx, tx, nt)
	}
	// Not deferred: the same insert, at once.
	tx.tx.buf = &writeBuffer{}
	defer func() { tx.tx.buf = nil }()
	t, steps, created, err := s.taskCreateDeferred(ctx, tx, nt)
	if err == nil {
		err = tx.tx.flush(ctx)
	}
	if err != nil {
		return Task{}, nil, false, err
	}
	return t, steps, created, nil
}

// TaskLockTx reads a task and locks its row until the transaction ends. Every
// orchestrator action on a task holds this lock, so replicas serialise per
// task; workers never take it.
func (s *Store) TaskLockTx(ctx context.Context, tx Tx, id uuid.UUID) (Task, error) {
	t, err := scanTask(tx.tx.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasker.tasks t WHERE t.task_uuid = $1 FOR UPDATE`, id))
	if err != nil {
		return t, notFound(err, "task "+id.String())
	}
	return t, nil
}

// tasksQuery runs a query selecting taskColumns and scans every row.
func tasksQuery(ctx context.Context, q querier, what, sql string, args ...any) ([]Task, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return scanTasks(rows, what)
}

// scanTasks scans and closes rows selecting taskColumns.
func scanTasks(rows pgx.Rows, what string) ([]Task, error) {
	defer rows.Close()
	var out []Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// TaskGet reads a task without locking it.
func (s *Store) TaskGet(ctx context.Context, id uuid.UUID) (Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasker.tasks t WHERE t.task_uuid = $1`, id))
	if err != nil {
		return t, notFound(err, "task "+id.String())
	}
	return t, nil
}

// TasksGet reads tasks without locking them, in one statement; a task that
// does not exist is not in the map.
func (s *Store) TasksGet(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]Task, error) {
	out := make(map[uuid.UUID]Task, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	tasks, err := tasksQuery(ctx, s.pool, "read tasks", `SELECT `+taskColumns+` FROM tasker.tasks t WHERE t.task_uuid = ANY ($1)`, ids)
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		out[t.UUID] = t
	}
	return out, nil
}

// TaskStepsTx returns a task's steps in template (topological) order.
func (s *Store) TaskStepsTx(ctx context.Context, tx Tx, id uuid.UUID) ([]Step, error) {
	return stepsQuery(ctx, tx.tx, `SELECT `+stepColumns+` FROM tasker.workflow_steps s WHERE s.task_uuid = $1 ORDER BY s.position`, id)
}

// StepsOfTasksTx returns the steps of several tasks, each task's in
// template order.
func (s *Store) StepsOfTasksTx(ctx context.Context, tx Tx, ids []uuid.UUID) (map[uuid.UUID][]Step, error) {
	steps, err := stepsQuery(ctx, tx.tx, stepsOfTasksSQL, ids)
	if err != nil {
		return nil, err
	}
	return stepsByTask(steps, len(ids)), nil
}

const stepsOfTasksSQL = `SELECT ` + stepColumns + ` FROM tasker.workflow_steps s
		WHERE s.task_uuid = ANY ($1) ORDER BY s.task_uuid, s.position`

// lockedStepColumns are stepColumns for the orchestrator's read of the
// steps of the tasks it has locked to process results: without inputs and
// results, which deciding what comes next never reads (payloads that need a
// result read it by step), and with last_error only where a failure is
// being decided or reported. Every result of a task reads all of the task's
// steps, so reading their results made a task's processing cost grow with
// the size of its results times its step count. Nor do they carry Parents
// (nil): the engine decides readiness from the task's template version, the
// DAG the edges were written from, and the per-step lookup of
// workflow_step_edges was about three quarters of this read's time. The
// results it does read are those of the steps named by $2 that wait in
// enqueued_for_orchestration: the results the transaction is about to
// process, which its domain events show (lockedRows), each read once.
const lockedStepColumns = stepColumnsHead + `NULL::jsonb,
	CASE WHEN s.state = 'enqueued_for_orchestration' AND s.step_uuid = ANY ($2) THEN s.results END,
	CASE WHEN s.state IN ('enqueued_as_error_for_orchestration', 'error') THEN s.last_error END,
	NULL::uuid[]` + stepColumnsTail

const lockedStepsOfTasksSQL = `SELECT ` + lockedStepColumns + ` FROM tasker.workflow_steps s
		WHERE s.task_uuid = ANY ($1) ORDER BY s.task_uuid, s.position`

// TaskSteps returns a task's steps without a transaction.
func (s *Store) TaskSteps(ctx context.Context, id uuid.UUID) ([]Step, error) {
	return stepsQuery(ctx, s.pool, `SELECT `+stepColumns+` FROM tasker.workflow_steps s WHERE s.task_uuid = $1 ORDER BY s.position`, id)
}

// StepGet reads one step.
func (s *Store) StepGet(ctx context.Context, id uuid.UUID) (Step, error) {
	st, err := scanStep(s.pool.QueryRow(ctx, `SELECT `+stepColumns+` FROM tasker.workflow_steps s WHERE s.step_uuid = $1`, id))
	if err != nil {
		return st, notFound(err, "step "+id.String())
	}
	return st, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func stepsQuery(ctx context.Context, q querier, sql string, args ...any) ([]Step, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read steps: %w", err)
	}
	return scanSteps(rows)
}

// scanSteps scans and closes rows selecting stepColumns.
func scanSteps(rows pgx.Rows) ([]Step, error) {
	defer rows.Close()
	var out []Step
	for rows.Next() {
		st, err := scanStep(rows)
		if err != nil {
			return nil, fmt.Errorf("read steps: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read steps: %w", err)
	}
	return out, nil
}

// stepsByTask groups steps (in task, position order) by task.
func stepsByTask(steps []Step, n int) map[uuid.UUID][]Step {
	out := make(map[uuid.UUID][]Step, n)
	for _, st := range steps {
		out[st.TaskUUID] = append(out[st.TaskUUID], st)
	}
	return out
}

// TaskMove is one task compare-and-swap.
type TaskMove struct {
	UUID uuid.UUID
	From lifecycle.TaskState
	To   lifecycle.TaskState
	// WakeAt is stored on the task (nil clears it): when a timer should look
	// at the task again.
	WakeAt *time.Time
	Meta   map[string]any
	// RootSpanEmitted is the task's root_span_emitted before the move; a
	// deferred transaction (which does not read the row) decides from it
	// whether a terminal move is the task's first.
	RootSpanEmitted bool
}

// TaskTransitionTx moves a task from m.From to m.To if it is still in m.From,
// logging the transition. It reports whether the swap happened and, for a
// move into a terminal state, whether this is the task's first terminal
// state (its root span is then due).
func (s *Store) TaskTransitionTx(ctx context.Context, tx Tx, m TaskMove) (ok bool, firstFinish bool, err error) {
	meta, err := jsonenc.Object(m.Meta)
	if err != nil {
		return false, false, fmt.Errorf("encode transition metadata: %w", err)
	}
	if tx.tx.buf != nil {
		if handled, ok := tx.tx.buf.createdTaskMove(m, meta, false); handled {
			return ok, ok && m.To.Terminal() && !m.RootSpanEmitted, nil
		}
		tx.tx.bufferTaskOp(taskOp{move: m, meta: meta})
		return true, m.To.Terminal() && !m.RootSpanEmitted, nil
	}
	err = tx.tx.QueryRow(ctx, `SELECT moved, first_finish FROM tasker.transition_task($1, $2, $3, $4, $5::jsonb)`,
		m.UUID, string(m.From), string(m.To), m.WakeAt, meta).Scan(&ok, &firstFinish)
	if err != nil {
		return false, false, fmt.Errorf("transition task %s %s->%s: %w", m.UUID, m.From, m.To, err)
	}
	return ok, firstFinish, nil
}

// TaskWakeSetTx sets or clears a task's wake-up time without a transition.
func (s *Store) TaskWakeSetTx(ctx context.Context, tx Tx, id uuid.UUID, at *time.Time) error {
	if tx.tx.buf != nil {
		if handled, _ := tx.tx.buf.createdTaskMove(TaskMove{UUID: id, WakeAt: at}, nil, true); handled {
			return nil
		}
		tx.tx.bufferTaskOp(taskOp{move: TaskMove{UUID: id, WakeAt: at}, wakeOnly: true})
		return nil
	}
	_, err := tx.tx.Exec(ctx, `UPDATE tasker.tasks SET wake_at = $2 WHERE task_uuid = $1 AND wake_at IS DISTINCT FROM $2`, id, at)
	if err != nil {
		return fmt.Errorf("set wake time of task %s: %w", id, err)
	}
	return nil
}

// TasksDueTx locks up to limit non-terminal tasks whose wake-up time has
// passed, skipping tasks another replica holds. They are found by a range
// of tasks_wake_idx up to now(), the transaction's start (see
// expiredLeasesSQL: a volatile bound read every task waiting for a retry).
func (s *Store) TasksDueTx(ctx context.Context, tx Tx, limit int) ([]Task, error) {
	return tasksQuery(ctx, tx.tx, "due tasks", `
		SELECT `+taskColumns+` FROM tasker.tasks t
		 WHERE t.wake_at <= now()
		 ORDER BY t.wake_at
		 LIMIT $1
		   FOR UPDATE SKIP LOCKED`, limit)
}

// TasksLockTx locks the given tasks in uuid order (the order every
// multi-task transaction uses, so they cannot deadlock) and returns them.
func (s *Store) TasksLockTx(ctx context.Context, tx Tx, ids []uuid.UUID) ([]Task, error) {
	return tasksQuery(ctx, tx.tx, "lock tasks", tasksLockSQL, ids)
}

const tasksLockSQL = `SELECT ` + taskColumns + ` FROM tasker.tasks t
		 WHERE t.task_uuid = ANY ($1)
		 ORDER BY t.task_uuid
		   FOR UPDATE`

// LockTimeoutTx bounds how long the rest of the transaction waits for any
// lock; past it a statement fails with an error IsLockTimeout recognises.
func (s *Store) LockTimeoutTx(ctx context.Context, tx Tx, d time.Duration) error {
	if _, err := tx.tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, fmt.Sprintf("%dms", d.Milliseconds())); err != nil {
		return fmt.Errorf("set lock timeout: %w", err)
	}
	return nil
}

// lockedTaskColumns are the columns of a task that result processing
// uses: taskColumns without the context, tags, priority, initiator, source
// system, reason and parent correlation id, which only the API and the
// domain events show. A context may be up to 1 MiB, and was read, with
// everything else, for every result a task got.
const lockedTaskColumns = `t.task_uuid, t.template_id, t.namespace, t.name, t.version, t.state,
	t.correlation_id, t.traceparent, t.wake_at, t.stale_after_seconds, t.created_at, t.updated_at, t.state_entered_at,
	t.completed_at, t.root_span_emitted, ` + lastTransitionAt

const tasksLockLeanSQL = `SELECT ` + lockedTaskColumns + ` FROM tasker.tasks t
		 WHERE t.task_uuid = ANY ($1)
		 ORDER BY t.task_uuid
		   FOR UPDATE`

func scanLockedTasks(rows pgx.Rows) ([]Task, error) {
	defer rows.Close()
	var out []Task
	for rows.Next() {
		var t Task
		var state string
		var last *time.Time
		if err := rows.Scan(&t.UUID, &t.TemplateID, &t.Namespace, &t.Name, &t.Version, &state,
			&t.CorrelationID, &t.TraceParent, &t.WakeAt, &t.StaleAfterSeconds, &t.CreatedAt, &t.UpdatedAt, &t.StateEnteredAt,
			&t.CompletedAt, &t.RootSpanEmitted, &last); err != nil {
			return nil, fmt.Errorf("lock tasks: %w", err)
		}
		t.State = lifecycle.TaskState(state)
		t.lastTransition(last)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock tasks: %w", err)
	}
	return out, nil
}

// TasksLockWithStepsTx is TasksLockTx followed by StepsOfTasksTx, sent
// together in one round trip (the steps are read after the locks are held:
// the statements of a pipeline run in order), for result processing. The
// tasks come with lockedTaskColumns only: Context, Tags, Priority,
// Initiator, SourceSystem, Reason and ParentCorrelationID are zero. The steps come without
// Inputs, Results and Parents, and with LastError only for a step whose
// failure is being processed or that failed for good (lockedStepColumns),
// and with Results only for the steps of resultsOf that wait in
// enqueued_for_orchestration: the results whose notices the transaction
// processes, which its StepCompleted events show. A positive
// lockTimeout bounds the wait for the locks for the rest of the
// transaction; past it the statement fails with an error IsLockTimeout recognises.
//
// In a deferred transaction the rows are also kept, current with the
// transaction's buffered moves, for DomainEventDataTx to answer from
// (lockedRows).
func (s *Store) TasksLockWithStepsTx(ctx context.Context, tx Tx, ids, resultsOf []uuid.UUID, lockTimeout time.Duration) ([]Task, map[uuid.UUID][]Step, error) {
	b := &pgx.Batch{}
	keep := tx.tx.buf != nil
	readNow := keep && tx.tx.now.IsZero()
	if readNow {
		b.Queue(`SELECT now()`)
	}
	if lockTimeout > 0 {
		b.Queue(`SELECT set_config('lock_timeout', $1, true)`, fmt.Sprintf("%dms", lockTimeout.Milliseconds()))
	}
	b.Queue(tasksLockLeanSQL, ids)
	b.Queue(lockedStepsOfTasksSQL, ids, nonNil(resultsOf))
	// The buffered writes go first, in the same round trip.
	res, err := tx.tx.sendWithFlush(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	tasks, err := func() ([]Task, error) {
		if readNow {
			if err := res.QueryRow().Scan(&tx.tx.now); err != nil {
				return nil, fmt.Errorf("read the transaction's start: %w", err)
			}
		}
		if lockTimeout > 0 {
			if _, err := res.Exec(); err != nil {
				return nil, fmt.Errorf("set lock timeout: %w", err)
			}
		}
		rows, err := res.Query()
		if err != nil {
			return nil, fmt.Errorf("lock tasks: %w", err)
		}
		return scanLockedTasks(rows)
	}()
	var steps []Step
	if err == nil {
		var rows pgx.Rows
		if rows, err = res.Query(); err != nil {
			err = fmt.Errorf("read steps: %w", err)
		} else {
			steps, err = scanSteps(rows)
		}
	}
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("lock tasks: %w", cerr)
	}
	if err != nil {
		return nil, nil, err
	}
	if keep {
		tx.tx.locked = newLockedRows(tx.tx.now, tasks, steps, resultsOf)
	}
	return tasks, stepsByTask(steps, len(ids)), nil
}

// TaskFilter selects tasks for TaskList. Zero values do not filter.
type TaskFilter struct {
	Namespace     string
	Name          string
	State         string
	Initiator     string
	CreatedAfter  *time.Time
	CreatedBefore *time.Time
	// After is the paging cursor: the (created_at, task_uuid) of the last
	// task of the previous page; tasks are listed newest first.
	AfterCreatedAt *time.Time
	AfterUUID      uuid.UUID
	Limit          int
}

// TaskList lists tasks newest first, with keyset paging.
func (s *Store) TaskList(ctx context.Context, f TaskFilter) ([]Task, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	return tasksQuery(ctx, s.pool, "list tasks", `
		SELECT `+taskColumns+` FROM tasker.tasks t
		 WHERE ($1 = '' OR t.namespace = $1)
		   AND ($2 = '' OR t.name = $2)
		   AND ($3 = '' OR t.state = $3)
		   AND ($4 = '' OR t.initiator = $4)
		   AND ($5::timestamptz IS NULL OR t.created_at >= $5)
		   AND ($6::timestamptz IS NULL OR t.created_at < $6)
		   AND ($7::timestamptz IS NULL OR (t.created_at, t.task_uuid) < ($7, $8))
		 ORDER BY t.created_at DESC, t.task_uuid DESC
		 LIMIT $9`,
		f.Namespace, f.Name, f.State, f.Initiator, f.CreatedAfter, f.CreatedBefore, f.AfterCreatedAt, f.AfterUUID, f.Limit)
}

// Transition is a row of a transition table.
type Transition struct {
	StepUUID  *uuid.UUID
	From      string
	To        string
	SortKey   int
	Metadata  json.RawMessage
	CreatedAt time.Time
}

// TaskTransitions returns a task's transitions and its steps' transitions,
// oldest first.
func (s *Store) TaskTransitions(ctx context.Context, id uuid.UUID) (task []Transition, steps []Transition, err error) {
	// Moves made in one transaction share its timestamp. Among them a
	// step's result is evaluated (it leaves enqueued_(as_error_)for_
	// orchestration, which can only be its first move there) before the
	// steps that result makes ready are dispatched, so those moves come
	// first; otherwise each row's own sequence orders them.
	rows, err := s.pool.Query(ctx, `
		SELECT NULL::uuid, coalesce(from_state, ''), to_state, sort_key, metadata, created_at, 1
		  FROM tasker.task_transitions WHERE task_uuid = $1
		UNION ALL
		SELECT tr.step_uuid, coalesce(tr.from_state, ''), tr.to_state, tr.sort_key, tr.metadata, tr.created_at,
		       CASE WHEN tr.from_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration') THEN 0 ELSE 1 END
		  FROM tasker.workflow_steps s JOIN tasker.workflow_step_transitions tr ON tr.step_uuid = s.step_uuid
		 WHERE s.task_uuid = $1
		 ORDER BY 6, 7, 4`, id)
	if err != nil {
		return nil, nil, fmt.Errorf("read transitions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tr Transition
		var phase int32
		if err := rows.Scan(&tr.StepUUID, &tr.From, &tr.To, &tr.SortKey, &tr.Metadata, &tr.CreatedAt, &phase); err != nil {
			return nil, nil, fmt.Errorf("read transitions: %w", err)
		}
		if tr.StepUUID == nil {
			task = append(task, tr)
		} else {
			steps = append(steps, tr)
		}
	}
	return task, steps, rows.Err()
}
