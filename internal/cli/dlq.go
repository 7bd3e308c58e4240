package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
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

func dlqCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect and triage tasks that could not finish (stale or failed)"}
	var status, ns string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List DLQ entries, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			if ns != "" {
				q.Set("namespace", ns)
			}
			q.Set("limit", fmt.Sprint(limit))
			var out struct {
				Entries []dlqOut `json:"entries"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/dlq?"+q.Encode(), nil, "", &out); err != nil {
				return err
			}
			if g.jsonOut {
				return printJSON(g.stdout, out)
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
	list.Flags().StringVar(&status, "status", "", "only entries with this status (pending, investigating, resolved, ignored)")
	list.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace")
	list.Flags().IntVar(&limit, "limit", 50, "entries to show (1-500)")
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a DLQ entry with its snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", "/v1/dlq/"+url.PathEscape(args[0]), nil, "", &out); err != nil {
				return err
			}
			_, err := g.stdout.Write(append(out, '\n'))
			return err
		},
	}
	var newStatus, notes, by string
	update := &cobra.Command{
		Use:   "update ID --status STATUS",
		Short: "Set a DLQ entry's investigation status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if newStatus == "" {
				return &usageError{"dlq update: --status is required"}
			}
			var out json.RawMessage
			// Only the flags given are sent: the server keeps the notes and
			// author an earlier update wrote unless told otherwise.
			body := map[string]string{"resolution_status": newStatus}
			if cmd.Flags().Changed("notes") {
				body["resolution_notes"] = notes
			}
			if cmd.Flags().Changed("by") {
				body["resolved_by"] = by
			}
			if err := g.client().do(cmd.Context(), "PATCH", "/v1/dlq/"+url.PathEscape(args[0]), body, "", &out); err != nil {
				return err
			}
			_, err := g.stdout.Write(append(out, '\n'))
			return err
		},
	}
	update.Flags().StringVar(&newStatus, "status", "", "pending, investigating, resolved or ignored")
	update.Flags().StringVar(&notes, "notes", "", `investigation notes (replace the entry's; left out: kept; "" clears them)`)
	update.Flags().StringVar(&by, "by", "", `who (left out: kept; "" clears it)`)
	cmd.AddCommand(list, get, update)
	return cmd
}
