package telemetry

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// ParseTraceParent splits a traceparent into its trace id and span id.
func ParseTraceParent(tp string) (traceID, spanID string, err error) {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", "", fmt.Errorf("malformed traceparent %q", tp)
	}
	if _, err := hex.DecodeString(parts[1] + parts[2] + parts[3]); err != nil {
		return "", "", fmt.Errorf("malformed traceparent %q: %w", tp, err)
	}
	return parts[1], parts[2], nil
}
