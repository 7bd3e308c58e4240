package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/orchestration"
)

// MaxBatchTasks caps the task requests of one batch submission. The whole
// body also stays within the server's body limit (server.max_body_bytes).
const MaxBatchTasks = 1000

// batchTimeout bounds the creation of one batch's tasks (a full batch takes
// about a second on a loaded two-core machine).
const batchTimeout = 25 * time.Second

// TaskBatchRequest is the body of POST /v1/tasks/batch.
type TaskBatchRequest struct {
	Tasks []json.RawMessage `json:"tasks"`
}

// TaskBatchResult is the answer to a batch submission: one result per
// request, in the order of the requests, and the counts of each outcome.
type TaskBatchResult struct {
	Results  []TaskBatchItem `json:"results"`
	Created  int             `json:"created"`
	Replayed int             `json:"replayed"`
	Failed   int             `json:"failed"`
}

// TaskBatchItem is one request's outcome, with the status POST /v1/tasks
// would have answered it with: 201 and the task; 200 and the task its
// idempotency key created before (IdempotentReplay); or an error status and
// the error, whose field is the request's place in the batch
// (tasks[3].context).
type TaskBatchItem struct {
	Index            int          `json:"index"`
	Status           int          `json:"status"`
	Task             *TaskView    `json:"task,omitempty"`
	IdempotentReplay bool         `json:"idempotent_replay,omitempty"`
	Error            *errorDetail `json:"error,omitempty"`
}

// createTasks is POST /v1/tasks/batch: up to MaxBatchTasks task requests
// in one call, created together (shared transactions, one round trip for
// the client) and answered one by one. A request that is wrong fails
// alone; the batch as a whole is refused (400) only when its envelope is
// unusable.
func (s *Server) createTasks(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Idempotency-Key") != "" {
		writeError(w, http.StatusBadRequest, "invalid_request",
			"the Idempotency-Key header does not apply to a batch: give each task its own idempotency_key in its request", "Idempotency-Key")
		return
	}
	var batch TaskBatchRequest
	if !s.decodeBody(w, r, &batch) {
		return
	}
	switch n := len(batch.Tasks); {
	case batch.Tasks == nil:
		writeError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("tasks: required, an array of 1 to %d task requests", MaxBatchTasks), "tasks")
		return
	case n == 0:
		writeError(w, http.StatusBadRequest, "invalid_request", "tasks: the batch is empty; send 1 or more task requests", "tasks")
		return
	case n > MaxBatchTasks:
		writeError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("tasks: %d task requests; a batch takes at most %d (split it)", n, MaxBatchTasks), "tasks")
		return
	}

	out := TaskBatchResult{Results: make([]TaskBatchItem, len(batch.Tasks))}
	reqs := make([]orchestration.TaskRequest, 0, len(batch.Tasks))
	at := make([]int, 0, len(batch.Tasks))
	for i, raw := range batch.Tasks {
		out.Results[i].Index = i
		req, d := decodeBatchTask(i, raw)
		if d != nil {
			out.Results[i].Status, out.Results[i].Error = http.StatusBadRequest, d
			continue
		}
		reqs = append(reqs, req)
		at = append(at, i)
	}
	// Every request of the batch is carried out once it is queued, even if
	// the client goes away: a batch cut off half way would leave it
	// guessing which tasks exist.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), batchTimeout)
	defer cancel()
	results := s.engine.CreateTasks(ctx, reqs)
	// The tasks that idempotency keys had created before, as they are now
	// (POST /v1/tasks answers a replay with the task's current state), in
	// one read: a client retrying a whole batch replays every request.
	var replayed []uuid.UUID
	for _, res := range results {
		if res.Err == nil && !res.Created {
			replayed = append(replayed, res.Task.UUID)
		}
	}
	fresh, err := s.store.TasksGet(r.Context(), replayed)
	if err != nil {
		fresh = nil // answered as they were found by the creation
	}
	for k, res := range results {
		i := at[k]
		item := &out.Results[i]
		if res.Err != nil {
			status, d := s.errorFor(r, res.Err)
			item.Status, item.Error = status, inBatch(i, d)
			continue
		}
		t := res.Task
		item.Status = http.StatusCreated
		if !res.Created {
			// As POST /v1/tasks: the task the key created, unless this
			// request asks for something else.
			item.Status, item.IdempotentReplay = http.StatusOK, true
			if ft, ok := fresh[t.UUID]; ok {
				t = ft
			}
			if field := reqs[k].DiffersFrom(t); field != "" {
				item.Status, item.IdempotentReplay = http.StatusConflict, false
				item.Error = inBatch(i, errorDetail{Code: "conflict", Field: field, Message: fmt.Sprintf(
					"idempotency key %q was first used for task %s, whose %s differs from this request's: a different request needs a new key",
					reqs[k].IdempotencyKey, t.UUID, field)})
				continue
			}
		}
		v := taskView(t)
		item.Task = &v
	}
	for _, it := range out.Results {
		switch {
		case it.Status == http.StatusCreated:
			out.Created++
		case it.IdempotentReplay:
			out.Replayed++
		default:
			out.Failed++
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeBatchTask decodes the batch's request i as POST /v1/tasks decodes
// its body: unknown fields refused, the members given recorded.
func decodeBatchTask(i int, raw json.RawMessage) (orchestration.TaskRequest, *errorDetail) {
	var req orchestration.TaskRequest
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return req, inBatch(i, errorDetail{Code: "invalid_json", Message: "must be a JSON object (a task request), not " + jsonKind(t)})
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		msg, field := describeJSONError(err, raw, &req)
		return req, inBatch(i, errorDetail{Code: "invalid_json", Message: msg, Field: field})
	}
	req.Given = orchestration.GivenFields(raw)
	return req, nil
}

// inBatch places an error of the batch's request i: its field becomes
// tasks[i].field (tasks[i] when it names none) and its message starts with
// that place.
func inBatch(i int, d errorDetail) *errorDetail {
	place := "tasks[" + strconv.Itoa(i) + "]"
	field := d.Field
	if field == "" {
		d.Field, d.Message = place, place+": "+d.Message
		return &d
	}
	d.Field = place + "." + field
	if strings.HasPrefix(d.Message, field+":") {
		// "context: must be …" becomes "tasks[3].context: must be …".
		d.Message = place + "." + d.Message
	} else {
		d.Message = place + ": " + d.Message
	}
	return &d
}

// jsonKind names the kind of JSON value that starts raw, for errors.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}
