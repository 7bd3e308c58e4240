// Package cputime reads the CPU time this process has used, for the
// benchmarks that report CPU per operation beside wall time: on a shared
// machine another tenant's load stretches wall time far more than the
// CPU an operation takes.
package cputime

import (
	"syscall"
	"time"
)

// Self is the CPU time, user and system, that this process has used so
// far, in all its threads (zero if the kernel does not say).
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
