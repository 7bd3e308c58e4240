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

// TestNumberKey: spellings of one value share a key; different values,
// however close, do not.
func TestNumberKey(t *testing.T) {
	same := [][]string{
		{"100", "1e2", "1E+2", "100.000", "0.1e3", "10e1"},
		{"-1.25", "-125e-2", "-0.0125E2"},
		{"0", "-0", "0.000", "0e99"},
		{"12345678901234567890", "1.2345678901234567890e19"},
	}
	for _, group := range same {
		want, _ := NumberKey(group[0])
		for _, n := range group[1:] {
			if got, ok := NumberKey(n); !ok || got != want {
				t.Errorf("NumberKey(%s) = %q, %v; want %q, the key of %s", n, got, ok, want, group[0])
			}
		}
	}
	for _, pair := range [][2]string{{"12345678901234567890", "12345678901234567891"}, {"1", "-1"}, {"1", "1.0001"}, {"1e2", "1e-2"}} {
		a, _ := NumberKey(pair[0])
		b, _ := NumberKey(pair[1])
		if a == b {
			t.Errorf("%s and %s share the key %q", pair[0], pair[1], a)
		}
	}
	if _, ok := NumberKey("1e99999999999999999999"); ok {
		t.Error("an exponent beyond int64 has a key")
	}
}
