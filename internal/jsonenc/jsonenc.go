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

// StringMap is json.Marshal(m) for a map of strings: an object with its keys
// sorted, "null" for a nil map.
func StringMap(m map[string]string) []byte {
	if m == nil {
		return []byte("null")
	}
	var keys [8]string
	ks := keys[:0]
	n := 2
	for k, v := range m {
		ks = append(ks, k)
		n += len(k) + len(v) + 6
	}
	slices.Sort(ks)
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, k := range ks {
		if i > 0 {
			out = append(out, ',')
		}
		out = AppendString(out, k)
		out = append(out, ':')
		out = AppendString(out, m[k])
	}
	return append(out, '}')
}

// Object is json.Marshal(m) for a map whose values are strings, integers,
// booleans or nil, the values transition metadata holds; a map with any
// other value is encoded by json.Marshal.
func Object(m map[string]any) ([]byte, error) {
	if m == nil {
		return []byte("null"), nil
	}
	var keys [8]string
	ks := keys[:0]
	for k, v := range m {
		switch v.(type) {
		case string, int, int32, int64, bool, nil:
		default:
			return json.Marshal(m)
		}
		ks = append(ks, k)
	}
	slices.Sort(ks)
	out := make([]byte, 0, 16+24*len(ks))
	out = append(out, '{')
	for i, k := range ks {
		if i > 0 {
			out = append(out, ',')
		}
		out = AppendString(out, k)
		out = append(out, ':')
		switch v := m[k].(type) {
		case string:
			out = AppendString(out, v)
		case int:
			out = strconv.AppendInt(out, int64(v), 10)
		case int32:
			out = strconv.AppendInt(out, int64(v), 10)
		case int64:
			out = strconv.AppendInt(out, v, 10)
		case bool:
			out = strconv.AppendBool(out, v)
		case nil:
			out = append(out, "null"...)
		}
	}
	return append(out, '}'), nil
}

// DecodeStringMap reads a JSON object whose values are strings into a map,
// as json.Unmarshal into map[string]string does. ok is false when raw is
// anything else (another value kind, escapes, malformed text); the caller
// then decodes it the slow way. Postgres's jsonb output ({"k": "v", ...},
// with a space after each colon and comma) and json.Marshal's both take the
// fast path when no string has a backslash.
func DecodeStringMap(raw []byte) (m map[string]string, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	m = make(map[string]string, 4)
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return m, skipSpace(raw, i+1) == len(raw)
	}
	for {
		var k, v string
		if k, i, ok = plainString(raw, i); !ok {
			return nil, false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		if v, i, ok = plainString(raw, skipSpace(raw, i+1)); !ok {
			return nil, false
		}
		m[k] = v
		i = skipSpace(raw, i)
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

// plainString reads a string without escapes starting at raw[i] (its
// opening quote) and returns it and the index after its closing quote.
// Control characters and invalid UTF-8 (which json.Unmarshal would refuse or
// replace) send the caller to the slow path.
func plainString(raw []byte, i int) (string, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(raw); j++ {
		switch c := raw[j]; {
		case c == '"':
			return string(raw[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", i, false
		}
	}
	return "", i, false
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}
