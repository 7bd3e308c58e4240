package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/testdb"
)

// task submit-batch sends a JSON Lines file in batches and answers each
// line by its number: created, replayed, refused by the server, or not a
// request at all; the exit status says that some failed.
func TestTaskSubmitBatchFromAFile(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testdb.URL(t), func(cfg *config.Config) { cfg.Server.MaxBodyBytes = 64 << 10 })

	sample := demo.SampleContext(1)
	lines := []string{
		`{"namespace":"ecommerce","name":"order_fulfillment","context":` + sample + `}`, // 1 created
		``,                           // 2 blank
		`{"context":` + sample + `}`, // 3 created, template from the flags
		`not json`,                   // 4 refused here
		`{"context":{"customer_id":"c-1","items":[]}}`,                                 // 5 refused by the server: items must not be empty
		`{"context":` + sample + `,"idempotency_key":"once"}`,                          // 6 created
		`{"context":` + sample + `,"idempotency_key":"once"}`,                          // 7 replay of 6
		`{"context":{"customer_id":"` + strings.Repeat("c", 70<<10) + `","items":[]}}`, // 8 too large for the server by itself
	}
	file := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "--server=http://"+d.Addr(), "--json", "task", "submit-batch", "-n", "ecommerce", "--name", "order_fulfillment",
		"--batch-size", "2", "--max-batch-bytes", "32768", file)
	if code != 1 || !strings.Contains(errOut, "3 of 7 task requests failed") {
		t.Errorf("exit %d, want 1 and the count of failures:\n%s", code, errOut)
	}
	for _, want := range []string{"line 4: not a JSON object", "line 5: context", "submitted 2 task requests", "submitted 5 task requests", "line 8: ", "server.max_body_bytes"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	var sum batchSummary
	if !decodeIndented(out, &sum) {
		t.Fatalf("--json output: %q", out)
	}
	if sum.Created != 3 || sum.Replayed != 1 || sum.Failed != 3 || len(sum.Results) != 7 {
		t.Fatalf("summary %+v, want 3 created, 1 replayed, 3 failed of 7", sum)
	}
	want := []struct {
		line, status int
		field        string
	}{{1, 201, ""}, {3, 201, ""}, {4, 400, ""}, {5, 400, "context"}, {6, 201, ""}, {7, 200, ""}, {8, 413, ""}}
	for i, w := range want {
		o := sum.Results[i]
		if o.Line != w.line || o.Status != w.status || (w.status < 300) != (o.TaskUUID != "" && o.Error == nil) ||
			(w.field != "" && (o.Error == nil || o.Error.Field != w.field || strings.Contains(o.Error.Message, "tasks["))) {
			t.Errorf("result %d: %+v (error %+v), want line %d status %d field %q", i, o, o.Error, w.line, w.status, w.field)
		}
	}
	if sum.Results[5].TaskUUID != sum.Results[4].TaskUUID || !sum.Results[5].IdempotentReplay {
		t.Errorf("line 7 repeats line 6's key: %+v, want a replay of %s", sum.Results[5], sum.Results[4].TaskUUID)
	}
	// The tasks exist, each with the template the flags named.
	for _, o := range sum.Results {
		if o.TaskUUID == "" {
			continue
		}
		got, _, code := run(t, "--server=http://"+d.Addr(), "--json", "task", "get", o.TaskUUID)
		var raw map[string]any
		if code != 0 || json.Unmarshal([]byte(got), &raw) != nil || raw["name"] != "order_fulfillment" || raw["source_system"] != "cli" {
			t.Errorf("task of line %d: exit %d %s", o.Line, code, got)
		}
	}
}

// A batch that cannot be sent stops the command, saying which lines were
// submitted and which were not.
func TestTaskSubmitBatchStopsWhenTheServerIsGone(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(file, []byte(`{"namespace":"a","name":"b"}`+"\n"+`{"namespace":"a","name":"b"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(t, "--server=http://127.0.0.1:1", "task", "submit-batch", "--batch-size", "5", file)
	if code != 1 || !strings.Contains(errOut, "lines 1–2 could not be submitted") || !strings.Contains(errOut, "no line from 1 on was sent") ||
		!strings.Contains(errOut, "cannot reach") {
		t.Errorf("exit %d, want 1 naming the lines not submitted:\n%s", code, errOut)
	}
	_, errOut, code = run(t, "task", "submit-batch", "--batch-size", "0", file)
	if code != 2 || !strings.Contains(errOut, "--batch-size must be from 1 to 1000") {
		t.Errorf("--batch-size 0: exit %d\n%s", code, errOut)
	}
}
