package queue

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Listener turns PGMQ insert notifications into wake-ups, so that loops
// reading queues sleep until a message arrives instead of polling hard.
// Notifications are hints: a reader still polls at a slow fallback interval,
// and a lost connection is re-established with backoff.
type Listener struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu   sync.Mutex
	subs map[string][]chan struct{} // channel name -> wake channels

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// NewListener returns a listener on pool; Start it after subscribing.
func NewListener(pool *pgxpool.Pool, logger *slog.Logger) *Listener {
	return &Listener{pool: pool, logger: logger, subs: map[string][]chan struct{}{}}
}

// Subscribe returns a channel that receives a value (coalesced: capacity 1)
// whenever a message is sent to the named queue. Call before Start.
func (l *Listener) Subscribe(queueName string) <-chan struct{} {
	return l.SubscribeChannel(NotifyChannel(queueName))
}

// SubscribeChannel returns a channel that receives a value (coalesced:
// capacity 1) whenever a notification arrives on the named Postgres
// channel, and also whenever the listener (re)connects, since
// notifications sent while it was away are lost. Call before Start.
func (l *Listener) SubscribeChannel(channel string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs[channel] = append(l.subs[channel], ch)
	return ch
}

// Start runs the listening loop in the background until Stop.
func (l *Listener) Start(ctx context.Context) error {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	// Ends when Stop cancels ctx.
	go func() {
		defer close(l.done)
		l.loop(ctx)
	}()
	return nil
}

// Stop ends the loop and waits for it; safe to call twice.
func (l *Listener) Stop() {
	l.once.Do(func() {
		if l.cancel != nil {
			l.cancel()
			<-l.done
		}
	})
}

func (l *Listener) loop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.logger.Warn("queue listener lost its connection; reconnecting", "error", err, "retry_in", backoff)
		// Wake everyone: messages may have arrived while we were away.
		l.wakeAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that was LISTENing must not go back to the pool.
	defer func() { _ = conn.Hijack().Close(context.Background()) }()
	l.mu.Lock()
	names := make([]string, 0, len(l.subs))
	for name := range l.subs {
		names = append(names, name)
	}
	l.mu.Unlock()
	for _, name := range names {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{name}.Sanitize()); err != nil {
			return err
		}
	}
	l.wakeAll()
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.wake(n.Channel)
	}
}

func (l *Listener) wake(channel string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range l.subs[channel] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (l *Listener) wakeAll() {
	l.mu.Lock()
	names := make([]string, 0, len(l.subs))
	for name := range l.subs {
		names = append(names, name)
	}
	l.mu.Unlock()
	for _, n := range names {
		l.wake(n)
	}
}
