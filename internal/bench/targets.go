package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// The targets ("Performance": 2 cores, Postgres on the same
// machine, tracing off, medians of 3), as docs/performance.md quotes them.
const (
	targetLinear4StepsPerSec = 5000
	targetLinear4Steps       = 20000
	targetSingleTasksPerSec  = 3000
	targetOpenRate           = 100
	targetOpenP50Ms          = 8
	targetOpenP99Ms          = 25
	targetHistoryLoss        = 0.20
	targetTracingCost        = 0.15
)

// Verdict is one of the targets as a set of runs measured it.
type Verdict struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Verdicts returns the targets that the summaries measured: linear4
// and single in a closed loop, single in an open loop at 100 tasks/s, and
// linear4 with a seeded history against linear4 on empty tables. A
// configuration with any other option (tracing, processes, payload sizes,
// a domain-event selection…) has another label and is not judged. The
// tracing target needs alternating pairs: PrintPairs judges it.
func Verdicts(ss []Summary) []Verdict {
	var out []Verdict
	byLabel := map[string]*Summary{}
	for i := range ss {
		byLabel[ss[i].Label] = &ss[i]
	}
	share := func(s *Summary) string {
		if s.ModelRatio <= 0 {
			return ""
		}
		return fmt.Sprintf("; %.1f %% of the bare design model (%.0f)", 100*s.ModelRatio, s.ModelStepsPS)
	}
	if s := byLabel["linear4"]; s != nil {
		steps := 4 * s.Tasks
		v := Verdict{Target: "linear4 ≥ 5,000 steps/s over 20,000 steps",
			Measured: fmt.Sprintf("%.0f steps/s over %d steps%s", s.StepsPerSec, steps, share(s)),
			Met:      s.StepsPerSec >= targetLinear4StepsPerSec && steps >= targetLinear4Steps && s.Incomplete == 0}
		out = append(out, v)
	}
	if s := byLabel["single"]; s != nil {
		out = append(out, Verdict{Target: "single ≥ 3,000 tasks/s",
			Measured: fmt.Sprintf("%.0f tasks/s%s", s.TasksPerSec, share(s)),
			Met:      s.TasksPerSec >= targetSingleTasksPerSec && s.Incomplete == 0})
	}
	for i := range ss {
		s := &ss[i]
		rest, ok := strings.CutPrefix(s.Label, fmt.Sprintf("single open %d/s ", targetOpenRate))
		if !ok || strings.Contains(rest, " ") {
			continue
		}
		m := fmt.Sprintf("p50 %s, p99 %s", ms(s.LatencyP50), ms(s.LatencyP99))
		if s.ModelP50 > 0 {
			m += fmt.Sprintf(" (the design model on the same schedule: p50 %s, p99 %s)", ms(s.ModelP50), ms(s.ModelP99))
		}
		out = append(out, Verdict{Target: "open loop single at 100 tasks/s: p50 ≤ 8 ms, p99 ≤ 25 ms", Measured: m,
			Met: s.LatencyP50 <= targetOpenP50Ms && s.LatencyP99 <= targetOpenP99Ms && s.Incomplete == 0})
	}
	if empty := byLabel["linear4"]; empty != nil && empty.StepsPerSec > 0 {
		for i := range ss {
			s := &ss[i]
			rest, ok := strings.CutPrefix(s.Label, "linear4 history ")
			if !ok {
				continue
			}
			n, err := strconv.Atoi(rest)
			if err != nil {
				continue
			}
			change := s.StepsPerSec/empty.StepsPerSec - 1
			out = append(out, Verdict{Target: "linear4 with 1,000,000 completed tasks within 20 % of an empty database",
				Measured: fmt.Sprintf("%.0f steps/s with %d completed tasks against %.0f empty (%+.1f %%)", s.StepsPerSec, n, empty.StepsPerSec, 100*change),
				Met:      n >= 1000000 && change >= -targetHistoryLoss})
		}
	}
	return out
}

// tracingVerdict judges the tracing target when every pair is a run and the
// same run with tracing on.
func tracingVerdict(pairs []Pair, med float64) (Verdict, bool) {
	if len(pairs) == 0 {
		return Verdict{}, false
	}
	for _, p := range pairs {
		if p.Treated.Label() != p.Base.Label()+" tracing" {
			return Verdict{}, false
		}
	}
	return Verdict{Target: "tracing on costs at most 15 % throughput",
		Measured: fmt.Sprintf("%+.1f %% (median of %d alternating pairs)", 100*med, len(pairs)),
		Met:      med >= -targetTracingCost}, true
}

// printVerdicts writes the verdicts as a table.
func printVerdicts(w io.Writer, vs []Verdict) {
	if len(vs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nthe issue's targets (docs/performance.md; medians of these runs)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range vs {
		met := "not met"
		if v.Met {
			met = "met"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Target, v.Measured, met)
	}
	_ = tw.Flush()
}
