package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/daemon"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// decodeIndented decodes --json output into v and reports whether it is
// one JSON object printed indented, as every command prints its JSON.
func decodeIndented(out string, v any) bool {
	return json.Unmarshal([]byte(out), v) == nil && strings.HasPrefix(out, "{\n  \"")
}

// apiGet is the JSON document the API answers a GET with.
func apiGet(t *testing.T, url string) any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return v
}

// startDaemon starts the daemon on dbURL with the repository's templates
// and an ephemeral port, configured further by adjust; it stops with the
// test.
func startDaemon(t *testing.T, dbURL string, adjust func(*config.Config)) *daemon.Daemon {
	t.Helper()
	cfg := config.Default()
	cfg.Database.URL = dbURL
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Orchestrator.TemplatesDir = filepath.Join("..", "..", "config", "templates")
	if adjust != nil {
		adjust(&cfg)
	}
	d, err := daemon.Start(context.Background(), cfg, enginetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d
}

// TestOperatorCommandsAgainstARealDaemon drives the CLI as an operator
// would: submit with --wait, get, list, a failing task, the DLQ.
func TestOperatorCommandsAgainstARealDaemon(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	d := startDaemon(t, dbURL, func(cfg *config.Config) {
		cfg.Orchestrator.PollInterval = config.Duration{Duration: 200 * time.Millisecond}
	})
	h := enginetest.New(t, enginetest.Options{DatabaseURL: dbURL, NoOrchestrator: true})
	h.Worker(worker.Config{Namespaces: []string{demo.Namespace}}, demo.Handlers(0))
	server := "--server=http://" + d.Addr()

	out, errOut, code := run(t, server, "--json", "task", "submit", "-n", "ecommerce", "--name", "order_fulfillment",
		"--context", demo.SampleContext(2), "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	var task struct {
		TaskUUID string `json:"task_uuid"`
		State    string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil || task.State != "complete" {
		t.Fatalf("submit --wait printed %q (%v)", out, err)
	}

	out, _, code = run(t, server, "task", "get", task.TaskUUID, "--transitions")
	if code != 0 || !strings.Contains(out, "COMPLETE") || !strings.Contains(out, "send_confirmation") || !strings.Contains(out, "transitions:") {
		t.Errorf("task get: exit %d\n%s", code, out)
	}
	var got struct {
		Transitions []json.RawMessage `json:"transitions"`
	}
	if out, _, code = run(t, server, "--json", "task", "get", task.TaskUUID, "--transitions"); code != 0 || !decodeIndented(out, &got) || len(got.Transitions) == 0 {
		t.Errorf("task get --json: exit %d, not the indented task with its transitions:\n%s", code, out)
	}
	out, _, code = run(t, server, "task", "list", "--state", "complete")
	if code != 0 || !strings.Contains(out, task.TaskUUID) {
		t.Errorf("task list: exit %d\n%s", code, out)
	}

	// A failing order: --wait exits non-zero and says how it ended.
	out, errOut, code = run(t, server, "task", "submit", "-n", "ecommerce", "--name", "order_fulfillment", "--wait",
		"--context", `{"customer_id":"blocked-3","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`)
	if code == 0 || !strings.Contains(errOut, "ended error") || !strings.Contains(out, "card declined") {
		t.Errorf("failing submit: exit %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = run(t, server, "dlq", "list")
	if code != 0 || !strings.Contains(out, "step_failed") {
		t.Errorf("dlq list: exit %d\n%s", code, out)
	}
	// Every filter of the list commands is a query parameter the API takes
	// (it refuses any other), and a page's cursor leads to the next page.
	out, errOut, code = run(t, server, "dlq", "list", "--status", "pending", "-n", "ecommerce", "--limit", "5")
	if code != 0 || !strings.Contains(out, "step_failed") {
		t.Errorf("dlq list with every filter: exit %d\n%s%s", code, out, errOut)
	}
	var page struct {
		Tasks []struct {
			TaskUUID string `json:"task_uuid"`
		} `json:"tasks"`
		NextCursor string `json:"next_cursor"`
	}
	out, errOut, code = run(t, server, "--json", "task", "list", "-n", "ecommerce", "--name", "order_fulfillment", "--limit", "1")
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Tasks) != 1 || page.NextCursor == "" {
		t.Fatalf("task list with every filter: exit %d\n%s%s", code, out, errOut)
	}
	first := page.Tasks[0].TaskUUID
	out, errOut, code = run(t, server, "--json", "task", "list", "--state", "complete", "--cursor", page.NextCursor, "--limit", "1")
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Tasks) != 1 || page.Tasks[0].TaskUUID == first {
		t.Errorf("task list --cursor: exit %d, not the next page\n%s%s", code, out, errOut)
	}
	// dlq update sends only the flags given: a status change keeps the
	// notes and author of the update before it; --notes "" clears.
	out, _, _ = run(t, server, "--json", "dlq", "list")
	var dl struct {
		Entries []struct {
			ID int64 `json:"dlq_id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &dl); err != nil || len(dl.Entries) != 1 {
		t.Fatalf("dlq list --json printed %q (%v)", out, err)
	}
	dlqID := fmt.Sprint(dl.Entries[0].ID)
	for _, c := range []struct {
		args      []string
		notes, by string
	}{
		{[]string{"--status", "investigating", "--notes", "looking at gateway logs", "--by", "alice"}, "looking at gateway logs", "alice"},
		{[]string{"--status", "resolved"}, "looking at gateway logs", "alice"},
		{[]string{"--status", "resolved", "--notes", ""}, "", "alice"},
	} {
		out, errOut, code := run(t, append([]string{server, "--json", "dlq", "update", dlqID}, c.args...)...)
		var got struct {
			Notes string `json:"resolution_notes"`
			By    string `json:"resolved_by"`
		}
		if !decodeIndented(out, &got) || code != 0 || got.Notes != c.notes || got.By != c.by {
			t.Errorf("dlq update %v: exit %d, notes %q by %q, want %q %q\n%s%s", c.args, code, got.Notes, got.By, c.notes, c.by, out, errOut)
		}
	}

	// Without --json, dlq update and get print the entry for a reader;
	// get adds the snapshot's steps; --json prints all of it.
	out, _, code = run(t, server, "dlq", "update", dlqID, "--status", "investigating", "--notes", "card issuer asked")
	if code != 0 || !strings.HasPrefix(out, "dlq "+dlqID+"  task ") || !strings.Contains(out, "INVESTIGATING") ||
		!strings.Contains(out, `by "alice"  notes: card issuer asked`) {
		t.Errorf("dlq update: exit %d\n%s", code, out)
	}
	out, _, code = run(t, server, "dlq", "get", dlqID)
	if code != 0 || !strings.Contains(out, "step_failed") || !strings.Contains(out, "snapshot: task error") ||
		!regexp.MustCompile(`(?m)^  process_payment +error +1/\d+ +card declined`).MatchString(out) {
		t.Errorf("dlq get: exit %d\n%s", code, out)
	}
	var entry struct {
		Snapshot struct {
			Steps []json.RawMessage `json:"steps"`
		} `json:"snapshot"`
	}
	if out, _, code = run(t, server, "--json", "dlq", "get", dlqID); code != 0 || !decodeIndented(out, &entry) || len(entry.Snapshot.Steps) != 5 {
		t.Errorf("dlq get --json: exit %d\n%s", code, out)
	}

	// step retry and resolve print the step for a reader, or indented JSON.
	out, _, _ = run(t, server, "--json", "task", "list", "--state", "error")
	var failed struct {
		Tasks []struct {
			TaskUUID string `json:"task_uuid"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(out), &failed); err != nil || len(failed.Tasks) != 1 {
		t.Fatalf("task list --state error printed %q (%v)", out, err)
	}
	out, _, _ = run(t, server, "--json", "task", "get", failed.Tasks[0].TaskUUID)
	var failedTask struct {
		Steps []struct {
			StepUUID string `json:"step_uuid"`
			Name     string `json:"name"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &failedTask); err != nil {
		t.Fatalf("task get printed %q (%v)", out, err)
	}
	var payment string
	for _, s := range failedTask.Steps {
		if s.Name == "process_payment" {
			payment = s.StepUUID
		}
	}
	out, errOut, code = run(t, server, "step", "retry", payment, "--reason", "card unblocked")
	if code != 0 || !strings.HasPrefix(out, "step "+payment+"  process_payment  ") || !strings.Contains(out, "  task "+failed.Tasks[0].TaskUUID+"  handler ") {
		t.Errorf("step retry: exit %d\n%s%s", code, out, errOut)
	}
	var step struct {
		State   string          `json:"state"`
		Results json.RawMessage `json:"results"`
	}
	out, errOut, code = run(t, server, "--json", "step", "resolve", payment, "--result", `{"charge_id":"by-phone"}`)
	if code != 0 || !decodeIndented(out, &step) || step.State != "resolved_manually" || !strings.Contains(string(step.Results), "by-phone") {
		t.Errorf("step resolve --json: exit %d\n%s%s", code, out, errOut)
	}

	// template register says whether it registered the version or had it
	// already; --json prints the template.
	tpl := filepath.Join(t.TempDir(), "audit.yaml")
	doc := "namespace: cli_audit\nname: audit\nversion: '1'\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n"
	if err := os.WriteFile(tpl, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = run(t, server, "template", "register", tpl)
	if code != 0 || !strings.HasPrefix(out, "template cli_audit/audit@1  registered\n  2 steps  content_hash ") {
		t.Errorf("template register: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run(t, server, "template", "register", tpl)
	if code != 0 || !strings.HasPrefix(out, "template cli_audit/audit@1  already registered") {
		t.Errorf("template register again: exit %d\n%s%s", code, out, errOut)
	}
	var registered struct {
		Namespace  string          `json:"namespace"`
		Definition json.RawMessage `json:"definition"`
	}
	if out, _, code = run(t, server, "--json", "template", "register", tpl); code != 0 || !decodeIndented(out, &registered) ||
		registered.Namespace != "cli_audit" || len(registered.Definition) == 0 {
		t.Errorf("template register --json: exit %d\n%s", code, out)
	}

	// An invalid template: each problem once, "path: message", and a
	// problem of the whole file without an empty path before it.
	badTpl := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badTpl, []byte("namespace: cli_audit\nname: bad\nversion: '1'\nsteps:\n  - {name: a, handler: h, depends_on: [nope]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = run(t, server, "template", "register", badTpl)
	if code != 1 || strings.Count(errOut, "nope") != 1 || !strings.Contains(errOut, "(HTTP 400 invalid_template)\n  steps[0] (a).depends_on[0]: unknown step \"nope\"\n") {
		t.Errorf("template register of an invalid template: exit %d, want each problem once:\n%s", code, errOut)
	}
	if err := os.WriteFile(badTpl, []byte("{not yaml: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = run(t, server, "template", "register", badTpl)
	if code != 1 || !strings.Contains(errOut, "(HTTP 400 invalid_template)\n  ") || strings.Contains(errOut, "  : ") || strings.Count(errOut, "line 1") != 1 {
		t.Errorf("template register of a file that is not YAML: exit %d, want the problem once without an empty path:\n%s", code, errOut)
	}

	// template list lists every namespace's templates, or one's with -n.
	out, _, code = run(t, server, "template", "list")
	if code != 0 || !strings.Contains(out, "cli_audit  ") || !strings.Contains(out, "order_fulfillment") {
		t.Errorf("template list: exit %d\n%s", code, out)
	}
	out, errOut, code = run(t, server, "template", "list", "--namespace", "cli_audit")
	if code != 0 || !strings.Contains(out, "cli_audit  ") || strings.Contains(out, "order_fulfillment") {
		t.Errorf("template list --namespace cli_audit: exit %d\n%s%s", code, out, errOut)
	}
	var templates struct {
		Templates []struct {
			Namespace string `json:"namespace"`
		} `json:"templates"`
	}
	out, errOut, code = run(t, server, "--json", "template", "list", "-n", "ecommerce")
	if code != 0 || !decodeIndented(out, &templates) || len(templates.Templates) != 1 || templates.Templates[0].Namespace != "ecommerce" {
		t.Errorf("template list -n ecommerce: exit %d\n%s%s", code, out, errOut)
	}

	// --json prints the API's own document, whatever the command: the keys
	// are the API's (snake_case, none dropped, none added).
	base := "http://" + d.Addr()
	for _, c := range []struct {
		api  string
		args []string
	}{
		{"/v1/templates", []string{"template", "list"}},
		{"/v1/templates?namespace=cli_audit", []string{"template", "list", "-n", "cli_audit"}},
		{"/v1/tasks?limit=20&state=complete", []string{"task", "list", "--state", "complete"}},
		{"/v1/dlq?limit=50", []string{"dlq", "list"}},
	} {
		out, errOut, code := run(t, append([]string{server, "--json"}, c.args...)...)
		var got any
		if code != 0 || !decodeIndented(out, &got) || !reflect.DeepEqual(got, apiGet(t, base+c.api)) {
			t.Errorf("%v --json: exit %d, not GET %s as the API sent it:\n%s%s", c.args, code, c.api, out, errOut)
		}
	}
	// submit, get and cancel print one task with the same keys.
	out, errOut, code = run(t, server, "--json", "task", "submit", "-n", "cli_audit", "--name", "audit", "--tag", "probe")
	var submitted map[string]any
	if code != 0 || !decodeIndented(out, &submitted) || submitted["tags"] == nil {
		t.Fatalf("task submit --json: exit %d\n%s%s", code, out, errOut)
	}
	id, _ := submitted["task_uuid"].(string)
	for _, args := range [][]string{{"task", "get", id}, {"task", "cancel", id}} {
		out, errOut, code := run(t, append([]string{server, "--json"}, args...)...)
		var doc map[string]any
		if code != 0 || !decodeIndented(out, &doc) || !slices.Equal(slices.Sorted(maps.Keys(doc)), slices.Sorted(maps.Keys(submitted))) {
			t.Errorf("%v --json: exit %d, keys differ from task submit --json's %v:\n%s%s", args, code, slices.Sorted(maps.Keys(submitted)), out, errOut)
		}
	}

	// A --wait that runs out of time says so, naming the task; the server
	// was reached.
	out, errOut, code = run(t, server, "task", "submit", "-n", "cli_audit", "--name", "audit", "--wait", "--timeout", "1ms")
	if code != 1 || !regexp.MustCompile(`timed out after 1ms waiting for task [0-9a-f-]{36}`).MatchString(errOut) || strings.Contains(errOut, "cannot reach") {
		t.Errorf("task submit --wait --timeout 1ms: exit %d\n%s%s", code, out, errOut)
	}

	// Bad input: a clear error and a non-zero exit.
	_, errOut, code = run(t, server, "task", "submit", "-n", "ecommerce", "--name", "order_fulfillment", "--context", `{"items":[]}`)
	if code == 0 || !strings.Contains(errOut, "customer_id") {
		t.Errorf("invalid context: exit %d: %s", code, errOut)
	}
	// What the server refuses exits 1, not 2 as a usage error does.
	_, errOut, code = run(t, server, "task", "get", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368")
	if code != 1 || !strings.Contains(errOut, "(HTTP 404 ") {
		t.Errorf("unknown task: exit %d: %s", code, errOut)
	}
	_, errOut, code = run(t, server, "step", "retry", payment)
	if code != 1 || !strings.Contains(errOut, "(HTTP 409 wrong_state)") {
		t.Errorf("retry of a resolved step: exit %d: %s", code, errOut)
	}
	_, errOut, code = run(t, "--server=http://127.0.0.1:1", "task", "list")
	if code != 1 || !strings.Contains(errOut, "cannot reach the orchestrator") {
		t.Errorf("unreachable server: exit %d: %s", code, errOut)
	}
}

// `orchestrator migrate` on an empty database says what it applied, one
// line per migration, and logs nothing else; a second run has nothing to
// apply; --json prints the same as data; status lists them all as applied.
// Not parallel: the command reads DATABASE_URL.
func TestMigrateCommandReportsWhatItApplied(t *testing.T) {
	t.Setenv("DATABASE_URL", testdb.EmptyURL(t))
	out, errOut, code := run(t, "migrate")
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 24 || !strings.HasPrefix(lines[0], "applied     1  pgmq (") ||
		!strings.Contains(out, "00023_payload_statistics.sql") ||
		lines[len(lines)-1] != fmt.Sprintf("migrations: up to date (%d applied)", len(lines)-1) {
		t.Errorf("migrate on an empty database printed:\n%s", out)
	}
	if errOut != "" {
		t.Errorf("migrate logged on stderr:\n%s", errOut)
	}
	if out, _, code := run(t, "migrate"); code != 0 || out != "migrations: up to date (nothing to apply)\n" {
		t.Errorf("second migrate: exit %d, printed %q", code, out)
	}
	if out, _, code := run(t, "--json", "migrate"); code != 0 || strings.Join(strings.Fields(out), "") != `{"applied":[]}` {
		t.Errorf("migrate --json: exit %d, printed %q", code, out)
	}
	out, _, code = run(t, "migrate", "status")
	if code != 0 || strings.Count(out, " applied 20") != len(lines)-1 || strings.Contains(out, "pending") {
		t.Errorf("migrate status: exit %d\n%s", code, out)
	}
}

func TestTemplateValidateCommand(t *testing.T) {
	t.Parallel()
	good := filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml")
	// The steps by level: payment and inventory run at once, which a
	// chain "a -> b -> c" hid.
	out, _, code := run(t, "template", "validate", good)
	want := good + ": ok (ecommerce/order_fulfillment@1.0.0, 5 steps in 4 levels)\n" +
		"  levels: 1: validate_cart; 2: process_payment, update_inventory; 3: create_order; 4: send_confirmation\n"
	if code != 0 || out != want {
		t.Errorf("valid template: exit %d\n%s\nwant\n%s", code, out, want)
	}
	bad := filepath.Join(t.TempDir(), "cyclic.yaml")
	doc := "namespace: x\nname: y\nversion: '1'\nsteps:\n  - {name: a, handler: h, depends_on: [b]}\n  - {name: b, handler: h, depends_on: [a]}\n"
	if err := os.WriteFile(bad, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "template", "validate", good, bad)
	if code == 0 || !strings.Contains(out, "cycle") || !strings.Contains(errOut, "1 of 2 templates are invalid") {
		t.Errorf("cyclic template: exit %d\n%s\n%s", code, out, errOut)
	}
	// --json reports each file as data, with the same outcome.
	var got struct {
		Files []struct {
			File     string     `json:"file"`
			Valid    bool       `json:"valid"`
			Steps    int        `json:"steps"`
			Levels   [][]string `json:"levels"`
			Order    []string   `json:"topological_order"`
			Problems []struct {
				Path    string `json:"path"`
				Message string `json:"message"`
			} `json:"problems"`
		} `json:"files"`
	}
	out, errOut, code = run(t, "--json", "template", "validate", good, bad)
	if code != 1 || !decodeIndented(out, &got) || len(got.Files) != 2 || !strings.Contains(errOut, "1 of 2 templates are invalid") {
		t.Fatalf("validate --json: exit %d\n%s\n%s", code, out, errOut)
	}
	levels := [][]string{{"validate_cart"}, {"process_payment", "update_inventory"}, {"create_order"}, {"send_confirmation"}}
	if f := got.Files[0]; f.File != good || !f.Valid || f.Steps != 5 || !slices.EqualFunc(f.Levels, levels, slices.Equal) || len(f.Order) != 5 || len(f.Problems) != 0 {
		t.Errorf("validate --json, valid file: %+v", f)
	}
	if f := got.Files[1]; f.File != bad || f.Valid || len(f.Problems) == 0 ||
		f.Problems[0].Path != "steps[0] (a).depends_on" || !strings.HasPrefix(f.Problems[0].Message, "cycle: a -> b -> a") {
		t.Errorf("validate --json, cyclic file: %+v", f)
	}
}

func TestConfigPrintMasksSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte("[[auth.keys]]\nname = \"ci\"\nkey = \"super-secret-key-123456\"\npermissions = [\"read\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", "postgres://app:hunter2@db:5432/tasker")
	out, errOut, code := run(t, "--config", path, "config", "print")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, secret := range []string{"hunter2", "super-secret-key-123456"} {
		if strings.Contains(out, secret) {
			t.Errorf("config print shows the secret %q", secret)
		}
	}
	if !strings.Contains(out, "listen = ") || !strings.Contains(out, `name = "ci"`) {
		t.Errorf("config print lacks the configuration:\n%s", out)
	}
}

// TestEveryCommandHasHelp: every subcommand answers --help with a usage.
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	root := newRoot(&globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	var paths [][]string
	for _, c := range root.Commands() {
		paths = append(paths, []string{c.Name()})
		for _, sub := range c.Commands() {
			paths = append(paths, []string{c.Name(), sub.Name()})
		}
	}
	for _, p := range paths {
		out, _, code := run(t, append(p, "--help")...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v --help: exit %d\n%s", p, code, out)
		}
	}
}

// help COMMAND shows the command's help; task list --state lists the
// states it takes, as dlq list --status does.
func TestHelpCommand(t *testing.T) {
	t.Parallel()
	out, errOut, code := run(t, "help", "task", "list")
	if code != 0 || !strings.HasPrefix(out, "List tasks, newest first\n") || !strings.Contains(out, "only tasks in this state ("+taskStates()+")") {
		t.Errorf("help task list: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code := run(t, "help"); code != 0 || !strings.Contains(out, "Available Commands:") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
}

// TestUsageErrorsExitTwo: whatever is wrong with a command line (arguments,
// flags, subcommand) exits 2 with a message saying what, before any
// server or database is asked.
func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	unreachable := "--server=http://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"task", "get"}, "task get takes 1 argument and got 0\nusage: orchestrator task get TASK_UUID [flags]"},
		{[]string{"task", "get", "a", "b"}, "task get takes 1 argument and got 2 (a b)"},
		{[]string{"task", "list", "extra-arg"}, "task list takes no arguments and got 1 (extra-arg)"},
		{[]string{"template", "validate"}, "template validate takes at least 1 argument and got 0"},
		{[]string{"migrate", "up", "now"}, "migrate takes at most 1 argument and got 2 (up now)"},
		{[]string{"migrate", "down"}, "migrate: unknown action down"},
		{[]string{"no-such-command"}, `unknown command "no-such-command" for "orchestrator"`},
		{[]string{"task", "gt", "x"}, `unknown command "gt" for "orchestrator task"; did you mean get?`},
		{[]string{"task", "list", "--bogus"}, "task list: unknown flag: --bogus"},
		{[]string{"help", "nosuch"}, `unknown command "nosuch" for "orchestrator"`},
		{[]string{"help", "task", "nosuch"}, `unknown command "nosuch" for "orchestrator task"`},
		{[]string{"help", "task", "get", "x"}, `help: "task get" has no subcommands (got x)`},
		{[]string{"task", "list", "--limit", "many"}, `task list: invalid argument "many" for "--limit" flag`},
		{[]string{"task", "list", "--limit", "0"}, "task list: --limit must be from 1 to 500, not 0"},
		{[]string{"task", "list", "--state", "done"}, `task list: --state "done" is not a task state`},
		{[]string{"task", "submit", "-n", "ecommerce"}, "task submit: --namespace and --name are required"},
		{[]string{"task", "submit", "-n", "ecommerce", "--name", "x", "--priority", "1001"}, "--priority must be from -1000 to 1000"},
		{[]string{"task", "submit", "-n", "ecommerce", "--name", "x", "--context", "{"}, "--context is not valid JSON"},
		{[]string{"task", "submit", "-n", "ecommerce", "--name", "x", "--wait", "--timeout", "0"}, "task submit: --timeout must be positive, not 0s"},
		{[]string{"task", "submit", "-n", "ecommerce", "--name", "x", "--wait", "--timeout=-1s"}, "task submit: --timeout must be positive, not -1s"},
		{[]string{"step", "resolve", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368", "--result", "{"}, "--result is not valid JSON"},
		{[]string{"task", "get", "not-a-uuid"}, "task get: task_uuid \"not-a-uuid\" is not a UUID\nusage: orchestrator task get TASK_UUID"},
		{[]string{"task", "cancel", "x"}, `task cancel: task_uuid "x" is not a UUID`},
		{[]string{"task", "retry", "x"}, `task retry: task_uuid "x" is not a UUID`},
		{[]string{"task", "resolve", "x"}, `task resolve: task_uuid "x" is not a UUID`},
		{[]string{"step", "resolve", "x"}, `step resolve: step_uuid "x" is not a UUID`},
		{[]string{"step", "retry", "x"}, `step retry: step_uuid "x" is not a UUID`},
		{[]string{"dlq", "get", "x"}, `dlq get: dlq_id "x" is not a positive integer`},
		{[]string{"dlq", "get", "0"}, `dlq get: dlq_id "0" is not a positive integer`},
		{[]string{"dlq", "update", "--status", "resolved", "--", "-3"}, `dlq update: dlq_id "-3" is not a positive integer`},
		{[]string{"step", "retry", "s", "--result", "{}"}, "step retry: unknown flag: --result"},
		{[]string{"dlq", "update", "1"}, "dlq update: --status is required"},
		{[]string{"dlq", "update", "1", "--status", "done"}, `dlq update: --status "done" is not one of pending, investigating, resolved, ignored`},
		{[]string{"dlq", "list", "--status", "done"}, `dlq list: --status "done" is not one of`},
		{[]string{"dlq", "list", "--limit", "501"}, "dlq list: --limit must be from 1 to 500, not 501"},
		{[]string{"events", "tail"}, "events tail: --namespace is required"},
	} {
		_, errOut, code := run(t, append([]string{unreachable}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", c.args, code, c.want, errOut)
		}
	}

	// A --server that is not an http(s) URL with a host, before anything
	// is sent; template validate needs no server.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--server", "localhost:8080", "task", "list"}, `task list: --server "localhost:8080" is not an http or https URL with a host; did you mean http://localhost:8080?`},
		{[]string{"--server", "http://[bad", "dlq", "list"}, `dlq list: --server "http://[bad" is not an http or https URL with a host (such as http://127.0.0.1:8080)`},
		{[]string{"--server", "ftp://host", "step", "retry", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368"}, `step retry: --server "ftp://host" is not an http or https URL`},
		{[]string{"--server", "http://", "template", "list"}, `template list: --server "http://" is not an http or https URL with a host`},
	} {
		_, errOut, code := run(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", c.args, code, c.want, errOut)
		}
	}
	if _, errOut, code := run(t, "--server", "localhost:8080", "template", "validate", filepath.Join("..", "..", "config", "templates", "order_fulfillment.yaml")); code != 0 {
		t.Errorf("template validate with a bad --server: exit %d\n%s", code, errOut)
	}

	// Every command: too many arguments, and a flag it does not have.
	root := newRoot(&globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	many := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		path := strings.Fields(commandName(c))
		if c == root {
			path = nil
		}
		if c.Args == nil || c.Args(c, many) != nil {
			_, errOut, code := run(t, append(append([]string{unreachable}, path...), many...)...)
			want := commandName(c) + " takes "
			if c.HasAvailableSubCommands() {
				want = `unknown command "a" for "` + c.CommandPath() + `"`
			}
			if code != 2 || !strings.Contains(errOut, want) {
				t.Errorf("%v with 9 arguments: exit %d, want 2 and %q:\n%s", path, code, want, errOut)
			}
		}
		_, errOut, code := run(t, append(append([]string{unreachable}, path...), "--no-such-flag")...)
		if code != 2 || !strings.Contains(errOut, "unknown flag: --no-such-flag") {
			t.Errorf("%v --no-such-flag: exit %d:\n%s", path, code, errOut)
		}
	}
	walk(root)
}

// A bad TASKER_SERVER is named as such. Not parallel: it sets the
// environment.
func TestBadServerFromEnvironment(t *testing.T) {
	t.Setenv("TASKER_SERVER", "localhost:8080")
	_, errOut, code := run(t, "task", "get", "01a21a1a-6905-7d33-8b68-ec8ffcfb9368")
	want := `task get: TASKER_SERVER "localhost:8080" is not an http or https URL with a host; did you mean http://localhost:8080?`
	if code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, want 2 and %q:\n%s", code, want, errOut)
	}
}

// An error the command logged already (serve's incomplete shutdown or
// failed HTTP server) exits 1 without a plain-text copy on stderr; every
// other error is printed once, with its exit status.
func TestExitStatusPrintsWhatWasNotLogged(t *testing.T) {
	cases := []struct {
		err    error
		status int
		out    string
	}{
		{nil, 0, ""},
		{errors.New("boom"), 1, "error: boom\n"},
		{&usageError{"bad flag"}, 2, "error: bad flag\n"},
		{&interruptedError{"interrupted; the task goes on"}, exitInterrupted, "interrupted; the task goes on\n"},
		{&loggedError{fmt.Errorf("%w: loops did not finish", daemon.ErrShutdownIncomplete)}, 1, ""},
		{&loggedError{daemon.ErrServeFailed}, 1, ""},
	}
	for _, c := range cases {
		var w bytes.Buffer
		if got := exitStatus(&w, c.err); got != c.status || w.String() != c.out {
			t.Errorf("exitStatus(%v) = %d, printed %q; want %d, %q", c.err, got, w.String(), c.status, c.out)
		}
	}
}
