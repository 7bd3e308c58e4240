package bench

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/testdb"
)

// With --via-queue the bench sends its requests to the task request queue
// (one with pgmq.send, several with pgmq.send_batch), and a request still
// waiting there counts as a task to come: the run does not end before the
// orchestrator has read it.
func TestQueueSubmissionAndItsCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.URL(t))
	submit := queueSubmit(pool)
	req := func(i int) orchestration.TaskRequest {
		return orchestration.TaskRequest{Namespace: Namespace, Name: "single", Context: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)}
	}
	if err := submit(ctx, []orchestration.TaskRequest{req(0)}); err != nil {
		t.Fatal(err)
	}
	if err := submit(ctx, []orchestration.TaskRequest{req(1), req(2), req(3)}); err != nil {
		t.Fatal(err)
	}
	m, err := queue.QueueMetrics(ctx, pool, queue.TaskRequestsQueue)
	if err != nil {
		t.Fatal(err)
	}
	if m.Length != 4 {
		t.Errorf("%d requests on the queue, want 4", m.Length)
	}
	n, err := activeTasks(ctx, pool)
	if err != nil || n != 4 {
		t.Errorf("active tasks = %d (%v), want the 4 requests waiting on the queue", n, err)
	}
	var body orchestration.TaskRequest
	var raw []byte
	if err := pool.QueryRow(ctx, `SELECT message::text FROM pgmq.q_orchestration_task_requests ORDER BY msg_id DESC LIMIT 1`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Namespace != Namespace || body.Name != "single" {
		t.Errorf("queued request %s (%v), want the task request as sent", raw, err)
	}
}
