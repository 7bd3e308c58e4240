// Package wait is the one bounded-poll loop that tests and test harnesses
// share: check a condition at an interval until it holds, it fails, or a
// deadline passes. Never a bare sleep waiting for an outcome.
package wait

import (
	"errors"
	"time"
)

// ErrTimeout is returned by Poll when the deadline passes first.
var ErrTimeout = errors.New("condition not met before the deadline")

// Poll calls check until it reports done (Poll returns nil), returns an
// error (Poll returns it at once), or the deadline passes (Poll returns
// ErrTimeout). check runs at least once.
func Poll(deadline time.Time, interval time.Duration, check func() (done bool, err error)) error {
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(interval)
	}
}
