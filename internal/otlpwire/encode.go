// Package otlpwire exports finished spans over OTLP (gRPC or HTTP/protobuf)
// with its own protobuf encoder.
//
// The OpenTelemetry SDK's OTLP exporters first copy every span into the
// generated protobuf structs (a heap object per attribute, value and event)
// and then marshal those with the reflection-driven protobuf runtime. In the
// engine's benchmark with every trace recorded that was a quarter of the
// orchestrator's and workers' CPU (docs/performance.md). This package writes
// the same ExportTraceServiceRequest straight from the SDK's ReadOnlySpans
// into one reused buffer. The bytes decode to what the SDK's exporters send
// (encode_test.go checks it against their transform), so collectors see no
// difference; only the order of resource and scope groups, which OTLP does
// not define, is the order of first appearance here.
package otlpwire

import (
	"math"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP messages written here
// (opentelemetry/proto/{collector/trace,trace,common,resource}/v1).
const (
	fRequestResourceSpans = 1 // ExportTraceServiceRequest.resource_spans

	fResourceSpansResource   = 1
	fResourceSpansScopeSpans = 2
	fResourceSpansSchemaURL  = 3

	fResourceAttributes = 1

	fScopeSpansScope     = 1
	fScopeSpansSpans     = 2
	fScopeSpansSchemaURL = 3

	fScopeName       = 1
	fScopeVersion    = 2
	fScopeAttributes = 3

	fSpanTraceID           = 1
	fSpanSpanID            = 2
	fSpanTraceState        = 3
	fSpanParentSpanID      = 4
	fSpanName              = 5
	fSpanKind              = 6
	fSpanStart             = 7
	fSpanEnd               = 8
	fSpanAttributes        = 9
	fSpanDroppedAttributes = 10
	fSpanEvents            = 11
	fSpanDroppedEvents     = 12
	fSpanLinks             = 13
	fSpanDroppedLinks      = 14
	fSpanStatus            = 15
	fSpanFlags             = 16

	fEventTime              = 1
	fEventName              = 2
	fEventAttributes        = 3
	fEventDroppedAttributes = 4

	fLinkTraceID           = 1
	fLinkSpanID            = 2
	fLinkTraceState        = 3
	fLinkAttributes        = 4
	fLinkDroppedAttributes = 5
	fLinkFlags             = 6

	fStatusMessage = 2
	fStatusCode    = 3

	fKeyValueKey   = 1
	fKeyValueValue = 2

	fAnyString = 1
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5
	fAnyKvlist = 6
	fAnyBytes  = 7

	fArrayValues  = 1 // ArrayValue.values
	fKvlistValues = 1 // KeyValueList.values

	// SpanFlags: bits above the W3C trace flags saying whether the parent is
	// remote (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, _IS_REMOTE_MASK).
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

// encoder appends protobuf fields to b.
type encoder struct{ b []byte }

// begin opens a length-delimited field; end closes it. The length is
// written into one byte reserved by begin, and the body moved right when
// the length needs more (messages of 128 bytes or more), so that nothing
// has to be sized in a first pass.
func (e *encoder) begin(num protowire.Number) int {
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = append(e.b, 0)
	return len(e.b)
}

func (e *encoder) end(start int) {
	n := len(e.b) - start
	if n < 0x80 {
		e.b[start-1] = byte(n)
		return
	}
	k := protowire.SizeVarint(uint64(n))
	for range k - 1 {
		e.b = append(e.b, 0)
	}
	copy(e.b[start+k-1:], e.b[start:start+n])
	protowire.AppendVarint(e.b[:start-1], uint64(n))
}

// beginLarge and endLarge do what begin and end do for a message that is
// usually 128 to 16,383 bytes long (a span, an event): two bytes are
// reserved for the length, so that the body moves only when it is shorter
// or longer than that.
func (e *encoder) beginLarge(num protowire.Number) int {
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = append(e.b, 0, 0)
	return len(e.b)
}

func (e *encoder) endLarge(start int) {
	n := len(e.b) - start
	switch {
	case n < 0x80:
		e.b[start-2] = byte(n)
		copy(e.b[start-1:], e.b[start:])
		e.b = e.b[:len(e.b)-1]
	case n < 1<<14:
		e.b[start-2], e.b[start-1] = byte(n)|0x80, byte(n>>7)
	default:
		k := protowire.SizeVarint(uint64(n))
		for range k - 2 {
			e.b = append(e.b, 0)
		}
		copy(e.b[start+k-2:], e.b[start:start+n])
		protowire.AppendVarint(e.b[:start-2], uint64(n))
	}
}

func (e *encoder) str(num protowire.Number, s string) {
	if s == "" {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendString(e.b, s)
}

func (e *encoder) bytes(num protowire.Number, v []byte) {
	if len(v) == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendBytes(e.b, v)
}

func (e *encoder) uvarint(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.VarintType)
	e.b = protowire.AppendVarint(e.b, v)
}

func (e *encoder) fixed64(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.Fixed64Type)
	e.b = protowire.AppendFixed64(e.b, v)
}

func (e *encoder) fixed32(num protowire.Number, v uint32) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.Fixed32Type)
	e.b = protowire.AppendFixed32(e.b, v)
}

// group is the spans of one resource and instrumentation scope, in the order
// the batch has them.
type group struct {
	res   *resource.Resource
	rkey  attribute.Distinct
	scope instrumentation.Scope
	spans []sdktrace.ReadOnlySpan
	done  bool
}

// appendRequest appends the ExportTraceServiceRequest of spans to b. groups
// is scratch space, returned for reuse.
func appendRequest(b []byte, spans []sdktrace.ReadOnlySpan, groups []group) ([]byte, []group) {
	groups = groups[:0]
	for _, s := range spans {
		if s == nil {
			continue
		}
		res, scope := s.Resource(), s.InstrumentationScope()
		rkey := res.Equivalent()
		i := len(groups) - 1 // a batch is almost always one group: look at the last one first
		if i < 0 || groups[i].rkey != rkey || groups[i].scope != scope {
			i = -1
			for j := range groups {
				if groups[j].rkey == rkey && groups[j].scope == scope {
					i = j
					break
				}
			}
		}
		if i < 0 {
			if len(groups) < cap(groups) { // reuse the span slice of an earlier batch
				groups = groups[:len(groups)+1]
				g := &groups[len(groups)-1]
				*g = group{res: res, rkey: rkey, scope: scope, spans: g.spans[:0]}
			} else {
				groups = append(groups, group{res: res, rkey: rkey, scope: scope})
			}
			i = len(groups) - 1
		}
		groups[i].spans = append(groups[i].spans, s)
	}

	e := encoder{b: b}
	for i := range groups {
		if groups[i].done {
			continue
		}
		res, rkey := groups[i].res, groups[i].rkey
		rs := e.begin(fRequestResourceSpans)
		e.resource(res)
		// Every scope of this resource, in order of appearance.
		for j := i; j < len(groups); j++ {
			g := &groups[j]
			if g.done || g.rkey != rkey {
				continue
			}
			g.done = true
			ss := e.begin(fResourceSpansScopeSpans)
			e.scope(g.scope)
			for _, s := range g.spans {
				e.span(s)
			}
			e.str(fScopeSpansSchemaURL, g.scope.SchemaURL)
			e.end(ss)
		}
		if res != nil {
			e.str(fResourceSpansSchemaURL, res.SchemaURL())
		}
		e.end(rs)
	}
	// Keep the span slices' arrays for the next batch, not the spans.
	for i := range groups {
		clear(groups[i].spans)
		groups[i] = group{spans: groups[i].spans[:0]}
	}
	return e.b, groups
}

// spanFields is what a Span message holds: read from the SDK's
// ReadOnlySpan, or kept by this package's own Tracer.
type spanFields struct {
	sc, parent    trace.SpanContext
	name          string
	kind          trace.SpanKind
	start, end    time.Time
	attrs         []attribute.KeyValue
	droppedAttrs  int
	events        []sdktrace.Event
	droppedEvents int
	links         []sdktrace.Link
	droppedLinks  int
	status        sdktrace.Status
}

// appendEncodedRequest appends the ExportTraceServiceRequest of spans, a
// run of ScopeSpans.spans fields (encoder.spanFields), all of resource res
// and instrumentation scope scope.
func appendEncodedRequest(b []byte, res *resource.Resource, scope instrumentation.Scope, spans []byte) []byte {
	// The resource and the scope are encoded first, so that every length
	// is known before the spans are copied once, behind them.
	var head, tail encoder
	head.resource(res)
	rpos := len(head.b)
	head.scope(scope)
	tail.str(fScopeSpansSchemaURL, scope.SchemaURL)
	ssLen := len(head.b) - rpos + len(spans) + len(tail.b)
	var rsTail encoder
	if res != nil {
		rsTail.str(fResourceSpansSchemaURL, res.SchemaURL())
	}
	rsLen := rpos + 1 + protowire.SizeBytes(ssLen) + len(rsTail.b)
	b = protowire.AppendTag(b, fRequestResourceSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(rsLen))
	b = append(b, head.b[:rpos]...)
	b = protowire.AppendTag(b, fResourceSpansScopeSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(ssLen))
	b = append(b, head.b[rpos:]...)
	b = append(b, spans...)
	b = append(b, tail.b...)
	return append(b, rsTail.b...)
}

// resource writes a ResourceSpans.resource field (none for nil).
func (e *encoder) resource(res *resource.Resource) {
	if res == nil {
		return
	}
	r := e.begin(fResourceSpansResource)
	for it := res.Iter(); it.Next(); {
		e.keyValue(fResourceAttributes, it.Attribute())
	}
	e.end(r)
}

// scope writes a ScopeSpans.scope field (none for the zero scope).
func (e *encoder) scope(scope instrumentation.Scope) {
	if scope == (instrumentation.Scope{}) {
		return
	}
	sc := e.begin(fScopeSpansScope)
	e.str(fScopeName, scope.Name)
	e.str(fScopeVersion, scope.Version)
	for it := scope.Attributes.Iter(); it.Next(); {
		e.keyValue(fScopeAttributes, it.Attribute())
	}
	e.end(sc)
}

func (e *encoder) span(s sdktrace.ReadOnlySpan) {
	e.spanFields(&spanFields{
		sc: s.SpanContext(), parent: s.Parent(), name: s.Name(), kind: s.SpanKind(),
		start: s.StartTime(), end: s.EndTime(),
		attrs: s.Attributes(), droppedAttrs: s.DroppedAttributes(),
		events: s.Events(), droppedEvents: s.DroppedEvents(),
		links: s.Links(), droppedLinks: s.DroppedLinks(),
		status: s.Status(),
	})
}

// spanFields writes one ScopeSpans.spans field.
func (e *encoder) spanFields(s *spanFields) {
	tid, sid := s.sc.TraceID(), s.sc.SpanID()
	m := e.beginLarge(fScopeSpansSpans)
	e.bytes(fSpanTraceID, tid[:])
	e.bytes(fSpanSpanID, sid[:])
	if ts := s.sc.TraceState(); ts.Len() > 0 {
		e.str(fSpanTraceState, ts.String())
	}
	if psid := s.parent.SpanID(); psid.IsValid() {
		e.bytes(fSpanParentSpanID, psid[:])
	}
	e.str(fSpanName, s.name)
	e.uvarint(fSpanKind, uint64(spanKind(s.kind)))
	e.fixed64(fSpanStart, unixNano(s.start.UnixNano()))
	e.fixed64(fSpanEnd, unixNano(s.end.UnixNano()))
	for _, kv := range s.attrs {
		e.keyValue(fSpanAttributes, kv)
	}
	e.uvarint(fSpanDroppedAttributes, uint64(clampUint32(s.droppedAttrs)))
	for i := range s.events {
		ev := &s.events[i]
		m := e.beginLarge(fSpanEvents)
		e.fixed64(fEventTime, unixNano(ev.Time.UnixNano()))
		e.str(fEventName, ev.Name)
		for _, kv := range ev.Attributes {
			e.keyValue(fEventAttributes, kv)
		}
		e.uvarint(fEventDroppedAttributes, uint64(clampUint32(ev.DroppedAttributeCount)))
		e.endLarge(m)
	}
	e.uvarint(fSpanDroppedEvents, uint64(clampUint32(s.droppedEvents)))
	for _, l := range s.links {
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		m := e.begin(fSpanLinks)
		e.bytes(fLinkTraceID, ltid[:])
		e.bytes(fLinkSpanID, lsid[:])
		e.str(fLinkTraceState, l.SpanContext.TraceState().String())
		for _, kv := range l.Attributes {
			e.keyValue(fLinkAttributes, kv)
		}
		e.uvarint(fLinkDroppedAttributes, uint64(clampUint32(l.DroppedAttributeCount)))
		e.fixed32(fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		e.end(m)
	}
	e.uvarint(fSpanDroppedLinks, uint64(clampUint32(s.droppedLinks)))
	// The status is always written, as the SDK's exporters do.
	sm := e.begin(fSpanStatus)
	e.str(fStatusMessage, s.status.Description)
	e.uvarint(fStatusCode, uint64(statusCode(s.status.Code)))
	e.end(sm)
	e.fixed32(fSpanFlags, spanFlags(s.sc.TraceFlags(), s.parent))
	e.endLarge(m)
}

// keyValue writes a KeyValue field; its value is always present, as in
// the SDK's exporters (an empty AnyValue for an empty attribute value).
func (e *encoder) keyValue(num protowire.Number, kv attribute.KeyValue) {
	switch kv.Value.Type() {
	case attribute.STRING:
		e.stringKeyValue(num, string(kv.Key), kv.Value.AsString())
		return
	case attribute.INT64:
		// A KeyValue of an int: its AnyValue is a tag and a varint.
		k, v := string(kv.Key), uint64(kv.Value.AsInt64())
		anyLen := 1 + protowire.SizeVarint(v)
		kvLen := 2 + anyLen
		if k != "" {
			kvLen += 1 + protowire.SizeBytes(len(k))
		}
		e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
		e.b = protowire.AppendVarint(e.b, uint64(kvLen))
		e.str(fKeyValueKey, k)
		e.b = append(e.b, byte(fKeyValueValue<<3|protowire.BytesType), byte(anyLen), byte(fAnyInt<<3|protowire.VarintType))
		e.b = protowire.AppendVarint(e.b, v)
		return
	}
	m := e.begin(num)
	e.str(fKeyValueKey, string(kv.Key))
	v := e.begin(fKeyValueValue)
	e.anyValue(kv.Value)
	e.end(v)
	e.end(m)
}

// stringKeyValue writes a KeyValue field of a string. Most attributes are
// strings, and their lengths are known: the field is sized first and
// written in place, without begin and end.
func (e *encoder) stringKeyValue(num protowire.Number, k, v string) {
	anyLen := 1 + protowire.SizeBytes(len(v)) // AnyValue.string_value, always written
	kvLen := 1 + protowire.SizeBytes(anyLen)
	if k != "" {
		kvLen += 1 + protowire.SizeBytes(len(k))
	}
	if num >= 16 || kvLen >= 1<<14 || anyLen >= 1<<14 {
		// Tags or lengths beyond the fast path's bytes (never the engine's).
		e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
		e.b = protowire.AppendVarint(e.b, uint64(kvLen))
		e.str(fKeyValueKey, k)
		e.b = protowire.AppendTag(e.b, fKeyValueValue, protowire.BytesType)
		e.b = protowire.AppendVarint(e.b, uint64(anyLen))
		e.oneofString(v)
		return
	}
	n := len(e.b)
	e.b = slices.Grow(e.b, 3+kvLen)
	b := e.b[n : n+3+kvLen]
	i := 0
	b[i] = byte(num)<<3 | byte(protowire.BytesType)
	i++
	i += putVarint14(b[i:], kvLen)
	if k != "" {
		b[i] = fKeyValueKey<<3 | byte(protowire.BytesType)
		i++
		i += putVarint14(b[i:], len(k))
		i += copy(b[i:], k)
	}
	b[i] = fKeyValueValue<<3 | byte(protowire.BytesType)
	i++
	i += putVarint14(b[i:], anyLen)
	b[i] = fAnyString<<3 | byte(protowire.BytesType)
	i++
	i += putVarint14(b[i:], len(v))
	i += copy(b[i:], v)
	e.b = e.b[:n+i]
}

// putVarint14 writes x (below 2^14) as a varint of one or two bytes and
// returns how many.
func putVarint14(b []byte, x int) int {
	if x < 0x80 {
		b[0] = byte(x)
		return 1
	}
	b[0], b[1] = byte(x)|0x80, byte(x>>7)
	return 2
}

// anyValue writes the fields of an AnyValue. Its value is a oneof: the
// chosen member is written even when it is the zero value.
func (e *encoder) anyValue(v attribute.Value) {
	switch v.Type() {
	case attribute.STRING:
		e.oneofString(v.AsString())
	case attribute.BOOL:
		e.oneofBool(v.AsBool())
	case attribute.INT64:
		e.oneofInt(v.AsInt64())
	case attribute.FLOAT64:
		e.oneofDouble(v.AsFloat64())
	case attribute.BOOLSLICE:
		appendArray(e, v.AsBoolSlice(), (*encoder).oneofBool)
	case attribute.INT64SLICE:
		appendArray(e, v.AsInt64Slice(), (*encoder).oneofInt)
	case attribute.FLOAT64SLICE:
		appendArray(e, v.AsFloat64Slice(), (*encoder).oneofDouble)
	case attribute.STRINGSLICE:
		appendArray(e, v.AsStringSlice(), (*encoder).oneofString)
	case attribute.BYTESLICE:
		e.b = protowire.AppendTag(e.b, fAnyBytes, protowire.BytesType)
		e.b = protowire.AppendBytes(e.b, v.AsByteSlice())
	case attribute.SLICE:
		appendArray(e, v.AsSlice(), (*encoder).anyValue)
	case attribute.MAP:
		a := e.begin(fAnyKvlist)
		for _, kv := range v.AsMap() {
			e.keyValue(fKvlistValues, kv)
		}
		e.end(a)
	case attribute.EMPTY:
	default:
		e.oneofString("INVALID") // as the SDK's exporters do
	}
}

// appendArray writes an ArrayValue of xs, each element an AnyValue written
// by put.
func appendArray[T any](e *encoder, xs []T, put func(*encoder, T)) {
	a := e.begin(fAnyArray)
	for _, x := range xs {
		m := e.begin(fArrayValues)
		put(e, x)
		e.end(m)
	}
	e.end(a)
}

func (e *encoder) oneofString(s string) {
	e.b = protowire.AppendTag(e.b, fAnyString, protowire.BytesType)
	e.b = protowire.AppendString(e.b, s)
}

func (e *encoder) oneofBool(x bool) {
	e.b = protowire.AppendTag(e.b, fAnyBool, protowire.VarintType)
	e.b = protowire.AppendVarint(e.b, protowire.EncodeBool(x))
}

func (e *encoder) oneofInt(x int64) {
	e.b = protowire.AppendTag(e.b, fAnyInt, protowire.VarintType)
	e.b = protowire.AppendVarint(e.b, uint64(x))
}

func (e *encoder) oneofDouble(x float64) {
	e.b = protowire.AppendTag(e.b, fAnyDouble, protowire.Fixed64Type)
	e.b = protowire.AppendFixed64(e.b, math.Float64bits(x))
}

func unixNano(n int64) uint64 { return uint64(max(0, n)) }

func clampUint32(v int) uint32 {
	if v < 0 {
		return 0
	}
	if int64(v) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(v)
}

// spanFlags: the W3C trace flags, and whether the parent is remote.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasIsRemote
	if parent.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

// spanKind maps to Span.SpanKind (UNSPECIFIED 0, INTERNAL 1, SERVER 2,
// CLIENT 3, PRODUCER 4, CONSUMER 5).
func spanKind(k trace.SpanKind) int {
	switch k {
	case trace.SpanKindInternal:
		return 1
	case trace.SpanKindServer:
		return 2
	case trace.SpanKindClient:
		return 3
	case trace.SpanKindProducer:
		return 4
	case trace.SpanKindConsumer:
		return 5
	}
	return 0
}

// statusCode maps to Status.StatusCode (UNSET 0, OK 1, ERROR 2).
func statusCode(c codes.Code) int {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}
