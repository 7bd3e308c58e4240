package template

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestValidateRules has one failing case per rule; each asserts the path of
// the offending field (steps by index and name) and the gist of the message.
func TestValidateRules(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name      string
		mutate    func(*Template)
		path      string
		fragments []string
	}{
		{"namespace required", func(t *Template) { t.Namespace = "" }, "namespace", []string{"is required"}},
		{"namespace invalid", func(t *Template) { t.Namespace = "Shop" }, "namespace", []string{`"Shop"`, "lowercase"}},
		{"namespace too long", func(t *Template) { t.Namespace = "a" + long(33) }, "namespace", []string{"must match"}},
		{"name required", func(t *Template) { t.Name = "" }, "name", []string{"is required"}},
		{"name invalid", func(t *Template) { t.Name = "Check-out" }, "name", []string{`"Check-out" is invalid`}},
		{"name too long", func(t *Template) { t.Name = "a" + long(MaxNameLen) }, "name", []string{"up to 63"}},
		{"version required", func(t *Template) { t.Version = "" }, "version", []string{"is required"}},
		{"version invalid", func(t *Template) { t.Version = "1.0 beta" }, "version", []string{`"1.0 beta" is invalid`}},
		{"version too long", func(t *Template) { t.Version = "1" + long(32) }, "version", []string{"up to 31"}},
		{"description too long", func(t *Template) { t.Description = long(MaxDescriptionLen + 1) }, "description", []string{"2001 characters", "at most 2000"}},
		{"description not utf-8", func(t *Template) { t.Description = "\xff" }, "description", []string{"UTF-8"}},
		{"description with NUL", func(t *Template) { t.Description = "a\x00b" }, "description", []string{"NUL"}},
		{"failure policy", func(t *Template) { t.FailurePolicy = "retry" }, "failure_policy", []string{`"fail_fast" or "hold"`, `"retry"`}},
		{"stale negative", func(t *Template) { t.StaleAfterSeconds = -1 }, "stale_after_seconds", []string{"got -1"}},
		{"stale too long", func(t *Template) { t.StaleAfterSeconds = MaxStaleAfterSeconds + 1 }, "stale_after_seconds", []string{"between 0"}},
		{"domain event unknown", func(t *Template) { t.DomainEvents = []string{"TaskCompleted", "TaskExploded"} }, "domain_events[1]", []string{`unknown domain event "TaskExploded"`}},
		{"domain event twice", func(t *Template) { t.DomainEvents = []string{"TaskFailed", "TaskFailed"} }, "domain_events[1]", []string{"listed twice"}},
		{"no steps", func(t *Template) { t.Steps = nil }, "steps", []string{"at least one step"}},
		{"too many steps", func(t *Template) { t.Steps = manySteps(MaxSteps + 1) }, "steps", []string{"1001 steps", "at most 1000"}},
		{"step name required", func(t *Template) { t.Steps[1].Name = "" }, "steps[1].name", []string{"is required"}},
		{"step name invalid", func(t *Template) { t.Steps[1].Name = "B step" }, `steps[1] ("B step").name`, []string{"is invalid"}},
		{"step name duplicate", func(t *Template) { t.Steps[2].Name = "a" }, "steps[2] (a).name", []string{`duplicate step name "a"`, "steps[0]"}},
		{"handler required", func(t *Template) { t.Steps[1].Handler = "" }, "steps[1] (b).handler", []string{"is required"}},
		{"handler invalid", func(t *Template) { t.Steps[1].Handler = "9lives" }, "steps[1] (b).handler", []string{`"9lives" is invalid`}},
		{"handler too long", func(t *Template) { t.Steps[1].Handler = "h" + long(MaxHandlerLen) }, "steps[1] (b).handler", []string{"up to 127"}},
		{"step description too long", func(t *Template) { t.Steps[2].Description = long(MaxDescriptionLen + 1) }, "steps[2] (c).description", []string{"at most 2000"}},
		{"step description with NUL", func(t *Template) { t.Steps[2].Description = "\x00" }, "steps[2] (c).description", []string{"NUL"}},
		{"context schema with NUL", func(t *Template) { t.ContextSchema = []byte(`{"type":"object","title":"\u0000"}`) }, "context_schema", []string{`\u0000`}},
		{"depends on unknown", func(t *Template) { t.Steps[1].Name = "payment"; t.Steps[2].DependsOn = []string{"a", "paymnt"} }, "steps[2] (c).depends_on[1]", []string{`unknown step "paymnt"`, `did you mean "payment"`}},
		{"depends on itself", func(t *Template) { t.Steps[1].DependsOn = []string{"b"} }, "steps[1] (b).depends_on[0]", []string{"depends on itself", "cycle: b -> b"}},
		{"depends on twice", func(t *Template) { t.Steps[2].DependsOn = []string{"b", "a", "b"} }, "steps[2] (c).depends_on[2]", []string{`"b" is listed twice`, "depends_on[0]"}},
		{"depends on empty", func(t *Template) { t.Steps[2].DependsOn = []string{""} }, "steps[2] (c).depends_on[0]", []string{"empty step name"}},
		{"too many dependencies", func(t *Template) {
			t.Steps = manySteps(MaxDependencies + 2)
			last := &t.Steps[len(t.Steps)-1]
			for i := range t.Steps[:len(t.Steps)-1] {
				last.DependsOn = append(last.DependsOn, t.Steps[i].Name)
			}
		}, "steps[101] (s101).depends_on", []string{"101 dependencies", "at most 100"}},
		{"cycle", func(t *Template) { t.Steps[0].DependsOn = []string{"c"} }, "steps[0] (a).depends_on", []string{"cycle: a -> b -> c -> a"}},
		{"max attempts zero", func(t *Template) { t.Steps[1].Retry.MaxAttempts = 0 }, "steps[1] (b).retry.max_attempts", []string{"between 1", "got 0"}},
		{"max attempts too many", func(t *Template) { t.Steps[1].Retry.MaxAttempts = MaxAttemptsLimit + 1 }, "steps[1] (b).retry.max_attempts", []string{"got 101"}},
		{"base negative", func(t *Template) { t.Steps[1].Retry.BackoffBaseMs = -5 }, "steps[1] (b).retry.backoff.base_ms", []string{"negative", "-5"}},
		{"cap below base", func(t *Template) { t.Steps[1].Retry.BackoffCapMs = 10 }, "steps[1] (b).retry.backoff.cap_ms", []string{"at least base_ms (1000)", "got 10"}},
		{"cap too large", func(t *Template) { t.Steps[1].Retry.BackoffCapMs = MaxBackoffCapMs + 1 }, "steps[1] (b).retry.backoff.cap_ms", []string{"at most"}},
		{"timeout zero", func(t *Template) { t.Steps[0].TimeoutSeconds = 0 }, "steps[0] (a).timeout_seconds", []string{"between 1 and 86400", "got 0"}},
		{"timeout too long", func(t *Template) { t.Steps[0].TimeoutSeconds = MaxTimeoutSeconds + 1 }, "steps[0] (a).timeout_seconds", []string{"got 86401"}},
		{"event name invalid", func(t *Template) { t.Steps[1].Events = []StepEvent{{"paymentCaptured", "success"}} }, "steps[1] (b).events[0].name", []string{`"paymentCaptured"`, "uppercase"}},
		{"event name built in", func(t *Template) { t.Steps[1].Events = []StepEvent{{"StepCompleted", "success"}} }, "steps[1] (b).events[0].name", []string{"built-in domain event"}},
		{"event on invalid", func(t *Template) { t.Steps[1].Events = []StepEvent{{"Paid", "sometimes"}} }, "steps[1] (b).events[0].on", []string{"success, failure or always", `"sometimes"`}},
		{"event twice", func(t *Template) { t.Steps[1].Events = []StepEvent{{"Paid", "success"}, {"Paid", "success"}} }, "steps[1] (b).events[1]", []string{"listed twice"}},
		{"schema does not compile", func(t *Template) {
			t.ContextSchema = json.RawMessage(`{"type":"object","properties":{"n":{"type":"integr"}}}`)
		}, "context_schema.properties.n.type", []string{"invalid schema", "value must be one of"}},
		{"schema bad regex", func(t *Template) {
			t.ContextSchema = json.RawMessage(`{"type":"object","properties":{"n":{"pattern":"("}}}`)
		}, "context_schema.properties.n.pattern", []string{"not valid regex"}},
		{"schema unresolvable ref", func(t *Template) {
			t.ContextSchema = json.RawMessage(`{"type":"object","properties":{"n":{"$ref":"#/$defs/missing"}}}`)
		}, "context_schema", []string{"does not compile"}},
		{"schema external ref", func(t *Template) { t.ContextSchema = json.RawMessage(`{"$ref":"file:///etc/passwd"}`) }, "context_schema", []string{"external $ref", "not allowed"}},
		{"schema not an object type", func(t *Template) { t.ContextSchema = json.RawMessage(`{"type":"array"}`) }, "context_schema", []string{`schema's type is "array"`}},
		{"schema type list without object", func(t *Template) { t.ContextSchema = json.RawMessage(`{"type":["string","null"]}`) }, "context_schema", []string{`does not include "object"`}},
		{"schema not an object", func(t *Template) { t.ContextSchema = json.RawMessage(`true`) }, "context_schema", []string{"must be an object"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmpl := mustParse(t, baseYAML)
			tc.mutate(tmpl)
			wantProblem(t, tmpl.Validate(), tc.path, tc.fragments...)
		})
	}
}

func manySteps(n int) []Step {
	steps := make([]Step, n)
	for i := range steps {
		steps[i] = Step{
			Name: fmt.Sprintf("s%d", i), Handler: "h", TimeoutSeconds: 1,
			Retry: Retry{MaxAttempts: 1, BackoffCapMs: 1},
		}
	}
	return steps
}

// TestValidateExplicitZeros checks, through Parse, that a setting written as
// 0 is validated rather than taken for "left out".
func TestValidateExplicitZeros(t *testing.T) {
	t.Parallel()
	cases := []struct{ step, path string }{
		{"{name: a, handler: h, retry: {max_attempts: 0}}", "steps[0] (a).retry.max_attempts"},
		{"{name: a, handler: h, timeout_seconds: 0}", "steps[0] (a).timeout_seconds"},
		{"{name: a, handler: h, retry: {backoff: {cap_ms: 0}}}", "steps[0] (a).retry.backoff.cap_ms"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte("namespace: shop\nname: x\nversion: v\nsteps: [" + tc.step + "]\n"))
		wantProblem(t, err, tc.path)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
namespace: Shop
name: x
version: v
failure_policy: maybe
domain_events: [TaskDone]
steps:
  - name: a
    handler: h
    depends_on: [ghost]
    timeout_seconds: 0
  - name: a
    handler: ""
    retry: {max_attempts: 0}
`))
	want := map[string]bool{
		"namespace": true, "failure_policy": true, "domain_events[0]": true,
		"steps[0] (a).depends_on[0]": true, "steps[0] (a).timeout_seconds": true,
		"steps[1] (a).name": true, "steps[1] (a).handler": true, "steps[1] (a).retry.max_attempts": true,
	}
	ps := problemsOf(t, err)
	for _, p := range ps {
		delete(want, p.Path)
	}
	if len(want) > 0 || len(ps) != 8 {
		t.Errorf("missing %v; got %d problems:\n%v", want, len(ps), err)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(ps) {
		t.Errorf("Error() has %d lines for %d problems", len(lines), len(ps))
	}
}

func TestValidateCycles(t *testing.T) {
	t.Parallel()
	chain := func(n int) string {
		var sb strings.Builder
		sb.WriteString("namespace: shop\nname: x\nversion: v\nsteps:\n")
		for i := range n {
			fmt.Fprintf(&sb, "  - {name: s%d, handler: h, depends_on: [s%d]}\n", i, (i+n-1)%n)
		}
		return sb.String()
	}
	long := func(n int) string {
		names := make([]string, n+1)
		for i := range n {
			names[i] = fmt.Sprintf("s%d", (n-i)%n)
		}
		names[n] = "s0"
		return "cycle: " + strings.Join(names, " -> ")
	}
	cases := []struct {
		name, doc, path, want string
	}{
		{"length 1", chain(1), "steps[0] (s0).depends_on[0]", "cycle: s0 -> s0"},
		{"length 2", chain(2), "steps[0] (s0).depends_on", "cycle: s0 -> s1 -> s0"},
		{"length 3", chain(3), "steps[0] (s0).depends_on", "cycle: s0 -> s1 -> s2 -> s0"},
		{"length 3 declared out of order", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: c, handler: h, depends_on: [b]}\n  - {name: a, handler: h, depends_on: [c]}\n  - {name: b, handler: h, depends_on: [a]}\n", "steps[0] (c).depends_on", "cycle: c -> a -> b -> c"},
		{"length 50", chain(50), "steps[0] (s0).depends_on", "cycle: s0 -> s1 -> s2"},
		{"cycle behind a valid prefix", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: root, handler: h}\n  - {name: p, handler: h, depends_on: [root, q]}\n  - {name: q, handler: h, depends_on: [p]}\n", "steps[1] (p).depends_on", "cycle: p -> q -> p"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.doc))
			wantProblem(t, err, tc.path, tc.want)
			if tc.name == "length 1" {
				if n := len(problemsOf(t, err)); n != 1 {
					t.Errorf("a self-dependency is reported %d times:\n%v", n, err)
				}
			}
		})
	}
	// The long cycle's whole path, and only one cycle for one loop.
	_, err := Parse([]byte(chain(50)))
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.HasPrefix(ps[0].Message, "cycle: s0 -> s1") || strings.Count(ps[0].Message, "->") != 50 {
		t.Errorf("long cycle: %v (want %s reversed)", err, long(50))
	}
	// Two separate loops are both reported.
	_, err = Parse([]byte("namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: a, handler: h, depends_on: [b]}\n  - {name: b, handler: h, depends_on: [a]}\n  - {name: c, handler: h, depends_on: [d]}\n  - {name: d, handler: h, depends_on: [c]}\n"))
	wantProblem(t, err, "steps[0] (a).depends_on", "cycle: a -> b -> a")
	wantProblem(t, err, "steps[2] (c).depends_on", "cycle: c -> d -> c")
}

func TestValidateProblemCap(t *testing.T) {
	t.Parallel()
	tmpl := mustParse(t, baseYAML)
	tmpl.Steps = manySteps(MaxSteps)
	for i := range tmpl.Steps {
		tmpl.Steps[i].Handler = ""
	}
	ps := problemsOf(t, tmpl.Validate())
	if len(ps) != maxProblems+1 || !strings.Contains(ps[maxProblems].Message, "800 more problems") {
		t.Errorf("got %d problems, last %q", len(ps), ps[len(ps)-1].Message)
	}
}

// TestNamePatternsMatchLimits keeps the patterns and the exported limits in
// agreement.
func TestNamePatternsMatchLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		what  string
		valid func(string) bool
		max   int
		first string
	}{
		{"name", nameRE.MatchString, MaxNameLen, "a"},
		{"handler", handlerRE.MatchString, MaxHandlerLen, "H"},
	}
	for _, tc := range cases {
		at := tc.first + strings.Repeat("a", tc.max-1)
		if !tc.valid(at) || tc.valid(at+"a") {
			t.Errorf("%s: the pattern does not stop at %d bytes", tc.what, tc.max)
		}
	}
}
