package nodeworker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
)

// retriedStepTemplate is a template of namespace %s whose one step runs the
// demo's validate_cart, with three attempts.
const retriedStepTemplate = `
namespace: %s
name: one
version: 1.0.0
steps:
  - name: validate_cart
    handler: ecommerce.validate_cart
    retry: {max_attempts: 3, backoff: {base_ms: 50, cap_ms: 100}}
`

// TestNodeWorkerSeveralMessagesOfAStepInOneRead: a step named by several
// messages of one read runs once, promptly, through its real message, and
// the other messages leave the queue (as the Go SDK's
// TestSeveralMessagesOfAStepInOneBatch). A forged (or corrupt) message
// naming the step with a later attempt than the real one used to get the
// real one deleted as a duplicate, then was refused itself: the step waited,
// enqueued without a message, until the stale-task timeout gave its task up
// (an hour by default).
func TestNodeWorkerSeveralMessagesOfAStepInOneRead(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	requireNode(t, root)
	for i, tc := range []struct {
		name  string
		ns    string
		real  int   // the attempt the step is enqueued for
		extra []int // the attempts of the other messages naming it
	}{
		{"a forged message for a later attempt", "node_dup_forged", 1, []int{7}},
		{"a stale message of an earlier attempt", "node_dup_stale", 2, []int{1}},
		{"stale, real and forged", "node_dup_mixed", 2, []int{1, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := enginetest.New(t, enginetest.Options{})
			h.Register(fmt.Sprintf(retriedStepTemplate, tc.ns))
			task := h.Submit(orchestration.TaskRequest{Namespace: tc.ns, Name: "one", Context: json.RawMessage(demo.SampleContext(20 + i))})
			step := taskSteps(t, h, task.UUID)["validate_cart"].UUID
			q := h.QueueStepDuplicates(tc.ns, step, tc.real, tc.extra)

			// A lease (and so a visibility timeout) far longer than the
			// waits below: a message left in the queue for it to come back
			// does not pass.
			node := startNode(t, h, root, map[string]string{
				"TASKER_WORKER_NAMESPACES":    tc.ns,
				"TASKER_HANDLERS":             "ecommerce.validate_cart",
				"TASKER_WORKER_LEASE_SECONDS": "120",
				"TASKER_DEMO_DELAY":           "0",
			})
			h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
			var claims, results, byNode int
			if err := h.Pool.QueryRow(context.Background(), `
				SELECT count(*) FILTER (WHERE to_state = 'in_progress'),
				       count(*) FILTER (WHERE from_state = 'in_progress'),
				       count(*) FILTER (WHERE to_state = 'in_progress' AND metadata->>'worker_id' = $2)
				  FROM tasker.workflow_step_transitions WHERE step_uuid = $1`, step, node.id).Scan(&claims, &results, &byNode); err != nil {
				t.Fatal(err)
			}
			if claims != tc.real || results != tc.real || byNode != 1 {
				t.Errorf("step claimed %d times (%d by the Node.js worker) with %d results, want %d of each, the last by the Node.js worker",
					claims, byNode, results, tc.real)
			}
			if s := taskSteps(t, h, task.UUID)["validate_cart"]; s.Attempts != tc.real {
				t.Errorf("step completed at attempt %d, want %d", s.Attempts, tc.real)
			}
			enginetest.Eventually(t, 10*time.Second, "every message of the step gone from the queue", func() bool {
				return count(t, h, fmt.Sprintf(`SELECT count(*) FROM pgmq.q_%s`, q)) == 0
			})
			if n := count(t, h, fmt.Sprintf(`SELECT count(*) FROM pgmq.a_%s`, q)); n != 0 {
				t.Errorf("%d messages archived, want none (a refused message is deleted)", n)
			}
		})
	}
}
