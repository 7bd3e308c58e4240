package wait_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/wait"
)

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	if err := wait.Poll(time.Now().Add(time.Second), time.Millisecond, func() (bool, error) { n++; return n == 3, nil }); err != nil || n != 3 {
		t.Errorf("done on the third check: err %v after %d checks", err, n)
	}
	boom := errors.New("boom")
	if err := wait.Poll(time.Now().Add(time.Second), time.Millisecond, func() (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("check error: %v", err)
	}
	start := time.Now()
	if err := wait.Poll(start.Add(30*time.Millisecond), 5*time.Millisecond, func() (bool, error) { return false, nil }); !errors.Is(err, wait.ErrTimeout) {
		t.Errorf("never done: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Error("Poll overran its deadline")
	}
}
