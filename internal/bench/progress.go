package bench

import (
	"fmt"
	"io"
	"time"
)

// progress draws a one-line status on a terminal (rewritten in place), or a
// line every few seconds when the output is a file or a pipe.
type progress struct {
	w       io.Writer
	tty     bool
	label   string
	total   int64
	perTask int
	start   time.Time

	last     time.Time
	lastDone int64
	drawn    bool
}

func newProgress(w io.Writer, tty bool, label string, total int64, perTask int) *progress {
	if w == nil {
		w = io.Discard
	}
	now := time.Now()
	return &progress{w: w, tty: tty, label: label, total: total, perTask: perTask, start: now, last: now}
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
	rate := 0.0
	if d := now.Sub(p.last).Seconds(); d > 0 {
		rate = float64(done-p.lastDone) / d
	}
	avg := 0.0
	if elapsed > 0 {
		avg = float64(done) / elapsed
	}
	pct := 0.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	line := fmt.Sprintf("[%s] %d/%d tasks done (%.0f%%), %d submitted | now %.0f tasks/s %.0f steps/s | avg %.0f tasks/s | %.1fs",
		p.label, done, p.total, pct, submitted, rate, rate*float64(p.perTask), avg, elapsed)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		if final {
			fmt.Fprintln(p.w)
		}
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.last, p.lastDone = now, done
}

// note prints a message on its own line, keeping the status line intact.
func (p *progress) note(format string, args ...any) {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}
