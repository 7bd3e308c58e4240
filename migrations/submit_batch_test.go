package migrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
)

// Tests of tasker.step_submit_results (00008), the batch twin of
// tasker.step_submit_result.

// Each test registers namespaces of its own: the first provisioning of a
// namespace creates its cluster-wide worker role, and two test databases
// registering the same new namespace at the same moment can fail with
// `role "tasker_worker_<ns>" does not exist`.
const (
	sbAlpha = "sb_alpha"
	sbBeta  = "sb_beta"
	sbGamma = "sb_gamma"
)

const sbTemplate = `
namespace: %s
name: single
version: 1.0.0
steps:
  - name: only
    handler: sb.only
`

// claimedStep is a step claimed by hand, as any worker would.
type claimedStep struct {
	label string
	ns    string
	step  uuid.UUID
	task  uuid.UUID
	msgID int64
}

func sbHarness(t *testing.T, namespaces ...string) *enginetest.Harness {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	for _, ns := range namespaces {
		h.Register(fmt.Sprintf(sbTemplate, ns))
	}
	return h
}

// claimSteps creates one task per label in namespace ns and claims each
// task's step as worker wid (attempt 1).
func claimSteps(t *testing.T, h *enginetest.Harness, ns, wid string, labels ...string) []*claimedStep {
	t.Helper()
	ctx := context.Background()
	byTask := map[uuid.UUID]string{}
	for _, l := range labels {
		byTask[h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "single"}).UUID] = l
	}
	q, _ := queue.WorkerQueue(ns)
	msgs, err := queue.Read(ctx, h.Pool, q, 30*time.Second, 100)
	if err != nil {
		t.Fatalf("read %s: %v", q, err)
	}
	var out []*claimedStep
	for _, m := range msgs {
		var body struct {
			TaskUUID uuid.UUID `json:"task_uuid"`
			StepUUID uuid.UUID `json:"step_uuid"`
		}
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatal(err)
		}
		l, ok := byTask[body.TaskUUID]
		if !ok {
			continue
		}
		var claimed bool
		if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, 1, $2, 300)`, body.StepUUID, wid).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("claim %s: %v, %v", l, claimed, err)
		}
		out = append(out, &claimedStep{label: l, ns: ns, step: body.StepUUID, task: body.TaskUUID, msgID: m.ID})
	}
	if len(out) != len(labels) {
		t.Fatalf("claimed %d steps in %s, want %d", len(out), ns, len(labels))
	}
	return out
}

// element is one result of a batch; a nil step stands for a NULL step uuid.
type element struct {
	step    *claimedStep
	attempt int
	success bool
	result  *string // JSON
	errJSON *string
	noMsg   bool
	headers *string
}

func ptr(s string) *string { return &s }

func (e element) args() (uuid.UUID, *uuid.UUID, *int64) {
	if e.step == nil {
		return uuid.Nil, nil, nil
	}
	id := e.step.step
	var msg *int64
	if !e.noMsg {
		msg = &e.step.msgID
	}
	return id, &id, msg
}

// submitBatch calls step_submit_results with one array element per element.
func submitBatch(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, wid string, els []element) ([]bool, error) {
	var ids []*uuid.UUID
	var attempts []int32
	var success []bool
	var results, errs, headers []*string
	var msgs []*int64
	for _, e := range els {
		_, id, msg := e.args()
		ids = append(ids, id)
		attempts = append(attempts, int32(e.attempt))
		success = append(success, e.success)
		results = append(results, e.result)
		errs = append(errs, e.errJSON)
		msgs = append(msgs, msg)
		headers = append(headers, e.headers)
	}
	rows, err := db.Query(ctx, `SELECT step_uuid, accepted FROM tasker.step_submit_results(
		$1::uuid[], $2::integer[], $3::text, $4::boolean[], $5::jsonb[], $6::jsonb[], $7::bigint[], $8::jsonb[])`,
		ids, attempts, wid, success, results, errs, msgs, headers)
	if err != nil {
		return nil, err
	}
	type row struct {
		Step     *uuid.UUID
		Accepted bool
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(got))
	for i, r := range got {
		_, want, _ := els[i].args()
		if (r.Step == nil) != (want == nil) || (r.Step != nil && *r.Step != *want) {
			return nil, fmt.Errorf("row %d is for step %v, element %d is for %v", i+1, r.Step, i+1, want)
		}
		out[i] = r.Accepted
	}
	return out, nil
}

// submitEach submits the elements one after the other with
// step_submit_result, the per-step function.
func submitEach(t *testing.T, h *enginetest.Harness, wid string, els []element) []bool {
	t.Helper()
	var out []bool
	for i, e := range els {
		_, id, msg := e.args()
		var ok bool
		if err := h.Pool.QueryRow(context.Background(), `SELECT tasker.step_submit_result($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::jsonb)`,
			id, e.attempt, wid, e.success, e.result, e.errJSON, msg, e.headers).Scan(&ok); err != nil {
			t.Fatalf("step_submit_result of element %d: %v", i+1, err)
		}
		out = append(out, ok)
	}
	return out
}

// stepObs is everything a submission may have changed for one step, with
// uuids replaced by labels so that two fixtures compare equal.
type stepObs struct {
	State       string
	Attempts    int
	Results     string
	LastError   string
	Transitions []string // in_progress -> x, with metadata and most_recent
	Notices     []string // body and headers
	MsgLeft     bool
}

func observe(t *testing.T, h *enginetest.Harness, steps []*claimedStep) map[string]stepObs {
	t.Helper()
	ctx := context.Background()
	names := map[string]string{}
	for _, s := range steps {
		names[s.step.String()] = s.label + ".step"
		names[s.task.String()] = s.label + ".task"
	}
	relabel := func(s string) string {
		for id, l := range names {
			s = strings.ReplaceAll(s, id, l)
		}
		return s
	}
	out := map[string]stepObs{}
	for _, s := range steps {
		var o stepObs
		var results, lastErr *string
		if err := h.Pool.QueryRow(ctx, `SELECT state, attempts, results::text, last_error::text FROM tasker.workflow_steps WHERE step_uuid = $1`,
			s.step).Scan(&o.State, &o.Attempts, &results, &lastErr); err != nil {
			t.Fatal(err)
		}
		if results != nil {
			o.Results = *results
		}
		if lastErr != nil {
			o.LastError = *lastErr
		}
		rows, _ := h.Pool.Query(ctx, `SELECT format('%s -> %s %s most_recent=%s sort_key_is_count=%s', t.from_state, t.to_state, t.metadata, t.most_recent, t.sort_key = ws.transition_count)
			FROM tasker.workflow_step_transitions t JOIN tasker.workflow_steps ws USING (step_uuid)
			WHERE t.step_uuid = $1 AND t.from_state = 'in_progress' ORDER BY t.sort_key`, s.step)
		tr, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		o.Transitions = tr
		rows, _ = h.Pool.Query(ctx, `SELECT message::text || ' headers ' || coalesce(headers::text, 'NULL')
			FROM pgmq.q_orchestration_step_results WHERE message->>'step_uuid' = $1 ORDER BY msg_id`, s.step.String())
		notices, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range notices {
			o.Notices = append(o.Notices, relabel(n))
		}
		o.MsgLeft = scalar[int](t, h.Pool, fmt.Sprintf(`SELECT count(*) FROM pgmq.q_worker_%s_queue WHERE msg_id = $1`, s.ns), s.msgID) == 1
		out[s.label] = o
	}
	return out
}

// mixedFixture claims steps in two namespaces for a batch that exercises
// every per-element case: a0..a2 and b0, b1 held by w1; a3 held by w1 and
// already submitted; c0 held by w2.
func mixedFixture(t *testing.T, h *enginetest.Harness) ([]*claimedStep, []element) {
	t.Helper()
	a := claimSteps(t, h, sbAlpha, "w1", "a0", "a1", "a2", "a3")
	b := claimSteps(t, h, sbBeta, "w1", "b0", "b1")
	c := claimSteps(t, h, sbAlpha, "w2", "c0")
	st := map[string]*claimedStep{}
	for _, s := range append(append(a, b...), c...) {
		st[s.label] = s
	}
	if got := submitEach(t, h, "w1", []element{{step: st["a3"], attempt: 1, success: true, result: ptr(`{"earlier":true}`), headers: ptr(`{"traceparent":"tp-earlier"}`)}}); !got[0] {
		t.Fatal("the earlier submission of a3 was refused")
	}
	boom := `{"message":"boom","retryable":true,"kind":"error"}`
	bad := `{"message":"invalid account","retryable":false,"kind":"permanent"}`
	els := []element{
		{step: st["a0"], attempt: 1, success: true, result: ptr(`{"n":0}`), headers: ptr(`{"traceparent":"tp-1"}`)},
		{step: st["b0"], attempt: 1, success: false, errJSON: ptr(boom), headers: ptr(`{"traceparent":"tp-2"}`)},
		{step: st["a1"], attempt: 1, success: true, noMsg: true},                                                     // NULL result, message and headers
		{step: st["a0"], attempt: 1, success: true, result: ptr(`{"n":99}`), headers: ptr(`{"traceparent":"tp-4"}`)}, // duplicate in the batch
		{step: st["a3"], attempt: 1, success: true, result: ptr(`{"again":true}`)},                                   // duplicate of an earlier submission
		{step: st["a2"], attempt: 2, success: true, result: ptr(`{"wrong":"attempt"}`)},                              // wrong attempt
		{step: st["c0"], attempt: 1, success: true, result: ptr(`{"wrong":"worker"}`)},                               // not w1's
		{step: st["b1"], attempt: 1, success: false, errJSON: ptr(bad), headers: ptr(`{"traceparent":"tp-8"}`)},
		{step: st["a2"], attempt: 1, success: true, result: ptr(`{"n":2}`), headers: ptr(`{"traceparent":"tp-9"}`)}, // after its wrong attempt
		{attempt: 1, success: true}, // NULL step
	}
	return append(append(a, b...), c...), els
}

// TestStepSubmitResultsMixedBatch: a batch across two namespaces with
// successes, failures, duplicates (in the batch and of an earlier
// submission), a wrong attempt and a wrong worker does, element by element,
// exactly what the same submissions one by one with step_submit_result do,
// and what the protocol promises.
func TestStepSubmitResultsMixedBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := sbHarness(t, sbAlpha, sbBeta)

	batchSteps, batchEls := mixedFixture(t, h)
	eachSteps, eachEls := mixedFixture(t, h)

	got, err := submitBatch(ctx, h.Pool, "w1", batchEls)
	if err != nil {
		t.Fatalf("step_submit_results: %v", err)
	}
	want := []bool{true, true, true, false, false, false, false, true, true, false}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("accepted = %v, want %v", got, want)
	}
	if each := submitEach(t, h, "w1", eachEls); !reflect.DeepEqual(each, got) {
		t.Errorf("one by one, accepted = %v; as a batch %v", each, got)
	}
	batch, each := observe(t, h, batchSteps), observe(t, h, eachSteps)
	for label, b := range batch {
		if !reflect.DeepEqual(b, each[label]) {
			t.Errorf("%s differs:\n batch:       %+v\n one by one:  %+v", label, b, each[label])
		}
	}

	// What that is, spelled out.
	done, failed := string(lifecycle.StepEnqueuedForOrchestration), string(lifecycle.StepEnqueuedAsErrorForOrchestration)
	expect := map[string]struct {
		state, results, lastError string
		notices                   []string
		msgLeft                   bool
	}{
		"a0": {done, `{"n": 0}`, "", []string{`{"attempt": 1, "success": true, "step_uuid": "a0.step", "task_uuid": "a0.task"} headers {"traceparent": "tp-1"}`}, false},
		"a1": {done, "null", "", []string{`{"attempt": 1, "success": true, "step_uuid": "a1.step", "task_uuid": "a1.task"} headers {}`}, true},
		"a2": {done, `{"n": 2}`, "", []string{`{"attempt": 1, "success": true, "step_uuid": "a2.step", "task_uuid": "a2.task"} headers {"traceparent": "tp-9"}`}, false},
		"a3": {done, `{"earlier": true}`, "", []string{`{"attempt": 1, "success": true, "step_uuid": "a3.step", "task_uuid": "a3.task"} headers {"traceparent": "tp-earlier"}`}, false},
		"b0": {failed, "", `{"kind": "error", "message": "boom", "retryable": true}`, []string{`{"attempt": 1, "success": false, "step_uuid": "b0.step", "task_uuid": "b0.task"} headers {"traceparent": "tp-2"}`}, false},
		"b1": {failed, "", `{"kind": "permanent", "message": "invalid account", "retryable": false}`, []string{`{"attempt": 1, "success": false, "step_uuid": "b1.step", "task_uuid": "b1.task"} headers {"traceparent": "tp-8"}`}, false},
		"c0": {string(lifecycle.StepInProgress), "", "", nil, false}, // refused, but its message is gone
	}
	for label, e := range expect {
		b := batch[label]
		if b.State != e.state || b.Results != e.results || b.LastError != e.lastError || b.MsgLeft != e.msgLeft || b.Attempts != 1 {
			t.Errorf("%s: state %s, attempts %d, results %q, last_error %q, message left %v; want %s, 1, %q, %q, %v",
				label, b.State, b.Attempts, b.Results, b.LastError, b.MsgLeft, e.state, e.results, e.lastError, e.msgLeft)
		}
		if !reflect.DeepEqual(b.Notices, e.notices) {
			t.Errorf("%s: notices %q, want %q", label, b.Notices, e.notices)
		}
		wantTransitions := 0
		if len(e.notices) > 0 {
			wantTransitions = 1
		}
		if len(b.Transitions) != wantTransitions {
			t.Errorf("%s: transitions from in_progress %q, want %d", label, b.Transitions, wantTransitions)
		} else if wantTransitions == 1 {
			tr := b.Transitions[0]
			if want := "in_progress -> " + e.state + ` {"attempt": 1, "worker_id": "w1"} most_recent=t sort_key_is_count=t`; tr != want {
				t.Errorf("%s: transition %q, want %q", label, tr, want)
			}
		}
	}
}

// TestStepSubmitResultsRejectsMalformedBatches: arrays of different
// lengths, a failure without an error object and a NULL success are
// rejected with a message naming the problem, and nothing of the batch is
// applied, not even its valid elements.
func TestStepSubmitResultsRejectsMalformedBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := sbHarness(t, sbGamma)
	steps := claimSteps(t, h, sbGamma, "w1", "x0", "x1")
	ok := element{step: steps[0], attempt: 1, success: true, result: ptr(`{"ok":true}`)}

	for _, c := range []struct {
		name string
		sql  string
		args []any
		msg  string
	}{
		{"one success too few",
			`SELECT * FROM tasker.step_submit_results($1::uuid[], '{1,1}', 'w1', '{true}', '{NULL,NULL}', '{NULL,NULL}', $2::bigint[], '{NULL,NULL}')`,
			[]any{[]uuid.UUID{steps[0].step, steps[1].step}, []int64{steps[0].msgID, steps[1].msgID}},
			"p_success has 1 elements but p_step_uuids has 2"},
		{"no message ids",
			`SELECT * FROM tasker.step_submit_results($1::uuid[], '{1,1}', 'w1', '{true,true}', '{NULL,NULL}', '{NULL,NULL}', NULL, '{NULL,NULL}')`,
			[]any{[]uuid.UUID{steps[0].step, steps[1].step}},
			"p_msg_ids has 0 elements but p_step_uuids has 2"},
		{"two-dimensional",
			`SELECT * FROM tasker.step_submit_results(ARRAY[$1::uuid[]], '{{1}}', 'w1', '{{true}}', '{{NULL}}', '{{NULL}}', '{{NULL}}', '{{NULL}}')`,
			[]any{[]uuid.UUID{steps[0].step}},
			"one-dimensional"},
	} {
		_, err := h.Pool.Exec(ctx, c.sql, c.args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, c.msg) {
			t.Errorf("%s: want invalid_parameter_value mentioning %q, got %v", c.name, c.msg, err)
		}
	}

	for _, c := range []struct {
		name string
		bad  element
		msg  string
	}{
		{"failure without error", element{step: steps[1], attempt: 1, success: false},
			fmt.Sprintf(`element 2 of 2 (step %s): a failure needs an error object`, steps[1].step)},
		{"failure with a JSON null error", element{step: steps[1], attempt: 1, success: false, errJSON: ptr("null")},
			fmt.Sprintf(`element 2 of 2 (step %s): a failure needs an error object`, steps[1].step)},
		{"failure with a string error", element{step: steps[1], attempt: 1, success: false, errJSON: ptr(`"boom"`)},
			fmt.Sprintf(`element 2 of 2 (step %s): a failure needs an error object`, steps[1].step)},
	} {
		_, err := submitBatch(ctx, h.Pool, "w1", []element{ok, c.bad})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, c.msg) {
			t.Errorf("%s: want invalid_parameter_value mentioning %q, got %v", c.name, c.msg, err)
		}
	}
	_, err := h.Pool.Exec(ctx, `SELECT * FROM tasker.step_submit_results($1::uuid[], '{1,1}', 'w1', '{true,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')`,
		[]uuid.UUID{steps[0].step, steps[1].step})
	var pgErr *pgconn.PgError
	if want := "element 2 of 2 (step " + steps[1].step.String() + "): success must be true or false"; !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, want) {
		t.Errorf("NULL success: want invalid_parameter_value mentioning %q, got %v", want, err)
	}

	// Nothing happened to either step.
	for label, o := range observe(t, h, steps) {
		if o.State != string(lifecycle.StepInProgress) || len(o.Notices) != 0 || len(o.Transitions) != 0 || !o.MsgLeft {
			t.Errorf("%s changed by a rejected batch: %+v", label, o)
		}
	}

	// An empty batch is no error and returns nothing.
	if got, err := submitBatch(ctx, h.Pool, "w1", nil); err != nil || len(got) != 0 {
		t.Errorf("empty batch: %v, %v", got, err)
	}
	// The valid element alone goes through.
	if got, err := submitBatch(ctx, h.Pool, "w1", []element{ok}); err != nil || !got[0] {
		t.Errorf("valid element alone: %v, %v", got, err)
	}
}

// TestStepSubmitResultsNoticesInTheWorkersOrder: the notices of a batch are
// queued in the order the worker listed the results, whatever the order of
// the steps' keys (the compare-and-swap visits the steps in key order), and
// each step's new transition row is its only most_recent one.
func TestStepSubmitResultsNoticesInTheWorkersOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := sbHarness(t, sbAlpha)
	steps := claimSteps(t, h, sbAlpha, "w1", "s0", "s1", "s2", "s3", "s4", "s5")
	// Listed against key order: descending keys, then the rest.
	sort.Slice(steps, func(i, j int) bool { return steps[i].step.String() > steps[j].step.String() })
	steps[0], steps[3] = steps[3], steps[0]
	var els []element
	for _, s := range steps {
		els = append(els, element{step: s, attempt: 1, success: true, result: ptr(`{}`)})
	}
	got, err := submitBatch(ctx, h.Pool, "w1", els)
	if err != nil {
		t.Fatalf("step_submit_results: %v", err)
	}
	for i, ok := range got {
		if !ok {
			t.Errorf("element %d refused", i+1)
		}
	}
	rows, err := h.Pool.Query(ctx, `SELECT (message->>'step_uuid')::uuid FROM pgmq.q_orchestration_step_results
		WHERE (message->>'step_uuid')::uuid = ANY ($1) ORDER BY msg_id`, stepIDs(steps))
	if err != nil {
		t.Fatal(err)
	}
	order, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	if want := stepIDs(steps); !reflect.DeepEqual(order, want) {
		t.Errorf("notices in the order %v, want the worker's %v", order, want)
	}
	var current, stale int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE most_recent), count(*) FILTER (WHERE NOT most_recent)
		FROM tasker.workflow_step_transitions WHERE step_uuid = ANY ($1)`, stepIDs(steps)).Scan(&current, &stale); err != nil {
		t.Fatal(err)
	}
	if current != len(steps) || stale == 0 {
		t.Errorf("%d most_recent transition rows and %d earlier ones for %d steps", current, stale, len(steps))
	}
	if n := countOf(t, h.Pool, `SELECT count(*) FROM tasker.workflow_step_transitions
		WHERE step_uuid = ANY ($1) AND most_recent AND from_state = 'in_progress' AND to_state = 'enqueued_for_orchestration'`, stepIDs(steps)); n != len(steps) {
		t.Errorf("%d most_recent rows are the submission's, want %d", n, len(steps))
	}
}

func stepIDs(steps []*claimedStep) []uuid.UUID {
	out := make([]uuid.UUID, len(steps))
	for i, s := range steps {
		out[i] = s.step
	}
	return out
}

// TestSubmitBatchFixedCostDownAndUpAgain (00035): Down puts back exactly the
// batch submission of a database migrated to 00034, and Up again exactly
// what it made; the functions it no longer calls stay.
func TestSubmitBatchFixedCostDownAndUpAgain(t *testing.T) {
	t.Parallel()
	downAndUpAgain(t, 34, func(db *pgxpool.Pool) []string {
		return protocolFunctions(t, db, "step_submit_results", "step_submit_cas", "log_step_transitions")
	}, func(up, at34 []string) {
		if len(up) != 3 || len(at34) != 3 {
			t.Fatalf("functions after up:\n%s\nas migrated to 00034:\n%s\nwant three of each", strings.Join(up, "\n"), strings.Join(at34, "\n"))
		}
	})
}
