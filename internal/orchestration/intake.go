package orchestration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/pgtext"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
)

// Request limits. Bigger inputs are refused with an error naming the field.
const (
	MaxTags           = 32
	MaxTagLen         = 64
	MaxTextFieldLen   = 256 // initiator, source_system, idempotency_key
	MaxReasonLen      = 2000
	MaxPriority       = 1000
	MaxContextBytes   = 1 << 20
	defaultInitiator  = "unknown"
	defaultSourceName = "unknown"
)

// TaskRequest asks for a new task: an instance of a registered template.
type TaskRequest struct {
	Namespace           string          `json:"namespace"`
	Name                string          `json:"name"`
	Version             string          `json:"version,omitempty"`
	Context             json.RawMessage `json:"context,omitempty"`
	Initiator           string          `json:"initiator,omitempty"`
	SourceSystem        string          `json:"source_system,omitempty"`
	Reason              string          `json:"reason,omitempty"`
	Tags                []string        `json:"tags,omitempty"`
	Priority            int             `json:"priority,omitempty"`
	CorrelationID       *uuid.UUID      `json:"correlation_id,omitempty"`
	ParentCorrelationID *uuid.UUID      `json:"parent_correlation_id,omitempty"`
	// IdempotencyKey makes submission idempotent: a second request with the
	// same namespace, name and key returns the first task instead of
	// creating another.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Given names the members the request's JSON had (GivenFields), so
	// that a repeat with an idempotency key is compared on what it said,
	// zero values included ("priority": 0, "tags": []). Nil: the non-zero
	// fields count as given.
	Given map[string]bool `json:"-"`
}

// GivenFields returns the member names of the JSON object body (nil when it
// is not one), for TaskRequest.Given.
func GivenFields(body []byte) map[string]bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// FieldError names the request field that is wrong.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ValidateText refuses a text field of a request that is longer than max
// bytes or that Postgres cannot store. Every text field a client sends is
// checked with it, so that none reaches SQL as a database error.
func ValidateText(field, v string, max int) error {
	if len(v) > max {
		return fieldErr(field, "is longer than %d characters", max)
	}
	if err := pgtext.CheckText(v); err != nil {
		return fieldErr(field, "%v", err)
	}
	return nil
}

// ValidateJSON refuses a JSON field of a request that is not valid JSON or
// that jsonb cannot store. Empty means absent and is accepted.
func ValidateJSON(field string, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	if !json.Valid(raw) {
		return fieldErr(field, "is not valid JSON")
	}
	if err := pgtext.CheckJSON(raw); err != nil {
		return fieldErr(field, "%v", err)
	}
	return nil
}

// Validate checks the request's shape (not whether its template exists).
func (r *TaskRequest) Validate() error {
	if r.Namespace == "" {
		return fieldErr("namespace", "is required")
	}
	if err := queue.ValidateNamespace(r.Namespace); err != nil {
		return fieldErr("namespace", "%q is not a valid namespace name (a lowercase letter, then up to 32 lowercase letters, digits or underscores)", r.Namespace)
	}
	if r.Name == "" {
		return fieldErr("name", "is required")
	}
	if err := ValidateText("name", r.Name, 64); err != nil {
		return err
	}
	if len(r.Version) > 32 {
		return fieldErr("version", "is longer than 32 characters")
	}
	if len(r.Context) > MaxContextBytes {
		return fieldErr("context", "is %d bytes; the limit is %d", len(r.Context), MaxContextBytes)
	}
	if len(r.Context) > 0 {
		// bytes, not a string: a context may be up to MaxContextBytes.
		trimmed := bytes.TrimSpace(r.Context)
		if string(trimmed) != "null" && (len(trimmed) == 0 || trimmed[0] != '{') {
			return fieldErr("context", "must be a JSON object")
		}
		if err := ValidateJSON("context", r.Context); err != nil {
			return err
		}
	}
	for name, v := range map[string]string{"initiator": r.Initiator, "source_system": r.SourceSystem,
		"idempotency_key": r.IdempotencyKey, "version": r.Version} {
		if err := ValidateText(name, v, MaxTextFieldLen); err != nil {
			return err
		}
	}
	if err := ValidateText("reason", r.Reason, MaxReasonLen); err != nil {
		return err
	}
	if len(r.Tags) > MaxTags {
		return fieldErr("tags", "has %d tags; the limit is %d", len(r.Tags), MaxTags)
	}
	for i, tag := range r.Tags {
		if tag == "" || len(tag) > MaxTagLen {
			return fieldErr(fmt.Sprintf("tags[%d]", i), "must be 1 to %d characters", MaxTagLen)
		}
		if err := pgtext.CheckText(tag); err != nil {
			return fieldErr(fmt.Sprintf("tags[%d]", i), "%v", err)
		}
	}
	if r.Priority < -MaxPriority || r.Priority > MaxPriority {
		return fieldErr("priority", "must be between %d and %d", -MaxPriority, MaxPriority)
	}
	return nil
}

// identityHash is what makes a submission unique. With an idempotency key,
// the key (scoped to the template) is the identity; without one every
// submission is a new task.
func (r *TaskRequest) identityHash() string {
	if r.IdempotencyKey == "" {
		return "uuid:" + uuid.NewString()
	}
	h := sha256.Sum256([]byte("key\x00" + r.Namespace + "\x00" + r.Name + "\x00" + r.IdempotencyKey))
	return hex.EncodeToString(h[:])
}

// DiffersFrom names the first field in which r asks for something other
// than task t, the task its idempotency key created first ("" when r is a
// repeat of it). The context is always compared, as JSON values (key order,
// spacing and the spelling of a number do not matter, its value does, to
// the last digit; none means {}); the other fields only when r gives them
// (r.Given, else a non-zero value), so a retry that sends less than the
// first request still matches.
func (r *TaskRequest) DiffersFrom(t store.Task) string {
	reqCtx := r.Context
	if len(reqCtx) == 0 || strings.TrimSpace(string(reqCtx)) == "null" {
		reqCtx = json.RawMessage(`{}`)
	}
	if !sameJSON(reqCtx, t.Context) {
		return "context"
	}
	given := func(name string, nonZero bool) bool { return nonZero || r.Given[name] }
	switch {
	case r.Version != "" && r.Version != t.Version:
		return "version"
	case given("tags", len(r.Tags) > 0) && !slices.Equal(r.Tags, t.Tags) && len(r.Tags)+len(t.Tags) > 0:
		return "tags"
	case given("priority", r.Priority != 0) && r.Priority != t.Priority:
		return "priority"
	case r.Initiator != "" && r.Initiator != t.Initiator:
		return "initiator"
	case r.SourceSystem != "" && r.SourceSystem != t.SourceSystem:
		return "source_system"
	case r.Reason != "" && r.Reason != t.Reason:
		return "reason"
	case r.CorrelationID != nil && *r.CorrelationID != t.CorrelationID:
		return "correlation_id"
	case r.ParentCorrelationID != nil && (t.ParentCorrelationID == nil || *r.ParentCorrelationID != *t.ParentCorrelationID):
		return "parent_correlation_id"
	}
	return ""
}

// sameJSON reports whether the JSON texts a and b hold the same value:
// objects with the same members, arrays with the same elements in order,
// numbers of the same value however written (1e2 and 100; not 1 and 1.0001,
// nor two integers beyond float64's precision that differ).
func sameJSON(a, b []byte) bool {
	va, ok := decodeNumbers(a)
	if !ok {
		return false
	}
	vb, ok := decodeNumbers(b)
	return ok && sameValue(va, vb)
}

func decodeNumbers(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	return v, dec.Decode(&v) == nil
}

func sameValue(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		p, okP := pgtext.NumberKey(string(x))
		q, okQ := pgtext.NumberKey(string(y))
		return okP && okQ && p == q
	default:
		return a == b
	}
}

// CreateTask validates and persists a task request, then initializes the task
// and dispatches its first steps, all in one transaction. A request whose
// idempotency key was seen before returns the existing task and created=false.
func (e *Engine) CreateTask(ctx context.Context, req TaskRequest) (store.Task, bool, error) {
	t, _, created, err := e.createTask(ctx, req, nil)
	return t, created, err
}

// CreateTaskWithSteps is CreateTask that also returns the created task's
// steps as its transaction left them (the first ones enqueued, the others
// pending), so that a caller showing them need not read them back. A
// request whose idempotency key was seen before returns no steps.
func (e *Engine) CreateTaskWithSteps(ctx context.Context, req TaskRequest) (store.Task, []store.Step, bool, error) {
	return e.createTask(ctx, req, nil)
}

// CreateResult is the outcome of one request of CreateTasks: the task and
// whether this request created it (false: its idempotency key was seen
// before, and Task is that task), or the request's error.
type CreateResult struct {
	Task    store.Task
	Created bool
	Err     error
}

// CreateTasks is CreateTask for several requests at once (the API's batch
// submission). Each request is validated alone, so a bad one fails alone
// with its own error; the valid ones are queued together, in order, and
// created in shared transactions of up to maxIntakeBatch tasks, with any
// submissions arriving meanwhile. Two requests with the same idempotency key
// create one task: the later one's result is that task with Created false.
// The results are in the order of reqs.
func (e *Engine) CreateTasks(ctx context.Context, reqs []TaskRequest) []CreateResult {
	out := make([]CreateResult, len(reqs))
	batch := make([]*createReq, 0, len(reqs))
	at := make([]int, 0, len(reqs))
	for i, req := range reqs {
		nt, key, err := e.prepare(ctx, req)
		if err != nil {
			out[i].Err = err
			continue
		}
		batch = append(batch, &createReq{nt: nt, key: key})
		at = append(at, i)
	}
	if len(batch) == 0 {
		return out
	}
	for k, res := range e.intake.doMany(ctx, e, batch) {
		out[at[k]] = CreateResult{Task: res.task, Created: res.created, Err: res.err}
	}
	return out
}

// createTask is CreateTask; when msgID is set, the request came from the
// task request queue and its message is deleted in the same transaction.
func (e *Engine) createTask(ctx context.Context, req TaskRequest, msgID *int64) (store.Task, []store.Step, bool, error) {
	nt, key, err := e.prepare(ctx, req)
	if err != nil {
		return store.Task{}, nil, false, err
	}
	return e.createPrepared(ctx, nt, key, msgID)
}

// createPrepared is createTask for a request prepare has turned into rows.
func (e *Engine) createPrepared(ctx context.Context, nt store.NewTask, key string, msgID *int64) (store.Task, []store.Step, bool, error) {
	if msgID == nil {
		// API submissions that arrive together share a transaction.
		res := e.intake.do(ctx, e, &createReq{nt: nt, key: key})
		return res.task, res.steps, res.created, res.err
	}
	var task store.Task
	var steps []store.Step
	var created, skipped bool
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		var err error
		skipped = false
		deleted, err := e.store.MessageDeleteTx(ctx, tx, queue.TaskRequestsQueue, *msgID)
		if err != nil {
			return err
		}
		if !deleted {
			// Another replica read the request after our visibility
			// timeout ran out and has handled it: creating the task
			// here too would run it twice.
			skipped = true
			return nil
		}
		task, steps, created, err = e.insertAndStart(ctx, tx, j, nt)
		return err
	})
	if err != nil {
		return store.Task{}, nil, false, fmt.Errorf("create task %s: %w", key, err)
	}
	if skipped {
		return store.Task{}, nil, false, nil
	}
	return task, steps, created, nil
}

// queuedCreate is a request read from the task request queue, prepared,
// and its outcome.
type queuedCreate struct {
	msgID int64
	nt    store.NewTask
	key   string
	res   createRes
	// skipped: the message was gone when the transaction deleted it (another
	// replica read it after its visibility timeout and created the task).
	skipped bool
}

// createQueued creates the tasks of queued requests in one transaction that
// also deletes their messages, so that a message is deleted exactly when its
// task is created; a message already gone is skipped. If that transaction
// fails, each request is created in a transaction of its own, so one bad
// request fails alone.
func (e *Engine) createQueued(ctx context.Context, items []*queuedCreate) {
	if len(items) == 0 {
		return
	}
	byMsg := make(map[int64]*queuedCreate, len(items))
	ids := make([]int64, len(items))
	for i, it := range items {
		byMsg[it.msgID] = it
		ids[i] = it.msgID
	}
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		for _, it := range items {
			it.res, it.skipped = createRes{}, true
		}
		deleted, err := e.store.MessagesDeleteNowTx(ctx, tx, queue.TaskRequestsQueue, ids)
		if err != nil {
			return err
		}
		hashes := make([]string, 0, len(deleted))
		for _, id := range deleted {
			if it := byMsg[id]; it != nil {
				it.skipped = false
				hashes = append(hashes, it.nt.IdentityHash)
			}
		}
		// Every request's duplicate check in one statement.
		if err := e.store.TaskIdentitiesTx(ctx, tx, hashes); err != nil {
			return err
		}
		for _, it := range items {
			if it.skipped {
				continue
			}
			task, steps, created, err := e.insertAndStart(ctx, tx, j, it.nt)
			if err != nil {
				return err
			}
			it.res = createRes{task: task, steps: steps, created: created}
		}
		return nil
	})
	if err == nil {
		return
	}
	if len(items) == 1 {
		it := items[0]
		it.res, it.skipped = createRes{err: fmt.Errorf("create task %s: %w", it.key, err)}, false
		return
	}
	for _, it := range items {
		it.res, it.skipped = createRes{}, false
		task, steps, created, err := e.createPrepared(ctx, it.nt, it.key, &it.msgID)
		it.res = createRes{task: task, steps: steps, created: created, err: err}
		it.skipped = err == nil && task.UUID == uuid.Nil
	}
}

// prepare validates a request against its template and builds the rows of
// the task; key names the template version.
func (e *Engine) prepare(ctx context.Context, req TaskRequest) (store.NewTask, string, error) {
	if err := req.Validate(); err != nil {
		return store.NewTask{}, "", err
	}
	rec, err := e.store.TemplateGet(ctx, req.Namespace, req.Name, req.Version)
	if errors.Is(err, store.ErrNotFound) {
		ok, nerr := e.store.NamespaceExists(ctx, req.Namespace)
		if nerr == nil && !ok {
			return store.NewTask{}, "", fmt.Errorf("%w: namespace %q has no registered templates", ErrUnknownTarget, req.Namespace)
		}
		key := req.Namespace + "/" + req.Name
		if req.Version != "" {
			key += "@" + req.Version
		}
		return store.NewTask{}, "", fmt.Errorf("%w: no template %s is registered", ErrUnknownTarget, key)
	}
	if err != nil {
		return store.NewTask{}, "", err
	}
	tpl := rec.Template
	ctxJSON := req.Context
	if len(ctxJSON) == 0 || string(bytes.TrimSpace(ctxJSON)) == "null" {
		ctxJSON = json.RawMessage(`{}`)
	}
	// Validate has checked that the context is a JSON object that jsonb
	// can store; a template's schema is all that is left to check (a second
	// pass over the context otherwise, for every task).
	if len(tpl.ContextSchema) > 0 {
		if err := tpl.ValidateContext(ctxJSON); err != nil {
			return store.NewTask{}, "", &FieldError{Field: "context", Message: err.Error()}
		}
	}
	e.mu.Lock()
	e.templates[rec.ID] = tpl
	e.mu.Unlock()

	nt := store.NewTask{
		UUID: uuid.Must(uuid.NewV7()), TemplateID: rec.ID,
		Namespace: tpl.Namespace, Name: tpl.Name, Version: tpl.Version,
		Context: ctxJSON, Tags: req.Tags, Priority: req.Priority,
		Initiator: orDefault(req.Initiator, defaultInitiator), SourceSystem: orDefault(req.SourceSystem, defaultSourceName),
		Reason: req.Reason, ParentCorrelationID: req.ParentCorrelationID,
		IdentityHash: req.identityHash(), TraceParent: e.publisher.NewTraceParent(),
		StaleAfterSeconds: tpl.StaleAfterSeconds,
	}
	if req.CorrelationID != nil {
		nt.CorrelationID = *req.CorrelationID
	} else {
		nt.CorrelationID = uuid.Must(uuid.NewV7())
	}
	ids := map[string]uuid.UUID{}
	for i, name := range tpl.TopologicalOrder() {
		st, _ := tpl.StepByName(name)
		id := uuid.Must(uuid.NewV7())
		ids[name] = id
		parents := make([]uuid.UUID, 0, len(st.DependsOn))
		for _, p := range st.DependsOn {
			parents = append(parents, ids[p])
		}
		nt.Steps = append(nt.Steps, store.NewStep{
			UUID: id, Name: st.Name, Handler: st.Handler, Position: i,
			MaxAttempts: st.Retry.MaxAttempts, Retryable: st.Retry.Retryable,
			BackoffBaseMs: st.Retry.BackoffBaseMs, BackoffCapMs: st.Retry.BackoffCapMs,
			TimeoutSeconds: st.TimeoutSeconds, Parents: parents,
		})
	}

	return nt, tpl.Key(), nil
}

// insertAndStart inserts a task in tx and drives it: initialization and the
// dispatch of its first steps. An existing task with the same identity is
// returned with created=false.
func (e *Engine) insertAndStart(ctx context.Context, tx store.Tx, j *telemetry.Journal, nt store.NewTask) (store.Task, []store.Step, bool, error) {
	task, steps, created, err := e.store.TaskCreateTx(ctx, tx, nt)
	if err != nil || !created {
		return task, nil, created, err
	}
	ref := taskRef(&task)
	j.TaskCreated(ref, task.State)
	j.Event(lifecycle.EventWorkflowOrchestrationRequested, ref, nil)
	j.Event(lifecycle.EventTaskStartRequested, ref, nil)
	for i := range steps {
		j.StepTransition(ref, stepRef(&steps[i]), lifecycle.StepCreatedState, lifecycle.StepPending, steps[i].CreatedAt)
	}
	// drive moves the steps it dispatches in steps itself.
	return task, steps, true, e.drive(ctx, tx, j, &task, steps)
}

// createReq is a task creation waiting for a transaction.
type createReq struct {
	nt   store.NewTask
	key  string // template key, for errors
	done chan struct{}
	res  createRes
}

type createRes struct {
	task    store.Task
	steps   []store.Step
	created bool
	err     error
}

// intakeBatcher groups concurrent task creations into shared transactions
// (group commit): a caller queues its request and either finds it done by
// another caller's transaction or runs everything queued so far in one.
// One creation transaction runs at a time; the requests that arrive
// meanwhile wait for it and go together in the next. A second one may start
// beside it only once the first has run for overlapAfter: a slow batch (a
// lock wait, a stalled commit) delays the intake by that much, never stops
// it. There is no wait for a batch to fill: a lone request runs at once. A
// batch that fails is retried one request per transaction, so one bad
// request fails alone.
type intakeBatcher struct {
	mu      sync.Mutex
	pending []*createReq
	// slots bounds the transactions in flight, and the callers waiting to
	// start one, at maxIntakeBatches.
	slots chan struct{}
	// running are the start times of the transactions in flight; finished
	// is closed, and replaced, whenever one of them ends.
	running  []time.Time
	finished chan struct{}
	// overlapAfter is how long a transaction runs alone before a second
	// may start beside it (intakeOverlapAfter; tests change it).
	overlapAfter time.Duration
	// peak is the most transactions that ever ran at once (for tests).
	peak int
}

const (
	// Creation transactions in flight: one, and a second only beside one
	// that has run for intakeOverlapAfter. Under load the requests waiting
	// for the one in flight form batches twice the size they did with two
	// at once, and the creations no longer compete with each other for
	// the same index pages (single, 64 submitters, three alternating
	// pairs: +3 to +36 % tasks/s, Postgres CPU per task -6 to -32 %,
	// commits per task 0.95 -> 0.75; performance.md row 76. Row 62 had
	// gone from four to two).
	maxIntakeBatches   = 2
	intakeOverlapAfter = 50 * time.Millisecond // a batch of 100 takes about 10 ms under load
	maxIntakeBatch     = 100                   // tasks per transaction
	intakeTimeout      = 30 * time.Second
)

func newIntakeBatcher() *intakeBatcher {
	return &intakeBatcher{slots: make(chan struct{}, maxIntakeBatches), finished: make(chan struct{}),
		overlapAfter: intakeOverlapAfter}
}

func (b *intakeBatcher) do(ctx context.Context, e *Engine, r *createReq) createRes {
	return b.doMany(ctx, e, []*createReq{r})[0]
}

// doMany queues rs together, in their order, and returns their results in
// that order once each is done (or ctx is). Queued together, they share
// transactions of up to maxIntakeBatch tasks.
func (b *intakeBatcher) doMany(ctx context.Context, e *Engine, rs []*createReq) []createRes {
	for _, r := range rs {
		r.done = make(chan struct{})
	}
	b.mu.Lock()
	b.pending = append(b.pending, rs...)
	b.mu.Unlock()
	out := make([]createRes, len(rs))
	for i, r := range rs {
		out[i] = b.wait(ctx, e, r)
	}
	return out
}

// wait returns r's result once a transaction has carried it out, running
// the queued requests (r's among them, in order) itself when its turn
// comes (take).
func (b *intakeBatcher) wait(ctx context.Context, e *Engine, r *createReq) createRes {
	for {
		select {
		case <-r.done:
			return r.res
		case <-ctx.Done():
			// The request may still be carried out by a batch in flight, as
			// a request cut off by a timeout may have committed.
			return createRes{err: ctx.Err()}
		case b.slots <- struct{}{}:
			batch, started := b.take(ctx, r)
			if len(batch) == 0 {
				// Another caller's transaction took this request (or ctx
				// ended while waiting for a turn).
				<-b.slots
				select {
				case <-r.done:
					return r.res
				case <-ctx.Done():
					return createRes{err: ctx.Err()}
				}
			}
			// The batch serves other callers too: the first caller's
			// cancellation must not abort it.
			// The transaction is over for the intake once it has committed
			// (or failed), before its spans are built: createBatch calls
			// back once, in every case.
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intakeTimeout)
			e.createBatch(bctx, batch, func() { b.end(started) })
			cancel()
			<-b.slots
		}
	}
}

// take waits, holding a slot, until no transaction is in flight or the one
// in flight has run for overlapAfter, then takes the queued requests (up to
// maxIntakeBatch) for a transaction and says when it started. It returns
// no requests when r was carried out meanwhile, ctx ended, or nothing is
// queued.
func (b *intakeBatcher) take(ctx context.Context, r *createReq) ([]*createReq, time.Time) {
	for {
		b.mu.Lock()
		if len(b.running) > 0 {
			// The slots leave room for one transaction besides this
			// caller's: running holds one start time.
			if d := time.Until(b.running[0].Add(b.overlapAfter)); d > 0 {
				finished := b.finished
				b.mu.Unlock()
				t := time.NewTimer(d)
				select {
				case <-finished:
				case <-t.C:
				case <-r.done:
				case <-ctx.Done():
				}
				t.Stop()
				if isDone(r.done) || ctx.Err() != nil {
					return nil, time.Time{}
				}
				continue
			}
		}
		n := min(len(b.pending), maxIntakeBatch)
		if n == 0 {
			b.mu.Unlock()
			return nil, time.Time{}
		}
		batch := append([]*createReq(nil), b.pending[:n]...)
		b.pending = b.pending[n:]
		started := time.Now()
		b.running = append(b.running, started)
		b.peak = max(b.peak, len(b.running))
		b.mu.Unlock()
		return batch, started
	}
}

// end records the end of the transaction that started at started and wakes
// the caller waiting for its turn.
func (b *intakeBatcher) end(started time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, t := range b.running {
		if t.Equal(started) {
			b.running = append(b.running[:i], b.running[i+1:]...)
			break
		}
	}
	close(b.finished)
	b.finished = make(chan struct{})
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// createBatch creates the tasks of batch in one transaction, or, if that
// fails, each in its own; every request's done channel is closed. settled,
// when not nil, is called exactly once, when the first transaction has
// committed or failed (runSettled calls it whatever happens).
func (e *Engine) createBatch(ctx context.Context, batch []*createReq, settled func()) {
	results := make([]createRes, len(batch))
	hashes := make([]string, len(batch))
	for i, r := range batch {
		hashes[i] = r.nt.IdentityHash
	}
	err := e.runSettled(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		// Every request's duplicate check in one statement.
		if err := e.store.TaskIdentitiesTx(ctx, tx, hashes); err != nil {
			return err
		}
		for i, r := range batch {
			task, steps, created, err := e.insertAndStart(ctx, tx, j, r.nt)
			if err != nil {
				return err
			}
			results[i] = createRes{task: task, steps: steps, created: created}
		}
		return nil
	}, settled)
	if err != nil && len(batch) > 1 {
		for _, r := range batch {
			e.createBatch(ctx, []*createReq{r}, nil)
		}
		return
	}
	for i, r := range batch {
		r.res = results[i]
		if err != nil {
			r.res = createRes{err: fmt.Errorf("create task %s: %w", r.key, err)}
		}
		close(r.done)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
