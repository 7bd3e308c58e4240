package suggest

import (
	"strings"
	"testing"
)

func TestClosest(t *testing.T) {
	t.Parallel()
	known := []string{"namespace", "name", "state", "initiator", "limit", "cursor"}
	for _, tc := range []struct{ in, want string }{
		{"staet", "state"},
		{"namespce", "namespace"},
		{"limt", "limit"},
		{"nme", "name"},
		{"priority", ""},
		{"x", ""},                          // too short to guess from
		{strings.Repeat("state", 100), ""}, // not a typo
	} {
		got, ok := Closest(tc.in, known)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Closest(%.20q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}
