package store

import "testing"

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
