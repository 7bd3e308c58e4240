// Package pgtext checks text for what PostgreSQL cannot store: the NUL
// character, which text columns reject as a byte and jsonb rejects as the
// escape \u0000, invalid UTF-8, and (in jsonb) an unpaired UTF-16 surrogate
// escape such as \ud800 or a number outside numeric's range (1e1000000).
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
	ErrNumber      = errors.New("contains a number that Postgres cannot store in jsonb (numeric allows up to 131072 digits before the decimal point and 16383 after it)")
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
	_, err := FindJSONProblem(b)
	return err
}

// FindJSONProblem returns the byte offset in the JSON text b of the first
// thing a jsonb column cannot store, and why (the reasons of CheckJSON):
// invalid UTF-8, the escape \u0000 or an unpaired surrogate escape in a
// string (or a key), or a number outside numeric's range. It returns -1 and
// nil when there is none. The offset is that of the bad byte, the escape's
// backslash or the number's first character.
func FindJSONProblem(b []byte) (int, error) {
	if !utf8.Valid(b) {
		for i := 0; i < len(b); {
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return i, ErrInvalidUTF8
			}
			i += size
		}
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			switch {
			case c == '"':
				inString = true
			case c == '-' || c >= '0' && c <= '9':
				j := i + 1
				for j < len(b) && strings.IndexByte("+-.0123456789eE", b[j]) >= 0 {
					j++
				}
				if !numericFits(b[i:j]) {
					return i, ErrNumber
				}
				i = j - 1
			}
			continue
		}
		switch c {
		case '"':
			inString = false
			continue
		case '\\':
		default:
			continue
		}
		r, ok := unicodeEscape(b, i)
		switch {
		case !ok:
			i++ // skip the escaped character
			continue
		case r == 0:
			return i, ErrNULEscape
		case r >= 0xD800 && r <= 0xDBFF:
			// A high surrogate is stored only with the low one after it.
			if lo, ok := unicodeEscape(b, i+6); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return i, ErrSurrogate
			}
			i += 6
		case r >= 0xDC00 && r <= 0xDFFF:
			return i, ErrSurrogate
		}
		i += 5
	}
	return -1, nil
}

// Postgres' numeric limits (src/backend/utils/adt/numeric.c): digits before
// the decimal point (a weight of 32767 base-10000 digits), digits after it
// (the display scale), and the exponent its input accepts.
const (
	maxNumericIntDigits   = 131072
	maxNumericScale       = 16383
	maxNumericExponentAbs = 1<<30 - 1 // INT_MAX / 2
)

// numericFits reports whether the JSON number literal n is within what
// Postgres' numeric input accepts: its scale (the fraction's digits less the
// exponent) at most 16383, and, unless it is zero, at most 131072 digits
// before the decimal point. A literal that is not a number is left to the
// JSON parser (true).
func numericFits(n []byte) bool {
	s := string(n)
	s = strings.TrimPrefix(s, "-")
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	e := int64(0)
	if hasExp {
		v, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			return !(errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange)) // huge exponent: does not fit
		}
		if v >= maxNumericExponentAbs || v <= -maxNumericExponentAbs {
			return false
		}
		e = v
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if int64(len(frac))-e > maxNumericScale {
		return false
	}
	digits := strings.TrimLeft(intPart, "0")
	var weight int64
	switch {
	case digits != "":
		weight = int64(len(digits)) + e
	default:
		lead := len(frac) - len(strings.TrimLeft(frac, "0"))
		if lead == len(frac) {
			return true // zero
		}
		weight = e - int64(lead)
	}
	return weight <= maxNumericIntDigits
}

// unicodeEscape decodes the escape \uXXXX at b[i:].
func unicodeEscape(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
	return rune(n), err == nil
}

// ReplaceNUL replaces NUL characters with U+FFFD, the replacement
// character, so that free text (an error message) can be stored.
func ReplaceNUL(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
