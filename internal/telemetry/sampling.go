package telemetry

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker/tasker/internal/traceparent"
)

// A task's trace is sampled once, when the task is accepted: the decision
// goes into the traceparent stored on the task (flags 01 or 00) and travels
// in every queue message, so that the orchestrator replicas and the workers
// keep or drop the task's spans together (a parent-based sampler follows
// the remote parent's flag), and the root span, emitted when the task
// finishes, repeats the stored decision.

// samplerSpec is the configured sampling, before it is built.
type samplerSpec struct {
	name  string // an OTEL_TRACES_SAMPLER value
	ratio float64
}

// samplerValues are the OTEL_TRACES_SAMPLER values understood.
var samplerValues = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on",
	"parentbased_always_off", "parentbased_traceidratio"}

// chooseSampler returns the sampling to use: OTEL_TRACES_SAMPLER (with
// OTEL_TRACES_SAMPLER_ARG) when set, else a parent-based trace-id ratio
// (ratio nil: 1, every task).
func chooseSampler(ratio *float64, getenv func(string) string) (samplerSpec, error) {
	name := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))
	if name == "" {
		r := 1.0
		if ratio != nil {
			r = *ratio
		}
		if !(r >= 0 && r <= 1) {
			return samplerSpec{}, fmt.Errorf("trace sample ratio must be between 0 and 1, got %v", r)
		}
		return samplerSpec{name: "parentbased_traceidratio", ratio: r}, nil
	}
	known := false
	for _, v := range samplerValues {
		known = known || v == name
	}
	if !known {
		return samplerSpec{}, fmt.Errorf("OTEL_TRACES_SAMPLER=%q is not supported; use one of %s", name, strings.Join(samplerValues, ", "))
	}
	spec := samplerSpec{name: name, ratio: 1}
	if strings.HasSuffix(name, "traceidratio") {
		if arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); arg != "" {
			r, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(r >= 0 && r <= 1) {
				return samplerSpec{}, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1", arg)
			}
			spec.ratio = r
		}
	}
	return spec, nil
}

// DescribeSampling says which traces a process configured with this
// trace_sample_ratio records: the ratio ("1": every task), or the
// OTEL_TRACES_SAMPLER value (with its ratio) that takes precedence, or why
// the setting is invalid.
func DescribeSampling(ratio float64) string {
	spec, err := chooseSampler(&ratio, os.Getenv)
	switch {
	case err != nil:
		return "invalid: " + err.Error()
	case os.Getenv("OTEL_TRACES_SAMPLER") == "":
		return strconv.FormatFloat(spec.ratio, 'g', -1, 64)
	case strings.HasSuffix(spec.name, "traceidratio"):
		return spec.name + " " + strconv.FormatFloat(spec.ratio, 'g', -1, 64)
	default:
		return spec.name
	}
}

// build returns the SDK sampler: the configured one, except that a task's
// root span (started with the ids stored on the task) gets the decision
// stored with them.
func (s samplerSpec) build() sdktrace.Sampler {
	var inner sdktrace.Sampler
	switch s.name {
	case "always_on":
		inner = sdktrace.AlwaysSample()
	case "always_off":
		inner = sdktrace.NeverSample()
	case "traceidratio":
		inner = sdktrace.TraceIDRatioBased(s.ratio)
	case "parentbased_always_on":
		inner = sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		inner = sdktrace.ParentBased(sdktrace.NeverSample())
	default:
		inner = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(s.ratio))
	}
	return storedDecision{inner: inner, followsParent: s.followsParent()}
}

// followsParent is whether spans with a remote parent follow its sampled
// flag (the parent-based samplers): then the spans of a task whose
// traceparent says "not sampled" need not even be built.
func (s samplerSpec) followsParent() bool { return strings.HasPrefix(s.name, "parentbased_") }

// storedDecision is the configured sampler, except for a root span started
// with forced ids (a task's task_orchestration span, emitted when the task
// ends): it repeats the decision stored in the task's traceparent when the
// task was accepted. Forced ids apply to root spans only (as the id
// generator applies them), so a span with a parent does not look for them:
// that lookup walks the whole context chain, for every span.
type storedDecision struct {
	inner sdktrace.Sampler
	// followsParent: inner is one of the parent-based samplers, with
	// their default options (otlpwire.ParentFollower).
	followsParent bool
}

// FollowsParent tells the otlpwire tracer that spans with a parent may be
// decided from it: for them ShouldSample asks inner, a parent-based
// sampler (when followsParent is set), which answers with the parent's
// decision.
func (d storedDecision) FollowsParent() bool { return d.followsParent }

func (d storedDecision) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if trace.SpanContextFromContext(p.ParentContext).IsValid() {
		return d.inner.ShouldSample(p)
	}
	if f, ok := p.ParentContext.Value(forcedIDsKey{}).(forcedIDs); ok && f.traceID == p.TraceID {
		dec := sdktrace.Drop
		if f.sampled {
			dec = sdktrace.RecordAndSample
		}
		return sdktrace.SamplingResult{Decision: dec, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return d.inner.ShouldSample(p)
}

func (d storedDecision) Description() string { return d.inner.Description() }

// NewTraceParent returns a fresh traceparent for a task being accepted,
// sampled or not as the configured sampler decides for a trace with its id
// (always sampled when tracing is off here: workers with tracing of their
// own then still record their spans). Safe on a nil Publisher.
func (p *Publisher) NewTraceParent() string {
	var b [24]byte
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = crand.Read(b[:])
	b[0] |= 1 // an all-zero trace id is invalid
	b[16] |= 1
	flags := trace.FlagsSampled
	if p != nil && p.sampler != nil {
		res := p.sampler.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(),
			TraceID: trace.TraceID(b[:16]), Name: "task_orchestration", Kind: trace.SpanKindInternal})
		if res.Decision != sdktrace.RecordAndSample {
			flags = 0
		}
	}
	return traceparent.Format(trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID(b[:16]), SpanID: trace.SpanID(b[16:]), TraceFlags: flags}))
}
