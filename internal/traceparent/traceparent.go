// Package traceparent reads and writes W3C traceparents
// ("00-<trace id>-<span id>-<flags>"), the trace context a task stores when
// it is accepted and every queue message carries. Its only dependency is the
// OpenTelemetry trace API, so the worker SDK and the orchestrator's telemetry
// share it.
package traceparent

import (
	"encoding/hex"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// SpanContext rebuilds the remote span context of a traceparent, keeping
// only its sampled flag; false when tp is not a version 00 traceparent.
func SpanContext(tp string) (trace.SpanContext, bool) {
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

// Format writes a span context as a traceparent.
func Format(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}
