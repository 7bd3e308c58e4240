package lifecycle

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/events.md from CatalogMarkdown")

// eventsDocPath is relative to this package's directory, where go test runs.
var eventsDocPath = filepath.Join("..", "..", "docs", "events.md")

// TestEventsDoc keeps docs/events.md equal to CatalogMarkdown(). Not
// parallel: with -update it writes the file.
func TestEventsDoc(t *testing.T) {
	want := CatalogMarkdown()
	if *update {
		if err := os.MkdirAll(filepath.Dir(eventsDocPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(eventsDocPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(eventsDocPath)
	if err != nil {
		t.Fatalf("read %s: %v\nregenerate it with: go test ./internal/lifecycle -run TestEventsDoc -update", eventsDocPath, err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date with the event catalog (first difference at line %d)\nregenerate it with: go test ./internal/lifecycle -run TestEventsDoc -update",
			eventsDocPath, firstDiffLine(string(got), want))
	}
}

func firstDiffLine(a, b string) int {
	line := 1
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return line
		}
		if a[i] == '\n' {
			line++
		}
	}
	return line
}
