package template

import "testing"

// TestStepByNameIndexed: a parsed template answers StepByName from its
// index, and still finds a step by scanning when the index is stale (a
// template edited after parsing, as tests do).
func TestStepByNameIndexed(t *testing.T) {
	tpl, err := Parse([]byte("namespace: evaluate\nname: two\nversion: 1.0.0\nsteps:\n  - {name: a, handler: h}\n  - {name: b, handler: h, depends_on: [a]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := tpl.StepByName("b"); !ok || s != &tpl.Steps[1] {
		t.Fatalf("StepByName(b) = %v, %v", s, ok)
	}
	tpl.Steps[0], tpl.Steps[1] = tpl.Steps[1], tpl.Steps[0]
	if s, ok := tpl.StepByName("b"); !ok || s.Name != "b" {
		t.Fatalf("after a reorder, StepByName(b) = %v, %v", s, ok)
	}
	if _, ok := tpl.StepByName("c"); ok {
		t.Fatal("StepByName(c) found a step")
	}
}
