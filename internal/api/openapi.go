package api

import (
	"net/http"
	"regexp"
	"strings"
)

// routeDocs describes each route for the OpenAPI document. A test checks
// that the document's paths and methods are exactly the router's.
var routeDocs = map[string]struct {
	Summary string
	Body    string // schema name of the request body, if any
	Resp    string // schema name of the success response
	Status  string
	Query   []string
}{
	"POST /v1/tasks":                                 {"Submit a task (an instance of a registered template). A repeated idempotency key returns the existing task with 200, or 409 when the request differs from the first one.", "TaskRequest", "Task", "201", nil},
	"POST /v1/tasks/batch":                           {"Submit up to 1000 tasks in one request, created together in shared transactions. Each task request is answered in its place with the status POST /v1/tasks would give it: 201 with the task, 200 with the task its idempotency key created before, or an error status whose field names the request (tasks[3].context); one bad request does not fail the others. The Idempotency-Key header does not apply: each request carries its own idempotency_key.", "TaskBatch", "TaskBatchResult", "200", nil},
	"GET /v1/tasks":                                  {"List tasks, newest first, with filters and cursor paging.", "", "TaskList", "200", []string{"namespace", "name", "state", "initiator", "created_after", "created_before", "limit", "cursor"}},
	"GET /v1/tasks/{task_uuid}":                      {"Get a task with its steps (states, attempts, results, errors); include=transitions adds the transition history.", "", "Task", "200", []string{"include"}},
	"POST /v1/tasks/{task_uuid}/cancel":              {"Cancel a task that has not finished; its unfinished steps are cancelled.", "TaskAction", "Task", "200", nil},
	"POST /v1/tasks/{task_uuid}/retry":               {"Retry a task in error or blocked_by_failures: failed steps get their attempts back, steps still enqueued get their messages sent again, and the task runs again.", "TaskAction", "Task", "200", nil},
	"POST /v1/tasks/{task_uuid}/resolve":             {"Mark a task in error or blocked_by_failures as resolved manually.", "TaskAction", "Task", "200", nil},
	"GET /v1/steps/{step_uuid}":                      {"Get a step.", "", "Step", "200", nil},
	"POST /v1/steps/{step_uuid}/resolve":             {"Resolve a step manually, optionally supplying its result; its task moves on.", "StepAction", "Step", "200", nil},
	"POST /v1/steps/{step_uuid}/retry":               {"Retry a failed step with fresh attempts; its task moves on.", "StepAction", "Step", "200", nil},
	"GET /v1/templates":                              {"List registered templates.", "", "TemplateList", "200", []string{"namespace"}},
	"POST /v1/templates":                             {"Register a template version (JSON, or YAML with Content-Type application/yaml). Versions are immutable.", "Template", "TemplateRecord", "201", nil},
	"POST /v1/templates/validate":                    {"Validate a template without registering it; every problem is reported with its path.", "Template", "TemplateValidation", "200", nil},
	"GET /v1/templates/{namespace}/{name}":           {"Get the latest version of a template.", "", "TemplateRecord", "200", nil},
	"GET /v1/templates/{namespace}/{name}/{version}": {"Get one version of a template.", "", "TemplateRecord", "200", nil},
	"GET /v1/dlq":                                    {"List DLQ entries (tasks that could not finish), newest first.", "", "DLQList", "200", []string{"status", "namespace", "limit"}},
	"GET /v1/dlq/{dlq_id}":                           {"Get a DLQ entry with its snapshot.", "", "DLQEntry", "200", nil},
	"PATCH /v1/dlq/{dlq_id}":                         {"Update a DLQ entry's investigation status (pending, investigating, resolved, ignored); resolution_notes and resolved_by change only when sent (\"\" clears one).", "DLQUpdate", "DLQEntry", "200", nil},
	"GET /v1/openapi.json":                           {"This document.", "", "", "200", nil},
}

var pathParamRE = regexp.MustCompile(`\{([a-z_]+)\}`)

// OpenAPI builds the OpenAPI 3 document from the route table.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, r := range s.routes() {
		key := r.Method + " " + r.Path
		doc := routeDocs[key]
		op := map[string]any{
			"summary":     doc.Summary,
			"operationId": operationID(r.Method, r.Path),
		}
		var params []any
		for _, m := range pathParamRE.FindAllStringSubmatch(r.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range doc.Query {
			params = append(params, map[string]any{"name": q, "in": "query", "required": false, "schema": map[string]any{"type": "string"}})
		}
		if key == "POST /v1/tasks" {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false, "schema": map[string]any{"type": "string"},
				"description": "the body's idempotency_key, sent as a header; when both are sent they must be the same key"})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if doc.Body != "" {
			content := map[string]any{"application/json": map[string]any{"schema": ref(doc.Body)}}
			if doc.Body == "Template" {
				content["application/yaml"] = map[string]any{"schema": ref(doc.Body)}
			}
			op["requestBody"] = map[string]any{"required": !strings.HasSuffix(doc.Body, "Action"), "content": content}
		}
		resp := map[string]any{"description": "success"}
		if doc.Resp != "" {
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": ref(doc.Resp)}}
		}
		status := doc.Status
		if status == "" {
			status = "200"
		}
		errResp := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
		responses := map[string]any{status: resp, "400": errResp, "401": errResp, "403": errResp, "404": errResp, "409": errResp, "413": errResp, "500": errResp}
		if doc.Body != "" {
			responses["415"] = errResp
		}
		op["responses"] = responses
		if r.Perm != PermNone {
			op["security"] = []any{map[string]any{"apiKey": []any{}}, map[string]any{"bearer": []any{}}}
		}
		item, _ := paths[r.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[r.Path] = item
		}
		item[strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "Tasker orchestrator API", "version": "1.0.0",
			"description": "Submit and inspect workflow tasks, operate on steps, manage templates. Errors are {\"error\":{\"code\",\"message\",\"field\"}}; an invalid template's add \"problems\": [{\"path\",\"message\"}]."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"apiKey": map[string]any{"type": "apiKey", "in": "header", "name": "X-API-Key"},
				"bearer": map[string]any{"type": "http", "scheme": "bearer"},
			},
			"schemas": schemas(),
		},
	}
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func operationID(method, path string) string {
	p := pathParamRE.ReplaceAllString(path, "by_$1")
	p = strings.NewReplacer("/v1/", "", "/", "_", ".", "_").Replace(p)
	return strings.ToLower(method) + "_" + p
}

func obj(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

var (
	str     = map[string]any{"type": "string"}
	integer = map[string]any{"type": "integer"}
	boolean = map[string]any{"type": "boolean"}
	anyObj  = map[string]any{"type": "object", "additionalProperties": true}
	uuidStr = map[string]any{"type": "string", "format": "uuid"}
	timeStr = map[string]any{"type": "string", "format": "date-time"}
	strList = map[string]any{"type": "array", "items": str}
)

func schemas() map[string]any {
	return map[string]any{
		"Error": obj(map[string]any{"error": obj(map[string]any{
			"code": str, "message": str,
			"field": map[string]any{"type": "string", "description": "the body field, query parameter, path parameter or header that is wrong, when one is"},
			"problems": map[string]any{"type": "array", "description": "an invalid template's problems, each with the path in the template it concerns",
				"items": obj(map[string]any{"path": str, "message": str}, "path", "message")},
		}, "code", "message")}, "error"),
		"TaskRequest": obj(map[string]any{
			"namespace": str, "name": str, "version": str, "context": anyObj, "initiator": str, "source_system": str,
			"reason": str, "tags": strList, "priority": integer, "correlation_id": uuidStr,
			"parent_correlation_id": uuidStr, "idempotency_key": str}, "namespace", "name"),
		"Step": obj(map[string]any{
			"step_uuid": uuidStr, "task_uuid": uuidStr, "name": str, "handler": str, "state": str, "attempts": integer,
			"max_attempts": integer, "retryable": boolean, "depends_on": strList, "next_attempt_at": timeStr,
			"claimed_by": str, "results": map[string]any{}, "last_error": anyObj, "created_at": timeStr,
			"updated_at": timeStr, "completed_at": timeStr}),
		"Task": obj(map[string]any{
			"task_uuid": uuidStr, "namespace": str, "name": str, "version": str, "state": str, "context": anyObj,
			"tags": strList, "priority": integer, "initiator": str, "source_system": str, "reason": str,
			"correlation_id": uuidStr, "parent_correlation_id": uuidStr, "trace_id": str, "created_at": timeStr,
			"updated_at": timeStr, "completed_at": timeStr, "steps": map[string]any{"type": "array", "items": ref("Step")},
			"step_counts": map[string]any{"type": "object", "additionalProperties": integer},
			"transitions": map[string]any{"type": "array", "items": anyObj}}),
		"TaskBatch": obj(map[string]any{"tasks": map[string]any{"type": "array", "items": ref("TaskRequest"), "minItems": 1, "maxItems": MaxBatchTasks}}, "tasks"),
		"TaskBatchResult": obj(map[string]any{
			"results": map[string]any{"type": "array", "description": "one per task request, in the order of the requests", "items": obj(map[string]any{
				"index": integer, "status": map[string]any{"type": "integer", "description": "the status POST /v1/tasks would have answered this request with"},
				"task": ref("Task"), "idempotent_replay": boolean,
				"error": obj(map[string]any{"code": str, "message": str, "field": str}, "code", "message")}, "index", "status")},
			"created": integer, "replayed": integer, "failed": integer}, "results", "created", "replayed", "failed"),
		"TaskList":       obj(map[string]any{"tasks": map[string]any{"type": "array", "items": ref("Task")}, "next_cursor": str}),
		"TaskAction":     obj(map[string]any{"reason": str}),
		"StepAction":     obj(map[string]any{"reason": str, "result": map[string]any{}}),
		"Template":       anyObj,
		"TemplateRecord": obj(map[string]any{"namespace": str, "name": str, "version": str, "description": str, "content_hash": str, "registered_at": timeStr, "definition": anyObj}),
		"TemplateList":   obj(map[string]any{"templates": map[string]any{"type": "array", "items": ref("TemplateRecord")}}),
		"DLQEntry": obj(map[string]any{"dlq_id": integer, "task_uuid": uuidStr, "namespace": str, "reason": str, "detail": str,
			"snapshot": anyObj, "resolution_status": str, "resolution_notes": str, "resolved_by": str, "created_at": timeStr, "updated_at": timeStr}),
		"DLQList":            obj(map[string]any{"entries": map[string]any{"type": "array", "items": ref("DLQEntry")}}),
		"DLQUpdate":          obj(map[string]any{"resolution_status": str, "resolution_notes": str, "resolved_by": str}, "resolution_status"),
		"TemplateValidation": obj(map[string]any{"valid": boolean, "template": ref("TemplateRecord"), "topological_order": strList}),
	}
}

func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.OpenAPI())
}

// Routes lists "METHOD /path" for every API route (the OpenAPI test
// compares the document with it).
func Routes() []string {
	var s Server
	var out []string
	for _, r := range s.routes() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}
