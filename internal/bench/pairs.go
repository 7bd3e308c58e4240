package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Pair is one alternating pair of runs: a base configuration and a treated
// one (tracing on, another build) run back to back on the same server, so
// that the host's drift between the pairs cancels out of each pair's
// change. A/B comparisons in docs/performance.md are medians of such pairs.
type Pair struct {
	Base    *Report `json:"base"`
	Treated *Report `json:"treated"`
	// Change is the treated run's steps/s relative to the base run's, as
	// a fraction (-0.13 for 13 % fewer).
	Change float64 `json:"change"`
	// PagesChange is the same for the shared-buffer pages touched per step
	// (DBCounters.BuffersPerStep), which move far less with the host than
	// steps/s; 0 when either run lacks them (reports from before they were
	// counted).
	PagesChange float64 `json:"pages_change,omitempty"`
}

// Pairs takes reports as (base, treated) pairs, in order, and returns the
// pairs with the median of their changes of steps/s.
func Pairs(reports []*Report) ([]Pair, float64, error) {
	if len(reports) == 0 || len(reports)%2 != 0 {
		return nil, 0, fmt.Errorf("pairs need a base and a treated report each: %d reports given", len(reports))
	}
	var out []Pair
	changes := make([]float64, 0, len(reports)/2)
	for i := 0; i < len(reports); i += 2 {
		b, t := reports[i], reports[i+1]
		if b.StepsPerSec <= 0 {
			return nil, 0, fmt.Errorf("pair %d: the base run (%s) has no steps/s", i/2+1, b.Label())
		}
		p := Pair{Base: b, Treated: t, Change: t.StepsPerSec/b.StepsPerSec - 1}
		if b.DB.BuffersPerStep > 0 && t.DB.BuffersPerStep > 0 {
			p.PagesChange = t.DB.BuffersPerStep/b.DB.BuffersPerStep - 1
		}
		out = append(out, p)
		changes = append(changes, p.Change)
	}
	return out, median(changes), nil
}

// PrintPairs writes each pair's steps/s, CPU and pages per step, base →
// treated, and the median changes of steps/s and, where every pair has
// them, of pages per step.
func PrintPairs(w io.Writer, pairs []Pair, med float64) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pair\tbase\ttreated\tsteps/s\tchange\tpostgres µs/step\tapp µs/step\tpages/step\tload avg\t")
	pages := make([]float64, 0, len(pairs))
	for i, p := range pairs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f → %.0f\t%+.1f %%\t%.0f → %.0f\t%.0f → %.0f\t%s → %s\t%.1f, %.1f\t\n", i+1,
			p.Base.Label(), p.Treated.Label(), p.Base.StepsPerSec, p.Treated.StepsPerSec, 100*p.Change,
			p.Base.CPUPerStepMicros["postgres"], p.Treated.CPUPerStepMicros["postgres"],
			appCPU(p.Base), appCPU(p.Treated), measured(p.Base.DB.BuffersPerStep), measured(p.Treated.DB.BuffersPerStep),
			p.Base.Machine.LoadAvgBefore, p.Treated.Machine.LoadAvgBefore)
		if p.Base.DB.BuffersPerStep > 0 && p.Treated.DB.BuffersPerStep > 0 {
			pages = append(pages, p.PagesChange)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "median change of steps/s over %d pairs: %+.1f %%\n", len(pairs), 100*med)
	if len(pages) == len(pairs) {
		fmt.Fprintf(w, "median change of pages per step: %+.1f %%\n", 100*median(pages))
	}
	if v, ok := tracingVerdict(pairs, med); ok {
		printVerdicts(w, []Verdict{v})
	}
}

func appCPU(r *Report) float64 {
	return r.CPUPerStepMicros["in_process"] + r.CPUPerStepMicros["orchestrator"] + r.CPUPerStepMicros["workers"]
}
