package bench

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tasker/tasker/internal/template"
)

// Namespace is the namespace of every benchmark template; its worker queue
// is worker_bench_queue.
const Namespace = "bench"

// Handler is the handler name of every benchmark step. The benchmark workers
// register it as a no-op that returns a tiny result.
const Handler = "bench.noop"

// Scenario is a workflow shape the benchmark runs.
type Scenario struct {
	// Name is the scenario's name and its template's name.
	Name string
	// Description is a one-line summary for help texts.
	Description string
	// steps lists each step with its parents, in a topological order.
	steps []scenarioStep
	// domainEvents, when set, is the template's domain_events list (nil:
	// the key is left out, so the template publishes all of them).
	domainEvents *[]string
}

// WithDomainEvents returns the scenario with a template that publishes only
// the given domain events (none for an empty list); nil keeps the default,
// all of them.
func (s Scenario) WithDomainEvents(events []string) Scenario {
	if events == nil {
		s.domainEvents = nil
		return s
	}
	ev := append([]string{}, events...)
	s.domainEvents = &ev
	return s
}

type scenarioStep struct {
	name    string
	parents []string
}

// StepsPerTask is the number of steps one task of the scenario runs.
func (s Scenario) StepsPerTask() int { return len(s.steps) }

// Chain is the number of steps of a scenario whose steps form one chain
// (each step the only child of the one before), 0 for any other shape.
func (s Scenario) Chain() int {
	for i, st := range s.steps {
		if i == 0 && len(st.parents) != 0 || i > 0 && (len(st.parents) != 1 || st.parents[0] != s.steps[i-1].name) {
			return 0
		}
	}
	return len(s.steps)
}

// YAML is the scenario's task template. Retry settings, timeouts and domain
// events are left at their defaults (all domain events, unless
// WithDomainEvents chose others): the benchmark measures what a user gets
// out of the box.
func (s Scenario) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "namespace: %s\nname: %s\nversion: \"1\"\ndescription: %q\n", Namespace, s.Name, s.Description)
	if s.domainEvents != nil {
		fmt.Fprintf(&b, "domain_events: [%s]\n", strings.Join(*s.domainEvents, ", "))
	}
	b.WriteString("steps:\n")
	for _, st := range s.steps {
		fmt.Fprintf(&b, "  - name: %s\n    handler: %s\n", st.name, Handler)
		if len(st.parents) > 0 {
			fmt.Fprintf(&b, "    depends_on: [%s]\n", strings.Join(st.parents, ", "))
		}
	}
	return b.String()
}

// Template parses the scenario's template.
func (s Scenario) Template() (*template.Template, error) {
	t, err := template.Parse([]byte(s.YAML()))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: template: %w", s.Name, err)
	}
	return t, nil
}

// FanoutWidth is the number of parallel steps of the fanout scenario.
const FanoutWidth = 50

var scenarios = map[string]Scenario{
	"single": {Name: "single", Description: "one step", steps: []scenarioStep{{name: "only"}}},
	"linear4": {Name: "linear4", Description: "four steps in a chain", steps: []scenarioStep{
		{name: "s1"}, {name: "s2", parents: []string{"s1"}}, {name: "s3", parents: []string{"s2"}}, {name: "s4", parents: []string{"s3"}},
	}},
	"diamond": {Name: "diamond", Description: "one step, two in parallel, one joining them", steps: []scenarioStep{
		{name: "top"}, {name: "left", parents: []string{"top"}}, {name: "right", parents: []string{"top"}},
		{name: "bottom", parents: []string{"left", "right"}},
	}},
	"fanout": fanout(),
}

func fanout() Scenario {
	s := Scenario{Name: "fanout", Description: fmt.Sprintf("one step, %d in parallel, one joining them", FanoutWidth)}
	s.steps = append(s.steps, scenarioStep{name: "root"})
	var mids []string
	for i := 0; i < FanoutWidth; i++ {
		name := fmt.Sprintf("f%02d", i)
		mids = append(mids, name)
		s.steps = append(s.steps, scenarioStep{name: name, parents: []string{"root"}})
	}
	s.steps = append(s.steps, scenarioStep{name: "join", parents: mids})
	return s
}

// ScenarioByName returns a scenario.
func ScenarioByName(name string) (Scenario, error) {
	s, ok := scenarios[name]
	if !ok {
		return Scenario{}, fmt.Errorf("unknown scenario %q (one of %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	return s, nil
}

// ScenarioNames lists the scenarios, sorted.
func ScenarioNames() []string {
	out := make([]string, 0, len(scenarios))
	for n := range scenarios {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Scenarios returns every scenario, sorted by name.
func Scenarios() []Scenario {
	out := make([]Scenario, 0, len(scenarios))
	for _, n := range ScenarioNames() {
		out = append(out, scenarios[n])
	}
	return out
}

// ParseDomainEvents reads a --domain-events value: "all" (nil: the
// template's default), "none" (an empty list) or a comma-separated list of
// the domain event types of DESIGN §7.
func ParseDomainEvents(v string) ([]string, error) {
	switch strings.TrimSpace(v) {
	case "", "all":
		return nil, nil
	case "none":
		return []string{}, nil
	}
	var out []string
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(template.AllDomainEvents, name) {
			return nil, fmt.Errorf("domain events: unknown type %q; want all, none or a list of %s", name, strings.Join(template.AllDomainEvents, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

func domainEventsLabel(events []string) string {
	switch {
	case events == nil:
		return ""
	case len(events) == 0:
		return "none"
	default:
		return strings.Join(events, ",")
	}
}
