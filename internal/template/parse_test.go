package template

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var deepEqual = reflect.DeepEqual

func TestParseDemo(t *testing.T) {
	t.Parallel()
	tmpl, err := Parse(readDemo(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tmpl.Key(), "ecommerce/order_fulfillment@1.0.0"; got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	if tmpl.FailurePolicy != FailFast || tmpl.StaleAfterSeconds != 3600 {
		t.Errorf("policy %q, stale %d", tmpl.FailurePolicy, tmpl.StaleAfterSeconds)
	}
	if !slices.Equal(tmpl.DomainEvents, AllDomainEvents) {
		t.Errorf("DomainEvents = %v", tmpl.DomainEvents)
	}
	wantSteps := []Step{
		{Name: "validate_cart", Handler: "ecommerce.validate_cart", DependsOn: []string{}, TimeoutSeconds: 30,
			Retry: Retry{MaxAttempts: 3, Retryable: true, BackoffBaseMs: 1000, BackoffCapMs: 60000}, Events: []StepEvent{}},
		{Name: "process_payment", Handler: "ecommerce.process_payment", DependsOn: []string{"validate_cart"}, TimeoutSeconds: 60,
			Retry:  Retry{MaxAttempts: 5, Retryable: true, BackoffBaseMs: 2000, BackoffCapMs: 120000},
			Events: []StepEvent{{"PaymentCaptured", "success"}, {"PaymentDeclined", "failure"}}},
		{Name: "update_inventory", Handler: "ecommerce.update_inventory", DependsOn: []string{"validate_cart"}, TimeoutSeconds: 30,
			Retry: Retry{MaxAttempts: 3, Retryable: true, BackoffBaseMs: 1000, BackoffCapMs: 60000}, Events: []StepEvent{}},
		{Name: "create_order", Handler: "ecommerce.create_order", DependsOn: []string{"process_payment", "update_inventory"}, TimeoutSeconds: DefaultTimeoutSeconds,
			Retry:  Retry{MaxAttempts: DefaultMaxAttempts, Retryable: true, BackoffBaseMs: DefaultBackoffBaseMs, BackoffCapMs: DefaultBackoffCapMs},
			Events: []StepEvent{{"OrderCreated", "success"}}},
		{Name: "send_confirmation", Handler: "ecommerce.send_confirmation", DependsOn: []string{"create_order"}, TimeoutSeconds: DefaultTimeoutSeconds,
			Retry: Retry{MaxAttempts: 10, Retryable: true, BackoffBaseMs: 500, BackoffCapMs: 300000}, Events: []StepEvent{}},
	}
	if len(tmpl.Steps) != len(wantSteps) {
		t.Fatalf("%d steps, want %d", len(tmpl.Steps), len(wantSteps))
	}
	for i, want := range wantSteps {
		got := tmpl.Steps[i]
		got.Description = ""
		if !reflect.DeepEqual(got, want) {
			t.Errorf("steps[%d]:\n got %+v\nwant %+v", i, got, want)
		}
		if tmpl.Steps[i].Description == "" {
			t.Errorf("steps[%d] lost its description", i)
		}
	}
	wantOrder := []string{"validate_cart", "process_payment", "update_inventory", "create_order", "send_confirmation"}
	if got := tmpl.TopologicalOrder(); !slices.Equal(got, wantOrder) {
		t.Errorf("TopologicalOrder = %v", got)
	}
	var schema map[string]any
	if err := json.Unmarshal(tmpl.ContextSchema, &schema); err != nil || schema["type"] != "object" {
		t.Errorf("ContextSchema = %s (%v)", tmpl.ContextSchema, err)
	}
	if s, ok := tmpl.StepByName("create_order"); !ok || s.Handler != "ecommerce.create_order" {
		t.Errorf("StepByName(create_order) = %+v, %v", s, ok)
	}
	if _, ok := tmpl.StepByName("nope"); ok {
		t.Error("StepByName(nope) found a step")
	}
	if !tmpl.PublishesDomainEvent("TaskCompleted") || tmpl.PublishesDomainEvent("PaymentCaptured") {
		t.Error("PublishesDomainEvent is wrong")
	}
}

// TestShippedTemplates keeps every template in config/templates loadable.
func TestShippedTemplates(t *testing.T) {
	t.Parallel()
	tmpls, err := LoadDir(filepath.Dir(demoPath))
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpls) == 0 || !slices.ContainsFunc(tmpls, func(t *Template) bool { return t.Key() == "ecommerce/order_fulfillment@1.0.0" }) {
		t.Errorf("the demo is not among %d templates", len(tmpls))
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	tmpl := mustParse(t, `
namespace: shop
name: checkout
version: 2
steps:
  - name: only
    handler: h
    events: [{name: Done}]
`)
	if tmpl.Version != "2" || tmpl.FailurePolicy != FailFast || tmpl.StaleAfterSeconds != 0 || tmpl.ContextSchema != nil {
		t.Errorf("header defaults: %+v", tmpl)
	}
	if !slices.Equal(tmpl.DomainEvents, AllDomainEvents) {
		t.Errorf("DomainEvents = %v, want all", tmpl.DomainEvents)
	}
	s := tmpl.Steps[0]
	want := Retry{MaxAttempts: DefaultMaxAttempts, Retryable: true, BackoffBaseMs: DefaultBackoffBaseMs, BackoffCapMs: DefaultBackoffCapMs}
	if s.Retry != want || s.TimeoutSeconds != DefaultTimeoutSeconds || s.DependsOn == nil {
		t.Errorf("step defaults: %+v", s)
	}
	if s.Events[0].On != DefaultEventOn {
		t.Errorf("event on = %q", s.Events[0].On)
	}

	none := mustParse(t, "namespace: shop\nname: x\nversion: v\ndomain_events: []\nsteps: [{name: a, handler: h, retry: {retryable: false, backoff: {base_ms: 0}}}]\n")
	if none.DomainEvents == nil || len(none.DomainEvents) != 0 || none.PublishesDomainEvent("TaskCompleted") {
		t.Errorf("domain_events: [] gave %#v", none.DomainEvents)
	}
	if r := none.Steps[0].Retry; r.Retryable || r.BackoffBaseMs != 0 || r.BackoffCapMs != DefaultBackoffCapMs {
		t.Errorf("explicit retry settings lost: %+v", r)
	}
}

// TestParseStrict covers what the checker refuses before validation: each
// message must name the key or field and the line.
func TestParseStrict(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		doc       string
		path      string
		fragments []string
	}{
		{"unknown top-level key", "namespace: shop\nname: x\nversion: v\nstepz: []\n", "", []string{`line 4: unknown key "stepz"`, `did you mean "steps"`}},
		{"unknown step key", "namespace: shop\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    retires: 3\n", "steps[0] (a)", []string{`line 7: unknown key "retires"`, "known keys: name, handler"}},
		{"unknown retry key", "namespace: shop\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    retry: {max_attempt: 3}\n", "steps[0] (a).retry", []string{`line 7: unknown key "max_attempt"`, `did you mean "max_attempts"`}},
		{"unknown backoff key", "namespace: shop\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    retry: {backoff: {base: 3}}\n", "steps[0] (a).retry.backoff", []string{`unknown key "base"`}},
		{"unknown event key", "namespace: shop\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    events: [{name: Foo, when: success}]\n", "steps[0] (a).events[0]", []string{`unknown key "when"`}},
		{"duplicate key", "namespace: shop\nname: x\nname: y\nversion: v\nsteps: []\n", "name", []string{"line 3: duplicate key (first at line 2)"}},
		{"string for int", "namespace: shop\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    timeout_seconds: soon\n", "steps[0] (a).timeout_seconds", []string{`line 7: expected an integer, got a string "soon"`}},
		{"float for int", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: a, handler: h, timeout_seconds: 1.5}\n", "steps[0] (a).timeout_seconds", []string{"expected an integer"}},
		{"int out of range", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: a, handler: h, timeout_seconds: 99999999999999999999}\n", "steps[0] (a).timeout_seconds", []string{"line 5: must be between 1 and 86400, got 99999999999999999999"}},
		{"yes is not a bool", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: a, handler: h, retry: {retryable: yes}}\n", "steps[0] (a).retry.retryable", []string{"expected true or false"}},
		{"bool for string", "namespace: shop\nname: true\nversion: v\nsteps: []\n", "name", []string{"expected a string, got true (quote it)"}},
		{"mapping for list", "namespace: shop\nname: x\nversion: v\nsteps: {name: a}\n", "steps", []string{"line 4: expected a list, got a mapping"}},
		{"scalar for step", "namespace: shop\nname: x\nversion: v\nsteps: [a]\n", "steps[0]", []string{"expected a mapping"}},
		{"list of strings", "namespace: shop\nname: x\nversion: v\nsteps: [{name: a, handler: h, depends_on: [[b]]}]\n", "steps[0] (a).depends_on[0]", []string{"expected a string, got a list"}},
		{"not a mapping", "- a\n- b\n", "", []string{"a template must be a mapping, got a list"}},
		{"empty", "", "", []string{"empty"}},
		{"only a comment", "# nothing\n", "", []string{"empty"}},
		{"two documents", "namespace: shop\n---\nnamespace: other\n", "", []string{"line 2", "second YAML document"}},
		{"syntax error", "namespace: shop\n  name: [\n", "", []string{"line"}},
		{"schema not a mapping", "namespace: shop\nname: x\nversion: v\ncontext_schema: [a]\nsteps: [{name: a, handler: h}]\n", "context_schema", []string{"line 4: a JSON Schema must be a mapping"}},
		{"schema infinite number", "namespace: shop\nname: x\nversion: v\ncontext_schema: {type: object, maximum: .inf}\nsteps: [{name: a, handler: h}]\n", "context_schema", []string{"maximum", "not a JSON number"}},
		{"schema non-string key", "namespace: shop\nname: x\nversion: v\ncontext_schema: {type: object, properties: {1: {}}}\nsteps: [{name: a, handler: h}]\n", "context_schema", []string{"key 1 is not a string"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.doc))
			wantProblem(t, err, tc.path, tc.fragments...)
		})
	}
}

func TestParseStrictReportsAllAtOnce(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("namespace: shop\nname: x\nversion: v\nextra: 1\nsteps:\n  - name: a\n    handler: h\n    timeout_seconds: x\n    colour: red\n"))
	if got := len(problemsOf(t, err)); got != 3 {
		t.Errorf("want 3 problems, got %d:\n%v", got, err)
	}
}

func TestParseYAMLFeatures(t *testing.T) {
	t.Parallel()
	// Anchors and merge keys are ordinary YAML and share retry settings.
	tmpl := mustParse(t, `
namespace: shop
name: x
version: 1.10
context_schema:
  type: object
  properties:
    day: {type: string, const: 2024-01-31}
steps:
  - &base
    name: a
    handler: h
    retry: &patient {max_attempts: 9}
  - <<: *base
    name: b
    depends_on: [a]
  - name: c
    handler: h
    retry: *patient
`)
	if tmpl.Version != "1.10" {
		t.Errorf("version %q: a YAML number used as a string must keep its spelling", tmpl.Version)
	}
	for _, s := range tmpl.Steps {
		if s.Retry.MaxAttempts != 9 {
			t.Errorf("%s: max_attempts %d, want 9 from the anchor", s.Name, s.Retry.MaxAttempts)
		}
	}
	if !strings.Contains(string(tmpl.ContextSchema), `"const":"2024-01-31"`) {
		t.Errorf("a date in a schema must stay a string: %s", tmpl.ContextSchema)
	}
	// A merge that brings in an unknown key is still caught.
	_, err := Parse([]byte("namespace: shop\nname: x\nversion: v\nsteps:\n  - &s {name: a, handler: h}\n  - {<<: [*s, {colour: red}], name: b}\n"))
	wantProblem(t, err, "steps[1] (b)", `unknown key "colour"`)
}

func TestParseJSONStrict(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		doc       string
		path      string
		fragments []string
	}{
		{"unknown key", `{"namespace":"shop","name":"x","version":"v",` + "\n" + `"Steps":[]}`, "", []string{`line 2: unknown key "Steps"`}},
		{"duplicate key", `{"namespace":"shop","name":"x","name":"y","version":"v","steps":[]}`, "name", []string{"duplicate key"}},
		{"number for string", `{"namespace":"shop","name":"x","version":1,"steps":[]}`, "version", []string{"expected a string"}},
		{"string for int", `{"namespace":"shop","name":"x","version":"v","steps":[{"name":"a","handler":"h","timeout_seconds":"30"}]}`, "steps[0] (a).timeout_seconds", []string{"expected an integer"}},
		{"trailing data", `{"namespace":"shop"} {}`, "", []string{"unexpected data after"}},
		{"syntax", "{\n\"namespace\": shop}", "", []string{"line 2", "invalid JSON"}},
		{"truncated", `{"namespace":`, "", []string{"ends early"}},
		{"empty", ``, "", []string{"the document is empty"}},
		{"blank", " \r\n\t", "", []string{"the document is empty"}},
		{"array", `[]`, "", []string{"must be a mapping"}},
		{"deep", strings.Repeat("[", 300) + strings.Repeat("]", 300), "", []string{"nested more than"}},
		{"duplicate key in schema", `{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object","type":"string"},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", []string{`line 1: duplicate key "type"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseJSON([]byte(tc.doc))
			wantProblem(t, err, tc.path, tc.fragments...)
		})
	}
}

// TestNumbersNoIntHoldsNameTheField: a number too large for an int, or
// not a whole number, in any whole-number setting is refused at the
// setting's path in plain words, the same from JSON as from YAML. The YAML
// decoder used to refuse JSON's numbers first, in its own terms ("cannot
// decode !!float ... as a !!int") and without a path.
func TestNumbersNoIntHoldsNameTheField(t *testing.T) {
	t.Parallel()
	// Every whole-number setting, found from the format's description so
	// that a new one is covered too: its keys and its path in a problem.
	type intField struct {
		keys []string
		path string
	}
	var fields []intField
	var walk func(s *shape, keys []string, path string)
	walk = func(s *shape, keys []string, path string) {
		for _, f := range s.fields {
			k, p := append(slices.Clone(keys), f.key), join(path, f.key)
			switch f.shape.kind {
			case kindInt:
				fields = append(fields, intField{k, p})
			case kindMap:
				walk(f.shape, k, p)
			case kindList:
				if f.key == "steps" {
					walk(f.shape.elem, k, "steps[0] (a)")
				}
			}
		}
	}
	walk(templateShape, nil, "")
	if len(fields) < 5 {
		t.Fatalf("found only %v", fields)
	}
	// doc is the base template with the setting at keys written as lit.
	doc := func(keys []string, lit string) string {
		const mark = "NUMBER_HERE"
		step := map[string]any{"name": "a", "handler": "h"}
		root := map[string]any{"namespace": "shop", "name": "x", "version": "v", "steps": []any{step}}
		m := root
		if keys[0] == "steps" {
			m, keys = step, keys[1:]
		}
		for _, k := range keys[:len(keys)-1] {
			inner := map[string]any{}
			m[k], m = inner, inner
		}
		m[keys[len(keys)-1]] = mark
		b, err := json.Marshal(root)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(string(b), `"`+mark+`"`, lit, 1)
	}
	cases := []struct{ lit, want string }{
		{"99999999999999999999999", ", got 99999999999999999999999"},
		{"-99999999999999999999999", ", got -99999999999999999999999"},
		{"9223372036854775808", ", got 9223372036854775808"},
		{"-9223372036854775809", ", got -9223372036854775809"},
		{"1" + strings.Repeat("0", 400), "(401 characters)"},
		{"1.5", `expected an integer, got a number "1.5"`},
		{"1e400", `expected an integer, got a number "1e400"`},
		{"-1e400", `expected an integer, got a number "-1e400"`},
	}
	for _, f := range fields {
		for _, tc := range cases {
			// JSON is YAML too: the same text read as YAML (plain scalars,
			// resolved YAML's way) must give the same problem.
			text := doc(f.keys, tc.lit)
			for format, parse := range map[string]func([]byte) (*Template, error){"json": ParseJSON, "yaml": Parse} {
				_, err := parse([]byte(text))
				probs := problemsOf(t, err)
				if len(probs) != 1 || probs[0].Path != f.path || !strings.Contains(probs[0].Message, tc.want) || strings.Contains(probs[0].Message, "!!") {
					t.Errorf("%s %s = %s: want one problem at %s saying %q, got:\n%v", format, f.path, tc.lit, f.path, tc.want, err)
				}
				if !strings.HasPrefix(tc.want, "expected") && !strings.HasPrefix(probs[0].Message, "line 1: must be between ") {
					t.Errorf("%s %s = %s: %q does not give the range", format, f.path, tc.lit, probs[0].Message)
				}
			}
		}
	}
	// Block YAML says the same, with the line.
	_, err := Parse([]byte("namespace: shop\nname: x\nversion: v\nstale_after_seconds: 1e400\nsteps:\n  - name: a\n    handler: h\n    timeout_seconds: -99999999999999999999999\n"))
	wantProblem(t, err, "stale_after_seconds", `line 4: expected an integer, got a number "1e400"`)
	wantProblem(t, err, "steps[0] (a).timeout_seconds", "line 8: must be between 1 and 86400, got -99999999999999999999999")
}

// TestSchemaNumbersBeyondInt64: a context schema is arbitrary JSON, so an
// integer too large for 64 bits is a number like any other, read the same
// from JSON as from YAML; one too large for a float64 (which canonical JSON
// uses) is refused at its path. Neither reaches the user in the decoder's
// words.
func TestSchemaNumbersBeyondInt64(t *testing.T) {
	t.Parallel()
	withSchema := func(schema string) string {
		return `{"namespace":"shop","name":"x","version":"v","context_schema":` + schema + `,"steps":[{"name":"a","handler":"h"}]}`
	}
	big := withSchema(`{"type":"object","properties":{"n":{"type":"integer","maximum":99999999999999999999999,"minimum":-99999999999999999999999}}}`)
	fromJSON, err := ParseJSON([]byte(big))
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	fromYAML := mustParse(t, "namespace: shop\nname: x\nversion: v\ncontext_schema:\n  type: object\n  properties:\n    n: {type: integer, maximum: 99999999999999999999999, minimum: -99999999999999999999999}\nsteps: [{name: a, handler: h}]\n")
	if fromJSON.Hash() != fromYAML.Hash() {
		t.Errorf("the same schema hashes differently from JSON and YAML:\n%s\n%s", fromJSON.ContextSchema, fromYAML.ContextSchema)
	}
	if err := fromJSON.ValidateContext([]byte(`{"n":5}`)); err != nil {
		t.Errorf("context within the bounds: %v", err)
	}
	for _, lit := range []string{"1e400", "-1e400", "1" + strings.Repeat("0", 400)} {
		text := withSchema(`{"type":"object","properties":{"n":{"maximum":` + lit + `}}}`)
		for format, parse := range map[string]func([]byte) (*Template, error){"json": ParseJSON, "yaml": Parse} {
			_, err := parse([]byte(text))
			probs := problemsOf(t, err)
			if len(probs) != 1 || probs[0].Path != "context_schema.properties.n.maximum" || !strings.Contains(probs[0].Message, "out of range") || strings.Contains(probs[0].Message, "!!") {
				t.Errorf("%s maximum %.20s: want one problem at context_schema.properties.n.maximum, got:\n%v", format, lit, err)
			}
		}
	}
}

// TestParseJSONRefusesTextPostgresCannotStore: invalid UTF-8 and unpaired
// surrogate escapes in a JSON template's strings are refused at their path,
// as YAML's parser refuses them, rather than stored as the U+FFFD
// encoding/json puts in their place.
func TestParseJSONRefusesTextPostgresCannotStore(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, doc, path, want string
	}{
		{"description UTF-8", `{"namespace":"shop","name":"x","version":"v","description":"a` + "\xff" + `b","steps":[{"name":"a","handler":"h"}]}`, "description", "is not valid UTF-8"},
		{"description surrogate", `{"namespace":"shop","name":"x","version":"v","description":"a\ud800b","steps":[{"name":"a","handler":"h"}]}`, "description", "unpaired UTF-16 surrogate"},
		{"low surrogate alone", `{"namespace":"shop","name":"x","version":"v","description":"\udc00","steps":[{"name":"a","handler":"h"}]}`, "description", "unpaired UTF-16 surrogate"},
		{"namespace", `{"namespace":"sh` + "\xc3" + `op","name":"x","version":"v","steps":[{"name":"a","handler":"h"}]}`, "namespace", "is not valid UTF-8"},
		{"step description", `{"namespace":"shop","name":"x","version":"v","steps":[{"name":"a","handler":"h","description":"\ud800\ud800"}]}`, "steps[0] (a).description", "surrogate"},
		{"depends_on item", `{"namespace":"shop","name":"x","version":"v","steps":[{"name":"a","handler":"h"},{"name":"b","handler":"h","depends_on":["a` + "\xff" + `"]}]}`, "steps[1] (b).depends_on[0]", "is not valid UTF-8"},
		{"domain_events item", `{"namespace":"shop","name":"x","version":"v","domain_events":["\udfff"],"steps":[{"name":"a","handler":"h"}]}`, "domain_events[0]", "surrogate"},
		{"event name", `{"namespace":"shop","name":"x","version":"v","steps":[{"name":"a","handler":"h","events":[{"name":"Paid\ud800"}]}]}`, "steps[0] (a).events[0].name", "surrogate"},
		{"key", `{"namespace":"shop","name":"x","version":"v","descr` + "\xff" + `iption":"","steps":[{"name":"a","handler":"h"}]}`, "", "line 1: a key is not valid UTF-8"},
		{"schema string", `{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object",` + "\n" + `"title":"\ud800"},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", "line 2: contains an unpaired UTF-16 surrogate"},
		{"schema key", `{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object","properties":{"` + "\xff" + `":{}}},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", "is not valid UTF-8"},
		{"schema deep", `{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object","properties":{"n":{"enum":["ok",["\udc00"]]}}},"steps":[{"name":"a","handler":"h"}]}`, "context_schema", "surrogate"},
	}
	for _, tc := range cases {
		_, err := ParseJSON([]byte(tc.doc))
		probs := problemsOf(t, err)
		if len(probs) != 1 || probs[0].Path != tc.path || !strings.Contains(probs[0].Message, tc.want) {
			t.Errorf("%s: want one problem at %q saying %q, got:\n%v", tc.name, tc.path, tc.want, err)
		}
		if _, err := Parse([]byte(tc.doc)); err == nil {
			t.Errorf("%s: YAML accepts what JSON refuses", tc.name)
		}
	}
	// What encoding/json decodes faithfully stays accepted: a surrogate
	// pair, and U+FFFD itself, escaped or not.
	tmpl, err := ParseJSON([]byte(`{"namespace":"shop","name":"x","version":"v","description":"\ud83d\ude00 \ufffd \uFFFD","context_schema":{"type":"object","title":"\ufffd\ud83d\ude00"},"steps":[{"name":"a","handler":"h"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "\U0001F600 \uFFFD \uFFFD"; tmpl.Description != want {
		t.Errorf("description %q, want %q", tmpl.Description, want)
	}
}

func TestParseTooLarge(t *testing.T) {
	t.Parallel()
	big := make([]byte, MaxDocumentBytes+1)
	for _, parse := range []func([]byte) (*Template, error){Parse, ParseJSON} {
		_, err := parse(big)
		wantProblem(t, err, "", "at most")
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yml", strings.Replace(baseYAML, "checkout", "b_flow", 1))
	write("a.yaml", strings.Replace(baseYAML, "checkout", "a_flow", 1))
	write("notes.txt", "not a template")
	write(".a.yaml.swp", "junk")

	got, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a_flow" || got[1].Name != "b_flow" {
		t.Fatalf("LoadDir = %v", got)
	}

	write("c.yaml", "namespace: shop\nname: c\nversion: v\nsteps: []\n")
	write("d.yaml", strings.Replace(baseYAML, "checkout", "a_flow", 1))
	_, err = LoadDir(dir)
	if err == nil {
		t.Fatal("LoadDir accepted a broken file")
	}
	for _, want := range []string{filepath.Join(dir, "c.yaml"), "at least one step", filepath.Join(dir, "d.yaml"), "shop/a_flow@1 is already defined in " + filepath.Join(dir, "a.yaml")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Error("a file's validation error is not reachable with errors.As")
	}

	if _, err := LoadDir(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: %v", err)
	}
}

// TestShapeMatchesDocument keeps the strict checker's description of the
// format and the decoding structs in step: a key known to one and not the
// other would be either refused or silently dropped.
func TestShapeMatchesDocument(t *testing.T) {
	t.Parallel()
	check := func(s *shape, typ reflect.Type, where string) {
		t.Helper()
		var tags []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			yamlTag, jsonTag := f.Tag.Get("yaml"), strings.Split(f.Tag.Get("json"), ",")[0]
			if yamlTag != "-" && yamlTag != jsonTag {
				t.Errorf("%s.%s: yaml tag %q, json tag %q", where, f.Name, yamlTag, jsonTag)
			}
			tags = append(tags, jsonTag)
		}
		if !slices.Equal(tags, s.keys()) {
			t.Errorf("%s: struct keys %v, shape keys %v", where, tags, s.keys())
		}
	}
	step, _ := templateShape.field("steps")
	retry, _ := step.elem.field("retry")
	backoff, _ := retry.field("backoff")
	events, _ := step.elem.field("events")
	check(templateShape, reflect.TypeFor[docTemplate](), "template")
	check(step.elem, reflect.TypeFor[docStep](), "step")
	check(retry, reflect.TypeFor[docRetry](), "retry")
	check(backoff, reflect.TypeFor[docBackoff](), "backoff")
	check(events.elem, reflect.TypeFor[docEvent](), "event")
}

// quadratic writes a template in which n steps each use, by alias, one list
// of n events: n*n values from a document of about 2n lines, with too few
// aliases for the YAML decoder's own guard to notice.
func quadratic(n int) string {
	var sb strings.Builder
	sb.WriteString("namespace: shop\nname: x\nversion: v\nsteps:\n  - name: s0\n    handler: h\n    events: &e\n")
	for i := range n {
		fmt.Fprintf(&sb, "      - {name: E%d}\n", i)
	}
	for i := 1; i < n; i++ {
		fmt.Fprintf(&sb, "  - {name: s%d, handler: h, events: *e}\n", i)
	}
	return sb.String()
}

// TestParseAliasBombs feeds "billion laughs" documents: each must be refused
// (rather than expanded) wherever the aliases sit.
func TestParseAliasBombs(t *testing.T) {
	t.Parallel()
	laughs := func(key string) string {
		var sb strings.Builder
		sb.WriteString("namespace: shop\nname: x\nversion: v\n" + key + ":\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
		for i := 1; i <= 8; i++ {
			sb.WriteString("  a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
			for j := range 10 {
				if j > 0 {
					sb.WriteString(", ")
				}
				sb.WriteString("*a" + string(rune('0'+i-1)))
			}
			sb.WriteString("]\n")
		}
		return sb.String()
	}
	cases := []struct{ doc, want string }{
		{laughs("context_schema"), "expand to more than"},
		{strings.Replace(laughs("context_schema"), "context_schema:\n", "context_schema:\n  type: object\n  default:\n", 1), "expand to more than"},
		{quadratic(3000), "expand to more than"},
		{"namespace: shop\nname: x\nversion: v\nsteps: &s [{name: a, handler: h, events: *s}]\n", "refers to the value that contains it"},
		{"namespace: shop\nname: x\nversion: v\nsteps: [&m {<<: *m, name: a, handler: h}]\n", "refers to the value that contains it"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.doc))
		wantProblem(t, err, "", tc.want)
	}
	// Aliases within the limit are fine.
	if _, err := Parse([]byte(quadratic(20))); err != nil {
		t.Error(err)
	}
}

// TestUnknownKeysAndBadSettingsReportedTogether: a misspelt key used to
// hide every other problem until it was fixed, although the document
// decodes without it.
func TestUnknownKeysAndBadSettingsReportedTogether(t *testing.T) {
	doc := "namespace: Bad-NS\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    tiemout_seconds: 5\n    depends_on: [ghost]\n"
	for name, parse := range map[string]func() (*Template, error){
		"yaml": func() (*Template, error) { return Parse([]byte(doc)) },
		"json": func() (*Template, error) {
			return ParseJSON([]byte(`{"namespace":"Bad-NS","name":"x","version":"v","steps":[{"name":"a","handler":"h","tiemout_seconds":5,"depends_on":["ghost"]}]}`))
		},
	} {
		_, err := parse()
		wantProblem(t, err, "steps[0] (a)", `unknown key "tiemout_seconds"`, `did you mean "timeout_seconds"`)
		wantProblem(t, err, "namespace", "")
		wantProblem(t, err, "steps[0] (a).depends_on[0]", "ghost")
		if probs := problemsOf(t, err); len(probs) != 3 || !strings.Contains(probs[0].Message, "unknown key") {
			t.Errorf("%s: want the unknown key first, then the two bad settings; got:\n%v", name, err)
		}
	}
	// A wrong type still stops before the settings are judged: they were
	// not decoded.
	_, err := Parse([]byte("namespace: Bad-NS\nname: x\nversion: v\nsteps:\n  - name: a\n    handler: h\n    timeout_seconds: soon\n"))
	if probs := problemsOf(t, err); len(probs) != 1 {
		t.Errorf("a wrong type with a bad namespace: want only the type problem, got:\n%v", err)
	}
}
