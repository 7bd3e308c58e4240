package telemetry

import (
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/trace"
)

// DirectTracing reports whether the Publisher's spans skip the SDK
// (otlpwire.Tracer).
func DirectTracing(p *Provider) bool {
	return p.direct != nil && p.publisher.tracer == p.direct.byScope[instrumentation.Scope{Name: tracerName}] &&
		p.publisher.direct != nil &&
		p.TracerProvider() == trace.TracerProvider(p.direct)
}
