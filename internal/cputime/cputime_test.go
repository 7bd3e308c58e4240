package cputime

import (
	"testing"
	"time"
)

func TestSelfCountsWork(t *testing.T) {
	before := Self()
	if before <= 0 {
		t.Fatalf("Self() = %v before any work; a running test has used some CPU", before)
	}
	// Spin for 50 ms of wall time: at least part of it is this thread's
	// CPU time, however busy the machine is.
	x := 0
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	if after := Self(); after <= before {
		t.Fatalf("Self() went from %v to %v over 50 ms of spinning (%d rounds)", before, after, x)
	}
}
