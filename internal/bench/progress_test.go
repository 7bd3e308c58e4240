package bench

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The status line's step rate comes from the steps the workers ran, not
// from finished tasks times their steps: in the middle of a linear4 run,
// many steps run while few tasks finish.
func TestProgressStepRate(t *testing.T) {
	var out bytes.Buffer
	var steps int64 = 400
	p := newProgress(&out, false, "linear4", 100, func() int64 { return steps })
	p.update(0, 100, false) // too soon after the start: not drawn
	if out.Len() != 0 {
		t.Fatalf("drawn before its interval: %q", out.String())
	}
	p.last = time.Now().Add(-2 * time.Second)
	p.update(5, 100, true)
	line := out.String()
	var tasksRate, stepRate float64
	i := strings.Index(line, "| now ")
	if i < 0 {
		t.Fatalf("no rates in %q", line)
	}
	if _, err := fmt.Sscanf(line[i:], "| now %f tasks/s %f steps/s", &tasksRate, &stepRate); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	// 400 steps and 5 tasks in (a little over) two seconds.
	if stepRate < 180 || stepRate > 200 || tasksRate < 2 || tasksRate > 3 {
		t.Errorf("rates %.0f tasks/s, %.0f steps/s in %q; want about 2.5 and 200", tasksRate, stepRate, line)
	}

	out.Reset()
	q := newProgress(&out, false, "single", 100, nil)
	q.update(5, 100, true)
	if strings.Contains(out.String(), "steps/s") {
		t.Errorf("a step rate without a step count: %q", out.String())
	}
}

// A run's report says which traces it recorded, and summaries do not mix
// sampled runs with runs that traced everything.
func TestReportNamesTraceSampling(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	o := Options{Tracing: true}
	o.Config.Telemetry.TraceSampleRatio = 0.1
	if got := traceSampling(o); got != "0.1" {
		t.Errorf("traceSampling = %q, want 0.1", got)
	}
	if got := traceSampling(Options{}); got != "" {
		t.Errorf("traceSampling without tracing = %q, want empty", got)
	}
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
	if got := traceSampling(o); got != "parentbased_traceidratio 0.25" {
		t.Errorf("traceSampling with OTEL_TRACES_SAMPLER = %q", got)
	}
	all := Report{Scenario: "linear4", Tracing: true, TraceSampling: "1"}
	some := Report{Scenario: "linear4", Tracing: true, TraceSampling: "0.1"}
	if all.Label() == some.Label() || !strings.Contains(some.Label(), "sampled 0.1") {
		t.Errorf("labels %q and %q", all.Label(), some.Label())
	}
	var out bytes.Buffer
	some.Print(&out)
	if !strings.Contains(out.String(), "tracing true (sampling 0.1)") {
		t.Errorf("setup line does not name the sampling:\n%s", out.String())
	}
}

func TestPollDueCountsOftenOnlyNearTheEnd(t *testing.T) {
	for _, c := range []struct {
		ago    time.Duration
		active int64
		want   bool
	}{
		{0, -1, true},                         // never counted
		{200 * time.Millisecond, 5000, false}, // many left: once a second
		{time.Second, 5000, true},
		{200 * time.Millisecond, 500, true}, // near the end: every tick
		{200 * time.Millisecond, 0, true},
	} {
		if got := pollDue(c.ago, c.active); got != c.want {
			t.Errorf("pollDue(%s, %d) = %v, want %v", c.ago, c.active, got, c.want)
		}
	}
}
