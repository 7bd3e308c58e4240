package store

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
)

// The collapses of a transaction's buffered moves give what folding each
// step's and each task's moves one by one, in buffer order, gives: the
// reference functions below are the map-of-slices versions the sorted
// index replaced.
func TestCollapseMatchesFoldingInBufferOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	stepStates := []lifecycle.StepState{lifecycle.StepPending, lifecycle.StepEnqueued, lifecycle.StepComplete,
		lifecycle.StepWaitingForRetry, lifecycle.StepError}
	taskStates := []lifecycle.TaskState{lifecycle.TaskEvaluatingResults, lifecycle.TaskEnqueuingSteps,
		lifecycle.TaskStepsInProcess, lifecycle.TaskComplete}
	for round := range 200 {
		ids := make([]uuid.UUID, 1+r.IntN(12))
		for i := range ids {
			ids[i] = uuid.New()
		}
		steps := make([]bufferedStep, r.IntN(40))
		for i := range steps {
			m := StepMove{UUID: ids[r.IntN(len(ids))], From: stepStates[r.IntN(len(stepStates))], To: stepStates[r.IntN(len(stepStates))],
				ExtraAttempts: r.IntN(3)}
			if r.IntN(3) == 0 {
				at := time.Unix(int64(r.IntN(1000)), 0)
				m.NextAttemptAt = &at
			}
			if r.IntN(4) == 0 {
				m.Results = []byte(`{"n":` + string(rune('0'+r.IntN(10))) + `}`)
			}
			steps[i] = bufferedStep{StepMove: m, meta: []byte{byte(i)}}
		}
		ops := make([]taskOp, r.IntN(40))
		for i := range ops {
			op := taskOp{move: TaskMove{UUID: ids[r.IntN(len(ids))], From: taskStates[r.IntN(len(taskStates))],
				To: taskStates[r.IntN(len(taskStates))]}, meta: []byte{byte(i)}, wakeOnly: r.IntN(4) == 0}
			if r.IntN(2) == 0 {
				at := time.Unix(int64(r.IntN(1000)), 0)
				op.move.WakeAt = &at
			}
			ops[i] = op
		}
		if got, want := collapseSteps(steps), referenceCollapseSteps(steps); !reflect.DeepEqual(normStep(got), normStep(want)) {
			t.Fatalf("round %d: collapseSteps\n got %+v\nwant %+v", round, got, want)
		}
		if got, want := collapseTasks(ops), referenceCollapseTasks(ops); !reflect.DeepEqual(normTask(got), normTask(want)) {
			t.Fatalf("round %d: collapseTasks\n got %+v\nwant %+v", round, got, want)
		}
	}
}

// normStep and normTask make empty slices nil: the reference leaves a
// field nil where the sorted index allocates it empty.
func normStep(a *stepApply) stepApply {
	c := *a
	nilIfEmpty(&c.ids, &c.trStep)
	nilIfEmpty(&c.first, &c.final, &c.trFrom, &c.trTo)
	nilIfEmpty(&c.n, &c.extra, &c.trSeq)
	nilIfEmpty(&c.results, &c.trMeta)
	nilIfEmpty(&c.next)
	return c
}

func normTask(a *taskApply) taskApply {
	c := *a
	nilIfEmpty(&c.ids, &c.trTask)
	nilIfEmpty(&c.first, &c.final, &c.trFrom, &c.trTo)
	nilIfEmpty(&c.n, &c.trSeq)
	nilIfEmpty(&c.trMeta)
	nilIfEmpty(&c.wake)
	nilIfEmpty(&c.terminal)
	return c
}

func nilIfEmpty[T any](slices ...*[]T) {
	for _, p := range slices {
		if len(*p) == 0 {
			*p = nil
		}
	}
}

// BenchmarkCollapse folds the moves of a linear4 result batch of 50 tasks:
// per task, the finished step's completion and the next step's dispatch,
// and three task transitions.
func BenchmarkCollapse(b *testing.B) {
	var steps []bufferedStep
	var ops []taskOp
	for range 50 {
		task, done, next := uuid.New(), uuid.New(), uuid.New()
		steps = append(steps,
			bufferedStep{StepMove: StepMove{UUID: done, From: lifecycle.StepEnqueuedForOrchestration, To: lifecycle.StepComplete}},
			bufferedStep{StepMove: StepMove{UUID: next, From: lifecycle.StepPending, To: lifecycle.StepEnqueued}})
		ops = append(ops,
			taskOp{move: TaskMove{UUID: task, From: lifecycle.TaskStepsInProcess, To: lifecycle.TaskEvaluatingResults}},
			taskOp{move: TaskMove{UUID: task, From: lifecycle.TaskEvaluatingResults, To: lifecycle.TaskEnqueuingSteps}},
			taskOp{move: TaskMove{UUID: task, From: lifecycle.TaskEnqueuingSteps, To: lifecycle.TaskStepsInProcess}})
	}
	b.Run("sorted index", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			collapseSteps(steps)
			collapseTasks(ops)
		}
	})
	b.Run("map of slices (the reference)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			referenceCollapseSteps(steps)
			referenceCollapseTasks(ops)
		}
	})
}

// referenceCollapseSteps and referenceCollapseTasks are the collapses as
// they were before the sorted index (b19b7d0), kept as the reference.
func referenceCollapseSteps(moves []bufferedStep) *stepApply {
	type agg struct{ moves []bufferedStep }
	by := map[uuid.UUID]*agg{}
	var order []uuid.UUID
	for _, m := range moves {
		a, ok := by[m.UUID]
		if !ok {
			a = &agg{}
			by[m.UUID] = a
			order = append(order, m.UUID)
		}
		a.moves = append(a.moves, m)
	}
	sort.Slice(order, func(i, k int) bool { return lessUUID(order[i], order[k]) })
	out := &stepApply{}
	for _, id := range order {
		ms := by[id].moves
		var results []byte
		var extra int32
		for _, m := range ms {
			if m.Results != nil {
				results = m.Results
			}
			extra += int32(m.ExtraAttempts)
		}
		last := ms[len(ms)-1]
		out.ids = append(out.ids, id)
		out.first = append(out.first, string(ms[0].From))
		out.final = append(out.final, string(last.To))
		out.n = append(out.n, int32(len(ms)))
		out.next = append(out.next, last.NextAttemptAt)
		out.extra = append(out.extra, extra)
		out.results = append(out.results, results)
		for i, m := range ms {
			out.trStep = append(out.trStep, id)
			out.trFrom = append(out.trFrom, string(m.From))
			out.trTo = append(out.trTo, string(m.To))
			out.trSeq = append(out.trSeq, int32(i+1))
			out.trMeta = append(out.trMeta, m.meta)
		}
	}
	return out
}
func referenceCollapseTasks(ops []taskOp) *taskApply {
	by := map[uuid.UUID][]taskOp{}
	var order []uuid.UUID
	for _, op := range ops {
		if _, ok := by[op.move.UUID]; !ok {
			order = append(order, op.move.UUID)
		}
		by[op.move.UUID] = append(by[op.move.UUID], op)
	}
	sort.Slice(order, func(i, k int) bool { return lessUUID(order[i], order[k]) })
	out := &taskApply{}
	for _, id := range order {
		var first, final string
		var n int32
		var wake *time.Time
		terminal := false
		for _, op := range by[id] {
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
	}
	return out
}
