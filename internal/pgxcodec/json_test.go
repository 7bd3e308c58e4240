package pgxcodec_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasker/tasker/internal/pgxcodec"
)

// A json or jsonb value scanned into a json.RawMessage is the server's bytes,
// copied with this package's plan rather than json.Unmarshal's, in text and
// binary format; NULL gives nil, and json null the word null.
func TestRawMessageScanCopiesTheBytes(t *testing.T) {
	plain := pgtype.NewMap()
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	pgxcodec.Register(m) // twice: no wrapper around the wrapper
	big := `{"pad": "` + strings.Repeat("x", 16<<10) + `", "n": [1, 2.5, null, true]}`
	for _, c := range []struct {
		oid    uint32
		format int16
		src    []byte
		want   json.RawMessage
	}{
		{pgtype.JSONBOID, pgtype.BinaryFormatCode, append([]byte{1}, big...), json.RawMessage(big)},
		{pgtype.JSONBOID, pgtype.TextFormatCode, []byte(big), json.RawMessage(big)},
		{pgtype.JSONOID, pgtype.BinaryFormatCode, []byte(`{"a":1}`), json.RawMessage(`{"a":1}`)},
		{pgtype.JSONOID, pgtype.TextFormatCode, []byte(`[1, 2]`), json.RawMessage(`[1, 2]`)},
		{pgtype.JSONBOID, pgtype.BinaryFormatCode, append([]byte{1}, "null"...), json.RawMessage(`null`)},
		{pgtype.JSONBOID, pgtype.BinaryFormatCode, nil, nil},
		{pgtype.JSONOID, pgtype.TextFormatCode, nil, nil},
	} {
		name := fmt.Sprintf("oid %d format %d %.12q", c.oid, c.format, c.src)
		var got json.RawMessage = json.RawMessage(`"left over"`)
		plan := m.PlanScan(c.oid, c.format, &got)
		if p := fmt.Sprintf("%T", plan); !strings.Contains(p, "pgxcodec") {
			t.Errorf("%s: planned with %s (unregistered: %T), want this package's plan", name,
				p, plain.PlanScan(c.oid, c.format, &got))
		}
		if err := plan.Scan(c.src, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != string(c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("%s: scanned %.40q (nil %v), want %.40q (nil %v)", name, got, got == nil, c.want, c.want == nil)
		}
		// The result is a copy, not the connection's buffer.
		if len(c.src) > 0 && len(got) > 0 && &got[len(got)-1] == &c.src[len(c.src)-1] {
			t.Errorf("%s: the scanned value shares the source's bytes", name)
		}
	}
	// Other targets keep pgx's plans.
	var v map[string]any
	if err := m.PlanScan(pgtype.JSONBOID, pgtype.TextFormatCode, &v).Scan([]byte(`{"k": 2}`), &v); err != nil || v["k"] != 2.0 {
		t.Errorf("jsonb into a map: %v, %v", v, err)
	}
}

// The plan costs one allocation (the copy) whatever the size, where
// json.Unmarshal's costs time in proportion to the value.
func TestRawMessageScanAllocatesTheCopyOnly(t *testing.T) {
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	src := append([]byte{1}, `{"pad": "`+strings.Repeat("x", 16<<10)+`"}`...)
	var got json.RawMessage
	plan := m.PlanScan(pgtype.JSONBOID, pgtype.BinaryFormatCode, &got)
	if allocs := testing.AllocsPerRun(50, func() {
		if err := plan.Scan(src, &got); err != nil {
			t.Fatal(err)
		}
	}); allocs != 1 {
		t.Errorf("%v allocations per scan, want 1", allocs)
	}
}
