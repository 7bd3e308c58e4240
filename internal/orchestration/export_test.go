package orchestration

import (
	"context"
	"time"

	"github.com/tasker/tasker/internal/store"
)

// CreateTogether runs reqs through one intake batch, as concurrent
// submissions would; the request at index bad gets a template id that does
// not exist, so that its insert fails inside the shared transaction.
func (e *Engine) CreateTogether(ctx context.Context, reqs []TaskRequest, bad int) ([]store.Task, []error) {
	nts, keys := e.prepareAll(ctx, reqs, bad)
	batch := make([]*createReq, len(reqs))
	for i := range reqs {
		batch[i] = &createReq{nt: nts[i], key: keys[i], done: make(chan struct{})}
	}
	e.createBatch(ctx, batch, nil)
	tasks := make([]store.Task, len(reqs))
	errs := make([]error, len(reqs))
	for i, r := range batch {
		<-r.done
		tasks[i], errs[i] = r.res.task, r.res.err
	}
	return tasks, errs
}

// SetIntakeOverlapAfter sets how long a creation transaction runs alone
// before a second may start beside it.
func (e *Engine) SetIntakeOverlapAfter(d time.Duration) {
	e.intake.mu.Lock()
	defer e.intake.mu.Unlock()
	e.intake.overlapAfter = d
}

// IntakePeak is the most creation transactions the intake has had in
// flight at once.
func (e *Engine) IntakePeak() int {
	e.intake.mu.Lock()
	defer e.intake.mu.Unlock()
	return e.intake.peak
}

// HelperReads is how many reads the helper result loops (the second and
// later of ResultLoops) have made.
func (o *Orchestrator) HelperReads() int64 { return o.helperReads.Load() }

// QueuedOutcome is one request's result in CreateQueued.
type QueuedOutcome struct {
	Task    store.Task
	Created bool
	Skipped bool
	Err     error
}

// CreateQueued creates the requests of reqs, read from the task request
// queue as messages ids, as RequestsOnce does (createQueued); the request
// at index bad (if any) gets a template id that does not exist, so that it
// fails inside the shared transaction.
func (e *Engine) CreateQueued(ctx context.Context, ids []int64, reqs []TaskRequest, bad int) []QueuedOutcome {
	nts, keys := e.prepareAll(ctx, reqs, bad)
	items := make([]*queuedCreate, len(reqs))
	for i := range reqs {
		items[i] = &queuedCreate{msgID: ids[i], nt: nts[i], key: keys[i]}
	}
	e.createQueued(ctx, items)
	out := make([]QueuedOutcome, len(items))
	for i, it := range items {
		out[i] = QueuedOutcome{Task: it.res.task, Created: it.res.created, Skipped: it.skipped, Err: it.res.err}
	}
	return out
}

// prepareAll prepares reqs (which must be valid); the request at index bad
// (if any) gets a template id that does not exist, so that it fails inside
// a shared creation transaction.
func (e *Engine) prepareAll(ctx context.Context, reqs []TaskRequest, bad int) ([]store.NewTask, []string) {
	nts, keys := make([]store.NewTask, len(reqs)), make([]string, len(reqs))
	for i, r := range reqs {
		nt, key, err := e.prepare(ctx, r)
		if err != nil {
			panic(err)
		}
		if i == bad {
			nt.TemplateID = -1
		}
		nts[i], keys[i] = nt, key
	}
	return nts, keys
}
