package domainevents_test

import (
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
