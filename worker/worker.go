// Package worker is the Go SDK for Tasker workers: register handlers by name,
// and the worker polls its namespaces' queues, claims steps, runs handlers
// with a concurrency limit, a per-step timeout and lease heartbeats, recovers
// panics, and submits results — all through the plain-SQL worker protocol
// that workers in other languages use too (README, "Worker protocol"). Steps
// that finish while a submission is under way are submitted together, in one
// transaction (tasker.step_submit_results, the batch form of
// tasker.step_submit_result).
//
//	w, err := worker.New(pool, worker.Config{Namespaces: []string{"ecommerce"}})
//	w.Handle("ecommerce.validate_cart", func(ctx context.Context, s *worker.Step) (any, error) {
//		var c Cart
//		if err := s.DecodeContext(&c); err != nil {
//			return nil, worker.Permanent(err)
//		}
//		return map[string]any{"total": c.Total()}, nil
//	})
//	err = w.Run(ctx) // until ctx is cancelled; then stops gracefully
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/jsonenc"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/pgtext"
	"github.com/tasker/tasker/internal/pgxcodec"
	"github.com/tasker/tasker/internal/queue"
)

// Defaults for Config.
const (
	DefaultConcurrency   = 10
	DefaultLeaseDuration = 30 * time.Second
	// SubmitRetryBeyondLease is how much longer than its lease a result is
	// retried when the database cannot be reached: longer than the
	// orchestrator's reap grace after an outage (orchestrator.reap_grace,
	// 1 minute by default), during which an expired lease is not reaped and
	// a late submission is still accepted. A result that arrives after its
	// step was reaped is refused and changes nothing.
	SubmitRetryBeyondLease = 90 * time.Second
	DefaultPollInterval    = 1 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// Config configures a Worker.
type Config struct {
	// Namespaces whose worker queues this worker reads. Required.
	Namespaces []string
	// WorkerID identifies this process in step claims; default
	// "<hostname>-<pid>-<random>".
	WorkerID string
	// Concurrency is the most steps run at once (default 10).
	Concurrency int
	// BatchSize is the most messages claimed per round trip; default
	// Concurrency. Few busy workers reading big batches beat many idle ones.
	BatchSize int
	// LeaseDuration is how long a claim lasts without a heartbeat; the
	// worker renews it every third of this. A worker that dies loses its
	// steps to the orchestrator's reaper after at most this long.
	LeaseDuration time.Duration
	// PollInterval is the fallback polling interval (a notification from the
	// queue wakes the worker at once).
	PollInterval time.Duration
	// ShutdownTimeout bounds how long Stop waits for running handlers before
	// cancelling them and releasing their steps.
	ShutdownTimeout time.Duration
	// Logger receives the worker's logs; default slog.Default().
	Logger *slog.Logger
	// DisableNotify turns off LISTEN/NOTIFY wake-ups (polling only).
	DisableNotify bool
	// Observer receives the worker-side lifecycle events; default none.
	Observer Observer
	// AsyncSubmit lets result submissions commit without waiting for their
	// WAL flush, as claims always do. A result then reaches the
	// orchestrator as soon as Postgres has written it, and the disk's flush
	// (and its stalls) leaves every step's latency. The price is paid only
	// if Postgres itself crashes; a worker's or an orchestrator's crash
	// loses nothing either way. Results submitted in the last few hundred
	// milliseconds before such a crash may be forgotten with it, and their
	// steps run again: at once if their claims were forgotten too, else
	// once their leases expire, counting the attempt, as after this
	// worker's own crash. Default false: a submission returns once it is
	// on disk.
	AsyncSubmit bool
}

// Handler runs one step. The returned value (JSON-encoded) is the step's
// result, visible to its dependents. Return Permanent(err) for a failure
// that retrying cannot fix; any other error is retried while the step has
// attempts left. ctx is cancelled at the step's timeout, when the step is
// cancelled or taken away, and when the worker stops.
type Handler func(ctx context.Context, step *Step) (any, error)

// Step is what a handler receives.
type Step struct {
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	Name          string
	Handler       string
	Namespace     string
	Attempt       int
	MaxAttempts   int
	Timeout       time.Duration
	CorrelationID uuid.UUID
	// TraceParent is the W3C traceparent of the task's trace.
	TraceParent string
	// Context is the task's context (the JSON object it was submitted with).
	Context json.RawMessage
	// DependencyResults maps each parent step's name to its result.
	DependencyResults map[string]json.RawMessage
}

// DecodeContext unmarshals the task context into v.
func (s *Step) DecodeContext(v any) error {
	if err := json.Unmarshal(s.Context, v); err != nil {
		return fmt.Errorf("decode task context: %w", err)
	}
	return nil
}

// DependencyResult unmarshals the result of parent step name into v.
func (s *Step) DependencyResult(name string, v any) error {
	raw, ok := s.DependencyResults[name]
	if !ok {
		return fmt.Errorf("step %s has no dependency named %q", s.Name, name)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode result of %s: %w", name, err)
	}
	return nil
}

// Error is a handler failure with its retry classification.
type Error struct {
	Err       error
	Retryable bool
	Kind      string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying: the step fails at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Retryable: false, Kind: "permanent"}
}

// Retryable marks err explicitly as retryable (the default for any error).
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Retryable: true, Kind: "retryable"}
}

// Worker runs handlers for steps of its namespaces.
type Worker struct {
	pool   *pgxpool.Pool
	cfg    Config
	logger *slog.Logger
	obs    Observer
	// publishesEvents: obs publishes the worker-side events itself, and
	// the result notices say so (lifecycle.WorkerEventsHeader).
	publishesEvents bool
	mu              sync.RWMutex
	handlers        map[string]Handler

	listener *queue.Listener
	wakes    map[string]<-chan struct{}

	slots     chan struct{}
	readCtx   context.Context
	stopRead  context.CancelFunc
	hardCtx   context.Context
	hardStop  context.CancelFunc
	readers   sync.WaitGroup
	inflight  sync.WaitGroup
	started   bool
	stopOnce  sync.Once
	unknownMu sync.Mutex
	unknown   map[string]time.Time

	// running counts the started steps whose handler has not returned
	// yet, finishing those whose handler has returned and whose slot is
	// not free yet (their result is being submitted): see submitLoop and
	// readLoop.
	running   atomic.Int64
	finishing atomic.Int64

	// Finished steps wait here for the submitter (see submitLoop).
	submits       chan *submission
	submitterDone chan struct{}
	// batchUnsupported is set when the database lacks
	// tasker.step_submit_results (a schema older than this SDK) or denies
	// it: results then go one by one through tasker.step_submit_result.
	batchUnsupported atomic.Bool
}

// ConfigurePool prepares a pool configuration for a worker: its connections
// send and receive uuids in binary form (pgx otherwise encodes
// github.com/google/uuid values as text through their driver.Valuer, a
// measurable share of a busy worker's CPU) and write the protocol's array
// parameters without boxing each element, and json and jsonb values read
// into a json.RawMessage are copied rather than parsed again. Call it before
// pgxpool.NewWithConfig; an AfterConnect hook already set still runs.
func ConfigurePool(cfg *pgxpool.Config) { pgxcodec.ConfigurePool(cfg) }

// New returns a worker using pool; register handlers, then Start or Run.
func New(pool *pgxpool.Pool, cfg Config) (*Worker, error) {
	if len(cfg.Namespaces) == 0 {
		return nil, errors.New("worker: Config.Namespaces is empty")
	}
	for _, ns := range cfg.Namespaces {
		if err := queue.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.BatchSize <= 0 || cfg.BatchSize > cfg.Concurrency {
		cfg.BatchSize = cfg.Concurrency
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.LeaseDuration < 3*time.Second {
		return nil, fmt.Errorf("worker: LeaseDuration %s is below the 3s minimum (leases are renewed every third of it)", cfg.LeaseDuration)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	obs := cfg.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	pub, _ := obs.(EventPublisher)
	return &Worker{pool: pool, cfg: cfg, logger: cfg.Logger.With("worker_id", cfg.WorkerID), obs: obs,
		publishesEvents: pub != nil && pub.PublishesWorkerEvents(),
		handlers:        map[string]Handler{}, unknown: map[string]time.Time{}}, nil
}

// ID is the worker id used in claims.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// Handle registers h for steps whose template names handler `name`; a nil
// h removes name.
func (w *Worker) Handle(name string, h Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h == nil {
		delete(w.handlers, name)
		return
	}
	w.handlers[name] = h
}

func (w *Worker) handler(name string) (Handler, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	h, ok := w.handlers[name]
	return h, ok
}

// Run starts the worker and blocks until ctx is cancelled, then stops it
// gracefully.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	w.Stop()
	return nil
}

// Start begins polling in the background. It fails at once when the
// database is unreachable or a namespace has no queue.
func (w *Worker) Start(ctx context.Context) error {
	for _, ns := range w.cfg.Namespaces {
		q, _ := queue.WorkerQueue(ns)
		if _, err := queue.QueueMetrics(ctx, w.pool, q); err != nil {
			return fmt.Errorf("worker: queue %s for namespace %s is not usable (is a template of that namespace registered?): %w", q, ns, err)
		}
	}
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	base := context.WithoutCancel(ctx)
	w.readCtx, w.stopRead = context.WithCancel(base)
	w.hardCtx, w.hardStop = context.WithCancel(base)
	w.wakes = map[string]<-chan struct{}{}
	if !w.cfg.DisableNotify {
		w.listener = queue.NewListener(w.pool, w.logger)
		for _, ns := range w.cfg.Namespaces {
			q, _ := queue.WorkerQueue(ns)
			w.wakes[ns] = w.listener.Subscribe(q)
		}
		if err := w.listener.Start(base); err != nil {
			return err
		}
	}
	w.submits = make(chan *submission, w.cfg.Concurrency)
	w.submitterDone = make(chan struct{})
	// Ends when Stop closes w.submits, after every step has finished.
	go w.submitLoop()
	for _, ns := range w.cfg.Namespaces {
		w.readers.Add(1)
		// Ends when Stop cancels readCtx.
		go func() {
			defer w.readers.Done()
			w.readLoop(w.readCtx, ns)
		}()
	}
	w.started = true
	w.logger.Info("worker started", "namespaces", w.cfg.Namespaces, "concurrency", w.cfg.Concurrency,
		"handlers", w.handlerNames())
	return nil
}

func (w *Worker) handlerNames() []string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]string, 0, len(w.handlers))
	for n := range w.handlers {
		out = append(out, n)
	}
	return out
}

// Stop stops claiming new steps, waits up to ShutdownTimeout for running
// handlers to finish and submit, then cancels the rest and releases their
// steps so the orchestrator ends their attempts promptly: it retries them
// if they are retryable (a step whose handler had not started yet, at
// once whatever its setting) and fails them otherwise. When it returns,
// every finished step's result has been stored, refused, or given up. Safe
// to call twice.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		if !w.started {
			return
		}
		w.stopRead()
		w.readers.Wait()
		done := make(chan struct{})
		// Ends when every in-flight step has finished.
		go func() { w.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(w.cfg.ShutdownTimeout):
			w.logger.Warn("shutdown timeout: cancelling running handlers and releasing their steps")
			w.hardStop()
			<-done
		}
		w.hardStop()
		// Every step waits for its submission before it counts as finished,
		// so nothing is pending now and nobody sends any more.
		close(w.submits)
		<-w.submitterDone
		if w.listener != nil {
			w.listener.Stop()
		}
		w.logger.Info("worker stopped")
	})
}

// readLoop reads step messages for one namespace while there are free slots.
func (w *Worker) readLoop(ctx context.Context, ns string) {
	q, _ := queue.WorkerQueue(ns)
	failures := 0
	backlog := false // the last read came back full
	for ctx.Err() == nil {
		// Take at least one slot before reading, so we never claim a step we
		// cannot start at once.
		select {
		case <-ctx.Done():
			return
		case w.slots <- struct{}{}:
		}
		free := 1 + w.takeFreeSlots(w.cfg.BatchSize-1)
		if backlog && free < w.cfg.BatchSize {
			// Steps are waiting and most slots are busy. The slots of a
			// batch of results come free together as their submission
			// commits, but one goroutine at a time: gather them while they
			// keep coming rather than read and claim a step or two per
			// round trip (each read and claim has a fixed cost). Slots that
			// come free one by one, as long handlers end, are not waited
			// for beyond one short gap. With fewer than half the batch
			// free and results being submitted, wait for that submission
			// (slotSubmitWait at most): reading now would split off a
			// claim of a step or two whose results would be submitted
			// together, and free their slots together, again and again.
			first := slotGatherGap
			if free < (w.cfg.BatchSize+1)/2 && w.finishing.Load() > 0 {
				first = slotSubmitWait
			}
			free += gatherSlots(ctx, w.slots, w.cfg.BatchSize-free, first, slotGatherGap, slotGatherMax)
		}
		n, read, err := w.readOnce(ctx, ns, q, free)
		backlog = err == nil && read == free
		if n < free {
			for i := n; i < free; i++ {
				<-w.slots
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%30 == 0 {
				w.logger.Error("worker read failed; retrying with backoff", "namespace", ns, "error", err, "failures", failures)
			}
			sleepCtx(ctx, min(time.Duration(failures)*200*time.Millisecond, 5*time.Second))
			continue
		}
		if failures > 0 {
			w.logger.Info("worker reads recovered", "namespace", ns, "after_failures", failures)
			failures = 0
		}
		if read < free {
			// The queue had no more visible messages for this worker: wait
			// for a wake-up (one that arrived meanwhile is pending) rather
			// than read again at once, which found nothing almost always
			// and was two reads in three under light load.
			t := time.NewTimer(w.cfg.PollInterval)
			select {
			case <-ctx.Done():
			case <-w.wakes[ns]:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// Slot gathering under a backlog (readLoop): a slot that comes free within
// slotGatherGap of the previous one is taken, for at most slotGatherMax
// after the first. The slots of a batch of results come free within
// microseconds of each other; a long handler's do not, and cost at most one
// gap. The first is waited for up to slotSubmitWait when it is a
// submission's.
const (
	slotGatherGap  = 200 * time.Microsecond
	slotGatherMax  = 2 * time.Millisecond
	slotSubmitWait = 10 * time.Millisecond
)

// takeFreeSlots takes up to n slots that are free now and says how many.
func (w *Worker) takeFreeSlots(n int) int {
	for i := 0; i < n; i++ {
		select {
		case w.slots <- struct{}{}:
		default:
			return i
		}
	}
	return n
}

// gatherSlots takes up to n slots as they come free, the first within
// first, each other within gap of the one before, for at most max after the
// first, and says how many it took.
func gatherSlots(ctx context.Context, slots chan<- struct{}, n int, first, gap, max time.Duration) int {
	var deadline time.Time
	t := time.NewTimer(first)
	defer t.Stop()
	for i := 0; i < n; i++ {
		select {
		case slots <- struct{}{}:
			if i == 0 {
				deadline = time.Now().Add(max)
			}
			left := time.Until(deadline)
			if left <= 0 {
				return i + 1
			}
			t.Reset(min(gap, left))
		case <-t.C:
			return i
		case <-ctx.Done():
			return i
		}
	}
	return n
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// readOnce reads up to n messages, claims the steps they name in one round
// trip (two when the newest of several messages for a step is refused, see
// startClaimed), and starts the claimed ones. It returns how many slots it
// used and how many messages it read.
func (w *Worker) readOnce(ctx context.Context, ns, q string, n int) (used, read int, err error) {
	msgs, err := w.read(ctx, q, n)
	if err != nil {
		return 0, 0, err
	}
	if len(msgs) == 0 {
		return 0, 0, nil
	}
	used, err = w.startClaimed(ctx, ns, q, n, msgs)
	return used, len(msgs), err
}

// startClaimed claims the steps named by msgs, read from namespace ns's
// queue q, and starts the claimed ones. It returns how many of the n slots
// it used.
//
// One claim round trip claims one message per step. Several messages naming
// one step (a duplicate delivery, a stale message of an older attempt, or a
// forged or corrupt one) are never claimed together: step_claim_batch claims
// a step once, at the highest attempt it is asked for, and answers every
// entry for that step with the same outcome, so a worker sending two would
// run the step twice. The newest attempt is claimed first, and what becomes
// of the others depends on its claim's answer (settleDuplicates): a batch
// without duplicates makes one round trip, as one with stale duplicates does.
func (w *Worker) startClaimed(ctx context.Context, ns, q string, n int, msgs []queue.Message) (int, error) {
	var ids []uuid.UUID
	var attempts []int32
	byStep := map[uuid.UUID]queue.Message{}
	attemptOf := map[uuid.UUID]int{}
	// The other messages of steps that several messages name; nil when
	// there are none.
	var others map[uuid.UUID][]stepMessage
	for _, m := range msgs {
		sm, why := decodeStepMessage(m.Body)
		if why != "" {
			w.archivePoison(ctx, q, m.ID, sm.StepUUID, PoisonMalformed, why)
			continue
		}
		if _, ok := w.handler(sm.Handler); !ok {
			w.deferUnknown(ctx, q, m.ID, sm.Handler)
			continue
		}
		if prev, dup := byStep[sm.StepUUID]; dup {
			if others == nil {
				others = map[uuid.UUID][]stepMessage{}
			}
			if sm.Attempt > attemptOf[sm.StepUUID] {
				others[sm.StepUUID] = append(others[sm.StepUUID], stepMessage{prev, attemptOf[sm.StepUUID]})
				byStep[sm.StepUUID], attemptOf[sm.StepUUID] = m, sm.Attempt
			} else {
				others[sm.StepUUID] = append(others[sm.StepUUID], stepMessage{m, sm.Attempt})
			}
			continue
		}
		ids = append(ids, sm.StepUUID)
		byStep[sm.StepUUID], attemptOf[sm.StepUUID] = m, sm.Attempt
	}
	for _, id := range ids {
		attempts = append(attempts, int32(attemptOf[id])) // in range: see decodeStepMessage
	}
	used := 0
	var err error
	// At most two rounds: the second claims, for a step whose newest
	// attempt was refused, the one attempt its claim answer says the step
	// can still be claimed at (see settleDuplicates).
	for len(ids) > 0 {
		claims, cerr := w.claimRound(ctx, q, ids, attempts, byStep)
		if cerr != nil {
			// The steps claimed before the error run; the messages not
			// claimed, and their steps' other messages, come back after
			// their visibility timeout.
			err = cerr
		}
		used += w.startClaims(ctx, ns, q, n-used, claims, byStep)
		if cerr != nil || others == nil {
			break
		}
		ids, attempts = w.settleDuplicates(ctx, q, claims, byStep, attemptOf, others)
	}
	return used, err
}

// stepMessage is a decoded step message's attempt with its message.
type stepMessage struct {
	msg     queue.Message
	attempt int
}

// settleDuplicates decides, from a claim round's answers, what becomes of
// the other messages (others) of the steps claimed through byStep, and
// returns the steps to claim again with the attempt to claim each at. A
// message is deleted only when its claim could not succeed:
//
//   - the step was claimed: it is now at the attempt claimed, the newest of
//     the batch, so every other message is stale;
//   - its claim was refused: attempt numbers are the step's attempts plus
//     one when a message is sent and never decrease, so of the other
//     messages only one for the attempt after those the claim answer
//     reports can be genuine and claimable (the step has moved past the
//     older ones, and the newer ones were never sent for it). That one is
//     claimed in the next round, unless it is for the attempt just refused;
//     the rest are deleted, as the refused message is. This is how a real
//     message survives a forged one for a higher attempt of its step.
//
// Messages for a step that does not exist are archived as poison, as the
// claimed one is. A step the round has no answer for (its claim failed)
// keeps its messages, which come back after their visibility timeout.
// byStep, attemptOf and others are updated for the next round.
func (w *Worker) settleDuplicates(ctx context.Context, q string, claims []claim, byStep map[uuid.UUID]queue.Message,
	attemptOf map[uuid.UUID]int, others map[uuid.UUID][]stepMessage) ([]uuid.UUID, []int32) {
	var ids []uuid.UUID
	var attempts []int32
	var stale []int64
	for _, c := range claims {
		rest, ok := others[c.StepUUID]
		if !ok {
			continue
		}
		delete(others, c.StepUUID)
		switch {
		case c.Claimed:
			for _, o := range rest {
				stale = append(stale, o.msg.ID)
			}
		case c.TaskUUID == uuid.Nil:
			for _, o := range rest {
				w.archivePoison(ctx, q, o.msg.ID, c.StepUUID, PoisonUnknownStep, c.Reason)
			}
		default:
			next := c.Attempt + 1
			if next == attemptOf[c.StepUUID] {
				// Refused at the step's next attempt: the step is not
				// claimable now (not enqueued), at any attempt.
				next = 0
			}
			var keep []stepMessage
			for _, o := range rest {
				if o.attempt == next {
					keep = append(keep, o)
				} else {
					stale = append(stale, o.msg.ID)
				}
			}
			if len(keep) == 0 {
				continue
			}
			// Never normal: no message for a later attempt than the step's
			// next one is ever sent.
			w.logger.Warn("step message for an attempt its step is not at refused; claiming the step through another message of its batch",
				"queue", q, "step_uuid", c.StepUUID, "refused_msg_id", byStep[c.StepUUID].ID, "refused_attempt", attemptOf[c.StepUUID],
				"msg_id", keep[0].msg.ID, "attempt", next, "reason", c.Reason)
			// Copies of the message claimed next stay for the round after,
			// which settles them by that claim's answer.
			byStep[c.StepUUID], attemptOf[c.StepUUID] = keep[0].msg, next
			if len(keep) > 1 {
				others[c.StepUUID] = keep[1:]
			}
			ids = append(ids, c.StepUUID)
			attempts = append(attempts, int32(next)) // an attempt of a decoded message
		}
	}
	if len(stale) > 0 {
		if _, err := queue.DeleteBatch(ctx, w.pool, q, stale); err != nil {
			w.logger.Warn("delete duplicate step messages", "error", err)
		}
	}
	return ids, attempts
}

// claimRound claims the steps ids at attempts, one message of byStep each,
// in one round trip. When that fails in a way the same call would fail
// again, it claims them one by one (claimEach). It returns the claims made,
// and an error when a claim failed in a way that may pass.
func (w *Worker) claimRound(ctx context.Context, q string, ids []uuid.UUID, attempts []int32, byStep map[uuid.UUID]queue.Message) ([]claim, error) {
	claims, err := w.claim(ctx, ids, attempts)
	switch {
	case err != nil && permanent(err):
		// One message can make the whole batch fail (a step of a namespace
		// this login does not serve: 42501); the others must not wait for
		// it forever.
		return w.claimEach(ctx, q, ids, attempts, byStep, err)
	case err != nil:
		return nil, fmt.Errorf("claim steps: %w", err)
	}
	return claims, nil
}

// startClaims starts the steps claimed through byStep's messages, using at
// most n slots, and disposes of the messages whose claim failed. It returns
// how many slots it used.
func (w *Worker) startClaims(ctx context.Context, ns, q string, n int, claims []claim, byStep map[uuid.UUID]queue.Message) int {
	used := 0
	for _, c := range claims {
		m := byStep[c.StepUUID]
		if !c.Claimed && c.TaskUUID == uuid.Nil {
			// No such step: there never was, or its task has been deleted
			// (retention). No claim of this message can ever succeed.
			w.archivePoison(ctx, q, m.ID, c.StepUUID, PoisonUnknownStep, c.Reason)
			continue
		}
		if !c.Claimed {
			w.logger.Debug("step not claimable; message dropped", "step_uuid", c.StepUUID, "reason", c.Reason)
			if _, err := queue.Delete(ctx, w.pool, q, m.ID); err != nil {
				w.logger.Warn("delete unclaimable step message", "msg_id", m.ID, "error", err)
			}
			continue
		}
		// The claim checks the step and attempt the message names, not the
		// rest of it: the step's own namespace and handler are the claim's.
		h, ok := w.handler(c.Handler)
		if c.Namespace != ns || !ok {
			why := fmt.Sprintf("the step's handler %s is not registered in this worker", c.Handler)
			if c.Namespace != ns {
				why = fmt.Sprintf("the step is of namespace %s, not %s", c.Namespace, ns)
			}
			w.giveBack(c, why)
			w.archivePoison(ctx, q, m.ID, c.StepUUID, PoisonMisrouted, why)
			continue
		}
		if used >= n {
			// Cannot happen (one claim per message), but never overrun slots.
			break
		}
		used++
		w.inflight.Add(1)
		w.running.Add(1)
		// Ends when the handler has returned and its result is submitted
		// (or the worker hard-stops and releases the step).
		go func() {
			defer w.inflight.Done()
			defer func() { <-w.slots }()
			w.execute(c, h, m.ID, m.Headers)
		}()
	}
	return used
}

// decodeStepMessage decodes a step message and says what is wrong with one
// that can never be claimed ("" when nothing is). An attempt is an integer
// in Postgres: a larger one would wrap around when sent to the claim.
func decodeStepMessage(body []byte) (queue.StepMessage, string) {
	sm, err := queue.DecodeStepMessage(body)
	switch {
	case err != nil:
		return sm, fmt.Sprintf("not a step message: %v", err)
	case sm.StepUUID == uuid.Nil:
		return sm, "no step_uuid"
	case sm.Attempt == 0:
		return sm, "no attempt (attempts count from 1)"
	case sm.Attempt < 1 || sm.Attempt > math.MaxInt32:
		return sm, fmt.Sprintf("attempt %d is out of range (1 to %d)", sm.Attempt, math.MaxInt32)
	}
	return sm, ""
}

// claimEach claims the steps one at a time, after their batch claim failed
// with an error that the same call would raise again (batchErr), so that
// the message behind it does not keep the others from being claimed. A
// message whose own claim fails that way can never be claimed and is
// archived. A claim of nothing is made first: when that fails too, the
// error is the worker's (the function missing or not granted to this
// login), not any message's, and nothing is archived. It returns the
// claims made, and an error when a claim failed in a way that may pass
// (the messages not claimed by then come back after their visibility
// timeout).
func (w *Worker) claimEach(ctx context.Context, q string, ids []uuid.UUID, attempts []int32, byStep map[uuid.UUID]queue.Message, batchErr error) ([]claim, error) {
	if _, err := w.claim(ctx, []uuid.UUID{}, []int32{}); err != nil {
		return nil, fmt.Errorf("claim steps: %w", batchErr)
	}
	var out []claim
	for i, id := range ids {
		c, err := w.claim(ctx, ids[i:i+1], attempts[i:i+1])
		switch {
		case err == nil:
			out = append(out, c...)
		case permanent(err):
			w.archivePoison(ctx, q, byStep[id].ID, id, PoisonRejected, fmt.Sprintf("its claim fails: %v", err))
		default:
			return out, fmt.Errorf("claim step %s: %w", id, err)
		}
	}
	return out, nil
}

// archivePoison archives a step message that can never be processed, with
// a log line naming the message, its step when known, and why, and counts
// it by reason (one of the Poison* labels) when the observer counts poison.
func (w *Worker) archivePoison(ctx context.Context, q string, msgID int64, step uuid.UUID, reason, why string) {
	log := w.logger.With("queue", q, "msg_id", msgID)
	if step != uuid.Nil {
		log = log.With("step_uuid", step)
	}
	if _, err := queue.Archive(ctx, w.pool, q, msgID); err != nil {
		log.Error("archive poison step message", "reason", why, "error", err)
		return
	}
	log.Warn("poison step message archived", "reason", why)
	if p, ok := w.obs.(PoisonObserver); ok {
		p.PoisonMessage(q, reason)
	}
}

// read takes up to n messages for the handlers this worker has
// (tasker.worker_read's statement: pgmq.read filtered by handler), so that
// messages for other workers' handlers stay visible to them. The read
// commits without waiting for its WAL flush (queue.WorkerReadAsync): it
// only hides the messages for the lease, and the claim that follows is
// durable.
func (w *Worker) read(ctx context.Context, q string, n int) ([]queue.Message, error) {
	msgs, err := queue.WorkerReadAsync(ctx, w.pool, q, w.cfg.LeaseDuration, n, w.handlerNames())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", q, err)
	}
	return msgs, nil
}

// deferUnknown pushes back a message for a handler this worker lacks, so a
// worker that has it can take it, and logs it at most once a minute.
func (w *Worker) deferUnknown(ctx context.Context, q string, msgID int64, handler string) {
	if _, err := queue.SetVT(ctx, w.pool, q, msgID, 5*time.Second); err != nil {
		w.logger.Warn("defer message for unknown handler", "msg_id", msgID, "error", err)
	}
	w.unknownMu.Lock()
	defer w.unknownMu.Unlock()
	if time.Since(w.unknown[handler]) > time.Minute {
		w.unknown[handler] = time.Now()
		w.logger.Warn("no handler registered for step messages in this namespace; left for other workers", "queue", q, "handler", handler)
	}
}

// claim is a decoded row of tasker.step_claim_batch.
type claim struct {
	Claimed       bool
	Reason        string
	StepUUID      uuid.UUID
	TaskUUID      uuid.UUID
	Namespace     string
	StepName      string
	Handler       string
	Attempt       int
	MaxAttempts   int
	Timeout       int
	CorrelationID uuid.UUID
	TraceParent   string
	Context       json.RawMessage
	Deps          map[string]json.RawMessage
}

// claimSQL claims a batch (tasker.step_claim_batch) after making its
// implicit transaction commit asynchronously (see claim). Before migration
// 00025 a step that does not exist was answered claimed = NULL when another
// step of the batch was claimed: scanning that row failed after the claims
// had committed, and the claimed steps were never run.
const claimSQL = `
		SELECT coalesce(claimed, false), reason, step_uuid, task_uuid, coalesce(namespace, ''), coalesce(step_name, ''),
		       coalesce(handler, ''), coalesce(attempt, 0), coalesce(max_attempts, 0), coalesce(timeout_seconds, 0),
		       correlation_id, coalesce(traceparent, ''), task_context, dependency_results
		  FROM tasker.step_claim_batch($1::uuid[], $2::int[], $3::text, $4::int)`

// asyncCommitSQL, first in a pipeline, makes the implicit transaction it
// opens commit without waiting for its WAL flush.
const asyncCommitSQL = `SELECT set_config('synchronous_commit', 'off', true)`

// claim claims the steps in one round trip: a pipeline of
// set_config('synchronous_commit', 'off') and the claim, one implicit
// transaction that does not wait for its WAL flush. A claim forgotten by a
// Postgres crash (its WAL not yet on disk; Postgres writes it within a few
// hundred milliseconds, and any later durable commit, such as this
// worker's submission, flushes it first) leaves the step enqueued: its
// message comes back, another claim runs it again, and the step's
// compare-and-swap accepts one run's result only, as after a lease expiry.
// Nothing is applied twice; results (unless Config.AsyncSubmit) and the
// orchestrator's transactions stay durable.
func (w *Worker) claim(ctx context.Context, ids []uuid.UUID, attempts []int32) ([]claim, error) {
	b := &pgx.Batch{}
	b.Queue(asyncCommitSQL)
	b.Queue(claimSQL, ids, attempts, w.cfg.WorkerID, int32(w.cfg.LeaseDuration/time.Second))
	res := w.pool.SendBatch(ctx, b)
	out, err := readClaims(res)
	// Close reports the end of the implicit transaction: a claim whose
	// commit failed is no claim.
	if cerr := res.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readClaims decodes the pipeline's claim rows.
func readClaims(res pgx.BatchResults) ([]claim, error) {
	if _, err := res.Exec(); err != nil {
		return nil, err
	}
	rows, err := res.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []claim
	for rows.Next() {
		var c claim
		var taskUUID, corr *uuid.UUID
		var deps []byte
		if err := rows.Scan(&c.Claimed, &c.Reason, &c.StepUUID, &taskUUID, &c.Namespace, &c.StepName, &c.Handler,
			// The context as *[]byte: pgx plans a json.RawMessage as
			// json.Unmarshal, two passes over every claim's context
			// (internal/pgxcodec/json.go), on pools ConfigurePool did not
			// prepare too.
			&c.Attempt, &c.MaxAttempts, &c.Timeout, &corr, &c.TraceParent, (*[]byte)(&c.Context), &deps); err != nil {
			return nil, err
		}
		if taskUUID != nil {
			c.TaskUUID = *taskUUID
		}
		if corr != nil {
			c.CorrelationID = *corr
		}
		if len(deps) > 0 {
			// The object Postgres built of the parents' results: split in
			// one pass (internal/jsonenc), json.Unmarshal otherwise.
			if m, ok := jsonenc.RawMembers(deps); ok {
				c.Deps = m
			} else if err := json.Unmarshal(deps, &c.Deps); err != nil {
				return nil, fmt.Errorf("decode dependency results of step %s: %w", c.StepUUID, err)
			}
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// execute runs one claimed step with its handler h: heartbeats while the
// handler runs, then submits the outcome.
func (w *Worker) execute(c claim, h Handler, msgID int64, headers map[string]string) {
	step := &Step{
		TaskUUID: c.TaskUUID, StepUUID: c.StepUUID, Name: c.StepName, Handler: c.Handler,
		Namespace: c.Namespace, Attempt: c.Attempt, MaxAttempts: c.MaxAttempts,
		Timeout: time.Duration(c.Timeout) * time.Second, CorrelationID: c.CorrelationID,
		TraceParent: c.TraceParent, Context: c.Context, DependencyResults: c.Deps,
	}
	if tp := headers["traceparent"]; tp != "" {
		step.TraceParent = tp
	}
	log := stepLogger(w.logger, step)
	ran := false
	defer func() {
		if ran {
			w.finishing.Add(-1)
		} else {
			w.running.Add(-1)
		}
	}()
	ctx, span := w.obs.StepClaimed(w.hardCtx, step)
	if w.hardCtx.Err() != nil {
		// A hard stop came before the handler: give the step back unrun
		// rather than start a handler only to cancel it. Unrun, the step
		// is retried at once even if it is not retryable.
		w.release(step, msgID, false, log)
		span.End(outcomeReleased, 0, nil)
		return
	}
	timeout := step.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Heartbeat until the handler returns. A false heartbeat means the step
	// is no longer ours (cancelled, resolved, reaped): stop the handler.
	lost := make(chan struct{})
	hbDone := make(chan struct{})
	// Ends when the handler returns (hbStop) or the step is lost.
	hbStop := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(step, msgID, hbStop, lost, cancel, log)
	}()

	start := time.Now()
	result, herr := w.invoke(hctx, h, step, span)
	elapsed := time.Since(start)
	ran = true
	w.finishing.Add(1)
	w.running.Add(-1)
	close(hbStop)
	<-hbDone

	select {
	case <-lost:
		log.Warn("step was taken away while running (cancelled, resolved, or lease lost); result discarded")
		span.End(outcomeLost, elapsed, nil)
		return
	default:
	}
	if w.hardCtx.Err() != nil && herr != nil {
		// Hard stop: give the step back rather than report a failure we
		// caused. Its handler ran: a step that is not retryable fails.
		w.release(step, msgID, true, log)
		span.End(outcomeReleased, elapsed, herr)
		return
	}
	if herr == nil && hctx.Err() == context.DeadlineExceeded {
		herr = &Error{Err: fmt.Errorf("step timed out after %s", timeout), Retryable: true, Kind: "timeout"}
	}
	w.submit(step, msgID, result, herr, elapsed, span, log)
}

// invoke runs the handler, converting a panic into a retryable error.
func (w *Worker) invoke(ctx context.Context, h Handler, step *Step, span StepSpan) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Err: fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack()), Retryable: true, Kind: "panic"}
		}
	}()
	hctx := span.BeforeHandle(ctx)
	result, err = h(hctx, step)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Whatever the handler returned, it ran out of time.
		err = &Error{Err: fmt.Errorf("step timed out after %s", step.Timeout), Retryable: true, Kind: "timeout"}
	}
	return result, err
}

func (w *Worker) heartbeat(step *Step, msgID int64, stop <-chan struct{}, lost chan<- struct{}, cancel context.CancelFunc, log *slog.Logger) {
	every := w.cfg.LeaseDuration / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, c := context.WithTimeout(context.Background(), every)
		var ok bool
		err := w.pool.QueryRow(ctx, `SELECT tasker.step_heartbeat($1, $2, $3, $4, $5)`,
			step.StepUUID, step.Attempt, w.cfg.WorkerID, int32(w.cfg.LeaseDuration/time.Second), msgID).Scan(&ok)
		c()
		if err != nil {
			// Keep running: the lease covers a short outage; if it expires
			// the step is retried and our late result is refused.
			log.Warn("heartbeat failed", "error", err)
			continue
		}
		if !ok {
			close(lost)
			cancel()
			return
		}
	}
}

// release gives a claimed step back at shutdown; handlerStarted says
// whether its handler was invoked (the orchestrator retries a step released
// unrun whatever its retryable setting, and one whose handler started only
// if it is retryable).
func (w *Worker) release(step *Step, msgID int64, handlerStarted bool, log *slog.Logger) {
	if _, err := w.stepRelease(step.StepUUID, step.Attempt, &msgID, handlerStarted); err != nil {
		log.Warn("release step at shutdown failed; its lease will expire", "handler_started", handlerStarted, "error", err)
		return
	}
	if handlerStarted {
		log.Info("step released at shutdown; it will be retried if it is retryable")
		return
	}
	log.Info("step released unrun at shutdown; it will be retried")
}

// giveBack releases a step claimed through a message that named it in the
// wrong queue or for a handler this worker lacks, without running it. There
// is no way back to enqueued with the attempt unclaimed: step_release ends
// the lease at once, the orchestrator's reaper retries the step through its
// own namespace's queue with a message naming its own handler, and the
// attempt the reaper counts is given back (max_attempts grows by one), so
// the step has as many attempts left as before. The release says the
// handler did not start, so the step is retried at once even if it is not
// retryable. No msg_id is passed:
// step_release would delete that id from the queue of the step's namespace,
// where it may be another message; the caller archives the message from
// the queue it came from.
func (w *Worker) giveBack(c claim, why string) {
	log := w.logger.With("task_uuid", c.TaskUUID, "step_uuid", c.StepUUID, "step_name", c.StepName,
		"namespace", c.Namespace, "attempt", c.Attempt)
	if _, err := w.stepRelease(c.StepUUID, c.Attempt, nil, false); err != nil {
		log.Warn("release of a step claimed through a misleading message failed; its lease will expire", "reason", why, "error", err)
		return
	}
	log.Info("step claimed through a misleading message released unrun; it will be retried", "reason", why)
}

// stepRelease calls tasker.step_release; msgID may be nil. handlerStarted
// needs migration 00026.
func (w *Worker) stepRelease(step uuid.UUID, attempt int, msgID *int64, handlerStarted bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ok bool
	err := w.pool.QueryRow(ctx, `SELECT tasker.step_release($1, $2, $3, $4, $5)`,
		step, attempt, w.cfg.WorkerID, msgID, handlerStarted).Scan(&ok)
	return ok, err
}

// maxSubmitBatch caps the results stored by one tasker.step_submit_results
// call.
const maxSubmitBatch = 100

// submission is one finished step's outcome on its way to the database.
type submission struct {
	step     *Step
	msgID    int64
	success  bool
	result   []byte // JSON; nil on failure
	errJSON  []byte // JSON; nil on success
	headers  []byte // JSON headers of the result notice
	deadline time.Time
	done     chan submitReply // buffered: the submitter never waits on it
	// sentAt is when the last call carrying this result was sent (set by
	// whoever makes the call, read after done).
	sentAt time.Time
}

// submitReply is what became of a submission.
type submitReply struct {
	accepted bool
	err      error // the result could not be stored
	alone    bool  // the batch was refused as a whole: submit this one by itself
}

// submit posts the outcome of a step and reports it to the step's span and
// the log. The result goes to the submitter, which stores it together with
// the results of every other step that finished meanwhile, in one
// transaction; the step keeps its slot until then, so a worker never holds
// more finished-but-unsubmitted steps than its concurrency. Transient
// database errors are retried for a while: the lease (renewed no more)
// bounds how long a result can wait before the attempt is retried elsewhere,
// plus SubmitRetryBeyondLease: the orchestrator leaves expired leases alone
// for a while after a database outage, so a result that could not be
// submitted during one is still taken after it.
func (w *Worker) submit(step *Step, msgID int64, result any, herr error, elapsed time.Duration, span StepSpan, log *slog.Logger) {
	success := herr == nil
	var resJSON, errJSON []byte
	var err error
	if success {
		resJSON, err = json.Marshal(result)
		switch {
		case err != nil:
			success = false
			herr = Permanent(fmt.Errorf("handler result is not JSON-encodable: %w", err))
		default:
			if perr := pgtext.CheckJSON(resJSON); perr != nil {
				// It could never be stored (a NUL character, a number
				// beyond numeric's range): every attempt would end in a
				// rejected submission and an expired lease.
				success, resJSON = false, nil
				herr = Permanent(fmt.Errorf("handler result %w", perr))
			}
		}
	}
	if !success {
		e := &Error{Err: herr, Retryable: true, Kind: "error"}
		errors.As(herr, &e)
		errJSON, _ = json.Marshal(map[string]any{"message": pgtext.ReplaceNUL(herr.Error()), "retryable": e.Retryable, "kind": pgtext.ReplaceNUL(e.Kind)})
	}
	hdr := map[string]string{"traceparent": span.TraceParent()}
	if w.publishesEvents {
		hdr[lifecycle.WorkerEventsHeader] = lifecycle.WorkerEventsPublished
	}
	headers := jsonenc.StringMap(hdr)
	ctx := span.BeforeSubmit(context.Background())
	s := &submission{step: step, msgID: msgID, success: success, result: resJSON, errJSON: errJSON, headers: headers,
		deadline: time.Now().Add(w.cfg.LeaseDuration + SubmitRetryBeyondLease), done: make(chan submitReply, 1)}
	reply := submitReply{alone: true}
	if !w.batchUnsupported.Load() {
		w.submits <- s
		reply = <-s.done
	}
	if reply.alone {
		reply.accepted, reply.err = w.submitOne(ctx, s)
	}
	if reply.err != nil {
		log.Error("could not submit the step result; the step will be retried after its lease expires", "error", reply.err)
		span.End(outcomeLost, elapsed, reply.err)
		return
	}
	if t, ok := span.(interface{ submittedAt(time.Time) }); ok {
		t.submittedAt(s.sentAt)
	}
	outcome := outcomeSucceeded
	if !success {
		outcome = outcomeFailed
	}
	if !reply.accepted {
		outcome = outcomeRefused
		log.Warn("result refused: the step is no longer this worker's (cancelled or retried elsewhere)")
	} else if success {
		log.Debug("step completed", "duration", elapsed)
	} else {
		log.Info("step failed", "error", herr.Error(), "duration", elapsed)
	}
	span.End(outcome, elapsed, herr)
}

// submitLoop is the submitter: it takes every submission waiting at the
// moment and stores them with one call. Steps that finish while a call is
// in flight go together in the next one; the loop makes the calls itself,
// one at a time, which is what lets results gather while a call is under
// way. A step that finishes while no other handler runs is submitted at
// once. One that finishes while others still run waits for the results
// that follow it closely (within submitGatherGap of each other, for
// submitGatherMax at most): the handlers of one claim start together, and
// without this the first of them to finish went alone in a call of its own.
func (w *Worker) submitLoop() {
	defer close(w.submitterDone)
	batch := make([]*submission, 0, maxSubmitBatch)
	for first := range w.submits {
		var open bool
		batch, open = drainSubmissions(w.submits, append(batch[:0], first))
		if open && w.running.Load() > 0 {
			batch = gatherSubmissions(w.submits, batch, &w.running, submitGatherGap, submitGatherMax)
		}
		w.submitBatch(batch)
	}
}

// Result gathering (submitLoop): a finished step waits for results that
// follow it within submitGatherGap, while handlers are still running, for
// at most submitGatherMax in all.
const (
	submitGatherGap = 200 * time.Microsecond
	submitGatherMax = time.Millisecond
)

// drainSubmissions appends the submissions waiting now, up to
// maxSubmitBatch, and says whether the channel is still open.
func drainSubmissions(submits <-chan *submission, batch []*submission) ([]*submission, bool) {
	for len(batch) < maxSubmitBatch {
		select {
		case s, ok := <-submits:
			if !ok {
				return batch, false
			}
			batch = append(batch, s)
		default:
			return batch, true
		}
	}
	return batch, true
}

// gatherSubmissions appends submissions as they come, up to
// maxSubmitBatch, while each comes within gap of the one before, handlers
// are still running, and max has not passed.
func gatherSubmissions(submits <-chan *submission, batch []*submission, running *atomic.Int64, gap, max time.Duration) []*submission {
	deadline := time.Now().Add(max)
	timer := time.NewTimer(gap)
	defer timer.Stop()
	for len(batch) < maxSubmitBatch {
		select {
		case s, ok := <-submits:
			if !ok {
				return batch
			}
			batch = append(batch, s)
			var open bool
			if batch, open = drainSubmissions(submits, batch); !open {
				return batch
			}
			left := time.Until(deadline)
			if left <= 0 || running.Load() == 0 {
				return batch
			}
			timer.Reset(min(gap, left))
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// submitBatch stores a batch in one transaction and answers each
// submission. Transient errors are retried (a submission whose lease is over
// by then is given up); any other error sends every submission of a batch
// of several back to be stored by itself, so that one bad result cannot keep
// the others from being stored.
func (w *Worker) submitBatch(batch []*submission) {
	if w.batchUnsupported.Load() {
		for _, s := range batch {
			s.done <- submitReply{alone: true}
		}
		return
	}
	for attempt := 1; ; attempt++ {
		accepted, err := w.store(batch)
		if err == nil {
			for i, s := range batch {
				s.done <- submitReply{accepted: accepted[i]}
			}
			return
		}
		if permanent(err) && len(batch) == 1 {
			// Stored by itself already: it would fail the same way again.
			batch[0].done <- submitReply{err: err}
			return
		}
		if permanent(err) {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "42883" || pgErr.Code == "42501") {
				// undefined_function or insufficient_privilege: this
				// database will not take batches from us.
				if w.batchUnsupported.CompareAndSwap(false, true) {
					w.logger.Warn("tasker.step_submit_results is not available (database schema older than this SDK, or not granted); submitting results one at a time", "error", err)
				}
			} else {
				w.logger.Warn("a batch of step results was refused; submitting them one at a time", "steps", len(batch), "error", err)
			}
			for _, s := range batch {
				s.done <- submitReply{alone: true}
			}
			return
		}
		now := time.Now()
		stopping := w.hardCtx.Err() != nil
		keep := batch[:0]
		for _, s := range batch {
			if stopping || now.After(s.deadline) {
				s.done <- submitReply{err: err}
			} else {
				keep = append(keep, s)
			}
		}
		if batch = keep; len(batch) == 0 {
			return
		}
		w.logger.Debug("submitting step results failed; retrying", "steps", len(batch), "attempt", attempt, "error", err)
		// A hard stop (Stop's timeout ran out) ends the retries: the
		// results are lost and their leases expire, as after a crash.
		sleepCtx(w.hardCtx, submitBackoff(attempt))
	}
}

// store makes one submission call, one transaction, for the batch and
// returns, for each submission, whether it was accepted. A batch of one goes
// through tasker.step_submit_result: the same for one step, with less to
// plan and run than the batch function (a step that finishes alone is
// submitted as fast as ever).
func (w *Worker) store(batch []*submission) ([]bool, error) {
	if len(batch) == 1 {
		accepted, err := w.storeOne(context.Background(), batch[0])
		return []bool{accepted}, err
	}
	return w.storeBatch(batch)
}

// errSubmitReply is a reply of tasker.step_submit_results that does not
// match the request; retrying would not change it.
var errSubmitReply = errors.New("unexpected reply from tasker.step_submit_results")

// storeBatch makes one tasker.step_submit_results call.
func (w *Worker) storeBatch(batch []*submission) ([]bool, error) {
	n := len(batch)
	ids := make([]uuid.UUID, n)
	attempts := make([]int32, n)
	success := make([]bool, n)
	results := make([][]byte, n)
	errs := make([][]byte, n)
	msgIDs := make([]int64, n)
	headers := make([][]byte, n)
	for i, s := range batch {
		ids[i], attempts[i], success[i] = s.step.StepUUID, int32(s.step.Attempt), s.success
		results[i], errs[i], msgIDs[i], headers[i] = s.result, s.errJSON, s.msgID, s.headers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent := time.Now()
	for _, s := range batch {
		s.sentAt = sent
	}
	type row struct {
		StepUUID uuid.UUID
		Accepted bool
	}
	var got []row
	err := w.submitCall(ctx, func(rows pgx.Rows) (err error) {
		got, err = pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		return err
	}, `SELECT step_uuid, accepted FROM tasker.step_submit_results(
		$1::uuid[], $2::integer[], $3::text, $4::boolean[], $5::jsonb[], $6::jsonb[], $7::bigint[], $8::jsonb[])`,
		ids, attempts, w.cfg.WorkerID, success, results, errs, msgIDs, headers)
	if err != nil {
		return nil, fmt.Errorf("submit %d step results: %w", n, err)
	}
	if len(got) != n {
		return nil, fmt.Errorf("%w: %d rows for %d steps", errSubmitReply, len(got), n)
	}
	accepted := make([]bool, n)
	for i, r := range got {
		if r.StepUUID != ids[i] {
			return nil, fmt.Errorf("%w: row %d is for step %s, not %s", errSubmitReply, i+1, r.StepUUID, ids[i])
		}
		accepted[i] = r.Accepted
	}
	return accepted, nil
}

// submitOne stores one result by itself, retrying transient errors until
// the submission's deadline.
func (w *Worker) submitOne(ctx context.Context, s *submission) (bool, error) {
	for attempt := 1; ; attempt++ {
		accepted, err := w.storeOne(ctx, s)
		if err == nil {
			return accepted, nil
		}
		if permanent(err) || time.Now().After(s.deadline) || w.hardCtx.Err() != nil {
			return false, err
		}
		sleepCtx(w.hardCtx, submitBackoff(attempt))
	}
}

// storeOne makes one tasker.step_submit_result call.
func (w *Worker) storeOne(ctx context.Context, s *submission) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var accepted bool
	s.sentAt = time.Now()
	err := w.submitCall(ctx, func(rows pgx.Rows) (err error) {
		accepted, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
		return err
	}, `SELECT tasker.step_submit_result($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::jsonb)`,
		s.step.StepUUID, s.step.Attempt, w.cfg.WorkerID, s.success, nullJSON(s.result), nullJSON(s.errJSON), s.msgID, s.headers)
	return accepted, err
}

// submitCall runs a submission statement in an implicit transaction of its
// own and hands its rows to read. With Config.AsyncSubmit the transaction
// is a pipeline of set_config('synchronous_commit', 'off') and the
// statement, as a claim's is: it commits without waiting for its WAL
// flush, and the session's own setting is left as it was.
func (w *Worker) submitCall(ctx context.Context, read func(pgx.Rows) error, sql string, args ...any) error {
	if !w.cfg.AsyncSubmit {
		rows, err := w.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		return read(rows)
	}
	b := &pgx.Batch{}
	b.Queue(asyncCommitSQL)
	b.Queue(sql, args...)
	res := w.pool.SendBatch(ctx, b)
	_, err := res.Exec()
	if err == nil {
		var rows pgx.Rows
		if rows, err = res.Query(); err == nil {
			err = read(rows)
		}
	}
	// Close reports the end of the implicit transaction: a submission whose
	// commit failed was not stored.
	if cerr := res.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

func submitBackoff(attempt int) time.Duration {
	return min(time.Duration(attempt)*250*time.Millisecond, 3*time.Second)
}

// permanent reports whether a claim or a submission failed in a way that
// the same call would fail again: a database error about the data, the
// statement or the caller's rights (SQLSTATE classes 0A, 22, 23, 42, P0),
// or a reply that does not match the request. Anything else (connection
// loss, timeouts, serialization failures, a server shutting down) is worth
// retrying.
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "0A", "22", "23", "42", "P0":
			return true
		}
		return false
	}
	return errors.Is(err, errSubmitReply)
}

func nullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}
