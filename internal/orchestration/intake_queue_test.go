package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// One read of the task request queue creates its valid requests together,
// in one transaction that deletes their messages; the requests that can
// never succeed are archived, a key sent twice in the read creates one
// task, and a message another replica has already handled is skipped.
func TestQueuedRequestsAreCreatedTogether(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("qbatch"))
	ctx := context.Background()
	bodies := make([]string, 0, 60)
	for i := range 55 {
		bodies = append(bodies, fmt.Sprintf(`{"namespace":"qbatch","name":"linear","context":{"i":%d}}`, i))
	}
	bodies = append(bodies,
		`{"namespace":"qbatch","name":"linear","idempotency_key":"twice"}`,
		`{"namespace":"qbatch","name":"linear","idempotency_key":"twice"}`,
		`{"namespace":"qbatch","name":"nope"}`,
		`{"namespace":"qbatch","name":"linear","bogus":1}`,
		`{"namespace":"qbatch","name":"linear","context":{"gone":true}}`)
	var ids []int64
	rows, err := h.Pool.Query(ctx, `SELECT * FROM pgmq.send_batch('orchestration_task_requests', $1::jsonb[])`, bodies)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != len(bodies) {
		t.Fatalf("sent %d of %d: %v", len(ids), len(bodies), rows.Err())
	}
	// The last request was handled elsewhere before this read (its message
	// deleted): it is neither read nor created.
	o := orchestration.NewOrchestrator(h.Engine, orchestration.ServiceConfig{BatchSize: 100, VisibilityTimeout: time.Minute, MaxReadCount: 5},
		nil, nil, h.Logger)
	if _, err := h.Pool.Exec(ctx, `DELETE FROM pgmq.q_orchestration_task_requests WHERE msg_id = $1`, ids[len(ids)-1]); err != nil {
		t.Fatal(err)
	}
	n, err := o.RequestsOnce(ctx)
	if err != nil || n != len(bodies)-1 {
		t.Fatalf("RequestsOnce: %d messages, %v; want %d", n, err, len(bodies)-1)
	}
	var tasks, txs, left, archived int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM tasker.tasks WHERE namespace = 'qbatch'`).Scan(&tasks, &txs); err != nil {
		t.Fatal(err)
	}
	if err := h.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgmq.q_orchestration_task_requests), (SELECT count(*) FROM pgmq.a_orchestration_task_requests)`).Scan(&left, &archived); err != nil {
		t.Fatal(err)
	}
	if tasks != 56 || txs != 1 {
		t.Errorf("%d tasks in %d transactions, want 56 (55 and the keyed one once) in 1", tasks, txs)
	}
	if left != 0 || archived != 2 {
		t.Errorf("%d messages left, %d archived; want 0 and 2 (unknown template, unknown member)", left, archived)
	}
}

// createQueued skips a request whose message another replica deleted
// between the read and the transaction (its task was created there), and a
// request that fails inside the shared transaction fails alone: the others
// are created and their messages deleted, its own message stays.
func TestQueuedCreationSkipsHandledMessagesAndIsolatesFailures(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("qskip"))
	ctx := context.Background()
	send := func(n int) ([]int64, []orchestration.TaskRequest) {
		var ids []int64
		var reqs []orchestration.TaskRequest
		for i := range n {
			body := fmt.Sprintf(`{"namespace":"qskip","name":"linear","context":{"i":%d}}`, i)
			var id int64
			if err := h.Pool.QueryRow(ctx, `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, body).Scan(&id); err != nil {
				t.Fatal(err)
			}
			req, err := orchestration.DecodeTaskRequest(json.RawMessage(body))
			if err != nil {
				t.Fatal(err)
			}
			ids, reqs = append(ids, id), append(reqs, req)
		}
		return ids, reqs
	}
	count := func(q string, args ...any) int {
		var n int
		if err := h.Pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	ids, reqs := send(3)
	if _, err := h.Pool.Exec(ctx, `DELETE FROM pgmq.q_orchestration_task_requests WHERE msg_id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	out := h.Engine.CreateQueued(ctx, ids, reqs, -1)
	if !out[1].Skipped || out[1].Created || out[1].Err != nil {
		t.Errorf("request whose message was gone: %+v, want skipped", out[1])
	}
	for _, i := range []int{0, 2} {
		if out[i].Skipped || !out[i].Created || out[i].Err != nil {
			t.Errorf("request %d: %+v, want created", i, out[i])
		}
	}
	if n := count(`SELECT count(*) FROM tasker.tasks WHERE namespace = 'qskip'`); n != 2 {
		t.Errorf("%d tasks, want 2", n)
	}

	ids, reqs = send(4)
	out = h.Engine.CreateQueued(ctx, ids, reqs, 2)
	for i, o := range out {
		if i == 2 {
			if o.Err == nil || o.Created {
				t.Errorf("the bad request: %+v, want its error", o)
			}
			continue
		}
		if o.Err != nil || !o.Created {
			t.Errorf("request %d next to a bad one: %+v, want created", i, o)
		}
	}
	if n := count(`SELECT count(*) FROM tasker.tasks WHERE namespace = 'qskip'`); n != 5 {
		t.Errorf("%d tasks, want 5", n)
	}
	if n := count(`SELECT count(*) FROM pgmq.q_orchestration_task_requests`); n != 1 {
		t.Errorf("%d messages left, want the bad request's", n)
	}
	if n := count(`SELECT count(*) FROM pgmq.q_orchestration_task_requests WHERE msg_id = $1`, ids[2]); n != 1 {
		t.Errorf("the bad request's message is gone")
	}
}
