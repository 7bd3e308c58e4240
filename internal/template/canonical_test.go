package template

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// demoReformatted is the demo template written differently: flow style,
// other key order, defaults spelt out or left out, the schema reordered.
const demoReformatted = `
steps:
- {name: validate_cart, handler: ecommerce.validate_cart, timeout_seconds: 30,
   description: "Check that every item exists, is in stock and is priced as the customer saw it."}
- name: process_payment
  events: [{on: success, name: PaymentCaptured}, {name: PaymentDeclined, on: failure}]
  retry: {backoff: {cap_ms: 120000, base_ms: 2000}, max_attempts: 5, retryable: true}
  depends_on: [validate_cart]
  handler: ecommerce.process_payment
  timeout_seconds: 60
  description: Capture the cart total from the customer's payment method.
- {name: update_inventory, handler: ecommerce.update_inventory, depends_on: [validate_cart], timeout_seconds: 30, description: Reserve stock for every item., events: []}
- name: create_order
  handler: ecommerce.create_order
  description: Record the order once payment is captured and stock is reserved.
  depends_on: [process_payment, update_inventory]
  timeout_seconds: 300
  retry: {max_attempts: 3}
  events: [{name: OrderCreated}]
- name: send_confirmation
  handler: ecommerce.send_confirmation
  description: Email the customer their order confirmation.
  depends_on: [create_order]
  retry: {max_attempts: 10, backoff: {base_ms: 500, cap_ms: 300000}}
version: "1.0.0"
stale_after_seconds: 3600
name: order_fulfillment
namespace: ecommerce
description: "Validate a cart, take payment and reserve stock in parallel, create the order, confirm it."
context_schema:
  properties:
    shipping_address:
      properties: {postal_code: {type: string}, line2: {type: string}, line1: {type: string}, country: {pattern: "^[A-Z]{2}$", type: string}, city: {type: string}}
      required: [line1, city, country]
      type: object
    currency: {pattern: "^[A-Z]{3}$", type: string}
    items:
      items:
        additionalProperties: false
        properties:
          unit_price_cents: {type: integer, minimum: 0.0}
          quantity: {minimum: 1, type: integer}
          sku: {minLength: 1, type: string}
        required: [sku, quantity, unit_price_cents]
        type: object
      minItems: 1
      type: array
    customer_id: {minLength: 1, type: string}
  required: [customer_id, items]
  type: object
`

func TestHash(t *testing.T) {
	t.Parallel()
	demo, err := Parse(readDemo(t))
	if err != nil {
		t.Fatal(err)
	}
	h := demo.Hash()
	if len(h) != 64 {
		t.Fatalf("Hash = %q", h)
	}
	same := mustParse(t, demoReformatted)
	if same.Hash() != h {
		a, _ := demo.JSON()
		b, _ := same.JSON()
		t.Errorf("reformatting changed the hash:\n%s\n%s", a, b)
	}
	asJSON, err := demo.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, asJSON, "", "   "); err != nil {
		t.Fatal(err)
	}
	fromJSON, err := ParseJSON(indented.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if fromJSON.Hash() != h {
		t.Error("the same template as indented JSON hashes differently")
	}

	changes := map[string]func(*Template){
		"handler":         func(t *Template) { t.Steps[0].Handler = "ecommerce.validate" },
		"dependency":      func(t *Template) { t.Steps[4].DependsOn = []string{"process_payment"} },
		"max attempts":    func(t *Template) { t.Steps[0].Retry.MaxAttempts = 4 },
		"retryable":       func(t *Template) { t.Steps[0].Retry.Retryable = false },
		"schema":          func(t *Template) { t.ContextSchema = json.RawMessage(`{"type":"object"}`) },
		"domain events":   func(t *Template) { t.DomainEvents = []string{"TaskCompleted"} },
		"failure policy":  func(t *Template) { t.FailurePolicy = Hold },
		"version":         func(t *Template) { t.Version = "1.0.1" },
		"event":           func(t *Template) { t.Steps[1].Events[0].On = EventOnAlways },
		"step order":      func(t *Template) { t.Steps[1], t.Steps[2] = t.Steps[2], t.Steps[1] },
		"description":     func(t *Template) { t.Description = "other" },
		"stale after":     func(t *Template) { t.StaleAfterSeconds = 60 },
		"timeout":         func(t *Template) { t.Steps[3].TimeoutSeconds = 301 },
		"backoff cap":     func(t *Template) { t.Steps[3].Retry.BackoffCapMs = 60001 },
		"no schema":       func(t *Template) { t.ContextSchema = nil },
		"no domain event": func(t *Template) { t.DomainEvents = nil },
	}
	for name, change := range changes {
		changed := mustParse(t, string(readDemo(t)))
		change(changed)
		if changed.Hash() == h {
			t.Errorf("changing the %s kept the hash", name)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"demo":    string(readDemo(t)),
		"base":    baseYAML,
		"minimal": "namespace: a\nname: b\nversion: c\ndomain_events: []\nsteps: [{name: d, handler: e, retry: {retryable: false}}]\n",
		"numbers": "namespace: a\nname: b\nversion: c\ncontext_schema: {type: object, properties: {n: {maximum: 12345678901234567890, minimum: -0.5, multipleOf: 1e-3, exclusiveMaximum: 1e300}}}\nsteps: [{name: d, handler: e}]\n",
		"text":    "namespace: a\nname: b\nversion: c\ndescription: \"<b>&\\u2028\\t\\\"é\"\nsteps: [{name: d, handler: e}]\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tmpl := mustParse(t, doc)
			b, err := tmpl.JSON()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseJSON(b)
			if err != nil {
				t.Fatalf("ParseJSON(JSON()): %v\n%s", err, b)
			}
			// Freshly parsed templates compare equal as they are, cache and all.
			if !reflect.DeepEqual(tmpl, back) {
				t.Errorf("round trip changed the template:\n%+v\n%+v", tmpl, back)
			}
			again, _ := back.JSON()
			if !bytes.Equal(b, again) {
				t.Errorf("JSON is not stable:\n%s\n%s", b, again)
			}
		})
	}
}

func TestJSONSpellsOutDefaults(t *testing.T) {
	t.Parallel()
	b, err := mustParse(t, "namespace: a\nname: b\nversion: c\nsteps: [{name: d, handler: e}]\n").JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"failure_policy":"fail_fast"`, `"stale_after_seconds":0`, `"domain_events":["TaskInitiated",`,
		`"depends_on":[]`, `"timeout_seconds":300`, `"max_attempts":3`, `"retryable":true`,
		`"base_ms":1000`, `"cap_ms":60000`, `"events":[]`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "context_schema") {
		t.Errorf("a template without a schema should not write one: %s", b)
	}
}

func TestJSONOfHandBuiltTemplate(t *testing.T) {
	t.Parallel()
	tmpl := &Template{
		Namespace: "a", Name: "b", Version: "c", FailurePolicy: FailFast,
		ContextSchema: json.RawMessage(`{ "type" : "object", "required": ["x"] }`),
		Steps:         []Step{{Name: "d", Handler: "e", TimeoutSeconds: 1, Retry: Retry{MaxAttempts: 1}}},
	}
	b, err := tmpl.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"context_schema":{"required":["x"],"type":"object"}`) || !strings.Contains(string(b), `"domain_events":[]`) {
		t.Errorf("JSON = %s", b)
	}
	tmpl.ContextSchema = json.RawMessage(`{`)
	if _, err := tmpl.JSON(); err == nil {
		t.Error("JSON accepted a malformed schema")
	}
	if tmpl.Hash() != "" {
		t.Error("Hash of an unencodable template is not empty")
	}
}
