package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/api"
)

// batchLine is one task request of a submit-batch file, or the reason it
// could not be sent.
type batchLine struct {
	line int
	req  json.RawMessage
}

// batchOutcome is one line's result, as --json prints it.
type batchOutcome struct {
	Line             int             `json:"line"`
	Status           int             `json:"status"`
	TaskUUID         string          `json:"task_uuid,omitempty"`
	IdempotentReplay bool            `json:"idempotent_replay,omitempty"`
	Error            *batchLineError `json:"error,omitempty"`
}

type batchLineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

type batchSummary struct {
	Created  int            `json:"created"`
	Replayed int            `json:"replayed"`
	Failed   int            `json:"failed"`
	Results  []batchOutcome `json:"results"`
}

func (s *batchSummary) add(o batchOutcome) {
	switch {
	case o.Status == 201:
		s.Created++
	case o.IdempotentReplay:
		s.Replayed++
	default:
		s.Failed++
	}
	s.Results = append(s.Results, o)
}

func taskSubmitBatchCmd(g *globals) *cobra.Command {
	var defaults struct{ namespace, name, initiator, source string }
	var size, maxBytes int
	cmd := &cobra.Command{
		Use:   "submit-batch FILE",
		Short: "Submit many tasks from a JSON Lines file (one task request per line; - reads stdin), in batches",
		Long: `Submit many tasks from a JSON Lines file: each line one task request, the
body POST /v1/tasks takes ({"namespace":…,"name":…,"context":{…},…}); blank
lines are skipped. Requests go in batches of --batch-size through
POST /v1/tasks/batch, created together on the server; a batch is also cut
before its body would pass --max-batch-bytes, which must stay under the
server's server.max_body_bytes (2 MiB by default). A line too large for the
server by itself fails alone (413).

--namespace, --name, --initiator and --source-system fill the members a line
leaves out, so a file of {"context":{…}} lines can name its template once.

Each line is answered alone: a line that is not a JSON object, or that the
server refuses, is reported with its line number and the others go on. The
exit status is 1 when any line failed. If a batch cannot be sent at all (the
server is unreachable), the command stops and says which lines were
submitted; give the lines idempotency keys and a re-run of the whole file
creates only what is missing.`,
		Example: `  orchestrator task submit-batch orders.jsonl
  orchestrator task submit-batch -n ecommerce --name order_fulfillment contexts.jsonl
  produce-orders | orchestrator --json task submit-batch -`,
		Args: func(cmd *cobra.Command, args []string) error { return argCount(cmd, args, 1, 1) },
		RunE: func(cmd *cobra.Command, args []string) error {
			if size < 1 || size > api.MaxBatchTasks {
				return &usageError{fmt.Sprintf("task submit-batch: --batch-size must be from 1 to %d, not %d", api.MaxBatchTasks, size)}
			}
			if maxBytes < 1024 {
				return &usageError{fmt.Sprintf("task submit-batch: --max-batch-bytes must be at least 1024, not %d", maxBytes)}
			}
			var in io.Reader = os.Stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			fill := map[string]string{"namespace": defaults.namespace, "name": defaults.name,
				"initiator": defaults.initiator, "source_system": defaults.source}
			c := g.client()
			var sum batchSummary
			var batch []batchLine
			batchBytes := 0
			sent := 0 // lines sent so far
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				if err := sendBatch(cmd, g, c, batch, &sum); err != nil {
					first, last := batch[0].line, batch[len(batch)-1].line
					return fmt.Errorf("lines %d–%d could not be submitted (%w); no line from %d on was sent; the lines before it: %d created, %d replayed, %d failed",
						first, last, err, first, sum.Created, sum.Replayed, sum.Failed)
				}
				sent += len(batch)
				batch, batchBytes = batch[:0], 0
				fmt.Fprintf(g.stderr, "submitted %d task requests: %d created, %d replayed, %d failed\n", sent, sum.Created, sum.Replayed, sum.Failed)
				return nil
			}
			r := bufio.NewReader(in)
			for n := 1; ; n++ {
				text, rerr := r.ReadBytes('\n')
				if rerr != nil && !errors.Is(rerr, io.EOF) {
					return fmt.Errorf("read %s: %w", args[0], rerr)
				}
				if line := bytes.TrimSpace(text); len(line) > 0 {
					req, msg := batchRequest(line, fill)
					if msg != "" {
						o := batchOutcome{Line: n, Status: 400, Error: &batchLineError{Code: "invalid_json", Message: msg}}
						sum.add(o)
						fmt.Fprintf(g.stderr, "line %d: %s\n", n, msg)
					} else {
						// {"tasks":[…]}: 12 bytes, and a comma per request.
						if len(batch) > 0 && 12+batchBytes+len(req)+1 > maxBytes {
							if err := flush(); err != nil {
								return err
							}
						}
						batch = append(batch, batchLine{line: n, req: req})
						batchBytes += len(req) + 1
						if len(batch) == size {
							if err := flush(); err != nil {
								return err
							}
						}
					}
				}
				if rerr != nil {
					break
				}
			}
			if err := flush(); err != nil {
				return err
			}
			if g.jsonOut {
				if err := printJSON(g.stdout, sum); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "%d task requests: %d created, %d replayed (idempotency key seen before), %d failed\n",
					len(sum.Results), sum.Created, sum.Replayed, sum.Failed)
			}
			if sum.Failed > 0 {
				return fmt.Errorf("%d of %d task requests failed (each is listed above with its line)", sum.Failed, len(sum.Results))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&size, "batch-size", 500, fmt.Sprintf("task requests per POST /v1/tasks/batch (1 to %d)", api.MaxBatchTasks))
	f.IntVar(&maxBytes, "max-batch-bytes", 1<<20, "largest request body to send; keep it under the server's server.max_body_bytes")
	f.StringVarP(&defaults.namespace, "namespace", "n", "", "namespace of the lines that give none")
	f.StringVar(&defaults.name, "name", "", "template name of the lines that give none")
	f.StringVar(&defaults.initiator, "initiator", os.Getenv("USER"), "initiator of the lines that give none")
	f.StringVar(&defaults.source, "source-system", "cli", "source system of the lines that give none")
	return cmd
}

// batchRequest checks one line and fills the members it leaves out; msg
// says what is wrong with a line that cannot be sent.
func batchRequest(line []byte, fill map[string]string) (json.RawMessage, string) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil || m == nil {
		return nil, "not a JSON object (each line must be one task request, the body of POST /v1/tasks)"
	}
	changed := false
	for k, v := range fill {
		if _, ok := m[k]; !ok && v != "" {
			m[k], _ = json.Marshal(v)
			changed = true
		}
	}
	if !changed {
		return json.RawMessage(line), ""
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, err.Error()
	}
	return out, ""
}

// sendBatch posts one batch and adds each line's result to sum, printing
// the failures with their line numbers.
func sendBatch(cmd *cobra.Command, g *globals, c *client, batch []batchLine, sum *batchSummary) error {
	reqs := make([]json.RawMessage, len(batch))
	for i, b := range batch {
		reqs[i] = b.req
	}
	var res api.TaskBatchResult
	var raw json.RawMessage
	status, err := c.send(cmd.Context(), "POST", "/v1/tasks/batch", api.TaskBatchRequest{Tasks: reqs}, "", &raw)
	if err != nil {
		if status == http.StatusRequestEntityTooLarge && len(batch) == 1 {
			// One line the server finds too large fails alone.
			o := batchOutcome{Line: batch[0].line, Status: status, Error: &batchLineError{Code: "too_large", Message: err.Error()}}
			fmt.Fprintf(g.stderr, "line %d: %s\n", o.Line, o.Error.Message)
			sum.add(o)
			return nil
		}
		if status == http.StatusRequestEntityTooLarge {
			return fmt.Errorf("%w (lower --max-batch-bytes below the server's server.max_body_bytes)", err)
		}
		return err
	}
	if err := json.Unmarshal(raw, &res); err != nil || len(res.Results) != len(batch) {
		return fmt.Errorf("unexpected answer from POST /v1/tasks/batch (%d results for %d requests)", len(res.Results), len(batch))
	}
	for i, it := range res.Results {
		o := batchOutcome{Line: batch[i].line, Status: it.Status, IdempotentReplay: it.IdempotentReplay}
		if it.Task != nil {
			o.TaskUUID = it.Task.TaskUUID.String()
		}
		if it.Error != nil {
			place := "tasks[" + strconv.Itoa(i) + "]"
			msg := strings.TrimPrefix(strings.TrimPrefix(it.Error.Message, place+"."), place+": ")
			field := strings.TrimPrefix(strings.TrimPrefix(it.Error.Field, place), ".")
			o.Error = &batchLineError{Code: it.Error.Code, Message: msg, Field: field}
			fmt.Fprintf(g.stderr, "line %d: %s\n", o.Line, msg)
		}
		sum.add(o)
	}
	return nil
}
