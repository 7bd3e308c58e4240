package orchestration

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/template"
)

// TestEvaluateReadinessFromTemplate: a pending step is ready when every
// step its template version lists in depends_on is satisfied, whatever the
// rows' Parents say (the locked read leaves them out); a step the template
// does not name is never ready.
func TestEvaluateReadinessFromTemplate(t *testing.T) {
	tpl, err := template.Parse([]byte(`
namespace: evaluate
name: diamond
version: 1.0.0
steps:
  - {name: top, handler: h}
  - {name: left, handler: h, depends_on: [top]}
  - {name: right, handler: h, depends_on: [top]}
  - {name: bottom, handler: h, depends_on: [left, right]}
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	steps := func(states map[string]lifecycle.StepState) []store.Step {
		var out []store.Step
		for _, name := range []string{"top", "left", "right", "bottom", "stray"} {
			if st, ok := states[name]; ok {
				// No Parents, as TasksLockWithStepsTx returns them.
				out = append(out, store.Step{UUID: uuid.New(), Name: name, State: st})
			}
		}
		return out
	}
	ready := func(ev evaluation) []string {
		var names []string
		for _, s := range ev.ready {
			names = append(names, s.Name)
		}
		return names
	}
	const (
		pending  = lifecycle.StepPending
		complete = lifecycle.StepComplete
		running  = lifecycle.StepInProgress
		resolved = lifecycle.StepResolvedManually
	)
	for _, tc := range []struct {
		name   string
		states map[string]lifecycle.StepState
		want   []string
	}{
		{"only the root at first", map[string]lifecycle.StepState{"top": pending, "left": pending, "right": pending, "bottom": pending}, []string{"top"}},
		{"both branches after the root", map[string]lifecycle.StepState{"top": complete, "left": pending, "right": pending, "bottom": pending}, []string{"left", "right"}},
		{"the join waits for its second parent", map[string]lifecycle.StepState{"top": complete, "left": complete, "right": running, "bottom": pending}, nil},
		{"the join after both, one resolved by hand", map[string]lifecycle.StepState{"top": complete, "left": complete, "right": resolved, "bottom": pending}, []string{"bottom"}},
		{"a step the template does not name", map[string]lifecycle.StepState{"top": running, "stray": pending}, nil},
		{"a parent missing from the rows", map[string]lifecycle.StepState{"left": complete, "bottom": pending}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluate(tpl, steps(tc.states), now)
			if got := ready(ev); !slices.Equal(got, tc.want) {
				t.Errorf("ready %v, want %v", got, tc.want)
			}
		})
	}
}
