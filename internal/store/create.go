package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/queue"
)

// A task created in a deferred transaction is not inserted at once: the
// orchestrator starts it in the same transaction (pending -> initializing ->
// enqueuing_steps -> steps_in_process, its first steps enqueued), and those
// moves are folded into the insert, so a batch of new tasks is written by
// one statement with its final states and every transition row, plus one
// queue insert per namespace. Written as they happen, the same moves cost an
// insert, a dispatch_steps and an apply_task_moves call per creation batch
// (docs/performance.md).

// errCreateRaced is returned when a task with the identity of one being
// created was committed by another transaction after this one looked: the
// transaction is run again and then finds that task.
var errCreateRaced = errors.New("a task with the same identity was created concurrently")

// pendingCreate is a task created in this transaction and not written yet.
type pendingCreate struct {
	task     Task
	nt       NewTask
	trans    []pendingTransition // after the first (-> pending)
	terminal bool
	steps    []*pendingStep // template order
}

type pendingStep struct {
	s     *NewStep
	task  *pendingCreate
	state lifecycle.StepState
	trans []pendingTransition // after the first (-> pending)
}

type pendingTransition struct {
	from, to string
	meta     []byte
}

// creates is the part of a writeBuffer that holds pending creations.
type creates struct {
	list       []*pendingCreate
	byTask     map[uuid.UUID]*pendingCreate
	byStep     map[uuid.UUID]*pendingStep
	byIdentity map[string]*pendingCreate
}

func (c *creates) add(pc *pendingCreate) {
	if c.byTask == nil {
		c.byTask, c.byStep, c.byIdentity = map[uuid.UUID]*pendingCreate{}, map[uuid.UUID]*pendingStep{}, map[string]*pendingCreate{}
	}
	c.list = append(c.list, pc)
	c.byTask[pc.task.UUID] = pc
	c.byIdentity[pc.nt.IdentityHash] = pc
	for _, ps := range pc.steps {
		c.byStep[ps.s.UUID] = ps
	}
}

// TaskIdentitiesTx looks up, in one statement, the tasks that already have
// the given identity hashes, so that TaskCreateTx of each of them in this
// transaction need not (a creation batch's lookups in one round trip
// instead of one per task). It also reads the transaction's start time.
func (s *Store) TaskIdentitiesTx(ctx context.Context, tx Tx, hashes []string) error {
	if err := tx.tx.lookUpIdentities(ctx, hashes); err != nil {
		return fmt.Errorf("look up task identities: %w", err)
	}
	return nil
}

// lookUpIdentities fills c.identities for the hashes it does not hold yet,
// and reads the transaction's start time if it was not read yet, in one
// round trip (none when there is nothing to read).
func (c *txConn) lookUpIdentities(ctx context.Context, hashes []string) error {
	var missing []string
	for _, h := range hashes {
		if _, ok := c.identities[h]; !ok {
			missing = append(missing, h)
		}
	}
	if len(missing) == 0 && !c.now.IsZero() {
		return nil
	}
	found, err := c.readIdentities(ctx, missing)
	if err != nil {
		return err
	}
	if c.identities == nil {
		c.identities = make(map[string]*Task, len(missing))
	}
	for _, h := range missing {
		c.identities[h] = nil
	}
	for i := range found {
		c.identities[found[i].IdentityHash] = &found[i].Task
	}
	return nil
}

type identityTask struct {
	Task
	IdentityHash string
}

// extraColumns scans a row's trailing columns, after those a scan function
// reads, into extra.
type extraColumns struct {
	pgx.Row
	extra []any
}

func (r extraColumns) Scan(dest ...any) error { return r.Row.Scan(append(dest, r.extra...)...) }

// readIdentities reads the committed or flushed tasks with these identity
// hashes (none when hashes is empty), and the transaction's start time if
// it was not read yet, in one round trip. It does not apply the buffer: a
// task still pending in it is found there.
func (c *txConn) readIdentities(ctx context.Context, hashes []string) ([]identityTask, error) {
	b := &pgx.Batch{}
	if c.now.IsZero() {
		b.Queue(`SELECT now()`)
	}
	if len(hashes) > 0 {
		b.Queue(`SELECT `+taskColumns+`, t.identity_hash FROM tasker.tasks t WHERE t.identity_hash = ANY ($1)`, hashes)
	}
	res := c.raw.SendBatch(ctx, b)
	var found []identityTask
	err := func() error {
		if c.now.IsZero() {
			if err := res.QueryRow().Scan(&c.now); err != nil {
				return err
			}
		}
		if len(hashes) == 0 {
			return nil
		}
		rows, err := res.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var it identityTask
			if it.Task, err = scanTask(extraColumns{rows, []any{&it.IdentityHash}}); err != nil {
				return err
			}
			found = append(found, it)
		}
		return rows.Err()
	}()
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	return found, err
}

// taskCreateDeferred is TaskCreateTx in a deferred transaction.
func (s *Store) taskCreateDeferred(ctx context.Context, tx Tx, nt NewTask) (Task, []Step, bool, error) {
	c := tx.tx
	if pc := c.buf.creates.byIdentity[nt.IdentityHash]; pc != nil {
		return pc.task, nil, false, nil
	}
	// The transaction's start time is every row's created_at, as the
	// column default would make it; a task with this identity committed or
	// flushed earlier is returned instead.
	if err := c.lookUpIdentities(ctx, []string{nt.IdentityHash}); err != nil {
		return Task{}, nil, false, fmt.Errorf("create task: %w", err)
	}
	if existing := c.identities[nt.IdentityHash]; existing != nil {
		return *existing, nil, false, nil
	}
	t, steps := newTaskRows(nt, c.now)
	pc := &pendingCreate{task: t, nt: nt}
	for i := range pc.nt.Steps {
		pc.steps = append(pc.steps, &pendingStep{s: &pc.nt.Steps[i], task: pc, state: lifecycle.StepPending})
	}
	c.buf.creates.add(pc)
	return t, steps, true, nil
}

// createdTaskMove folds a task transition or wake-up change into a pending
// creation; handled is false when the task is not one.
func (b *writeBuffer) createdTaskMove(m TaskMove, meta []byte, wakeOnly bool) (handled, ok bool) {
	pc := b.creates.byTask[m.UUID]
	if pc == nil {
		return false, false
	}
	pc.task.WakeAt = m.WakeAt
	if wakeOnly {
		return true, true
	}
	if pc.task.State != m.From {
		return true, false
	}
	pc.trans = append(pc.trans, pendingTransition{from: string(m.From), to: string(m.To), meta: meta})
	pc.task.State = m.To
	pc.terminal = pc.terminal || m.To.Terminal()
	return true, true
}

// touchesCreated reports whether any of the steps belongs to a pending
// creation.
func (b *writeBuffer) touchesCreated(steps []uuid.UUID) bool {
	for _, id := range steps {
		if b.creates.byStep[id] != nil {
			return true
		}
	}
	return false
}

// dispatchCreated enqueues the pending, newly created steps among ids to
// queue q and returns the others, to be dispatched by dispatch_steps.
func (b *writeBuffer) dispatchCreated(ids []uuid.UUID, headers [][]byte, q string) (rest []uuid.UUID, restHeaders [][]byte, err error) {
	for i, id := range ids {
		ps := b.creates.byStep[id]
		if ps == nil {
			rest, restHeaders = append(rest, id), append(restHeaders, headers[i])
			continue
		}
		if ps.state != lifecycle.StepPending {
			return nil, nil, fmt.Errorf("dispatch steps: step %s is %s, not pending", id, ps.state)
		}
		nt, st := &ps.task.nt, ps.s
		if err := b.sendStep(q, queue.StepMessage{TaskUUID: nt.UUID, StepUUID: st.UUID, StepName: st.Name, Handler: st.Handler,
			Namespace: nt.Namespace, CorrelationID: nt.CorrelationID, Attempt: 1}, headers[i]); err != nil {
			return nil, nil, err
		}
		ps.state = lifecycle.StepEnqueued
		ps.trans = append(ps.trans, pendingTransition{from: string(lifecycle.StepPending), to: string(lifecycle.StepEnqueued),
			meta: []byte(`{"trigger":"enqueue"}`)})
	}
	return rest, restHeaders, nil
}

// createSQL inserts pending creations with their final states: tasks,
// steps, edges and every transition row. Foreign keys are checked at the
// end of the statement.
const createSQL = `
	WITH t AS (
		INSERT INTO tasker.tasks (task_uuid, template_id, namespace, name, version, state, transition_count,
			context, tags, priority, initiator, source_system, reason, correlation_id, parent_correlation_id,
			identity_hash, traceparent, stale_after_seconds, wake_at, root_span_emitted, completed_at)
		SELECT u.id, u.tpl, u.ns, u.name, u.version, u.state, u.n, u.ctx,
		       ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.prio, u.init, u.src, u.reason, u.corr, u.parent,
		       u.hash, u.tp, u.stale, u.wake, u.term, CASE WHEN u.term THEN now() END
		  FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
		              $8::jsonb[], $9::jsonb[], $10::int[], $11::text[], $12::text[], $13::text[], $14::uuid[], $15::uuid[],
		              $16::text[], $17::text[], $18::int[], $19::timestamptz[], $20::bool[])
		       AS u(id, tpl, ns, name, version, state, n, ctx, tags, prio, init, src, reason, corr, parent,
		            hash, tp, stale, wake, term)
		RETURNING 1
	), tt AS (
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
		SELECT u.t, u.f, u.tt, u.k, u.last, u.m
		  FROM unnest($21::uuid[], $22::text[], $23::text[], $24::int[], $25::bool[], $26::jsonb[]) AS u(t, f, tt, k, last, m)
	), st AS (
		INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, handler, position, state, transition_count,
			max_attempts, retryable, backoff_base_ms, backoff_cap_ms, timeout_seconds)
		SELECT u.id, u.t, u.name, u.handler, u.pos, u.state, u.n, u.ma, u.rt, u.base, u.cap, u.tmo
		  FROM unnest($27::uuid[], $28::uuid[], $29::text[], $30::text[], $31::int[], $32::text[], $33::int[],
		              $34::int[], $35::bool[], $36::int[], $37::int[], $38::int[])
		       AS u(id, t, name, handler, pos, state, n, ma, rt, base, cap, tmo)
	), stt AS (
		INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
		SELECT u.s, u.t, u.f, u.tt, u.k, u.last, u.m
		  FROM unnest($39::uuid[], $40::uuid[], $41::text[], $42::text[], $43::int[], $44::bool[], $45::jsonb[])
		       AS u(s, t, f, tt, k, last, m)
	), e AS (
		INSERT INTO tasker.workflow_step_edges (task_uuid, from_step, to_step)
		SELECT u.t, u.f, u.tt FROM unnest($46::uuid[], $47::uuid[], $48::uuid[]) AS u(t, f, tt)
	)
	SELECT count(*) FROM t`

// queueCreates adds the insert of the pending creations to batch (their step
// messages are buffered sends). It returns a function that reads its result.
func (c *txConn) queueCreates(batch *pgx.Batch, cs *creates) (func(pgx.BatchResults) error, error) {
	var (
		tNS, tName, tVersion, tState, tInit, tSrc, tReason, tHash, tTP []string
		tUUID, tCorr                                                   []uuid.UUID
		tParent                                                        []*uuid.UUID
		tTpl                                                           []int64
		tN, tPrio, tStale                                              []int32
		tCtx, tTags                                                    [][]byte
		tWake                                                          []*time.Time
		tTerm                                                          []bool

		ttTask            []uuid.UUID
		ttFrom            []*string
		ttTo              []string
		ttSort            []int32
		ttLast            []bool
		ttMeta            [][]byte
		sID, sTask        []uuid.UUID
		sName, sHandler   []string
		sState            []string
		sPos, sN, sMA     []int32
		sRT               []bool
		sBase, sCap, sTmo []int32
		stStep, stTask    []uuid.UUID
		stFrom            []*string
		stTo              []string
		stSort            []int32
		stLast            []bool
		stMeta            [][]byte
		eTask, eFrom, eTo []uuid.UUID
	)
	created := []byte(`{"trigger":"created"}`)
	for _, pc := range cs.list {
		nt := &pc.nt
		tags, err := json.Marshal(pc.task.Tags)
		if err != nil {
			return nil, fmt.Errorf("encode tags: %w", err)
		}
		tUUID = append(tUUID, nt.UUID)
		tTpl = append(tTpl, nt.TemplateID)
		tNS, tName, tVersion = append(tNS, nt.Namespace), append(tName, nt.Name), append(tVersion, nt.Version)
		tState = append(tState, string(pc.task.State))
		tN = append(tN, int32(1+len(pc.trans)))
		tCtx, tTags = append(tCtx, pc.task.Context), append(tTags, tags)
		tPrio = append(tPrio, int32(nt.Priority))
		tInit, tSrc, tReason = append(tInit, nt.Initiator), append(tSrc, nt.SourceSystem), append(tReason, nt.Reason)
		tCorr, tParent = append(tCorr, nt.CorrelationID), append(tParent, nt.ParentCorrelationID)
		tHash, tTP = append(tHash, nt.IdentityHash), append(tTP, nt.TraceParent)
		tStale = append(tStale, int32(nt.StaleAfterSeconds))
		tWake, tTerm = append(tWake, pc.task.WakeAt), append(tTerm, pc.terminal)

		ttTask, ttFrom, ttTo = append(ttTask, nt.UUID), append(ttFrom, nil), append(ttTo, string(lifecycle.TaskPending))
		ttSort, ttLast, ttMeta = append(ttSort, 1), append(ttLast, len(pc.trans) == 0), append(ttMeta, created)
		for i, tr := range pc.trans {
			from := tr.from
			ttTask, ttFrom, ttTo = append(ttTask, nt.UUID), append(ttFrom, &from), append(ttTo, tr.to)
			ttSort, ttLast, ttMeta = append(ttSort, int32(i+2)), append(ttLast, i == len(pc.trans)-1), append(ttMeta, tr.meta)
		}

		for _, ps := range pc.steps {
			st := ps.s
			sID, sTask = append(sID, st.UUID), append(sTask, nt.UUID)
			sName, sHandler = append(sName, st.Name), append(sHandler, st.Handler)
			sPos, sState, sN = append(sPos, int32(st.Position)), append(sState, string(ps.state)), append(sN, int32(1+len(ps.trans)))
			sMA, sRT = append(sMA, int32(st.MaxAttempts)), append(sRT, st.Retryable)
			sBase, sCap, sTmo = append(sBase, int32(st.BackoffBaseMs)), append(sCap, int32(st.BackoffCapMs)), append(sTmo, int32(st.TimeoutSeconds))

			stStep, stTask, stFrom, stTo = append(stStep, st.UUID), append(stTask, nt.UUID), append(stFrom, nil), append(stTo, string(lifecycle.StepPending))
			stSort, stLast, stMeta = append(stSort, 1), append(stLast, len(ps.trans) == 0), append(stMeta, created)
			for i, tr := range ps.trans {
				from := tr.from
				stStep, stTask, stFrom, stTo = append(stStep, st.UUID), append(stTask, nt.UUID), append(stFrom, &from), append(stTo, tr.to)
				stSort, stLast, stMeta = append(stSort, int32(i+2)), append(stLast, i == len(ps.trans)-1), append(stMeta, tr.meta)
			}
			for _, p := range st.Parents {
				eTask, eFrom, eTo = append(eTask, nt.UUID), append(eFrom, p), append(eTo, st.UUID)
			}
		}
	}
	batch.Queue(createSQL,
		tUUID, tTpl, tNS, tName, tVersion, tState, tN, tCtx, tTags, tPrio, tInit, tSrc, tReason, tCorr, tParent,
		tHash, tTP, tStale, tWake, tTerm,
		ttTask, ttFrom, ttTo, ttSort, ttLast, ttMeta,
		sID, sTask, sName, sHandler, sPos, sState, sN, sMA, sRT, sBase, sCap, sTmo,
		stStep, stTask, stFrom, stTo, stSort, stLast, stMeta,
		eTask, eFrom, eTo)
	want := len(cs.list)
	return func(res pgx.BatchResults) error {
		var n int
		if err := res.QueryRow().Scan(&n); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "tasks_identity_hash_key" {
				return fmt.Errorf("insert %d tasks: %w", want, errCreateRaced)
			}
			return fmt.Errorf("insert %d tasks: %w", want, err)
		}
		if n != want {
			return fmt.Errorf("insert tasks: %d of %d inserted", n, want)
		}
		return nil
	}, nil
}

// newTaskRows are the task and steps (in template order) TaskCreateTx
// returns for a task inserted at time created.
func newTaskRows(nt NewTask, created time.Time) (Task, []Step) {
	tags := nt.Tags
	if tags == nil {
		tags = []string{}
	}
	ctxJSON := nt.Context
	if len(ctxJSON) == 0 {
		ctxJSON = json.RawMessage(`{}`)
	}
	t := Task{
		UUID: nt.UUID, TemplateID: nt.TemplateID, Namespace: nt.Namespace, Name: nt.Name, Version: nt.Version,
		State: lifecycle.TaskPending, Context: ctxJSON, Tags: tags, Priority: nt.Priority,
		Initiator: nt.Initiator, SourceSystem: nt.SourceSystem, Reason: nt.Reason,
		CorrelationID: nt.CorrelationID, ParentCorrelationID: nt.ParentCorrelationID,
		TraceParent: nt.TraceParent, StaleAfterSeconds: nt.StaleAfterSeconds,
		CreatedAt: created, UpdatedAt: created, StateEnteredAt: created,
	}
	steps := make([]Step, len(nt.Steps))
	for i, st := range nt.Steps {
		parents := append([]uuid.UUID{}, st.Parents...)
		sort.Slice(parents, func(a, b int) bool { return lessUUID(parents[a], parents[b]) })
		steps[i] = Step{
			UUID: st.UUID, TaskUUID: nt.UUID, Name: st.Name, Handler: st.Handler, Position: st.Position,
			State: lifecycle.StepPending, MaxAttempts: st.MaxAttempts, Retryable: st.Retryable,
			BackoffBaseMs: st.BackoffBaseMs, BackoffCapMs: st.BackoffCapMs, TimeoutSeconds: st.TimeoutSeconds,
			Parents: parents, CreatedAt: created, UpdatedAt: created, StateEnteredAt: created,
		}
	}
	sort.SliceStable(steps, func(a, b int) bool { return steps[a].Position < steps[b].Position })
	return t, steps
}
