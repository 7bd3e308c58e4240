package lifecycle

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// The expected tables below are written out independently of the machine so
// that a change to the machine that is not also made here fails.

var wantTaskStates = []TaskState{
	"pending", "initializing", "enqueuing_steps", "steps_in_process",
	"evaluating_results", "waiting_for_dependencies", "waiting_for_retry",
	"blocked_by_failures", "complete", "error", "cancelled", "resolved_manually",
}

var wantTaskTriggers = []TaskTrigger{
	"start", "ready_steps_found", "no_steps", "nothing_ready", "steps_enqueued",
	"step_result_received", "all_steps_complete", "only_backoff_remains",
	"step_failed_permanently", "dependencies_satisfied", "backoff_expired",
	"unblocked", "stale", "give_up", "resolve", "retry", "cancel",
}

type taskMove struct {
	from    TaskState
	trigger TaskTrigger
	to      TaskState
}

// wantTaskMoves is DESIGN §3's task table plus the `unblocked` and `stale`
// extensions and `backoff_expired` out of the other two resting states.
// Anything not listed must be refused.
var wantTaskMoves = []taskMove{
	{"pending", "start", "initializing"},
	{"pending", "cancel", "cancelled"},

	{"initializing", "ready_steps_found", "enqueuing_steps"},
	{"initializing", "no_steps", "complete"},
	{"initializing", "nothing_ready", "waiting_for_dependencies"},
	{"initializing", "cancel", "cancelled"},

	{"enqueuing_steps", "steps_enqueued", "steps_in_process"},
	{"enqueuing_steps", "cancel", "cancelled"},

	{"steps_in_process", "step_result_received", "evaluating_results"},
	{"steps_in_process", "backoff_expired", "evaluating_results"},
	{"steps_in_process", "stale", "error"},
	{"steps_in_process", "cancel", "cancelled"},

	{"evaluating_results", "ready_steps_found", "enqueuing_steps"},
	{"evaluating_results", "nothing_ready", "waiting_for_dependencies"},
	{"evaluating_results", "all_steps_complete", "complete"},
	{"evaluating_results", "only_backoff_remains", "waiting_for_retry"},
	{"evaluating_results", "step_failed_permanently", "blocked_by_failures"},
	{"evaluating_results", "cancel", "cancelled"},

	{"waiting_for_dependencies", "dependencies_satisfied", "evaluating_results"},
	{"waiting_for_dependencies", "backoff_expired", "evaluating_results"},
	{"waiting_for_dependencies", "stale", "error"},
	{"waiting_for_dependencies", "cancel", "cancelled"},

	{"waiting_for_retry", "backoff_expired", "evaluating_results"},
	{"waiting_for_retry", "stale", "error"},
	{"waiting_for_retry", "cancel", "cancelled"},

	{"blocked_by_failures", "unblocked", "evaluating_results"},
	{"blocked_by_failures", "give_up", "error"},
	{"blocked_by_failures", "resolve", "resolved_manually"},
	{"blocked_by_failures", "cancel", "cancelled"},

	{"error", "resolve", "resolved_manually"},
	{"error", "retry", "pending"},
}

func TestTaskEnumerations(t *testing.T) {
	t.Parallel()
	if !slices.Equal(TaskStates, wantTaskStates) {
		t.Errorf("TaskStates = %v, want %v", TaskStates, wantTaskStates)
	}
	if !slices.Equal(TaskTriggers, wantTaskTriggers) {
		t.Errorf("TaskTriggers = %v, want %v", TaskTriggers, wantTaskTriggers)
	}
}

func TestTaskStatePredicates(t *testing.T) {
	t.Parallel()
	terminal := map[TaskState]bool{"complete": true, "error": true, "cancelled": true, "resolved_manually": true}
	for _, s := range wantTaskStates {
		if got := s.Terminal(); got != terminal[s] {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, terminal[s])
		}
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
		got, err := ParseTaskState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseTaskState(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "Pending", "PENDING", " pending", "in_progress", "bogus"} {
		if TaskState(bad).Valid() {
			t.Errorf("TaskState(%q).Valid() = true", bad)
		}
		_, err := ParseTaskState(bad)
		if !errors.Is(err, ErrUnknownState) {
			t.Errorf("ParseTaskState(%q) error = %v, want ErrUnknownState", bad, err)
		}
		if err != nil && !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ParseTaskState(%q) error %q does not name the input", bad, err)
		}
	}
}

// TestNextTaskStateEveryPair walks every (state, trigger) pair.
func TestNextTaskStateEveryPair(t *testing.T) {
	t.Parallel()
	want := map[TaskState]map[TaskTrigger]TaskState{}
	for _, m := range wantTaskMoves {
		if want[m.from] == nil {
			want[m.from] = map[TaskTrigger]TaskState{}
		}
		if _, dup := want[m.from][m.trigger]; dup {
			t.Fatalf("test table lists %s/%s twice", m.from, m.trigger)
		}
		want[m.from][m.trigger] = m.to
	}
	for _, from := range wantTaskStates {
		for _, trig := range wantTaskTriggers {
			t.Run(string(from)+"/"+string(trig), func(t *testing.T) {
				t.Parallel()
				got, err := NextTaskState(from, trig)
				wantTo, ok := want[from][trig]
				if ok {
					if err != nil || got != wantTo {
						t.Fatalf("NextTaskState(%s, %s) = %q, %v; want %q", from, trig, got, err, wantTo)
					}
					return
				}
				if !errors.Is(err, ErrInvalidTransition) {
					t.Fatalf("NextTaskState(%s, %s) = %q, %v; want ErrInvalidTransition", from, trig, got, err)
				}
				if got != "" {
					t.Errorf("refused transition returned state %q", got)
				}
				msg := err.Error()
				if !strings.Contains(msg, `"`+string(from)+`"`) || !strings.Contains(msg, `"`+string(trig)+`"`) {
					t.Errorf("error %q does not name state and trigger", msg)
				}
			})
		}
	}
}

func TestNextTaskStateUnknownInputs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from TaskState
		trig TaskTrigger
	}{
		{"bogus", "cancel"},
		{"", "start"},
		{"pending", "bogus"},
		{"pending", ""},
	} {
		if got, err := NextTaskState(tc.from, tc.trig); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("NextTaskState(%q, %q) = %q, %v; want ErrInvalidTransition", tc.from, tc.trig, got, err)
		}
	}
}

// TestTaskTerminalAndCancel: terminal states accept nothing, except that an
// operator may still retry or resolve a task in error; every non-terminal
// state accepts cancel.
func TestTaskTerminalAndCancel(t *testing.T) {
	t.Parallel()
	operatorExits := map[TaskState][]TaskTrigger{"error": {"resolve", "retry"}}
	for _, s := range wantTaskStates {
		var accepted []TaskTrigger
		for _, trig := range wantTaskTriggers {
			if _, err := NextTaskState(s, trig); err == nil {
				accepted = append(accepted, trig)
			}
		}
		if s.Terminal() {
			if !slices.Equal(accepted, operatorExits[s]) {
				t.Errorf("terminal %s accepts %v, want %v", s, accepted, operatorExits[s])
			}
			continue
		}
		if to, err := NextTaskState(s, TaskCancel); err != nil || to != TaskCancelled {
			t.Errorf("NextTaskState(%s, cancel) = %q, %v; want cancelled", s, to, err)
		}
	}
}
