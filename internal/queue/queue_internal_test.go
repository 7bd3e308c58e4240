package queue

import (
	"math"
	"testing"
	"time"
)

func TestDurationConversion(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d       time.Duration
		sec, ms int32
	}{
		{0, 0, 0},
		{-time.Second, 0, 0},
		{time.Nanosecond, 1, 1},
		{999 * time.Millisecond, 1, 999},
		{time.Second, 1, 1000},
		{1500 * time.Millisecond, 2, 1500},
		{30 * time.Second, 30, 30000},
		{math.MaxInt64, math.MaxInt32, math.MaxInt32},
	} {
		if got := seconds(c.d); got != c.sec {
			t.Errorf("seconds(%v) = %d, want %d", c.d, got, c.sec)
		}
		if got := milliseconds(c.d); got != c.ms {
			t.Errorf("milliseconds(%v) = %d, want %d", c.d, got, c.ms)
		}
	}
}

func TestDecodeHeaders(t *testing.T) {
	t.Parallel()
	got := decodeHeaders([]byte(`{"s": "x", "n": 1.5, "b": false, "o": {"k": [1]}, "z": null}`))
	want := map[string]string{"s": "x", "n": "1.5", "b": "false", "o": `{"k": [1]}`, "z": "null"}
	if len(got) != len(want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	// Absent, and not an object: no headers (an odd message must not make
	// its queue unreadable).
	for _, raw := range []string{"", "null", "[1, 2]", `"s"`, "7", "{"} {
		if h := decodeHeaders([]byte(raw)); h != nil {
			t.Errorf("decodeHeaders(%q) = %#v, want nil", raw, h)
		}
	}
	if h := decodeHeaders(nil); h != nil {
		t.Errorf("decodeHeaders(nil) = %#v, want nil", h)
	}
}

func TestNotifyChannel(t *testing.T) {
	t.Parallel()
	if got := NotifyChannel("worker_billing_queue"); got != "pgmq.q_worker_billing_queue.INSERT" {
		t.Fatalf("NotifyChannel = %q", got)
	}
	// LISTEN channels are identifiers: at most 63 bytes.
	long := "a"
	for len(long) < MaxQueueNameLen {
		long += "a"
	}
	if n := len(NotifyChannel(long)); n > 63 {
		t.Fatalf("channel for a %d-character queue is %d bytes, over Postgres's 63", MaxQueueNameLen, n)
	}
}

func TestArgumentChecks(t *testing.T) {
	t.Parallel()
	if err := checkSend("ok", []byte(`{"a":`)); err == nil {
		t.Error("invalid json body accepted")
	}
	if err := checkSend("ok", nil); err == nil {
		t.Error("empty body accepted")
	}
	if err := checkSendBatch("ok", nil, []map[string]string{{}}); err == nil {
		t.Error("1 header for 0 bodies accepted")
	}
	if err := checkRead("ok", 0); err == nil {
		t.Error("qty 0 accepted")
	}
	if err := checkRead("ok", 1); err != nil {
		t.Errorf("qty 1 refused: %v", err)
	}
}
