package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApplyKeepsAnExplicitGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime did at start with GOGC=150
	if got := Apply(); got != 150 {
		t.Fatalf("Apply with GOGC=150 = %d, want 150", got)
	}
	if got := debug.SetGCPercent(150); got != 150 {
		t.Fatalf("GC percent %d after Apply, want 150", got)
	}
}

func TestApplySetsTheDefault(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	if got := Apply(); got != DefaultPercent {
		t.Fatalf("Apply without GOGC = %d, want %d", got, DefaultPercent)
	}
	if got := debug.SetGCPercent(100); got != DefaultPercent {
		t.Fatalf("GC percent %d after Apply, want %d", got, DefaultPercent)
	}
}
