package domainevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
)

const idleTemplate = `
namespace: tail
name: idle
version: 1.0.0
steps:
  - name: wait
    handler: tail.nobody
`

// tailLog collects what Tail reports.
type tailLog struct {
	mu  sync.Mutex
	evs []ide.TailEvent
}

func (l *tailLog) add(e ide.TailEvent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
	return nil
}

func (l *tailLog) snapshot() []ide.TailEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ide.TailEvent(nil), l.evs...)
}

// Tail reports what is in the queue and archive without consuming it, and
// then new events as they arrive, filtered by type.
func TestTailIsReadOnlyAndFollows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(idleTemplate)
	ctx := context.Background()
	first := h.Submit(orchestration.TaskRequest{Namespace: "tail", Name: "idle"})
	if _, err := h.Engine.CancelTask(ctx, first.UUID, "test"); err != nil {
		t.Fatal(err)
	}
	evs := queueEvents(t, h, "tail")
	// A consumer gave up on the first event: it is in the archive now.
	if ok, err := queue.Archive(ctx, h.Pool, "domain_events_tail", evs[0].MsgID); err != nil || !ok {
		t.Fatalf("archive: %v %v", ok, err)
	}

	var past tailLog
	if err := ide.Tail(ctx, h.Pool, ide.TailConfig{Namespace: "tail", FromStart: true}, past.add); err != nil {
		t.Fatal(err)
	}
	got := past.snapshot()
	if len(got) != 2 || got[0].Event.EventType != domainevents.TaskInitiated || !got[0].Archived ||
		got[1].Event.EventType != domainevents.TaskCancelled || got[1].Archived || got[1].Event.MsgID != evs[1].MsgID {
		t.Fatalf("tail from start: %+v", got)
	}
	// Nothing was read: the queued event is untouched and visible.
	msgs, err := queue.Read(ctx, h.Pool, "domain_events_tail", time.Second, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ReadCount != 1 {
		t.Fatalf("after tail, read %+v %v", msgs, err)
	}

	// Following, only TaskCancelled: the one there, then two new ones.
	var live tailLog
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	// Ends when Tail has reported three events or tctx expires.
	go func() {
		done <- ide.Tail(tctx, h.Pool, ide.TailConfig{Namespace: "tail", FromStart: true, Follow: true, Limit: 3,
			EventTypes: []string{domainevents.TaskCancelled}, PollInterval: 50 * time.Millisecond}, live.add)
	}()
	enginetest.Eventually(t, 5*time.Second, "the queued TaskCancelled is reported", func() bool { return len(live.snapshot()) == 1 })
	ids := []uuid.UUID{first.UUID}
	for i := 0; i < 2; i++ {
		task := h.Submit(orchestration.TaskRequest{Namespace: "tail", Name: "idle"})
		if _, err := h.Engine.CancelTask(ctx, task.UUID, "live"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.UUID)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got = live.snapshot()
	if len(got) != 3 {
		t.Fatalf("tail follow reported %d events: %+v", len(got), got)
	}
	for i, e := range got {
		if e.Event.TaskUUID != ids[i] || e.Event.EventType != domainevents.TaskCancelled {
			t.Fatalf("tail follow event %d: %s of %s, want TaskCancelled of %s", i, e.Event.EventType, e.Event.TaskUUID, ids[i])
		}
	}
}

// An event whose transaction commits after a later one (its msg_id was
// taken first) is reported when it shows up, not skipped.
func TestTailReportsLateCommits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, enginetest.Options{NoOrchestrator: true})
	h.Register(idleTemplate)
	ctx := context.Background()
	task := h.Submit(orchestration.TaskRequest{Namespace: "tail", Name: "idle"})
	base := queueEvents(t, h, "tail")[0].Event
	body := func() json.RawMessage {
		e := base
		e.EventID = uuid.Must(uuid.NewV7())
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	var log tailLog
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	// Ends when Tail has reported three events or tctx expires.
	go func() {
		done <- ide.Tail(tctx, h.Pool, ide.TailConfig{Namespace: "tail", FromStart: true, Follow: true, Limit: 3, PollInterval: 50 * time.Millisecond}, log.add)
	}()
	enginetest.Eventually(t, 5*time.Second, "the queued event is reported", func() bool { return len(log.snapshot()) == 1 })

	slow, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	early, err := queue.Send(ctx, slow, "domain_events_tail", body(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	late, err := queue.Send(ctx, h.Pool, "domain_events_tail", body(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 5*time.Second, "the committed event is reported", func() bool { return len(log.snapshot()) == 2 })
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := log.snapshot()
	if len(got) != 3 || got[1].Event.MsgID != late || got[2].Event.MsgID != early || got[2].Event.TaskUUID != task.UUID {
		t.Fatalf("reported %+v; want the late commit %d after %d", got, early, late)
	}
}

// Browsing refuses a queue name that is not a plain identifier before any
// SQL is built from it.
func TestBrowseValidatesQueueName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, name := range []string{`x"; DROP TABLE tasker.tasks; --`, "Upper", ""} {
		if _, err := queue.Browse(ctx, nil, name, 0, 1); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("Browse(%q): %v", name, err)
		}
		if _, err := queue.BrowseIDs(ctx, nil, name, []int64{1}); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("BrowseIDs(%q): %v", name, err)
		}
		if _, err := queue.BrowseHead(ctx, nil, name); !errors.Is(err, queue.ErrInvalidName) {
			t.Errorf("BrowseHead(%q): %v", name, err)
		}
	}
}
