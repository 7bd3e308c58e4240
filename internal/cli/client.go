package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/template"
)

// client talks to the orchestrator's REST API.
type client struct {
	base   string
	apiKey string
	http   *http.Client
}

func (g *globals) client() *client {
	return &client{base: strings.TrimSuffix(g.server, "/"), apiKey: g.apiKey, http: &http.Client{Timeout: 30 * time.Second}}
}

// uuidArg takes one argument, a UUID (the API's path parameter name); one
// that is not is a usage error, not a request the server refuses.
func uuidArg(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := argCount(cmd, args, 1, 1); err != nil {
			return err
		}
		if _, err := uuid.Parse(args[0]); err != nil {
			return &usageError{fmt.Sprintf("%s: %s %q is not a UUID\nusage: %s", commandName(cmd), name, args[0], cmd.UseLine())}
		}
		return nil
	}
}

// localCommand annotates a client group's command that needs no server
// (template validate): a bad --server does not stop it.
const localCommand = "local"

// checkServer refuses, as a usage error, a --server (or TASKER_SERVER) that
// is not an http or https URL with a host, before a client command sends
// anything: the HTTP client's own errors ("unsupported protocol scheme")
// would be reported as an unreachable server.
func (g *globals) checkServer(cmd *cobra.Command, _ []string) error {
	if cmd.HasSubCommands() || cmd.Annotations[localCommand] != "" {
		return nil
	}
	u, err := url.Parse(g.server)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return nil
	}
	name := "--server"
	if f := cmd.Flags().Lookup("server"); f != nil && !f.Changed && os.Getenv("TASKER_SERVER") != "" {
		name = "TASKER_SERVER"
	}
	msg := fmt.Sprintf("%s: %s %q is not an http or https URL with a host", commandName(cmd), name, g.server)
	if u, err := url.Parse("http://" + g.server); err == nil && u.Host != "" && !strings.Contains(g.server, "://") {
		msg += fmt.Sprintf("; did you mean http://%s?", g.server)
	} else {
		msg += " (such as http://127.0.0.1:8080)"
	}
	return &usageError{msg}
}

// apiError is the API's error body.
type apiError struct {
	Status int
	Error  struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Field    string `json:"field"`
		Problems []struct {
			Path    string `json:"path"`
			Message string `json:"message"`
		} `json:"problems"`
	} `json:"error"`
}

// err renders the error: the message, then each problem once as
// "path: message" ("message" alone when the problem has no path, such as a
// body that is not YAML). The API's message for a list of problems is
// those problems joined; the list is printed instead, under a heading made
// of the code ("invalid template").
func (e *apiError) err() error {
	msg := e.Error.Message
	if len(e.Error.Problems) > 0 && e.Error.Code != "" {
		msg = strings.ReplaceAll(e.Error.Code, "_", " ")
	}
	msg = fmt.Sprintf("%s (HTTP %d %s)", msg, e.Status, e.Error.Code)
	for _, p := range e.Error.Problems {
		line := p.Message
		if p.Path != "" {
			line = p.Path + ": " + line
		}
		msg += "\n  " + strings.ReplaceAll(line, "\n", "\n  ")
	}
	return errors.New(msg)
}

func (c *client) do(ctx context.Context, method, path string, body any, contentType string, out any) error {
	_, err := c.send(ctx, method, path, body, contentType, out)
	return err
}

// send is do that also returns the response's status, for the commands
// whose output depends on it (a template registered anew is 201, one
// registered before with the same content 200).
func (c *client) send(ctx context.Context, method, path string, body any, contentType string, out any) (int, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if rd != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	if c.apiKey != "" {
		req.Header.Set("X-API-Key", c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, c.transportError(ctx, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, c.transportError(ctx, method, path, err)
	}
	if resp.StatusCode >= 400 {
		ae := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Error.Message == "" {
			return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		return resp.StatusCode, ae.err()
	}
	if out != nil {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = data
			return resp.StatusCode, nil
		}
		return resp.StatusCode, json.Unmarshal(data, out)
	}
	return resp.StatusCode, nil
}

// transportError says why a request got no answer. Only a failure to
// connect is "cannot reach": the caller's context ending (a --timeout, an
// interrupt) is returned as such, wrapping ctx.Err(), for the caller to say
// what it was waiting for; the server not answering in time is a timeout.
func (c *client) transportError(ctx context.Context, method, path string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s %s: %w", method, path, ctxErr)
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return fmt.Errorf("the orchestrator at %s did not answer %s %s within %s", c.base, method, path, c.http.Timeout)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("cannot reach the orchestrator at %s (is `orchestrator serve` running? set --server or TASKER_SERVER): %w", c.base, err)
	}
	return fmt.Errorf("%s %s at %s: %w", method, path, c.base, err)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printAPIDoc prints a document the API answered: all of it, indented, with
// --json; otherwise decoded into T and printed for a reader by show.
func printAPIDoc[T any](g *globals, raw json.RawMessage, show func(io.Writer, T)) error {
	if g.jsonOut {
		return printRawJSON(g.stdout, raw)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	show(g.stdout, v)
	return nil
}

// printRawJSON prints a document as the API sent it (every field, not only
// those the CLI knows), indented as printJSON indents. With --json every
// client command prints the API's own document this way, so its keys are
// those the OpenAPI document describes.
func printRawJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// oneLine shortens compact JSON (or any text) to fit a line of a table.
func oneLine(s string, max int) string {
	if len(s) > max {
		return s[:max-3] + "..."
	}
	return s
}

// errorMessage is the message of a step's last_error, or the raw JSON when
// it has none.
func errorMessage(raw json.RawMessage) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		return e.Message
	}
	return string(raw)
}

// taskOut is the subset of the API's task the CLI prints for a reader
// (--json prints the API's document as received).
type taskOut struct {
	TaskUUID      string          `json:"task_uuid"`
	Namespace     string          `json:"namespace"`
	Name          string          `json:"name"`
	Version       string          `json:"version"`
	State         string          `json:"state"`
	CorrelationID string          `json:"correlation_id"`
	TraceID       string          `json:"trace_id"`
	CreatedAt     time.Time       `json:"created_at"`
	CompletedAt   *time.Time      `json:"completed_at"`
	Context       json.RawMessage `json:"context"`
	StepCounts    map[string]int  `json:"step_counts"`
	Steps         []struct {
		StepUUID    string          `json:"step_uuid"`
		Name        string          `json:"name"`
		Handler     string          `json:"handler"`
		State       string          `json:"state"`
		Attempts    int             `json:"attempts"`
		MaxAttempts int             `json:"max_attempts"`
		DependsOn   []string        `json:"depends_on"`
		Results     json.RawMessage `json:"results"`
		LastError   json.RawMessage `json:"last_error"`
	} `json:"steps"`
	Transitions []struct {
		StepName  string    `json:"step_name"`
		From      string    `json:"from_state"`
		To        string    `json:"to_state"`
		CreatedAt time.Time `json:"created_at"`
	} `json:"transitions"`
}

func terminalTask(state string) bool {
	switch state {
	case "complete", "error", "cancelled", "resolved_manually":
		return true
	}
	return false
}

func printTask(w io.Writer, t taskOut) {
	fmt.Fprintf(w, "task %s  %s/%s@%s  %s\n", t.TaskUUID, t.Namespace, t.Name, t.Version, strings.ToUpper(t.State))
	fmt.Fprintf(w, "  correlation_id %s  trace_id %s\n", t.CorrelationID, t.TraceID)
	fmt.Fprintf(w, "  created %s", t.CreatedAt.Format(time.RFC3339))
	if t.CompletedAt != nil {
		fmt.Fprintf(w, "  finished %s (%s)", t.CompletedAt.Format(time.RFC3339), t.CompletedAt.Sub(t.CreatedAt).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tSTATE\tATTEMPTS\tDEPENDS ON\tRESULT / ERROR")
	for _, s := range t.Steps {
		detail := string(s.Results)
		if len(s.LastError) > 0 && s.State != "complete" {
			detail = "error: " + errorMessage(s.LastError)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\t%s\n", s.Name, s.State, s.Attempts, s.MaxAttempts, strings.Join(s.DependsOn, ","), oneLine(detail, 70))
	}
	tw.Flush()
	if len(t.Transitions) > 0 {
		fmt.Fprintln(w, "  transitions:")
		for _, tr := range t.Transitions {
			who := "task"
			if tr.StepName != "" {
				who = "step " + tr.StepName
			}
			from := tr.From
			if from == "" {
				from = "(new)"
			}
			fmt.Fprintf(w, "    %s  %-24s %s -> %s\n", tr.CreatedAt.Format("15:04:05.000"), who, from, tr.To)
		}
	}
}

func taskCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Submit, inspect, cancel and retry tasks", PersistentPreRunE: g.checkServer}
	cmd.AddCommand(taskSubmitCmd(g), taskSubmitBatchCmd(g), taskGetCmd(g), taskListCmd(g), taskActionCmd(g, "cancel", "Cancel a task that has not finished"),
		taskActionCmd(g, "retry", "Retry a task in error or blocked_by_failures (failed steps get their attempts back; enqueued steps get their messages sent again)"),
		taskActionCmd(g, "resolve", "Mark a task in error or blocked_by_failures as resolved manually"))
	return cmd
}

func taskSubmitCmd(g *globals) *cobra.Command {
	var req struct {
		Namespace      string          `json:"namespace"`
		Name           string          `json:"name"`
		Version        string          `json:"version,omitempty"`
		Context        json.RawMessage `json:"context,omitempty"`
		Initiator      string          `json:"initiator,omitempty"`
		SourceSystem   string          `json:"source_system,omitempty"`
		Reason         string          `json:"reason,omitempty"`
		Tags           []string        `json:"tags,omitempty"`
		Priority       int             `json:"priority,omitempty"`
		IdempotencyKey string          `json:"idempotency_key,omitempty"`
	}
	var ctxArg string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "submit",
		Short: "Submit a task; with --wait, follow it to its end with a progress display",
		Example: `  orchestrator task submit --namespace ecommerce --name order_fulfillment \
    --context '{"customer_id":"c-1","items":[{"sku":"BOOK-1","quantity":1,"unit_price_cents":1500}]}' --wait
  orchestrator task submit -n ecommerce --name order_fulfillment --context @order.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Namespace == "" || req.Name == "" {
				return &usageError{"task submit: --namespace and --name are required"}
			}
			if timeout <= 0 {
				return &usageError{fmt.Sprintf("task submit: --timeout must be positive, not %s", timeout)}
			}
			if req.Priority < -orchestration.MaxPriority || req.Priority > orchestration.MaxPriority {
				return &usageError{fmt.Sprintf("task submit: --priority must be from %d to %d, not %d", -orchestration.MaxPriority, orchestration.MaxPriority, req.Priority)}
			}
			if ctxArg != "" {
				raw := []byte(ctxArg)
				if strings.HasPrefix(ctxArg, "@") {
					b, err := os.ReadFile(strings.TrimPrefix(ctxArg, "@"))
					if err != nil {
						return fmt.Errorf("--context: %w", err)
					}
					raw = b
				}
				if !json.Valid(raw) {
					return &usageError{"--context is not valid JSON"}
				}
				req.Context = raw
			}
			if req.SourceSystem == "" {
				req.SourceSystem = "cli"
			}
			c := g.client()
			var raw json.RawMessage
			if err := c.do(cmd.Context(), "POST", "/v1/tasks", req, "", &raw); err != nil {
				return err
			}
			if !wait {
				return printAPIDoc(g, raw, printTask)
			}
			var t taskOut
			if err := json.Unmarshal(raw, &t); err != nil {
				return err
			}
			// The task exists from here on, whatever becomes of the wait:
			// its UUID is what the user needs to find it again.
			fmt.Fprintf(g.stderr, "task %s created; waiting for it to end (Ctrl-C stops waiting, not the task)\n", t.TaskUUID)
			waitCtx, stop := g.interrupts(cmd.Context())
			defer stop()
			final, finalRaw, err := follow(waitCtx, c, t.TaskUUID, timeout, g)
			if err != nil {
				if waitCtx.Err() != nil && cmd.Context().Err() == nil {
					follow := "orchestrator task get " + t.TaskUUID
					if f := cmd.Flags().Lookup("server"); f != nil && f.Changed {
						follow = fmt.Sprintf("orchestrator --server %s task get %s", g.server, t.TaskUUID)
					}
					return &interruptedError{fmt.Sprintf("interrupted: task %s keeps running; follow it with: %s", t.TaskUUID, follow)}
				}
				return err
			}
			if err := printAPIDoc(g, finalRaw, printTask); err != nil {
				return err
			}
			if final.State != "complete" {
				return fmt.Errorf("task %s ended %s", final.TaskUUID, final.State)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&req.Namespace, "namespace", "n", "", "template namespace (required)")
	f.StringVar(&req.Name, "name", "", "template name (required)")
	f.StringVar(&req.Version, "version", "", "template version (default: latest registered)")
	f.StringVar(&ctxArg, "context", "", "task context: a JSON object, or @file.json")
	f.StringVar(&req.Initiator, "initiator", os.Getenv("USER"), "who asked for the task")
	f.StringVar(&req.SourceSystem, "source-system", "cli", "system the request comes from")
	f.StringVar(&req.Reason, "reason", "", "why the task runs")
	f.StringSliceVar(&req.Tags, "tag", nil, "tag (repeatable)")
	f.IntVar(&req.Priority, "priority", 0, "priority (-1000..1000)")
	f.StringVar(&req.IdempotencyKey, "idempotency-key", "", "a repeated key returns the existing task instead of a new one")
	f.BoolVar(&wait, "wait", false, "follow the task until it finishes, showing progress")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, give up after this long")
	return cmd
}

// follow polls a task until it finishes, drawing a progress line: on a
// terminal it redraws one line; otherwise (a log, CI) it prints a line when
// the progress changes, and at most every followQuietEvery while it does
// not, so a long wait neither floods the log nor looks hung.
//
// It returns the task as printTask reads it and as the API sent it, which
// --json prints.
func follow(ctx context.Context, c *client, id string, timeout time.Duration, g *globals) (taskOut, json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tty := isTerminal(g.stderr) && !g.jsonOut
	var w progressWriter
	start := time.Now()
	for {
		var t taskOut
		var raw json.RawMessage
		if err := c.do(ctx, "GET", "/v1/tasks/"+id, nil, "", &raw); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return t, nil, fmt.Errorf("timed out after %s waiting for task %s", timeout, id)
			}
			return t, nil, err
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return t, nil, err
		}
		if tty {
			fmt.Fprintf(g.stderr, "\r\033[K%s %s", progressLine(t), time.Since(start).Round(100*time.Millisecond))
		} else if !g.jsonOut {
			w.print(g.stderr, progressLine(t), time.Since(start))
		}
		if terminalTask(t.State) {
			if tty {
				fmt.Fprintln(g.stderr)
			}
			return t, raw, nil
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(g.stderr)
			}
			if ctx.Err() == context.DeadlineExceeded {
				return t, nil, fmt.Errorf("timed out after %s waiting for task %s (still %s)", timeout, id, t.State)
			}
			return t, nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// followQuietEvery is how often follow repeats an unchanged progress line
// when the output is not a terminal.
const followQuietEvery = 30 * time.Second

// progressWriter prints progress lines for a log: each change, and an
// unchanged line again after followQuietEvery.
type progressWriter struct {
	last    string
	printed time.Duration
}

func (p *progressWriter) print(w io.Writer, line string, elapsed time.Duration) {
	if line == p.last && elapsed-p.printed < followQuietEvery {
		return
	}
	fmt.Fprintf(w, "%s %s\n", line, elapsed.Round(100*time.Millisecond))
	p.last, p.printed = line, elapsed
}

// progressLine describes a task's progress (without the elapsed time, so
// that equal lines mean no change).
func progressLine(t taskOut) string {
	total := len(t.Steps)
	done := t.StepCounts["complete"] + t.StepCounts["resolved_manually"]
	const width = 20
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	var parts []string
	keys := make([]string, 0, len(t.StepCounts))
	for k := range t.StepCounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "complete" {
			parts = append(parts, fmt.Sprintf("%s=%d", k, t.StepCounts[k]))
		}
	}
	return fmt.Sprintf("[%s] %d/%d steps complete  task %-24s %s", bar, done, total, t.State, strings.Join(parts, " "))
}

func taskGetCmd(g *globals) *cobra.Command {
	var transitions bool
	cmd := &cobra.Command{
		Use:   "get TASK_UUID",
		Short: "Show a task with its steps (states, attempts, results, errors)",
		Args:  uuidArg("task_uuid"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/tasks/" + url.PathEscape(args[0])
			if transitions {
				path += "?include=transitions"
			}
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", path, nil, "", &raw); err != nil {
				return err
			}
			return printAPIDoc(g, raw, printTask)
		},
	}
	cmd.Flags().BoolVar(&transitions, "transitions", false, "include the transition history")
	return cmd
}

func taskListCmd(g *globals) *cobra.Command {
	var ns, name, state, cursor string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" {
				if _, err := lifecycle.ParseTaskState(state); err != nil {
					return &usageError{fmt.Sprintf("task list: --state %q is not a task state (%s)", state, taskStates())}
				}
			}
			if err := checkLimit(cmd, limit); err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"namespace": ns, "name": name, "state": state, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			q.Set("limit", fmt.Sprint(limit))
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", "/v1/tasks?"+q.Encode(), nil, "", &raw); err != nil {
				return err
			}
			if g.jsonOut {
				return printRawJSON(g.stdout, raw)
			}
			var out struct {
				Tasks      []taskOut `json:"tasks"`
				NextCursor string    `json:"next_cursor"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TASK\tTEMPLATE\tSTATE\tCREATED")
			for _, t := range out.Tasks {
				fmt.Fprintf(tw, "%s\t%s/%s@%s\t%s\t%s\n", t.TaskUUID, t.Namespace, t.Name, t.Version, t.State, t.CreatedAt.Format(time.RFC3339))
			}
			tw.Flush()
			if out.NextCursor != "" {
				fmt.Fprintf(g.stdout, "more: --cursor %s\n", out.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&ns, "namespace", "n", "", "only this namespace")
	f.StringVar(&name, "name", "", "only this template name")
	f.StringVar(&state, "state", "", "only tasks in this state ("+taskStates()+")")
	f.StringVar(&cursor, "cursor", "", "continue after a previous page")
	f.IntVar(&limit, "limit", 20, fmt.Sprintf("tasks per page (1-%d)", maxListLimit))
	return cmd
}

// maxListLimit is the most entries the API's lists return per request.
const maxListLimit = 500

// checkLimit refuses a --limit the API would refuse, as a usage error.
func checkLimit(cmd *cobra.Command, limit int) error {
	if limit < 1 || limit > maxListLimit {
		return &usageError{fmt.Sprintf("%s: --limit must be from 1 to %d, not %d", commandName(cmd), maxListLimit, limit)}
	}
	return nil
}

func taskStates() string {
	names := make([]string, len(lifecycle.TaskStates))
	for i, s := range lifecycle.TaskStates {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func taskActionCmd(g *globals, action, short string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   action + " TASK_UUID",
		Short: short,
		Args:  uuidArg("task_uuid"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "POST", "/v1/tasks/"+url.PathEscape(args[0])+"/"+action,
				map[string]string{"reason": reason}, "", &raw); err != nil {
				return err
			}
			return printAPIDoc(g, raw, printTask)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the transition)")
	return cmd
}

// stepOut is the subset of the API's step the CLI prints.
type stepOut struct {
	StepUUID      string          `json:"step_uuid"`
	TaskUUID      string          `json:"task_uuid"`
	Name          string          `json:"name"`
	Handler       string          `json:"handler"`
	State         string          `json:"state"`
	Attempts      int             `json:"attempts"`
	MaxAttempts   int             `json:"max_attempts"`
	DependsOn     []string        `json:"depends_on"`
	NextAttemptAt *time.Time      `json:"next_attempt_at"`
	Results       json.RawMessage `json:"results"`
	LastError     json.RawMessage `json:"last_error"`
	UpdatedAt     time.Time       `json:"updated_at"`
}

func printStep(w io.Writer, s stepOut) {
	fmt.Fprintf(w, "step %s  %s  %s\n", s.StepUUID, s.Name, strings.ToUpper(s.State))
	fmt.Fprintf(w, "  task %s  handler %s  attempts %d/%d\n", s.TaskUUID, s.Handler, s.Attempts, s.MaxAttempts)
	if len(s.DependsOn) > 0 {
		fmt.Fprintf(w, "  depends on %s\n", strings.Join(s.DependsOn, ", "))
	}
	fmt.Fprintf(w, "  updated %s", s.UpdatedAt.Format(time.RFC3339))
	if s.NextAttemptAt != nil {
		fmt.Fprintf(w, "  next attempt %s", s.NextAttemptAt.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if len(s.Results) > 0 {
		fmt.Fprintf(w, "  result %s\n", s.Results)
	}
	// A step resolved by hand keeps the error it failed with: both are
	// worth seeing.
	if len(s.LastError) > 0 && s.State != "complete" {
		fmt.Fprintf(w, "  last error: %s\n", errorMessage(s.LastError))
	}
}

func stepCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "step", Short: "Operate on steps: manual resolution, retry", PersistentPreRunE: g.checkServer}
	for _, a := range []struct{ name, short string }{
		{"resolve", "Resolve a step manually (optionally with --result JSON its dependents receive)"},
		{"retry", "Retry a failed step with fresh attempts"},
	} {
		var reason, result string
		c := &cobra.Command{
			Use:   a.name + " STEP_UUID",
			Short: a.short,
			Args:  uuidArg("step_uuid"),
			RunE: func(cmd *cobra.Command, args []string) error {
				body := map[string]any{"reason": reason}
				if result != "" {
					if !json.Valid([]byte(result)) {
						return &usageError{"--result is not valid JSON"}
					}
					body["result"] = json.RawMessage(result)
				}
				var raw json.RawMessage
				if err := g.client().do(cmd.Context(), "POST", "/v1/steps/"+url.PathEscape(args[0])+"/"+a.name, body, "", &raw); err != nil {
					return err
				}
				return printAPIDoc(g, raw, printStep)
			},
		}
		c.Flags().StringVar(&reason, "reason", "", "why (recorded in the transition)")
		if a.name == "resolve" {
			c.Flags().StringVar(&result, "result", "", "JSON result to record for the step")
		}
		cmd.AddCommand(c)
	}
	return cmd
}

func templateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "template", Short: "Validate, register and list task templates", PersistentPreRunE: g.checkServer}
	cmd.AddCommand(&cobra.Command{
		Use:         "validate FILE...",
		Short:       "Validate template files locally (no server needed); every problem is listed with its path",
		Annotations: map[string]string{localCommand: "true"},
		Long: `Validate template files locally (no server needed). Every problem is listed
with its path. A valid template is shown with its steps by level: level 1
holds the steps without dependencies, and every other step is one level
after its deepest parent, so no step depends on a step of its own level and
the steps of a level can run at once.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			results := make([]validation, 0, len(args))
			bad := 0
			for _, path := range args {
				v := validateFile(path)
				if !v.Valid {
					bad++
				}
				results = append(results, v)
			}
			if g.jsonOut {
				if err := printJSON(g.stdout, map[string]any{"files": results}); err != nil {
					return err
				}
			} else {
				for _, v := range results {
					printValidation(g.stdout, v)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d templates are invalid", bad, len(args))
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "register FILE",
		Short: "Register a template version with the server",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var raw json.RawMessage
			status, err := g.client().send(cmd.Context(), "POST", "/v1/templates", b, "application/yaml", &raw)
			if err != nil {
				return err
			}
			return printAPIDoc(g, raw, func(w io.Writer, t templateOut) { printRegistered(w, t, status == http.StatusCreated) })
		},
	})
	var ns string
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered templates",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/templates"
			if ns != "" {
				path += "?" + url.Values{"namespace": {ns}}.Encode()
			}
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", path, nil, "", &raw); err != nil {
				return err
			}
			if g.jsonOut {
				return printRawJSON(g.stdout, raw)
			}
			var out struct {
				Templates []templateOut `json:"templates"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tVERSION\tDESCRIPTION")
			for _, t := range out.Templates {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Namespace, t.Name, t.Version, t.Description)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	cmd.AddCommand(list)
	return cmd
}

// validation is what template validate found in one file.
type validation struct {
	File             string     `json:"file"`
	Valid            bool       `json:"valid"`
	Namespace        string     `json:"namespace,omitempty"`
	Name             string     `json:"name,omitempty"`
	Version          string     `json:"version,omitempty"`
	Steps            int        `json:"steps,omitempty"`
	Levels           [][]string `json:"levels,omitempty"`
	TopologicalOrder []string   `json:"topological_order,omitempty"`
	Problems         []problem  `json:"problems,omitempty"`
}

// problem is one thing wrong with a template file, as the API's
// invalid_template error lists them; Path is empty when the problem is the
// whole file (unreadable, not YAML).
type problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func validateFile(path string) validation {
	v := validation{File: path}
	b, err := os.ReadFile(path)
	if err == nil {
		var t *template.Template
		if t, err = template.Parse(b); err == nil {
			v.Valid = true
			v.Namespace, v.Name, v.Version, v.Steps = t.Namespace, t.Name, t.Version, len(t.Steps)
			v.Levels, v.TopologicalOrder = t.Levels(), t.TopologicalOrder()
			return v
		}
	}
	var ve *template.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			v.Problems = append(v.Problems, problem{Path: p.Path, Message: p.Message})
		}
	} else {
		v.Problems = []problem{{Message: err.Error()}}
	}
	return v
}

func printValidation(w io.Writer, v validation) {
	if !v.Valid {
		fmt.Fprintf(w, "%s: invalid\n", v.File)
		for _, p := range v.Problems {
			msg := p.Message
			if p.Path != "" {
				msg = p.Path + ": " + msg
			}
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
		}
		return
	}
	fmt.Fprintf(w, "%s: ok (%s/%s@%s, %d steps in %d levels)\n", v.File, v.Namespace, v.Name, v.Version, v.Steps, len(v.Levels))
	fmt.Fprintf(w, "  levels: %s\n", levelsLine(v.Levels))
}

// levelsLine lists a DAG's levels, "1: a; 2: b, c; 3: d". A chain
// "a -> b -> c -> d" would read as if b and c ran one after the other.
func levelsLine(levels [][]string) string {
	parts := make([]string, len(levels))
	for i, names := range levels {
		parts[i] = fmt.Sprintf("%d: %s", i+1, strings.Join(names, ", "))
	}
	return strings.Join(parts, "; ")
}

// templateOut is the subset of the API's template the CLI prints.
type templateOut struct {
	Namespace    string     `json:"namespace"`
	Name         string     `json:"name"`
	Version      string     `json:"version"`
	Description  string     `json:"description"`
	ContentHash  string     `json:"content_hash"`
	RegisteredAt *time.Time `json:"registered_at"`
	Definition   struct {
		Steps []struct {
			Name string `json:"name"`
		} `json:"steps"`
	} `json:"definition"`
}

func printRegistered(w io.Writer, t templateOut, created bool) {
	what := "registered"
	if !created {
		what = "already registered with the same content (unchanged)"
	}
	fmt.Fprintf(w, "template %s/%s@%s  %s\n", t.Namespace, t.Name, t.Version, what)
	fmt.Fprintf(w, "  %d steps  content_hash %s", len(t.Definition.Steps), t.ContentHash)
	if t.RegisteredAt != nil {
		fmt.Fprintf(w, "  registered %s", t.RegisteredAt.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if t.Description != "" {
		fmt.Fprintf(w, "  %s\n", t.Description)
	}
}
