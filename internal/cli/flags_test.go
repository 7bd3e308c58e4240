package cli

import (
	"strings"
	"testing"
)

// TestOperationsFlagsRefuseBadValues: values that used to be replaced by
// defaults without a word are usage errors (exit 2) naming the flag,
// decided before the configuration or the database is looked at (the
// environment may lack DATABASE_URL).
func TestOperationsFlagsRefuseBadValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--tasks", "-5"}, "bench: --tasks must be at least 1, got -5"},
		{[]string{"bench", "--workers", "0"}, "bench: --workers must be at least 1, got 0"},
		{[]string{"bench", "--submitters", "0"}, "--submitters must be at least 1"},
		{[]string{"bench", "--concurrency", "-1"}, "--concurrency must be at least 1"},
		{[]string{"bench", "--history", "-1"}, "--history must be at least 0"},
		{[]string{"bench", "--handler-time", "-2ms"}, "bench: --handler-time must not be negative, got -2ms"},
		{[]string{"bench", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"bench", "--rate", "5"}, "needs both --rate and --duration"},
		{[]string{"bench", "--submit-batch", "0"}, "--submit-batch must be at least 1"},
		{[]string{"bench", "--submit-batch", "1001"}, "--submit-batch must be at most 1000"},
		{[]string{"bench", "--submit-batch", "10", "--rate", "5", "--duration", "1s"}, "--submit-batch is for the closed loop"},
		{[]string{"bench", "--scenario", "nope"}, `bench: --scenario: unknown scenario "nope"`},
		{[]string{"bench", "--domain-events", "Nope"}, "bench: --domain-events"},
		{[]string{"bench", "--model=fast"}, `bench: --model "fast": want bare or full`},
		{[]string{"bench", "--model", "full"}, "give --model its value with '=': --model=full"},
		{[]string{"bench", "--model", "--scenario", "diamond"}, "--model runs chains of steps (single, linear4), not scenario diamond"},
		{[]string{"events", "tail", "-n", "ecommerce", "--poll-interval", "-1s"}, "events tail: --poll-interval must be positive, got -1s"},
		{[]string{"events", "tail", "-n", "ecommerce", "--poll-interval", "0s"}, "--poll-interval must be positive"},
		{[]string{"events", "tail", "-n", "ecommerce", "--limit", "-1"}, "events tail: --limit must not be negative"},
		{[]string{"serve", "--listen", ""}, "serve: --listen is required"},
		{[]string{"serve", "--listen", "garbage"}, `serve: --listen must be host:port or :port`},
		{[]string{"serve", "--listen", "127.0.0.1:99999"}, "serve: --listen port must be a number from 0 to 65535"},
	} {
		_, errOut, code := run(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", c.args, code, c.want, errOut)
		}
	}
}
