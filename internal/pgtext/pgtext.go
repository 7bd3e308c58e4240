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
	num, ok := splitNumber(string(n))
	if !ok {
		// Only an exponent too large for int64 makes it here (the JSON
		// parser refuses the rest): it does not fit.
		return !num.expOverflow
	}
	e := num.exp
	if e >= maxNumericExponentAbs || e <= -maxNumericExponentAbs {
		return false
	}
	if int64(len(num.frac))-e > maxNumericScale {
		return false
	}
	digits := strings.TrimLeft(num.intPart, "0")
	var weight int64
	switch {
	case digits != "":
		weight = int64(len(digits)) + e
	default:
		lead := len(num.frac) - len(strings.TrimLeft(num.frac, "0"))
		if lead == len(num.frac) {
			return true // zero
		}
		weight = e - int64(lead)
	}
	return weight <= maxNumericIntDigits
}

// number is a JSON number literal taken apart: its value is
// ±intPart.frac × 10^exp.
type number struct {
	neg           bool
	intPart, frac string
	exp           int64
	// expOverflow: the exponent does not fit an int64.
	expOverflow bool
}

// splitNumber takes apart the JSON number literal n (ok false when its
// exponent is not an int64; the digits are not checked).
func splitNumber(n string) (number, bool) {
	var num number
	num.neg = strings.HasPrefix(n, "-")
	mant, exp, hasExp := strings.Cut(strings.ToLower(strings.TrimPrefix(n, "-")), "e")
	if hasExp {
		v, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			num.expOverflow = errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange)
			return num, false
		}
		num.exp = v
	}
	num.intPart, num.frac, _ = strings.Cut(mant, ".")
	return num, true
}

// NumberKey writes the JSON number literal n as its significant digits
// (without leading or trailing zeros) and a power of ten, "-125e-2" for
// -1.250 and "0" for any zero, so that two spellings of one value have the
// same key (1e2 and 100), in time linear in their length: no arithmetic on
// the value. ok is false when n's exponent is not an int64.
func NumberKey(n string) (key string, ok bool) {
	num, ok := splitNumber(n)
	if !ok {
		return "", false
	}
	digits := strings.TrimLeft(num.intPart+num.frac, "0")
	if digits == "" {
		return "0", true
	}
	e := num.exp - int64(len(num.frac))
	sig := strings.TrimRight(digits, "0")
	e += int64(len(digits) - len(sig))
	sign := ""
	if num.neg {
		sign = "-"
	}
	return sign + sig + "e" + strconv.FormatInt(e, 10), true
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
