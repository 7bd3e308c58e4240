package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
)

// Defaults for ServiceConfig.
const (
	DefaultBatchSize         = 50
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultPollInterval      = 1 * time.Second
	DefaultTimerInterval     = 1 * time.Second
	DefaultReapInterval      = 2 * time.Second
	DefaultReapGrace         = time.Minute
	DefaultMaxReadCount      = 10
	DefaultStaleAfter        = time.Hour
	DefaultStaleInterval     = 15 * time.Second
	DefaultRetentionInterval = 10 * time.Minute
)

// ServiceConfig tunes the background loops.
type ServiceConfig struct {
	// BatchSize is how many queue messages one read takes.
	BatchSize int
	// ResultLoops is how many step-result loops may run side by side, each
	// reading and processing its own batches as replicas' loops do (a task
	// whose results two loops hold at once is locked by one and waits for
	// the other). The first loop always runs; the others join only while
	// there is a backlog, that is while reads come back full, and go idle
	// again at the first read that is not, so that at low load one loop
	// takes every notice as it arrives. Default 2.
	ResultLoops int
	// VisibilityTimeout hides a read message from other replicas while it
	// is processed; a replica that dies mid-batch releases its messages
	// after this long.
	VisibilityTimeout time.Duration
	// PollInterval is the fallback polling interval when no notification
	// arrives (notifications wake the loops at once).
	PollInterval time.Duration
	// TimerInterval is how often tasks due for a retry are looked for.
	TimerInterval time.Duration
	// ReapInterval is how often expired step leases are looked for.
	ReapInterval time.Duration
	// ReapGrace is how long, after the timers last failed to reach the
	// database, expired leases are left alone: the workers' heartbeats and
	// submissions failed during the outage too, and a worker whose step
	// ran on gets this long to reconnect, renew its lease or submit its
	// result, instead of losing the attempt. Default 1 minute.
	ReapGrace time.Duration
	// MaxReadCount is how many times a command message may be read before
	// it is treated as poison and archived.
	MaxReadCount int
	// StaleAfter is how long a task may go without progress before it is
	// moved to error with a DLQ entry, unless its template sets
	// stale_after_seconds.
	StaleAfter time.Duration
	// StaleInterval is how often stale tasks are looked for.
	StaleInterval time.Duration
	// Retention is what the retention loop deletes; a policy that deletes
	// nothing runs no loop.
	Retention store.RetentionPolicy
	// RetentionInterval is how often the retention sweep runs.
	RetentionInterval time.Duration
	// Pruned, when set, is told how many rows of a kind a retention batch
	// deleted (store.PruneTasks and the others).
	Pruned func(kind string, n int64)
}

func (c *ServiceConfig) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.ResultLoops <= 0 {
		c.ResultLoops = 2
	}
	if c.VisibilityTimeout <= 0 {
		c.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.TimerInterval <= 0 {
		c.TimerInterval = DefaultTimerInterval
	}
	if c.ReapInterval <= 0 {
		c.ReapInterval = DefaultReapInterval
	}
	if c.ReapGrace <= 0 {
		c.ReapGrace = DefaultReapGrace
	}
	if c.MaxReadCount <= 0 {
		c.MaxReadCount = DefaultMaxReadCount
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.StaleInterval <= 0 {
		c.StaleInterval = DefaultStaleInterval
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = DefaultRetentionInterval
	}
}

// PoisonCounter counts messages archived as poison, by queue.
type PoisonCounter interface {
	PoisonMessage(queueName, reason string)
}

// Orchestrator runs the background loops of one replica: the step result
// processor, the task request consumer, the timers (retry wake-ups, lease
// reaping, stale tasks) and, when a retention policy is set, the retention
// sweep.
type Orchestrator struct {
	engine   *Engine
	cfg      ServiceConfig
	logger   *slog.Logger
	listener *queue.Listener
	poison   PoisonCounter

	resultsWake  <-chan struct{}
	requestsWake <-chan struct{}
	// backlog calls one idle helper result loop in: a loop that read a
	// full batch signals it (ResultLoops > 1 only).
	backlog chan struct{}
	// helperReads counts the reads of the helper result loops (tests).
	helperReads atomic.Int64

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// NewOrchestrator returns the loops; listener may be nil (polling only).
// Subscriptions are made here, so the listener must be started after.
func NewOrchestrator(engine *Engine, cfg ServiceConfig, listener *queue.Listener, poison PoisonCounter, logger *slog.Logger) *Orchestrator {
	cfg.defaults()
	o := &Orchestrator{engine: engine, cfg: cfg, logger: logger, listener: listener, poison: poison,
		backlog: make(chan struct{}, 1)}
	if listener != nil {
		// Only the first result loop waits on the wake-ups; a loop that
		// read a full batch reads again without waiting and calls a helper
		// in (resultsLoop).
		o.resultsWake = listener.Subscribe(queue.StepResultsQueue)
		o.requestsWake = listener.Subscribe(queue.TaskRequestsQueue)
	}
	return o
}

// Start launches the loops; they run until Stop.
func (o *Orchestrator) Start(ctx context.Context) error {
	ctx, o.cancel = context.WithCancel(context.WithoutCancel(ctx))
	type loop struct {
		name string
		fn   func(context.Context)
	}
	var loops []loop
	for i := range o.cfg.ResultLoops {
		name := "step_results"
		if o.cfg.ResultLoops > 1 {
			name = fmt.Sprintf("step_results_%d", i+1)
		}
		helper := i > 0
		loops = append(loops, loop{name, func(ctx context.Context) { o.resultsLoop(ctx, name, helper) }})
	}
	loops = append(loops, loop{"task_requests", o.requestsLoop}, loop{"timers", o.timersLoop})
	if o.cfg.Retention.Enabled() {
		loops = append(loops, loop{"retention", o.retentionLoop})
	}
	for _, l := range loops {
		o.wg.Add(1)
		// Ends when Stop cancels ctx.
		go func() {
			defer o.wg.Done()
			o.logger.Debug("orchestrator loop started", "loop", l.name)
			l.fn(ctx)
		}()
	}
	return nil
}

// Stop cancels the loops and waits for them; a loop finishes the
// transaction it is in (or rolls it back) before it returns. Safe to call
// twice.
func (o *Orchestrator) Stop() {
	o.stopOnce.Do(func() {
		if o.cancel != nil {
			o.cancel()
		}
		o.wg.Wait()
	})
}

// wait sleeps until a wake-up, the fallback poll interval (jittered so that
// replicas do not poll in step), or cancellation.
func (o *Orchestrator) wait(ctx context.Context, wake <-chan struct{}, d time.Duration) {
	d = d/2 + time.Duration(rand.Int64N(int64(d)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-t.C:
	}
}

// errorPause backs off after a failed database call (the database may be
// restarting), logging once per failure streak.
type errorPause struct {
	streak int
}

func (p *errorPause) failed(ctx context.Context, logger *slog.Logger, loop string, err error) {
	p.streak++
	if p.streak == 1 || p.streak%30 == 0 {
		logger.Error("orchestrator loop failed; retrying with backoff", "loop", loop, "error", err, "failures", p.streak)
	}
	d := min(time.Duration(p.streak)*200*time.Millisecond, 5*time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (p *errorPause) ok(logger *slog.Logger, loop string) {
	if p.streak > 0 {
		logger.Info("orchestrator loop recovered", "loop", loop, "after_failures", p.streak)
	}
	p.streak = 0
}

// resultsLoop reads and processes result notices until ctx ends. The first
// loop waits for a notification or the poll interval when a read comes back
// short. A helper (the second and later of ResultLoops) waits instead for a
// backlog signal, sent by any loop whose read came back full, and runs only
// while its own reads are full: under a backlog the loops overlap one
// another's waits on the database, and at low load one loop handles each
// notice as it comes without the others taking turns at it.
func (o *Orchestrator) resultsLoop(ctx context.Context, name string, helper bool) {
	var pause errorPause
	idle := helper
	for ctx.Err() == nil {
		if idle {
			select {
			case <-ctx.Done():
				return
			case <-o.backlog:
			}
			idle = false
		}
		if helper {
			o.helperReads.Add(1)
		}
		n, err := o.ResultsOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			pause.failed(ctx, o.logger, name, err)
			idle = helper
			continue
		}
		pause.ok(o.logger, name)
		if n >= o.cfg.BatchSize {
			o.callHelper()
			continue
		}
		if helper {
			idle = true
			continue
		}
		o.wait(ctx, o.resultsWake, o.cfg.PollInterval)
	}
}

// callHelper signals the backlog to one idle helper loop, if any runs; a
// signal already pending is enough.
func (o *Orchestrator) callHelper() {
	if o.cfg.ResultLoops < 2 {
		return
	}
	select {
	case o.backlog <- struct{}{}:
	default:
	}
}

// ResultsOnce reads and processes one batch of step result notices and
// returns how many messages it read.
func (o *Orchestrator) ResultsOnce(ctx context.Context) (int, error) {
	st := o.engine.Store()
	msgs, err := st.MessagesRead(ctx, queue.StepResultsQueue, o.cfg.VisibilityTimeout, o.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	fresh := msgs[:0:0]
	for _, m := range msgs {
		if m.ReadCount > o.cfg.MaxReadCount {
			reason := fmt.Sprintf("read %d times without being processed", m.ReadCount)
			if n, err := DecodeResultNotice(m.Body); err == nil {
				reason += fmt.Sprintf(" (task %s, step %s, attempt %d; the timers apply the result without its notice once it has waited %s)",
					n.TaskUUID, n.StepUUID, n.Attempt, o.strandedAfter())
			}
			o.archivePoison(ctx, queue.StepResultsQueue, m.ID, reason)
			continue
		}
		fresh = append(fresh, m)
	}
	poison, err := o.engine.ProcessResults(ctx, fresh)
	for _, p := range poison {
		o.archivePoison(ctx, queue.StepResultsQueue, p.MsgID, p.Reason)
	}
	return len(msgs), err
}

func (o *Orchestrator) archivePoison(ctx context.Context, queueName string, id int64, reason string) {
	o.archivePoisonAs(ctx, queueName, id, reason, poisonReasonLabel(reason))
}

// archivePoisonAs is archivePoison with the metric's reason label chosen by
// the caller.
func (o *Orchestrator) archivePoisonAs(ctx context.Context, queueName string, id int64, reason, label string) {
	if _, err := o.engine.Store().MessageArchive(ctx, queueName, id); err != nil {
		o.logger.Error("archive poison message", "queue", queueName, "msg_id", id, "error", err)
		return
	}
	o.logger.Warn("poison message archived", "queue", queueName, "msg_id", id, "reason", reason)
	if o.poison != nil {
		o.poison.PoisonMessage(queueName, label)
	}
}

// poisonReasonLabel maps a free-text reason to a bounded metric label.
func poisonReasonLabel(reason string) string {
	switch {
	case strings.Contains(reason, "read ") && strings.Contains(reason, "times"):
		return "redelivered_too_often"
	case strings.Contains(reason, "unknown task"):
		return "unknown_task"
	case strings.Contains(reason, "unknown step"):
		return "unknown_step"
	case strings.Contains(reason, "not a JSON"), strings.Contains(reason, "lacks"), strings.Contains(reason, "attempt"):
		return "malformed"
	default:
		return "rejected"
	}
}

func (o *Orchestrator) requestsLoop(ctx context.Context) {
	var pause errorPause
	for ctx.Err() == nil {
		n, err := o.RequestsOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			pause.failed(ctx, o.logger, "task_requests", err)
			continue
		}
		pause.ok(o.logger, "task_requests")
		if n < o.cfg.BatchSize {
			o.wait(ctx, o.requestsWake, o.cfg.PollInterval)
		}
	}
}

// DecodeTaskRequest parses a task request strictly: unknown fields are
// refused, so a typo is an error rather than a silently ignored option.
func DecodeTaskRequest(body []byte) (TaskRequest, error) {
	var r TaskRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: task request is not valid: %v", ErrInvalid, err)
	}
	if dec.More() {
		return r, fmt.Errorf("%w: task request has trailing data after the JSON object", ErrInvalid)
	}
	r.Given = GivenFields(body)
	return r, nil
}

// RequestsOnce reads and handles one batch of queued task requests. A
// request that can never succeed (malformed, unknown template, invalid
// context) is archived with a log line; the others create their task in the
// same transaction that deletes their message.
func (o *Orchestrator) RequestsOnce(ctx context.Context) (int, error) {
	st := o.engine.Store()
	msgs, err := st.MessagesRead(ctx, queue.TaskRequestsQueue, o.cfg.VisibilityTimeout, o.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	// Each request is checked alone; the valid ones are created together
	// (createQueued), in one transaction with the deletion of their
	// messages.
	var valid []*queuedCreate
	var failed error
	reqs := map[int64]TaskRequest{}
	for _, m := range msgs {
		if m.ReadCount > o.cfg.MaxReadCount {
			o.archivePoison(ctx, queue.TaskRequestsQueue, m.ID, fmt.Sprintf("read %d times without being processed", m.ReadCount))
			continue
		}
		req, err := DecodeTaskRequest(m.Body)
		label := "malformed"
		if err == nil {
			label = "invalid_request"
			var nt store.NewTask
			var key string
			if nt, key, err = o.engine.prepare(ctx, req); err == nil {
				valid = append(valid, &queuedCreate{msgID: m.ID, nt: nt, key: key})
				reqs[m.ID] = req
				continue
			}
		}
		if err := o.refuseRequest(ctx, m.ID, err, label); err != nil {
			// A transient failure (the database): the requests already
			// checked are still created; the rest come back after their
			// visibility timeout.
			failed = err
			break
		}
	}
	o.engine.createQueued(ctx, valid)
	for _, it := range valid {
		err := it.res.err
		if err == nil && !it.res.created && it.res.task.UUID != uuid.Nil {
			req := reqs[it.msgID]
			if field := req.DiffersFrom(it.res.task); field != "" {
				o.logger.Warn("task request reused an idempotency key with a different request; the first task stands",
					"queue", queue.TaskRequestsQueue, "msg_id", it.msgID, "idempotency_key", req.IdempotencyKey,
					"task_uuid", it.res.task.UUID, "differs_in", field)
			}
		}
		if err := o.refuseRequest(ctx, it.msgID, err, "invalid_request"); err != nil && failed == nil {
			failed = err
		}
	}
	return len(msgs), failed
}

// refuseRequest archives the queued request msgID when err says it can
// never succeed (an unknown template, an invalid request; label names the
// kind), and returns any other error (nil for nil).
func (o *Orchestrator) refuseRequest(ctx context.Context, msgID int64, err error, label string) error {
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownTarget):
		o.archivePoisonAs(ctx, queue.TaskRequestsQueue, msgID, err.Error(), "unknown_template")
	case errors.Is(err, ErrInvalid):
		o.archivePoisonAs(ctx, queue.TaskRequestsQueue, msgID, err.Error(), label)
	default:
		return err
	}
	return nil
}

func (o *Orchestrator) timersLoop(ctx context.Context) {
	var pause errorPause
	var lastReap, lastStale, lastFailure time.Time
	graceLogged := false
	for ctx.Err() == nil {
		reap := time.Since(lastReap) >= o.cfg.ReapInterval
		if reap && !lastFailure.IsZero() && time.Since(lastFailure) < o.cfg.ReapGrace {
			// The database was out of reach: so were the workers'
			// heartbeats and submissions. Reaping now would take their
			// attempts from steps whose handlers ran on.
			if !graceLogged {
				o.logger.Info("reaching the database again; steps whose lease expired meanwhile are reaped after a grace period, so that their workers can renew the lease or submit",
					"grace", o.cfg.ReapGrace.String())
				graceLogged = true
			}
			reap = false
		}
		stale := time.Since(lastStale) >= o.cfg.StaleInterval
		err := o.TimersOnce(ctx, reap)
		if err == nil && stale {
			_, err = o.engine.MarkStaleTasks(ctx, o.cfg.StaleAfter, o.cfg.BatchSize)
		}
		if err == nil && stale {
			_, err = o.engine.RedriveStrandedResults(ctx, o.strandedAfter(), o.cfg.BatchSize)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			pause.failed(ctx, o.logger, "timers", err)
			lastFailure, graceLogged = time.Now(), false
			continue
		}
		if reap {
			lastReap = time.Now()
		}
		if stale {
			lastStale = time.Now()
		}
		pause.ok(o.logger, "timers")
		o.wait(ctx, nil, o.cfg.TimerInterval)
	}
}

// strandedAfter is how long a submitted result may wait for its notice to
// be processed before the timers apply it without the notice: well past
// the visibility timeouts a notice can spend hidden in a crashed replica's
// batch, and past any backlog of a busy queue.
func (o *Orchestrator) strandedAfter() time.Duration {
	return max(4*o.cfg.VisibilityTimeout, 2*time.Minute)
}

// TimersOnce wakes tasks whose retry backoff has elapsed and, when reap is
// set, ends attempts whose lease expired.
func (o *Orchestrator) TimersOnce(ctx context.Context, reap bool) error {
	for {
		n, err := o.engine.WakeDueTasks(ctx, o.cfg.BatchSize)
		if err != nil {
			return fmt.Errorf("wake due tasks: %w", err)
		}
		if n < o.cfg.BatchSize {
			break
		}
	}
	if !reap {
		return nil
	}
	n, err := o.engine.ReapExpiredLeases(ctx, o.cfg.BatchSize)
	if err != nil {
		return err
	}
	if n > 0 {
		o.logger.Info("expired step leases reaped", "steps", n)
	}
	return nil
}
