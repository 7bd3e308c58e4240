package worker

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"

	"github.com/google/uuid"
)

func testStep() *Step {
	return &Step{TaskUUID: uuid.New(), StepUUID: uuid.New(), Name: "charge", Namespace: "payments",
		CorrelationID: uuid.New(), Attempt: 2}
}

// A step's logger writes what base.With of the step's attributes writes,
// for a record, for attributes added later and inside a group.
func TestStepLoggerWritesWhatWithWrites(t *testing.T) {
	step := testStep()
	times := regexp.MustCompile(`time=\S+ `)
	for _, c := range []struct {
		name string
		log  func(*slog.Logger)
	}{
		{"record", func(l *slog.Logger) { l.Warn("heartbeat failed", "error", "boom") }},
		{"with", func(l *slog.Logger) { l.With("queue", "q", "msg_id", 7).Info("released", "x", 1) }},
		{"group", func(l *slog.Logger) { l.WithGroup("g").Info("grouped", "k", "v") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want, got bytes.Buffer
			base := func(b *bytes.Buffer) *slog.Logger {
				return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})).With("worker_id", "w1")
			}
			c.log(base(&want).With("task_uuid", step.TaskUUID, "step_uuid", step.StepUUID, "step_name", step.Name,
				"namespace", step.Namespace, "correlation_id", step.CorrelationID, "attempt", step.Attempt))
			c.log(stepLogger(base(&got), step))
			w, g := times.ReplaceAllString(want.String(), ""), times.ReplaceAllString(got.String(), "")
			if w == "" || g != w {
				t.Errorf("step logger wrote\n%s\nbase.With wrote\n%s", g, w)
			}
		})
	}
}

// countingHandler counts the attribute sets handed to it.
type countingHandler struct {
	slog.Handler
	withAttrs *int
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.withAttrs++
	return countingHandler{h.Handler.WithAttrs(as), h.withAttrs}
}

// A step that logs nothing (a record below the level) hands its attributes
// to no handler; one that logs hands them once.
func TestStepLoggerFormatsNothingUnlessItLogs(t *testing.T) {
	var buf bytes.Buffer
	n := 0
	base := slog.New(countingHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), &n})
	for range 100 {
		stepLogger(base, testStep()).Debug("step completed", "duration", 3)
	}
	if n != 0 || buf.Len() != 0 {
		t.Fatalf("100 silent steps: %d attribute sets formatted, %d bytes written", n, buf.Len())
	}
	stepLogger(base, testStep()).Warn("result refused")
	if n != 1 || !bytes.Contains(buf.Bytes(), []byte("step_name=charge")) {
		t.Fatalf("one logged record: %d attribute sets formatted, wrote %q", n, buf.String())
	}
}
