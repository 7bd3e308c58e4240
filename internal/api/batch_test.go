package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/api"
	"github.com/tasker/tasker/internal/enginetest"
)

// batchItem returns the batch answer's result i.
func batchItem(t *testing.T, r resp, i int) map[string]any {
	t.Helper()
	results, _ := r.body["results"].([]any)
	if i >= len(results) {
		t.Fatalf("batch answer has %d results, want more than %d: %s", len(results), i, r.raw)
	}
	return results[i].(map[string]any)
}

func itemError(item map[string]any) (code, field, msg string) {
	e, _ := item["error"].(map[string]any)
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	msg, _ = e["message"].(string)
	return code, field, msg
}

// A batch answers each request in its place with the status POST /v1/tasks
// would give it; bad requests fail alone, a repeated key is a replay (or a
// conflict when the request differs), and the good tasks run to completion.
func TestBatchSubmission(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, true)

	// An earlier task with key k-old: the batch replays it once and
	// conflicts with it once.
	first := e.do("POST", "/v1/tasks", orderBody(`,"idempotency_key":"k-old"`))
	if first.status != http.StatusCreated {
		t.Fatalf("create: %d %s", first.status, first.raw)
	}
	oldID := first.body["task_uuid"].(string)

	reqs := []string{
		orderBody(`,"initiator":"batch"`),                                                 // 0 created
		`{"namespace":"ecommerce","name":"no_such_flow"}`,                                 // 1 unknown template
		`{"namespace":"ecommerce","name":"order_fulfillment","context":{"order_id":"x"}}`, // 2 context fails the schema
		orderBody(`,"idempotency_key":"k-old"`),                                           // 3 replay
		orderBody(`,"priority":9,"idempotency_key":"k-old"`),                              // 4 conflict
		`{"namespace":"ecommerce","name":"order_fulfillment","colour":"red"}`,             // 5 unknown field
		`{"namespace":"ecommerce","name":"order_fulfillment","tags":"vip"}`,               // 6 wrong type
		`42`,                                          // 7 not an object
		orderBody(`,"idempotency_key":"k-new"`),       // 8 created
		orderBody(`,"idempotency_key":"k-new"`),       // 9 the same key in the same batch: replay of 8
		`{"namespace":"","name":"order_fulfillment"}`, // 10 missing namespace
	}
	r := e.do("POST", "/v1/tasks/batch", `{"tasks":[`+strings.Join(reqs, ",")+`]}`)
	if r.status != http.StatusOK {
		t.Fatalf("batch: %d %s", r.status, r.raw)
	}
	if r.body["created"] != float64(2) || r.body["replayed"] != float64(2) || r.body["failed"] != float64(7) {
		t.Errorf("counts created %v replayed %v failed %v, want 2, 2, 7: %s", r.body["created"], r.body["replayed"], r.body["failed"], r.raw)
	}
	for i := range reqs {
		if got := batchItem(t, r, i)["index"]; got != float64(i) {
			t.Errorf("result %d has index %v", i, got)
		}
	}
	created := func(i int) string {
		item := batchItem(t, r, i)
		task, _ := item["task"].(map[string]any)
		if item["status"] != float64(201) || task == nil || task["state"] != "steps_in_process" || item["error"] != nil {
			t.Errorf("request %d: %v, want 201 with a started task", i, item)
			return ""
		}
		return task["task_uuid"].(string)
	}
	id0, id8 := created(0), created(8)
	for _, tc := range []struct {
		i      int
		status float64
		code   string
		field  string
		says   string
	}{
		{1, 404, "unknown_template", "tasks[1]", "no_such_flow"},
		{2, 400, "invalid_request", "tasks[2].context", "tasks[2].context:"},
		{4, 409, "conflict", "tasks[4].priority", oldID},
		{5, 400, "invalid_json", "tasks[5].colour", "unknown field"},
		{6, 400, "invalid_json", "tasks[6].tags", "must be"},
		{7, 400, "invalid_json", "tasks[7]", "must be a JSON object"},
		{10, 400, "invalid_request", "tasks[10].namespace", "tasks[10].namespace:"},
	} {
		item := batchItem(t, r, tc.i)
		code, field, msg := itemError(item)
		if item["status"] != tc.status || code != tc.code || field != tc.field || !strings.Contains(msg, tc.says) || item["task"] != nil {
			t.Errorf("request %d: status %v code %q field %q message %q; want %v %q %q containing %q",
				tc.i, item["status"], code, field, msg, tc.status, tc.code, tc.field, tc.says)
		}
	}
	for _, tc := range []struct {
		i  int
		id string
	}{{3, oldID}, {9, id8}} {
		item := batchItem(t, r, tc.i)
		task, _ := item["task"].(map[string]any)
		if item["status"] != float64(200) || item["idempotent_replay"] != true || task == nil || task["task_uuid"] != tc.id {
			t.Errorf("request %d: %v, want 200, a replay of task %s", tc.i, item, tc.id)
		}
	}

	ctx := context.Background()
	var n int
	if err := e.h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%d tasks in the database, want 3 (the first, and the batch's two)", n)
	}
	for _, id := range []string{id0, id8} {
		enginetest.Eventually(t, 30*time.Second, "batch task "+id+" completes", func() bool {
			return e.do("GET", "/v1/tasks/"+id, "").body["state"] == "complete"
		})
	}
}

// A batch's envelope is checked before any task: these are refused whole,
// and create nothing.
func TestBatchSubmissionRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	one := orderBody("")
	tooMany := make([]string, api.MaxBatchTasks+1)
	for i := range tooMany {
		tooMany[i] = `{}`
	}
	for _, tc := range []struct {
		name, body string
		headers    []string
		status     int
		field      string
		says       string
	}{
		{"no tasks member", `{}`, nil, 400, "tasks", "required"},
		{"empty", `{"tasks":[]}`, nil, 400, "tasks", "empty"},
		{"too many", `{"tasks":[` + strings.Join(tooMany, ",") + `]}`, nil, 400, "tasks", fmt.Sprintf("at most %d", api.MaxBatchTasks)},
		{"an array", `[` + one + `]`, nil, 400, "", "JSON object"},
		{"unknown member", `{"tasks":[` + one + `],"mode":"atomic"}`, nil, 400, "mode", "unknown field"},
		{"malformed", `{"tasks":[` + one, nil, 400, "", "JSON"},
		{"idempotency header", `{"tasks":[` + one + `]}`, []string{"Idempotency-Key", "k"}, 400, "Idempotency-Key", "idempotency_key"},
		{"too large", `{"tasks":[` + strings.Repeat(one+",", 400) + one + `]}`, nil, 413, "", "send fewer task requests per batch"},
	} {
		r := e.do("POST", "/v1/tasks/batch", tc.body, tc.headers...)
		if r.status != tc.status || errField(r) != tc.field || !strings.Contains(errMessage(r), tc.says) {
			t.Errorf("%s: %d field %q %q; want %d field %q containing %q", tc.name, r.status, errField(r), errMessage(r), tc.status, tc.field, tc.says)
		}
	}
	var n int
	if err := e.h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d tasks created by refused batches", n)
	}
}
