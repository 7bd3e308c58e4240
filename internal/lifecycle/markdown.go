package lifecycle

import (
	"fmt"
	"strings"
)

// CatalogMarkdown renders docs/events.md: the event catalog, then the events
// each allowed transition publishes. It is generated rather than written so
// the document cannot drift from the code; TestEventsDoc enforces that.
func CatalogMarkdown() string {
	var b strings.Builder
	b.WriteString("# System events\n\n")
	b.WriteString("<!-- Generated from internal/lifecycle (CatalogMarkdown); do not edit.\n")
	b.WriteString("     Regenerate: go test ./internal/lifecycle -run TestEventsDoc -update -->\n\n")
	b.WriteString("Every event below is published as a span event on the span named here and\n")
	b.WriteString("counted in `tasker_events_total{event,namespace}`, with the attributes\n")
	b.WriteString("`correlation_id`, `task_uuid`, `namespace` and, where relevant, `step_uuid`,\n")
	b.WriteString("`step_name`, `from_state`, `to_state`, `attempt` (DESIGN §4, §5).\n\n")

	fmt.Fprintf(&b, "## Catalog (%d events)\n\n", len(catalog))
	b.WriteString("| name | category | emitter | span | when | published at |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, e := range catalog {
		fmt.Fprintf(&b, "| `%s` | %s | %s | `%s` | %s | %s |\n",
			e.Name, e.Category, cell(string(e.Emitter)), e.Span, cell(e.Description), cell(e.PublishedAt))
	}

	b.WriteString(revivedTask)

	b.WriteString("\n## Events per transition\n\n")
	b.WriteString("Every transition the state machines allow, with the events it publishes\n")
	b.WriteString("(`TaskMoveEvents`, or `StepTransitionEvent`).\n")
	b.WriteString("`task.before_transition` and `step.before_transition` come just before\n")
	b.WriteString("these on every transition (not a step's creation) and are not repeated\n")
	b.WriteString("here; like them they are published once the transition has happened.\n\n")

	b.WriteString("### Task\n\n")
	b.WriteString("| from | trigger | to | events |\n|---|---|---|---|\n")
	for _, from := range TaskStates {
		for _, trig := range TaskTriggers {
			to, err := NextTaskState(from, trig)
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", from, trig, to, eventList(TaskMoveEvents(from, trig, to)))
		}
	}

	b.WriteString("\n### Step\n\n")
	b.WriteString("| from | trigger | to | events |\n|---|---|---|---|\n")
	if ev, ok := StepTransitionEvent(StepCreatedState, StepPending); ok {
		fmt.Fprintf(&b, "| (created) | — | %s | %s |\n", StepPending, eventList([]EventName{ev}))
	}
	for _, from := range StepStates {
		for _, trig := range StepTriggers {
			to, err := NextStepState(from, trig)
			if err != nil {
				continue
			}
			var names []EventName
			if ev, ok := StepTransitionEvent(from, to); ok {
				names = append(names, ev)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", from, trig, to, eventList(names))
		}
	}
	return b.String()
}

// revivedTask describes the trace and completion metric of a task that
// ends more than once (internal/orchestration moveTask, the telemetry
// publisher's emitRoot and emitLeftover).
const revivedTask = `
## A task an operator revives

A task in ` + "`error`" + ` has ended: its root span ` + "`task_orchestration`" + ` was
emitted then, once, spanning its creation to that end, with
` + "`outcome=error`" + ` (status error) and ` + "`workflow.task_failed`" + `; and
` + "`tasker_task_completion_duration_seconds{outcome=\"error\"}`" + ` observed the time
since its creation. An operator may still retry it, or retry or resolve one
of its steps (error → pending, ` + "`task.retry_requested`" + `), or resolve the task
(error → resolved_manually, a second end at once). Then:

* The task's later spans (transitions, phases, the workers' step spans) are
  in the same trace with that root as their parent, starting after its
  end. The root is not emitted again (a span is emitted once) and keeps
  ` + "`outcome=error`" + `.
* When the task ends again, its terminal event (` + "`task.completed`" + `,
  ` + "`task.failed`" + `, ` + "`task.resolved_manually`" + `) is on that transition's
  ` + "`task_state_transition`" + ` span as usual; ` + "`workflow.task_completed`" + ` or
  ` + "`workflow.task_failed`" + ` (complete or error) is on a ` + "`result_evaluation`" + ` span
  directly under the root.
* ` + "`tasker_task_completion_duration_seconds`" + ` observes every end: the task is
  observed again, with the new terminal state as ` + "`outcome`" + ` and again the time
  since its creation (the time it spent in error included). A revived task
  is counted once per end, under each outcome it reached: the histogram's
  ` + "`_count`" + ` counts task ends, not tasks. The task's final outcome is that of
  its last end: the last terminal ` + "`task_state_transition`" + ` of its trace.
`

// cell keeps free text from breaking the table.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func eventList(names []EventName) string {
	if len(names) == 0 {
		return "—"
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = "`" + string(n) + "`"
	}
	return strings.Join(parts, ", ")
}
