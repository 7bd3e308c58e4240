package worker

import (
	"context"
	"sync"
	"sync/atomic"
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
	if got := gatherSlots(ctx, slots, 16, 250*time.Millisecond, 250*time.Millisecond, 10*time.Second); got != 6 {
		t.Errorf("burst: took %d slots, want 6", got)
	}
	wg.Wait()

	// Nothing comes free: the first gap ends it with none taken.
	start := time.Now()
	if got := gatherSlots(ctx, full(4), 4, 20*time.Millisecond, 20*time.Millisecond, 10*time.Second); got != 0 {
		t.Errorf("idle: took %d slots, want 0", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("idle: waited %v for a gap of 20ms", waited)
	}

	// Slots keep coming free within the gap: the bound ends it with some
	// taken and some still to come.
	slots = full(1000)
	wg = release(slots, 1000, time.Millisecond)
	got := gatherSlots(ctx, slots, 1000, time.Second, time.Second, 100*time.Millisecond)
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
	if got := gatherSlots(ctx, slots, 3, time.Hour, time.Hour, time.Hour); got != 3 {
		t.Errorf("free slots: took %d, want 3", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("free slots: waited %v with the slots there", waited)
	}

	// A cancelled context ends it at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got := gatherSlots(cctx, full(2), 2, time.Hour, time.Hour, time.Hour); got != 0 {
		t.Errorf("cancelled: took %d", got)
	}
}

// TestGatherSlotsWaitsLongerForTheFirst: a slot that a submission will free
// is waited for up to first, longer than the gap, and the slots that come
// with it are taken within the gap.
func TestGatherSlotsWaitsLongerForTheFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	slots := make(chan struct{}, 8)
	for range 8 {
		slots <- struct{}{}
	}
	go func() {
		time.Sleep(50 * time.Millisecond) // the submission's commit
		for range 5 {                     // its slots, one goroutine at a time
			<-slots
		}
	}()
	if got := gatherSlots(ctx, slots, 8, 10*time.Second, 250*time.Millisecond, 10*time.Second); got != 5 {
		t.Errorf("took %d slots after a 50ms first wait, want the 5 freed together", got)
	}
	// (A first wait that ends with nothing freed takes nothing: the idle
	// case of TestGatherSlotsTakesABurstAndStopsAtAGap.)
}

// TestGatherSubmissions: results that follow the first closely join its
// call while handlers still run; the gap, the end of the running handlers,
// the bound and a closed channel each end the gathering; and a call never
// exceeds maxSubmitBatch.
func TestGatherSubmissions(t *testing.T) {
	t.Parallel()
	sub := func() *submission { return &submission{} }
	var running atomic.Int64

	// Three more come within the gap while handlers run: all four go.
	running.Store(3)
	ch := make(chan *submission, 8)
	go func() {
		for range 3 {
			time.Sleep(5 * time.Millisecond)
			ch <- sub()
		}
	}()
	if got := len(gatherSubmissions(ch, []*submission{sub()}, &running, 5*time.Second, 10*time.Second)); got != 4 {
		t.Errorf("burst: %d submissions in the call, want 4", got)
	}

	// Nothing comes within the gap: the first goes alone.
	start := time.Now()
	if got := len(gatherSubmissions(ch, []*submission{sub()}, &running, 20*time.Millisecond, 10*time.Second)); got != 1 {
		t.Errorf("gap: %d submissions in the call, want 1", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("gap: waited %v for a gap of 20ms", waited)
	}

	// The last running handler's result arrives: no more waiting.
	running.Store(0)
	ch <- sub()
	start = time.Now()
	if got := len(gatherSubmissions(ch, []*submission{sub()}, &running, 10*time.Second, 10*time.Second)); got != 2 {
		t.Errorf("none running: %d submissions in the call, want 2", got)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("none running: waited %v", waited)
	}

	// Results keep coming within the gap: the bound ends the call.
	running.Store(1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case ch <- sub():
				time.Sleep(time.Millisecond)
			}
		}
	}()
	got := len(gatherSubmissions(ch, []*submission{sub()}, &running, time.Second, 50*time.Millisecond))
	close(stop)
	<-done
	if got < 2 || got >= maxSubmitBatch {
		t.Errorf("steady: %d submissions in a 50ms bound with one a millisecond", got)
	}
	for len(ch) > 0 {
		<-ch
	}

	// Never more than maxSubmitBatch in one call.
	big := make(chan *submission, 2*maxSubmitBatch)
	for range 2 * maxSubmitBatch {
		big <- sub()
	}
	if got := len(gatherSubmissions(big, []*submission{sub()}, &running, time.Hour, time.Hour)); got != maxSubmitBatch {
		t.Errorf("full: %d submissions in the call, want %d", got, maxSubmitBatch)
	}

	// A closed channel (the worker stopping) ends it with what it has.
	closed := make(chan *submission, 1)
	closed <- sub()
	close(closed)
	if got := len(gatherSubmissions(closed, []*submission{sub()}, &running, time.Hour, time.Hour)); got != 2 {
		t.Errorf("closed: %d submissions in the call, want 2", got)
	}
}
