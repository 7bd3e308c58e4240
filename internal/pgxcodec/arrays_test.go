package pgxcodec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasker/tasker/internal/pgxcodec"
	"github.com/tasker/tasker/internal/testdb"
)

// Every slice the fast plans write reaches the server as the array pgx's
// own encoding sends: the same text, NULL elements, NULL for a nil slice
// and an empty array for an empty one.
func TestArraysAsPgxSendsThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.URL(t)
	plain := testdb.Pool(t, url)
	reg := testdb.Pool(t, url, pgxcodec.ConfigurePool)

	a, b := uuid.Must(uuid.NewV7()), uuid.New()
	at := time.Date(2026, 11, 28, 6, 30, 15, 123456789, time.UTC)
	before := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.FixedZone("x", -5*3600))
	cases := []struct {
		typ   string
		value any
	}{
		{"uuid[]", []uuid.UUID{a, b}},
		{"uuid[]", []uuid.UUID{}},
		{"uuid[]", []uuid.UUID(nil)},
		{"text[]", []string{"", "enqueued", "a \"quoted\", {braced} \\ value", "ünïcode"}},
		{"text[]", []string{}},
		{"text[]", []string(nil)},
		{"integer[]", []int32{0, 1, -1, 2147483647, -2147483648}},
		{"integer[]", []int32(nil)},
		{"bigint[]", []int64{0, 42, -9223372036854775808, 9223372036854775807}},
		{"bigint[]", []int64{}},
		{"boolean[]", []bool{true, false, true}},
		{"boolean[]", []bool(nil)},
		{"timestamptz[]", []*time.Time{&at, nil, &before}},
		{"timestamptz[]", []*time.Time{nil}},
		{"timestamptz[]", []*time.Time(nil)},
		{"timestamptz[]", []time.Time{at, before}},
		{"jsonb[]", [][]byte{[]byte(`{"b": 1, "a": [true, null]}`), nil, []byte(`"x"`), []byte(`null`)}},
		{"jsonb[]", [][]byte{}},
		{"jsonb[]", [][]byte(nil)},
		{"jsonb[]", []json.RawMessage{json.RawMessage(`{"k": "v"}`), nil}},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s %#v", c.typ, c.value)
		q := fmt.Sprintf(`SELECT $1::%[1]s::text, $1::%[1]s IS NULL, cardinality($1::%[1]s), array_ndims($1::%[1]s)`, c.typ)
		var want, got struct {
			text  *string
			null  bool
			card  *int
			ndims *int
		}
		if err := plain.QueryRow(ctx, q, c.value).Scan(&want.text, &want.null, &want.card, &want.ndims); err != nil {
			t.Fatalf("%s, plain pgx: %v", name, err)
		}
		if err := reg.QueryRow(ctx, q, c.value).Scan(&got.text, &got.null, &got.card, &got.ndims); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fmt.Sprint(deref(got.text), got.null, deref(got.card), deref(got.ndims)) !=
			fmt.Sprint(deref(want.text), want.null, deref(want.card), deref(want.ndims)) {
			t.Errorf("%s: got %s null=%v cardinality %s ndims %s, pgx sends %s null=%v cardinality %s ndims %s", name,
				deref(got.text), got.null, deref(got.card), deref(got.ndims),
				deref(want.text), want.null, deref(want.card), deref(want.ndims))
		}
	}

	// The timestamps keep their microseconds (and drop the nanoseconds).
	var back []time.Time
	if err := reg.QueryRow(ctx, `SELECT $1::timestamptz[]`, []*time.Time{&at, &before}).Scan(&back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !back[0].Equal(at.Truncate(time.Microsecond)) || !back[1].Equal(before) {
		t.Errorf("timestamps came back as %v, want %v and %v", back, at.Truncate(time.Microsecond), before)
	}

	// Invalid JSON is the server's error, as with pgx's encoding.
	_, err := reg.Exec(ctx, `SELECT $1::jsonb[]`, [][]byte{[]byte(`{`)})
	if err == nil || !strings.Contains(err.Error(), "json") {
		t.Errorf("invalid JSON in a jsonb[] element: %v, want the server's JSON error", err)
	}
}

// A slice of a type the fast plans do not write still goes through pgx's
// own array encoding, and the text format still works.
func TestOtherArraysUnchanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := testdb.Pool(t, testdb.URL(t), pgxcodec.ConfigurePool)
	var text string
	if err := reg.QueryRow(ctx, `SELECT $1::integer[]::text`, []int{3, 4}).Scan(&text); err != nil || text != "{3,4}" {
		t.Errorf("[]int as integer[]: %q, %v", text, err)
	}
	if err := reg.QueryRow(ctx, `SELECT $1::text[]::text`, []*string{nil}).Scan(&text); err != nil || text != "{NULL}" {
		t.Errorf("[]*string as text[]: %q, %v", text, err)
	}
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	if p := m.PlanEncode(pgtype.UUIDArrayOID, pgtype.TextFormatCode, []uuid.UUID{uuid.New()}); p == nil {
		t.Error("no text plan for []uuid.UUID")
	}
	if p := fmt.Sprintf("%T", m.PlanEncode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, []uuid.UUID{})); !strings.Contains(p, "pgxcodec") {
		t.Errorf("[]uuid.UUID is encoded by %s, want this package's plan", p)
	}
	// Registering twice wraps once.
	pgxcodec.Register(m)
	if p := fmt.Sprintf("%T", m.PlanEncode(pgtype.Int4ArrayOID, pgtype.BinaryFormatCode, []int32{1})); !strings.Contains(p, "pgxcodec") {
		t.Errorf("[]int32 after a second Register: %s", p)
	}
}

// The point of the plans: encoding a batch's arrays allocates nothing but
// the buffer's growth.
func TestArrayEncodeAllocations(t *testing.T) {
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	ids := make([]uuid.UUID, 50)
	for i := range ids {
		ids[i] = uuid.New()
	}
	meta := make([][]byte, 50)
	for i := range meta {
		meta[i] = []byte(`{"trigger":"enqueue"}`)
	}
	buf := make([]byte, 0, 1<<16)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if _, err = m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, buf[:0]); err != nil {
			t.Fatal(err)
		}
		if _, err = m.Encode(pgtype.JSONBArrayOID, pgtype.BinaryFormatCode, meta, buf[:0]); err != nil {
			t.Fatal(err)
		}
	})
	// Map.Encode boxes the slice itself once per call.
	if allocs > 2 {
		t.Errorf("%v allocations to encode a uuid[] and a jsonb[] of 50, want at most 2", allocs)
	}
}

func BenchmarkEncodeUUIDArray(b *testing.B) {
	for _, reg := range []bool{false, true} {
		b.Run(fmt.Sprintf("registered=%v", reg), func(b *testing.B) {
			m := pgtype.NewMap()
			if reg {
				pgxcodec.Register(m)
			}
			ids := make([]uuid.UUID, 50)
			for i := range ids {
				ids[i] = uuid.New()
			}
			buf := make([]byte, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func deref[T any](p *T) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

// BenchmarkEncodeStatementParams encodes the array parameters of one
// statement into one buffer, as pgx's query builder does (a fresh buffer of
// 256 bytes per statement, shared by its parameters): the shape of a
// creation batch of 100 tasks, 48 arrays of uuids, texts, integers and
// JSON.
func BenchmarkEncodeStatementParams(b *testing.B) {
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	const n = 100
	ids := make([]uuid.UUID, n)
	texts := make([]string, n)
	ints := make([]int32, n)
	docs := make([][]byte, n)
	for i := range n {
		ids[i], texts[i], ints[i] = uuid.New(), fmt.Sprintf("text-%d", i), int32(i)
		docs[i] = []byte(fmt.Sprintf(`{"trigger":"created","i":%d}`, i))
	}
	type param struct {
		oid uint32
		v   any
	}
	var params []param
	for range 12 {
		params = append(params, param{pgtype.UUIDArrayOID, ids}, param{pgtype.TextArrayOID, texts},
			param{pgtype.Int4ArrayOID, ints}, param{pgtype.JSONBArrayOID, docs})
	}
	b.ReportAllocs()
	for b.Loop() {
		buf := make([]byte, 0, 256)
		for _, p := range params {
			var err error
			if buf, err = m.Encode(p.oid, pgtype.BinaryFormatCode, p.v, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
