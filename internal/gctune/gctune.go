// Package gctune sets the garbage collector's pace for Tasker's own
// processes (the orchestrator and the example worker), not for programs
// that import the worker SDK.
package gctune

import (
	"os"
	"runtime/debug"
)

// DefaultPercent is the GOGC the processes use unless GOGC is set. Their
// live heap is a few megabytes while they allocate quickly (pgx rows,
// JSON, spans), so with Go's default of 100 the collector ran constantly
// (199 collections in 30 s at 100 tasks/s, more under load): 15 % of the
// orchestrator's CPU in a linear4 benchmark with tracing. At 400 the heap may grow to five times the live data (tens of
// megabytes at most here) and collections are a quarter as frequent
// (docs/performance.md: app CPU per step −15 to −22 %).
const DefaultPercent = 400

// Apply sets DefaultPercent unless the GOGC environment variable says
// otherwise, and returns the percentage in force.
func Apply() int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		old := debug.SetGCPercent(100)
		debug.SetGCPercent(old) // read back what the runtime took from GOGC
		return old
	}
	debug.SetGCPercent(DefaultPercent)
	return DefaultPercent
}
