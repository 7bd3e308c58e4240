// Package domainevents produces Tasker's domain events (DESIGN §7): an
// orchestration.BeforeCommit hook that derives them from the journal of an
// engine transaction and writes them to the namespaces' domain event queues
// in that transaction, and the read-only tail behind `orchestrator events
// tail`. The public consumer API and the event types are the package
// github.com/tasker/tasker/domainevents; the catalog is
// docs/domain-events.md.
package domainevents

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
)

// TemplateFunc returns a registered template version by id; pass
// (*orchestration.Engine).Template, which caches them.
type TemplateFunc func(ctx context.Context, id int64) (*template.Template, error)

// Hook returns the BeforeCommit hook that publishes domain events. Install
// it with orchestration.WithBeforeCommit. It runs at the end of every engine
// transaction: it derives the events from the journal, reads what their
// payloads need inside the transaction (so it sees the transaction's own
// writes), and sends them with one batch per namespace. An error rolls the
// transaction back, so a state change and its events commit together or not
// at all.
//
// The events, from the journal records, in journal order:
//
//   - task.start_requested                      → TaskInitiated
//   - step → complete                           → StepCompleted
//   - step → resolved_manually with a result    → StepCompleted (resolved_manually: true)
//   - step → waiting_for_retry (failed attempt) → StepFailed (will_retry: true), unless the
//     attempt was given back before its handler ran (Record.Unrun)
//   - step → error                              → StepFailed (will_retry: false)
//   - any of the four above                     → WorkflowProgressed, once per task and transaction, after its last step event
//   - task → complete / error / cancelled       → TaskCompleted / TaskFailed / TaskCancelled
//
// and the business events declared by template steps: on success with
// StepCompleted, on failure when a step fails for good, always on both.
// Built-in events are published only if the task's template selects them
// (domain_events; all by default); business events are published whenever
// declared.
func Hook(st *store.Store, templates TemplateFunc) orchestration.BeforeCommit {
	p := &producer{st: st, templates: templates}
	return p.publish
}

type producer struct {
	st        *store.Store
	templates TemplateFunc
}

// planned is an event derived from the journal, before its payload is built.
type planned struct {
	typ string
	// pos orders events: twice the index of the journal record that caused
	// it (WorkflowProgressed goes at an odd position, just after its task's
	// last step event).
	pos  int
	at   time.Time
	task telemetry.TaskRef
	tpl  *template.Template
	step *telemetry.StepRef
	// business is set for a step's declared business event: the outcome
	// ("success" or "failure").
	business string
	// ifResult drops the event when the step has no result (a manual
	// resolution without one).
	ifResult bool
	// willRetry for StepFailed.
	willRetry bool
}

func (p *producer) publish(ctx context.Context, tx store.Tx, j *telemetry.Journal) error {
	plan, err := p.plan(ctx, j)
	if err != nil || len(plan) == 0 {
		return err
	}
	data, err := p.load(ctx, tx, j, plan)
	if err != nil {
		return err
	}
	type batch struct {
		bodies  []json.RawMessage
		headers []map[string]string
	}
	byNS := map[string]*batch{}
	var order []string
	for i := range plan {
		ev := &plan[i]
		body, ok, err := data.encode(ev)
		if err != nil {
			return fmt.Errorf("domain event %s of task %s: %w", ev.typ, ev.task.UUID, err)
		}
		if !ok {
			continue
		}
		b := byNS[ev.task.Namespace]
		if b == nil {
			b = &batch{}
			byNS[ev.task.Namespace] = b
			order = append(order, ev.task.Namespace)
		}
		h := map[string]string{"event_type": ev.typ}
		if ev.task.TraceParent != "" {
			h["traceparent"] = ev.task.TraceParent
		}
		b.bodies = append(b.bodies, body)
		b.headers = append(b.headers, h)
	}
	for _, ns := range order {
		b := byNS[ns]
		if err := p.st.DomainEventsSendTx(ctx, tx, ns, b.bodies, b.headers); err != nil {
			return fmt.Errorf("publish domain events of namespace %s: %w", ns, err)
		}
	}
	return nil
}

// plan derives the events of a journal, in order, filtered by each
// template's selection.
func (p *producer) plan(ctx context.Context, j *telemetry.Journal) ([]planned, error) {
	var out []planned
	tpls := map[int64]*template.Template{}
	lastProgress := map[uuid.UUID]int{} // task -> index of its last step event record
	for i := range j.Records {
		r := &j.Records[i]
		var evs []planned
		base := planned{pos: 2 * i, at: r.At, task: r.Task, step: r.Step}
		switch r.Kind {
		case telemetry.KindEvent:
			if r.Event == lifecycle.EventTaskStartRequested {
				evs = append(evs, with(base, domainevents.TaskInitiated))
			}
		case telemetry.KindTaskTransition:
			switch lifecycle.TaskState(r.To) {
			case lifecycle.TaskComplete:
				evs = append(evs, with(base, domainevents.TaskCompleted))
			case lifecycle.TaskError:
				evs = append(evs, with(base, domainevents.TaskFailed))
			case lifecycle.TaskCancelled:
				evs = append(evs, with(base, domainevents.TaskCancelled))
			}
		case telemetry.KindStepTransition:
			if r.Step == nil {
				continue
			}
			switch lifecycle.StepState(r.To) {
			case lifecycle.StepComplete:
				evs = append(evs, with(base, domainevents.StepCompleted), business(base, domainevents.OutcomeSuccess))
			case lifecycle.StepResolvedManually:
				// A success only if the operator gave a result.
				base.ifResult = true
				evs = append(evs, with(base, domainevents.StepCompleted), business(base, domainevents.OutcomeSuccess))
			case lifecycle.StepWaitingForRetry:
				if r.Unrun {
					break // given back before its handler ran: nothing failed
				}
				switch lifecycle.StepState(r.From) {
				case lifecycle.StepEnqueuedAsErrorForOrchestration, lifecycle.StepInProgress:
					ev := with(base, domainevents.StepFailed)
					ev.willRetry = true
					evs = append(evs, ev)
				}
			case lifecycle.StepError:
				evs = append(evs, with(base, domainevents.StepFailed), business(base, domainevents.OutcomeFailure))
			}
			if len(evs) > 0 {
				lastProgress[r.Task.UUID] = i
			}
		}
		if len(evs) == 0 {
			continue
		}
		tpl, err := p.template(ctx, tpls, r.Task.TemplateID)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			ev.tpl = tpl
			if ev.business == "" {
				if tpl.PublishesDomainEvent(ev.typ) {
					out = append(out, ev)
				}
				continue
			}
			out = append(out, declared(ev)...)
		}
	}
	for _, i := range lastProgress {
		r := &j.Records[i]
		tpl, err := p.template(ctx, tpls, r.Task.TemplateID)
		if err != nil {
			return nil, err
		}
		if !tpl.PublishesDomainEvent(domainevents.WorkflowProgressed) {
			continue
		}
		out = append(out, planned{typ: domainevents.WorkflowProgressed, pos: 2*i + 1, at: r.At, task: r.Task, tpl: tpl})
	}
	slices.SortStableFunc(out, func(a, b planned) int { return cmp.Compare(a.pos, b.pos) })
	return out, nil
}

func with(base planned, typ string) planned {
	base.typ = typ
	return base
}

// business returns the placeholder of a step's business events for an
// outcome; plan expands it with declared once the template is known.
func business(base planned, outcome string) planned {
	base.business = outcome
	return base
}

// declared expands a business event placeholder into the events the step
// declares for its outcome (on: the outcome, or always), in declaration
// order.
func declared(ph planned) []planned {
	s, ok := ph.tpl.StepByName(ph.step.Name)
	if !ok {
		return nil
	}
	var out []planned
	for _, e := range s.Events {
		if e.On == ph.business || e.On == template.EventOnAlways {
			ev := ph
			ev.typ = e.Name
			out = append(out, ev)
		}
	}
	return out
}

func (p *producer) template(ctx context.Context, cache map[int64]*template.Template, id int64) (*template.Template, error) {
	if t, ok := cache[id]; ok {
		return t, nil
	}
	t, err := p.templates(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("template %d for domain events: %w", id, err)
	}
	cache[id] = t
	return t, nil
}

// StoreTemplates returns a TemplateFunc that reads templates from the store
// and caches them (template versions are immutable), for a hook installed
// where no engine is at hand; the daemon passes the engine's own cache.
func StoreTemplates(st *store.Store) TemplateFunc {
	var mu sync.Mutex
	cache := map[int64]*template.Template{}
	return func(ctx context.Context, id int64) (*template.Template, error) {
		mu.Lock()
		t, ok := cache[id]
		mu.Unlock()
		if ok {
			return t, nil
		}
		rec, err := st.TemplateByID(ctx, id)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		cache[id] = rec.Template
		mu.Unlock()
		return rec.Template, nil
	}
}
