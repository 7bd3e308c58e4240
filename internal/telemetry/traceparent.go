package telemetry

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// NewTraceParent returns a fresh W3C traceparent ("00-<trace id>-<span id>-01")
// for a task's root span. The ids are generated when the task is accepted and
// stored on the task row; the root span is emitted with them when the task
// finishes (DESIGN §5), and every span in between uses them as its parent.
func NewTraceParent() string {
	var b [24]byte
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(b[:])
	b[0] |= 1 // an all-zero trace id is invalid
	b[16] |= 1
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

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
