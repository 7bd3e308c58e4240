// Package cli is the `orchestrator` command line: the daemon (serve), the
// schema (migrate), and an operator client for the REST API (task, step,
// template, dlq), plus config printing. cmd/orchestrator/main.go only
// calls Execute.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/daemon"
)

// globals are the flags shared by every subcommand.
type globals struct {
	configPath string
	server     string
	apiKey     string
	jsonOut    bool
	logLevel   string
	stdout     io.Writer
	stderr     io.Writer
	// interrupts returns a context cancelled by the first SIGINT or
	// SIGTERM (a client command's wait ends then); tests replace it.
	interrupts func(context.Context) (context.Context, context.CancelFunc)
}

// Execute runs the command line and returns the process exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	return execute(&globals{stdout: stdout, stderr: stderr, interrupts: func(ctx context.Context) (context.Context, context.CancelFunc) {
		return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	}}, args)
}

func execute(g *globals, args []string) int {
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	return exitStatus(g.stderr, root.Execute())
}

// exitStatus reports a command's error on w, unless the command logged it
// already, and returns the exit status: 0 without an error, 2 for a usage
// error, 130 when interrupted, 1 otherwise.
func exitStatus(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ie *interruptedError
	if errors.As(err, &ie) {
		fmt.Fprintln(w, err)
		return exitInterrupted
	}
	var le *loggedError
	if errors.As(err, &le) {
		return 1
	}
	fmt.Fprintln(w, "error:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// loggedError is an error the command has already written to its log (at
// ERROR, with its details): serve's incomplete shutdown or failed HTTP
// server. It exits 1 without a second, plain-text copy, so that serve's
// output stays one log format.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// exitInterrupted is the exit status of a command stopped by SIGINT or
// SIGTERM, the shell's 128+SIGINT.
const exitInterrupted = 130

// interruptedError is a client command stopped by a signal while it waited;
// what it waited for goes on without it, and the message says how to
// follow it.
type interruptedError struct{ msg string }

func (e *interruptedError) Error() string { return e.msg }

// usageError is a command line the command cannot run: a wrong number of
// arguments, a missing or invalid flag, an unknown subcommand. It exits 2;
// every other error (the server's, the database's, a file's) exits 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// commandName is a command's path without the program's name, as usage
// errors name it: "task get".
func commandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// Positional-argument checks. Cobra's own fail as plain errors (exit 1),
// and cobra.NoArgs calls an extra argument an unknown command; these say
// how many arguments the command takes and got, with its usage line.
func noArgs(cmd *cobra.Command, args []string) error { return argCount(cmd, args, 0, 0) }

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error { return argCount(cmd, args, n, n) }
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error { return argCount(cmd, args, n, -1) }
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error { return argCount(cmd, args, 0, n) }
}

// argCount checks that min <= len(args) <= max (max < 0: no upper bound).
func argCount(cmd *cobra.Command, args []string, min, max int) error {
	if len(args) >= min && (max < 0 || len(args) <= max) {
		return nil
	}
	// A command with subcommands that takes no arguments was given a
	// subcommand it does not have.
	if max == 0 && cmd.HasAvailableSubCommands() {
		return unknownCommand(cmd, args[0])
	}
	var takes string
	switch {
	case min == max && min == 0:
		takes = "no arguments"
	case min == max:
		takes = plural(min, "argument")
	case max < 0:
		takes = "at least " + plural(min, "argument")
	case min == 0:
		takes = "at most " + plural(max, "argument")
	default:
		takes = fmt.Sprintf("%d to %d arguments", min, max)
	}
	got := fmt.Sprint(len(args))
	if len(args) > max && max >= 0 {
		got += fmt.Sprintf(" (%s)", strings.Join(args, " "))
	}
	return &usageError{fmt.Sprintf("%s takes %s and got %s\nusage: %s", commandName(cmd), takes, got, cmd.UseLine())}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	// Cobra's own default distance, which SuggestionsFor does not apply.
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return &usageError{msg + "\ncommands: " + strings.Join(names, ", ")}
}

// asGroups makes every command that only holds subcommands (the root,
// task, step, ...) run: cobra answers an unknown subcommand of a nested one
// with its help and exit 0, and of the root with a plain error. Run
// without arguments they still print their help.
func asGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		asGroups(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = noArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// helpCmd replaces cobra's help command, which answers a command it does
// not know with the root's help and exit 0: here that is a usage error
// naming the unknown command.
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  `Help provides help for any command: orchestrator help task submit.`,
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil {
				return &usageError{fmt.Sprintf("help: %v", err)}
			}
			if len(rest) > 0 {
				if !target.HasAvailableSubCommands() {
					return &usageError{fmt.Sprintf("help: %q has no subcommands (got %s)", commandName(target), strings.Join(rest, " "))}
				}
				return unknownCommand(target, rest[0])
			}
			return target.Help()
		},
	}
}

// flagError makes a flag that does not parse a usage error.
func flagError(cmd *cobra.Command, err error) error {
	return &usageError{fmt.Sprintf("%s: %v\nusage: %s", commandName(cmd), err, cmd.UseLine())}
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "orchestrator",
		Short: "Tasker: workflow orchestration on PostgreSQL and PGMQ",
		Long: `Tasker runs workflows (DAGs of named steps declared in YAML templates) as
tasks: the orchestrator drives every task and step through explicit state
machines in Postgres, dispatches ready steps to per-namespace PGMQ queues,
and workers in any language run the handlers and post results back.

Start the daemon with "orchestrator serve"; the other commands operate it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configPath, "config", "c", envOr("TASKER_CONFIG", ""), "config file (TOML); env TASKER_CONFIG")
	pf.StringVar(&g.server, "server", envOr("TASKER_SERVER", "http://127.0.0.1:8080"), "orchestrator API base URL for client commands; env TASKER_SERVER")
	pf.StringVar(&g.apiKey, "api-key", os.Getenv("TASKER_API_KEY"), "API key for client commands; env TASKER_API_KEY")
	pf.BoolVar(&g.jsonOut, "json", false, "print JSON instead of human-readable output")
	root.AddCommand(serveCmd(g), migrateCmd(g), configCmd(g), taskCmd(g), stepCmd(g), templateCmd(g), dlqCmd(g), eventsCmd(g), benchCmd(g), pruneCmd(g))
	root.SetHelpCommand(helpCmd())
	asGroups(root)
	root.SetFlagErrorFunc(flagError)
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// loadConfig reads the config file and environment.
func (g *globals) loadConfig() (config.Config, error) {
	return config.Load(g.configPath, config.Environ())
}

// NewLogger builds the process logger from the log config.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// signalContext is cancelled by the first SIGINT/SIGTERM; a second one exits
// the process at once (hard stop). What happens is said in plain text on
// stderr, for the interactive commands.
func signalContext(stderr io.Writer) (context.Context, context.CancelFunc) {
	return onSignals(subscribeSignals(), func(sig os.Signal, second bool) {
		if second {
			fmt.Fprintln(stderr, "second signal: stopping now")
			return
		}
		fmt.Fprintf(stderr, "received %s: shutting down gracefully (send again to stop at once)\n", sig)
	})
}

// loggedSignalContext is signalContext for serve: what happens is a log
// record, so that its output stays one log format (JSON lines by default).
func loggedSignalContext(logger *slog.Logger) (context.Context, context.CancelFunc) {
	return onSignals(subscribeSignals(), func(sig os.Signal, second bool) {
		if second {
			logger.Warn("second signal: stopping now", "signal", sig.String())
			return
		}
		logger.Info("signal received: shutting down gracefully (send again to stop at once)", "signal", sig.String())
	})
}

func subscribeSignals() <-chan os.Signal {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	return ch
}

// onSignals cancels the context on the first signal from ch and exits the
// process with 130 on the second, announcing each with say.
func onSignals(ch <-chan os.Signal, say func(sig os.Signal, second bool)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	// Ends with the process.
	go func() {
		sig := <-ch
		say(sig, false)
		cancel()
		sig = <-ch
		say(sig, true)
		os.Exit(130)
	}()
	return ctx, cancel
}

func serveCmd(g *globals) *cobra.Command {
	var listen string
	var noMigrate bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the orchestrator daemon (API, orchestration loops, /metrics)",
		Long: `Run the orchestrator daemon: the REST API on server.listen, /healthz,
/readyz and /metrics, and the orchestration loops (task intake, step result
processing, retry timers, lease reaping). Any number of replicas may run
against one database.

Configuration: --config FILE (see config/orchestrator.toml), overridden by
TASKER_* environment variables and DATABASE_URL. On SIGTERM the daemon stops
in order (not ready, API, loops, telemetry flush, pool) within
orchestrator.shutdown_timeout (requests get half of it, the loops the rest)
and exits 0; a shutdown that did not finish in time is logged at ERROR and
exits 1; a second SIGTERM stops at once (exit 130).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Checked as server.listen is, before the database is
			// asked for anything.
			if cmd.Flags().Changed("listen") {
				if msg := config.CheckListen(listen); msg != "" {
					return &usageError{fmt.Sprintf("serve: --listen %s\nusage: %s", msg, cmd.UseLine())}
				}
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("listen") {
				cfg.Server.Listen = listen
			}
			if noMigrate {
				cfg.Database.MigrateOnStart = false
			}
			logger := NewLogger(cfg.Log, g.stderr)
			ctx, cancel := loggedSignalContext(logger)
			defer cancel()
			err = daemon.Run(ctx, cfg, logger)
			if errors.Is(err, daemon.ErrShutdownIncomplete) || errors.Is(err, daemon.ErrServeFailed) {
				return &loggedError{err}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "override server.listen (host:port)")
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "do not apply migrations at start (database.migrate_on_start=false)")
	return cmd
}

func migrateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate [up|status]",
		Short: "Apply the database migrations (default: up) or show their status",
		Long: `Apply the embedded goose migrations (schema tasker, PGMQ, worker protocol
functions) to the database in DATABASE_URL / database.url, printing each one
it applies (or that there was nothing to apply); "status" lists every
migration with when it was applied. Safe to run from several replicas at
once: they take turns on an advisory lock.`,
		Args:      maxArgs(1),
		ValidArgs: []string{"up", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			action := "up"
			if len(args) == 1 {
				action = args[0]
			}
			if action != "up" && action != "status" {
				return &usageError{"migrate: unknown action " + action + " (up, status)"}
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			switch action {
			case "up":
				// What was applied is the command's output; the log
				// keeps warnings and errors only.
				quiet := cfg.Log
				var lvl slog.Level
				if lvl.UnmarshalText([]byte(quiet.Level)) != nil || lvl < slog.LevelWarn {
					quiet.Level = "warn"
				}
				applied, err := daemon.Migrate(cmd.Context(), cfg.Database.URL, NewLogger(quiet, g.stderr))
				if err != nil {
					return err
				}
				if g.jsonOut {
					return printJSON(g.stdout, map[string]any{"applied": applied})
				}
				for _, m := range applied {
					fmt.Fprintf(g.stdout, "applied %5d  %-45s %7.1f ms\n", m.Version, m.Name, m.Seconds*1000)
				}
				if len(applied) == 0 {
					fmt.Fprintln(g.stdout, "migrations: up to date (nothing to apply)")
				} else {
					fmt.Fprintf(g.stdout, "migrations: up to date (%d applied)\n", len(applied))
				}
				return nil
			case "status":
				st, err := daemon.MigrationStatus(cmd.Context(), cfg.Database.URL)
				if err != nil {
					return err
				}
				if g.jsonOut {
					return printJSON(g.stdout, st)
				}
				for _, s := range st {
					applied := "pending"
					if s.Applied {
						applied = "applied " + s.AppliedAt
					}
					fmt.Fprintf(g.stdout, "%5d  %-40s %s\n", s.Version, s.Name, applied)
				}
			}
			return nil
		},
	}
	return cmd
}

func configCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (file + environment + defaults), secrets masked",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			// Printing is useful before the database is known: a missing
			// database.url alone is a note. Anything else serve would
			// refuse is an error here too.
			if err != nil && !config.OnlyURLMissing(err) {
				return err
			}
			masked := cfg.Masked()
			if g.jsonOut {
				m, err := masked.Map()
				if err != nil {
					return err
				}
				if err := printJSON(g.stdout, m); err != nil {
					return err
				}
			} else {
				out, err := masked.TOML()
				if err != nil {
					return err
				}
				fmt.Fprint(g.stdout, out)
			}
			if cfg.Database.URL == "" {
				fmt.Fprintln(g.stderr, "note: database.url is not set (set DATABASE_URL); serve would refuse to start")
			}
			return nil
		},
	})
	return cmd
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
