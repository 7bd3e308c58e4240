package template

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	baseYAML,
	demoReformatted,
	"",
	"namespace: shop\n",
	"namespace: shop\nname: x\nversion: v\nsteps: [{name: a, handler: h, depends_on: [a]}]\n",
	"namespace: shop\nname: x\nversion: v\nsteps: [{name: a, handler: h, depends_on: [b]}, {name: b, handler: h, depends_on: [a]}]\n",
	"namespace: shop\nname: x\nversion: v\nsteps: [{name: a, handler: h, retry: {max_attempts: 0, backoff: {base_ms: 5, cap_ms: 1}}}]\n",
	"namespace: shop\nname: x\nversion: v\ncontext_schema: {type: object, properties: {a: {$ref: '#/$defs/x'}}, $defs: {x: {type: integer}}}\nsteps: [{name: a, handler: h}]\n",
	"namespace: shop\nname: x\nversion: v\ncontext_schema: {type: [object, null], maximum: 1e400}\nsteps: [{name: a, handler: h}]\n",
	"a: &a [*a]\n",
	"steps: [&s {name: a, handler: h}, *s, {<<: *s, name: b}]\nnamespace: n\nname: x\nversion: v\n",
	"{\"namespace\": \"shop\", \"name\": \"x\", \"version\": \"v\", \"steps\": [{\"name\": \"a\", \"handler\": \"h\"}]}",
	"---\n---\n",
	"[1, 2\n",
}

func FuzzParse(f *testing.F) {
	f.Add(readDemo(f))
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := Parse(data)
		checkParsed(t, tmpl, err)
	})
}

func FuzzParseJSON(f *testing.F) {
	demo, err := Parse(readDemo(f))
	if err != nil {
		f.Fatal(err)
	}
	demoJSON, err := demo.JSON()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(demoJSON)
	f.Add(bytes.Replace(demoJSON, []byte(`"create_order"]`), []byte(`"send_confirmation"]`), 1)) // a cycle
	f.Add(bytes.Replace(demoJSON, []byte(`"steps"`), []byte(`"stepz"`), 1))
	f.Add([]byte(`{"namespace":"shop","name":"x","name":"y"}`))
	f.Add([]byte(`{"namespace":"shop","name":"x","version":"v","context_schema":{"type":"object","minimum":-0.0,"maximum":1E+2},"steps":[{"name":"a","handler":"h"}]}`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"steps":[{"retry":{"backoff":{"cap_ms":1e3}}}]}`))
	f.Add([]byte(`{"namespace":"t1","name":"j","version":"1","stale_after_seconds":1e400,"steps":[{"name":"a","handler":"h.a","timeout_seconds":99999999999999999999999}]}`))
	f.Add([]byte(`{"namespace":"t1","name":"j","version":"1","context_schema":{"type":"object","maximum":-99999999999999999999999,"title":"\ud800"},"steps":[{"name":"a","handler":"h.a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := ParseJSON(data)
		checkParsed(t, tmpl, err)
		// JSON has no YAML tags to get wrong: the YAML decoder's refusals
		// ("cannot decode !!float `1e23` as a !!int") must not show.
		if strings.Contains(fmt.Sprint(err), "cannot decode") || strings.Contains(fmt.Sprint(err), "cannot unmarshal") {
			t.Fatalf("problem in the YAML decoder's words: %v", err)
		}
	})
}

// checkParsed asserts what must hold for any input: a refusal is a
// *ValidationError of one-line problems; an accepted template re-validates,
// encodes, and reads back from its JSON to an equal template with the same
// JSON and hash, and orders all of its steps.
func checkParsed(t *testing.T, tmpl *Template, err error) {
	t.Helper()
	if err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) == 0 {
			t.Fatalf("error is not a non-empty *ValidationError: %T %v", err, err)
		}
		for _, p := range ve.Problems {
			if p.Message == "" || strings.ContainsAny(p.String(), "\r\n") {
				t.Fatalf("problem is not one non-empty line: %q", p.String())
			}
		}
		return
	}
	if err := tmpl.Validate(); err != nil {
		t.Fatalf("accepted template does not re-validate: %v", err)
	}
	b, err := tmpl.JSON()
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	back, err := ParseJSON(b)
	if err != nil {
		t.Fatalf("ParseJSON(JSON()): %v\n%s", err, b)
	}
	if !equalTemplates(tmpl, back) {
		t.Fatalf("round trip changed the template:\n%#v\n%#v", tmpl, back)
	}
	if again, _ := back.JSON(); !bytes.Equal(b, again) {
		t.Fatalf("JSON is not stable:\n%s\n%s", b, again)
	}
	if tmpl.Hash() != back.Hash() {
		t.Fatal("hash changed in the round trip")
	}
	if got := len(tmpl.TopologicalOrder()); got != len(tmpl.Steps) {
		t.Fatalf("TopologicalOrder has %d of %d steps", got, len(tmpl.Steps))
	}
	level := map[string]int{}
	for l, names := range tmpl.Levels() {
		for _, n := range names {
			level[n] = l
		}
	}
	if len(level) != len(tmpl.Steps) {
		t.Fatalf("Levels has %d of %d steps", len(level), len(tmpl.Steps))
	}
	for _, s := range tmpl.Steps {
		for _, d := range s.DependsOn {
			if level[d] >= level[s.Name] {
				t.Fatalf("Levels puts %s at %d, not after its parent %s at %d", s.Name, level[s.Name], d, level[d])
			}
		}
	}
}
