package lifecycle

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var wantStepStates = []StepState{
	"pending", "enqueued", "in_progress", "enqueued_for_orchestration",
	"enqueued_as_error_for_orchestration", "waiting_for_retry", "error",
	"complete", "cancelled", "resolved_manually",
}

var wantStepTriggers = []StepTrigger{
	"enqueue", "claim", "handler_succeeded", "handler_failed",
	"result_processed", "retry_scheduled", "failed_permanently",
	"lease_expired_retry", "lease_expired_fail", "retry", "cancel", "resolve",
}

type stepMove struct {
	from    StepState
	trigger StepTrigger
	to      StepState
}

// wantStepMoves is DESIGN §3's step table. Anything not listed must be
// refused.
var wantStepMoves = []stepMove{
	{"pending", "enqueue", "enqueued"},
	{"pending", "cancel", "cancelled"},
	{"pending", "resolve", "resolved_manually"},

	{"enqueued", "claim", "in_progress"},
	{"enqueued", "cancel", "cancelled"},
	{"enqueued", "resolve", "resolved_manually"},

	{"in_progress", "handler_succeeded", "enqueued_for_orchestration"},
	{"in_progress", "handler_failed", "enqueued_as_error_for_orchestration"},
	{"in_progress", "lease_expired_retry", "waiting_for_retry"},
	{"in_progress", "lease_expired_fail", "error"},
	{"in_progress", "cancel", "cancelled"},
	{"in_progress", "resolve", "resolved_manually"},

	{"enqueued_for_orchestration", "result_processed", "complete"},
	{"enqueued_for_orchestration", "cancel", "cancelled"},
	{"enqueued_for_orchestration", "resolve", "resolved_manually"},

	{"enqueued_as_error_for_orchestration", "retry_scheduled", "waiting_for_retry"},
	{"enqueued_as_error_for_orchestration", "failed_permanently", "error"},
	{"enqueued_as_error_for_orchestration", "cancel", "cancelled"},
	{"enqueued_as_error_for_orchestration", "resolve", "resolved_manually"},

	{"waiting_for_retry", "retry", "pending"},
	{"waiting_for_retry", "cancel", "cancelled"},
	{"waiting_for_retry", "resolve", "resolved_manually"},

	{"error", "retry", "pending"},
	{"error", "cancel", "cancelled"},
	{"error", "resolve", "resolved_manually"},
}

func TestStepEnumerations(t *testing.T) {
	t.Parallel()
	if !slices.Equal(StepStates, wantStepStates) {
		t.Errorf("StepStates = %v, want %v", StepStates, wantStepStates)
	}
	if !slices.Equal(StepTriggers, wantStepTriggers) {
		t.Errorf("StepTriggers = %v, want %v", StepTriggers, wantStepTriggers)
	}
}

func TestStepStatePredicates(t *testing.T) {
	t.Parallel()
	terminal := map[StepState]bool{"complete": true, "cancelled": true, "resolved_manually": true}
	satisfied := map[StepState]bool{"complete": true, "resolved_manually": true}
	inFlight := map[StepState]bool{
		"enqueued": true, "in_progress": true,
		"enqueued_for_orchestration": true, "enqueued_as_error_for_orchestration": true,
	}
	for _, s := range wantStepStates {
		if got := s.Terminal(); got != terminal[s] {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, terminal[s])
		}
		if got := s.Satisfied(); got != satisfied[s] {
			t.Errorf("%s.Satisfied() = %v, want %v", s, got, satisfied[s])
		}
		if got := s.InFlight(); got != inFlight[s] {
			t.Errorf("%s.InFlight() = %v, want %v", s, got, inFlight[s])
		}
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
		got, err := ParseStepState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseStepState(%q) = %q, %v", s, got, err)
		}
	}
	// The created pseudo-state is not a state a step can be in.
	for _, bad := range []string{string(StepCreatedState), "Pending", "started", "bogus"} {
		if StepState(bad).Valid() {
			t.Errorf("StepState(%q).Valid() = true", bad)
		}
		if _, err := ParseStepState(bad); !errors.Is(err, ErrUnknownState) {
			t.Errorf("ParseStepState(%q) error = %v, want ErrUnknownState", bad, err)
		}
	}
}

// TestNextStepStateEveryPair walks every (state, trigger) pair.
func TestNextStepStateEveryPair(t *testing.T) {
	t.Parallel()
	want := map[StepState]map[StepTrigger]StepState{}
	for _, m := range wantStepMoves {
		if want[m.from] == nil {
			want[m.from] = map[StepTrigger]StepState{}
		}
		if _, dup := want[m.from][m.trigger]; dup {
			t.Fatalf("test table lists %s/%s twice", m.from, m.trigger)
		}
		want[m.from][m.trigger] = m.to
	}
	for _, from := range wantStepStates {
		for _, trig := range wantStepTriggers {
			t.Run(string(from)+"/"+string(trig), func(t *testing.T) {
				t.Parallel()
				got, err := NextStepState(from, trig)
				wantTo, ok := want[from][trig]
				if ok {
					if err != nil || got != wantTo {
						t.Fatalf("NextStepState(%s, %s) = %q, %v; want %q", from, trig, got, err, wantTo)
					}
					return
				}
				if !errors.Is(err, ErrInvalidTransition) {
					t.Fatalf("NextStepState(%s, %s) = %q, %v; want ErrInvalidTransition", from, trig, got, err)
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

func TestNextStepStateUnknownInputs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from StepState
		trig StepTrigger
	}{
		{"bogus", "cancel"},
		{StepCreatedState, "enqueue"},
		{"pending", "bogus"},
		{"pending", ""},
	} {
		if got, err := NextStepState(tc.from, tc.trig); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("NextStepState(%q, %q) = %q, %v; want ErrInvalidTransition", tc.from, tc.trig, got, err)
		}
	}
}

// TestStepTerminalAndCancel: terminal states accept nothing; every
// non-terminal state accepts cancel and resolve.
func TestStepTerminalAndCancel(t *testing.T) {
	t.Parallel()
	for _, s := range wantStepStates {
		var accepted []StepTrigger
		for _, trig := range wantStepTriggers {
			if _, err := NextStepState(s, trig); err == nil {
				accepted = append(accepted, trig)
			}
		}
		if s.Terminal() {
			if len(accepted) != 0 {
				t.Errorf("terminal %s accepts %v", s, accepted)
			}
			continue
		}
		if to, err := NextStepState(s, StepCancel); err != nil || to != StepCancelled {
			t.Errorf("NextStepState(%s, cancel) = %q, %v; want cancelled", s, to, err)
		}
		if to, err := NextStepState(s, StepResolve); err != nil || to != StepResolvedManually {
			t.Errorf("NextStepState(%s, resolve) = %q, %v; want resolved_manually", s, to, err)
		}
	}
}
