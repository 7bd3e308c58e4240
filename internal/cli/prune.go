package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/daemon"
	"github.com/tasker/tasker/internal/store"
)

func pruneCmd(g *globals) *cobra.Command {
	var archives, history, tasks time.Duration
	var batch int
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete old finished tasks, task history and queue archives now (the retention sweep)",
		Long: `Run the retention sweep that the daemon runs every retention.interval, now,
until nothing past the cut-offs is left, against the database in
DATABASE_URL / database.url. Each batch is its own transaction: stopping the
command (Ctrl-C) keeps what it did, and running it again goes on.

What it deletes, each kind only when its cut-off is not 0 (defaults from
the [retention] settings; the flags override them):
  --tasks     tasks finished longer ago than this, with their steps,
              transitions and DLQ entries; a task whose DLQ entry is still
              pending or investigating is kept
  --history   for tasks finished longer ago than this, every transition but
              the last of the task and of each step
  --archives  messages archived in the engine's queues longer ago than this

--dry-run counts what would be deleted and deletes nothing.`,
		Example: `  orchestrator prune --dry-run
  orchestrator prune --tasks 2160h --history 720h
  orchestrator prune --archives 24h --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("archives") {
				cfg.Retention.ArchiveAfter.Duration = archives
			}
			if f.Changed("history") {
				cfg.Retention.HistoryAfter.Duration = history
			}
			if f.Changed("tasks") {
				cfg.Retention.TasksAfter.Duration = tasks
			}
			if f.Changed("batch") {
				cfg.Retention.BatchSize = batch
			}
			if err := cfg.Validate(); err != nil {
				return &usageError{err.Error() + "\n(--archives, --history, --tasks and --batch set the retention keys)"}
			}
			policy := daemon.RetentionPolicy(cfg.Retention)
			if !policy.Enabled() {
				if g.jsonOut {
					return printJSON(g.stdout, store.PruneResult{})
				}
				fmt.Fprintln(g.stdout, "prune: every cut-off is 0 (keep forever): nothing to do")
				return nil
			}
			ctx, cancel := signalContext(g.stderr)
			defer cancel()
			st, closeStore, err := daemon.OpenStore(ctx, cfg.Database)
			if err != nil {
				return daemon.ExplainDatabaseError(err)
			}
			defer closeStore()

			if !g.jsonOut {
				fmt.Fprintf(g.stdout, "cut-offs: tasks %s, history %s, archives %s (0 keeps)\n",
					keep(policy.TasksAfter), keep(policy.HistoryAfter), keep(policy.ArchiveAfter))
			}
			if dryRun {
				est, err := st.PruneEstimate(ctx, policy)
				if err != nil {
					return daemon.ExplainDatabaseError(err)
				}
				if g.jsonOut {
					return printJSON(g.stdout, est)
				}
				fmt.Fprintf(g.stdout, "would delete: %s\n", pruneSummary(est))
				return nil
			}
			start := time.Now()
			last := time.Now()
			res, err := st.Prune(ctx, policy, store.PruneOptions{
				Progress: func(kind string, n int64, total store.PruneResult) {
					if time.Since(last) < time.Second {
						return
					}
					last = time.Now()
					fmt.Fprintf(g.stderr, "… %s so far (%s)\n", pruneSummary(total), time.Since(start).Round(time.Second))
				},
			})
			if err != nil {
				if ctx.Err() != nil {
					fmt.Fprintf(g.stderr, "stopped: %s before the signal; run again to go on\n", pruneSummary(res))
				}
				return daemon.ExplainDatabaseError(err)
			}
			if g.jsonOut {
				return printJSON(g.stdout, res)
			}
			fmt.Fprintf(g.stdout, "deleted: %s in %s\n", pruneSummary(res), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	// The flags' own values only count when given (Changed); their help
	// shows the defaults of the keys they override. The configuration may
	// set others: `orchestrator config print` shows them.
	def := config.Default().Retention
	f.DurationVar(&tasks, "tasks", 0, "delete tasks finished longer ago than this (0 keeps; default retention.tasks_after: "+keep(def.TasksAfter.Duration)+")")
	f.DurationVar(&history, "history", 0, "prune the history of tasks finished longer ago than this (0 keeps; default retention.history_after: "+keep(def.HistoryAfter.Duration)+")")
	f.DurationVar(&archives, "archives", 0, "delete queue archive messages older than this (0 keeps; default retention.archive_after: "+keep(def.ArchiveAfter.Duration)+")")
	f.IntVar(&batch, "batch", 0, fmt.Sprintf("rows per transaction (default retention.batch_size: %d)", def.BatchSize))
	f.BoolVar(&dryRun, "dry-run", false, "count what would be deleted; delete nothing")
	return cmd
}

// keep formats a cut-off as the config file writes it: 0, 168h, 90m.
func keep(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func pruneSummary(r store.PruneResult) string {
	return fmt.Sprintf("%d finished tasks; the history of %d tasks (%d transitions); %d archived messages",
		r.Tasks, r.HistoryTasks, r.Transitions, r.ArchivedMessages)
}
