package domainevents_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/template"
)

// docs/domain-events.md stays true: every example event matches the
// schema and decodes, every built-in type has an example and a catalog row.
func TestDomainEventsDoc(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docs/domain-events.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	blocks := regexp.MustCompile("(?s)```json event\n(.*?)```").FindAllStringSubmatch(doc, -1)
	examples := map[string]bool{}
	for _, b := range blocks {
		if err := ide.ValidateEvent([]byte(b[1])); err != nil {
			t.Errorf("example does not match the schema: %v\n%s", err, b[1])
			continue
		}
		ev, err := domainevents.Decode([]byte(b[1]))
		if err != nil {
			t.Errorf("example does not decode: %v", err)
			continue
		}
		examples[ev.EventType] = true
	}
	for _, typ := range domainevents.BuiltInTypes {
		if !examples[typ] {
			t.Errorf("no example of %s", typ)
		}
		if !strings.Contains(doc, "| `"+typ+"` |") {
			t.Errorf("no catalog row for %s", typ)
		}
	}
	if len(examples) != len(domainevents.BuiltInTypes)+1 {
		t.Errorf("examples of %d types, want the %d built-in ones and a business event", len(examples), len(domainevents.BuiltInTypes))
	}
}

// The template package validates domain_events against its own list; it
// must name exactly the types the producer and consumers know.
func TestBuiltInTypesMatchTemplates(t *testing.T) {
	t.Parallel()
	if !slices.Equal(template.AllDomainEvents, domainevents.BuiltInTypes) {
		t.Fatalf("template.AllDomainEvents %v, domainevents.BuiltInTypes %v", template.AllDomainEvents, domainevents.BuiltInTypes)
	}
}

// The catalog of docs/domain-events.md lists each payload's fields (besides
// task_name and task_version, which it says every payload carries): they
// must be the fields the producer's payload types encode with every field
// set (fullPayloads).
func TestDomainEventsDocPayloadFields(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docs/domain-events.md")
	if err != nil {
		t.Fatal(err)
	}
	_, catalog, ok := strings.Cut(string(raw), "## Catalog\n")
	if !ok {
		t.Fatal("docs/domain-events.md has no Catalog section")
	}
	catalog, _, _ = strings.Cut(catalog, "\n## ")
	row := regexp.MustCompile("(?m)^\\| (`[A-Za-z]+`|\\*business event\\*[^|]*) \\|.*\\| ([^|]*) \\|$")
	qualifier := regexp.MustCompile(`\s*\([^)]*\)`)
	doc := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(catalog, -1) {
		typ := strings.Trim(m[1], "`")
		if strings.HasPrefix(typ, "*business event*") {
			typ = "business"
		}
		var fields []string
		for _, f := range strings.Split(qualifier.ReplaceAllString(m[2], ""), ",") {
			for _, alt := range strings.Split(f, " or ") {
				fields = append(fields, strings.TrimSpace(alt))
			}
		}
		slices.Sort(fields)
		doc[typ] = fields
	}
	code := map[string][]string{}
	for typ, p := range fullPayloads() {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["task_name"] == nil || m["task_version"] == nil {
			t.Errorf("%s payload lacks task_name or task_version: %s", typ, b)
		}
		if !slices.Contains(domainevents.BuiltInTypes, typ) {
			typ = "business"
		}
		for k := range m {
			if k != "task_name" && k != "task_version" && !slices.Contains(code[typ], k) {
				code[typ] = append(code[typ], k)
			}
		}
		slices.Sort(code[typ])
	}
	for typ, fields := range code {
		if !slices.Equal(doc[typ], fields) {
			t.Errorf("docs/domain-events.md lists the %s payload as %v; its messages have %v", typ, doc[typ], fields)
		}
	}
	if len(doc) != len(code) {
		t.Errorf("catalog rows %d, payload kinds %d", len(doc), len(code))
	}
}
