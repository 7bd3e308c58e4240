package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/jsonenc"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/queue"
)

// StepMove is one step compare-and-swap.
type StepMove struct {
	UUID uuid.UUID
	From lifecycle.StepState
	To   lifecycle.StepState
	// NextAttemptAt is stored on the step (nil clears it): when a step
	// waiting for retry may run again.
	NextAttemptAt *time.Time
	// Results, when not nil, replaces the step's results (manual resolution
	// with a supplied result).
	Results json.RawMessage
	// ExtraAttempts is added to max_attempts (operator retry of a step that
	// used up its attempts).
	ExtraAttempts int
	// LeaseGuard makes the swap succeed only if the step's lease has expired,
	// so that a heartbeat that lands first wins over the reaper.
	LeaseGuard bool
	Meta       map[string]any
}

// StepMoved is a step transition that happened.
type StepMoved struct {
	UUID     uuid.UUID
	TaskUUID uuid.UUID
	From     lifecycle.StepState
	To       lifecycle.StepState
}

// StepsTransitionTx applies step compare-and-swaps in one statement and
// returns those that happened (a step no longer in its From state is left
// alone).
func (s *Store) StepsTransitionTx(ctx context.Context, tx Tx, moves []StepMove) ([]StepMoved, error) {
	if len(moves) == 0 {
		return nil, nil
	}
	if buf := tx.tx.buf; buf != nil && len(buf.creates.list) > 0 {
		ids := make([]uuid.UUID, len(moves))
		for i, m := range moves {
			ids[i] = m.UUID
		}
		if buf.touchesCreated(ids) {
			// A step of a task created in this transaction: write the
			// creations first, then move it like any other.
			if err := tx.tx.flush(ctx); err != nil {
				return nil, err
			}
		}
	}
	if tx.tx.buf != nil && deferrable(moves) {
		out := make([]StepMoved, 0, len(moves))
		for _, m := range moves {
			meta, err := jsonenc.Object(m.Meta)
			if err != nil {
				return nil, fmt.Errorf("encode step transition metadata: %w", err)
			}
			tx.tx.bufferStep(bufferedStep{StepMove: m, meta: meta})
			out = append(out, StepMoved{UUID: m.UUID, From: m.From, To: m.To})
		}
		return out, nil
	}
	n := len(moves)
	ids := make([]uuid.UUID, n)
	from := make([]string, n)
	to := make([]string, n)
	next := make([]*time.Time, n)
	results := make([][]byte, n)
	extra := make([]int32, n)
	guard := make([]bool, n)
	meta := make([][]byte, n)
	for i, m := range moves {
		ids[i], from[i], to[i], next[i] = m.UUID, string(m.From), string(m.To), m.NextAttemptAt
		if m.Results != nil {
			results[i] = m.Results
		}
		extra[i], guard[i] = int32(m.ExtraAttempts), m.LeaseGuard
		b, err := jsonenc.Object(m.Meta)
		if err != nil {
			return nil, fmt.Errorf("encode step transition metadata: %w", err)
		}
		meta[i] = b
	}
	rows, err := tx.tx.Query(ctx, `SELECT step_uuid, task_uuid, from_state, to_state
		FROM tasker.transition_steps($1, $2, $3, $4, $5::jsonb[], $6, $7, $8::jsonb[])`,
		ids, from, to, next, results, extra, guard, meta)
	if err != nil {
		return nil, fmt.Errorf("transition steps: %w", err)
	}
	defer rows.Close()
	var out []StepMoved
	for rows.Next() {
		var m StepMoved
		var f, t string
		if err := rows.Scan(&m.UUID, &m.TaskUUID, &f, &t); err != nil {
			return nil, fmt.Errorf("transition steps: %w", err)
		}
		m.From, m.To = lifecycle.StepState(f), lifecycle.StepState(t)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("transition steps: %w", err)
	}
	return out, nil
}

// deferrable says whether moves may wait in a deferred transaction's buffer:
// all of them leave orchestrator-owned states, without a lease guard.
func deferrable(moves []StepMove) bool {
	for _, m := range moves {
		if m.LeaseGuard || !orchestratorOwned(m.From) {
			return false
		}
	}
	return true
}

// Dispatched is a step whose message was sent.
type Dispatched struct {
	StepUUID uuid.UUID
	TaskUUID uuid.UUID
	Attempt  int
	MsgID    int64
}

// StepsResendTx sends the messages of enqueued steps of task t again, for
// the attempt they wait to start (attempts plus one), without moving them:
// an operator retrying a task given up as stale cannot tell a step whose
// message waits for a worker from one whose message is gone (purged,
// archived as poison by a misconfigured worker), and nothing else would
// ever send it. Where the first message is still there, a worker claims
// through one of the two and the claim of the other fails; that one is
// deleted. It returns how many messages it sent.
func (s *Store) StepsResendTx(ctx context.Context, tx Tx, t *Task, steps []*Step, headers map[string]string) (int, error) {
	if len(steps) == 0 {
		return 0, nil
	}
	q, err := queue.WorkerQueue(t.Namespace)
	if err != nil {
		return 0, fmt.Errorf("resend step messages: %w", err)
	}
	bodies := make([]json.RawMessage, len(steps))
	hdrs := make([]map[string]string, len(steps))
	for i, st := range steps {
		if st.State != lifecycle.StepEnqueued {
			return 0, fmt.Errorf("resend step messages: step %s is %s, not enqueued", st.UUID, st.State)
		}
		b, err := json.Marshal(queue.StepMessage{TaskUUID: t.UUID, StepUUID: st.UUID, StepName: st.Name,
			Handler: st.Handler, Namespace: t.Namespace, CorrelationID: t.CorrelationID, Attempt: st.Attempts + 1})
		if err != nil {
			return 0, fmt.Errorf("encode step message: %w", err)
		}
		bodies[i], hdrs[i] = b, headers
	}
	tx.tx.inserted(q)
	if buf := tx.tx.buf; buf != nil {
		for i, b := range bodies {
			hb, err := queue.EncodeHeaders(hdrs[i])
			if err != nil {
				return 0, err
			}
			buf.send(q, b, hb)
		}
		return len(bodies), nil
	}
	if _, err := queue.SendBatch(ctx, tx.tx, q, bodies, hdrs, 0); err != nil {
		return 0, fmt.Errorf("resend step messages: %w", err)
	}
	return len(bodies), nil
}

// StepsDispatchTx moves pending steps of task t to enqueued and sends their
// messages to the namespace's worker queue, in the caller's transaction.
// headers[i] are the message headers for steps[i]. In a deferred
// transaction the moves and messages wait in its buffer like any other
// write: the moves go with the other step moves (tasker.apply_step_moves,
// which checks that each step is still pending) and the messages with the
// other sends, built here from the steps as tasker.dispatch_steps builds
// them (the attempt is the step's attempts plus one; attempts change only
// when a worker claims an enqueued step, never while the step is pending
// under the task's lock).
// enqueueMeta is the metadata of a dispatch's transition, encoded.
var enqueueMeta = []byte(`{"trigger":"enqueue"}`)

func (s *Store) StepsDispatchTx(ctx context.Context, tx Tx, t *Task, steps []*Step, headers []map[string]string) ([]Dispatched, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	q, err := queue.WorkerQueue(t.Namespace)
	if err != nil {
		return nil, fmt.Errorf("dispatch steps: %w", err)
	}
	tx.tx.inserted(q)
	ids := make([]uuid.UUID, len(steps))
	hdrs := make([][]byte, len(steps))
	for i, st := range steps {
		ids[i] = st.UUID
		var h map[string]string
		if i < len(headers) {
			h = headers[i]
		}
		if h == nil {
			hdrs[i] = []byte("{}")
			continue
		}
		hdrs[i] = jsonenc.StringMap(h)
	}
	if buf := tx.tx.buf; buf != nil {
		// Buffered: the message ids are not known until the flush; callers
		// of a deferred transaction use only the step.
		out := make([]Dispatched, len(steps))
		for i, st := range steps {
			out[i] = Dispatched{StepUUID: st.UUID, TaskUUID: t.UUID, Attempt: st.Attempts + 1}
		}
		rest, restHdrs, err := buf.dispatchCreated(ids, hdrs, q)
		if err != nil {
			return nil, err
		}
		byID := make(map[uuid.UUID]*Step, len(steps))
		for _, st := range steps {
			byID[st.UUID] = st
		}
		for i, id := range rest {
			st := byID[id]
			if err := buf.sendStep(q, queue.StepMessage{TaskUUID: t.UUID, StepUUID: st.UUID, StepName: st.Name,
				Handler: st.Handler, Namespace: t.Namespace, CorrelationID: t.CorrelationID, Attempt: st.Attempts + 1}, restHdrs[i]); err != nil {
				return nil, err
			}
			tx.tx.bufferStep(bufferedStep{StepMove: StepMove{UUID: id, From: lifecycle.StepPending, To: lifecycle.StepEnqueued,
				Meta: map[string]any{"trigger": "enqueue"}}, meta: enqueueMeta})
		}
		return out, nil
	}
	rows, err := tx.tx.Query(ctx, `SELECT step_uuid, task_uuid, attempt, msg_id FROM tasker.dispatch_steps($1, $2::jsonb[])`, ids, hdrs)
	if err != nil {
		return nil, fmt.Errorf("dispatch steps: %w", err)
	}
	defer rows.Close()
	var out []Dispatched
	for rows.Next() {
		var d Dispatched
		if err := rows.Scan(&d.StepUUID, &d.TaskUUID, &d.Attempt, &d.MsgID); err != nil {
			return nil, fmt.Errorf("dispatch steps: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dispatch steps: %w", err)
	}
	return out, nil
}

// expiredLeasesSQL finds the steps whose lease has expired by a range of
// workflow_steps_lease_idx. The bound is now(), the start of the
// statement's transaction: an index can only be searched for a value known
// before the scan starts, and the volatile clock_timestamp() made every
// reaper run read all the leases there are (or the whole table, which the
// planner chose while it was small).
const expiredLeasesSQL = `
		SELECT DISTINCT task_uuid FROM (
			SELECT task_uuid FROM tasker.workflow_steps
			 WHERE state = 'in_progress' AND lease_expires_at < now()
			 ORDER BY lease_expires_at
			 LIMIT $1) expired`

// TasksWithExpiredLeases returns up to limit tasks that have a step in
// progress whose lease has expired (its worker is presumed dead).
func (s *Store) TasksWithExpiredLeases(ctx context.Context, limit int) ([]uuid.UUID, error) {
	rows, err := s.pool.Query(ctx, expiredLeasesSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("expired leases: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// StrandedResult is a step whose submitted result has waited for the
// orchestrator longer than it should: its notice was lost to the poison
// archive (read too often while its task was locked, or by an orchestrator
// that crashed with it many times) or deleted by hand.
type StrandedResult struct {
	TaskUUID, StepUUID uuid.UUID
	Attempt            int
	Success            bool
}

// StrandedResults lists up to limit steps of unfinished tasks that have
// been in enqueued_for_orchestration or enqueued_as_error_for_orchestration
// for longer than olderThan, oldest first. It walks the unfinished tasks
// (tasks_active_idx) and their steps, never the history.
func (s *Store) StrandedResults(ctx context.Context, olderThan time.Duration, limit int) ([]StrandedResult, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT ws.task_uuid, ws.step_uuid, ws.attempts, ws.state = 'enqueued_for_orchestration'
		  FROM tasker.tasks t
		  JOIN tasker.workflow_steps ws ON ws.task_uuid = t.task_uuid
		 WHERE t.state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually')
		   AND ws.state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')
		   AND ws.state_entered_at < clock_timestamp() - make_interval(secs => $1)
		 ORDER BY ws.state_entered_at
		 LIMIT $2`, olderThan.Seconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("stranded results: %w", err)
	}
	defer rows.Close()
	var out []StrandedResult
	for rows.Next() {
		var r StrandedResult
		if err := rows.Scan(&r.TaskUUID, &r.StepUUID, &r.Attempt, &r.Success); err != nil {
			return nil, fmt.Errorf("stranded results: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// StepRun is one attempt of a step as its transitions recorded it: the
// worker's claim (enqueued → in_progress) and its submission of the
// outcome (in_progress → enqueued_(as_error_)for_orchestration).
type StepRun struct {
	StepUUID    uuid.UUID
	Attempt     int
	WorkerID    string
	ClaimedAt   time.Time
	SubmittedAt time.Time
	// SubmittedTo is the state the submission moved the step to.
	SubmittedTo lifecycle.StepState
}

// StepRunsTx reads, in the caller's transaction, the latest submitted run
// of each of the steps: the newest submission transition and the claim
// before it. A step with no submission is left out. It walks each step's
// transitions backwards by primary key, a few rows per step.
func (s *Store) StepRunsTx(ctx context.Context, tx Tx, steps []uuid.UUID) ([]StepRun, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	rows, err := tx.tx.readQuery(ctx, `
		SELECT u.s, coalesce((sub.metadata->>'attempt')::integer, 0), coalesce(sub.metadata->>'worker_id', ''),
		       cl.created_at, sub.created_at, sub.to_state
		  FROM unnest($1::uuid[]) AS u(s)
		 CROSS JOIN LATERAL (
		       SELECT w.sort_key, w.created_at, w.metadata, w.to_state
		         FROM tasker.workflow_step_transitions w
		        WHERE w.step_uuid = u.s AND w.from_state = 'in_progress'
		          AND w.to_state IN ('enqueued_for_orchestration', 'enqueued_as_error_for_orchestration')
		        ORDER BY w.sort_key DESC LIMIT 1) sub
		 CROSS JOIN LATERAL (
		       SELECT w.created_at
		         FROM tasker.workflow_step_transitions w
		        WHERE w.step_uuid = u.s AND w.sort_key < sub.sort_key AND w.to_state = 'in_progress'
		        ORDER BY w.sort_key DESC LIMIT 1) cl`, steps)
	if err != nil {
		return nil, fmt.Errorf("step runs: %w", err)
	}
	defer rows.Close()
	var out []StepRun
	for rows.Next() {
		var r StepRun
		var to string
		if err := rows.Scan(&r.StepUUID, &r.Attempt, &r.WorkerID, &r.ClaimedAt, &r.SubmittedAt, &to); err != nil {
			return nil, fmt.Errorf("step runs: %w", err)
		}
		r.SubmittedTo = lifecycle.StepState(to)
		out = append(out, r)
	}
	return out, rows.Err()
}
