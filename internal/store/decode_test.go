package store

import (
	"encoding/json"
	"maps"
	"testing"
)

// decodeCounts gives json.Unmarshal's map and error, whichever path it
// takes.
func FuzzDecodeCounts(f *testing.F) {
	f.Add(`{"complete": 3, "pending": 1}`)
	f.Add(`{}`)
	f.Add(`{"a": 1.5}`)
	f.Add(`{"a": 9223372036854775808}`)
	f.Add(`{"a": -9223372036854775808, "a": 2}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, raw string) {
		var got, want map[string]int
		err := decodeCounts([]byte(raw), &got)
		werr := json.Unmarshal([]byte(raw), &want)
		if !maps.Equal(got, want) || (got == nil) != (want == nil) || (err == nil) != (werr == nil) ||
			(err != nil && err.Error() != werr.Error()) {
			t.Fatalf("%q: got %v, %v; json.Unmarshal %v, %v", raw, got, err, want, werr)
		}
	})
}

// metadataText answers as metadata->>key does, through either path.
func TestMetadataText(t *testing.T) {
	for _, c := range []struct{ meta, want string }{
		{``, ""}, {`{}`, ""}, {`{"reason": "by operator"}`, "by operator"}, {`{"reason": null}`, ""},
		{`{"reason": 12}`, "12"}, {`{"reason": true}`, "true"}, {`{"reason": false}`, "false"},
		{`{"reason": "a", "reason": "b"}`, "b"}, {`{"other": "x"}`, ""}, {`{"reason": "tab\there"}`, "tab\there"},
		{`{"reason": {"k": 1}}`, `{"k": 1}`}, {`{"reason": 1.5e3}`, "1.5e3"}, {`{"Reason": "x"}`, ""},
	} {
		got, err := metadataText([]byte(c.meta), "reason")
		if err != nil || got != c.want {
			t.Errorf("metadataText(%s) = %q, %v; want %q", c.meta, got, err, c.want)
		}
	}
	if _, err := metadataText([]byte(`{"reason":`), "reason"); err == nil {
		t.Error("malformed metadata: no error")
	}
}
