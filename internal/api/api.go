// Package api is the REST API under /v1 plus the health endpoints: HTTP
// handlers that translate wire types to domain calls. No SQL here.
//
// Every error is {"error": {"code": "...", "message": "...", "field": "..."}}
// with a message that names what is wrong (an invalid template's adds
// "problems"); database error text never leaks.
package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/pgtext"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/suggest"
)

// Readiness reports whether the daemon can serve work.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Server holds the API's dependencies.
type Server struct {
	engine       *orchestration.Engine
	store        *store.Store
	logger       *slog.Logger
	maxBodyBytes int64
	ready        Readiness
	auth         *Authenticator
	shuttingDown atomic.Bool
	extra        map[string]http.Handler
}

// Options configures the server.
type Options struct {
	MaxBodyBytes int64
	Ready        Readiness
	Auth         *Authenticator
	// Extra routes (pattern -> handler), such as "GET /metrics".
	Extra map[string]http.Handler
}

// New returns the API server.
func New(engine *orchestration.Engine, st *store.Store, logger *slog.Logger, opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 2 << 20
	}
	return &Server{engine: engine, store: st, logger: logger, maxBodyBytes: opts.MaxBodyBytes,
		ready: opts.Ready, auth: opts.Auth, extra: opts.Extra}
}

// SetShuttingDown makes /readyz fail, first step of a graceful shutdown.
func (s *Server) SetShuttingDown() { s.shuttingDown.Store(true) }

// route is one API route; the OpenAPI document is checked against this list.
type route struct {
	Method, Path string
	Perm         Permission
	Handler      http.HandlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{"POST", "/v1/tasks", PermWrite, s.createTask},
		{"POST", "/v1/tasks/batch", PermWrite, s.createTasks},
		{"GET", "/v1/tasks", PermRead, s.listTasks},
		{"GET", "/v1/tasks/{task_uuid}", PermRead, s.getTask},
		{"POST", "/v1/tasks/{task_uuid}/cancel", PermWrite, s.cancelTask},
		{"POST", "/v1/tasks/{task_uuid}/retry", PermWrite, s.retryTask},
		{"POST", "/v1/tasks/{task_uuid}/resolve", PermWrite, s.resolveTask},
		{"GET", "/v1/steps/{step_uuid}", PermRead, s.getStep},
		{"POST", "/v1/steps/{step_uuid}/resolve", PermWrite, s.resolveStep},
		{"POST", "/v1/steps/{step_uuid}/retry", PermWrite, s.retryStep},
		{"GET", "/v1/templates", PermRead, s.listTemplates},
		{"POST", "/v1/templates", PermAdmin, s.registerTemplate},
		{"POST", "/v1/templates/validate", PermRead, s.validateTemplate},
		{"GET", "/v1/templates/{namespace}/{name}", PermRead, s.getTemplate},
		{"GET", "/v1/templates/{namespace}/{name}/{version}", PermRead, s.getTemplate},
		{"GET", "/v1/dlq", PermRead, s.listDLQ},
		{"GET", "/v1/dlq/{dlq_id}", PermRead, s.getDLQ},
		{"PATCH", "/v1/dlq/{dlq_id}", PermWrite, s.updateDLQ},
		{"GET", "/v1/openapi.json", PermNone, s.openAPI},
	}
}

// Handler returns the HTTP handler for the whole API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		mux.Handle(r.Method+" "+r.Path, s.auth.Require(r.Perm, refuseContentEncoding(checkQuery(r.Method, r.Path, r.Handler))))
	}
	mux.Handle("GET /healthz", s.auth.Public(PublicHealth, http.HandlerFunc(s.healthz)))
	mux.Handle("GET /readyz", s.auth.Public(PublicHealth, http.HandlerFunc(s.readyz)))
	for pattern, h := range s.extra {
		mux.Handle(pattern, s.auth.Public(PublicMetrics, h))
	}
	// The catch-all answers in the API's error shape; it also matches a
	// known path with a wrong method, which ServeMux would answer 405, so it
	// finds the methods the path has itself.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("%s %s is not allowed; allowed: %s", r.Method, r.URL.Path, strings.Join(allow, ", ")), "")
			return
		}
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path), "")
	})
	return s.recoverPanics(refuseUncleanPath(refuseUnstorableURL(mux)))
}

// refuseUncleanPath answers 404 in the API's error shape for a path with an
// empty, "." or ".." segment (/v1//tasks, /v1/./templates). ServeMux would
// redirect it to the cleaned path with an HTML body: not the API's shape,
// and for ".." a different resource than the one the client named.
func refuseUncleanPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// "OPTIONS *" has no path; ServeMux answers it.
		if p := r.URL.Path; r.RequestURI != "*" && cleanPath(p) != p {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf(
				"no route for %s %s: the path is not clean (it has an empty, \".\" or \"..\" segment) and is not redirected; the clean path is %s",
				r.Method, p, cleanPath(p)), "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the path ServeMux would redirect p to: rooted, without
// empty, "." or ".." segments, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// allowedMethods lists the methods mux routes r's path for, other than
// through the catch-all "/".
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.WithContext(r.Context()) // a shallow copy
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

// checkQuery answers 400 for a query string the route does not take: one
// that does not parse (url.Values would drop the pair silently), a parameter
// the route does not know, or one given twice. Handlers read one value per
// parameter and ignore the rest, so without this a mistyped filter
// (staet=error) would answer 200 with everything, which a client cannot tell
// from a match. The parameters a route takes are those its OpenAPI document
// lists (routeDocs), so the two cannot drift apart.
func checkQuery(method, path string, next http.Handler) http.Handler {
	known := routeDocs[method+" "+path].Query
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "the query string does not parse: "+err.Error(), "")
			return
		}
		// Sorted, so that a request with several wrong parameters is always
		// answered about the same one.
		for _, name := range slices.Sorted(maps.Keys(q)) {
			if !slices.Contains(known, name) {
				writeError(w, http.StatusBadRequest, "invalid_request", unknownParameter(method, path, known, name), name)
				return
			}
			if n := len(q[name]); n > 1 {
				writeError(w, http.StatusBadRequest, "invalid_request",
					fmt.Sprintf("query parameter %s is given %d times; it takes one value", name, n), name)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func unknownParameter(method, path string, known []string, name string) string {
	msg := fmt.Sprintf("unknown query parameter %q", name)
	if guess, ok := suggest.Closest(name, known); ok {
		msg += fmt.Sprintf(" (did you mean %q?)", guess)
	}
	if len(known) == 0 {
		return msg + fmt.Sprintf("; %s %s takes no query parameters", method, path)
	}
	return msg + fmt.Sprintf("; %s %s takes %s", method, path, strings.Join(known, ", "))
}

// refuseContentEncoding answers 415 for a request whose body is encoded
// (Content-Encoding: gzip, br, ...): the API reads bodies as they come, so
// a compressed one would fail as invalid JSON, and a plain one labelled
// compressed would be read against its label. Identity is no encoding.
func refuseContentEncoding(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody { // no body: nothing is encoded
			for _, v := range r.Header.Values("Content-Encoding") {
				for _, enc := range strings.Split(v, ",") {
					if enc = strings.TrimSpace(enc); enc != "" && !strings.EqualFold(enc, "identity") {
						w.Header().Set("Accept-Encoding", "identity") // RFC 7694
						writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf(
							"Content-Encoding %s is not supported: send the request body unencoded (identity)", enc), "")
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refuseUnstorableURL answers 400 for a request whose path or query holds
// text Postgres cannot store (a NUL character, invalid UTF-8): handlers pass
// path segments and query filters to SQL as text, where it would fail as a
// database error.
func refuseUnstorableURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := pgtext.CheckText(r.URL.Path); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "the URL path "+err.Error(), "")
			return
		}
		for key, values := range r.URL.Query() {
			for _, v := range values {
				if err := pgtext.CheckText(v); err != nil {
					writeError(w, http.StatusBadRequest, "invalid_request", key+": "+err.Error(), key)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("panic in HTTP handler", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, http.StatusInternalServerError, "internal", "internal error", "")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.shuttingDown.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the daemon is shutting down", "")
		return
	}
	if s.ready != nil {
		if err := s.ready.Ready(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "not_ready", err.Error(), "")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// errorBody is the one error shape of the API.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg, field string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg, Field: field}})
}

// fail maps a domain error to its HTTP status; unknown errors are logged
// and answered without their text (it may hold SQL).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, d := s.errorFor(r, err)
	writeError(w, status, d.Code, d.Message, d.Field)
}

// errorFor is the HTTP status and error body of a domain error (fail's
// mapping; a batch submission uses it for each failed task).
func (s *Server) errorFor(r *http.Request, err error) (int, errorDetail) {
	var fe *orchestration.FieldError
	switch {
	case errors.As(err, &fe):
		return http.StatusBadRequest, errorDetail{"invalid_request", fe.Error(), fe.Field}
	case errors.Is(err, orchestration.ErrInvalid):
		return http.StatusBadRequest, errorDetail{"invalid_request", err.Error(), ""}
	case errors.Is(err, orchestration.ErrUnknownTarget):
		return http.StatusNotFound, errorDetail{"unknown_template", err.Error(), ""}
	case errors.Is(err, orchestration.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, errorDetail{"not_found", err.Error(), ""}
	case errors.Is(err, orchestration.ErrWrongState):
		return http.StatusConflict, errorDetail{"wrong_state", err.Error(), ""}
	case errors.Is(err, store.ErrConflict), errors.Is(err, orchestration.ErrConflict):
		return http.StatusConflict, errorDetail{"conflict", err.Error(), ""}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, errorDetail{"timeout", "the request was cancelled or timed out", ""}
	default:
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		return http.StatusInternalServerError, errorDetail{"internal", "internal error; see the orchestrator log", ""}
	}
}

// mediaType returns the request's media type, lowercased and without
// parameters, or "" when it sends no Content-Type. A type that is not one of
// accepted, or a charset other than UTF-8, is answered with 415 and ok
// false.
func mediaType(w http.ResponseWriter, r *http.Request, accepted ...string) (mt string, ok bool) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && slices.Contains(accepted, mt) {
		// Bodies are read as UTF-8: one in another charset would be
		// misread, not converted.
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
				fmt.Sprintf("charset %q is not supported: the body must be UTF-8 (charset=utf-8, or no charset)", cs), "")
			return "", false
		}
		return mt, true
	}
	want := accepted[0]
	if len(accepted) > 1 {
		want = "one of " + strings.Join(accepted, ", ")
	}
	writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be "+want+", got "+ct, "")
	return "", false
}

// decodeBody reads a JSON body strictly: size-limited, unknown fields
// refused, one object only. It writes the error response itself and returns
// false when the body is unusable.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	_, ok := s.decode(w, r, v, false)
	return ok
}

// decodeBodyBytes is decodeBody that also returns the body it decoded.
func (s *Server) decodeBodyBytes(w http.ResponseWriter, r *http.Request, v any) ([]byte, bool) {
	return s.decode(w, r, v, false)
}

// decodeOptionalBody is decodeBody for a body that may be left out: an
// empty body leaves v as it is, however it was framed (Content-Length: 0, or
// chunked with no bytes).
func (s *Server) decodeOptionalBody(w http.ResponseWriter, r *http.Request, v any) bool {
	_, ok := s.decode(w, r, v, true)
	return ok
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, optional bool) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			msg := fmt.Sprintf("request body exceeds %d bytes (server.max_body_bytes)", s.maxBodyBytes)
			if r.URL.Path == "/v1/tasks/batch" {
				msg += ": send fewer task requests per batch"
			}
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", msg, "")
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "invalid_request", "could not read the request body", "")
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if !optional {
			writeError(w, http.StatusBadRequest, "invalid_json", "request body is empty; a JSON object is required", "")
		}
		return nil, optional
	}
	if _, ok := mediaType(w, r, "application/json"); !ok {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg, field := describeJSONError(err, body, v)
		writeError(w, http.StatusBadRequest, "invalid_json", msg, field)
		return nil, false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "invalid_json", "request body has data after the JSON object", "")
		return nil, false
	}
	// encoding/json replaces invalid UTF-8 and unpaired surrogate escapes
	// with U+FFFD in the strings it decodes: refuse them instead of storing
	// text the client did not send. (A NUL character, and a number jsonb
	// cannot hold, each field's own check names.)
	if off, err := pgtext.FindJSONProblem(body); errors.Is(err, pgtext.ErrInvalidUTF8) || errors.Is(err, pgtext.ErrSurrogate) {
		field := problemField(body, off, v)
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s: %v", cmp.Or(field, "request body"), err), field)
		return nil, false
	}
	return body, true
}

// problemField names the value of body at byte offset off for an error: its
// path with array indexes (tags[1]), or, inside a member that v keeps as raw
// JSON (a task's context, a step's result), that member, as the member's
// own checks name it.
func problemField(body []byte, off int, v any) string {
	path := jsonPathAt(body, int64(off)+1)
	top := path
	if i := strings.IndexAny(path, ".["); i >= 0 {
		top = path[:i]
	}
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		for i := range t.Elem().NumField() {
			f := t.Elem().Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == top && f.Type == reflect.TypeFor[json.RawMessage]() {
				return top
			}
		}
	}
	return path
}

// describeJSONError says what is wrong with a body that did not decode into
// v, and which field, in JSON's terms rather than Go's.
func describeJSONError(err error, body []byte, v any) (msg, field string) {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("request body is not valid JSON (at byte %d): %v", se.Offset, se), ""
	case errors.As(err, &te) && te.Field == "":
		return "request body must be a JSON object, not JSON " + te.Value, ""
	case errors.As(err, &te):
		field := te.Field
		if p := jsonPathAt(body, te.Offset); p != "" {
			field = p // with the index of an array element: tags[1]
		}
		return fmt.Sprintf("%s: must be %s, not JSON %s", field, jsonTypeName(te.Type), te.Value), field
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return "unknown field " + strconv.Quote(field), field
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "request body is truncated JSON", ""
	}
	// A value's own UnmarshalText refused it (a malformed UUID); the error
	// does not say where.
	if name, typ := refusedField(body, v); name != "" {
		return fmt.Sprintf("%s: must be %s", name, jsonTypeName(typ)), name
	}
	return "request body is not valid JSON: " + err.Error(), ""
}

// jsonPathAt names the value of body that ends at byte offset off (where
// encoding/json reports a literal of the wrong type) or whose object or
// array opens just before it, as a path with array indexes:
// items[1].quantity. encoding/json's own Field leaves the indexes out. It
// returns "" when off falls on no value.
func jsonPathAt(body []byte, off int64) string {
	type frame struct {
		array   bool
		index   int
		key     string
		wantKey bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.array:
				fmt.Fprintf(&b, "[%d]", f.index)
			case b.Len() > 0:
				b.WriteString("." + f.key)
			default:
				b.WriteString(f.key)
			}
		}
		return b.String()
	}
	done := func() { // a value of the innermost container ended
		if n := len(stack); n > 0 {
			if stack[n-1].array {
				stack[n-1].index++
			} else {
				stack[n-1].wantKey = true
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				stack[n-1].key, stack[n-1].wantKey = key, false
				continue
			}
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			done()
			continue
		}
		if dec.InputOffset() >= off {
			return path()
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{array: true})
		default:
			done()
		}
	}
}

// refusedField finds the top-level field of the struct v points to whose
// value in body does not decode, and its type.
func refusedField(body []byte, v any) (string, reflect.Type) {
	t := reflect.TypeOf(v).Elem()
	var fields map[string]json.RawMessage
	if t.Kind() != reflect.Struct || json.Unmarshal(body, &fields) != nil {
		return "", nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if raw, ok := fields[name]; ok && json.Unmarshal(raw, reflect.New(f.Type).Interface()) != nil {
			return name, f.Type
		}
	}
	return "", nil
}

// jsonTypeName names what a Go type takes in JSON, for clients that do not
// know its Go name.
func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[uuid.UUID]() {
		return "a UUID"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another JSON type"
}
