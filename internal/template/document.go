package template

import (
	"encoding/json"
	"slices"
)

// The document types mirror the written format key for key. Parsing decodes
// into them (pointers tell a key left out from a zero written out, where the
// default differs), and JSON encodes them with every default spelled out.
// shape.go describes the same keys for the strict pre-check; a test keeps the
// two in step.

type docTemplate struct {
	Namespace         string `yaml:"namespace" json:"namespace"`
	Name              string `yaml:"name" json:"name"`
	Version           string `yaml:"version" json:"version"`
	Description       string `yaml:"description" json:"description"`
	FailurePolicy     string `yaml:"failure_policy" json:"failure_policy"`
	StaleAfterSeconds int    `yaml:"stale_after_seconds" json:"stale_after_seconds"`
	// ContextSchema is converted from its YAML node separately (see schema.go),
	// because a schema is arbitrary JSON rather than a fixed shape.
	ContextSchema json.RawMessage `yaml:"-" json:"context_schema,omitempty"`
	// DomainEvents is a pointer: left out means all, [] means none.
	DomainEvents *[]string `yaml:"domain_events" json:"domain_events"`
	Steps        []docStep `yaml:"steps" json:"steps"`
}

type docStep struct {
	Name           string     `yaml:"name" json:"name"`
	Handler        string     `yaml:"handler" json:"handler"`
	Description    string     `yaml:"description" json:"description"`
	DependsOn      []string   `yaml:"depends_on" json:"depends_on"`
	TimeoutSeconds *int       `yaml:"timeout_seconds" json:"timeout_seconds"`
	Retry          *docRetry  `yaml:"retry" json:"retry"`
	Events         []docEvent `yaml:"events" json:"events"`
}

type docRetry struct {
	MaxAttempts *int        `yaml:"max_attempts" json:"max_attempts"`
	Retryable   *bool       `yaml:"retryable" json:"retryable"`
	Backoff     *docBackoff `yaml:"backoff" json:"backoff"`
}

type docBackoff struct {
	BaseMs *int `yaml:"base_ms" json:"base_ms"`
	CapMs  *int `yaml:"cap_ms" json:"cap_ms"`
}

type docEvent struct {
	Name string `yaml:"name" json:"name"`
	On   string `yaml:"on" json:"on"`
}

// template applies the defaults. Slices are never nil in the result, so a
// list written as [] and one left out encode (and hash) the same.
func (d *docTemplate) template() *Template {
	t := &Template{
		Namespace:         d.Namespace,
		Name:              d.Name,
		Version:           d.Version,
		Description:       d.Description,
		FailurePolicy:     FailurePolicy(d.FailurePolicy),
		StaleAfterSeconds: d.StaleAfterSeconds,
		ContextSchema:     d.ContextSchema,
		DomainEvents:      slices.Clone(AllDomainEvents),
		Steps:             make([]Step, len(d.Steps)),
	}
	if t.FailurePolicy == "" {
		t.FailurePolicy = FailFast
	}
	if d.DomainEvents != nil {
		t.DomainEvents = nonNil(slices.Clone(*d.DomainEvents))
	}
	for i := range d.Steps {
		t.Steps[i] = d.Steps[i].step()
	}
	return t
}

func (d *docStep) step() Step {
	s := Step{
		Name:           d.Name,
		Handler:        d.Handler,
		Description:    d.Description,
		DependsOn:      nonNil(slices.Clone(d.DependsOn)),
		TimeoutSeconds: valueOr(d.TimeoutSeconds, DefaultTimeoutSeconds),
		Retry: Retry{
			MaxAttempts:   DefaultMaxAttempts,
			Retryable:     true,
			BackoffBaseMs: DefaultBackoffBaseMs,
			BackoffCapMs:  DefaultBackoffCapMs,
		},
		Events: make([]StepEvent, len(d.Events)),
	}
	if r := d.Retry; r != nil {
		s.Retry.MaxAttempts = valueOr(r.MaxAttempts, DefaultMaxAttempts)
		s.Retry.Retryable = valueOr(r.Retryable, true)
		if b := r.Backoff; b != nil {
			s.Retry.BackoffBaseMs = valueOr(b.BaseMs, DefaultBackoffBaseMs)
			s.Retry.BackoffCapMs = valueOr(b.CapMs, DefaultBackoffCapMs)
		}
	}
	for i, e := range d.Events {
		s.Events[i] = StepEvent{Name: e.Name, On: e.On}
		if e.On == "" {
			s.Events[i].On = DefaultEventOn
		}
	}
	return s
}

// document is the inverse of template: every setting written out.
func (t *Template) document() *docTemplate {
	d := &docTemplate{
		Namespace:         t.Namespace,
		Name:              t.Name,
		Version:           t.Version,
		Description:       t.Description,
		FailurePolicy:     string(t.FailurePolicy),
		StaleAfterSeconds: t.StaleAfterSeconds,
		ContextSchema:     t.ContextSchema,
		Steps:             make([]docStep, len(t.Steps)),
	}
	events := nonNil(slices.Clone(t.DomainEvents))
	d.DomainEvents = &events
	for i := range t.Steps {
		d.Steps[i] = t.Steps[i].document()
	}
	return d
}

func (s *Step) document() docStep {
	d := docStep{
		Name:           s.Name,
		Handler:        s.Handler,
		Description:    s.Description,
		DependsOn:      nonNil(slices.Clone(s.DependsOn)),
		TimeoutSeconds: ptr(s.TimeoutSeconds),
		Retry: &docRetry{
			MaxAttempts: ptr(s.Retry.MaxAttempts),
			Retryable:   ptr(s.Retry.Retryable),
			Backoff: &docBackoff{
				BaseMs: ptr(s.Retry.BackoffBaseMs),
				CapMs:  ptr(s.Retry.BackoffCapMs),
			},
		},
		Events: make([]docEvent, len(s.Events)),
	}
	for i, e := range s.Events {
		d.Events[i] = docEvent(e)
	}
	return d
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
