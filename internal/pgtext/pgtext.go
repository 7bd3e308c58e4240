// Package pgtext checks text for what PostgreSQL cannot store: the NUL
// character, which text columns reject as a byte and jsonb rejects as the
// escape \u0000, invalid UTF-8, and (in jsonb) an unpaired UTF-16 surrogate
// escape such as \ud800.
package pgtext

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The reasons CheckText and CheckJSON give; they read after a field name.
var (
	ErrInvalidUTF8 = errors.New("is not valid UTF-8")
	ErrNUL         = errors.New("contains a NUL character, which Postgres cannot store")
	ErrNULEscape   = errors.New(`contains the character \u0000, which Postgres cannot store in jsonb`)
	ErrSurrogate   = errors.New(`contains an unpaired UTF-16 surrogate escape (\ud800 to \udfff), which Postgres cannot store in jsonb`)
)

// CheckText returns why a text column cannot store s, or nil.
func CheckText(s string) error {
	switch {
	case !utf8.ValidString(s):
		return ErrInvalidUTF8
	case strings.IndexByte(s, 0) >= 0:
		return ErrNUL
	}
	return nil
}

// CheckJSON returns why a jsonb column cannot store the JSON text b (which
// encoding/json accepts), or nil.
func CheckJSON(b []byte) error {
	if !utf8.Valid(b) {
		return ErrInvalidUTF8
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		r, ok := unicodeEscape(b, i)
		switch {
		case !ok:
			i++ // skip the escaped character
			continue
		case r == 0:
			return ErrNULEscape
		case r >= 0xD800 && r <= 0xDBFF:
			// A high surrogate is stored only with the low one after it.
			if lo, ok := unicodeEscape(b, i+6); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return ErrSurrogate
			}
			i += 6
		case r >= 0xDC00 && r <= 0xDFFF:
			return ErrSurrogate
		}
		i += 5
	}
	return nil
}

// unicodeEscape decodes the escape \uXXXX at b[i:].
func unicodeEscape(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
	return rune(n), err == nil
}

// HasNULEscape reports whether JSON text contains the escape \u0000 (a NUL
// character in a string), which jsonb rejects. An escaped backslash followed
// by "u0000" is ordinary text.
func HasNULEscape(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] == 'u' && i+5 < len(b) && string(b[i+2:i+6]) == "0000" {
			return true
		}
		i++ // skip the escaped character
	}
	return false
}

// ReplaceNUL replaces NUL characters with U+FFFD, the replacement
// character, so that free text (an error message) can be stored.
func ReplaceNUL(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
