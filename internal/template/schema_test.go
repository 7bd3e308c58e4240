package template

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestValidateContext(t *testing.T) {
	t.Parallel()
	demo, err := Parse(readDemo(t))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		ctx       string
		path      string // "" means valid
		fragments []string
	}{
		{"ok", `{"customer_id":"c1","items":[{"sku":"A","quantity":2,"unit_price_cents":150}],"currency":"EUR"}`, "", nil},
		{"missing field", `{"items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`, "context.customer_id", []string{"missing property"}},
		{"missing nested field", `{"customer_id":"c","items":[{"quantity":1,"unit_price_cents":1}]}`, "context.items[0].sku", []string{"missing property"}},
		{"wrong type", `{"customer_id":"c","items":[{"sku":"A","quantity":"two","unit_price_cents":1}]}`, "context.items[0].quantity", []string{"got string, want integer"}},
		{"below minimum", `{"customer_id":"c","items":[{"sku":"A","quantity":0,"unit_price_cents":1}]}`, "context.items[0].quantity", []string{"minimum"}},
		{"pattern", `{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"currency":"euro"}`, "context.currency", []string{"does not match pattern"}},
		{"extra property", `{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":1,"colour":"red"}]}`, "context.items[0]", []string{"colour", "not allowed"}},
		{"empty array", `{"customer_id":"c","items":[]}`, "context.items", []string{"minItems"}},
		{"not an object", `["customer_id"]`, "context", []string{"must be a JSON object, got an array"}},
		{"null", `null`, "context", []string{"must be a JSON object, got null"}},
		{"invalid JSON", `{"customer_id":`, "context", []string{"invalid JSON"}},
		{"trailing data", `{} {}`, "context", []string{"invalid JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := demo.ValidateContext(json.RawMessage(tc.ctx))
			if tc.path == "" {
				if err != nil {
					t.Fatalf("valid context refused: %v", err)
				}
				return
			}
			wantProblem(t, err, tc.path, tc.fragments...)
		})
	}
}

func TestValidateContextReportsEveryField(t *testing.T) {
	t.Parallel()
	demo, err := Parse(readDemo(t))
	if err != nil {
		t.Fatal(err)
	}
	err = demo.ValidateContext(json.RawMessage(`{"items":[{"sku":"","quantity":1.5}], "weird key": 1}`))
	wantProblem(t, err, "context.customer_id", "missing property")
	wantProblem(t, err, "context.items[0].sku", "minLength")
	wantProblem(t, err, "context.items[0].quantity", "want integer")
	wantProblem(t, err, "context.items[0].unit_price_cents", "missing property")
}

func TestValidateContextWithoutSchema(t *testing.T) {
	t.Parallel()
	tmpl := mustParse(t, baseYAML)
	if err := tmpl.ValidateContext(json.RawMessage(`{"anything":[1,{"goes":true}]}`)); err != nil {
		t.Errorf("any object should do: %v", err)
	}
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(`"text"`)), "context", "must be a JSON object, got a string")
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(` [{"a": 1}]`)), "context", "must be a JSON object, got an array")
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(`{"a": 1} {"b": 2}`)), "context", "invalid JSON")
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(`{"a": }`)), "context", "invalid JSON")
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(``)), "context", "invalid JSON")
}

// Without a schema, an object is checked without being decoded: no
// allocation per element of a large context (decoding its 2,001 items
// would make thousands). AllocsPerRun counts the whole process's
// allocations, and a goroutine left by the runtime or the race detector
// may make one or two meanwhile (3 were seen under -race), hence the
// margin. (Not parallel: AllocsPerRun.)
func TestValidateContextWithoutSchemaDoesNotDecode(t *testing.T) {
	tmpl := mustParse(t, baseYAML)
	big := json.RawMessage(`  {"items": [` + strings.Repeat(`{"sku": "BOOK-1", "n": 2},`, 2000) + `{}]}`)
	if allocs := testing.AllocsPerRun(5, func() {
		if err := tmpl.ValidateContext(big); err != nil {
			t.Fatal(err)
		}
	}); allocs > 10 {
		t.Errorf("a %d-byte object without a schema: %v allocations", len(big), allocs)
	}
}

func TestValidateContextPathSpelling(t *testing.T) {
	t.Parallel()
	tmpl := mustParse(t, `
namespace: shop
name: x
version: v
context_schema:
  type: object
  properties:
    "odd key": {type: object, required: ["0", "a b"]}
    list: {type: array, items: {type: array, items: {type: integer}}}
steps: [{name: a, handler: h}]
`)
	err := tmpl.ValidateContext(json.RawMessage(`{"odd key":{},"list":[[1],[2,"x"]]}`))
	wantProblem(t, err, `context["odd key"]["0"]`, "missing property")
	wantProblem(t, err, `context["odd key"]["a b"]`, "missing property")
	wantProblem(t, err, `context.list[1][1]`, "want integer")
}

// TestValidateContextCache checks that the compiled schema is reused, that
// concurrent use is safe (run with -race), and that a schema changed after
// parsing is not validated against a stale compilation.
func TestValidateContextCache(t *testing.T) {
	t.Parallel()
	tmpl, err := Parse(readDemo(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := tmpl.ValidateContext(json.RawMessage(`{"customer_id":"c","items":[{"sku":"A","quantity":1,"unit_price_cents":1}]}`)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	first := tmpl.cache.schema
	if first == nil {
		t.Fatal("nothing cached")
	}
	_ = tmpl.ValidateContext(json.RawMessage(`{}`))
	if tmpl.cache.schema != first {
		t.Error("the schema was compiled again")
	}
	tmpl.ContextSchema = json.RawMessage(`{"type":"object","required":["other"]}`)
	wantProblem(t, tmpl.ValidateContext(json.RawMessage(`{}`)), "context.other", "missing property")

	// A hand-built template has no cache and still validates.
	hand := &Template{ContextSchema: json.RawMessage(`{"type":"object","required":["x"]}`)}
	wantProblem(t, hand.ValidateContext(json.RawMessage(`{}`)), "context.x", "missing property")
	hand.ContextSchema = json.RawMessage(`{"type":"nope"}`)
	if err := hand.ValidateContext(json.RawMessage(`{}`)); err == nil || !strings.Contains(err.Error(), "compile context_schema") {
		t.Errorf("uncompilable schema: %v", err)
	}
}

// TestSchemaHasNoExternalAccess makes sure a schema cannot make the
// orchestrator read files or URLs through $ref, directly or via $schema.
func TestSchemaHasNoExternalAccess(t *testing.T) {
	t.Parallel()
	for _, schema := range []string{
		`{"type":"object","properties":{"a":{"$ref":"file:///etc/hostname"}}}`,
		`{"type":"object","properties":{"a":{"$ref":"https://example.com/s.json"}}}`,
		`{"$schema":"file:///etc/hostname","type":"object"}`,
		`{"$id":"file:///etc/","type":"object","properties":{"a":{"$ref":"hostname"}}}`,
	} {
		tmpl := mustParse(t, baseYAML)
		tmpl.ContextSchema = json.RawMessage(schema)
		if err := tmpl.Validate(); err == nil {
			t.Errorf("accepted %s", schema)
		}
	}
}

// TestSchemaTooDeepIsOneShortProblem: a schema nested past the limit is
// refused in one short message that gives the limit, not one that spells
// the way down ("[0]: " once per level).
func TestSchemaTooDeepIsOneShortProblem(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", maxSchemaDepth+5) + strings.Repeat("]", maxSchemaDepth+5)
	docs := map[string]func() (*Template, error){
		"yaml": func() (*Template, error) {
			return Parse([]byte("namespace: shop\nname: x\nversion: v\ncontext_schema: {type: object, default: " + deep + "}\nsteps: [{name: a, handler: h}]\n"))
		},
		"json": func() (*Template, error) {
			return ParseJSON([]byte(`{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object","default":` + deep + `},"steps":[{"name":"a","handler":"h"}]}`))
		},
	}
	for format, parse := range docs {
		_, err := parse()
		probs := problemsOf(t, err)
		want := fmt.Sprintf("nested more than %d levels deep", maxSchemaDepth)
		if len(probs) != 1 || probs[0].Path != "context_schema" || probs[0].Message != want {
			t.Errorf("%s: want one problem at context_schema saying %q, got:\n%.300v", format, want, err)
		}
	}
}
