package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/suggest"
)

// TaskView is a task as the API shows it.
type TaskView struct {
	TaskUUID            uuid.UUID       `json:"task_uuid"`
	Namespace           string          `json:"namespace"`
	Name                string          `json:"name"`
	Version             string          `json:"version"`
	State               string          `json:"state"`
	Context             json.RawMessage `json:"context"`
	Tags                []string        `json:"tags"`
	Priority            int             `json:"priority"`
	Initiator           string          `json:"initiator"`
	SourceSystem        string          `json:"source_system"`
	Reason              string          `json:"reason"`
	CorrelationID       uuid.UUID       `json:"correlation_id"`
	ParentCorrelationID *uuid.UUID      `json:"parent_correlation_id,omitempty"`
	TraceID             string          `json:"trace_id,omitempty"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           time.Time       `json:"updated_at"`
	CompletedAt         *time.Time      `json:"completed_at,omitempty"`
	Steps               []StepView      `json:"steps,omitempty"`
	StepCounts          map[string]int  `json:"step_counts,omitempty"`
	Transitions         []TransitionV   `json:"transitions,omitempty"`
}

// StepView is a step as the API shows it.
type StepView struct {
	StepUUID      uuid.UUID       `json:"step_uuid"`
	TaskUUID      uuid.UUID       `json:"task_uuid"`
	Name          string          `json:"name"`
	Handler       string          `json:"handler"`
	State         string          `json:"state"`
	Attempts      int             `json:"attempts"`
	MaxAttempts   int             `json:"max_attempts"`
	Retryable     bool            `json:"retryable"`
	DependsOn     []string        `json:"depends_on"`
	NextAttemptAt *time.Time      `json:"next_attempt_at,omitempty"`
	ClaimedBy     string          `json:"claimed_by,omitempty"`
	Results       json.RawMessage `json:"results,omitempty"`
	LastError     json.RawMessage `json:"last_error,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	CompletedAt   *time.Time      `json:"completed_at,omitempty"`
}

// TransitionV is a transition row.
type TransitionV struct {
	StepUUID  *uuid.UUID      `json:"step_uuid,omitempty"`
	StepName  string          `json:"step_name,omitempty"`
	From      string          `json:"from_state"`
	To        string          `json:"to_state"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
}

func taskView(t store.Task) TaskView {
	v := TaskView{TaskUUID: t.UUID, Namespace: t.Namespace, Name: t.Name, Version: t.Version,
		State: string(t.State), Context: t.Context, Tags: t.Tags, Priority: t.Priority,
		Initiator: t.Initiator, SourceSystem: t.SourceSystem, Reason: t.Reason,
		CorrelationID: t.CorrelationID, ParentCorrelationID: t.ParentCorrelationID,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, CompletedAt: t.CompletedAt}
	if parts := strings.Split(t.TraceParent, "-"); len(parts) == 4 {
		v.TraceID = parts[1]
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	return v
}

func stepViews(steps []store.Step) []StepView {
	names := make(map[uuid.UUID]string, len(steps))
	for _, s := range steps {
		names[s.UUID] = s.Name
	}
	out := make([]StepView, 0, len(steps))
	for _, s := range steps {
		deps := make([]string, 0, len(s.Parents))
		for _, p := range s.Parents {
			deps = append(deps, names[p])
		}
		out = append(out, stepView(s, deps))
	}
	return out
}

func stepView(s store.Step, deps []string) StepView {
	return StepView{StepUUID: s.UUID, TaskUUID: s.TaskUUID, Name: s.Name, Handler: s.Handler, State: string(s.State),
		Attempts: s.Attempts, MaxAttempts: s.MaxAttempts, Retryable: s.Retryable, DependsOn: deps,
		NextAttemptAt: s.NextAttemptAt, ClaimedBy: s.ClaimedBy, Results: s.Results, LastError: s.LastError,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, CompletedAt: s.CompletedAt}
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	var req orchestration.TaskRequest
	body, ok := s.decodeBodyBytes(w, r, &req)
	if !ok {
		return
	}
	req.Given = orchestration.GivenFields(body)
	if !idempotencyKeyHeader(w, r, &req) {
		return
	}
	t, steps, created, err := s.engine.CreateTaskWithSteps(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusCreated
	if !created {
		// The idempotency key was seen before: this is that task.
		status = http.StatusOK
		if fresh, err := s.store.TaskGet(r.Context(), t.UUID); err == nil {
			t = fresh
		}
		if field := req.DiffersFrom(t); field != "" {
			writeError(w, http.StatusConflict, "conflict", fmt.Sprintf(
				"idempotency key %q was first used for task %s, whose %s differs from this request's: a different request needs a new key",
				req.IdempotencyKey, t.UUID, field), field)
			return
		}
		w.Header().Set("Idempotent-Replay", "true")
	}
	w.Header().Set("Location", "/v1/tasks/"+t.UUID.String())
	if created {
		// The steps as the creation left them, not read back: one
		// transaction fewer per request.
		s.writeTaskWithSteps(w, r, t, steps, status, false)
		return
	}
	s.writeTask(w, r, t, status, false)
}

// idempotencyKeyHeader puts the Idempotency-Key header, when one is sent,
// into req as its key. Its errors name the header, not the body field the
// engine would name: a client looking for idempotency_key in its body would
// not find it. A header and a body key that differ are refused: either
// could be the one the client meant. An empty header is no header, as an
// empty idempotency_key is no key.
func idempotencyKeyHeader(w http.ResponseWriter, r *http.Request, req *orchestration.TaskRequest) bool {
	const header = "Idempotency-Key"
	keys := r.Header.Values(header)
	if len(keys) > 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("the %s header is given %d times; send one key", header, len(keys)), header)
		return false
	}
	if len(keys) == 0 || keys[0] == "" {
		return true
	}
	k := keys[0]
	if err := orchestration.ValidateText(header, k, orchestration.MaxTextFieldLen); err != nil {
		msg := err.Error()
		var fe *orchestration.FieldError
		if errors.As(err, &fe) {
			msg = fe.Message
		}
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("the %s header %s", header, msg), header)
		return false
	}
	if req.IdempotencyKey != "" && req.IdempotencyKey != k {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf(
			"the %s header %q and the body's idempotency_key %q differ: send the key once, or the same key in both",
			header, k, req.IdempotencyKey), header)
		return false
	}
	req.IdempotencyKey = k
	return true
}

func (s *Server) writeTask(w http.ResponseWriter, r *http.Request, t store.Task, status int, transitions bool) {
	steps, err := s.store.TaskSteps(r.Context(), t.UUID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeTaskWithSteps(w, r, t, steps, status, transitions)
}

// writeTaskWithSteps is writeTask with the task's steps at hand.
func (s *Server) writeTaskWithSteps(w http.ResponseWriter, r *http.Request, t store.Task, steps []store.Step, status int, transitions bool) {
	v := taskView(t)
	v.Steps = stepViews(steps)
	v.StepCounts = map[string]int{}
	for _, st := range steps {
		v.StepCounts[string(st.State)]++
	}
	if transitions {
		tt, st, err := s.store.TaskTransitions(r.Context(), t.UUID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		names := map[uuid.UUID]string{}
		for _, x := range steps {
			names[x.UUID] = x.Name
		}
		for _, x := range append(tt, st...) {
			tv := TransitionV{StepUUID: x.StepUUID, From: x.From, To: x.To, Metadata: x.Metadata, CreatedAt: x.CreatedAt}
			if x.StepUUID != nil {
				tv.StepName = names[*x.StepUUID]
			}
			v.Transitions = append(v.Transitions, tv)
		}
	}
	writeJSON(w, status, v)
}

func pathUUID(w http.ResponseWriter, r *http.Request, name string) (uuid.UUID, bool) {
	raw := r.PathValue(name)
	id, err := uuid.Parse(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s %q is not a UUID", name, raw), name)
		return uuid.Nil, false
	}
	return id, true
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	id, ok := pathUUID(w, r, "task_uuid")
	if !ok {
		return
	}
	include, ok := parseInclude(w, r)
	if !ok {
		return
	}
	t, err := s.store.TaskGet(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeTask(w, r, t, http.StatusOK, slices.Contains(include, "transitions"))
}

// includeValues are what ?include= of GET /v1/tasks/{task_uuid} can add.
var includeValues = []string{"transitions"}

// parseInclude reads ?include=, a comma-separated list of includeValues
// ("" for none). A value it does not know is refused rather than ignored:
// a client asking for something it does not get should hear so.
func parseInclude(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	raw := r.URL.Query().Get("include")
	if raw == "" {
		return nil, true
	}
	list := strings.Split(raw, ",")
	for _, v := range list {
		if !slices.Contains(includeValues, v) {
			msg := fmt.Sprintf("include: %q is not something a task can include", v)
			if guess, ok := suggest.Closest(v, includeValues); ok {
				msg += fmt.Sprintf(" (did you mean %q?)", guess)
			}
			writeError(w, http.StatusBadRequest, "invalid_request",
				msg+"; include takes a comma-separated list of: "+strings.Join(includeValues, ", "), "include")
			return nil, false
		}
	}
	return list, true
}

// cursor encodes the keyset position of the last task of a page.
type cursor struct {
	CreatedAt time.Time `json:"c"`
	UUID      uuid.UUID `json:"u"`
}

// String is the cursor as the API hands it out: base64url of its JSON.
func (c cursor) String() string {
	b, err := json.Marshal(c)
	if err != nil {
		return "" // a time json cannot write (year > 9999): no cursor
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseCursor accepts exactly a cursor this API handed out: the encoding of
// a real position (a time and a task UUID), byte for byte. Anything else
// that happens to decode, such as {} or null (e30, bnVsbA) or a field left
// out, would be a zero position that pages from nowhere: an empty page,
// which a client takes for the end of the list.
func parseCursor(s string) (cursor, bool) {
	var c cursor
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(raw, &c) != nil || c.CreatedAt.IsZero() || c.UUID == uuid.Nil {
		return cursor{}, false
	}
	return c, c.String() == s
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.TaskFilter{Namespace: q.Get("namespace"), Name: q.Get("name"), State: q.Get("state"), Initiator: q.Get("initiator"), Limit: 50}
	if f.State != "" {
		if _, err := lifecycle.ParseTaskState(f.State); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("state %q is not a task state", f.State), "state")
			return
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "invalid_request", "limit must be an integer from 1 to 500", "limit")
			return
		}
		f.Limit = n
	}
	for key, dst := range map[string]**time.Time{"created_after": &f.CreatedAfter, "created_before": &f.CreatedBefore} {
		if v := q.Get(key); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "invalid_request", key+" must be an RFC 3339 time like 2026-01-02T15:04:05Z", key)
				return
			}
			*dst = &t
		}
	}
	if c := q.Get("cursor"); c != "" {
		cur, ok := parseCursor(c)
		if !ok {
			writeError(w, http.StatusBadRequest, "invalid_request", "cursor is not a cursor returned by this API (pass next_cursor as it came)", "cursor")
			return
		}
		f.AfterCreatedAt, f.AfterUUID = &cur.CreatedAt, cur.UUID
	}
	tasks, err := s.store.TaskList(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := struct {
		Tasks      []TaskView `json:"tasks"`
		NextCursor string     `json:"next_cursor,omitempty"`
	}{Tasks: make([]TaskView, 0, len(tasks))}
	for _, t := range tasks {
		out.Tasks = append(out.Tasks, taskView(t))
	}
	if len(tasks) == f.Limit {
		last := tasks[len(tasks)-1]
		out.NextCursor = cursor{CreatedAt: last.CreatedAt, UUID: last.UUID}.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// taskActionRequest is the optional body of a task action.
type taskActionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// stepActionRequest is the optional body of a step action; only resolve
// takes a result.
type stepActionRequest struct {
	Reason string          `json:"reason,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

func (s *Server) taskAction(w http.ResponseWriter, r *http.Request, do func(id uuid.UUID, reason string) (store.Task, error)) {
	id, ok := pathUUID(w, r, "task_uuid")
	if !ok {
		return
	}
	var a taskActionRequest
	if !s.decodeOptionalBody(w, r, &a) {
		return
	}
	t, err := do(id, a.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeTask(w, r, t, http.StatusOK, false)
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	s.taskAction(w, r, func(id uuid.UUID, reason string) (store.Task, error) {
		return s.engine.CancelTask(r.Context(), id, reason)
	})
}

func (s *Server) retryTask(w http.ResponseWriter, r *http.Request) {
	s.taskAction(w, r, func(id uuid.UUID, reason string) (store.Task, error) {
		return s.engine.RetryTask(r.Context(), id, reason)
	})
}

func (s *Server) resolveTask(w http.ResponseWriter, r *http.Request) {
	s.taskAction(w, r, func(id uuid.UUID, reason string) (store.Task, error) {
		return s.engine.ResolveTask(r.Context(), id, reason)
	})
}

func (s *Server) getStep(w http.ResponseWriter, r *http.Request) {
	id, ok := pathUUID(w, r, "step_uuid")
	if !ok {
		return
	}
	st, err := s.store.StepGet(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeStep(w, r, st)
}

func (s *Server) writeStep(w http.ResponseWriter, r *http.Request, st store.Step) {
	siblings, err := s.store.TaskSteps(r.Context(), st.TaskUUID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, v := range stepViews(siblings) {
		if v.StepUUID == st.UUID {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	writeJSON(w, http.StatusOK, stepView(st, nil))
}

func (s *Server) stepAction(w http.ResponseWriter, r *http.Request, action orchestration.StepAction) {
	id, ok := pathUUID(w, r, "step_uuid")
	if !ok {
		return
	}
	var a stepActionRequest
	if !s.decodeOptionalBody(w, r, &a) {
		return
	}
	if action == orchestration.StepActionRetry && a.Result != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "result is only accepted when resolving a step", "result")
		return
	}
	st, _, err := s.engine.StepOperate(r.Context(), id, action, a.Result, a.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeStep(w, r, st)
}

func (s *Server) resolveStep(w http.ResponseWriter, r *http.Request) {
	s.stepAction(w, r, orchestration.StepActionResolve)
}

func (s *Server) retryStep(w http.ResponseWriter, r *http.Request) {
	s.stepAction(w, r, orchestration.StepActionRetry)
}
