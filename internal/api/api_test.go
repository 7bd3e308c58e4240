package api_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/api"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/worker"
)

type env struct {
	t   *testing.T
	h   *enginetest.Harness
	srv *httptest.Server
}

func newEnv(t *testing.T, auth *api.Authenticator, withWorker bool) *env {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: !withWorker})
	h.RegisterFile(filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml"))
	if withWorker {
		h.Worker(worker.Config{Namespaces: []string{demo.Namespace}}, demo.Handlers(0))
	}
	s := api.New(h.Engine, h.Store, h.Logger, api.Options{MaxBodyBytes: 64 << 10, Auth: auth})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, h: h, srv: srv}
}

type resp struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

func (e *env) do(method, path, body string, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// doChunked sends a POST whose body is chunked and has no bytes, written by
// hand: net/http's client sends such a body as Content-Length: 0.
func (e *env) doChunked(path string) resp {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: tasker\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", path)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, raw: string(raw), header: res.Header}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func errMessage(r resp) string {
	e, _ := r.body["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

func errField(r resp) string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func orderBody(extra string) string {
	return `{"namespace":"ecommerce","name":"order_fulfillment","context":` + demo.SampleContext(1) + extra + `}`
}

func TestTaskEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, true)

	created := e.do("POST", "/v1/tasks", orderBody(`,"initiator":"api-test","tags":["vip"],"idempotency_key":"k-1"`))
	if created.status != http.StatusCreated {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	id := created.body["task_uuid"].(string)
	if loc := created.header.Get("Location"); loc != "/v1/tasks/"+id {
		t.Errorf("Location = %q", loc)
	}
	if steps, _ := created.body["steps"].([]any); len(steps) != 5 {
		t.Errorf("created task shows %d steps, want 5", len(steps))
	}
	dup := e.do("POST", "/v1/tasks", orderBody(`,"idempotency_key":"k-1"`))
	if dup.status != http.StatusOK || dup.body["task_uuid"] != id || dup.header.Get("Idempotent-Replay") != "true" {
		t.Errorf("duplicate key: %d %v, want 200 and the same task", dup.status, dup.body["task_uuid"])
	}
	// The same key for a different request is a conflict, not a silent
	// replay of the first task (its context, or a field it sets, differs).
	for _, tc := range []struct{ body, field string }{
		{`{"namespace":"ecommerce","name":"order_fulfillment","context":` + demo.SampleContext(2) + `,"idempotency_key":"k-1"}`, "context"},
		{orderBody(`,"priority":7,"idempotency_key":"k-1"`), "priority"},
		{orderBody(`,"initiator":"someone-else","idempotency_key":"k-1"`), "initiator"},
	} {
		r := e.do("POST", "/v1/tasks", tc.body)
		if r.status != http.StatusConflict || errField(r) != tc.field || !strings.Contains(r.raw, id) {
			t.Errorf("key reused with a different %s: %d %s, want 409 naming the field and the first task", tc.field, r.status, r.raw)
		}
	}

	enginetest.Eventually(t, 30*time.Second, "task completes", func() bool {
		return e.do("GET", "/v1/tasks/"+id, "").body["state"] == "complete"
	})
	got := e.do("GET", "/v1/tasks/"+id+"?include=transitions", "")
	if got.status != 200 || got.body["correlation_id"] == "" || got.body["trace_id"] == "" {
		t.Fatalf("get: %d %s", got.status, got.raw)
	}
	if tr, _ := got.body["transitions"].([]any); len(tr) < 10 {
		t.Errorf("transitions: %d, want the full history", len(tr))
	}
	checkHistoryOrder(t, got.body)
	for _, s := range got.body["steps"].([]any) {
		st := s.(map[string]any)
		if st["state"] != "complete" || st["results"] == nil || st["attempts"] != float64(1) {
			t.Errorf("step %v: state %v attempts %v results %v", st["name"], st["state"], st["attempts"], st["results"])
		}
	}

	list := e.do("GET", "/v1/tasks?namespace=ecommerce&state=complete&limit=1", "")
	if list.status != 200 || len(list.body["tasks"].([]any)) != 1 {
		t.Errorf("list: %d %s", list.status, list.raw)
	}
	// Paging: a second task, then two pages of one.
	const corr, parent = "01a21a1a-6905-7d33-8b68-ec8ffcfb9368", "01a21a1a-6905-7d33-8b68-ec8ffcfb9369"
	second := e.do("POST", "/v1/tasks", orderBody(`,"correlation_id":"`+corr+`","parent_correlation_id":"`+parent+`"`))
	if second.status != 201 || second.body["correlation_id"] != corr || second.body["parent_correlation_id"] != parent {
		t.Fatalf("second create with correlation IDs: %d %s", second.status, second.raw)
	}
	page1 := e.do("GET", "/v1/tasks?limit=1", "")
	cursor, _ := page1.body["next_cursor"].(string)
	page2 := e.do("GET", "/v1/tasks?limit=1&cursor="+cursor, "")
	t1 := page1.body["tasks"].([]any)[0].(map[string]any)["task_uuid"]
	t2 := page2.body["tasks"].([]any)[0].(map[string]any)["task_uuid"]
	if cursor == "" || t1 == t2 || t2 != id {
		t.Errorf("paging: cursor %q, pages %v then %v (want the newest then %s)", cursor, t1, t2, id)
	}

	// Wrong state: a complete task cannot be cancelled or retried.
	for _, action := range []string{"cancel", "retry", "resolve"} {
		r := e.do("POST", "/v1/tasks/"+id+"/"+action, "")
		if r.status != http.StatusConflict || !strings.Contains(errMessage(r), "complete") {
			t.Errorf("%s of a complete task: %d %s, want 409 naming the state", action, r.status, r.raw)
		}
	}
	// Steps.
	stepID := got.body["steps"].([]any)[0].(map[string]any)["step_uuid"].(string)
	if r := e.do("GET", "/v1/steps/"+stepID, ""); r.status != 200 || r.body["name"] != "validate_cart" {
		t.Errorf("get step: %d %s", r.status, r.raw)
	}
	if r := e.do("POST", "/v1/steps/"+stepID+"/retry", ""); r.status != http.StatusConflict {
		t.Errorf("retry of a complete step: %d %s, want 409", r.status, r.raw)
	}
	// A field the repeat gives is compared even when it is a zero value:
	// "priority": 0 against 5, "tags": [] against ["vip"]; leaving them
	// out is still a replay.
	k2 := e.do("POST", "/v1/tasks", orderBody(`,"priority":5,"tags":["vip"],"idempotency_key":"k-2"`))
	if k2.status != http.StatusCreated {
		t.Fatalf("create: %d %s", k2.status, k2.raw)
	}
	for _, tc := range []struct{ body, field string }{
		{orderBody(`,"priority":0,"idempotency_key":"k-2"`), "priority"},
		{orderBody(`,"tags":[],"idempotency_key":"k-2"`), "tags"},
		{orderBody(`,"idempotency_key":"k-2"`), ""},
	} {
		r := e.do("POST", "/v1/tasks", tc.body)
		if tc.field == "" && (r.status != http.StatusOK || r.body["task_uuid"] != k2.body["task_uuid"]) ||
			tc.field != "" && (r.status != http.StatusConflict || errField(r) != tc.field) {
			t.Errorf("repeat %s: %d %s, want 409 naming %q (200, a replay, when empty)", tc.body, r.status, r.raw, tc.field)
		}
	}
}

func TestCancelResolveAndRetryOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false) // no orchestrator loops: the task stays where intake left it
	r := e.do("POST", "/v1/tasks", orderBody(""))
	id := r.body["task_uuid"].(string)
	if r.body["state"] != "steps_in_process" {
		t.Fatalf("new task is %v", r.body["state"])
	}
	c := e.do("POST", "/v1/tasks/"+id+"/cancel", `{"reason":"customer withdrew"}`)
	if c.status != 200 || c.body["state"] != "cancelled" {
		t.Fatalf("cancel: %d %s", c.status, c.raw)
	}
	for _, s := range c.body["steps"].([]any) {
		if st := s.(map[string]any); st["state"] != "cancelled" {
			t.Errorf("step %v is %v after cancel", st["name"], st["state"])
		}
	}

	// A blocked customer's task fails; resolve its failed step with a result.
	e2 := newEnv(t, nil, true)
	r = e2.do("POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"blocked-1","items":[{"sku":"A","quantity":1,"unit_price_cents":100}]}}`)
	id = r.body["task_uuid"].(string)
	enginetest.Eventually(t, 30*time.Second, "task fails", func() bool {
		return e2.do("GET", "/v1/tasks/"+id, "").body["state"] == "error"
	})
	dl := e2.do("GET", "/v1/dlq?status=pending", "")
	entries, _ := dl.body["entries"].([]any)
	if dl.status != 200 || len(entries) != 1 || entries[0].(map[string]any)["task_uuid"] != id {
		t.Fatalf("DLQ after a permanent failure: %d %s", dl.status, dl.raw)
	}
	dlqID := fmt.Sprint(entries[0].(map[string]any)["dlq_id"])
	if g := e2.do("GET", "/v1/dlq/"+dlqID, ""); g.status != 200 || !strings.Contains(g.raw, "card declined") {
		t.Errorf("DLQ entry: %d %s", g.status, g.raw)
	}
	if u := e2.do("PATCH", "/v1/dlq/"+dlqID, `{"resolution_status":"investigating","resolved_by":"ops"}`); u.status != 200 || u.body["resolution_status"] != "investigating" {
		t.Errorf("DLQ update: %d %s", u.status, u.raw)
	}
	task := e2.do("GET", "/v1/tasks/"+id, "")
	var payment string
	for _, s := range task.body["steps"].([]any) {
		st := s.(map[string]any)
		if st["name"] == "process_payment" {
			payment = st["step_uuid"].(string)
			if !strings.Contains(st["last_error"].(map[string]any)["message"].(string), "card declined") {
				t.Errorf("last_error of the failed step: %v", st["last_error"])
			}
		}
	}
	bad := e2.do("POST", "/v1/steps/"+payment+"/resolve", `{"result": {nope}}`)
	if bad.status != 400 {
		t.Errorf("resolve with invalid JSON: %d %s", bad.status, bad.raw)
	}
	res := e2.do("POST", "/v1/steps/"+payment+"/resolve", `{"result":{"payment_id":"manual","amount_cents":100},"reason":"paid by phone"}`)
	if res.status != 200 || res.body["state"] != "resolved_manually" {
		t.Fatalf("resolve step: %d %s", res.status, res.raw)
	}
	enginetest.Eventually(t, 30*time.Second, "task completes after the manual resolution", func() bool {
		return e2.do("GET", "/v1/tasks/"+id, "").body["state"] == "complete"
	})
}

func TestBadInputGetsClearErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	big := `{"namespace":"ecommerce","name":"order_fulfillment","context":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		field, text              string
		headers                  []string
	}{
		{"invalid JSON", "POST", "/v1/tasks", `{"namespace":`, 400, "", "JSON", nil},
		{"not an object", "POST", "/v1/tasks", `[1]`, 400, "", "request body must be a JSON object", nil},
		{"empty array", "POST", "/v1/tasks", `[]`, 400, "", "request body must be a JSON object", nil},
		{"malformed correlation_id", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","correlation_id":"abc"}`, 400, "correlation_id", "correlation_id: must be a UUID", nil},
		{"malformed parent_correlation_id", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","parent_correlation_id":"01a21a1a-6905"}`, 400, "parent_correlation_id", "parent_correlation_id: must be a UUID", nil},
		{"correlation_id a number", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","correlation_id":5}`, 400, "correlation_id", "must be a UUID, not JSON number", nil},
		{"empty body", "POST", "/v1/tasks", ``, 400, "", "empty", nil},
		{"unknown field", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","contxt":{}}`, 400, "contxt", "unknown field", nil},
		{"wrong type", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","priority":"high"}`, 400, "priority", "priority: must be an integer", nil},
		{"wrong type in an array", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","tags":["rush",1]}`, 400, "tags[1]", "tags[1]: must be a string, not JSON number", nil},
		{"array in an array", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","tags":[["rush"]]}`, 400, "tags[0]", "tags[0]: must be a string, not JSON array", nil},
		{"missing namespace", "POST", "/v1/tasks", `{"name":"order_fulfillment"}`, 400, "namespace", "required", nil},
		{"bad namespace", "POST", "/v1/tasks", `{"namespace":"Robert'); DROP TABLE","name":"x"}`, 400, "namespace", "not a valid namespace", nil},
		{"unknown namespace", "POST", "/v1/tasks", `{"namespace":"nowhere","name":"x"}`, 404, "", "nowhere", nil},
		{"unknown template", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"nothing"}`, 404, "", "ecommerce/nothing", nil},
		{"context violates schema", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"items":[]}}`, 400, "context", "customer_id", nil},
		{"context not an object", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":"hello"}`, 400, "context", "object", nil},
		{"oversized body", "POST", "/v1/tasks", big, 413, "", "exceeds", nil},
		{"wrong content type", "POST", "/v1/tasks", `{}`, 415, "", "application/json", []string{"Content-Type", "text/plain"}},
		{"content type with a suffix", "POST", "/v1/tasks", `{}`, 415, "", "application/json", []string{"Content-Type", "application/jsonx"}},
		{"malformed content type", "POST", "/v1/tasks", `{}`, 415, "", "application/json", []string{"Content-Type", "application/json, text/plain"}},
		{"bad task uuid", "GET", "/v1/tasks/not-a-uuid", "", 400, "task_uuid", "not a UUID", nil},
		{"unknown task", "GET", "/v1/tasks/01a21a1a-6905-7d33-8b68-ec8ffcfb9368", "", 404, "", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368", nil},
		{"cancel unknown task", "POST", "/v1/tasks/01a21a1a-6905-7d33-8b68-ec8ffcfb9368/cancel", "", 404, "", "01a21a1a", nil},
		{"unknown step", "GET", "/v1/steps/01a21a1a-6905-7d33-8b68-ec8ffcfb9368", "", 404, "", "step", nil},
		{"bad list state", "GET", "/v1/tasks?state=done", "", 400, "state", "done", nil},
		{"bad list limit", "GET", "/v1/tasks?limit=0", "", 400, "limit", "limit", nil},
		{"bad cursor", "GET", "/v1/tasks?cursor=zzz", "", 400, "cursor", "cursor", nil},
		{"bad time", "GET", "/v1/tasks?created_after=yesterday", "", 400, "created_after", "RFC 3339", nil},
		{"unknown route", "GET", "/v2/tasks", "", 404, "", "/v2/tasks", nil},
		{"invalid template", "POST", "/v1/templates/validate", `{"namespace":"x","name":"t","version":"1","steps":[{"name":"a","handler":"h","depends_on":["ghost"]}]}`, 400, "", "ghost", nil},
		{"cyclic template", "POST", "/v1/templates", `{"namespace":"x","name":"t","version":"1","steps":[{"name":"a","handler":"h","depends_on":["b"]},{"name":"b","handler":"h","depends_on":["a"]}]}`, 400, "", "cycle", nil},
		{"empty template", "POST", "/v1/templates", ``, 400, "", "request body is empty; a template document is required", nil},
		{"blank template to validate", "POST", "/v1/templates/validate", " \n", 400, "", "request body is empty; a template document is required", nil},
		{"blank YAML template", "POST", "/v1/templates", "\n\n", 400, "", "request body is empty; a template document is required", []string{"Content-Type", "application/yaml"}},
		{"template as text", "POST", "/v1/templates", "namespace: x", 415, "", "application/json, application/yaml", []string{"Content-Type", "text/plain"}},
		{"template as an image", "POST", "/v1/templates/validate", "namespace: x", 415, "", "application/json, application/yaml", []string{"Content-Type", "image/png"}},
		{"unknown template get", "GET", "/v1/templates/ecommerce/nothing", "", 404, "", "ecommerce/nothing", nil},
		{"bad dlq id", "GET", "/v1/dlq/abc", "", 400, "dlq_id", "positive integer", nil},
		{"unknown dlq entry", "GET", "/v1/dlq/99", "", 404, "", "99", nil},
		{"bad dlq status filter", "GET", "/v1/dlq?status=closed", "", 400, "status", "closed", nil},
		{"bad dlq update", "PATCH", "/v1/dlq/1", `{"resolution_status":"done"}`, 400, "resolution_status", "done", nil},
	}
	for _, tc := range cases {
		r := e.do(tc.method, tc.path, tc.body, tc.headers...)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, r.status, tc.status, r.raw)
			continue
		}
		if !strings.Contains(errMessage(r), tc.text) {
			t.Errorf("%s: message %q does not mention %q", tc.name, errMessage(r), tc.text)
		}
		if tc.field != "" && errField(r) != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, errField(r), tc.field)
		}
		if strings.Contains(strings.ToLower(r.raw), "sqlstate") || strings.Contains(r.raw, "pgx") {
			t.Errorf("%s: response leaks database details: %s", tc.name, r.raw)
		}
		if strings.Contains(r.raw, "orchestration.") || strings.Contains(r.raw, "uuid.UUID") {
			t.Errorf("%s: response names a Go type: %s", tc.name, r.raw)
		}
	}
	var n int
	if err := e.h.Pool.QueryRow(t.Context(), `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil || n != 0 {
		t.Errorf("bad requests created %d tasks (%v)", n, err)
	}
}

// TestTextPostgresCannotStoreIsRefused: every text or JSON a client sends
// that Postgres cannot store (a NUL character, invalid UTF-8, an unpaired
// surrogate escape in jsonb) is a 400 naming the field, not a 500 from the
// database, and nothing is changed.
func TestTextPostgresCannotStoreIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false) // no orchestrator loops: the task stays where intake left it
	task := e.do("POST", "/v1/tasks", orderBody(""))
	id := task.body["task_uuid"].(string)
	step := task.body["steps"].([]any)[0].(map[string]any)["step_uuid"].(string)
	// A template without a context schema: the context is checked for
	// what jsonb cannot hold, not refused by the schema first.
	e.h.Register("namespace: plain\nname: free\nversion: \"1\"\nsteps:\n  - {name: a, handler: plain.a}\n")
	tplJSON := `{"namespace":"x","name":"t","version":"1","description":"a\u0000b","steps":[{"name":"a","handler":"h"}]}`
	tplYAML := "namespace: x\nname: t\nversion: \"1\"\nsteps:\n  - {name: a, handler: h, description: \"a\\0b\"}\n"
	yaml := []string{"Content-Type", "application/yaml"}
	cases := []struct {
		name, method, path, body string
		field                    string
		headers                  []string
	}{
		{"step result", "POST", "/v1/steps/" + step + "/resolve", `{"result":{"a":"\u0000"}}`, "result", nil},
		{"step result key", "POST", "/v1/steps/" + step + "/resolve", `{"result":{"\u0000":1}}`, "result", nil},
		{"step result surrogate", "POST", "/v1/steps/" + step + "/resolve", `{"result":{"a":"\ud800"}}`, "result", nil},
		{"step result UTF-8", "POST", "/v1/steps/" + step + "/resolve", "{\"result\":{\"a\":\"\xff\"}}", "result", nil},
		{"step resolve reason", "POST", "/v1/steps/" + step + "/resolve", `{"reason":"a\u0000b"}`, "reason", nil},
		{"step retry reason", "POST", "/v1/steps/" + step + "/retry", `{"reason":"a\u0000b"}`, "reason", nil},
		{"cancel reason", "POST", "/v1/tasks/" + id + "/cancel", `{"reason":"a\u0000b"}`, "reason", nil},
		{"retry reason", "POST", "/v1/tasks/" + id + "/retry", `{"reason":"a\u0000b"}`, "reason", nil},
		{"resolve reason", "POST", "/v1/tasks/" + id + "/resolve", `{"reason":"a\u0000b"}`, "reason", nil},
		{"dlq notes", "PATCH", "/v1/dlq/1", `{"resolution_status":"resolved","resolution_notes":"a\u0000b"}`, "resolution_notes", nil},
		{"dlq resolved_by", "PATCH", "/v1/dlq/1", `{"resolution_status":"resolved","resolved_by":"a\u0000b"}`, "resolved_by", nil},
		{"task name", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order\u0000"}`, "name", nil},
		{"task context surrogate", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"\udc00"}}`, "context", nil},
		{"task context UTF-8", "POST", "/v1/tasks", "{\"namespace\":\"ecommerce\",\"name\":\"order_fulfillment\",\"context\":{\"customer_id\":\"\xff\"}}", "context", nil},
		{"task reason UTF-8", "POST", "/v1/tasks", "{\"namespace\":\"ecommerce\",\"name\":\"order_fulfillment\",\"reason\":\"a\xffb\"}", "reason", nil},
		{"task reason surrogate", "POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","reason":"a\ud800b"}`, "reason", nil},
		{"task tag UTF-8", "POST", "/v1/tasks", "{\"namespace\":\"ecommerce\",\"name\":\"order_fulfillment\",\"tags\":[\"ok\",\"a\xff\"]}", "tags[1]", nil},
		{"retry reason UTF-8", "POST", "/v1/tasks/" + id + "/retry", "{\"reason\":\"bad \xff byte\"}", "reason", nil},
		{"dlq notes surrogate", "PATCH", "/v1/dlq/1", `{"resolution_status":"resolved","resolution_notes":"\udc00"}`, "resolution_notes", nil},
		{"task context number", "POST", "/v1/tasks", `{"namespace":"plain","name":"free","context":{"x":1e1000000}}`, "context", nil},
		{"task context tiny number", "POST", "/v1/tasks", `{"namespace":"plain","name":"free","context":{"x":[1,1e-1000000]}}`, "context", nil},
		{"step result number", "POST", "/v1/steps/" + step + "/resolve", `{"result":{"v":1e1000000}}`, "result", nil},
		{"list filter", "GET", "/v1/tasks?initiator=a%00b", "", "initiator", nil},
		{"list filter UTF-8", "GET", "/v1/tasks?namespace=a%FFb", "", "namespace", nil},
		{"dlq filter", "GET", "/v1/dlq?namespace=a%00b", "", "namespace", nil},
		{"template filter", "GET", "/v1/templates?namespace=a%00b", "", "namespace", nil},
		{"template path", "GET", "/v1/templates/ecommerce/a%00b", "", "", nil},
	}
	for _, tc := range cases {
		r := e.do(tc.method, tc.path, tc.body, tc.headers...)
		if r.status != http.StatusBadRequest || errField(r) != tc.field {
			t.Errorf("%s: %d %s, want 400 with field %q", tc.name, r.status, r.raw, tc.field)
		}
	}
	// Templates report the problem with its path, like any invalid template.
	for _, tc := range []struct {
		name, path, body, problem string
		headers                   []string
	}{
		{"template description", "/v1/templates", tplJSON, "description", nil},
		{"template validate", "/v1/templates/validate", tplJSON, "description", nil},
		{"YAML template step description", "/v1/templates", tplYAML, "steps[0] (a).description", yaml},
		{"template context_schema", "/v1/templates", `{"namespace":"x","name":"t","version":"1","context_schema":{"type":"object","title":"\u0000"},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", nil},
		{"template description UTF-8", "/v1/templates", "{\"namespace\":\"x\",\"name\":\"t\",\"version\":\"1\",\"description\":\"a\xffb\",\"steps\":[{\"name\":\"a\",\"handler\":\"h\"}]}", "description", nil},
		{"template description surrogate", "/v1/templates/validate", `{"namespace":"x","name":"t","version":"1","description":"a\ud800b","steps":[{"name":"a","handler":"h"}]}`, "description", nil},
		{"template step description surrogate", "/v1/templates", `{"namespace":"x","name":"t","version":"1","steps":[{"name":"a","handler":"h","description":"\udc00"}]}`, "steps[0] (a).description", nil},
		{"template context_schema surrogate", "/v1/templates", `{"namespace":"x","name":"t","version":"1","context_schema":{"type":"object","title":"\ud800"},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", nil},
		{"template context_schema UTF-8", "/v1/templates/validate", "{\"namespace\":\"x\",\"name\":\"t\",\"version\":\"1\",\"context_schema\":{\"type\":\"object\",\"title\":\"\xc3\"},\"steps\":[{\"name\":\"a\",\"handler\":\"h\"}]}", "context_schema", nil},
	} {
		r := e.do("POST", tc.path, tc.body, tc.headers...)
		errBody, _ := r.body["error"].(map[string]any)
		problems, _ := errBody["problems"].([]any)
		if r.status != http.StatusBadRequest || len(problems) != 1 || problems[0].(map[string]any)["path"] != tc.problem {
			t.Errorf("%s: %d %s, want 400 with the problem at %s", tc.name, r.status, r.raw, tc.problem)
		}
	}
	if got := e.do("GET", "/v1/tasks/"+id, ""); got.body["state"] != "steps_in_process" {
		t.Errorf("the task moved to %v on refused requests", got.body["state"])
	}
	if got := e.do("GET", "/v1/steps/"+step, ""); got.body["state"] == "resolved_manually" {
		t.Errorf("a refused resolve resolved the step")
	}
}

// TestOperatorTextIsCapped: an operator's reason is capped like a
// submission's (it is copied into every step's transition on cancel), and
// DLQ notes name the field that is too long.
func TestOperatorTextIsCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	task := e.do("POST", "/v1/tasks", orderBody(""))
	id := task.body["task_uuid"].(string)
	step := task.body["steps"].([]any)[0].(map[string]any)["step_uuid"].(string)
	long := `{"reason":"` + strings.Repeat("x", orchestration.MaxReasonLen+1) + `"}`
	for _, path := range []string{"/v1/tasks/" + id + "/cancel", "/v1/tasks/" + id + "/retry", "/v1/tasks/" + id + "/resolve",
		"/v1/steps/" + step + "/resolve", "/v1/steps/" + step + "/retry"} {
		if r := e.do("POST", path, long); r.status != http.StatusBadRequest || errField(r) != "reason" || !strings.Contains(errMessage(r), "2000") {
			t.Errorf("POST %s with a %d-byte reason: %d %s, want 400 naming reason and its limit", path, orchestration.MaxReasonLen+1, r.status, r.raw)
		}
	}
	if r := e.do("PATCH", "/v1/dlq/1", `{"resolution_status":"resolved","resolution_notes":"`+strings.Repeat("n", 10001)+`"}`); r.status != 400 || errField(r) != "resolution_notes" {
		t.Errorf("long resolution_notes: %d %s", r.status, r.raw)
	}
	if r := e.do("PATCH", "/v1/dlq/1", `{"resolution_status":"resolved","resolved_by":"`+strings.Repeat("b", 257)+`"}`); r.status != 400 || errField(r) != "resolved_by" {
		t.Errorf("long resolved_by: %d %s, want 400 naming resolved_by", r.status, r.raw)
	}
	// The limit itself is accepted.
	ok := `{"reason":"` + strings.Repeat("x", orchestration.MaxReasonLen) + `"}`
	if r := e.do("POST", "/v1/tasks/"+id+"/cancel", ok); r.status != 200 || r.body["state"] != "cancelled" {
		t.Errorf("cancel with a %d-byte reason: %d %.300s", orchestration.MaxReasonLen, r.status, r.raw)
	}
}

// TestMediaTypesIgnoreCase: media types are case-insensitive and may carry
// parameters (RFC 9110).
func TestMediaTypesIgnoreCase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	if r := e.do("POST", "/v1/tasks", orderBody(""), "Content-Type", "Application/JSON; Charset=UTF-8"); r.status != 201 {
		t.Errorf("submit as Application/JSON: %d %s", r.status, r.raw)
	}
	yamlDoc := "namespace: billing\nname: invoice\nversion: 1.0.0\nsteps:\n  - {name: render, handler: billing.render}\n"
	if r := e.do("POST", "/v1/templates/validate", yamlDoc, "Content-Type", "Application/YAML; charset=utf-8"); r.status != 200 {
		t.Errorf("validate as Application/YAML: %d %s", r.status, r.raw)
	}
	// The YAML types in use besides the registered one.
	for _, ct := range []string{"text/yaml", "application/x-yaml", "text/x-yaml"} {
		if r := e.do("POST", "/v1/templates/validate", yamlDoc, "Content-Type", ct); r.status != 200 {
			t.Errorf("validate as %s: %d %s", ct, r.status, r.raw)
		}
	}
}

// TestWrongMethodIs405: a known path with a method it does not have is a
// 405 listing the methods it has, in the API's error shape; an unknown path
// stays a 404.
func TestWrongMethodIs405(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	id := "01a21a1a-6905-7d33-8b68-ec8ffcfb9368"
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/tasks/" + id, "GET, HEAD"},
		{"PUT", "/v1/tasks", "GET, HEAD, POST"},
		{"GET", "/v1/tasks/" + id + "/cancel", "POST"},
		{"DELETE", "/v1/dlq/1", "GET, HEAD, PATCH"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		r := e.do(tc.method, tc.path, "")
		errBody, _ := r.body["error"].(map[string]any)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != tc.allow || errBody["code"] != "method_not_allowed" || !strings.Contains(errMessage(r), tc.allow) {
			t.Errorf("%s %s: %d Allow %q %s, want 405 with Allow %q", tc.method, tc.path, r.status, r.header.Get("Allow"), r.raw, tc.allow)
		}
	}
	if r := e.do("DELETE", "/v2/tasks", ""); r.status != http.StatusNotFound || r.header.Get("Allow") != "" {
		t.Errorf("unknown path: %d Allow %q, want 404", r.status, r.header.Get("Allow"))
	}
}

// TestActionBodies: an action's body may be left out however it is framed,
// and a task action refuses a field it does not take, like every body.
func TestActionBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	task := e.do("POST", "/v1/tasks", orderBody(""))
	id := task.body["task_uuid"].(string)
	step := task.body["steps"].([]any)[0].(map[string]any)["step_uuid"].(string)
	for _, path := range []string{"/v1/tasks/" + id + "/cancel", "/v1/tasks/" + id + "/retry", "/v1/tasks/" + id + "/resolve"} {
		if r := e.do("POST", path, `{"result":{"ok":true}}`); r.status != http.StatusBadRequest || errField(r) != "result" {
			t.Errorf("POST %s with a result: %d %s, want 400 naming result", path, r.status, r.raw)
		}
	}
	if r := e.doChunked("/v1/steps/" + step + "/retry"); r.status != http.StatusConflict {
		t.Errorf("step retry with an empty chunked body: %d %s, want the 409 of an enqueued step", r.status, r.raw)
	}
	if r := e.doChunked("/v1/tasks/" + id + "/cancel"); r.status != 200 || r.body["state"] != "cancelled" {
		t.Errorf("cancel with an empty chunked body: %d %s", r.status, r.raw)
	}
	// A required body stays required.
	if r := e.doChunked("/v1/tasks"); r.status != http.StatusBadRequest || !strings.Contains(errMessage(r), "empty") {
		t.Errorf("submit with an empty chunked body: %d %s", r.status, r.raw)
	}
}

func TestTemplateEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	yamlDoc := "namespace: billing\nname: invoice\nversion: 1.0.0\nsteps:\n  - {name: render, handler: billing.render}\n  - {name: send, handler: billing.send, depends_on: [render]}\n"
	v := e.do("POST", "/v1/templates/validate", yamlDoc, "Content-Type", "application/yaml")
	if v.status != 200 || v.body["valid"] != true {
		t.Fatalf("validate: %d %s", v.status, v.raw)
	}
	if r := e.do("GET", "/v1/templates/billing/invoice", ""); r.status != 404 {
		t.Errorf("validate registered the template: %d", r.status)
	}
	reg := e.do("POST", "/v1/templates", yamlDoc, "Content-Type", "application/yaml")
	if reg.status != 201 {
		t.Fatalf("register: %d %s", reg.status, reg.raw)
	}
	if again := e.do("POST", "/v1/templates", yamlDoc, "Content-Type", "application/yaml"); again.status != 200 {
		t.Errorf("registering the same content again: %d, want 200", again.status)
	}
	changed := strings.Replace(yamlDoc, "billing.send", "billing.mail", 1)
	// The message names the version and ends with what to do, not with the
	// sentinel error's text (": conflict").
	if c := e.do("POST", "/v1/templates", changed, "Content-Type", "application/yaml"); c.status != 409 ||
		!strings.Contains(errMessage(c), "billing/invoice@1.0.0") || !strings.HasSuffix(errMessage(c), "; register a new version") {
		t.Errorf("changing a registered version: %d %s, want 409 naming the version, ending with what to do", c.status, c.raw)
	}
	if g := e.do("GET", "/v1/templates/billing/invoice/1.0.0", ""); g.status != 200 || g.body["content_hash"] == "" {
		t.Errorf("get: %d %s", g.status, g.raw)
	}
	l := e.do("GET", "/v1/templates?namespace=billing", "")
	if l.status != 200 || len(l.body["templates"].([]any)) != 1 {
		t.Errorf("list: %d %s", l.status, l.raw)
	}
	// The namespace now exists: tasks can be submitted to it.
	if r := e.do("POST", "/v1/tasks", `{"namespace":"billing","name":"invoice"}`); r.status != 201 {
		t.Errorf("submit to the new template: %d %s", r.status, r.raw)
	}
}

// TestTemplateProblemsNameTheField: what a black-box probe of the template
// endpoints found answered without a path, in the YAML decoder's words
// (!!int, !!float) or at great length, is a problem at the field's path in
// plain words.
func TestTemplateProblemsNameTheField(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	yaml := []string{"Content-Type", "application/yaml"}
	deep := strings.Repeat("[", 70) + strings.Repeat("]", 70)
	for _, tc := range []struct {
		name, body, path, text string
		headers                []string
	}{
		{"timeout beyond int", `{"namespace":"t1","name":"j","version":"1","steps":[{"name":"a","handler":"h.a","timeout_seconds":99999999999999999999999}]}`,
			"steps[0] (a).timeout_seconds", "must be between 1 and 86400, got 99999999999999999999999", nil},
		{"timeout beyond int in YAML", "namespace: t1\nname: j\nversion: \"1\"\nsteps:\n  - {name: a, handler: h.a, timeout_seconds: 99999999999999999999999}\n",
			"steps[0] (a).timeout_seconds", "must be between 1 and 86400, got 99999999999999999999999", yaml},
		{"stale_after beyond float", `{"namespace":"t1","name":"j","version":"1","stale_after_seconds":1e400,"steps":[{"name":"a","handler":"h.a"}]}`,
			"stale_after_seconds", `expected an integer, got a number "1e400"`, nil},
		{"schema number beyond float", `{"namespace":"t1","name":"j","version":"1","context_schema":{"type":"object","maximum":1e400},"steps":[{"name":"a","handler":"h.a"}]}`,
			"context_schema.maximum", "out of range", nil},
		{"schema nested too deep", "namespace: t1\nname: j\nversion: \"1\"\ncontext_schema: {type: object, default: " + deep + "}\nsteps: [{name: a, handler: h.a}]\n",
			"context_schema", "nested more than 64 levels deep", yaml},
	} {
		for _, path := range []string{"/v1/templates/validate", "/v1/templates"} {
			r := e.do("POST", path, tc.body, tc.headers...)
			errBody, _ := r.body["error"].(map[string]any)
			problems, _ := errBody["problems"].([]any)
			if r.status != http.StatusBadRequest || len(problems) != 1 || strings.Contains(r.raw, "!!") {
				t.Errorf("%s: POST %s: %d %.500s, want 400 with one problem", tc.name, path, r.status, r.raw)
				continue
			}
			p := problems[0].(map[string]any)
			if msg := p["message"].(string); p["path"] != tc.path || !strings.Contains(msg, tc.text) || len(msg) > 120 {
				t.Errorf("%s: POST %s: problem %.300v, want it at %s saying %q in a line", tc.name, path, p, tc.path, tc.text)
			}
		}
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	auth := api.NewAuthenticator(true, true, true, []api.Credential{
		{Name: "reader", Key: "read-key-0123456789", Level: api.PermRead},
		{Name: "writer", Key: "write-key-0123456789", Level: api.PermWrite},
	}, enginetest.Logger(t))
	e := newEnv(t, auth, false)
	if r := e.do("GET", "/v1/tasks", ""); r.status != 401 {
		t.Errorf("no key: %d", r.status)
	}
	if r := e.do("GET", "/v1/tasks", "", "X-API-Key", "wrong-key-0123456789"); r.status != 401 {
		t.Errorf("wrong key: %d", r.status)
	}
	if r := e.do("GET", "/v1/tasks", "", "X-API-Key", "read-key-0123456789"); r.status != 200 {
		t.Errorf("reader can list: %d", r.status)
	}
	if r := e.do("POST", "/v1/tasks", orderBody(""), "X-API-Key", "read-key-0123456789"); r.status != 403 || !strings.Contains(errMessage(r), "write") {
		t.Errorf("reader cannot submit: %d %s", r.status, r.raw)
	}
	created := e.do("POST", "/v1/tasks", orderBody(""), "Authorization", "Bearer write-key-0123456789")
	if created.status != 201 {
		t.Fatalf("writer submits: %d %s", created.status, created.raw)
	}
	id := created.body["task_uuid"].(string)
	// The scheme is case-insensitive (RFC 7235).
	for _, scheme := range []string{"bearer", "BEARER"} {
		if r := e.do("GET", "/v1/tasks/"+id, "", "Authorization", scheme+" read-key-0123456789"); r.status != 200 {
			t.Errorf("Authorization: %s KEY: %d %s", scheme, r.status, r.raw)
		}
	}
	if r := e.do("POST", "/v1/tasks/"+id+"/cancel", "", "X-API-Key", "read-key-0123456789"); r.status != 403 {
		t.Errorf("a read-only key cancelled a task: %d", r.status)
	}
	if r := e.do("POST", "/v1/templates", "{}", "X-API-Key", "write-key-0123456789"); r.status != 403 {
		t.Errorf("writer registers templates (admin only): %d", r.status)
	}
	if r := e.do("PATCH", "/v1/dlq/1", `{"resolution_status":"resolved"}`, "X-API-Key", "read-key-0123456789"); r.status != 403 {
		t.Errorf("a read-only key updated a DLQ entry: %d", r.status)
	}
	if r := e.do("GET", "/healthz", ""); r.status != 200 {
		t.Errorf("public health: %d", r.status)
	}
}

// TestOpenAPIMatchesRouter keeps /v1/openapi.json equal to the routes.
func TestOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	r := e.do("GET", "/v1/openapi.json", "")
	if r.status != 200 || r.body["openapi"] != "3.0.3" {
		t.Fatalf("openapi: %d", r.status)
	}
	var documented []string
	for path, item := range r.body["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(documented)
	routed := api.Routes()
	sort.Strings(routed)
	if strings.Join(documented, "\n") != strings.Join(routed, "\n") {
		t.Errorf("OpenAPI paths:\n%s\nrouter:\n%s", strings.Join(documented, "\n"), strings.Join(routed, "\n"))
	}
	// Every key of the error bodies the API sends is in the Error schema:
	// a field error, and an invalid template with its problems.
	props := func(schema any) map[string]any {
		p, _ := schema.(map[string]any)["properties"].(map[string]any)
		return p
	}
	errSchema := props(props(r.body["components"].(map[string]any)["schemas"].(map[string]any)["Error"])["error"])
	problemSchema, _ := errSchema["problems"].(map[string]any)
	for _, bad := range []resp{
		e.do("GET", "/v1/tasks?state=done", ""),
		e.do("POST", "/v1/templates/validate", `{"namespace":"x","name":"t","version":"1","steps":[{"name":"a","handler":"h","depends_on":["ghost"]}]}`),
	} {
		errBody, _ := bad.body["error"].(map[string]any)
		if len(errBody) == 0 {
			t.Fatalf("not an error body: %s", bad.raw)
		}
		for k, v := range errBody {
			if errSchema[k] == nil {
				t.Errorf("error key %q of %s is not in the Error schema", k, bad.raw)
			}
			if k != "problems" {
				continue
			}
			for _, p := range v.([]any) {
				for pk := range p.(map[string]any) {
					if problemSchema == nil || props(problemSchema["items"])[pk] == nil {
						t.Errorf("problem key %q of %s is not in the Error schema", pk, bad.raw)
					}
				}
			}
		}
	}
	// Every documented route answers something other than the catch-all 404.
	for _, rt := range routed {
		method, path, _ := strings.Cut(rt, " ")
		path = strings.NewReplacer("{task_uuid}", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368", "{step_uuid}", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368",
			"{namespace}", "ecommerce", "{name}", "order_fulfillment", "{version}", "1.0.0", "{dlq_id}", "1").Replace(path)
		res := e.do(method, path, "")
		if res.status == 404 && strings.Contains(errMessage(res), "no route") {
			t.Errorf("%s is documented but not routed", rt)
		}
	}
}

// checkHistoryOrder: in a task's history, a step is dispatched (pending ->
// enqueued) only after each of its parents completed, also when both moves
// were made in one transaction and so carry the same timestamp.
func checkHistoryOrder(t *testing.T, task map[string]any) {
	t.Helper()
	parents := map[string][]any{}
	for _, s := range task["steps"].([]any) {
		st := s.(map[string]any)
		deps, _ := st["depends_on"].([]any)
		parents[st["name"].(string)] = deps
	}
	completed := map[string]bool{}
	var lines []string
	for _, x := range task["transitions"].([]any) {
		tr := x.(map[string]any)
		name, _ := tr["step_name"].(string)
		if name == "" {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %s -> %s", name, tr["from_state"], tr["to_state"]))
		switch {
		case tr["to_state"] == "complete":
			completed[name] = true
		case tr["from_state"] == "pending" && tr["to_state"] == "enqueued":
			for _, p := range parents[name] {
				if !completed[p.(string)] {
					t.Errorf("%s is dispatched before its parent %s completed in the history:\n%s", name, p, strings.Join(lines, "\n"))
				}
			}
		}
	}
}

// PATCH /v1/dlq/{id} changes only the fields it is sent: a status change
// keeps the notes and author an earlier update wrote; an empty string
// clears a field.
func TestDLQUpdateKeepsFieldsNotSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, true)
	r := e.do("POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"blocked-2","items":[{"sku":"A","quantity":1,"unit_price_cents":100}]}}`)
	id := r.body["task_uuid"].(string)
	enginetest.Eventually(t, 30*time.Second, "task fails", func() bool {
		return e.do("GET", "/v1/tasks/"+id, "").body["state"] == "error"
	})
	entries, _ := e.do("GET", "/v1/dlq", "").body["entries"].([]any)
	if len(entries) != 1 {
		t.Fatalf("DLQ entries: %v", entries)
	}
	path := "/v1/dlq/" + fmt.Sprint(entries[0].(map[string]any)["dlq_id"])
	steps := []struct {
		body              string
		status, notes, by any
	}{
		{`{"resolution_status":"investigating","resolution_notes":"looking at gateway logs","resolved_by":"alice"}`, "investigating", "looking at gateway logs", "alice"},
		{`{"resolution_status":"resolved"}`, "resolved", "looking at gateway logs", "alice"},
		{`{"resolution_status":"resolved","resolved_by":"bob","resolution_notes":null}`, "resolved", "looking at gateway logs", "bob"},
		{`{"resolution_status":"resolved","resolution_notes":""}`, "resolved", nil, "bob"},
	}
	for _, s := range steps {
		u := e.do("PATCH", path, s.body)
		if u.status != 200 {
			t.Fatalf("PATCH %s: %d %s", s.body, u.status, u.raw)
		}
		g := e.do("GET", path, "")
		if g.body["resolution_status"] != s.status || g.body["resolution_notes"] != s.notes || g.body["resolved_by"] != s.by {
			t.Errorf("after PATCH %s: status %v notes %v by %v; want %v %v %v", s.body,
				g.body["resolution_status"], g.body["resolution_notes"], g.body["resolved_by"], s.status, s.notes, s.by)
		}
	}

	// Retried, the task fails again and files a second entry; reopening
	// the first would give the task two open entries: a 409 that names the
	// open one, and nothing changes (it was a 500 from the unique index).
	if r := e.do("POST", "/v1/tasks/"+id+"/retry", `{"reason":"try again"}`); r.status != 200 {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	var second string
	enginetest.Eventually(t, 30*time.Second, "a second DLQ entry", func() bool {
		entries, _ := e.do("GET", "/v1/dlq?status=pending", "").body["entries"].([]any)
		if len(entries) == 1 {
			second = fmt.Sprint(entries[0].(map[string]any)["dlq_id"])
		}
		return second != ""
	})
	for _, status := range []string{"pending", "investigating"} {
		r := e.do("PATCH", path, `{"resolution_status":"`+status+`"}`)
		if r.status != http.StatusConflict || !strings.Contains(errMessage(r), "already has an open entry ("+second+")") ||
			strings.HasSuffix(errMessage(r), ": conflict") {
			t.Errorf("reopening the first entry as %s: %d %s, want 409 naming entry %s", status, r.status, r.raw, second)
		}
	}
	if g := e.do("GET", path, ""); g.body["resolution_status"] != "resolved" {
		t.Errorf("the refused reopening changed the first entry to %v", g.body["resolution_status"])
	}
}

// oncallAuth is auth with one write key, named oncall, and the header
// that sends it.
func oncallAuth(t *testing.T) (*api.Authenticator, []string) {
	return api.NewAuthenticator(true, true, true, []api.Credential{
		{Name: "oncall", Key: "write-key-0123456789", Level: api.PermWrite},
	}, enginetest.Logger(t)), []string{"X-API-Key", "write-key-0123456789"}
}

// A task action over HTTP closes the task's open DLQ entry in the name of
// the API key that asked for it.
func TestTaskResolveClosesDLQEntryAsTheCaller(t *testing.T) {
	t.Parallel()
	auth, key := oncallAuth(t)
	e := newEnv(t, auth, true)
	r := e.do("POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"blocked-4","items":[{"sku":"A","quantity":1,"unit_price_cents":100}]}}`, key...)
	id := r.body["task_uuid"].(string)
	enginetest.Eventually(t, 30*time.Second, "task fails", func() bool {
		return e.do("GET", "/v1/tasks/"+id, "", key...).body["state"] == "error"
	})
	if res := e.do("POST", "/v1/tasks/"+id+"/resolve", `{"reason":"refunded by hand"}`, key...); res.status != 200 {
		t.Fatalf("resolve: %d %s", res.status, res.raw)
	}
	entries, _ := e.do("GET", "/v1/dlq", "", key...).body["entries"].([]any)
	if len(entries) != 1 {
		t.Fatalf("DLQ entries: %v", entries)
	}
	d := entries[0].(map[string]any)
	notes, _ := d["resolution_notes"].(string)
	if d["resolution_status"] != "resolved" || d["resolved_by"] != "oncall" || !strings.Contains(notes, "task resolved: refunded by hand (by oncall") {
		t.Errorf("DLQ entry after the resolve: %v", d)
	}
	checkOperatorTransitions(t, e, id, key, "error->resolved_manually", "oncall")
}

// checkOperatorTransitions checks that the task's history has the
// transitions named by moves ("from->to", of the task or of any step),
// each recording in its metadata that who asked for it, and that every
// transition recording a "by" names who.
func checkOperatorTransitions(t *testing.T, e *env, id string, key []string, moves string, who string) {
	t.Helper()
	got := e.do("GET", "/v1/tasks/"+id+"?include=transitions", "", key...)
	tr, _ := got.body["transitions"].([]any)
	seen := map[string]bool{}
	for _, x := range tr {
		m := x.(map[string]any)
		move := fmt.Sprint(m["from_state"], "->", m["to_state"])
		meta, _ := m["metadata"].(map[string]any)
		by, has := meta["by"]
		if has && by != who {
			t.Errorf("transition %s of %v recorded by %v, want %q", move, m["step_name"], by, who)
		}
		if has {
			seen[move] = true
		}
	}
	for _, want := range strings.Split(moves, ",") {
		if !seen[want] {
			t.Errorf("no %s transition recorded by %q in %s", want, who, got.raw)
		}
	}
}

// Every operator action records who asked for it in the metadata of the
// transitions it makes: the API key's name.
func TestOperatorTransitionsNameTheCaller(t *testing.T) {
	t.Parallel()
	auth, key := oncallAuth(t)
	e := newEnv(t, auth, true)

	// A failed task: a step retry revives it, a task retry after it fails
	// again, then a step resolve.
	r := e.do("POST", "/v1/tasks", `{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"blocked-5","items":[{"sku":"A","quantity":1,"unit_price_cents":100}]}}`, key...)
	id := r.body["task_uuid"].(string)
	failedStep := func() string {
		var step string
		enginetest.Eventually(t, 30*time.Second, "task fails", func() bool {
			g := e.do("GET", "/v1/tasks/"+id, "", key...)
			for _, s := range g.body["steps"].([]any) {
				if st := s.(map[string]any); st["state"] == "error" {
					step, _ = st["step_uuid"].(string)
				}
			}
			return g.body["state"] == "error" && step != ""
		})
		return step
	}
	step := failedStep()
	if res := e.do("POST", "/v1/steps/"+step+"/retry", `{"reason":"gateway fixed"}`, key...); res.status != 200 {
		t.Fatalf("step retry: %d %s", res.status, res.raw)
	}
	failedStep()
	if res := e.do("POST", "/v1/tasks/"+id+"/retry", `{"reason":"once more"}`, key...); res.status != 200 {
		t.Fatalf("task retry: %d %s", res.status, res.raw)
	}
	step = failedStep()
	if res := e.do("POST", "/v1/steps/"+step+"/resolve", `{"reason":"charged by hand","result":{"charged":true}}`, key...); res.status != 200 {
		t.Fatalf("step resolve: %d %s", res.status, res.raw)
	}
	checkOperatorTransitions(t, e, id, key, "error->pending,error->resolved_manually", "oncall")

	// A task cancelled before it finishes (no workers here): the task and
	// its unfinished steps.
	e2 := newEnv(t, auth, false)
	r = e2.do("POST", "/v1/tasks", orderBody(""), key...)
	id = r.body["task_uuid"].(string)
	if res := e2.do("POST", "/v1/tasks/"+id+"/cancel", `{"reason":"customer changed their mind"}`, key...); res.status != 200 {
		t.Fatalf("cancel: %d %s", res.status, res.raw)
	}
	g := e2.do("GET", "/v1/tasks/"+id+"?include=transitions", "", key...)
	cancelled := 0
	for _, x := range g.body["transitions"].([]any) {
		m := x.(map[string]any)
		meta, _ := m["metadata"].(map[string]any)
		if m["to_state"] == "cancelled" {
			cancelled++
			if meta["by"] != "oncall" || meta["reason"] != "customer changed their mind" {
				t.Errorf("cancel transition of %v: metadata %v, want by oncall with the reason", m["step_name"], meta)
			}
		}
	}
	if cancelled < 2 {
		t.Errorf("cancel made %d transitions to cancelled, want the task's and its steps'", cancelled)
	}
}

// TestUnknownQueryParametersAreRefused: a query parameter a route does not
// take, one given twice, or a query string that does not parse is a 400
// naming it, never silently ignored (a mistyped filter would list
// everything).
func TestUnknownQueryParametersAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	task := e.do("POST", "/v1/tasks", orderBody(""))
	id := task.body["task_uuid"].(string)
	step := task.body["steps"].([]any)[0].(map[string]any)["step_uuid"].(string)
	for _, tc := range []struct {
		name, method, path, field, text string
	}{
		{"typo in a task filter", "GET", "/v1/tasks?staet=error", "staet", `did you mean "state"?`},
		{"unknown task filter", "GET", "/v1/tasks?color=red", "color", "namespace, name, state"},
		{"typo in a DLQ filter", "GET", "/v1/dlq?stauts=pending", "stauts", `did you mean "status"?`},
		{"cursor on the DLQ", "GET", "/v1/dlq?cursor=abc", "cursor", "unknown query parameter"},
		{"typo in a template filter", "GET", "/v1/templates?namespce=ecommerce", "namespce", `did you mean "namespace"?`},
		{"typo of include", "GET", "/v1/tasks/" + id + "?includ=transitions", "includ", `did you mean "include"?`},
		{"parameter of a step", "GET", "/v1/steps/" + step + "?include=transitions", "include", "takes no query parameters"},
		{"parameter of a template", "GET", "/v1/templates/ecommerce/order_fulfillment?version=1.0.0", "version", "takes no query parameters"},
		{"parameter of a DLQ entry", "GET", "/v1/dlq/1?include=snapshot", "include", "takes no query parameters"},
		{"parameter of a submission", "POST", "/v1/tasks?idempotency_key=k", "idempotency_key", "takes no query parameters"},
		{"filter given twice", "GET", "/v1/tasks?state=error&state=complete", "state", "2 times"},
		{"limit given twice", "GET", "/v1/dlq?limit=5&limit=6", "limit", "2 times"},
		{"include given twice", "GET", "/v1/tasks/" + id + "?include=transitions&include=transitions", "include", "2 times"},
		{"semicolon separator", "GET", "/v1/tasks?state=error;staet=x", "", "query string"},
		{"bad escape", "GET", "/v1/tasks?state=%zz", "", "query string"},
	} {
		r := e.do(tc.method, tc.path, "")
		if r.status != http.StatusBadRequest || errField(r) != tc.field || !strings.Contains(errMessage(r), tc.text) {
			t.Errorf("%s: %s %s: %d %s, want 400 with field %q mentioning %q", tc.name, tc.method, tc.path, r.status, r.raw, tc.field, tc.text)
		}
	}
	// Every parameter the OpenAPI document lists is taken (empty is as if
	// left out), so the document and the check agree.
	doc := e.do("GET", "/v1/openapi.json", "")
	for path, item := range doc.body["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			params, _ := op.(map[string]any)["parameters"].([]any)
			for _, p := range params {
				if p := p.(map[string]any); p["in"] == "query" {
					url := strings.NewReplacer("{task_uuid}", id, "{step_uuid}", step, "{dlq_id}", "1").Replace(path) + "?" + p["name"].(string) + "="
					if r := e.do(strings.ToUpper(method), url, ""); strings.Contains(errMessage(r), "query parameter") {
						t.Errorf("%s %s: %d %s: a documented parameter is refused", method, url, r.status, r.raw)
					}
				}
			}
		}
	}
}

// TestIncludeAndCursorAreChecked: an include value or a cursor the API does
// not know is a 400 naming it: include=notransitions must not include
// transitions, and a made-up cursor must not answer an empty page, which a
// client reads as the end of the list.
func TestIncludeAndCursorAreChecked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	task := e.do("POST", "/v1/tasks", orderBody(""))
	e.do("POST", "/v1/tasks", orderBody("")) // a second page
	id := task.body["task_uuid"].(string)
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, path, field, text string
	}{
		{"unknown include", "/v1/tasks/" + id + "?include=bogus", "include", "transitions"},
		{"include by substring", "/v1/tasks/" + id + "?include=notransitions", "include", "transitions"},
		{"include typo", "/v1/tasks/" + id + "?include=transitons", "include", `did you mean "transitions"?`},
		{"include empty item", "/v1/tasks/" + id + "?include=transitions,", "include", "comma-separated"},
		{"cursor of {}", "/v1/tasks?cursor=" + b64(`{}`), "cursor", "not a cursor"},
		{"cursor of null", "/v1/tasks?cursor=" + b64(`null`), "cursor", "not a cursor"},
		{"cursor not base64", "/v1/tasks?cursor=abc", "cursor", "not a cursor"},
		{"cursor without its UUID", "/v1/tasks?cursor=" + b64(`{"c":"2026-01-02T15:04:05Z"}`), "cursor", "not a cursor"},
		{"cursor without its time", "/v1/tasks?cursor=" + b64(`{"u":"`+id+`"}`), "cursor", "not a cursor"},
		{"cursor with a nil UUID", "/v1/tasks?cursor=" + b64(`{"c":"2026-01-02T15:04:05Z","u":"00000000-0000-0000-0000-000000000000"}`), "cursor", "not a cursor"},
		{"cursor with an extra field", "/v1/tasks?cursor=" + b64(`{"c":"2026-01-02T15:04:05Z","u":"`+id+`","x":1}`), "cursor", "not a cursor"},
		{"cursor of an array", "/v1/tasks?cursor=" + b64(`[]`), "cursor", "not a cursor"},
	} {
		r := e.do("GET", tc.path, "")
		if r.status != http.StatusBadRequest || errField(r) != tc.field || !strings.Contains(errMessage(r), tc.text) {
			t.Errorf("%s: GET %s: %d %s, want 400 with field %q mentioning %q", tc.name, tc.path, r.status, r.raw, tc.field, tc.text)
		}
	}
	// A cursor the API handed out still pages, to the older task.
	page := e.do("GET", "/v1/tasks?limit=1", "")
	next, _ := page.body["next_cursor"].(string)
	if r := e.do("GET", "/v1/tasks?limit=1&cursor="+next, ""); r.status != 200 || r.body["tasks"].([]any)[0].(map[string]any)["task_uuid"] != id {
		t.Errorf("next_cursor %q: %d %s, want the older task", next, r.status, r.raw)
	}
	if r := e.do("GET", "/v1/tasks/"+id+"?include=transitions", ""); r.status != 200 || r.body["transitions"] == nil {
		t.Errorf("include=transitions: %d %.300s, want the history", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/tasks/"+id+"?include=", ""); r.status != 200 || r.body["transitions"] != nil {
		t.Errorf("include empty: %d %.300s, want no history", r.status, r.raw)
	}
}

// TestUncleanPathsAreNotRedirected: a path with an empty, "." or ".."
// segment is a 404 in the API's error shape, not ServeMux's redirect with
// an HTML body (which, for "..", leads to another resource).
func TestUncleanPathsAreNotRedirected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ method, path, clean string }{
		{"GET", "/v1//tasks", "/v1/tasks"},
		{"GET", "/v1/./templates", "/v1/templates"},
		{"GET", "/v1/tasks/../dlq", "/v1/dlq"},
		{"GET", "/v1/tasks/%2E%2E/dlq", "/v1/dlq"},
		{"GET", "//v1/tasks", "/v1/tasks"},
		{"GET", "/v1/templates/./", "/v1/templates/"},
		{"POST", "/v1//tasks", "/v1/tasks"},
	} {
		req, err := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var body struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(raw, &body)
		if res.StatusCode != http.StatusNotFound || res.Header.Get("Location") != "" || res.Header.Get("Content-Type") != "application/json" ||
			body.Error.Code != "not_found" || !strings.Contains(body.Error.Message, "not clean") || !strings.HasSuffix(body.Error.Message, " "+tc.clean) {
			t.Errorf("%s %s: %d Location %q Content-Type %q %s, want a JSON 404 saying the path is not clean, naming %s",
				tc.method, tc.path, res.StatusCode, res.Header.Get("Location"), res.Header.Get("Content-Type"), raw, tc.clean)
		}
	}
	// A clean path is served as before.
	if r := e.do("GET", "/v1/templates", ""); r.status != 200 {
		t.Errorf("GET /v1/templates: %d %s", r.status, r.raw)
	}
}

// TestEncodedBodiesAre415: a request body with a Content-Encoding other
// than identity is a 415 saying the encoding is not supported, whether the
// body is compressed (it would be read as broken JSON) or plain (the header
// would be ignored).
func TestEncodedBodiesAre415(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(orderBody("")))
	zw.Close()
	yamlDoc := "namespace: billing\nname: invoice\nversion: 1.0.0\nsteps:\n  - {name: render, handler: billing.render}\n"
	for _, tc := range []struct{ name, method, path, body, encoding, text string }{
		{"gzip body", "POST", "/v1/tasks", gz.String(), "gzip", "gzip"},
		{"plain body labelled gzip", "POST", "/v1/tasks", orderBody(""), "gzip", "gzip"},
		{"labelled twice", "POST", "/v1/tasks", orderBody(""), "identity, br", "br"},
		{"template", "POST", "/v1/templates/validate", yamlDoc, "deflate", "deflate"},
		{"action", "POST", "/v1/tasks/01a21a1a-6905-7d33-8b68-ec8ffcfb9368/cancel", `{"reason":"x"}`, "gzip", "gzip"},
		{"DLQ update", "PATCH", "/v1/dlq/1", `{"resolution_status":"resolved"}`, "zstd", "zstd"},
	} {
		ct := "application/json"
		if strings.HasPrefix(tc.body, "namespace:") {
			ct = "application/yaml"
		}
		r := e.do(tc.method, tc.path, tc.body, "Content-Type", ct, "Content-Encoding", tc.encoding)
		if r.status != http.StatusUnsupportedMediaType || !strings.Contains(errMessage(r), "Content-Encoding "+tc.text+" is not supported") ||
			r.header.Get("Accept-Encoding") != "identity" {
			t.Errorf("%s: %d %s, want 415 saying Content-Encoding %s is not supported", tc.name, r.status, r.raw, tc.text)
		}
	}
	// Identity is no encoding; a request without a body has nothing encoded.
	if r := e.do("POST", "/v1/tasks", orderBody(""), "Content-Encoding", "identity"); r.status != http.StatusCreated {
		t.Errorf("Content-Encoding identity: %d %s, want 201", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/tasks", "", "Content-Encoding", "gzip"); r.status != http.StatusOK {
		t.Errorf("GET without a body, Content-Encoding gzip: %d %s, want 200", r.status, r.raw)
	}
	var n int
	if err := e.h.Pool.QueryRow(t.Context(), `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d tasks (%v), want only the identity one", n, err)
	}
}

// TestCharsetsOtherThanUTF8Are415: bodies are read as UTF-8, so a
// Content-Type naming another charset is a 415 naming it rather than a body
// silently misread.
func TestCharsetsOtherThanUTF8Are415(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	yamlDoc := "namespace: billing\nname: invoice\nversion: 1.0.0\nsteps:\n  - {name: render, handler: billing.render}\n"
	for _, tc := range []struct{ method, path, body, ct, charset string }{
		{"POST", "/v1/tasks", orderBody(""), "application/json; charset=latin1", "latin1"},
		{"POST", "/v1/tasks", orderBody(""), "application/json; charset=UTF-16", "UTF-16"},
		{"POST", "/v1/tasks", orderBody(""), `application/json; charset="utf8"`, "utf8"},
		{"POST", "/v1/templates/validate", yamlDoc, "application/yaml; charset=iso-8859-1", "iso-8859-1"},
		{"POST", "/v1/tasks/01a21a1a-6905-7d33-8b68-ec8ffcfb9368/cancel", `{"reason":"x"}`, "application/json; charset=utf-16le", "utf-16le"},
		{"PATCH", "/v1/dlq/1", `{"resolution_status":"resolved"}`, "application/json;charset=windows-1252", "windows-1252"},
	} {
		r := e.do(tc.method, tc.path, tc.body, "Content-Type", tc.ct)
		if r.status != http.StatusUnsupportedMediaType || !strings.Contains(errMessage(r), `charset "`+tc.charset+`" is not supported`) {
			t.Errorf("%s %s as %s: %d %s, want 415 naming the charset", tc.method, tc.path, tc.ct, r.status, r.raw)
		}
	}
	for _, ct := range []string{"application/json; charset=utf-8", `application/json; charset="UTF-8"`, "application/json"} {
		if r := e.do("POST", "/v1/tasks", orderBody(""), "Content-Type", ct); r.status != http.StatusCreated {
			t.Errorf("submit as %s: %d %s, want 201", ct, r.status, r.raw)
		}
	}
}

// TestIdempotencyKeyHeader: errors in the Idempotency-Key header name the
// header (a client would look for idempotency_key in its body in vain); a
// header and a body key that differ are refused, naming both, where the
// body's used to win silently.
func TestIdempotencyKeyHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	for _, tc := range []struct {
		name, body string
		keys       []string
		text       []string
	}{
		{"too long", orderBody(""), []string{strings.Repeat("k", orchestration.MaxTextFieldLen+1)}, []string{"Idempotency-Key header", "256"}},
		{"invalid UTF-8", orderBody(""), []string{"k\xff"}, []string{"Idempotency-Key header", "UTF-8"}},
		{"given twice", orderBody(""), []string{"k-1", "k-2"}, []string{"Idempotency-Key header", "2 times"}},
		{"differs from the body's", orderBody(`,"idempotency_key":"body-key"`), []string{"header-key"}, []string{"Idempotency-Key header", "idempotency_key", "header-key", "body-key"}},
	} {
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/tasks", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for _, k := range tc.keys {
			req.Header.Add("Idempotency-Key", k)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		r := resp{status: res.StatusCode, raw: string(raw)}
		_ = json.Unmarshal(raw, &r.body)
		ok := r.status == http.StatusBadRequest && errField(r) == "Idempotency-Key"
		for _, text := range tc.text {
			ok = ok && strings.Contains(errMessage(r), text)
		}
		if !ok {
			t.Errorf("%s: %d %s, want 400 with field Idempotency-Key mentioning %q", tc.name, r.status, r.raw, tc.text)
		}
	}
	var n int
	if err := e.h.Pool.QueryRow(t.Context(), `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused requests created %d tasks (%v)", n, err)
	}
	// The same key in both is one key; the header alone is the key too.
	first := e.do("POST", "/v1/tasks", orderBody(`,"idempotency_key":"k-same"`), "Idempotency-Key", "k-same")
	again := e.do("POST", "/v1/tasks", orderBody(""), "Idempotency-Key", "k-same")
	if first.status != http.StatusCreated || again.status != http.StatusOK || again.body["task_uuid"] != first.body["task_uuid"] {
		t.Errorf("same key in header and body, then in the header: %d then %d %s, want 201 then 200 with the same task", first.status, again.status, again.raw)
	}
	// The body's idempotency_key keeps naming the body field.
	long := e.do("POST", "/v1/tasks", orderBody(`,"idempotency_key":"`+strings.Repeat("k", orchestration.MaxTextFieldLen+1)+`"`))
	if long.status != http.StatusBadRequest || errField(long) != "idempotency_key" {
		t.Errorf("long body key: %d %s, want 400 with field idempotency_key", long.status, long.raw)
	}
}

// TestCreatedTaskAnswerIsWhatGetReads: the 201 answer shows the task and
// its steps as the creation left them, without reading the steps back, and
// that is exactly what GET reads right after (no worker runs here).
func TestCreatedTaskAnswerIsWhatGetReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, false)
	created := e.do("POST", "/v1/tasks", orderBody(`,"tags":["a","b"],"priority":3`))
	if created.status != http.StatusCreated {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	got := e.do("GET", "/v1/tasks/"+created.body["task_uuid"].(string), "")
	if got.status != http.StatusOK {
		t.Fatalf("get: %d %s", got.status, got.raw)
	}
	if !reflect.DeepEqual(created.body, got.body) {
		t.Errorf("the 201 answer differs from GET's:\n201 %s\nGET %s", created.raw, got.raw)
	}
	steps, _ := created.body["steps"].([]any)
	states := map[string]int{}
	for _, s := range steps {
		states[s.(map[string]any)["state"].(string)]++
	}
	if len(steps) != 5 || states["enqueued"] != 1 || states["pending"] != 4 {
		t.Errorf("the created task's steps by state: %v (of %d), want 1 enqueued and 4 pending", states, len(steps))
	}
}
