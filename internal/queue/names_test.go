package queue

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// The names' rules as DESIGN §6 writes them; the validators check them
// without a regular expression.
var (
	namespaceSpec = regexp.MustCompile(`^[a-z][a-z0-9_]{0,32}$`)
	queueNameSpec = regexp.MustCompile(`^[a-z][a-z0-9_]{0,46}$`)
)

// TestNameValidatorsFollowTheirPatterns compares ValidateNamespace and
// ValidateQueueName with the patterns on every string of up to four
// characters from an alphabet of each kind of character (letters at both
// ends of the range and just outside it, capitals, digits, underscore,
// punctuation, space, a non-ASCII letter's bytes), and on names around the
// length limits.
func TestNameValidatorsFollowTheirPatterns(t *testing.T) {
	alphabet := []string{"a", "z", "`", "{", "A", "Z", "0", "9", "/", ":", "_", "-", " ", ".", "é"}
	names := []string{""}
	for n, level := 0, []string{""}; n < 4; n++ {
		var next []string
		for _, p := range level {
			for _, c := range alphabet {
				next = append(next, p+c)
			}
		}
		names, level = append(names, next...), next
	}
	for _, n := range []int{32, 33, 34, 46, 47, 48} {
		names = append(names, "a"+strings.Repeat("b", n-1), "a"+strings.Repeat("_", n-2)+"9", "a"+strings.Repeat("b", n-2)+"B")
	}
	for _, name := range names {
		if got, want := ValidateNamespace(name) == nil, namespaceSpec.MatchString(name); got != want {
			t.Errorf("ValidateNamespace(%q) accepts = %v, want %v", name, got, want)
		}
		if got, want := ValidateQueueName(name) == nil, queueNameSpec.MatchString(name); got != want {
			t.Errorf("ValidateQueueName(%q) accepts = %v, want %v", name, got, want)
		}
	}
	err := ValidateNamespace("Orders")
	if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), `"Orders"`) || !strings.Contains(err.Error(), namespaceSpec.String()) {
		t.Errorf("ValidateNamespace(Orders) = %v, want ErrInvalidName naming the namespace and the pattern", err)
	}
	for _, ns := range []string{"a" + strings.Repeat("b", 32)} {
		for _, q := range []func(string) (string, error){WorkerQueue, DomainEventsQueue} {
			name, err := q(ns)
			if err != nil || ValidateQueueName(name) != nil {
				t.Errorf("the longest namespace's queue %q (%v) is not a valid queue name", name, err)
			}
		}
	}
}

func BenchmarkValidateNamespace(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if ValidateNamespace("ecommerce_orders") != nil {
			b.Fatal("refused")
		}
	}
}
