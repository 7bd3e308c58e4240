// Package pgtext checks text for what PostgreSQL cannot store: the NUL
// character, which text columns reject as a byte and jsonb rejects as the
// escape \u0000.
package pgtext

import "strings"

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
