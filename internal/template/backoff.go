package template

import (
	"math"
	"math/rand/v2"
	"time"
)

// maxBackoffMs is the most milliseconds a time.Duration holds; it keeps the
// conversion from overflowing whatever a hand-built Retry says.
const maxBackoffMs = math.MaxInt64 / int64(time.Millisecond)

// Backoff is the delay before retrying after failed attempt `attempt`
// (1-based): "equal jitter", uniform over [c/2, c) where
// c = min(cap, base * 2^(attempt-1)). Half the window is a guaranteed pause
// (a step configured with base_ms: 1000 never retries at once); the other
// half is spread at random so that steps which failed together (a
// dependency going down) do not retry together. rnd returns a number in
// [0, 1); nil means math/rand/v2. Attempts below 1 count as 1.
func (r Retry) Backoff(attempt int, rnd func() float64) time.Duration {
	ceiling := r.ceiling(attempt)
	if ceiling <= 0 {
		return 0
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	f := rnd()
	if !(f > 0) { // also catches NaN
		f = 0
	}
	if f >= 1 {
		f = math.Nextafter(1, 0)
	}
	half := ceiling / 2
	d := half + time.Duration(f*float64(ceiling-half))
	// float64 rounds large ceilings; never hand back more than the ceiling.
	if d > ceiling || d < half {
		d = ceiling
	}
	return d
}

// ceiling is min(cap, base * 2^(attempt-1)), computed without overflow.
func (r Retry) ceiling(attempt int) time.Duration {
	base := max(int64(r.BackoffBaseMs), 0)
	limit := min(max(int64(r.BackoffCapMs), 0), maxBackoffMs)
	if base == 0 || limit == 0 {
		return 0
	}
	exp := max(attempt, 1) - 1
	ms := limit
	// base << exp fits under limit exactly when base <= limit >> exp.
	if exp < 63 && base <= limit>>exp {
		ms = base << exp
	}
	return time.Duration(ms) * time.Millisecond
}
