package telemetry

// DirectTracing reports whether the Publisher's spans skip the SDK
// (otlpwire.Tracer).
func DirectTracing(p *Provider) bool { return p.direct != nil && p.publisher.tracer == p.direct }
