package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/tasker/tasker/domainevents"
	"github.com/tasker/tasker/internal/daemon"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/queue"
)

// eventsCmd is `orchestrator events`: domain events (DESIGN §7).
func eventsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Watch domain events (docs/domain-events.md)",
	}
	cmd.AddCommand(eventsTailCmd(g))
	return cmd
}

func eventsTailCmd(g *globals) *cobra.Command {
	var (
		namespace string
		types     []string
		fromStart bool
		follow    bool
		limit     int
		format    string
		poll      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tail --namespace NS [--type T]...",
		Short: "Print a namespace's domain events as they arrive, without consuming them",
		Long: `Print the domain events of a namespace (queue domain_events_<namespace>) as
they arrive. Read-only: the queue table and its archive are browsed by
msg_id, nothing is read in the PGMQ sense, hidden or deleted, so consumers
are not disturbed. An event a consumer acknowledges (deletes) before tail
looks is not seen; archived events (dead letters) are.

Output: JSON lines (one event envelope per line) when stdout is not a
terminal or with --json / --format json; a table on a terminal.

Connects to the database in DATABASE_URL (or database.url of --config).`,
		Example: `  orchestrator events tail --namespace ecommerce
  orchestrator events tail -n ecommerce --type TaskCompleted --type TaskFailed
  orchestrator events tail -n ecommerce --from-start --no-follow | jq .payload`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace == "" {
				return &usageError{"events tail: --namespace is required"}
			}
			if err := queue.ValidateNamespace(namespace); err != nil {
				return &usageError{"events tail: " + err.Error()}
			}
			if limit < 0 {
				return &usageError{fmt.Sprintf("events tail: --limit must not be negative (0: no limit), got %d", limit)}
			}
			if poll <= 0 {
				return &usageError{fmt.Sprintf("events tail: --poll-interval must be positive, got %s", poll)}
			}
			asJSON, err := tailFormat(g, format)
			if err != nil {
				return err
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runTail(ctx, g, cfg.Database.URL, ide.TailConfig{
				Namespace: namespace, EventTypes: types, FromStart: fromStart, Follow: follow,
				Limit: limit, PollInterval: poll,
			}, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "", "namespace whose events to print (required)")
	f.StringArrayVarP(&types, "type", "t", nil, "print only events of this type (repeatable)")
	f.BoolVar(&fromStart, "from-start", false, "also print the events already in the queue and its archive")
	f.BoolVar(&follow, "follow", true, "keep printing new events until interrupted (--follow=false or --no-follow: print what is there and exit)")
	f.Bool("no-follow", false, "print the events that are there and exit")
	f.IntVar(&limit, "limit", 0, "exit after printing this many events (0: no limit)")
	f.StringVar(&format, "format", "auto", "output format: auto (table on a terminal, JSON lines otherwise), json or table")
	f.DurationVar(&poll, "poll-interval", ide.DefaultTailPollInterval, "how often to look for new events (notifications wake it sooner)")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if nf, _ := cmd.Flags().GetBool("no-follow"); nf {
			follow = false
		}
		return nil
	}
	return cmd
}

func tailFormat(g *globals, format string) (asJSON bool, err error) {
	switch format {
	case "json":
		return true, nil
	case "table":
		return false, nil
	case "auto", "":
		return g.jsonOut || !isTerminal(g.stdout), nil
	}
	return false, &usageError{fmt.Sprintf("events tail: --format must be auto, json or table, not %q", format)}
}

func runTail(ctx context.Context, g *globals, dbURL string, tc ide.TailConfig, asJSON bool) error {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("database.url: %w", err)
	}
	// One connection browses, one listens for notifications.
	pc.MaxConns = 2
	pc.ConnConfig.RuntimeParams["application_name"] = "tasker-events-tail"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return daemon.ExplainDatabaseError(fmt.Errorf("connect to database: %w", err))
	}
	q, _ := queue.DomainEventsQueue(tc.Namespace)
	// Only a queue that is not there means no template registered it; a
	// database that is down or not migrated says so.
	queues, err := queue.List(ctx, pool)
	if err != nil {
		return daemon.ExplainDatabaseError(err)
	}
	if !slices.Contains(queues, q) {
		return fmt.Errorf("namespace %s has no domain event queue %s (is a template of that namespace registered?)", tc.Namespace, q)
	}
	if tc.Follow {
		logger := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		lis := queue.NewListener(pool, logger)
		tc.Wake = lis.Subscribe(q)
		if err := lis.Start(ctx); err != nil {
			return err
		}
		defer lis.Stop()
	}
	var p tailPrinter
	if asJSON {
		p = jsonPrinter{w: g.stdout}
	} else {
		p = &tablePrinter{w: g.stdout}
	}
	return ide.Tail(ctx, pool, tc, p.print)
}

type tailPrinter interface {
	print(ide.TailEvent) error
}

// jsonPrinter prints each event's envelope, as stored, on one line.
type jsonPrinter struct{ w io.Writer }

func (p jsonPrinter) print(e ide.TailEvent) error {
	var b bytes.Buffer
	if err := json.Compact(&b, e.Body); err != nil {
		return fmt.Errorf("message %d: %w", e.Event.MsgID, err)
	}
	b.WriteByte('\n')
	_, err := p.w.Write(b.Bytes())
	return err
}

// tablePrinter prints one aligned line per event, with a summary of its
// payload.
type tablePrinter struct {
	w      io.Writer
	header bool
}

const tableRow = "%-12s  %-20s  %-36s  %-20s  %s\n"

func (p *tablePrinter) print(e ide.TailEvent) error {
	if !p.header {
		p.header = true
		if _, err := fmt.Fprintf(p.w, tableRow, "TIME", "TYPE", "TASK", "STEP", "DETAILS"); err != nil {
			return err
		}
	}
	if e.Err != nil {
		_, err := fmt.Fprintf(p.w, tableRow, "-", "(not an event)", "-", "-", e.Err.Error())
		return err
	}
	ev := e.Event
	details := summary(ev)
	if e.Archived {
		details += " [archived]"
	}
	var step struct {
		StepName string `json:"step_name"`
	}
	_ = json.Unmarshal(ev.Payload, &step)
	stepName := step.StepName
	if stepName == "" {
		stepName = "-"
	}
	_, err := fmt.Fprintf(p.w, tableRow, ev.OccurredAt.Local().Format("15:04:05.000"), ev.EventType, ev.TaskUUID, stepName, details)
	return err
}

// summary is a short description of an event's payload.
func summary(ev domainevents.Event) string {
	switch ev.EventType {
	case domainevents.TaskInitiated:
		var p domainevents.TaskInitiatedPayload
		if ev.DecodePayload(&p) == nil {
			return fmt.Sprintf("%s@%s, %d steps, by %s from %s", p.TaskName, p.TaskVersion, p.StepCount, p.Initiator, p.SourceSystem)
		}
	case domainevents.StepCompleted:
		var p domainevents.StepCompletedPayload
		if ev.DecodePayload(&p) == nil {
			how := fmt.Sprintf("attempt %d", p.Attempt)
			if p.ResolvedManually {
				how = "resolved manually"
			}
			return how + ", result " + clip(string(p.Result), 60)
		}
	case domainevents.StepFailed:
		var p domainevents.StepFailedPayload
		if ev.DecodePayload(&p) == nil {
			next := "no retry"
			if p.WillRetry {
				next = "will retry"
			}
			return fmt.Sprintf("attempt %d/%d, %s: %s", p.Attempt, p.MaxAttempts, next, clip(p.Error.Message, 60))
		}
	case domainevents.WorkflowProgressed:
		var p domainevents.WorkflowProgressedPayload
		if ev.DecodePayload(&p) == nil {
			var parts []string
			for _, s := range []string{"in_progress", "enqueued", "pending", "waiting_for_retry", "error"} {
				if n := p.StepCounts[s]; n > 0 {
					parts = append(parts, fmt.Sprintf("%d %s", n, s))
				}
			}
			out := fmt.Sprintf("%d/%d steps done, task %s", p.CompletedSteps, p.TotalSteps, p.TaskState)
			if len(parts) > 0 {
				out += " (" + strings.Join(parts, ", ") + ")"
			}
			return out
		}
	case domainevents.TaskCompleted:
		var p domainevents.TaskCompletedPayload
		if ev.DecodePayload(&p) == nil {
			return fmt.Sprintf("%d steps in %s", p.TotalSteps, time.Duration(p.DurationMs)*time.Millisecond)
		}
	case domainevents.TaskFailed:
		var p domainevents.TaskFailedPayload
		if ev.DecodePayload(&p) == nil {
			var names []string
			for _, s := range p.FailedSteps {
				names = append(names, s.StepName+": "+clip(s.Error.Message, 40))
			}
			return fmt.Sprintf("after %s; failed: %s", time.Duration(p.DurationMs)*time.Millisecond, strings.Join(names, "; "))
		}
	case domainevents.TaskCancelled:
		var p domainevents.TaskCancelledPayload
		if ev.DecodePayload(&p) == nil {
			return fmt.Sprintf("after %s: %s", time.Duration(p.DurationMs)*time.Millisecond, clip(p.Reason, 60))
		}
	default:
		var p domainevents.StepEventPayload
		if ev.DecodePayload(&p) == nil {
			if p.Outcome == domainevents.OutcomeFailure && p.Error != nil {
				return "failure: " + clip(p.Error.Message, 60)
			}
			return "success, result " + clip(string(p.Result), 60)
		}
	}
	return clip(string(ev.Payload), 80)
}

// clip shortens s to n runes with an ellipsis, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
