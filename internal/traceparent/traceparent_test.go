package traceparent

import (
	"encoding/hex"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestRoundTripAndRejects(t *testing.T) {
	for _, tp := range []string{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
	} {
		sc, ok := SpanContext(tp)
		if !ok || !sc.IsRemote() || Format(sc) != tp || sc.IsSampled() != (tp[len(tp)-1] == '1') {
			t.Errorf("%s: ok %v, remote %v, sampled %v, formatted %s", tp, ok, sc.IsRemote(), sc.IsSampled(), Format(sc))
		}
	}
	// Flags other than sampled are dropped.
	if sc, _ := SpanContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"); sc.TraceFlags() != trace.FlagsSampled {
		t.Errorf("flags 03 read as %s, want 01", sc.TraceFlags())
	}
	for _, bad := range []string{
		"", "garbage", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
		"00-00000000000000000000000000000000-b7ad6b7169203331-01",
		"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
		"00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
	} {
		if _, ok := SpanContext(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// splitSpanContext is the reading SpanContext had before it sliced by
// position: split at "-", each field decoded on its own.
func splitSpanContext(tp string) (trace.SpanContext, bool) {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[3]) != 2 {
		return trace.SpanContext{}, false
	}
	tid, err := trace.TraceIDFromHex(parts[1])
	if err != nil {
		return trace.SpanContext{}, false
	}
	sid, err := trace.SpanIDFromHex(parts[2])
	if err != nil {
		return trace.SpanContext{}, false
	}
	flags, err := hex.DecodeString(parts[3])
	if err != nil {
		return trace.SpanContext{}, false
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
		TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true}), true
}

// Every one-character change, insertion and deletion of a valid
// traceparent reads as the split-based reading reads it.
func TestSpanContextReadsAsSplitting(t *testing.T) {
	base := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	inputs := []string{base, strings.ToUpper(base), base + "-", "00-" + strings.Repeat("0", 32) + "-b7ad6b7169203331-01"}
	for i := range len(base) + 1 {
		for _, c := range "-0aAfFgz9 " {
			if i < len(base) {
				inputs = append(inputs, base[:i]+string(c)+base[i+1:])
			}
			inputs = append(inputs, base[:i]+string(c)+base[i:])
		}
		if i < len(base) {
			inputs = append(inputs, base[:i]+base[i+1:])
		}
	}
	for _, tp := range inputs {
		got, gok := SpanContext(tp)
		want, wok := splitSpanContext(tp)
		if gok != wok || !got.Equal(want) || got.IsRemote() != want.IsRemote() {
			t.Errorf("%q: read as %v %v, splitting reads %v %v", tp, got, gok, want, wok)
		}
	}
}

func BenchmarkSpanContext(b *testing.B) {
	for b.Loop() {
		if _, ok := SpanContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"); !ok {
			b.Fatal("rejected")
		}
	}
}
