package jsonenc

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"testing"

	"github.com/google/uuid"
)

var strs = []string{
	"", "plain", "trace-00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "with space",
	`q"uote`, `back\slash`, "tab\there", "nl\n", "<html>&", "ünïcode", "\u2028", "bad\xffutf8", "nul\x00", "~",
}

func TestAppendStringAsMarshal(t *testing.T) {
	for _, s := range strs {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("AppendString(%q) = %s, json.Marshal gives %s", s, got[1:], want)
		}
	}
}

func TestAppendUUIDAsMarshal(t *testing.T) {
	for _, id := range []uuid.UUID{uuid.Nil, uuid.New(), uuid.Must(uuid.NewV7()), uuid.Max} {
		want, _ := json.Marshal(id)
		if got := AppendUUID(nil, id); !bytes.Equal(got, want) {
			t.Errorf("AppendUUID(%s) = %s, want %s", id, got, want)
		}
	}
}

func TestStringMapAsMarshal(t *testing.T) {
	cases := []map[string]string{nil, {}, {"traceparent": "tp"}, {"event_type": "task.completed", "traceparent": "00-x"}}
	many := map[string]string{}
	for i, s := range strs {
		many[s] = strs[len(strs)-1-i]
	}
	cases = append(cases, many)
	for _, m := range cases {
		want, _ := json.Marshal(m)
		if got := StringMap(m); !bytes.Equal(got, want) {
			t.Errorf("StringMap(%q) = %s, json.Marshal gives %s", m, got, want)
		}
	}
}

func TestObjectAsMarshal(t *testing.T) {
	cases := []map[string]any{
		nil, {},
		{"trigger": "enqueue"},
		{"worker_id": "w-1", "attempt": 3, "trigger": "claim"},
		{"i32": int32(-7), "i64": int64(math.MaxInt64), "min": math.MinInt, "t": true, "f": false, "n": nil},
		{"escaped <key>": "va\"lue"},
		// Not the fast path's: json.Marshal's bytes all the same.
		{"f": 1.5, "s": "x"},
		{"raw": json.RawMessage(`{ "a" : 1 }`)},
		{"nested": map[string]any{"b": 1, "a": []int{1}}},
		{"u": uint8(3)},
	}
	for _, m := range cases {
		want, werr := json.Marshal(m)
		got, err := Object(m)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Errorf("Object(%v) = %s, %v; json.Marshal gives %s, %v", m, got, err, want, werr)
		}
	}
	if _, err := Object(map[string]any{"c": make(chan int)}); err == nil {
		t.Error("Object of a channel: no error")
	}
}

func TestDecodeStringMap(t *testing.T) {
	fast := []string{
		`{}`, ` { } `, `{"traceparent": "00-abc-01"}`, `{"a":"1","b":"2"}`,
		`{"event_type": "task.completed", "traceparent": ""}`, "{\n\t\"k\" : \"v\" \r\n}",
		`{"dup": "1", "dup": "2"}`,
	}
	for _, raw := range fast {
		got, ok := DecodeStringMap([]byte(raw))
		var want map[string]string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if !ok || !maps.Equal(got, want) {
			t.Errorf("DecodeStringMap(%s) = %v, %v; want %v, true", raw, got, ok, want)
		}
	}
	slow := []string{
		``, `null`, `[]`, `"s"`, `{`, `{"a"}`, `{"a":}`, `{"a":"b"`, `{"a":"b",}`, `{"a":"b"}x`, `{"a":"b" "c":"d"}`,
		`{"n": 1}`, `{"b": true}`, `{"o": {}}`, `{"z": null}`, `{"e": "a\"b"}`, `{"u": "ü"}`, "{\"c\": \"\x01\"}",
		`{a: "b"}`,
	}
	for _, raw := range slow {
		if got, ok := DecodeStringMap([]byte(raw)); ok {
			t.Errorf("DecodeStringMap(%q) = %v, true; want the slow path", raw, got)
		}
	}
}

func FuzzDecodeStringMap(f *testing.F) {
	f.Add(`{"a": "b", "c": "d"}`)
	f.Add(`{"x": 1}`)
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := DecodeStringMap([]byte(raw))
		if !ok {
			return
		}
		var want map[string]string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatalf("fast path accepted %q, json.Unmarshal refuses it: %v", raw, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%q: fast %v, json.Unmarshal %v", raw, got, want)
		}
	})
}

func BenchmarkStringMap(b *testing.B) {
	m := map[string]string{"event_type": "step.completed", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	b.Run("jsonenc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = StringMap(m)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(m)
		}
	})
}

// rawMembersCases are valid objects RawMembers must split itself (ok), and
// valid JSON it must hand back (not ok): keys with escapes or non-ASCII
// bytes, and values other than objects.
var rawMembersCases = []struct {
	raw string
	ok  bool
}{
	{`{}`, true}, {` { } `, true},
	{`{"a": {"b": [1, 2, {"c": "}]\"{"}]}, "d": "x,y", "e": -1.5e3, "f": true, "g": null, "h": []}`, true},
	{`{"a":1,"b":"2","c":[3],"d":{"e":4}}`, true},
	{"{\"s\":\"tab\\t\\\"q\\\\\",\n\"n\" :\t0 }", true},
	{`{"k": "v", "k": {"w": 1}}`, true},
	{`{"a\"b": 1}`, false}, {`{"ü": 1}`, false}, {`[1, 2]`, false}, {`"s"`, false}, {`null`, false}, {`12`, false},
}

func TestRawMembersAsUnmarshal(t *testing.T) {
	for _, c := range rawMembersCases {
		got, ok := RawMembers([]byte(c.raw))
		if ok != c.ok {
			t.Errorf("%q: ok %v, want %v", c.raw, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.raw), &want); err != nil {
			t.Fatalf("%q: %v", c.raw, err)
		}
		if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
			t.Errorf("%q: got %q, json.Unmarshal %q", c.raw, got, want)
		}
	}
}

// For valid JSON, RawMembers either declines or gives json.Unmarshal's map,
// byte for byte. (Invalid JSON is outside its contract.)
func FuzzRawMembers(f *testing.F) {
	for _, c := range rawMembersCases {
		f.Add(c.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !json.Valid([]byte(raw)) {
			return
		}
		got, ok := RawMembers([]byte(raw))
		var want map[string]json.RawMessage
		err := json.Unmarshal([]byte(raw), &want)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("%q: split, but json.Unmarshal refuses it: %v", raw, err)
		}
		if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
			t.Fatalf("%q: got %q, json.Unmarshal %q", raw, got, want)
		}
	})
}

func BenchmarkRawMembers(b *testing.B) {
	raw := []byte(`{"first": {"pad": "` + string(bytes.Repeat([]byte("x"), 16<<10)) + `", "n": [1, 2]}, "second": {"ok": true}}`)
	b.Run("jsonenc", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, ok := RawMembers(raw); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
