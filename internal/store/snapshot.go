package store

import (
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
)

// lockedRows is what a deferred transaction knows of the tasks it locked
// with TasksLockWithStepsTx and of all their steps: the rows as that read
// returned them, kept current with the transaction's buffered moves of
// them. DomainEventDataTx answers from it what the domain events of a
// result transaction would otherwise read back after the writes
// (docs/performance.md, row 86).
//
// It stays exact only while every write of the transaction goes through the
// buffer: any statement sent through the transaction's connection other
// than the buffer's flush and that one read (txConn.Exec, Query, QueryRow)
// drops it, and the reads that need it then go to the database.
//
// The steps' worker-owned states (enqueued, in_progress) are as of the
// lock: a worker may claim or submit a step meanwhile, which a read later
// in the transaction would see. The step counts of a payload answered from
// here are then a moment older; every state the orchestrator owns, and so
// every count a task's completion reports, is exact.
type lockedRows struct {
	// now is the transaction's start, now(): what a terminal task move
	// writes to completed_at.
	now   time.Time
	tasks map[uuid.UUID]*lockedTask
	steps map[uuid.UUID]*lockedStep
}

type lockedTask struct {
	uuid        uuid.UUID
	state       lifecycle.TaskState
	createdAt   time.Time
	completedAt *time.Time
	steps       []*lockedStep
}

type lockedStep struct {
	DomainEventStep
	// resultsKnown: Results was read (the lock read reads the results of
	// the steps whose notices the transaction processes) or written by a
	// buffered move. errorKnown: LastError was read (lockedStepColumns
	// reads it for the failure states).
	resultsKnown, errorKnown bool
}

// newLockedRows indexes the rows of a lock read. resultsOf are the steps
// whose results the read asked for.
func newLockedRows(now time.Time, tasks []Task, steps []Step, resultsOf []uuid.UUID) *lockedRows {
	withResults := make(map[uuid.UUID]bool, len(resultsOf))
	for _, id := range resultsOf {
		withResults[id] = true
	}
	l := &lockedRows{now: now, tasks: make(map[uuid.UUID]*lockedTask, len(tasks)), steps: make(map[uuid.UUID]*lockedStep, len(steps))}
	// One allocation for the tasks and two for the steps. The lock read
	// returns the steps in task order, so a task's steps are a run of ptrs;
	// the full slice expression keeps an append from writing over the next
	// task's.
	lts := make([]lockedTask, len(tasks))
	for i := range tasks {
		t := &tasks[i]
		lts[i] = lockedTask{uuid: t.UUID, state: t.State, createdAt: t.CreatedAt, completedAt: t.CompletedAt}
		l.tasks[t.UUID] = &lts[i]
	}
	lss := make([]lockedStep, len(steps))
	ptrs := make([]*lockedStep, len(steps))
	start := 0
	for i := range steps {
		s := &steps[i]
		lss[i] = lockedStep{DomainEventStep: DomainEventStep{UUID: s.UUID, TaskUUID: s.TaskUUID, Name: s.Name, Handler: s.Handler,
			State: string(s.State), Position: s.Position, Attempts: s.Attempts, MaxAttempts: s.MaxAttempts,
			NextAttemptAt: s.NextAttemptAt, Results: s.Results, LastError: s.LastError},
			resultsKnown: withResults[s.UUID] && s.State == lifecycle.StepEnqueuedForOrchestration,
			errorKnown:   lastErrorRead(s.State)}
		ptrs[i] = &lss[i]
		l.steps[s.UUID] = &lss[i]
		if i > 0 && steps[i-1].TaskUUID != s.TaskUUID {
			start = i
		}
		if t := l.tasks[s.TaskUUID]; t != nil {
			if len(t.steps) == i-start {
				t.steps = ptrs[start : i+1 : i+1]
			} else {
				t.steps = append(t.steps, &lss[i]) // not in task order
			}
		}
	}
	return l
}

// lastErrorRead reports whether lockedStepColumns reads a step's
// last_error in this state.
func lastErrorRead(s lifecycle.StepState) bool {
	return s == lifecycle.StepEnqueuedAsErrorForOrchestration || s == lifecycle.StepError
}

// stepMoved applies a buffered step move as apply_step_moves will: the new
// state, the move's next attempt time (stored to the microsecond), the
// extra attempts, and the results when it gives some.
func (l *lockedRows) stepMoved(m StepMove) {
	s := l.steps[m.UUID]
	if s == nil {
		return
	}
	s.State = string(m.To)
	s.NextAttemptAt = storedTime(m.NextAttemptAt)
	s.MaxAttempts += m.ExtraAttempts
	if m.Results != nil {
		s.Results, s.resultsKnown = m.Results, true
	}
}

// taskMoved applies a buffered task move as apply_task_moves will: the new
// state, and completed_at set to the transaction's start for a terminal
// state and cleared for another. A change of wake time alone changes
// neither.
func (l *lockedRows) taskMoved(m TaskMove, wakeOnly bool) {
	t := l.tasks[m.UUID]
	if t == nil || wakeOnly {
		return
	}
	t.state = m.To
	t.completedAt = nil
	if m.To.Terminal() { // complete, error, cancelled, resolved_manually: apply_task_moves's list
		at := l.now
		t.completedAt = &at
	}
}

// storedTime is t as a timestamptz column stores it: pgx sends whole
// microseconds, dropping the rest.
func storedTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.Truncate(time.Microsecond)
	return &v
}

// answer returns the brief tasks and the steps DomainEventDataTx is asked
// for, when it knows all of them with every column their payloads read;
// ok is false otherwise, and the caller reads them instead.
func (l *lockedRows) answer(brief, stepIDs []uuid.UUID) (tasks []DomainEventTask, steps []DomainEventStep, ok bool) {
	if l == nil {
		return nil, nil, false
	}
	steps = make([]DomainEventStep, 0, len(stepIDs))
	for _, id := range stepIDs {
		s := l.steps[id]
		if s == nil {
			return nil, nil, false
		}
		// A payload shows a completed step's result and a failed one's
		// error.
		switch lifecycle.StepState(s.State) {
		case lifecycle.StepComplete, lifecycle.StepResolvedManually:
			if !s.resultsKnown {
				return nil, nil, false
			}
		case lifecycle.StepError, lifecycle.StepWaitingForRetry, lifecycle.StepPending, lifecycle.StepEnqueued,
			lifecycle.StepEnqueuedAsErrorForOrchestration:
			if !s.errorKnown {
				return nil, nil, false
			}
		}
		steps = append(steps, s.DomainEventStep)
	}
	tasks = make([]DomainEventTask, 0, len(brief))
	for _, id := range brief {
		t := l.tasks[id]
		if t == nil {
			return nil, nil, false
		}
		d := DomainEventTask{Brief: true, StepCounts: make(map[string]int, 4), StepCount: len(t.steps)}
		d.UUID, d.State, d.CreatedAt, d.CompletedAt = t.uuid, t.state, t.createdAt, t.completedAt
		for _, s := range t.steps {
			d.StepCounts[s.State]++
		}
		tasks = append(tasks, d)
	}
	return tasks, steps, true
}

// LockedRowsKept reports whether DomainEventDataTx can answer tx's domain
// event reads from the rows its result lock read (lockedRows): tx is
// deferred, read them with TasksLockWithStepsTx, and has sent no statement
// outside its buffer since. For tests and diagnostics.
func LockedRowsKept(tx Tx) bool {
	return tx.tx.locked != nil
}
