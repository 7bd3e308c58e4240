package bench

import (
	"bytes"
	"strings"
	"testing"
)

// Verdicts judges only the configurations the targets name, by the
// medians of their runs, and says which are met.
func TestVerdicts(t *testing.T) {
	ss := []Summary{
		{Label: "linear4", Tasks: 5000, StepsPerSec: 5100, ModelRatio: 0.55, ModelStepsPS: 9273},
		{Label: "single", Tasks: 10000, TasksPerSec: 2900},
		{Label: "single open 100/s 20s", LatencyP50: 3.5, LatencyP99: 26},
		{Label: "single open 10/s 10s", LatencyP50: 3, LatencyP99: 9},
		{Label: "linear4 tracing", Tasks: 5000, StepsPerSec: 100},
		{Label: "linear4 history 1000000", Tasks: 5000, StepsPerSec: 4300},
		{Label: "linear4 history 100000", Tasks: 5000, StepsPerSec: 5000},
	}
	vs := Verdicts(ss)
	want := []struct {
		target string
		met    bool
	}{
		{"linear4 ≥ 5,000 steps/s over 20,000 steps", true},
		{"single ≥ 3,000 tasks/s", false},
		{"open loop single at 100 tasks/s: p50 ≤ 8 ms, p99 ≤ 25 ms", false},
		// −15.7 %: within 20 %.
		{"linear4 with 1,000,000 completed tasks within 20 % of an empty database", true},
		// A history of 100,000 tasks is not the target's 1,000,000.
		{"linear4 with 1,000,000 completed tasks within 20 % of an empty database", false},
	}
	if len(vs) != len(want) {
		t.Fatalf("%d verdicts, want %d: %+v", len(vs), len(want), vs)
	}
	for i, w := range want {
		if vs[i].Target != w.target || vs[i].Met != w.met {
			t.Errorf("verdict %d = %q met %v, want %q met %v (%s)", i, vs[i].Target, vs[i].Met, w.target, w.met, vs[i].Measured)
		}
	}
	if !strings.Contains(vs[0].Measured, "55.0 % of the bare design model (9273)") {
		t.Errorf("linear4's verdict does not give the model's share: %s", vs[0].Measured)
	}

	// Too few steps to count, an incomplete run, a slow history loss.
	short := Verdicts([]Summary{{Label: "linear4", Tasks: 1000, StepsPerSec: 6000},
		{Label: "single", Tasks: 10000, TasksPerSec: 3500, Incomplete: 1},
		{Label: "linear4 history 1000000", Tasks: 5000, StepsPerSec: 4000}})
	for _, v := range short {
		if v.Met {
			t.Errorf("%q met with %s", v.Target, v.Measured)
		}
	}
	if len(short) != 3 {
		t.Errorf("%d verdicts, want 3: %+v", len(short), short)
	}

	var out bytes.Buffer
	printVerdicts(&out, vs)
	if !strings.Contains(out.String(), "single ≥ 3,000 tasks/s") || !strings.Contains(out.String(), "not met") {
		t.Errorf("printed verdicts:\n%s", out.String())
	}
	out.Reset()
	printVerdicts(&out, nil)
	if out.Len() != 0 {
		t.Errorf("no verdicts printed %q", out.String())
	}
}

// The tracing target is judged only on pairs of a run and the same run with
// tracing on.
func TestTracingVerdict(t *testing.T) {
	base := &Report{Scenario: "linear4"}
	traced := &Report{Scenario: "linear4", Tracing: true}
	pairs := []Pair{{Base: base, Treated: traced}, {Base: base, Treated: traced}}
	if v, ok := tracingVerdict(pairs, -0.12); !ok || !v.Met {
		t.Errorf("-12 %%: %+v, %v; want met", v, ok)
	}
	if v, ok := tracingVerdict(pairs, -0.16); !ok || v.Met {
		t.Errorf("-16 %%: %+v, %v; want not met", v, ok)
	}
	other := []Pair{{Base: base, Treated: &Report{Scenario: "linear4", DomainEvents: "none"}}}
	if v, ok := tracingVerdict(other, 0.15); ok {
		t.Errorf("pairs that are not about tracing judged: %+v", v)
	}
	if _, ok := tracingVerdict(nil, 0); ok {
		t.Error("no pairs judged")
	}
}
