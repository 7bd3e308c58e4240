package template

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// JSON returns the template's canonical JSON: every key present with its
// effective value, in a fixed order, the context schema compact with sorted
// keys. This is what the store keeps; ParseJSON reads it back to an equal
// template.
func (t *Template) JSON() ([]byte, error) {
	d := t.document()
	schema, err := canonicalSchema(t.ContextSchema)
	if err != nil {
		return nil, fmt.Errorf("encode template %s: %w", t.Key(), err)
	}
	d.ContextSchema = schema
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode template %s: %w", t.Key(), err)
	}
	return b, nil
}

// Hash is the hex SHA-256 of JSON: documents that differ only in layout,
// key order or spelled-out defaults hash the same; any change to what the
// engine would run changes it. A template whose JSON fails (a hand-built
// one with a malformed ContextSchema; Parse never returns one) hashes to "".
func (t *Template) Hash() string {
	b, err := t.JSON()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
