package template

import (
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	r := Retry{MaxAttempts: 5, Retryable: true, BackoffBaseMs: 1000, BackoffCapMs: 60000}
	almostOne := math.Nextafter(1, 0)
	cases := []struct {
		name    string
		r       Retry
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{"attempt 1 at top of window", r, 1, almostOne, time.Second - 1},
		{"attempt 1 bottom of window", r, 1, 0, 500 * time.Millisecond},
		{"attempt 1 middle", r, 1, 0.5, 750 * time.Millisecond},
		{"attempt 2 doubles", r, 2, 0.5, 1500 * time.Millisecond},
		{"attempt 3 doubles again", r, 3, 0.5, 3 * time.Second},
		{"attempt 7 is capped", r, 7, 0.5, 45 * time.Second},
		{"zero jitter keeps half the window", r, 3, 0, 2 * time.Second},
		{"attempt 0 counts as 1", r, 0, 0.5, 750 * time.Millisecond},
		{"negative attempt", r, -3, 0.5, 750 * time.Millisecond},
		{"attempt 1000 no overflow", r, 1000, 0.5, 45 * time.Second},
		{"max int attempt", r, math.MaxInt, 0.5, 45 * time.Second},
		{"base zero", Retry{BackoffBaseMs: 0, BackoffCapMs: 1000}, 5, 0.9, 0},
		{"cap zero", Retry{BackoffBaseMs: 0, BackoffCapMs: 0}, 5, 0.9, 0},
		{"huge hand-built cap", Retry{BackoffBaseMs: 1, BackoffCapMs: math.MaxInt}, 1000, almostOne, time.Duration(maxBackoffMs) * time.Millisecond},
		{"negative settings", Retry{BackoffBaseMs: -1, BackoffCapMs: -1}, 2, 0.5, 0},
		{"rnd out of range high", r, 1, 7, time.Second},
		{"rnd negative", r, 1, -1, 500 * time.Millisecond},
		{"rnd NaN", r, 1, math.NaN(), 500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := tc.r.Backoff(tc.attempt, func() float64 { return tc.rnd })
			// A float64 product is off by its rounding: at most a few parts
			// in 10^16, a microsecond for the largest windows.
			tol := max(time.Microsecond, tc.want/1e9)
			if d := got - tc.want; d < -tol || d > tol || got < 0 {
				t.Errorf("Backoff(%d) = %v, want %v", tc.attempt, got, tc.want)
			}
		})
	}
}

// TestBackoffBounds samples the jitter: never below half the window, never
// above the window or the cap, and spread over the whole upper half.
func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	r := Retry{BackoffBaseMs: 100, BackoffCapMs: 5000}
	rng := rand.New(rand.NewPCG(1, 2))
	for attempt := 1; attempt <= 40; attempt++ {
		window := min(100*time.Millisecond<<min(attempt-1, 30), 5*time.Second)
		lo, hi := window, time.Duration(0)
		for range 2000 {
			d := r.Backoff(attempt, rng.Float64)
			if d < window/2 || d > window {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, window/2, window)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo > window*11/20 || hi < window*19/20 {
			t.Errorf("attempt %d: samples span only [%v, %v] of [%v, %v]", attempt, lo, hi, window/2, window)
		}
	}
	if d := r.Backoff(1, nil); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("default rnd: %v", d)
	}
}

// The READMEs describe the backoff Backoff computes: equal jitter, never
// full jitter (which could retry at once).
func TestBackoffDocsSayEqualJitter(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"../../README.md", "../../config/templates/README.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc := strings.Join(strings.Fields(string(b)), " ") // a phrase may wrap
		if !strings.Contains(doc, "equal jitter") || strings.Contains(doc, "full jitter") {
			t.Errorf("%s does not describe the retry backoff as equal jitter over [c/2, c)", path)
		}
	}
}
