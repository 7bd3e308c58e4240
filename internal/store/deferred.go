package store

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/queue"
)

// txConn is the connection of a Tx. In a deferred transaction it carries the
// buffer of writes not applied yet; every statement issued through it
// applies the buffer first, so the transaction always reads its own writes.
type txConn struct {
	raw *pipeTx
	buf *writeBuffer
	// sent names the queues inserted into, whose listeners are woken after
	// the commit (Store.notify).
	sent map[string]struct{}
	// now is the transaction's start time, once read (new tasks' created_at).
	now time.Time
	// identities are the tasks found by identity hash (TaskIdentitiesTx),
	// nil for a hash no committed or flushed task had when looked up. A
	// task created in the transaction is found in the buffer while it is
	// pending; once flushed, its hash is dropped here and looked up again.
	identities map[string]*Task
	// locked are the rows of the transaction's result lock read, kept
	// current with its buffered moves (lockedRows); nil when there are
	// none or a statement outside the buffer may have changed them.
	locked *lockedRows
}

// bufferStep buffers a step move, and applies it to the locked rows.
func (c *txConn) bufferStep(s bufferedStep) {
	c.buf.steps = append(c.buf.steps, s)
	if c.locked != nil {
		c.locked.stepMoved(s.StepMove)
	}
}

// bufferTaskOp buffers a task move or wake time, and applies it to the
// locked rows.
func (c *txConn) bufferTaskOp(op taskOp) {
	c.buf.taskOps = append(c.buf.taskOps, op)
	if c.locked != nil {
		c.locked.taskMoved(op.move, op.wakeOnly)
	}
}

// inserted records an insert into a queue.
func (c *txConn) inserted(queueName string) {
	if c.sent == nil {
		c.sent = map[string]struct{}{}
	}
	c.sent[queueName] = struct{}{}
}

func (c *txConn) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.locked = nil // the statement may write the locked rows
	if err := c.flush(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return c.raw.Exec(ctx, sql, args...)
}

func (c *txConn) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.locked = nil
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	return c.raw.Query(ctx, sql, args...)
}

func (c *txConn) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.locked = nil
	if err := c.flush(ctx); err != nil {
		return errRow{err}
	}
	return c.raw.QueryRow(ctx, sql, args...)
}

// readQuery is Query for a statement that writes nothing: it keeps the
// locked rows.
func (c *txConn) readQuery(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	return c.raw.Query(ctx, sql, args...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// writeBuffer is what a deferred transaction has not applied yet, in the
// order it was asked for. A dispatch is a step move (pending -> enqueued,
// after any earlier move of the same step in the transaction, such as
// waiting_for_retry -> pending) plus a message send; task moves touch
// another table and go last.
type writeBuffer struct {
	taskOps []taskOp
	steps   []bufferedStep
	deletes map[string][]int64 // queue -> message ids
	creates creates            // tasks created in this transaction, written first
	sends   map[string]*queueSends
}

// queueSends are messages for one queue, with their headers (JSON or nil).
type queueSends struct {
	bodies, headers [][]byte
}

// send buffers a message.
func (b *writeBuffer) send(q string, body, headers []byte) {
	if b.sends == nil {
		b.sends = map[string]*queueSends{}
	}
	s := b.sends[q]
	if s == nil {
		s = &queueSends{}
		b.sends[q] = s
	}
	s.bodies, s.headers = append(s.bodies, body), append(s.headers, headers)
}

// sendStep buffers a step message for queue q (the body a worker reads,
// the same fields tasker.dispatch_steps writes).
func (b *writeBuffer) sendStep(q string, m queue.StepMessage, headers []byte) error {
	b.send(q, m.AppendJSON(nil), headers)
	return nil
}

func (b *writeBuffer) empty() bool {
	return len(b.taskOps) == 0 && len(b.steps) == 0 && len(b.deletes) == 0 && len(b.creates.list) == 0 && len(b.sends) == 0
}

// taskOp is a buffered task transition, or (wakeOnly) a change of wake_at
// alone.
// bufferedStep is a step move with its metadata already encoded (and so
// checked) when it was buffered.
type bufferedStep struct {
	StepMove
	meta []byte
}

type taskOp struct {
	move     TaskMove
	meta     []byte
	wakeOnly bool
}

// orchestratorOwned are the step states only an orchestrator holding the
// task's lock moves a step out of. Workers claim enqueued steps and submit
// in_progress ones, so moves out of those are never buffered.
func orchestratorOwned(s lifecycle.StepState) bool {
	switch s {
	case lifecycle.StepPending, lifecycle.StepWaitingForRetry,
		lifecycle.StepEnqueuedForOrchestration, lifecycle.StepEnqueuedAsErrorForOrchestration:
		return true
	}
	return false
}

// flush applies the buffer in one round trip: the tasks created, the
// messages sent (one insert per queue), the deletions, the step moves
// (dispatches included) and the task moves, each as one statement. A compare-and-swap that does
// not find its row in the expected state fails the flush (and with it the
// transaction).
func (c *txConn) flush(ctx context.Context) error {
	batch := &pgx.Batch{}
	check, err := c.queueFlush(batch)
	if err != nil || batch.Len() == 0 {
		return err
	}
	res := c.raw.SendBatch(ctx, batch)
	err = check(res)
	if cerr := res.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("apply buffered writes: %w", cerr)
	}
	return err
}

// sendWithFlush sends batch after the buffered writes, in one round trip.
// The statements of batch run after the writes were checked; read their
// results from the returned BatchResults and Close it.
func (c *txConn) sendWithFlush(ctx context.Context, batch *pgx.Batch) (pgx.BatchResults, error) {
	all := &pgx.Batch{}
	check, err := c.queueFlush(all)
	if err != nil {
		return nil, err
	}
	all.QueuedQueries = append(all.QueuedQueries, batch.QueuedQueries...)
	res := c.raw.SendBatch(ctx, all)
	if err := check(res); err != nil {
		_ = res.Close()
		return nil, err
	}
	return res, nil
}

// queueFlush adds the buffered writes to batch, empties the buffer and
// returns the function that reads and checks their results (first, in the
// order queued).
func (c *txConn) queueFlush(batch *pgx.Batch) (func(pgx.BatchResults) error, error) {
	b := c.buf
	if b == nil || b.empty() {
		return func(pgx.BatchResults) error { return nil }, nil
	}
	c.buf = &writeBuffer{}

	var steps *stepApply
	var tasks *taskApply
	var readCreates func(pgx.BatchResults) error
	if len(b.creates.list) > 0 {
		var err error
		if readCreates, err = c.queueCreates(batch, &b.creates); err != nil {
			return nil, err
		}
		for _, pc := range b.creates.list {
			delete(c.identities, pc.nt.IdentityHash)
		}
	}
	sendTo := make([]string, 0, len(b.sends))
	for q := range b.sends {
		sendTo = append(sendTo, q)
	}
	sort.Strings(sendTo)
	for _, q := range sendTo {
		sql, err := queue.InsertSQL(q)
		if err != nil {
			return nil, fmt.Errorf("send to %s: %w", q, err)
		}
		batch.Queue(sql, b.sends[q].bodies, b.sends[q].headers)
	}
	queues := make([]string, 0, len(b.deletes))
	for q := range b.deletes {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	for _, q := range queues {
		sql, err := queue.DeleteSQL(q)
		if err != nil {
			return nil, fmt.Errorf("delete from %s: %w", q, err)
		}
		batch.Queue(sql, b.deletes[q])
	}
	if len(b.steps) > 0 {
		steps = collapseSteps(b.steps)
		batch.Queue(`SELECT tasker.apply_step_moves($1, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9, $10, $11, $12::jsonb[])`,
			steps.ids, steps.first, steps.final, steps.n, steps.next, steps.extra, steps.results,
			steps.trStep, steps.trFrom, steps.trTo, steps.trSeq, steps.trMeta)
	}
	if len(b.taskOps) > 0 {
		tasks = collapseTasks(b.taskOps)
		batch.Queue(`SELECT tasker.apply_task_moves($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb[])`,
			tasks.ids, tasks.first, tasks.final, tasks.n, tasks.wake, tasks.terminal,
			tasks.trTask, tasks.trFrom, tasks.trTo, tasks.trSeq, tasks.trMeta)
	}
	return func(res pgx.BatchResults) error {
		if readCreates != nil {
			if err := readCreates(res); err != nil {
				return err
			}
		}
		for _, q := range sendTo {
			if _, err := res.Exec(); err != nil {
				return fmt.Errorf("send %d messages to %s: %w", len(b.sends[q].bodies), q, err)
			}
		}
		for _, q := range queues {
			if _, err := res.Exec(); err != nil {
				return fmt.Errorf("delete %d messages from %s: %w", len(b.deletes[q]), q, err)
			}
		}
		if steps != nil {
			var n int
			if err := res.QueryRow().Scan(&n); err != nil {
				return fmt.Errorf("apply %d step transitions: %w", len(b.steps), err)
			}
			if n != len(steps.ids) {
				return fmt.Errorf("apply step transitions: %d of %d steps were in the expected state; another actor moved a step under the task lock", n, len(steps.ids))
			}
		}
		if tasks != nil {
			var n int
			if err := res.QueryRow().Scan(&n); err != nil {
				return fmt.Errorf("apply %d task transitions: %w", len(tasks.trTask), err)
			}
			if n != len(tasks.ids) {
				return fmt.Errorf("apply task transitions: %d of %d tasks were in the expected state; a task moved under its lock", n, len(tasks.ids))
			}
		}
		return nil
	}, nil
}

// stepApply is the buffered step moves, one entry per step (its first
// from-state and final state) plus every transition row.
type stepApply struct {
	ids     []uuid.UUID
	first   []string
	final   []string
	n       []int32 // transitions
	next    []*time.Time
	extra   []int32
	results [][]byte
	trStep  []uuid.UUID
	trFrom  []string
	trTo    []string
	trSeq   []int32
	trMeta  [][]byte
}

// collapseSteps folds each step's moves into one row update with the effect
// of applying them in order (the last move's next_attempt_at, the last
// results given, the sum of extra attempts), and numbers its transitions.
// Steps are ordered by uuid, the order in which every writer locks them.
func collapseSteps(moves []bufferedStep) *stepApply {
	// Each step's moves, in the order they were buffered, found through
	// one index sorted by (step, buffer position): a result batch buffers
	// a few moves for each of dozens of steps, and a map of slices grew a
	// slice per step.
	idx := make([]int32, len(moves))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.Slice(idx, func(i, k int) bool {
		a, b := &moves[idx[i]], &moves[idx[k]]
		if a.UUID != b.UUID {
			return lessUUID(a.UUID, b.UUID)
		}
		return idx[i] < idx[k]
	})
	steps := 0
	for i := range idx {
		if i == 0 || moves[idx[i]].UUID != moves[idx[i-1]].UUID {
			steps++
		}
	}
	out := &stepApply{
		ids: make([]uuid.UUID, 0, steps), first: make([]string, 0, steps), final: make([]string, 0, steps),
		n: make([]int32, 0, steps), next: make([]*time.Time, 0, steps), extra: make([]int32, 0, steps),
		results: make([][]byte, 0, steps),
		trStep:  make([]uuid.UUID, 0, len(moves)), trFrom: make([]string, 0, len(moves)), trTo: make([]string, 0, len(moves)),
		trSeq: make([]int32, 0, len(moves)), trMeta: make([][]byte, 0, len(moves)),
	}
	for lo := 0; lo < len(idx); {
		id := moves[idx[lo]].UUID
		hi := lo + 1
		for hi < len(idx) && moves[idx[hi]].UUID == id {
			hi++
		}
		var results []byte
		var extra int32
		for _, k := range idx[lo:hi] {
			m := &moves[k]
			if m.Results != nil {
				results = m.Results
			}
			extra += int32(m.ExtraAttempts)
		}
		first, last := &moves[idx[lo]], &moves[idx[hi-1]]
		out.ids = append(out.ids, id)
		out.first = append(out.first, string(first.From))
		out.final = append(out.final, string(last.To))
		out.n = append(out.n, int32(hi-lo))
		out.next = append(out.next, last.NextAttemptAt)
		out.extra = append(out.extra, extra)
		out.results = append(out.results, results)
		for i, k := range idx[lo:hi] {
			m := &moves[k]
			out.trStep = append(out.trStep, id)
			out.trFrom = append(out.trFrom, string(m.From))
			out.trTo = append(out.trTo, string(m.To))
			out.trSeq = append(out.trSeq, int32(i+1))
			out.trMeta = append(out.trMeta, m.meta)
		}
		lo = hi
	}
	return out
}

// taskApply is the buffered task operations, one entry per task.
type taskApply struct {
	ids      []uuid.UUID
	first    []string // the state the first transition starts from ('' for wake-only)
	final    []string
	n        []int32 // transitions
	wake     []*time.Time
	terminal []bool // a transition entered a terminal state
	trTask   []uuid.UUID
	trFrom   []string
	trTo     []string
	trSeq    []int32
	trMeta   [][]byte
}

func collapseTasks(ops []taskOp) *taskApply {
	// Each task's operations in buffer order, through one sorted index (as
	// in collapseSteps).
	idx := make([]int32, len(ops))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.Slice(idx, func(i, k int) bool {
		a, b := &ops[idx[i]].move, &ops[idx[k]].move
		if a.UUID != b.UUID {
			return lessUUID(a.UUID, b.UUID)
		}
		return idx[i] < idx[k]
	})
	tasks, moves := 0, 0
	for i, k := range idx {
		if i == 0 || ops[k].move.UUID != ops[idx[i-1]].move.UUID {
			tasks++
		}
		if !ops[k].wakeOnly {
			moves++
		}
	}
	out := &taskApply{
		ids: make([]uuid.UUID, 0, tasks), first: make([]string, 0, tasks), final: make([]string, 0, tasks),
		n: make([]int32, 0, tasks), wake: make([]*time.Time, 0, tasks), terminal: make([]bool, 0, tasks),
		trTask: make([]uuid.UUID, 0, moves), trFrom: make([]string, 0, moves), trTo: make([]string, 0, moves),
		trSeq: make([]int32, 0, moves), trMeta: make([][]byte, 0, moves),
	}
	for lo := 0; lo < len(idx); {
		id := ops[idx[lo]].move.UUID
		hi := lo + 1
		for hi < len(idx) && ops[idx[hi]].move.UUID == id {
			hi++
		}
		var first, final string
		var n int32
		var wake *time.Time
		terminal := false
		for _, k := range idx[lo:hi] {
			op := &ops[k]
			wake = op.move.WakeAt // every operation stores its wake time
			if op.wakeOnly {
				continue
			}
			n++
			if first == "" {
				first = string(op.move.From)
			}
			final = string(op.move.To)
			terminal = terminal || op.move.To.Terminal()
			out.trTask = append(out.trTask, id)
			out.trFrom = append(out.trFrom, string(op.move.From))
			out.trTo = append(out.trTo, string(op.move.To))
			out.trSeq = append(out.trSeq, n)
			out.trMeta = append(out.trMeta, op.meta)
		}
		out.ids = append(out.ids, id)
		out.first = append(out.first, first)
		out.final = append(out.final, final)
		out.n = append(out.n, n)
		out.wake = append(out.wake, wake)
		out.terminal = append(out.terminal, terminal)
		lo = hi
	}
	return out
}

func lessUUID(a, b uuid.UUID) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
