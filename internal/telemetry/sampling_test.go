package telemetry

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasker/tasker/internal/otlpwire"
	"github.com/tasker/tasker/internal/traceparent"
)

func TestChooseSampler(t *testing.T) {
	half, bad := 0.5, 1.5
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name    string
		ratio   *float64
		env     func(string) string
		want    string // Description of the built sampler
		follows bool
		err     string
	}{
		{name: "default: every task", env: env(), want: "ParentBased{root:TraceIDRatioBased{1}", follows: true},
		{name: "configured ratio", ratio: &half, env: env(), want: "ParentBased{root:TraceIDRatioBased{0.5}", follows: true},
		{name: "ratio out of range", ratio: &bad, env: env(), err: "between 0 and 1"},
		{name: "env wins", ratio: &half, env: env("OTEL_TRACES_SAMPLER", "always_off"), want: "AlwaysOffSampler"},
		{name: "env ratio", env: env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.25"),
			want: "ParentBased{root:TraceIDRatioBased{0.25}", follows: true},
		{name: "env ratio without arg", env: env("OTEL_TRACES_SAMPLER", "traceidratio"), want: "TraceIDRatioBased{1}"},
		{name: "env parent-based on", env: env("OTEL_TRACES_SAMPLER", "parentbased_always_on"), want: "ParentBased{root:AlwaysOnSampler", follows: true},
		{name: "env parent-based off", env: env("OTEL_TRACES_SAMPLER", "parentbased_always_off"), want: "ParentBased{root:AlwaysOffSampler", follows: true},
		{name: "env always on", env: env("OTEL_TRACES_SAMPLER", "always_on"), want: "AlwaysOnSampler"},
		{name: "env bad arg", env: env("OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "lots"), err: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "env unknown", env: env("OTEL_TRACES_SAMPLER", "jaeger_remote"), err: `OTEL_TRACES_SAMPLER="jaeger_remote" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := chooseSampler(tc.ratio, tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.build().Description(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("sampler %q, want %q", got, tc.want)
			}
			if spec.followsParent() != tc.follows {
				t.Errorf("followsParent = %v, want %v", spec.followsParent(), tc.follows)
			}
			// The otlpwire tracer decides spans with a parent itself only
			// for the parent-based samplers.
			if pf, ok := spec.build().(otlpwire.ParentFollower); !ok || pf.FollowsParent() != tc.follows {
				t.Errorf("the built sampler is a ParentFollower: %v, following parents: %v; want following: %v", ok, ok && pf.FollowsParent(), tc.follows)
			}
		})
	}
}

// TestTraceParentsCarryTheDecision: a task's traceparent says whether its
// trace is sampled, and the span context rebuilt from it says the same.
func TestTraceParentsCarryTheDecision(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     *Publisher
		flags string
	}{
		{"tracing off", nil, "01"},
		{"ratio 1", &Publisher{sampler: samplerSpec{name: "parentbased_traceidratio", ratio: 1}.build()}, "01"},
		{"ratio 0", &Publisher{sampler: samplerSpec{name: "parentbased_traceidratio", ratio: 0}.build()}, "00"},
	} {
		for range 20 {
			tp := tc.p.NewTraceParent()
			if !strings.HasSuffix(tp, "-"+tc.flags) {
				t.Fatalf("%s: traceparent %s, want flags %s", tc.name, tp, tc.flags)
			}
			sc, ok := traceparent.SpanContext(tp)
			if !ok || sc.IsSampled() != (tc.flags == "01") || !sc.IsRemote() {
				t.Fatalf("%s: span context of %s: ok %v, sampled %v", tc.name, tp, ok, sc.IsSampled())
			}
		}
	}
	// The root span repeats the stored decision, whatever the ratio now.
	never := samplerSpec{name: "parentbased_traceidratio", ratio: 0}.build()
	always := samplerSpec{name: "parentbased_traceidratio", ratio: 1}.build()
	for _, stored := range []string{"01", "00"} {
		sc, _ := traceparent.SpanContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-" + stored)
		for _, s := range []sdktrace.Sampler{never, always} {
			res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: withForcedIDs(context.Background(), sc), TraceID: sc.TraceID()})
			if (res.Decision == sdktrace.RecordAndSample) != (stored == "01") {
				t.Errorf("root of a task stored with flags %s under %s: decision %v", stored, s.Description(), res.Decision)
			}
		}
	}
}
