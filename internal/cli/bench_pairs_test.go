package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bench summarize --pairs reads the reports as (base, treated) pairs in the
// order given and prints each pair's change of steps/s and their median; an
// odd number of reports is a usage error that says why.
func TestBenchSummarizePairs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, stepsPerSec float64, tracing bool, pages float64) string {
		rep := map[string]any{"scenario": "linear4", "load": "closed", "mode": "in-process", "tracing": tracing,
			"steps_per_sec": stepsPerSec, "tasks": 5000,
			"cpu_per_step_us": map[string]float64{"postgres": 800, "in_process": 300},
			"machine":         map[string]any{"cpus": 2, "loadavg_before": 2.5}}
		if pages > 0 {
			rep["db"] = map[string]any{"buffers_per_step": pages}
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Pair changes: -10 %, -20 %, +5 %: the median is -10 %. Pages per
	// step: 240 → 228 (-5 %), 240 → 240 (0 %), 250 → 245 (-2 %): -2 %.
	args := []string{"bench", "summarize", "--pairs",
		write("off-1.json", 2000, false, 240), write("on-1.json", 1800, true, 228),
		write("off-2.json", 1500, false, 240), write("on-2.json", 1200, true, 240),
		write("off-3.json", 1000, false, 250), write("on-3.json", 1050, true, 245)}
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"linear4 tracing", "2000 → 1800", "-10.0 %", "-20.0 %", "+5.0 %",
		"median change of steps/s over 3 pairs: -10.0 %", "240 → 228", "median change of pages per step: -2.0 %",
		"tracing on costs at most 15 % throughput  -10.0 % (median of 3 alternating pairs)  met"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Reports from before pages were counted: a dash, and no median of them.
	old := []string{"bench", "summarize", "--pairs", write("old-1.json", 2000, false, 0), write("old-2.json", 1800, true, 240)}
	out, errOut, code = run(t, old...)
	if code != 0 || !strings.Contains(out, "- → 240") || strings.Contains(out, "pages per step") {
		t.Errorf("a pair without pages on one side: exit %d, %s\n%s", code, errOut, out)
	}

	out, _, code = run(t, append([]string{"--json"}, args...)...)
	var js struct {
		Pairs []struct {
			Change      float64 `json:"change"`
			PagesChange float64 `json:"pages_change"`
		} `json:"pairs"`
		Median float64 `json:"median_change"`
	}
	if code != 0 || !decodeIndented(out, &js) || len(js.Pairs) != 3 || js.Median > -0.0999 || js.Median < -0.1001 ||
		js.Pairs[0].PagesChange > -0.0499 || js.Pairs[0].PagesChange < -0.0501 {
		t.Errorf("--json: exit %d, %+v:\n%s", code, js, out)
	}

	_, errOut, code = run(t, args[:len(args)-1]...)
	if code == 0 || !strings.Contains(errOut, "a base and a treated report each: 5 reports given") {
		t.Errorf("five reports: exit %d, %q; want a usage error naming the count", code, errOut)
	}
}
