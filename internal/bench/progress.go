package bench

import (
	"fmt"
	"io"
	"time"
)

// progress draws a one-line status on a terminal (rewritten in place), or a
// line every few seconds when the output is a file or a pipe.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	total int64
	// steps counts the steps run so far, when the workers can tell (nil
	// otherwise). Tasks finish only with their last step, so a step rate
	// derived from finished tasks would be far off in the middle of a run.
	steps func() int64
	start time.Time

	last      time.Time
	lastDone  int64
	lastSteps int64
	drawn     bool
}

func newProgress(w io.Writer, tty bool, label string, total int64, steps func() int64) *progress {
	if w == nil {
		w = io.Discard
	}
	now := time.Now()
	return &progress{w: w, tty: tty, label: label, total: total, steps: steps, start: now, last: now}
}

func (p *progress) every() time.Duration {
	if p.tty {
		return 250 * time.Millisecond
	}
	return 5 * time.Second
}

// update shows done of total tasks completed; final ends the line.
func (p *progress) update(done, submitted int64, final bool) {
	now := time.Now()
	if !final && now.Sub(p.last) < p.every() {
		return
	}
	elapsed := now.Sub(p.start).Seconds()
	var steps int64
	if p.steps != nil {
		steps = p.steps()
	}
	rate, stepRate := 0.0, 0.0
	if d := now.Sub(p.last).Seconds(); d > 0 {
		rate = float64(done-p.lastDone) / d
		stepRate = float64(steps-p.lastSteps) / d
	}
	avg := 0.0
	if elapsed > 0 {
		avg = float64(done) / elapsed
	}
	pct := 0.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	nowRates := fmt.Sprintf("%.0f tasks/s", rate)
	if p.steps != nil {
		nowRates += fmt.Sprintf(" %.0f steps/s", stepRate)
	}
	line := fmt.Sprintf("[%s] %d/%d tasks done (%.0f%%), %d submitted | now %s | avg %.0f tasks/s | %.1fs",
		p.label, done, p.total, pct, submitted, nowRates, avg, elapsed)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		if final {
			fmt.Fprintln(p.w)
		}
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.last, p.lastDone, p.lastSteps = now, done, steps
}

// note prints a message on its own line, keeping the status line intact.
func (p *progress) note(format string, args ...any) {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}
