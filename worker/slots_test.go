package worker

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestGatherSlotsTakesABurstAndStopsAtAGap: the slots a batch of results
// frees together are taken in one read; a slot that comes free alone after
// a pause is not waited for; and gathering never runs past its bound, however
// steadily slots keep coming free.
func TestGatherSlotsTakesABurstAndStopsAtAGap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	full := func(n int) chan struct{} {
		slots := make(chan struct{}, n)
		for range n {
			slots <- struct{}{}
		}
		return slots
	}
	release := func(slots chan struct{}, n int, every time.Duration) *sync.WaitGroup {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // ends after n releases
			defer wg.Done()
			for range n {
				time.Sleep(every)
				<-slots
			}
		}()
		return &wg
	}

	// A burst of 6 (one goroutine at a time, as handlers end) within a
	// generous gap: all 6 taken, then the gap ends the wait.
	slots := full(16)
	wg := release(slots, 6, 100*time.Microsecond)
	if got := gatherSlots(ctx, slots, 16, 250*time.Millisecond, 10*time.Second); got != 6 {
		t.Errorf("burst: took %d slots, want 6", got)
	}
	wg.Wait()

	// Nothing comes free: the first gap ends it with none taken.
	start := time.Now()
	if got := gatherSlots(ctx, full(4), 4, 20*time.Millisecond, 10*time.Second); got != 0 {
		t.Errorf("idle: took %d slots, want 0", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("idle: waited %v for a gap of 20ms", waited)
	}

	// Slots keep coming free within the gap: the bound ends it with some
	// taken and some still to come.
	slots = full(1000)
	wg = release(slots, 1000, time.Millisecond)
	got := gatherSlots(ctx, slots, 1000, time.Second, 100*time.Millisecond)
	if got == 0 || got >= 1000 {
		t.Errorf("steady: took %d of 1000 slots freed one a millisecond in a 100ms bound", got)
	}
	wg.Wait()

	// All it may take: stops at n without waiting for a gap.
	slots = full(8)
	for range 8 {
		<-slots
	}
	start = time.Now()
	if got := gatherSlots(ctx, slots, 3, time.Hour, time.Hour); got != 3 {
		t.Errorf("free slots: took %d, want 3", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("free slots: waited %v with the slots there", waited)
	}

	// A cancelled context ends it at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got := gatherSlots(cctx, full(2), 2, time.Hour, time.Hour); got != 0 {
		t.Errorf("cancelled: took %d", got)
	}
}
