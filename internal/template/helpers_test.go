package template

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const demoPath = "../../config/templates/order_fulfillment.yaml"

func readDemo(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(demoPath)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustParse(t testing.TB, doc string) *Template {
	t.Helper()
	tmpl, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, doc)
	}
	return tmpl
}

// baseYAML is a small valid template that cases mutate.
const baseYAML = `
namespace: shop
name: checkout
version: "1"
steps:
  - name: a
    handler: h.a
  - name: b
    handler: h.b
    depends_on: [a]
  - name: c
    handler: h.c
    depends_on: [b]
`

// problemsOf returns the problems of a *ValidationError, failing otherwise.
func problemsOf(t testing.TB, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want *ValidationError, got %T: %v", err, err)
	}
	return ve.Problems
}

// wantProblem fails unless some problem has exactly path and a message
// containing every fragment.
func wantProblem(t testing.TB, err error, path string, fragments ...string) {
	t.Helper()
	for _, p := range problemsOf(t, err) {
		if p.Path != path {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(p.Message, f)
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem at %q containing %q; got:\n%v", path, fragments, err)
}

// equalTemplates compares templates field by field, the schema cache aside.
func equalTemplates(a, b *Template) bool {
	x, y := *a, *b
	x.cache, y.cache = nil, nil
	return deepEqual(x, y)
}
