package pgtext

import "testing"

func TestHasNULEscape(t *testing.T) {
	cases := map[string]bool{
		`{}`:                     false,
		`{"a":"\u0000"}`:         true,
		`{"a":"x\u0000y"}`:       true,
		`{"\u0000":1}`:           true,
		`{"a":"\\u0000"}`:        false, // the text \u0000, not a NUL
		`{"a":"\\\u0000"}`:       true,  // a backslash, then a NUL
		`{"a":"\u00001"}`:        true,
		`{"a":"\u0001"}`:         false,
		`{"a":"\u000"}`:          false,
		`"\`:                     false,
		`{"a":"tab\tand\u0000"}`: true,
	}
	for in, want := range cases {
		if got := HasNULEscape([]byte(in)); got != want {
			t.Errorf("HasNULEscape(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestReplaceNUL(t *testing.T) {
	if got := ReplaceNUL("a\x00b"); got != "a\uFFFDb" {
		t.Errorf("ReplaceNUL = %q", got)
	}
	if got := ReplaceNUL("plain"); got != "plain" {
		t.Errorf("ReplaceNUL = %q", got)
	}
}
