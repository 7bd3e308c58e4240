package template

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tasker/tasker/internal/pgtext"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/suggest"
)

// Name patterns. The lengths agree with MaxNameLen and MaxHandlerLen (a test
// checks); handlers allow dots, colons, slashes and dashes so that worker
// SDKs can use their language's qualified names.
var (
	nameRE      = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	versionRE   = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$`)
	handlerRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$`)
	eventNameRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,63}$`)
)

// The ranges of the whole-number settings, worded as their problems say
// them. The checker words a number too large for an int with them too.
var (
	staleAfterLimits  = fmt.Sprintf("must be between 0 (the daemon's default) and %d", MaxStaleAfterSeconds)
	timeoutLimits     = fmt.Sprintf("must be between 1 and %d", MaxTimeoutSeconds)
	maxAttemptsLimits = fmt.Sprintf("must be between 1 (no retry) and %d", MaxAttemptsLimit)
	baseMsLimits      = fmt.Sprintf("must be between 0 and cap_ms (at most %d)", MaxBackoffCapMs)
	capMsLimits       = fmt.Sprintf("must be between base_ms and %d", MaxBackoffCapMs)
)

// Validate checks the template and returns a *ValidationError listing every
// problem found, or nil. It validates the values as they are: Parse applies
// the defaults before calling it.
func (t *Template) Validate() error {
	var p problems
	t.validateHeader(&p)
	t.validateDomainEvents(&p)
	t.validateContextSchema(&p)
	t.validateSteps(&p)
	t.validateGraph(&p)
	return p.err()
}

func (t *Template) validateHeader(p *problems) {
	switch err := queue.ValidateNamespace(t.Namespace); {
	case t.Namespace == "":
		p.add("namespace", "is required")
	case err != nil:
		p.add("namespace", "%v", err)
	}
	checkPattern(p, "name", t.Name, nameRE, "a lowercase letter, then up to 63 lowercase letters, digits or underscores")
	checkPattern(p, "version", t.Version, versionRE, "a letter or digit, then up to 31 letters, digits, '.', '+', '_' or '-'")
	checkDescription(p, "description", t.Description)
	if t.FailurePolicy != FailFast && t.FailurePolicy != Hold {
		p.add("failure_policy", "must be %q or %q, got %s", FailFast, Hold, quoteShort(string(t.FailurePolicy)))
	}
	if t.StaleAfterSeconds < 0 || t.StaleAfterSeconds > MaxStaleAfterSeconds {
		p.add("stale_after_seconds", "%s, got %d", staleAfterLimits, t.StaleAfterSeconds)
	}
}

func (t *Template) validateDomainEvents(p *problems) {
	seen := map[string]bool{}
	for i, e := range t.DomainEvents {
		path := fmt.Sprintf("domain_events[%d]", i)
		switch {
		case !slices.Contains(AllDomainEvents, e):
			p.add(path, "unknown domain event %s; known: %s", quoteShort(e), strings.Join(AllDomainEvents, ", "))
		case seen[e]:
			p.add(path, "%s is listed twice", e)
		}
		seen[e] = true
	}
}

func (t *Template) validateContextSchema(p *problems) {
	if len(t.ContextSchema) == 0 {
		return
	}
	if err := pgtext.CheckJSON(t.ContextSchema); err != nil {
		p.add("context_schema", "%v", err)
		return
	}
	if msg := schemaTypeProblem(t.ContextSchema); msg != "" {
		p.add("context_schema", "%s", msg)
		return
	}
	if _, err := compileSchema(t.ContextSchema); err != nil {
		for _, pr := range schemaProblems(t.ContextSchema, err) {
			p.add(pr.Path, "%s", pr.Message)
		}
	}
}

func (t *Template) validateSteps(p *problems) {
	switch {
	case len(t.Steps) == 0:
		p.add("steps", "at least one step is required")
	case len(t.Steps) > MaxSteps:
		p.add("steps", "has %d steps; at most %d are allowed", len(t.Steps), MaxSteps)
	}
	first := map[string]int{} // step name -> index of its first declaration
	for i := range t.Steps {
		if _, dup := first[t.Steps[i].Name]; !dup {
			first[t.Steps[i].Name] = i
		}
	}
	for i := range t.Steps {
		s := &t.Steps[i]
		path := stepPath(i, s.Name)
		if j := first[s.Name]; j != i && s.Name != "" {
			p.add(path+".name", "duplicate step name %q (first declared as steps[%d])", s.Name, j)
		}
		s.validate(p, path)
		t.validateDependsOn(p, i, first)
	}
}

func (s *Step) validate(p *problems, path string) {
	checkPattern(p, path+".name", s.Name, nameRE, "a lowercase letter, then up to 63 lowercase letters, digits or underscores")
	checkPattern(p, path+".handler", s.Handler, handlerRE, "a letter, then up to 127 letters, digits, '_', '.', ':', '/' or '-'")
	checkDescription(p, path+".description", s.Description)
	if s.TimeoutSeconds < 1 || s.TimeoutSeconds > MaxTimeoutSeconds {
		p.add(path+".timeout_seconds", "%s, got %d", timeoutLimits, s.TimeoutSeconds)
	}
	s.Retry.validate(p, path+".retry")
	validateEvents(p, path+".events", s.Events)
}

func (r Retry) validate(p *problems, path string) {
	if r.MaxAttempts < 1 || r.MaxAttempts > MaxAttemptsLimit {
		p.add(path+".max_attempts", "%s, got %d", maxAttemptsLimits, r.MaxAttempts)
	}
	if r.BackoffBaseMs < 0 {
		p.add(path+".backoff.base_ms", "must not be negative, got %d", r.BackoffBaseMs)
	}
	switch {
	case r.BackoffCapMs < r.BackoffBaseMs:
		p.add(path+".backoff.cap_ms", "must be at least base_ms (%d), got %d", r.BackoffBaseMs, r.BackoffCapMs)
	case r.BackoffCapMs > MaxBackoffCapMs:
		p.add(path+".backoff.cap_ms", "must be at most %d, got %d", MaxBackoffCapMs, r.BackoffCapMs)
	}
}

func validateEvents(p *problems, path string, events []StepEvent) {
	seen := map[StepEvent]bool{}
	for i, e := range events {
		ep := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !eventNameRE.MatchString(e.Name):
			p.add(ep+".name", "must be an uppercase letter, then up to 63 letters or digits (like PaymentCaptured), got %s", quoteShort(e.Name))
		case slices.Contains(AllDomainEvents, e.Name):
			// Consumers tell the engine's events from business events by type.
			p.add(ep+".name", "%s is a built-in domain event; choose another name", e.Name)
		}
		switch e.On {
		case EventOnSuccess, EventOnFailure, EventOnAlways:
		default:
			p.add(ep+".on", "must be %s, %s or %s, got %s", EventOnSuccess, EventOnFailure, EventOnAlways, quoteShort(e.On))
		}
		if seen[e] {
			p.add(ep, "event %s on %s is listed twice", quoteShort(e.Name), e.On)
		}
		seen[e] = true
	}
}

// validateDependsOn checks step i's parent list; first maps names to the
// index of their first declaration.
func (t *Template) validateDependsOn(p *problems, i int, first map[string]int) {
	s := &t.Steps[i]
	path := stepPath(i, s.Name) + ".depends_on"
	if len(s.DependsOn) > MaxDependencies {
		p.add(path, "has %d dependencies; at most %d are allowed", len(s.DependsOn), MaxDependencies)
	}
	seen := map[string]int{}
	for j, dep := range s.DependsOn {
		dp := fmt.Sprintf("%s[%d]", path, j)
		_, known := first[dep]
		switch prev, dup := seen[dep]; {
		case dep == s.Name:
			p.add(dp, "step depends on itself (cycle: %s -> %s)", dep, dep)
		case dup:
			p.add(dp, "%s is listed twice (also depends_on[%d])", quoteShort(dep), prev)
		case !known && !p.full():
			p.add(dp, "%s", t.unknownStepMessage(dep))
		case !known:
			p.add(dp, "unknown step") // only counted: the list is full
		}
		if _, dup := seen[dep]; !dup {
			seen[dep] = j
		}
	}
}

func (t *Template) unknownStepMessage(dep string) string {
	msg := "unknown step " + quoteShort(dep)
	if dep == "" {
		msg = "empty step name"
	}
	names := make([]string, len(t.Steps))
	for i := range t.Steps {
		names[i] = t.Steps[i].Name
	}
	// A suggestion costs an edit distance per step; MaxSteps bounds it.
	if len(names) > MaxSteps {
		return msg
	}
	if guess, ok := suggest.Closest(dep, names); ok {
		msg += fmt.Sprintf(" (did you mean %q?)", guess)
	}
	return msg
}

func checkPattern(p *problems, path, v string, re *regexp.Regexp, want string) {
	switch {
	case v == "":
		p.add(path, "is required")
	case !re.MatchString(v):
		p.add(path, "%s is invalid: must be %s", quoteShort(v), want)
	}
}

func checkDescription(p *problems, path, d string) {
	if err := pgtext.CheckText(d); err != nil {
		p.add(path, "%v", err)
	} else if n := utf8.RuneCountInString(d); n > MaxDescriptionLen {
		p.add(path, "is %d characters long; at most %d are allowed", n, MaxDescriptionLen)
	}
}
