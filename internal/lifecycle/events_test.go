package lifecycle

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// wantCatalogNames is DESIGN §4's list, in its order.
var wantCatalogNames = []EventName{
	"task.start_requested", "task.initialize_requested", "task.before_transition",
	"task.steps_discovery_completed", "task.steps_enqueued", "task.step_results_received",
	"task.awaiting_dependencies", "task.dependencies_satisfied", "task.retry_backoff_started",
	"task.blocked_by_failures", "task.completed", "task.failed", "task.cancelled",
	"task.resolved_manually", "task.retry_requested",

	"step.initialize_requested", "step.enqueue_requested", "step.execution_requested",
	"step.before_handle", "step.handle", "step.result_submitted", "step.completed",
	"step.failed", "step.retry_requested", "step.cancelled", "step.resolved_manually",
	"step.before_transition",

	"workflow.orchestration_requested", "workflow.task_started",
	"workflow.viable_steps_discovered", "workflow.no_viable_steps",
	"workflow.step_completed", "workflow.step_failed", "workflow.task_completed",
	"workflow.task_failed",
}

// designSpans is DESIGN §5's span tree.
var designSpans = []string{
	"task_orchestration", "task_state_transition", "step_discovery",
	"step_enqueuing", "result_evaluation", "step_execution",
	"step_state_transition", "handler_execution", "result_submission",
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	cat := Catalog()
	if len(cat) != 35 {
		t.Fatalf("catalog has %d events, want 35", len(cat))
	}
	names := make([]EventName, len(cat))
	seen := map[EventName]bool{}
	perCategory := map[Category]int{}
	for i, e := range cat {
		names[i] = e.Name
		if seen[e.Name] {
			t.Errorf("%s listed twice", e.Name)
		}
		seen[e.Name] = true
		perCategory[e.Category]++
		if !strings.HasPrefix(string(e.Name), string(e.Category)+".") {
			t.Errorf("%s: category %q is not its prefix", e.Name, e.Category)
		}
		if strings.TrimSpace(e.Description) == "" {
			t.Errorf("%s: no description", e.Name)
		}
		if strings.TrimSpace(e.PublishedAt) == "" {
			t.Errorf("%s: no publication point", e.Name)
		}
		switch e.Emitter {
		case EmitterOrchestrator, EmitterWorker, EmitterOrchestratorAndWorker:
		default:
			t.Errorf("%s: emitter %q", e.Name, e.Emitter)
		}
		if !slices.Contains(designSpans, e.Span) {
			t.Errorf("%s: span %q is not one of DESIGN §5's %v", e.Name, e.Span, designSpans)
		}
		got, ok := LookupEvent(e.Name)
		if !ok || got != e {
			t.Errorf("LookupEvent(%s) = %+v, %v; want the catalog entry", e.Name, got, ok)
		}
	}
	if !slices.Equal(names, wantCatalogNames) {
		t.Errorf("catalog names/order =\n%v\nwant\n%v", names, wantCatalogNames)
	}
	wantCounts := map[Category]int{CategoryTask: 15, CategoryStep: 12, CategoryWorkflow: 8}
	for c, n := range wantCounts {
		if perCategory[c] != n {
			t.Errorf("category %s has %d events, want %d", c, perCategory[c], n)
		}
	}
	if len(perCategory) != len(wantCounts) {
		t.Errorf("categories %v, want only task, step, workflow", perCategory)
	}
	if _, ok := LookupEvent("task.started"); ok {
		t.Error("LookupEvent(task.started) found an entry; the audit's name is not in the catalog")
	}
}

// TestCatalogEmitters: the worker publishes the events of claiming, running
// and submitting a step; the orchestrator everything else; step transitions
// happen in both.
func TestCatalogEmitters(t *testing.T) {
	t.Parallel()
	worker := map[EventName]bool{
		"step.execution_requested": true, "step.before_handle": true,
		"step.handle": true, "step.result_submitted": true,
	}
	both := map[EventName]bool{"step.before_transition": true}
	for _, e := range Catalog() {
		wantW := worker[e.Name] || both[e.Name]
		wantO := !worker[e.Name]
		if got := e.EmittedBy(EmitterWorker); got != wantW {
			t.Errorf("%s EmittedBy(worker) = %v, want %v", e.Name, got, wantW)
		}
		if got := e.EmittedBy(EmitterOrchestrator); got != wantO {
			t.Errorf("%s EmittedBy(orchestrator) = %v, want %v", e.Name, got, wantO)
		}
	}
	for _, n := range []EventName{EventStepBeforeHandle, EventStepHandle} {
		if e, _ := LookupEvent(n); e.Emitter != EmitterWorker {
			t.Errorf("%s emitter = %q, want worker", n, e.Emitter)
		}
	}
}

func TestCatalogIsACopy(t *testing.T) {
	t.Parallel()
	c := Catalog()
	c[0].Name = "mutated"
	c[0].Description = ""
	if Catalog()[0].Name != EventTaskStartRequested {
		t.Fatal("mutating Catalog()'s result changed the catalog")
	}
}

// taskEventGrid is the expected TaskTransitionEvent for every (from, to)
// pair, one row per from-state, columns in wantTaskStates order.
const taskEventGrid = `
                          pend init enq  sip  eval wdep wret blk  comp err  canc res
pending                   -    IR   -    -    -    AD   RBS  BBF  C    F    X    RM
initializing              -    -    SDC  -    -    SDC  RBS  BBF  C    F    X    RM
enqueuing_steps           -    -    -    SE   -    AD   RBS  BBF  C    F    X    RM
steps_in_process          -    -    -    -    SRR  AD   RBS  BBF  C    F    X    RM
evaluating_results        -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
waiting_for_dependencies  -    -    -    -    DS   AD   RBS  BBF  C    F    X    RM
waiting_for_retry         -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
blocked_by_failures       -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
complete                  -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
error                     RR   -    -    -    -    AD   RBS  BBF  C    F    X    RM
cancelled                 -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
resolved_manually         -    -    -    -    -    AD   RBS  BBF  C    F    X    RM
`

var taskEventAbbrev = map[string]EventName{
	"IR": "task.initialize_requested", "SDC": "task.steps_discovery_completed",
	"SE": "task.steps_enqueued", "SRR": "task.step_results_received",
	"AD": "task.awaiting_dependencies", "DS": "task.dependencies_satisfied",
	"RBS": "task.retry_backoff_started", "BBF": "task.blocked_by_failures",
	"C": "task.completed", "F": "task.failed", "X": "task.cancelled",
	"RM": "task.resolved_manually", "RR": "task.retry_requested",
}

// stepEventGrid is the expected StepTransitionEvent for every (from, to)
// pair; the first row is the created pseudo-state.
const stepEventGrid = `
                                     pend enq  inp  efo  eaefo wfr  err  comp canc res
(created)                            IR   -    -    -    -     -    -    -    -    -
pending                              -    EQ   -    -    -     -    F    C    X    RM
enqueued                             -    -    ER   -    -     -    F    C    X    RM
in_progress                          -    -    -    RS   RS    -    F    C    X    RM
enqueued_for_orchestration           -    -    -    -    -     -    F    C    X    RM
enqueued_as_error_for_orchestration  -    -    -    -    -     -    F    C    X    RM
waiting_for_retry                    RR   -    -    -    -     -    F    C    X    RM
error                                RR   -    -    -    -     -    F    C    X    RM
complete                             -    -    -    -    -     -    F    C    X    RM
cancelled                            -    -    -    -    -     -    F    C    X    RM
resolved_manually                    -    -    -    -    -     -    F    C    X    RM
`

var stepEventAbbrev = map[string]EventName{
	"IR": "step.initialize_requested", "EQ": "step.enqueue_requested",
	"ER": "step.execution_requested", "RS": "step.result_submitted",
	"C": "step.completed", "F": "step.failed", "X": "step.cancelled",
	"RM": "step.resolved_manually", "RR": "step.retry_requested",
}

// parseGrid returns grid[row][col] as event names ("" for none), checking
// the row labels against rows.
func parseGrid(t *testing.T, grid string, rows []string, ncols int, abbrev map[string]EventName) [][]EventName {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(grid), "\n")[1:] // skip the header
	if len(lines) != len(rows) {
		t.Fatalf("grid has %d rows, want %d", len(lines), len(rows))
	}
	out := make([][]EventName, len(lines))
	for i, line := range lines {
		f := strings.Fields(line)
		if f[0] != rows[i] || len(f) != ncols+1 {
			t.Fatalf("grid row %d: %q, want label %q and %d cells", i, line, rows[i], ncols)
		}
		out[i] = make([]EventName, ncols)
		for j, c := range f[1:] {
			if c == "-" {
				continue
			}
			n, ok := abbrev[c]
			if !ok {
				t.Fatalf("grid row %s: unknown abbreviation %q", rows[i], c)
			}
			out[i][j] = n
		}
	}
	return out
}

func TestTaskTransitionEventEveryPair(t *testing.T) {
	t.Parallel()
	rows := make([]string, len(wantTaskStates))
	for i, s := range wantTaskStates {
		rows[i] = string(s)
	}
	grid := parseGrid(t, taskEventGrid, rows, len(wantTaskStates), taskEventAbbrev)
	for i, from := range wantTaskStates {
		for j, to := range wantTaskStates {
			got, ok := TaskTransitionEvent(from, to)
			if want := grid[i][j]; got != want || ok != (want != "") {
				t.Errorf("TaskTransitionEvent(%s, %s) = %q, %v; want %q", from, to, got, ok, want)
			}
		}
	}
	for _, tc := range [][2]TaskState{{"bogus", "complete"}, {"pending", "bogus"}, {"", "pending"}} {
		if got, ok := TaskTransitionEvent(tc[0], tc[1]); ok {
			t.Errorf("TaskTransitionEvent(%q, %q) = %q for an unknown state", tc[0], tc[1], got)
		}
	}
}

func TestAdditionalTaskEventsEveryPair(t *testing.T) {
	t.Parallel()
	for _, from := range wantTaskStates {
		for _, to := range wantTaskStates {
			got := AdditionalTaskEvents(from, to)
			var want []EventName
			if from == "initializing" && to == "waiting_for_dependencies" {
				want = []EventName{"task.awaiting_dependencies"}
			}
			if !slices.Equal(got, want) {
				t.Errorf("AdditionalTaskEvents(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	// The returned slice is the caller's.
	AdditionalTaskEvents(TaskInitializing, TaskWaitingForDependencies)[0] = "mutated"
	if got := AdditionalTaskEvents(TaskInitializing, TaskWaitingForDependencies); got[0] != EventTaskAwaitingDependencies {
		t.Errorf("mutating the result changed later results: %v", got)
	}
}

func TestStepTransitionEventEveryPair(t *testing.T) {
	t.Parallel()
	froms := append([]StepState{StepCreatedState}, wantStepStates...)
	rows := make([]string, len(froms))
	for i, s := range froms {
		rows[i] = string(s)
	}
	rows[0] = "(created)"
	grid := parseGrid(t, stepEventGrid, rows, len(wantStepStates), stepEventAbbrev)
	for i, from := range froms {
		for j, to := range wantStepStates {
			got, ok := StepTransitionEvent(from, to)
			if want := grid[i][j]; got != want || ok != (want != "") {
				t.Errorf("StepTransitionEvent(%q, %s) = %q, %v; want %q", from, to, got, ok, want)
			}
		}
	}
	for _, tc := range [][2]StepState{{"bogus", "complete"}, {"pending", "bogus"}, {"", ""}, {"pending", ""}} {
		if got, ok := StepTransitionEvent(tc[0], tc[1]); ok {
			t.Errorf("StepTransitionEvent(%q, %q) = %q for an unknown state", tc[0], tc[1], got)
		}
	}
}

// TestMappedEventsAreCataloged: every name any mapping function can return
// is in the catalog, in the machine's own category.
func TestMappedEventsAreCataloged(t *testing.T) {
	t.Parallel()
	check := func(name EventName, want Category, where string) {
		e, ok := LookupEvent(name)
		if !ok {
			t.Errorf("%s returned %q, which is not in the catalog", where, name)
			return
		}
		if e.Category != want {
			t.Errorf("%s returned %q of category %s, want %s", where, name, e.Category, want)
		}
	}
	for _, from := range TaskStates {
		for _, to := range TaskStates {
			if n, ok := TaskTransitionEvent(from, to); ok {
				check(n, CategoryTask, "TaskTransitionEvent("+string(from)+", "+string(to)+")")
			}
			for _, n := range AdditionalTaskEvents(from, to) {
				check(n, CategoryTask, "AdditionalTaskEvents("+string(from)+", "+string(to)+")")
			}
		}
	}
	for _, from := range append([]StepState{StepCreatedState}, StepStates...) {
		for _, to := range StepStates {
			if n, ok := StepTransitionEvent(from, to); ok {
				check(n, CategoryStep, "StepTransitionEvent("+string(from)+", "+string(to)+")")
			}
		}
	}
}

// TestAllowedTaskTransitionEvents: a move publishes TaskMoveEvents, chosen by
// its states except on backoff_expired, so two triggers between the same
// states must publish different events, or two different causes would be
// reported as one. The allowed moves that publish nothing beyond
// task.before_transition are listed here, so a new move cannot go silent
// unnoticed.
func TestAllowedTaskTransitionEvents(t *testing.T) {
	t.Parallel()
	silent := map[taskMove]bool{
		{"evaluating_results", "ready_steps_found", "enqueuing_steps"}: true, // task.steps_enqueued follows
		// A retry backoff elapsed: the step publishes step.retry_requested.
		{"waiting_for_retry", "backoff_expired", "evaluating_results"}:        true,
		{"steps_in_process", "backoff_expired", "evaluating_results"}:         true,
		{"waiting_for_dependencies", "backoff_expired", "evaluating_results"}: true,
		{"blocked_by_failures", "unblocked", "evaluating_results"}:            true,
	}
	events := map[[2]TaskState]map[string]TaskTrigger{} // (from, to) -> published events -> trigger
	allowed := map[taskMove]bool{}
	for _, from := range TaskStates {
		for _, trig := range TaskTriggers {
			to, err := NextTaskState(from, trig)
			if err != nil {
				continue
			}
			move := taskMove{from, trig, to}
			allowed[move] = true
			all := TaskMoveEvents(from, trig, to)
			if (len(all) == 0) != silent[move] {
				t.Errorf("%s -%s-> %s: events %v; want silent=%v", from, trig, to, all, silent[move])
			}
			if to.Terminal() && len(all) == 0 {
				t.Errorf("%s -%s-> %s enters a terminal state without an event", from, trig, to)
			}
			if trig != TaskBackoffExpired {
				var want []EventName
				if primary, ok := TaskTransitionEvent(from, to); ok {
					want = append(want, primary)
				}
				want = append(want, AdditionalTaskEvents(from, to)...)
				if !slices.Equal(all, want) {
					t.Errorf("%s -%s-> %s: TaskMoveEvents %v, want the states' events %v", from, trig, to, all, want)
				}
			}
			for i := range all {
				if all[i] == EventTaskBeforeTransition {
					t.Errorf("%s -> %s maps to task.before_transition, which precedes every transition", from, to)
				}
				if slices.Contains(all[i+1:], all[i]) {
					t.Errorf("%s -> %s publishes %s twice: %v", from, to, all[i], all)
				}
			}
			pair := [2]TaskState{from, to}
			key := fmt.Sprint(all)
			if events[pair] == nil {
				events[pair] = map[string]TaskTrigger{}
			}
			if other, dup := events[pair][key]; dup {
				t.Errorf("%s -> %s publishes %s on both %s and %s; the events cannot tell them apart", from, to, key, other, trig)
			}
			events[pair][key] = trig
		}
	}
	for move := range silent {
		if !allowed[move] {
			t.Errorf("silent list names %s -%s-> %s, which the machine does not allow", move.from, move.trigger, move.to)
		}
	}
}

func TestAllowedStepTransitionEvents(t *testing.T) {
	t.Parallel()
	silent := map[[2]StepState]bool{
		{"in_progress", "waiting_for_retry"}:                         true,
		{"enqueued_as_error_for_orchestration", "waiting_for_retry"}: true,
	}
	triggers := map[[2]StepState][]StepTrigger{}
	for _, from := range StepStates {
		for _, trig := range StepTriggers {
			to, err := NextStepState(from, trig)
			if err != nil {
				continue
			}
			pair := [2]StepState{from, to}
			triggers[pair] = append(triggers[pair], trig)
			ev, ok := StepTransitionEvent(from, to)
			if ok == silent[pair] {
				t.Errorf("%s -%s-> %s: event %q, %v; want silent=%v", from, trig, to, ev, ok, silent[pair])
			}
			if ev == EventStepBeforeTransition {
				t.Errorf("%s -> %s maps to step.before_transition, which precedes every transition", from, to)
			}
			if to.Terminal() && !ok {
				t.Errorf("%s -%s-> %s enters a terminal state without an event", from, trig, to)
			}
		}
	}
	for pair, trigs := range triggers {
		if len(trigs) != 1 {
			t.Errorf("%s -> %s is reached by %v; the event mapping cannot tell them apart", pair[0], pair[1], trigs)
		}
	}
	for pair := range silent {
		if len(triggers[pair]) == 0 {
			t.Errorf("silent list names %s -> %s, which the machine does not allow", pair[0], pair[1])
		}
	}
}
