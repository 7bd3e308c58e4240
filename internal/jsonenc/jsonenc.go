// Package jsonenc writes and reads the small JSON objects the engine builds
// for every step — queue message headers, transition metadata, domain event
// envelopes — without encoding/json's reflection, in the exact bytes
// json.Marshal gives. Anything outside the shapes it knows (a value type it
// does not write, a string that needs escaping, headers that are not a flat
// object of plain strings) goes through encoding/json, so the output never
// differs; only the common case is fast. In the benchmark's profile
// encoding/json's Marshal, Unmarshal and Valid were a fifth of the
// orchestrator's and workers' CPU (docs/performance.md).
package jsonenc

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/google/uuid"
)

// AppendString appends s as json.Marshal writes a string: as is when it is
// printable ASCII other than the characters json.Marshal escapes (quote,
// backslash and HTML's <, >, &), else through json.Marshal.
func AppendString(out []byte, s string) []byte {
	if !plain(s) {
		b, _ := json.Marshal(s) // a string always encodes
		return append(out, b...)
	}
	out = append(out, '"')
	out = append(out, s...)
	return append(out, '"')
}

// plain says whether json.Marshal writes s between quotes unchanged.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// AppendUUID appends id as a JSON string, as json.Marshal writes it (its
// MarshalText: the canonical lowercase form).
func AppendUUID(out []byte, id uuid.UUID) []byte {
	var b [38]byte
	b[0], b[37] = '"', '"'
	hex.Encode(b[1:9], id[0:4])
	b[9] = '-'
	hex.Encode(b[10:14], id[4:6])
	b[14] = '-'
	hex.Encode(b[15:19], id[6:8])
	b[19] = '-'
	hex.Encode(b[20:24], id[8:10])
	b[24] = '-'
	hex.Encode(b[25:37], id[10:16])
	return append(out, b[:]...)
}

// AppendMap appends m as json.Marshal writes a map with string keys: its
// keys sorted, "null" for a nil map; appendValue writes each value.
func AppendMap[V any](out []byte, m map[string]V, appendValue func([]byte, V) []byte) []byte {
	if m == nil {
		return append(out, "null"...)
	}
	var keys [8]string
	ks := keys[:0]
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	out = append(out, '{')
	for i, k := range ks {
		if i > 0 {
			out = append(out, ',')
		}
		out = AppendString(out, k)
		out = append(out, ':')
		out = appendValue(out, m[k])
	}
	return append(out, '}')
}

// AppendInt appends n as json.Marshal writes an integer.
func AppendInt(out []byte, n int) []byte { return strconv.AppendInt(out, int64(n), 10) }

// StringMap is json.Marshal(m) for a map of strings.
func StringMap(m map[string]string) []byte {
	n := 2
	for k, v := range m {
		n += len(k) + len(v) + 6
	}
	return AppendMap(make([]byte, 0, n), m, AppendString)
}

// Object is json.Marshal(m) for a map whose values are strings, integers,
// booleans or nil, the values transition metadata holds; a map with any
// other value is encoded by json.Marshal.
func Object(m map[string]any) ([]byte, error) {
	for _, v := range m {
		switch v.(type) {
		case string, int, int32, int64, bool, nil:
		default:
			return json.Marshal(m)
		}
	}
	return AppendMap(make([]byte, 0, 16+24*len(m)), m, appendSimple), nil
}

// appendSimple appends one of the values Object writes itself.
func appendSimple(out []byte, v any) []byte {
	switch v := v.(type) {
	case string:
		return AppendString(out, v)
	case int:
		return strconv.AppendInt(out, int64(v), 10)
	case int32:
		return strconv.AppendInt(out, int64(v), 10)
	case int64:
		return strconv.AppendInt(out, v, 10)
	case bool:
		return strconv.AppendBool(out, v)
	}
	return append(out, "null"...)
}

// DecodeStringMap reads a JSON object whose values are strings into a map,
// as json.Unmarshal into map[string]string does. ok is false when raw is
// anything else (another value kind, escapes, malformed text); the caller
// then decodes it the slow way. Postgres's jsonb output ({"k": "v", ...},
// with a space after each colon and comma) and json.Marshal's both take the
// fast path when no string has a backslash.
func DecodeStringMap(raw []byte) (m map[string]string, ok bool) {
	m = make(map[string]string, 4)
	if !Fields(raw, func(k []byte, kind Kind, text []byte) bool {
		if kind != String {
			return false
		}
		m[string(k)] = string(text)
		return true
	}) {
		return nil, false
	}
	return m, true
}

// ParseInt is the value of an Int member's text as json.Unmarshal stores it
// in an int64; ok is false when it does not fit.
func ParseInt(text []byte) (int64, bool) {
	neg := len(text) > 0 && text[0] == '-'
	if neg {
		text = text[1:]
	}
	if len(text) == 0 || len(text) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range text {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return -int64(u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

// AsUUID is a String member's uuid, as json.Unmarshal reads a uuid.UUID
// (its UnmarshalText); ok is false for another kind or text it refuses.
func AsUUID(kind Kind, text []byte) (uuid.UUID, bool) {
	if kind != String {
		return uuid.Nil, false
	}
	id, err := uuid.ParseBytes(text)
	return id, err == nil
}

// AsInt is an Int member's value as json.Unmarshal stores it in an int; ok is
// false for another kind or a value out of int's range.
func AsInt(kind Kind, text []byte) (int, bool) {
	n, ok := ParseInt(text)
	if kind != Int || !ok || int64(int(n)) != n {
		return 0, false
	}
	return int(n), true
}

// Kind is the kind of a member's value in Fields.
type Kind uint8

const (
	String Kind = iota + 1 // a string without escapes; the text is its content
	Int                    // an integer in JSON's grammar (no fraction or exponent); the text is the literal
	True
	False
	Null
)

// Fields calls fn with each member of a flat JSON object, in order: its key
// and its value's kind and text. It returns false, having called fn for
// none or some members, when raw is not such an object — a value of
// another kind (an object, an array, a number with a fraction or an
// exponent), a string or key with an escape, a control character or a
// non-ASCII byte, malformed text — or when fn returns false. The caller then
// decodes raw with encoding/json, whose result and errors the fast path
// must match: it is for the engine's own small messages, which always take
// it.
func Fields(raw []byte, fn func(key []byte, kind Kind, text []byte) bool) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for {
		k0, k1, ok := plainSpan(raw, i)
		if !ok {
			return false
		}
		i = skipSpace(raw, k1+1)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipSpace(raw, i+1)
		if i >= len(raw) {
			return false
		}
		var kind Kind
		var text []byte
		switch c := raw[i]; {
		case c == '"':
			v0, v1, ok := plainSpan(raw, i)
			if !ok {
				return false
			}
			kind, text, i = String, raw[v0:v1], v1+1
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			if raw[j] == '-' {
				j++
			}
			switch {
			case j < len(raw) && raw[j] == '0':
				j++
			case j < len(raw) && raw[j] >= '1' && raw[j] <= '9':
				for j < len(raw) && raw[j] >= '0' && raw[j] <= '9' {
					j++
				}
			default:
				return false
			}
			if j < len(raw) && (raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E' || (raw[j] >= '0' && raw[j] <= '9')) {
				return false
			}
			kind, text, i = Int, raw[i:j], j
		case hasWord(raw, i, "true"):
			kind, i = True, i+4
		case hasWord(raw, i, "false"):
			kind, i = False, i+5
		case hasWord(raw, i, "null"):
			kind, i = Null, i+4
		default:
			return false
		}
		if !fn(raw[k0:k1], kind, text) {
			return false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return skipSpace(raw, i+1) == len(raw)
		default:
			return false
		}
	}
}

// plainSpan is the content of the string that starts at raw[i] (its
// opening quote), [start, end) with raw[end] its closing quote, when it has
// no escape, control character or non-ASCII byte.
func plainSpan(raw []byte, i int) (int, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return 0, 0, false
	}
	for j := i + 1; j < len(raw); j++ {
		switch c := raw[j]; {
		case c == '"':
			return i + 1, j, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// hasWord says whether the literal w is at raw[i], followed by a delimiter
// or the end.
func hasWord(raw []byte, i int, w string) bool {
	if len(raw)-i < len(w) || string(raw[i:i+len(w)]) != w {
		return false
	}
	j := i + len(w)
	return j == len(raw) || raw[j] == ',' || raw[j] == '}' || raw[j] == ' ' || raw[j] == '\t' || raw[j] == '\n' || raw[j] == '\r'
}

// RawMembers splits a JSON object into its members' raw values, as
// json.Unmarshal into a map[string]json.RawMessage does, without reading
// the values beyond finding where each ends: one pass over the text where
// encoding/json makes two (it checks the whole text, then skips each value
// to find its end). The values are slices of raw, not copies. ok is false —
// the caller then decodes raw with encoding/json — for anything but an
// object whose keys have no escapes, control characters or non-ASCII bytes;
// the values are not checked, so raw must be valid JSON (the object
// Postgres builds of a step's dependencies' results, which the Go SDK's
// claims read). A key given twice keeps its last value, as json.Unmarshal
// does.
func RawMembers(raw []byte) (m map[string]json.RawMessage, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	m = make(map[string]json.RawMessage, 2)
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return m, skipSpace(raw, i+1) == len(raw)
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return nil, false
		}
		start := i + 1
		j := start
		for j < len(raw) && raw[j] != '"' {
			if c := raw[j]; c == '\\' || c < 0x20 || c >= 0x80 {
				return nil, false
			}
			j++
		}
		if j >= len(raw) {
			return nil, false
		}
		key := string(raw[start:j])
		i = skipSpace(raw, j+1)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		i = skipSpace(raw, i+1)
		end, ok := valueEnd(raw, i)
		if !ok {
			return nil, false
		}
		m[key] = json.RawMessage(raw[i:end:end])
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return m, skipSpace(raw, i+1) == len(raw)
		default:
			return nil, false
		}
	}
}

// valueEnd is the index just past the JSON value that starts at raw[i],
// found by its brackets and strings alone.
func valueEnd(raw []byte, i int) (int, bool) {
	if i >= len(raw) {
		return 0, false
	}
	depth := 0
	for j := i; j < len(raw); j++ {
		switch c := raw[j]; c {
		case '"':
			j++
			for j < len(raw) && raw[j] != '"' {
				if raw[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(raw) {
				return 0, false
			}
			if depth == 0 {
				return j + 1, true
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				// The end of the enclosing object: a scalar ended before it.
				return j, j > i
			}
			depth--
			if depth == 0 {
				return j + 1, true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j, j > i
			}
		}
	}
	if depth == 0 && len(raw) > i {
		return len(raw), true
	}
	return 0, false
}
