package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
)

// notRetryable is a one-step template whose step may not be repeated once
// its handler has run, with two attempts and a backoff far longer than any
// test waits.
const notRetryable = `
namespace: %s
name: once
version: 1.0.0
steps:
  - name: first
    handler: t.once
    retry: {max_attempts: 2, retryable: false, backoff: {base_ms: 60000, cap_ms: 60000}}
`

// releaseCase is a task of notRetryable whose step the test claims and
// releases through the worker protocol, reaped by the engine directly.
type releaseCase struct {
	t    *testing.T
	h    *enginetest.Harness
	step uuid.UUID
}

func newReleaseCase(t *testing.T, ns string) *releaseCase {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(fmt.Sprintf(notRetryable, ns))
	task, _, err := h.Engine.CreateTask(context.Background(), orchestration.TaskRequest{Namespace: ns, Name: "once"})
	if err != nil {
		t.Fatal(err)
	}
	steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
	if err != nil || len(steps) != 1 {
		t.Fatalf("steps: %d, %v", len(steps), err)
	}
	return &releaseCase{t: t, h: h, step: steps[0].UUID}
}

func (c *releaseCase) claim(attempt int, worker string) {
	c.t.Helper()
	var claimed bool
	if err := c.h.Pool.QueryRow(context.Background(), `SELECT claimed FROM tasker.step_claim($1, $2, $3, 60)`,
		c.step, attempt, worker).Scan(&claimed); err != nil || !claimed {
		c.t.Fatalf("claim attempt %d: claimed %v, %v", attempt, claimed, err)
	}
}

// release calls tasker.step_release with the arguments after the step's.
func (c *releaseCase) release(sql string, args ...any) {
	c.t.Helper()
	var ok bool
	if err := c.h.Pool.QueryRow(context.Background(), sql, append([]any{c.step}, args...)...).Scan(&ok); err != nil || !ok {
		c.t.Fatalf("%s: %v, %v", sql, ok, err)
	}
}

func (c *releaseCase) reap() {
	c.t.Helper()
	if n, err := c.h.Engine.ReapExpiredLeases(context.Background(), 50); err != nil || n != 1 {
		c.t.Fatalf("reap: %d steps, %v; want 1", n, err)
	}
}

func (c *releaseCase) row() store.Step {
	c.t.Helper()
	var s store.Step
	var lastError []byte
	if err := c.h.Pool.QueryRow(context.Background(),
		`SELECT state, attempts, max_attempts, last_error FROM tasker.workflow_steps WHERE step_uuid = $1`,
		c.step).Scan(&s.State, &s.Attempts, &s.MaxAttempts, &lastError); err != nil {
		c.t.Fatal(err)
	}
	s.LastError = lastError
	return s
}

// reaped is the metadata of the transition that ended the step's latest
// attempt (out of in_progress).
func (c *releaseCase) reaped() map[string]any {
	c.t.Helper()
	var meta map[string]any
	if err := c.h.Pool.QueryRow(context.Background(), `
		SELECT metadata || jsonb_build_object('to_state', to_state) FROM tasker.workflow_step_transitions
		 WHERE step_uuid = $1 AND from_state = 'in_progress' ORDER BY sort_key DESC LIMIT 1`,
		c.step).Scan(&meta); err != nil {
		c.t.Fatal(err)
	}
	return meta
}

// TestStepReleasedUnrunIsRetriedAtOnce: a step given back before its
// handler ran (claimed through a misleading message, or caught by a hard
// stop) is retried at once, although it is not retryable and its backoff is
// a minute, with the attempt the release gave back. The reaper failed it
// for good: it judged every expired lease by the step's retryable alone.
func TestStepReleasedUnrunIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	c := newReleaseCase(t, "release_unrun")
	c.claim(1, "w1")
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL, false)`)
	var e map[string]any
	if err := json.Unmarshal(c.row().LastError, &e); err != nil || e["kind"] != "released" || e["attempt"] != 1.0 ||
		e["handler_started"] != false || !strings.Contains(fmt.Sprint(e["message"]), "without running its handler") {
		t.Errorf("last_error after the release = %v (%v), want kind released, attempt 1, handler_started false", e, err)
	}
	c.reap()

	// Dispatched again in the reaper's transaction: no backoff waited.
	if s := c.row(); s.State != lifecycle.StepEnqueued || s.Attempts != 1 || s.MaxAttempts != 3 {
		t.Errorf("step is %s after %d of %d attempts, want enqueued after 1 of 3 (the release gave one back)",
			s.State, s.Attempts, s.MaxAttempts)
	}
	m := c.reaped()
	if m["to_state"] != string(lifecycle.StepWaitingForRetry) || m["trigger"] != string(lifecycle.StepLeaseExpiredRetry) ||
		m["reason"] != "released by its worker before its handler ran" || m["why_final"] != nil {
		t.Errorf("the reap's transition = %v, want lease_expired_retry to waiting_for_retry for a release before the handler ran", m)
	}
	// The trace tells the release from a worker that died: the reap's
	// step_state_transition span carries the reason.
	reasons := 0
	for _, sp := range c.h.Spans.GetSpans() {
		var from, reason string
		for _, kv := range sp.Attributes {
			switch kv.Key {
			case "from_state":
				from = kv.Value.AsString()
			case "reason":
				reason = kv.Value.AsString()
			}
		}
		if sp.Name == "step_state_transition" && from == string(lifecycle.StepInProgress) {
			reasons++
			if reason != "released by its worker before its handler ran" {
				t.Errorf("the reap's span has reason %q, want the release's", reason)
			}
		}
	}
	if reasons != 1 {
		t.Errorf("%d step_state_transition spans out of in_progress, want 1 (the reap)", reasons)
	}
	c.claim(2, "w2")
}

// TestRepeatedReleaseGivesOneAttemptBack: a worker that calls
// step_release again for the same attempt (it lost the first answer) does
// not get a second attempt back, and a release once said to follow the
// handler's start stays one when repeated as unrun. Each call added an
// attempt, so a client looping on release could keep a step alive forever.
func TestRepeatedReleaseGivesOneAttemptBack(t *testing.T) {
	t.Parallel()
	c := newReleaseCase(t, "release_twice")
	c.claim(1, "w1")
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL)`)
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL, false)`)
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL, false)`)
	s := c.row()
	var e map[string]any
	if err := json.Unmarshal(s.LastError, &e); err != nil || s.MaxAttempts != 3 || e["handler_started"] != true {
		t.Errorf("after three releases of attempt 1: max_attempts %d, last_error %v (%v); want 3 (one given back), handler_started true",
			s.MaxAttempts, e, err)
	}
	c.reap()
	if s := c.row(); s.State != lifecycle.StepError {
		t.Errorf("step is %s, want error: its handler started and it is not retryable", s.State)
	}
}

// TestStepReleasedWhileItsHandlerRanFailsUnlessRetryable: a release after
// the handler started (a worker's shutdown) keeps the step's own setting: a
// step that is not retryable fails, since its handler may have had side
// effects, and the transition says why. The four-argument call of workers
// written before the handler_started flag means exactly that.
func TestStepReleasedWhileItsHandlerRanFailsUnlessRetryable(t *testing.T) {
	t.Parallel()
	c := newReleaseCase(t, "release_ran")
	c.claim(1, "w1")
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL)`)
	c.reap()
	if s := c.row(); s.State != lifecycle.StepError {
		t.Errorf("step is %s, want error", s.State)
	}
	m := c.reaped()
	if m["trigger"] != string(lifecycle.StepLeaseExpiredFail) || m["reason"] != "released by its worker after its handler started" ||
		m["why_final"] != "released by its worker while its handler ran, and the step is not retryable" {
		t.Errorf("the reap's transition = %v, want lease_expired_fail saying the step was released while its handler ran", m)
	}
}

// TestEarlierReleaseDoesNotRescueALaterAttempt: last_error outlives the
// attempt that wrote it. A step released unrun, retried, and then
// abandoned by a worker that died is judged by its retryable setting: the
// release of attempt 1 says nothing about attempt 2.
func TestEarlierReleaseDoesNotRescueALaterAttempt(t *testing.T) {
	t.Parallel()
	c := newReleaseCase(t, "release_stale")
	c.claim(1, "w1")
	c.release(`SELECT tasker.step_release($1, 1, 'w1', NULL, false)`)
	c.reap()
	c.claim(2, "w2")
	if _, err := c.h.Pool.Exec(context.Background(),
		`UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 minute' WHERE step_uuid = $1`, c.step); err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	if err := json.Unmarshal(c.row().LastError, &e); err != nil || e["kind"] != "released" || e["attempt"] != 1.0 {
		t.Fatalf("last_error of attempt 2 = %v (%v), want attempt 1's release still there", e, err)
	}
	c.reap()
	if s := c.row(); s.State != lifecycle.StepError || s.Attempts != 2 {
		t.Errorf("step is %s after %d attempts, want error after 2", s.State, s.Attempts)
	}
	m := c.reaped()
	if m["trigger"] != string(lifecycle.StepLeaseExpiredFail) || m["reason"] != "lease expired: the worker stopped heartbeating" ||
		m["why_final"] != "error is not retryable" {
		t.Errorf("the reap's transition = %v, want a plain lease expiry failing the step", m)
	}
}
