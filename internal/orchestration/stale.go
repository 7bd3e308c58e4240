package orchestration

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
)

// MarkStaleTasks gives up on tasks whose progress stopped — no transition,
// no step change and no heartbeat for longer than the template's
// stale_after_seconds or, when the template sets none, defaultAfter — moving
// each to error with a DLQ entry that says which steps were stuck where.
// Typical cause: no worker is running for the namespace. It returns how many
// tasks it marked.
func (e *Engine) MarkStaleTasks(ctx context.Context, defaultAfter time.Duration, limit int) (int, error) {
	marked := 0
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		marked = 0
		tasks, err := e.store.StaleTasksTx(ctx, tx, defaultAfter, limit)
		if err != nil {
			return err
		}
		for i := range tasks {
			t := &tasks[i]
			steps, err := e.store.TaskStepsTx(ctx, tx, t.UUID)
			if err != nil {
				return err
			}
			threshold, source := defaultAfter, "the orchestrator default (orchestrator.stale_task_timeout)"
			if t.StaleAfterSeconds > 0 {
				threshold, source = time.Duration(t.StaleAfterSeconds)*time.Second, "the template's stale_after_seconds"
			}
			detail := staleDetail(t, steps, threshold, source, e.clock())
			j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(t), nil)
			if err := e.moveTask(ctx, tx, j, t, lifecycle.TaskStale, nil, map[string]any{"reason": "stale", "detail": detail}); err != nil {
				return err
			}
			if err := e.store.DLQCreateTx(ctx, tx, t.UUID, "stale", detail); err != nil {
				return err
			}
			e.logger.Warn("stale task moved to error", "task_uuid", t.UUID, "namespace", t.Namespace,
				"correlation_id", t.CorrelationID, "detail", detail)
			marked++
		}
		return nil
	})
	return marked, err
}

// staleDetail explains, for the DLQ entry, why a task was given up.
func staleDetail(t *store.Task, steps []store.Step, threshold time.Duration, source string, now time.Time) string {
	var waiting []string
	for _, s := range steps {
		if s.State.Terminal() {
			continue
		}
		waiting = append(waiting, fmt.Sprintf("%s=%s for %s", s.Name, s.State, now.Sub(s.StateEnteredAt).Round(time.Second)))
	}
	hint := ""
	for _, s := range steps {
		if s.State == lifecycle.StepEnqueued {
			hint = fmt.Sprintf("; steps waited in worker_%s_queue without being claimed: is a worker for namespace %s running? A task retry sends their messages again", t.Namespace, t.Namespace)
			break
		}
	}
	return fmt.Sprintf("no progress for %s (threshold %s from %s) while %s; unfinished steps: %s%s",
		now.Sub(t.UpdatedAt).Round(time.Second), threshold, source, t.State, strings.Join(waiting, ", "), hint)
}

// failureDetail explains a task given up after a permanent step failure.
func failureDetail(steps []store.Step) string {
	var parts []string
	for _, s := range steps {
		if s.State == lifecycle.StepError {
			msg := string(s.LastError)
			if len(msg) > 500 {
				msg = msg[:500] + "…"
			}
			parts = append(parts, fmt.Sprintf("step %s failed after %d of %d attempts: %s", s.Name, s.Attempts, s.MaxAttempts, msg))
		}
	}
	return strings.Join(parts, "; ")
}
