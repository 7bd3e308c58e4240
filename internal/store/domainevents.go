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
	"github.com/tasker/tasker/internal/queue"
)

// DomainEventsSendTx sends domain events to a namespace's domain event queue
// in the caller's transaction, in one statement: the messages get
// increasing msg_ids in the order of bodies, so a consumer reads them in the
// order they happened. headers is nil or has one entry per body. In a
// deferred transaction the insert goes with the buffered writes.
//
// Each body must be valid JSON (the domain event producer's json.Marshal
// output): the server parses it into jsonb, and one that is not fails the
// insert and with it the caller's transaction, which then writes nothing.
// Checking every body again here was 3 % of the orchestrator's CPU.
func (s *Store) DomainEventsSendTx(ctx context.Context, tx Tx, ns string, bodies []json.RawMessage, headers []map[string]string) error {
	q, err := queue.DomainEventsQueue(ns)
	if err != nil {
		return fmt.Errorf("send domain events: %w", err)
	}
	if headers != nil && len(headers) != len(bodies) {
		return fmt.Errorf("send domain events: %d headers for %d bodies", len(headers), len(bodies))
	}
	if len(bodies) == 0 {
		return nil
	}
	tx.tx.inserted(q)
	if tx.tx.buf == nil {
		_, err := queue.SendBatch(ctx, tx.tx, q, bodies, headers, 0)
		return err
	}
	for i, b := range bodies {
		var h map[string]string
		if headers != nil {
			h = headers[i]
		}
		hb, err := queue.EncodeHeaders(h)
		if err != nil {
			return fmt.Errorf("send domain events: %w", err)
		}
		tx.tx.buf.send(q, b, hb)
	}
	return nil
}

// DomainEventTask is what domain event payloads say about a task.
type DomainEventTask struct {
	Task
	// StepCounts counts the task's steps by state (states with no step are
	// absent).
	StepCounts map[string]int
	// StepCount is the number of steps of the task.
	StepCount int
	// TransitionReason is the "reason" recorded with the task's most recent
	// transition (an operator's cancel reason), or "".
	TransitionReason string
	// Brief marks a row of DomainEventDataTx's brief read: of the task's
	// own columns it has only UUID, State, CreatedAt and CompletedAt, and
	// TransitionReason is not read.
	Brief bool
}

// DomainEventTasksTx reads tasks with their step counts by state, in the
// caller's transaction so that it sees the transaction's own changes, and
// without locking them (the engine already holds their locks).
func (s *Store) DomainEventTasksTx(ctx context.Context, tx Tx, ids []uuid.UUID) ([]DomainEventTask, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := tx.tx.Query(ctx, domainEventTasksSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read tasks for domain events: %w", err)
	}
	return scanDomainEventTasks(rows)
}

// The steps' states come as an array, counted in Go: counting them by
// state in SQL sorted and aggregated each task's steps in plan nodes of
// their own, task by task (docs/performance.md, row 65).
const domainEventTasksSQL = `
		SELECT ` + taskColumns + `,
		       ARRAY(SELECT s.state FROM tasker.workflow_steps s WHERE s.task_uuid = t.task_uuid),
		       coalesce((SELECT tt.metadata->>'reason' FROM tasker.task_transitions tt
		                  WHERE tt.task_uuid = t.task_uuid AND tt.most_recent), '')
		  FROM tasker.tasks t
		 WHERE t.task_uuid = ANY ($1)`

// domainEventBriefTasksSQL reads what the payloads of WorkflowProgressed,
// TaskCompleted and TaskFailed say about their task: its state, start and
// end, and its steps' states. Those events are published for every result
// a task gets, so they do not read its context, tags and other columns.
const domainEventBriefTasksSQL = `
		SELECT t.task_uuid, t.state, t.created_at, t.completed_at,
		       ARRAY(SELECT s.state FROM tasker.workflow_steps s WHERE s.task_uuid = t.task_uuid)
		  FROM tasker.tasks t
		 WHERE t.task_uuid = ANY ($1)`

func scanDomainEventTasks(rows pgx.Rows) ([]DomainEventTask, error) {
	defer rows.Close()
	var out []DomainEventTask
	var states []string
	for rows.Next() {
		var d DomainEventTask
		var state string
		var last *time.Time
		t := &d.Task
		if err := rows.Scan(&t.UUID, &t.TemplateID, &t.Namespace, &t.Name, &t.Version, &state, &t.Context, &t.Tags,
			&t.Priority, &t.Initiator, &t.SourceSystem, &t.Reason, &t.CorrelationID, &t.ParentCorrelationID,
			&t.TraceParent, &t.WakeAt, &t.StaleAfterSeconds, &t.CreatedAt, &t.UpdatedAt, &t.StateEnteredAt, &t.CompletedAt,
			&t.RootSpanEmitted, &last, &states, &d.TransitionReason); err != nil {
			return nil, fmt.Errorf("read tasks for domain events: %w", err)
		}
		t.State = lifecycle.TaskState(state)
		t.lastTransition(last)
		d.countSteps(states)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tasks for domain events: %w", err)
	}
	return out, nil
}

func scanDomainEventBriefTasks(rows pgx.Rows) ([]DomainEventTask, error) {
	defer rows.Close()
	var out []DomainEventTask
	var states []string
	for rows.Next() {
		d := DomainEventTask{Brief: true}
		var state string
		t := &d.Task
		if err := rows.Scan(&t.UUID, &state, &t.CreatedAt, &t.CompletedAt, &states); err != nil {
			return nil, fmt.Errorf("read tasks for domain events: %w", err)
		}
		t.State = lifecycle.TaskState(state)
		d.countSteps(states)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tasks for domain events: %w", err)
	}
	return out, nil
}

// countSteps sets StepCounts and StepCount from the states of the task's
// steps.
func (d *DomainEventTask) countSteps(states []string) {
	d.StepCounts = make(map[string]int, 4)
	for _, s := range states {
		d.StepCounts[s]++
	}
	d.StepCount = len(states)
}

// DomainEventStep is what domain event payloads say about a step.
type DomainEventStep struct {
	UUID          uuid.UUID
	TaskUUID      uuid.UUID
	Name          string
	Handler       string
	State         string
	Position      int
	Attempts      int
	MaxAttempts   int
	NextAttemptAt *time.Time
	// Results and LastError are the step's JSON columns; nil when SQL NULL.
	Results   json.RawMessage
	LastError json.RawMessage
}

// DomainEventStepsTx reads, in the caller's transaction, the steps named by
// ids and the failed (state error) steps of the tasks failedOf, with their
// results and last errors. Steps are ordered by task and position.
func (s *Store) DomainEventStepsTx(ctx context.Context, tx Tx, ids []uuid.UUID, failedOf []uuid.UUID) ([]DomainEventStep, error) {
	if len(ids) == 0 && len(failedOf) == 0 {
		return nil, nil
	}
	rows, err := tx.tx.Query(ctx, domainEventStepsSQL, nonNil(ids), nonNil(failedOf))
	if err != nil {
		return nil, fmt.Errorf("read steps for domain events: %w", err)
	}
	return scanDomainEventSteps(rows)
}

// DomainEventDataTx reads, in the caller's transaction and in one round
// trip, what the payloads of its domain events need: the tasks full as
// DomainEventTasksTx reads them, the tasks brief with only what the
// payloads of progress and completion use (DomainEventTask.Brief), and the
// steps of DomainEventStepsTx. A task in both lists is read once, in full.
// When only tasks are asked for and they are all creations still in the
// write buffer, they are answered from it, in full. When only brief tasks
// and steps are asked for and the transaction's result lock read them
// (lockedRows), they are answered from those rows and its buffered moves,
// without writing the moves first and reading them back.
func (s *Store) DomainEventDataTx(ctx context.Context, tx Tx, full, brief, stepIDs, failedOf []uuid.UUID) ([]DomainEventTask, []DomainEventStep, error) {
	if len(full) == 0 && len(failedOf) == 0 {
		if tasks, steps, ok := tx.tx.locked.answer(brief, stepIDs); ok {
			return tasks, steps, nil
		}
	}
	if len(full) > 0 && len(brief) > 0 {
		inFull := make(map[uuid.UUID]bool, len(full))
		for _, id := range full {
			inFull[id] = true
		}
		only := make([]uuid.UUID, 0, len(brief))
		for _, id := range brief {
			if !inFull[id] {
				only = append(only, id)
			}
		}
		brief = only
	}
	if len(stepIDs) == 0 && len(failedOf) == 0 {
		if tasks, ok, err := tx.tx.buf.createdEventTasks(append(full[:len(full):len(full)], brief...)); ok || err != nil {
			return tasks, nil, err
		}
	}
	b := &pgx.Batch{}
	if len(full) > 0 {
		b.Queue(domainEventTasksSQL, full)
	}
	if len(brief) > 0 {
		b.Queue(domainEventBriefTasksSQL, brief)
	}
	withSteps := len(stepIDs) > 0 || len(failedOf) > 0
	if withSteps {
		b.Queue(domainEventStepsSQL, nonNil(stepIDs), nonNil(failedOf))
	}
	if b.Len() == 0 {
		return nil, nil, nil
	}
	// The buffered writes go first, in the same round trip.
	res, err := tx.tx.sendWithFlush(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	read := func(what string) (pgx.Rows, error) {
		rows, err := res.Query()
		if err != nil {
			return nil, fmt.Errorf("read %s for domain events: %w", what, err)
		}
		return rows, nil
	}
	var tasks []DomainEventTask
	var steps []DomainEventStep
	if len(full) > 0 {
		var rows pgx.Rows
		if rows, err = read("tasks"); err == nil {
			tasks, err = scanDomainEventTasks(rows)
		}
	}
	if err == nil && len(brief) > 0 {
		var rows pgx.Rows
		if rows, err = read("tasks"); err == nil {
			var more []DomainEventTask
			more, err = scanDomainEventBriefTasks(rows)
			tasks = append(tasks, more...)
		}
	}
	if err == nil && withSteps {
		var rows pgx.Rows
		if rows, err = read("steps"); err == nil {
			steps, err = scanDomainEventSteps(rows)
		}
	}
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("read domain event data: %w", cerr)
	}
	return tasks, steps, err
}

func nonNil(ids []uuid.UUID) []uuid.UUID {
	if ids == nil {
		return []uuid.UUID{}
	}
	return ids
}

// Two index lookups (primary key; task) rather than one OR, which the
// planner cannot serve with either index. The second leaves out the steps
// of the first, so that no row appears twice without a UNION, which hashed
// every row with its result and error to find none.
const domainEventStepsSQL = `
		SELECT s.step_uuid, s.task_uuid, s.name, s.handler, s.state, s.position, s.attempts, s.max_attempts,
		       s.next_attempt_at, s.results, s.last_error
		  FROM tasker.workflow_steps s WHERE s.step_uuid = ANY ($1)
		UNION ALL
		SELECT s.step_uuid, s.task_uuid, s.name, s.handler, s.state, s.position, s.attempts, s.max_attempts,
		       s.next_attempt_at, s.results, s.last_error
		  FROM tasker.workflow_steps s WHERE s.task_uuid = ANY ($2) AND s.state = 'error' AND s.step_uuid <> ALL ($1)
		 ORDER BY 2, 6`

func scanDomainEventSteps(rows pgx.Rows) ([]DomainEventStep, error) {
	defer rows.Close()
	var out []DomainEventStep
	for rows.Next() {
		var d DomainEventStep
		var results, lastErr []byte
		if err := rows.Scan(&d.UUID, &d.TaskUUID, &d.Name, &d.Handler, &d.State, &d.Position, &d.Attempts, &d.MaxAttempts,
			&d.NextAttemptAt, &results, &lastErr); err != nil {
			return nil, fmt.Errorf("read steps for domain events: %w", err)
		}
		if results != nil {
			d.Results = results
		}
		if lastErr != nil {
			d.LastError = lastErr
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read steps for domain events: %w", err)
	}
	return out, nil
}

// createdEventTasks answers DomainEventTasksTx from the buffer when every
// task asked for is one created in this transaction and not written yet (a
// creation batch's TaskInitiated events): the rows the insert will write,
// without the round trip that would flush and read them back. ok is false
// when any task is not pending in the buffer (or there is no buffer).
func (b *writeBuffer) createdEventTasks(ids []uuid.UUID) (tasks []DomainEventTask, ok bool, err error) {
	if b == nil || len(ids) == 0 || len(b.creates.list) == 0 {
		return nil, false, nil
	}
	tasks = make([]DomainEventTask, 0, len(ids))
	for _, id := range ids {
		pc := b.creates.byTask[id]
		if pc == nil {
			return nil, false, nil
		}
		d := DomainEventTask{Task: pc.task, StepCounts: make(map[string]int, 2), StepCount: len(pc.steps)}
		if pc.terminal {
			// The insert sets completed_at to now(), the transaction's
			// start, which is also the task's created_at.
			at := pc.task.CreatedAt
			d.CompletedAt = &at
			d.RootSpanEmitted = true
		}
		for _, ps := range pc.steps {
			d.StepCounts[string(ps.state)]++
		}
		// The most recent transition's metadata "reason", as
		// metadata->>'reason' reads it.
		if n := len(pc.trans); n > 0 {
			if d.TransitionReason, err = metadataText(pc.trans[n-1].meta, "reason"); err != nil {
				return nil, false, fmt.Errorf("read tasks for domain events: task %s: %w", id, err)
			}
		}
		tasks = append(tasks, d)
	}
	return tasks, true, nil
}

// metadataText is metadata->>key: the key's string, or its JSON text for
// another kind of value, or "" when absent or null.
func metadataText(meta []byte, key string) (string, error) {
	if len(meta) == 0 {
		return "", nil
	}
	var out string
	if jsonenc.Fields(meta, func(k []byte, kind jsonenc.Kind, text []byte) bool {
		if string(k) == key {
			switch kind {
			case jsonenc.String, jsonenc.Int:
				out = string(text)
			case jsonenc.True:
				out = "true"
			case jsonenc.False:
				out = "false"
			default:
				out = ""
			}
		}
		return true
	}) {
		return out, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(meta, &m); err != nil {
		return "", fmt.Errorf("transition metadata: %w", err)
	}
	v, ok := m[key]
	if !ok || string(v) == "null" {
		return "", nil
	}
	var str string
	if json.Unmarshal(v, &str) == nil {
		return str, nil
	}
	return string(v), nil
}
