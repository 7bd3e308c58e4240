// Package traceparent reads and writes W3C traceparents
// ("00-<trace id>-<span id>-<flags>"), the trace context a task stores when
// it is accepted and every queue message carries. Its only dependency is the
// OpenTelemetry trace API, so the worker SDK and the orchestrator's telemetry
// share it.
package traceparent

import (
	"go.opentelemetry.io/otel/trace"
)

// SpanContext rebuilds the remote span context of a traceparent, keeping
// only its sampled flag; false when tp is not a version 00 traceparent.
func SpanContext(tp string) (trace.SpanContext, bool) {
	// "00-" trace id (32 hex digits) "-" span id (16) "-" flags (2): the
	// fields are sliced by position, without splitting the string (this
	// runs for every span the orchestrator and the workers build).
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return trace.SpanContext{}, false
	}
	tid, err := trace.TraceIDFromHex(tp[3:35])
	if err != nil {
		return trace.SpanContext{}, false
	}
	sid, err := trace.SpanIDFromHex(tp[36:52])
	if err != nil {
		return trace.SpanContext{}, false
	}
	hi, ok1 := unhex(tp[53])
	lo, ok2 := unhex(tp[54])
	if !ok1 || !ok2 {
		return trace.SpanContext{}, false
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
		TraceFlags: trace.TraceFlags(hi<<4|lo) & trace.FlagsSampled, Remote: true}), true
}

// unhex is a hex digit's value, either case (as encoding/hex reads them).
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Format writes a span context as a traceparent.
func Format(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}
