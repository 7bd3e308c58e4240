package domainevents_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

// newHarness starts an in-process orchestrator whose engine publishes
// domain events with ide.Hook; extra hooks run after it, in the same
// transactions.
func newHarness(t *testing.T, opts enginetest.Options, extra ...orchestration.BeforeCommit) *enginetest.Harness {
	t.Helper()
	url := testdb.URL(t)
	st := store.New(testdb.Pool(t, url))
	opts.DatabaseURL = url
	opts.EngineOptions = append(opts.EngineOptions, orchestration.WithBeforeCommit(ide.Hook(st, ide.StoreTemplates(st))))
	for _, h := range extra {
		opts.EngineOptions = append(opts.EngineOptions, orchestration.WithBeforeCommit(h))
	}
	return enginetest.New(t, opts)
}

// queued is an event found in a domain event queue.
type queued struct {
	domainevents.Event
	Archived bool
}

// queueEvents returns every event in a namespace's domain event queue and
// its archive, in msg_id order, after checking each against the envelope's
// JSON Schema and Decode.
func queueEvents(t *testing.T, h *enginetest.Harness, ns string) []queued {
	t.Helper()
	q, err := queue.DomainEventsQueue(ns)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := queue.Browse(context.Background(), h.Pool, q, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]queued, 0, len(msgs))
	for _, m := range msgs {
		if err := ide.ValidateEvent(m.Body); err != nil {
			t.Fatalf("event %d does not match envelope.schema.json: %v\n%s", m.ID, err, m.Body)
		}
		ev, err := domainevents.Decode(m.Body)
		if err != nil {
			t.Fatalf("event %d: %v", m.ID, err)
		}
		ev.MsgID, ev.ReadCount, ev.Headers = m.ID, m.ReadCount, m.Headers
		if ev.Namespace != ns {
			t.Fatalf("event %d in queue %s has namespace %s", m.ID, q, ev.Namespace)
		}
		if ev.Headers["event_type"] != ev.EventType {
			t.Fatalf("event %d: header event_type %q, envelope %q", m.ID, ev.Headers["event_type"], ev.EventType)
		}
		out = append(out, queued{Event: ev, Archived: m.Archived})
	}
	return out
}

// taskEvents filters events of one task.
func taskEvents(evs []queued, task uuid.UUID) []queued {
	var out []queued
	for _, e := range evs {
		if e.TaskUUID == task {
			out = append(out, e)
		}
	}
	return out
}

// label names an event "Type" or "Type:step_name" for sequence assertions.
func label(e queued) string {
	var p struct {
		StepName string `json:"step_name"`
	}
	_ = json.Unmarshal(e.Payload, &p)
	if e.StepUUID != nil && p.StepName != "" {
		return e.EventType + ":" + p.StepName
	}
	return e.EventType
}

func labels(evs []queued) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = label(e)
	}
	return out
}

func indexOf(t *testing.T, ls []string, want string) int {
	t.Helper()
	for i, l := range ls {
		if l == want {
			return i
		}
	}
	t.Fatalf("no %s in %v", want, ls)
	return -1
}

func count(ls []string, want string) int {
	n := 0
	for _, l := range ls {
		if l == want {
			n++
		}
	}
	return n
}

func payload[T any](t *testing.T, e queued) T {
	t.Helper()
	var v T
	if err := e.DecodePayload(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func assertSeq(t *testing.T, got []queued, want ...string) {
	t.Helper()
	g := labels(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n  got  %v\n  want %v", g, want)
	}
}

// failWhen returns a BeforeCommit hook that fails the first `times` transactions
// whose journal matches.
func failWhen(match func(r telemetry.Record) bool, times int) (orchestration.BeforeCommit, func() int) {
	failed := make(chan struct{}, times)
	hook := func(_ context.Context, _ store.Tx, j *telemetry.Journal) error {
		for _, r := range j.Records {
			if match(r) {
				select {
				case failed <- struct{}{}:
					return fmt.Errorf("injected failure after %s -> %s", r.From, r.To)
				default:
					return nil
				}
			}
		}
		return nil
	}
	return hook, func() int { return len(failed) }
}

// okHandler returns its step's name and attempt.
func okHandler(_ context.Context, s *worker.Step) (any, error) {
	return map[string]any{"step": s.Name, "attempt": s.Attempt}, nil
}

func startWorker(h *enginetest.Harness, ns string, handlers map[string]worker.Handler) {
	h.Worker(worker.Config{Namespaces: []string{ns}, PollInterval: 100 * time.Millisecond, LeaseDuration: 5 * time.Second}, handlers)
}

func jsonOf(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return m
}
