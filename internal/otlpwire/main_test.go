package otlpwire

import (
	"testing"

	"go.uber.org/goleak"
)

// The exporters own connections (an HTTP transport, a gRPC client): once
// shut down, none of their goroutines may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
