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
