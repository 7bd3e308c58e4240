package domainevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/queue"
)

// Defaults for Config.
const (
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultMaxAttempts       = 5
	DefaultBatchSize         = 10
	DefaultConcurrency       = 1
	DefaultPollInterval      = 1 * time.Second
	DefaultHandlerTimeout    = 1 * time.Minute
	DefaultShutdownTimeout   = 10 * time.Second
)

// dbTimeout bounds each acknowledgement, release or archive call; they run
// outside the consumer's contexts so that a stopping consumer still
// acknowledges the events it handled.
const dbTimeout = 10 * time.Second

// Handler handles one event. Returning nil acknowledges it (the event is
// deleted from its queue); an error leaves it to be delivered again after
// the visibility timeout. ctx is cancelled after HandlerTimeout and when
// the consumer stops hard.
type Handler func(ctx context.Context, ev Event) error

// DeadLetter describes an event given up on: moved to its queue's archive.
type DeadLetter struct {
	Namespace string
	Queue     string
	MsgID     int64
	ReadCount int
	// Reason says why, in words.
	Reason string
	// Err is the handler's last error, or why the body is not an event; nil
	// when the event was delivered too often without an answer (the
	// consumer crashed or was killed while handling it).
	Err error
	// Event is the decoded event; nil when the body is not a domain event.
	Event *Event
	// Body is the message body as stored.
	Body json.RawMessage
}

// Config configures a Consumer.
type Config struct {
	// Namespaces whose domain event queues (domain_events_<namespace>) are
	// consumed. Required.
	Namespaces []string
	// EventTypes to handle; empty means all. Events of other types are
	// acknowledged (deleted) without calling the handler: the queue is
	// consumed by one logical consumer (see the package documentation).
	EventTypes []string
	// Handler is called for each event. Required.
	Handler Handler
	// VisibilityTimeout is how long an event stays hidden from other readers
	// once read. The consumer extends it while the event waits in its batch
	// or is being handled, so it bounds how long the events of a consumer
	// that died stay hidden, and is the delay before an event whose handler
	// failed is delivered again. Whole seconds; default 30s, minimum 1s.
	VisibilityTimeout time.Duration
	// MaxAttempts is how many deliveries an event gets: when the handler
	// fails on the last one (or an event has been read more often than this
	// without an answer), the event is archived and reported. Default 5.
	MaxAttempts int
	// BatchSize is the most events read per round trip per namespace.
	// Default 10.
	BatchSize int
	// Concurrency is how many events are handled at once per namespace;
	// events of one task are always handled one at a time, in order.
	// Default 1: the queue is handled strictly in order.
	Concurrency int
	// PollInterval is the fallback polling interval; a notification from the
	// queue wakes the consumer at once. Default 1s.
	PollInterval time.Duration
	// HandlerTimeout bounds one handler call (its ctx is cancelled). Default
	// 1 minute.
	HandlerTimeout time.Duration
	// ShutdownTimeout bounds how long Stop waits for running handlers before
	// cancelling them. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the consumer's logs; default slog.Default().
	Logger *slog.Logger
	// OnDeadLetter, when set, is called after an event is archived.
	OnDeadLetter func(ctx context.Context, dl DeadLetter)
	// DisableNotify turns off LISTEN/NOTIFY wake-ups (polling only; saves a
	// database connection).
	DisableNotify bool
}

// Consumer reads domain events of some namespaces and hands them to a
// handler, with at-least-once delivery and explicit acknowledgement.
type Consumer struct {
	pool   *pgxpool.Pool
	cfg    Config
	logger *slog.Logger
	types  map[string]bool

	listener *queue.Listener
	wakes    map[string]<-chan struct{}

	readCtx  context.Context
	stopRead context.CancelFunc
	hardCtx  context.Context
	hardStop context.CancelFunc
	loops    sync.WaitGroup
	started  bool
	stopOnce sync.Once

	mu sync.Mutex
	// blocked maps queue/task to the time until which an event of that
	// task waits for redelivery; later events of the task are held back
	// until then.
	blocked map[blockKey]time.Time
	// heldBack counts, per queue/msg_id, the reads of an event that was held
	// back unhandled: PGMQ counts them in read_ct, but they are not
	// deliveries to the handler.
	heldBack map[msgKey]heldCount
}

type blockKey struct {
	queue string
	task  uuid.UUID
}

type msgKey struct {
	queue string
	id    int64
}

type heldCount struct {
	n    int
	last time.Time
}

// NewConsumer checks cfg and returns a consumer; Start or Run it.
func NewConsumer(pool *pgxpool.Pool, cfg Config) (*Consumer, error) {
	if pool == nil {
		return nil, errors.New("domainevents: pool is nil")
	}
	if len(cfg.Namespaces) == 0 {
		return nil, errors.New("domainevents: Config.Namespaces is empty")
	}
	for _, ns := range cfg.Namespaces {
		if err := queue.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("domainevents: %w", err)
		}
	}
	if cfg.Handler == nil {
		return nil, errors.New("domainevents: Config.Handler is nil")
	}
	types := map[string]bool{}
	for _, t := range cfg.EventTypes {
		if t == "" {
			return nil, errors.New("domainevents: Config.EventTypes has an empty type")
		}
		types[t] = true
	}
	if cfg.VisibilityTimeout <= 0 {
		cfg.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if cfg.VisibilityTimeout < time.Second {
		return nil, fmt.Errorf("domainevents: VisibilityTimeout %s is below PGMQ's 1s resolution", cfg.VisibilityTimeout)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = DefaultHandlerTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Consumer{pool: pool, cfg: cfg, logger: cfg.Logger, types: types,
		blocked: map[blockKey]time.Time{}, heldBack: map[msgKey]heldCount{}}, nil
}

// Run starts the consumer and blocks until ctx is cancelled, then stops it
// gracefully.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	c.Stop()
	return nil
}

// Start begins consuming in the background. It fails at once when the
// database is unreachable or a namespace has no domain event queue (the
// queue is created with the namespace's first template).
func (c *Consumer) Start(ctx context.Context) error {
	if c.started {
		return errors.New("domainevents: consumer already started")
	}
	for _, ns := range c.cfg.Namespaces {
		q, _ := queue.DomainEventsQueue(ns)
		if _, err := queue.QueueMetrics(ctx, c.pool, q); err != nil {
			return fmt.Errorf("domainevents: queue %s of namespace %s is not usable (is a template of that namespace registered?): %w", q, ns, err)
		}
	}
	base := context.WithoutCancel(ctx)
	c.readCtx, c.stopRead = context.WithCancel(base)
	c.hardCtx, c.hardStop = context.WithCancel(base)
	c.wakes = map[string]<-chan struct{}{}
	if !c.cfg.DisableNotify {
		c.listener = queue.NewListener(c.pool, c.logger)
		for _, ns := range c.cfg.Namespaces {
			q, _ := queue.DomainEventsQueue(ns)
			c.wakes[ns] = c.listener.Subscribe(q)
		}
		if err := c.listener.Start(base); err != nil {
			return err
		}
	}
	for _, ns := range c.cfg.Namespaces {
		c.loops.Add(1)
		// Ends when Stop cancels readCtx (after finishing its batch).
		go func() {
			defer c.loops.Done()
			c.loop(ns)
		}()
	}
	c.started = true
	c.logger.Info("domain event consumer started", "namespaces", c.cfg.Namespaces, "event_types", c.cfg.EventTypes)
	return nil
}

// Stop stops reading, waits up to ShutdownTimeout for running handlers to
// finish (and their events to be acknowledged), then cancels them. Events
// read but not handled are released at once, or left to their visibility
// timeout if an earlier event of their task failed; nothing is lost. Stop
// is bounded even if a handler ignores its cancelled context: it gives up
// on that handler (whose event is delivered again) about ShutdownTimeout
// after cancelling it. Safe to call twice.
func (c *Consumer) Stop() {
	c.stopOnce.Do(func() {
		if !c.started {
			return
		}
		c.stopRead()
		done := make(chan struct{})
		// Ends when every namespace loop has returned.
		go func() { c.loops.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(c.cfg.ShutdownTimeout):
			c.logger.Warn("domain event consumer: shutdown timeout; cancelling running handlers")
			c.hardStop()
			// The loops give cancelled handlers ShutdownTimeout, then
			// release the events they did not start.
			select {
			case <-done:
			case <-time.After(c.cfg.ShutdownTimeout + dbTimeout):
				c.logger.Error("domain event consumer: a handler ignores its cancelled context; giving up on it (its event will be delivered again)")
			}
		}
		c.hardStop()
		if c.listener != nil {
			c.listener.Stop()
		}
		c.logger.Info("domain event consumer stopped")
	})
}

// loop reads and handles batches of one namespace until Stop.
func (c *Consumer) loop(ns string) {
	q, _ := queue.DomainEventsQueue(ns)
	log := c.logger.With("namespace", ns, "queue", q)
	failures := 0
	for c.readCtx.Err() == nil {
		msgs, err := queue.Read(c.readCtx, c.pool, q, c.cfg.VisibilityTimeout, c.cfg.BatchSize)
		if err != nil {
			if c.readCtx.Err() != nil {
				return
			}
			failures++
			if failures == 1 || failures%30 == 0 {
				log.Error("domain event read failed; retrying with backoff", "error", err, "failures", failures)
			}
			sleepCtx(c.readCtx, min(time.Duration(failures)*200*time.Millisecond, 5*time.Second))
			continue
		}
		if failures > 0 {
			log.Info("domain event reads recovered", "after_failures", failures)
			failures = 0
		}
		if len(msgs) == 0 {
			t := time.NewTimer(c.cfg.PollInterval)
			select {
			case <-c.readCtx.Done():
			case <-c.wakes[ns]:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		c.batch(ns, q, msgs, log)
	}
}

// item is one event of a batch on its way to the handler.
type item struct {
	msg  queue.Message
	ev   Event
	prev *item // the previous event of the same task in the batch
	done chan struct{}

	// Guarded by Consumer.mu.
	state itemState
}

type itemState int

const (
	itemQueued  itemState = iota // read, not started
	itemRunning                  // handler running
	itemAcked                    // handled and deleted
	itemGone                     // archived (dead letter)
	itemWaiting                  // failed or held back: waits for redelivery
)

// settled reports whether later events of the item's task may go ahead.
func (s itemState) settled() bool { return s == itemAcked || s == itemGone }

// batch hands a batch's events to the handler: in msg_id order, at most
// Concurrency at once, one at a time per task. It returns when every
// started handler has returned (or the consumer stopped hard).
func (c *Consumer) batch(ns, q string, msgs []queue.Message, log *slog.Logger) {
	now := time.Now()
	c.prune(now)
	var items []*item
	last := map[uuid.UUID]*item{}
	for _, m := range msgs {
		ev, err := Decode(m.Body)
		if err != nil {
			c.deadLetter(ns, q, m, nil, err, "the message is not a domain event this consumer can read: "+err.Error(), log)
			continue
		}
		ev.MsgID, ev.ReadCount, ev.Headers = m.ID, m.ReadCount, m.Headers
		if n := c.deliveries(q, m); n > c.cfg.MaxAttempts {
			c.deadLetter(ns, q, m, &ev, nil, fmt.Sprintf("delivered %d times without being acknowledged (the consumer may have crashed while handling it)", n-1), log)
			continue
		}
		if len(c.types) > 0 && !c.types[ev.EventType] {
			c.ack(q, m.ID, log)
			continue
		}
		if until, ok := c.blockedUntil(q, ev.TaskUUID, now); ok {
			c.holdBack(q, m.ID, until, log)
			continue
		}
		it := &item{msg: m, ev: ev, prev: last[ev.TaskUUID], done: make(chan struct{})}
		last[ev.TaskUUID] = it
		items = append(items, it)
	}
	if len(items) == 0 {
		return
	}

	beat := make(chan struct{})
	var beatWG sync.WaitGroup
	beatWG.Add(1)
	// Ends when the batch is over (beat closed) or at a hard stop.
	go func() {
		defer beatWG.Done()
		c.heartbeat(q, items, beat, log)
	}()

	slots := make(chan struct{}, c.cfg.Concurrency)
	var running sync.WaitGroup
	started := 0
dispatch:
	for _, it := range items {
		select {
		case <-c.readCtx.Done():
			break dispatch
		case slots <- struct{}{}:
		}
		if c.readCtx.Err() != nil {
			<-slots
			break dispatch
		}
		started++
		running.Add(1)
		// Ends when the handler has returned and the event is settled.
		go func() {
			defer running.Done()
			defer func() { <-slots }()
			defer close(it.done)
			if it.prev != nil {
				<-it.prev.done
			}
			c.handle(ns, q, it, log)
		}()
	}
	waitOrHardStop(&running, c.hardCtx, c.cfg.ShutdownTimeout)
	close(beat)
	beatWG.Wait()

	// Events not started (the consumer is stopping): release them for
	// another consumer now, unless an earlier event of their task waits
	// for redelivery (then they wait with it, to keep the task's order).
	for _, it := range items[started:] {
		if until, ok := c.blockedUntil(q, it.ev.TaskUUID, time.Now()); ok {
			c.holdBack(q, it.msg.ID, until, log)
			continue
		}
		c.setVT(q, it.msg.ID, 0, log)
	}
}

// waitOrHardStop waits for wg, or until grace after ctx is cancelled (a
// handler that ignores its context must not hold the consumer forever).
func waitOrHardStop(wg *sync.WaitGroup, ctx context.Context, grace time.Duration) {
	done := make(chan struct{})
	// Ends when every handler of the batch has returned (possibly after the
	// consumer gave up on it).
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Give handlers time to notice the cancellation and settle.
		select {
		case <-done:
		case <-time.After(grace):
		}
	}
}

// handle runs the handler for one event and settles it: acknowledged,
// waiting for redelivery, or archived.
func (c *Consumer) handle(ns, q string, it *item, log *slog.Logger) {
	log = log.With("msg_id", it.msg.ID, "event_type", it.ev.EventType, "event_id", it.ev.EventID, "task_uuid", it.ev.TaskUUID)
	if it.prev != nil {
		c.mu.Lock()
		prev := it.prev.state
		c.mu.Unlock()
		if !prev.settled() {
			// An earlier event of the task failed: this one waits for it.
			until, ok := c.blockedUntil(q, it.ev.TaskUUID, time.Now())
			if !ok {
				until = time.Now().Add(c.cfg.VisibilityTimeout)
			}
			c.setState(it, itemWaiting)
			c.holdBack(q, it.msg.ID, until, log)
			return
		}
	}
	if c.hardCtx.Err() != nil {
		c.setState(it, itemWaiting)
		return
	}
	c.setState(it, itemRunning)
	err := c.call(it.ev)
	if err == nil {
		if c.ack(q, it.msg.ID, log) {
			c.setState(it, itemAcked)
			c.unblock(q, it.ev.TaskUUID, it.msg.ID)
		} else {
			// Not deleted (database error): it will be delivered again, so
			// later events of the task wait for it.
			c.setState(it, itemWaiting)
			c.block(q, it.ev.TaskUUID, time.Now().Add(c.cfg.VisibilityTimeout))
		}
		return
	}
	if c.hardCtx.Err() != nil {
		// Interrupted by a hard stop, not a failure of the event: give it
		// back at once rather than after the visibility timeout.
		log.Warn("domain event handler interrupted by shutdown; the event is released", "error", err)
		c.setState(it, itemWaiting)
		c.setVT(q, it.msg.ID, 0, log)
		return
	}
	n := c.deliveries(q, it.msg)
	if n >= c.cfg.MaxAttempts {
		c.setState(it, itemGone)
		c.deadLetter(ns, q, it.msg, &it.ev, err, fmt.Sprintf("handler failed on delivery %d of %d: %v", n, c.cfg.MaxAttempts, err), log)
		c.unblock(q, it.ev.TaskUUID, it.msg.ID)
		return
	}
	log.Warn("domain event handler failed; the event will be delivered again", "error", err,
		"delivery", n, "max_attempts", c.cfg.MaxAttempts, "retry_in", c.cfg.VisibilityTimeout)
	c.setState(it, itemWaiting)
	until := time.Now().Add(c.cfg.VisibilityTimeout)
	c.block(q, it.ev.TaskUUID, until)
	c.setVT(q, it.msg.ID, c.cfg.VisibilityTimeout, log)
}

// call runs the handler with its timeout, turning a panic into an error.
func (c *Consumer) call(ev Event) (err error) {
	ctx, cancel := context.WithTimeout(c.hardCtx, c.cfg.HandlerTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return c.cfg.Handler(ctx, ev)
}

// heartbeat keeps the batch's queued and running events hidden while they
// wait for their turn or are handled.
func (c *Consumer) heartbeat(q string, items []*item, stop <-chan struct{}, log *slog.Logger) {
	every := max(c.cfg.VisibilityTimeout/3, 300*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.hardCtx.Done():
			return
		case <-t.C:
		}
		for _, it := range items {
			c.mu.Lock()
			s := it.state
			c.mu.Unlock()
			if s == itemQueued || s == itemRunning {
				c.setVT(q, it.msg.ID, c.cfg.VisibilityTimeout, log)
			}
		}
	}
}

func (c *Consumer) setState(it *item, s itemState) {
	c.mu.Lock()
	it.state = s
	c.mu.Unlock()
}

// deliveries is how many times the event has been handed to a handler (or
// taken by a consumer that never answered), this time included: PGMQ's
// read count minus the reads in which this consumer held it back.
func (c *Consumer) deliveries(q string, m queue.Message) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.ReadCount - c.heldBack[msgKey{q, m.ID}].n
}

func (c *Consumer) blockedUntil(q string, task uuid.UUID, now time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.blocked[blockKey{q, task}]
	if !ok || !now.Before(until) {
		return time.Time{}, false
	}
	return until, true
}

func (c *Consumer) block(q string, task uuid.UUID, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.blocked[blockKey{q, task}]; until.After(cur) {
		c.blocked[blockKey{q, task}] = until
	}
}

// unblock lifts the hold on a task's later events once the event that
// caused it is settled.
func (c *Consumer) unblock(q string, task uuid.UUID, id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.blocked, blockKey{q, task})
	delete(c.heldBack, msgKey{q, id})
}

// holdBack gives an event back unhandled, to become visible at until (just
// after the earlier event of its task that it must follow).
func (c *Consumer) holdBack(q string, id int64, until time.Time, log *slog.Logger) {
	c.mu.Lock()
	h := c.heldBack[msgKey{q, id}]
	h.n++
	h.last = time.Now()
	c.heldBack[msgKey{q, id}] = h
	c.mu.Unlock()
	c.setVT(q, id, time.Until(until), log)
}

// prune forgets holds and counts too old to matter (their events were
// settled by another consumer, or long since delivered again).
func (c *Consumer) prune(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, until := range c.blocked {
		if now.After(until) {
			delete(c.blocked, k)
		}
	}
	horizon := time.Duration(c.cfg.MaxAttempts+1) * c.cfg.VisibilityTimeout * 4
	for k, h := range c.heldBack {
		if now.Sub(h.last) > horizon {
			delete(c.heldBack, k)
		}
	}
}

func (c *Consumer) ack(q string, id int64, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if _, err := queue.Delete(ctx, c.pool, q, id); err != nil {
		log.Error("acknowledge domain event", "msg_id", id, "error", err)
		return false
	}
	c.mu.Lock()
	delete(c.heldBack, msgKey{q, id})
	c.mu.Unlock()
	return true
}

func (c *Consumer) setVT(q string, id int64, d time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if _, err := queue.SetVT(ctx, c.pool, q, id, d); err != nil {
		log.Warn("set domain event visibility", "msg_id", id, "error", err)
	}
}

// deadLetter archives an event, logs it and reports it.
func (c *Consumer) deadLetter(ns, q string, m queue.Message, ev *Event, cause error, reason string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if _, err := queue.Archive(ctx, c.pool, q, m.ID); err != nil {
		log.Error("archive dead domain event; it will be delivered again", "msg_id", m.ID, "error", err)
		return
	}
	c.mu.Lock()
	delete(c.heldBack, msgKey{q, m.ID})
	c.mu.Unlock()
	attrs := []any{"msg_id", m.ID, "read_count", m.ReadCount, "reason", reason}
	if ev != nil {
		attrs = append(attrs, "event_type", ev.EventType, "event_id", ev.EventID, "task_uuid", ev.TaskUUID)
	}
	log.Error("domain event archived as a dead letter", attrs...)
	if c.cfg.OnDeadLetter == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error("OnDeadLetter panicked", "msg_id", m.ID, "panic", fmt.Sprint(r))
		}
	}()
	c.cfg.OnDeadLetter(ctx, DeadLetter{Namespace: ns, Queue: q, MsgID: m.ID, ReadCount: m.ReadCount,
		Reason: reason, Err: cause, Event: ev, Body: slices.Clone(m.Body)})
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
