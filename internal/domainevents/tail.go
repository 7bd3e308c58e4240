package domainevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tasker/tasker/domainevents"
	"github.com/tasker/tasker/internal/queue"
)

// Defaults for TailConfig.
const (
	DefaultTailPollInterval = 500 * time.Millisecond
	DefaultTailBatchSize    = 100
	DefaultTailGapWait      = 10 * time.Second
)

// maxGaps bounds the msg_ids Tail keeps looking for.
const maxGaps = 10000

// TailConfig configures Tail.
type TailConfig struct {
	// Namespace whose domain event queue is watched. Required.
	Namespace string
	// EventTypes to report; empty means all.
	EventTypes []string
	// FromStart reports the events already in the queue and its archive;
	// otherwise only events sent from now on.
	FromStart bool
	// Follow keeps watching for new events until ctx is cancelled;
	// otherwise Tail returns once it has reported what is there.
	Follow bool
	// Limit stops Tail after this many events (0: no limit).
	Limit int
	// PollInterval is how often the queue is looked at (Wake, when set,
	// wakes Tail at once). Default 500ms.
	PollInterval time.Duration
	// Wake, optional, signals that the queue may have new messages (a
	// queue.Listener subscription).
	Wake <-chan struct{}
	// BatchSize is the most messages fetched per look. Default 100.
	BatchSize int
	// GapWait is how long a msg_id missing between two seen ones is looked
	// for again: it may belong to a transaction that had not committed yet.
	// Default 10s.
	GapWait time.Duration
}

// TailEvent is a message Tail found.
type TailEvent struct {
	// Event is the decoded event (with MsgID, ReadCount and Headers set),
	// valid when Err is nil.
	Event domainevents.Event
	// Err says why the body is not a domain event.
	Err error
	// Body is the message body as stored.
	Body json.RawMessage
	// Archived is true for a message already moved to the archive (a
	// consumer gave up on it).
	Archived bool
}

// errLimit ends Tail when Limit events were reported.
var errLimit = errors.New("limit reached")

// Tail reports the domain events of a namespace to fn as they arrive,
// without consuming them: it browses the queue table and its archive by
// msg_id and changes nothing, so consumers are not disturbed. It sees an
// event only while the event is in the queue or the archive: an event that a
// consumer acknowledges (deletes) between two looks is missed. Events are
// reported in msg_id order, except that one sent by a transaction that
// committed late (its msg_id was taken before a higher one that committed
// first) is reported when it shows up. An error from fn ends Tail with that
// error; cancelling ctx ends it with nil.
func Tail(ctx context.Context, db queue.DB, cfg TailConfig, fn func(TailEvent) error) error {
	q, err := queue.DomainEventsQueue(cfg.Namespace)
	if err != nil {
		return err
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultTailPollInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultTailBatchSize
	}
	if cfg.GapWait <= 0 {
		cfg.GapWait = DefaultTailGapWait
	}
	t := &tailer{db: db, q: q, cfg: cfg, fn: fn, gaps: map[int64]time.Time{}}
	if !cfg.FromStart {
		if t.cursor, err = queue.BrowseHead(ctx, db, q); err != nil {
			return canceled(ctx, err)
		}
	}
	// From the start, ids below the first message seen were deleted long
	// ago: only gaps after it are worth looking for.
	first := cfg.FromStart
	for {
		n, err := t.look(ctx, first)
		first = false
		if err != nil {
			if errors.Is(err, errLimit) {
				return nil
			}
			return canceled(ctx, err)
		}
		if n == cfg.BatchSize {
			continue
		}
		if !cfg.Follow {
			return nil
		}
		timer := time.NewTimer(cfg.PollInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-cfg.Wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// canceled maps an error caused by ctx's cancellation to nil.
func canceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type tailer struct {
	db       queue.DB
	q        string
	cfg      TailConfig
	fn       func(TailEvent) error
	cursor   int64
	gaps     map[int64]time.Time // msg_id -> when to stop looking for it
	reported int
}

// look reports late arrivals and new messages once; it returns how many new
// messages it fetched.
func (t *tailer) look(ctx context.Context, first bool) (int, error) {
	now := time.Now()
	if len(t.gaps) > 0 {
		ids := make([]int64, 0, len(t.gaps))
		for id, until := range t.gaps {
			if now.After(until) {
				delete(t.gaps, id)
				continue
			}
			ids = append(ids, id)
		}
		slices.Sort(ids)
		late, err := queue.BrowseIDs(ctx, t.db, t.q, ids)
		if err != nil {
			return 0, err
		}
		for _, m := range late {
			delete(t.gaps, m.ID)
			if err := t.report(m); err != nil {
				return 0, err
			}
		}
	}
	msgs, err := queue.Browse(ctx, t.db, t.q, t.cursor, t.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	for i, m := range msgs {
		if !(first && i == 0) {
			for id := t.cursor + 1; id < m.ID && len(t.gaps) < maxGaps; id++ {
				t.gaps[id] = now.Add(t.cfg.GapWait)
			}
		}
		t.cursor = m.ID
		if err := t.report(m); err != nil {
			return 0, err
		}
	}
	return len(msgs), nil
}

func (t *tailer) report(m queue.BrowsedMessage) error {
	ev, err := domainevents.Decode(m.Body)
	if err == nil {
		ev.MsgID, ev.ReadCount, ev.Headers = m.ID, m.ReadCount, m.Headers
		if len(t.cfg.EventTypes) > 0 && !slices.Contains(t.cfg.EventTypes, ev.EventType) {
			return nil
		}
	} else if len(t.cfg.EventTypes) > 0 {
		return nil
	}
	if err := t.fn(TailEvent{Event: ev, Err: err, Body: m.Body, Archived: m.Archived}); err != nil {
		return fmt.Errorf("report event %d: %w", m.ID, err)
	}
	t.reported++
	if t.cfg.Limit > 0 && t.reported >= t.cfg.Limit {
		return errLimit
	}
	return nil
}
