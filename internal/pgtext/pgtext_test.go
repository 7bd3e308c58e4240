package pgtext

import "testing"

func TestReplaceNUL(t *testing.T) {
	if got := ReplaceNUL("a\x00b"); got != "a\uFFFDb" {
		t.Errorf("ReplaceNUL = %q", got)
	}
	if got := ReplaceNUL("plain"); got != "plain" {
		t.Errorf("ReplaceNUL = %q", got)
	}
}

func TestCheckText(t *testing.T) {
	cases := map[string]error{
		"plain":     nil,
		"é and 😀":   nil,
		"a\x00b":    ErrNUL,
		"a\xffb":    ErrInvalidUTF8,
		"\xff\x00":  ErrInvalidUTF8,
		"tab\there": nil,
	}
	for in, want := range cases {
		if got := CheckText(in); got != want {
			t.Errorf("CheckText(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCheckJSON(t *testing.T) {
	cases := map[string]error{
		`{}`:                                nil,
		`{"a":"\u0000"}`:                    ErrNULEscape,
		`{"\u0000":1}`:                      ErrNULEscape,
		`{"a":"\\u0000"}`:                   nil, // the text \u0000, not a NUL
		`{"a":"\\\u0000"}`:                  ErrNULEscape,
		`{"a":"\u00e9"}`:                    nil,
		`{"a":"\ud83d\ude00"}`:              nil, // a surrogate pair: one character
		`{"a":"\uD83D\uDE00"}`:              nil,
		`{"a":"\ud800"}`:                    ErrSurrogate,
		`{"a":"\ud800x"}`:                   ErrSurrogate,
		`{"a":"\ud800\u0041"}`:              ErrSurrogate,
		`{"a":"\ud800\ud800"}`:              ErrSurrogate,
		`{"a":"\udc00"}`:                    ErrSurrogate,
		`{"a":"\\ud800"}`:                   nil,
		`{"a":"\ud83d\ude00\u0000"}`:        ErrNULEscape,
		"{\"a\":\"\xff\"}":                  ErrInvalidUTF8,
		`{"a":1e131071}`:                    nil,
		`{"a":1e131072}`:                    ErrNumber,
		`{"a":-9.9e131071}`:                 nil,
		`{"a":0.0001e131075}`:               nil,
		`{"a":0.0001e131076}`:               ErrNumber,
		`{"a":12345678901234567890e131052}`: nil,
		`{"a":1e-16383}`:                    nil,
		`{"a":1e-16384}`:                    ErrNumber,
		`{"a":1.5e-16383}`:                  ErrNumber,
		`{"a":100e-16385}`:                  ErrNumber,
		`{"a":0e-16384}`:                    ErrNumber,
		`{"a":0e200000}`:                    nil,
		`{"a":0e999999999999}`:              ErrNumber,
		`{"a":1e-999999999999}`:             ErrNumber,
		`{"a":1e99999999999999999999}`:      ErrNumber,
		`{"a":[1,-2.5,3E+5,0.00e0]}`:        nil,
		`{"a":"1e1000000"}`:                 nil, // a string, not a number
		`{"1e1000000":true}`:                nil,
	}
	for in, want := range cases {
		if got := CheckJSON([]byte(in)); got != want {
			t.Errorf("CheckJSON(%s) = %v, want %v", in, got, want)
		}
	}
}

// TestFindJSONProblemSaysWhere: the offset is the bad byte's, the escape's
// backslash or the number's first character, so that a caller can name the
// field.
func TestFindJSONProblemSaysWhere(t *testing.T) {
	for in, want := range map[string]int{
		`{"a":"x","b":"\ud800"}`:    14,
		"{\"a\":[\"ok\",\"\xff\"]}": 12,
		`{"a":{"b":-1e-20000}}`:     10,
		`{"a":"\u0000"}`:            6,
		`{"a":[1,2]}`:               -1,
	} {
		if got, _ := FindJSONProblem([]byte(in)); got != want {
			t.Errorf("FindJSONProblem(%s) = %d, want %d", in, got, want)
		}
	}
}
