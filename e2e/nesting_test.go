//go:build e2e

package e2e

import "testing"

// TestNestedAtMicroseconds: a child within its parent passes, also when it
// ends in its parent's last microsecond or reads 1 µs past it (Jaeger's
// separate truncation of start and duration); one that starts before its
// parent, ends 2 µs past it, or has no parent does not.
func TestNestedAtMicroseconds(t *testing.T) {
	t.Parallel()
	parent := &jaegerSpan{StartTime: 1_000, Duration: 100} // 1,000 to 1,100 µs
	for _, tc := range []struct {
		start, duration int64
		want            bool
	}{
		{1_010, 50, true},
		{1_000, 100, true}, // the same as its parent: not strictly inside, still nested
		{1_050, 51, true},  // 1 µs past, within truncation
		{999, 10, false},   // starts before its parent
		{1_050, 52, false}, // 2 µs past
	} {
		child := &jaegerSpan{StartTime: tc.start, Duration: tc.duration, parent: parent}
		if got := nestedAtMicroseconds(child); got != tc.want {
			t.Errorf("child %d+%d in parent 1000+100: nested = %v, want %v", tc.start, tc.duration, got, tc.want)
		}
	}
	if nestedAtMicroseconds(&jaegerSpan{StartTime: 1_010, Duration: 1}) {
		t.Error("a span without a parent counted as nested")
	}
}
