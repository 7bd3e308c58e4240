package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/store"
)

type dlqOut struct {
	ID               int64     `json:"dlq_id"`
	TaskUUID         string    `json:"task_uuid"`
	Namespace        string    `json:"namespace"`
	Reason           string    `json:"reason"`
	Detail           string    `json:"detail"`
	ResolutionStatus string    `json:"resolution_status"`
	CreatedAt        time.Time `json:"created_at"`
}

// dlqEntryOut is one entry as dlq get and dlq update print it.
type dlqEntryOut struct {
	dlqOut
	ResolutionNotes string          `json:"resolution_notes"`
	ResolvedBy      string          `json:"resolved_by"`
	UpdatedAt       time.Time       `json:"updated_at"`
	Snapshot        json.RawMessage `json:"snapshot"`
}

// dlqSnapshot is the task as it was when the entry was filed.
type dlqSnapshot struct {
	TaskState string    `json:"task_state"`
	UpdatedAt time.Time `json:"updated_at"`
	Steps     []struct {
		Name        string          `json:"name"`
		State       string          `json:"state"`
		Attempts    int             `json:"attempts"`
		MaxAttempts int             `json:"max_attempts"`
		LastError   json.RawMessage `json:"last_error"`
	} `json:"steps"`
}

// printDLQEntry prints an entry; with snapshot, also the task and steps as
// they were when it was filed (dlq update leaves it out: it did not change).
func printDLQEntry(w io.Writer, e dlqEntryOut, snapshot bool) {
	fmt.Fprintf(w, "dlq %d  task %s  %s  %s  %s\n", e.ID, e.TaskUUID, e.Namespace, e.Reason, strings.ToUpper(e.ResolutionStatus))
	fmt.Fprintf(w, "  created %s  updated %s\n", e.CreatedAt.Format(time.RFC3339), e.UpdatedAt.Format(time.RFC3339))
	if e.Detail != "" {
		fmt.Fprintf(w, "  detail: %s\n", e.Detail)
	}
	if e.ResolvedBy != "" || e.ResolutionNotes != "" {
		fmt.Fprintf(w, "  by %q  notes: %s\n", e.ResolvedBy, strings.ReplaceAll(e.ResolutionNotes, "\n", "\n    "))
	}
	if !snapshot || len(e.Snapshot) == 0 {
		return
	}
	var s dlqSnapshot
	if json.Unmarshal(e.Snapshot, &s) != nil || s.TaskState == "" {
		fmt.Fprintf(w, "  snapshot: %s\n", e.Snapshot)
		return
	}
	fmt.Fprintf(w, "  snapshot: task %s at %s\n", s.TaskState, s.UpdatedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tSTATE\tATTEMPTS\tERROR")
	for _, st := range s.Steps {
		msg := ""
		if len(st.LastError) > 0 && string(st.LastError) != "null" {
			msg = oneLine(errorMessage(st.LastError), 70)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\n", st.Name, st.State, st.Attempts, st.MaxAttempts, msg)
	}
	tw.Flush()
}

func dlqCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect and triage tasks that could not finish (stale or failed)", PersistentPreRunE: g.checkServer}
	var status, ns string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List DLQ entries, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDLQStatus(cmd, status); err != nil {
				return err
			}
			if err := checkLimit(cmd, limit); err != nil {
				return err
			}
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			if ns != "" {
				q.Set("namespace", ns)
			}
			q.Set("limit", fmt.Sprint(limit))
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", "/v1/dlq?"+q.Encode(), nil, "", &raw); err != nil {
				return err
			}
			if g.jsonOut {
				return printRawJSON(g.stdout, raw)
			}
			var out struct {
				Entries []dlqOut `json:"entries"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTASK\tNAMESPACE\tREASON\tSTATUS\tCREATED\tDETAIL")
			for _, e := range out.Entries {
				d := e.Detail
				if len(d) > 80 {
					d = d[:77] + "..."
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.TaskUUID, e.Namespace, e.Reason, e.ResolutionStatus, e.CreatedAt.Format(time.RFC3339), d)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&status, "status", "", "only entries with this status ("+strings.Join(store.DLQStatuses, ", ")+")")
	list.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	list.Flags().IntVar(&limit, "limit", 50, fmt.Sprintf("entries to show (1-%d)", maxListLimit))
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a DLQ entry with its snapshot",
		Args:  dlqIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", "/v1/dlq/"+url.PathEscape(args[0]), nil, "", &raw); err != nil {
				return err
			}
			return printDLQ(g, raw, true)
		},
	}
	var newStatus, notes, by string
	update := &cobra.Command{
		Use:   "update ID --status STATUS",
		Short: "Set a DLQ entry's investigation status",
		Args:  dlqIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if newStatus == "" {
				return &usageError{"dlq update: --status is required"}
			}
			if err := checkDLQStatus(cmd, newStatus); err != nil {
				return err
			}
			var raw json.RawMessage
			// Only the flags given are sent: the server keeps the notes and
			// author an earlier update wrote unless told otherwise.
			body := map[string]string{"resolution_status": newStatus}
			if cmd.Flags().Changed("notes") {
				body["resolution_notes"] = notes
			}
			if cmd.Flags().Changed("by") {
				body["resolved_by"] = by
			}
			if err := g.client().do(cmd.Context(), "PATCH", "/v1/dlq/"+url.PathEscape(args[0]), body, "", &raw); err != nil {
				return err
			}
			return printDLQ(g, raw, false)
		},
	}
	update.Flags().StringVar(&newStatus, "status", "", strings.Join(store.DLQStatuses, ", "))
	update.Flags().StringVar(&notes, "notes", "", `investigation notes (replace the entry's; left out: kept; "" clears them)`)
	update.Flags().StringVar(&by, "by", "", `who (left out: kept; "" clears it)`)
	cmd.AddCommand(list, get, update)
	return cmd
}

// dlqIDArg takes one argument, a DLQ entry's id (a positive integer); one
// that is not is a usage error, not a request the server refuses.
func dlqIDArg(cmd *cobra.Command, args []string) error {
	if err := argCount(cmd, args, 1, 1); err != nil {
		return err
	}
	if id, err := strconv.ParseInt(args[0], 10, 64); err != nil || id < 1 {
		return &usageError{fmt.Sprintf("%s: dlq_id %q is not a positive integer\nusage: %s", commandName(cmd), args[0], cmd.UseLine())}
	}
	return nil
}

// checkDLQStatus refuses a --status the API would refuse, as a usage error.
func checkDLQStatus(cmd *cobra.Command, status string) error {
	if status != "" && !slices.Contains(store.DLQStatuses, status) {
		return &usageError{fmt.Sprintf("%s: --status %q is not one of %s", commandName(cmd), status, strings.Join(store.DLQStatuses, ", "))}
	}
	return nil
}

// printDLQ prints an entry from the API: all of it with --json.
func printDLQ(g *globals, raw json.RawMessage, snapshot bool) error {
	return printAPIDoc(g, raw, func(w io.Writer, e dlqEntryOut) { printDLQEntry(w, e, snapshot) })
}
