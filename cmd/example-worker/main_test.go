package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestUsageListsEveryVariable: --help names every environment variable the
// worker reads, so the help cannot fall behind the code.
func TestUsageListsEveryVariable(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	reads := regexp.MustCompile(`(?:env|envBool|os\.Getenv|os\.LookupEnv)\("([A-Z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(reads) < 5 {
		t.Fatalf("found %d environment reads in main.go; the pattern is out of date", len(reads))
	}
	for _, m := range reads {
		if !strings.Contains(usage, m[1]) {
			t.Errorf("main.go reads %s, which --help does not list", m[1])
		}
	}
}
