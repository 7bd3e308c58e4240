package orchestration_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
)

// TestTaskRequestsFromTheQueue: requests sent with pgmq.send by any
// language create tasks; malformed or unknown ones are archived (never
// blocking the queue, never crashing the loop); an idempotency key sent
// twice creates one task; a huge message is refused too.
func TestTaskRequestsFromTheQueue(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(linearTemplate("viaqueue"))
	ctx := context.Background()
	send := func(body string) {
		t.Helper()
		if _, err := h.Pool.Exec(ctx, `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, body); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"namespace":"viaqueue","name":"linear","idempotency_key":"q-1","source_system":"billing"}`)
	send(`{"namespace":"viaqueue","name":"linear","idempotency_key":"q-1","source_system":"billing"}`)
	send(`{"namespace":"viaqueue","name":"linear"}`)
	send(`"just a string"`)
	send(`{"namespace":"viaqueue","name":"linear","bogus":true}`)
	send(`{"namespace":"nowhere","name":"linear"}`)
	send(`{"namespace":"viaqueue","name":"linear","context":{"blob":"` + strings.Repeat("x", orchestration.MaxContextBytes+10) + `"}}`)
	// A message that is not JSON at all cannot be sent through pgmq.send's
	// jsonb argument; an unknown shape is the worst a client can do.

	enginetest.Eventually(t, 20*time.Second, "queue drained", func() bool {
		m, err := queue.QueueMetrics(ctx, h.Pool, queue.TaskRequestsQueue)
		return err == nil && m.Length == 0
	})
	var tasks, archived int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks WHERE namespace = 'viaqueue'`).Scan(&tasks); err != nil {
		t.Fatal(err)
	}
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_orchestration_task_requests`).Scan(&archived); err != nil {
		t.Fatal(err)
	}
	if tasks != 2 {
		t.Errorf("%d tasks created, want 2 (the keyed request once, the unkeyed one)", tasks)
	}
	if archived != 4 {
		t.Errorf("%d requests archived, want the 4 that can never succeed", archived)
	}
	var src string
	_ = h.Pool.QueryRow(ctx, `SELECT source_system FROM tasker.tasks WHERE namespace = 'viaqueue' ORDER BY created_at LIMIT 1`).Scan(&src)
	if src != "billing" {
		t.Errorf("source_system = %q", src)
	}
	// The counter moves just after the archive commits: wait for it too.
	// Only this queue gets poison here; the reasons tell the cases apart.
	for reason, n := range map[string]float64{"malformed": 2, "unknown_template": 1, "invalid_request": 1} {
		enginetest.Eventually(t, 5*time.Second, "tasker_poison_messages_total{reason="+reason+"}", func() bool {
			return counterValue(t, h, "tasker_poison_messages_total", "reason", reason) == n
		})
	}
	_ = json.Valid
}
