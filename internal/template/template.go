package template

import (
	"encoding/json"
	"slices"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Defaults applied to settings a template leaves out.
const (
	// DefaultMaxAttempts is how many times a step runs before it fails for good.
	DefaultMaxAttempts = 3
	// DefaultBackoffBaseMs is the backoff ceiling after the first failed attempt.
	DefaultBackoffBaseMs = 1000
	// DefaultBackoffCapMs bounds the backoff ceiling however many attempts failed.
	DefaultBackoffCapMs = 60000
	// DefaultTimeoutSeconds is how long one attempt of a step may run.
	DefaultTimeoutSeconds = 300
	// DefaultEventOn is when a step event is published if its `on` is left out.
	DefaultEventOn = EventOnSuccess
)

// Limits. They keep one template's cost to the engine bounded (rows per task,
// edges per step, timer ranges) and keep names usable in queue messages,
// metrics labels and database columns.
const (
	// MaxSteps is the most steps one template may declare.
	MaxSteps = 1000
	// MaxDependencies is the most parents (depends_on entries) one step may have.
	MaxDependencies = 100
	// MaxNameLen is the longest template or step name, in bytes.
	MaxNameLen = 64
	// MaxHandlerLen is the longest handler name, in bytes.
	MaxHandlerLen = 128
	// MaxDescriptionLen is the longest description, in characters.
	MaxDescriptionLen = 2000
	// MaxAttemptsLimit is the largest max_attempts a step may ask for.
	MaxAttemptsLimit = 100
	// MaxTimeoutSeconds is the longest timeout_seconds a step may ask for (a day).
	MaxTimeoutSeconds = 86400
	// MaxBackoffCapMs is the largest backoff cap_ms a step may ask for (a day).
	MaxBackoffCapMs = 86_400_000
	// MaxStaleAfterSeconds is the largest stale_after_seconds (30 days).
	MaxStaleAfterSeconds = 30 * 86400
	// MaxDocumentBytes is the largest template document Parse and ParseJSON read.
	MaxDocumentBytes = 4 << 20
)

// FailurePolicy says what happens to a task once one of its steps has failed
// permanently.
type FailurePolicy string

const (
	// FailFast moves the task from blocked_by_failures to error at once.
	FailFast FailurePolicy = "fail_fast"
	// Hold leaves the task in blocked_by_failures for an operator to resolve
	// or retry.
	Hold FailurePolicy = "hold"
)

// When a step event is published, relative to the step's result.
const (
	EventOnSuccess = "success"
	EventOnFailure = "failure"
	EventOnAlways  = "always"
)

// AllDomainEvents are the domain events the engine can publish (DESIGN.md §7),
// in lifecycle order. A template that does not list domain_events publishes
// all of them.
var AllDomainEvents = []string{
	"TaskInitiated",
	"StepCompleted",
	"StepFailed",
	"WorkflowProgressed",
	"TaskCompleted",
	"TaskFailed",
	"TaskCancelled",
}

// Template is a parsed, defaulted workflow definition. Values returned by
// Parse, ParseJSON and LoadDir have every default filled in and are valid;
// treat them as read-only, as they are shared by every task of the template.
type Template struct {
	Namespace   string
	Name        string
	Version     string
	Description string
	// FailurePolicy is FailFast or Hold.
	FailurePolicy FailurePolicy
	// StaleAfterSeconds is how long a task may go without progress before the
	// reaper treats it as stale; 0 means the daemon's default.
	StaleAfterSeconds int
	// ContextSchema is the JSON Schema the task context must satisfy, in
	// canonical JSON (compact, keys sorted); nil when the template has none.
	ContextSchema json.RawMessage
	// DomainEvents are the domain event types tasks of this template publish;
	// empty means none.
	DomainEvents []string
	// Steps in declaration order.
	Steps []Step

	// cache holds the compiled context schema. A pointer, so that copying a
	// Template copies no lock; copies share it, which is safe because the
	// cache is keyed by the schema's bytes.
	cache *schemaCache
	// byName indexes Steps by name for StepByName, built when a template
	// is parsed (nil for one built by hand). A hint only: StepByName checks
	// the name at the index and scans Steps when it differs.
	byName map[string]int
}

// Step is one node of the workflow DAG.
type Step struct {
	Name        string
	Handler     string
	Description string
	// DependsOn names the steps that must be complete (or resolved manually)
	// before this one is ready. Never nil in a parsed template.
	DependsOn      []string
	TimeoutSeconds int
	Retry          Retry
	// Events are custom business events published with the step's result.
	// Never nil in a parsed template.
	Events []StepEvent
}

// Retry is a step's retry policy.
type Retry struct {
	// MaxAttempts counts the first attempt: 1 means no retry.
	MaxAttempts int
	// Retryable false means a failure is permanent whatever MaxAttempts says.
	Retryable bool
	// BackoffBaseMs and BackoffCapMs shape the delay between attempts; see
	// Backoff.
	BackoffBaseMs int
	BackoffCapMs  int
}

// StepEvent is a custom business event a step publishes with its result.
type StepEvent struct {
	Name string
	// On is EventOnSuccess, EventOnFailure or EventOnAlways.
	On string
}

// schemaCache holds the compiled form of one ContextSchema.
type schemaCache struct {
	mu     sync.Mutex
	src    []byte
	schema *jsonschema.Schema
	err    error
}

// Key identifies a template version: "namespace/name@version".
func (t *Template) Key() string {
	return t.Namespace + "/" + t.Name + "@" + t.Version
}

// StepByName returns the step called name. The engine asks it for every
// pending step it evaluates, so a parsed template answers from an index.
func (t *Template) StepByName(name string) (*Step, bool) {
	if i, ok := t.byName[name]; ok && i < len(t.Steps) && t.Steps[i].Name == name {
		return &t.Steps[i], true
	}
	for i := range t.Steps {
		if t.Steps[i].Name == name {
			return &t.Steps[i], true
		}
	}
	return nil, false
}

// PublishesDomainEvent reports whether tasks of this template publish domain
// events of eventType.
func (t *Template) PublishesDomainEvent(eventType string) bool {
	return slices.Contains(t.DomainEvents, eventType)
}
