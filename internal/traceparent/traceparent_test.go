package traceparent

import (
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
