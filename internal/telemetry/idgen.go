package telemetry

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"sync"

	"go.opentelemetry.io/otel/trace"
)

// forcedIDsKey carries the ids a span must be created with.
type forcedIDsKey struct{}

type forcedIDs struct {
	traceID trace.TraceID
	spanID  trace.SpanID
	// sampled is the decision stored with them (see storedDecision).
	sampled bool
}

// withForcedIDs makes the next root span started from ctx use these ids:
// the root span of a task is emitted when the task finishes, with the ids
// generated (and stored on the task) when it was accepted.
func withForcedIDs(ctx context.Context, sc trace.SpanContext) context.Context {
	return context.WithValue(ctx, forcedIDsKey{}, forcedIDs{traceID: sc.TraceID(), spanID: sc.SpanID(), sampled: sc.IsSampled()})
}

// idGenerator is the SDK's random generator, except that it honours ids
// forced through the context.
type idGenerator struct {
	mu  sync.Mutex
	rnd *rand.ChaCha8
}

func newIDGenerator() *idGenerator {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return &idGenerator{rnd: rand.NewChaCha8(seed)}
}

func (g *idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if f, ok := ctx.Value(forcedIDsKey{}).(forcedIDs); ok && f.traceID.IsValid() && f.spanID.IsValid() {
		return f.traceID, f.spanID
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var tid trace.TraceID
	var sid trace.SpanID
	for !tid.IsValid() {
		binary.NativeEndian.PutUint64(tid[:8], g.rnd.Uint64())
		binary.NativeEndian.PutUint64(tid[8:], g.rnd.Uint64())
	}
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], g.rnd.Uint64())
	}
	return tid, sid
}

func (g *idGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], g.rnd.Uint64())
	}
	return sid
}
