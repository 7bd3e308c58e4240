package pgxcodec

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// The arrays' binary encodings. pgx encodes a slice parameter through an
// ArrayGetter whose Index boxes each element in an interface (an allocation
// for anything larger than a word: a string, a []byte, a uuid) and then
// encodes that element through its own plan, which for a uuid boxes it
// again. The result loop's buffered writes send arrays of every kind for
// every batch, so that was a tenth of the orchestrator's allocations.
//
// These plans write Postgres's binary array format (array_recv) directly
// from the slice: a one-dimensional array with lower bound 1, a NULL
// element for a nil pointer or a nil []byte, an empty array for an empty
// slice (written with no dimensions, which the server reads as pgx's one
// dimension of length 0) and SQL NULL for a nil slice: the values pgx's
// encoding gives (arrays_test.go). Any other Go type, and the text format,
// go to pgx's own array codec.

// arrayCodec is pgx's codec of one array type with the fast binary plans in
// front of it.
type arrayCodec struct {
	pgtype.Codec // the codec registered for the array type before
	elemOID      uint32
}

func (c *arrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		if p := fastArrayPlan(c.elemOID, value); p != nil {
			return p
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// The arrays given fast plans, by element type.
var fastArrays = []struct{ arrayOID, elemOID uint32 }{
	{pgtype.UUIDArrayOID, pgtype.UUIDOID},
	{pgtype.TextArrayOID, pgtype.TextOID},
	{pgtype.Int4ArrayOID, pgtype.Int4OID},
	{pgtype.Int8ArrayOID, pgtype.Int8OID},
	{pgtype.BoolArrayOID, pgtype.BoolOID},
	{pgtype.TimestamptzArrayOID, pgtype.TimestamptzOID},
	{pgtype.JSONBArrayOID, pgtype.JSONBOID},
}

func registerArrays(m *pgtype.Map) {
	for _, a := range fastArrays {
		t, ok := m.TypeForOID(a.arrayOID)
		if !ok {
			continue
		}
		if _, done := t.Codec.(*arrayCodec); done {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: &arrayCodec{Codec: t.Codec, elemOID: a.elemOID}})
	}
	if t, ok := m.TypeForOID(pgtype.UUIDOID); ok {
		if _, done := t.Codec.(*uuidCodec); !done {
			m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: &uuidCodec{Codec: t.Codec}})
		}
	}
}

// fastArrayPlan is the plan for value as an array of elemOID, or nil when
// value is not one of the slices this file writes for that element type.
func fastArrayPlan(elemOID uint32, value any) pgtype.EncodePlan {
	switch elemOID {
	case pgtype.UUIDOID:
		if _, ok := value.([]uuid.UUID); ok {
			return uuidArray
		}
	case pgtype.TextOID:
		if _, ok := value.([]string); ok {
			return textArray
		}
	case pgtype.Int4OID:
		if _, ok := value.([]int32); ok {
			return int4Array
		}
	case pgtype.Int8OID:
		if _, ok := value.([]int64); ok {
			return int8Array
		}
	case pgtype.BoolOID:
		if _, ok := value.([]bool); ok {
			return boolArray
		}
	case pgtype.TimestamptzOID:
		switch value.(type) {
		case []*time.Time:
			return timePtrArray
		case []time.Time:
			return timeArray
		}
	case pgtype.JSONBOID:
		switch value.(type) {
		case [][]byte:
			return jsonbArray
		case []json.RawMessage:
			return jsonbRawArray
		}
	}
	return nil
}

// arrayPlan writes a []T as a one-dimensional array of elemOID: size is an
// element's length in bytes (-1 for NULL), put appends its binary form.
type arrayPlan[T any] struct {
	elemOID uint32
	size    func(T) int
	put     func([]byte, T) []byte
}

func (p *arrayPlan[T]) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]T)
	if a == nil {
		return nil, nil
	}
	n := 20
	for _, v := range a {
		n += 4 + max(p.size(v), 0)
	}
	if cap(buf)-len(buf) < n {
		// The query builder's buffer is shared by a statement's parameters
		// and starts at 256 bytes for every statement: grow it at least
		// twofold, not by append's quarter for large slices, so that the
		// arrays of a large batch copy it a few times rather than a dozen
		// (BenchmarkEncodeStatementParams).
		buf = slices.Grow(buf, max(n, cap(buf)))
	}
	if len(a) == 0 {
		buf = binary.BigEndian.AppendUint32(buf, 0) // no dimensions
		buf = binary.BigEndian.AppendUint32(buf, 0) // has nulls
		return binary.BigEndian.AppendUint32(buf, p.elemOID), nil
	}
	buf = binary.BigEndian.AppendUint32(buf, 1) // dimensions
	at := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, 0) // has nulls, set at the first NULL
	buf = binary.BigEndian.AppendUint32(buf, p.elemOID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(a)))
	buf = binary.BigEndian.AppendUint32(buf, 1) // lower bound
	for _, v := range a {
		size := p.size(v)
		if size < 0 {
			binary.BigEndian.PutUint32(buf[at:], 1)
			buf = binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF) // length -1: NULL
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(size))
		buf = p.put(buf, v)
	}
	return buf, nil
}

// microsecondsY2K is t as timestamptz's binary value: microseconds since
// 2000-01-01 00:00:00 UTC, sub-microseconds dropped as pgx drops them.
func microsecondsY2K(t time.Time) uint64 {
	const unixToY2K = 946_684_800 * 1_000_000
	return uint64(t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - unixToY2K)
}

func fixed[T any](n int) func(T) int { return func(T) int { return n } }

// jsonbSize and putJSONB: jsonb's binary form is a version byte (1) and the
// JSON text, which the server parses and checks as it would the text
// format's.
func jsonbSize[B ~[]byte](b B) int {
	if b == nil {
		return -1
	}
	return len(b) + 1
}

func putJSONB[B ~[]byte](buf []byte, b B) []byte { return append(append(buf, 1), b...) }

var (
	uuidArray = &arrayPlan[uuid.UUID]{pgtype.UUIDOID, fixed[uuid.UUID](16),
		func(b []byte, u uuid.UUID) []byte { return append(b, u[:]...) }}
	textArray = &arrayPlan[string]{pgtype.TextOID, func(s string) int { return len(s) },
		func(b []byte, s string) []byte { return append(b, s...) }}
	int4Array = &arrayPlan[int32]{pgtype.Int4OID, fixed[int32](4),
		func(b []byte, v int32) []byte { return binary.BigEndian.AppendUint32(b, uint32(v)) }}
	int8Array = &arrayPlan[int64]{pgtype.Int8OID, fixed[int64](8),
		func(b []byte, v int64) []byte { return binary.BigEndian.AppendUint64(b, uint64(v)) }}
	boolArray = &arrayPlan[bool]{pgtype.BoolOID, fixed[bool](1), func(b []byte, v bool) []byte {
		if v {
			return append(b, 1)
		}
		return append(b, 0)
	}}
	timeArray = &arrayPlan[time.Time]{pgtype.TimestamptzOID, fixed[time.Time](8),
		func(b []byte, t time.Time) []byte { return binary.BigEndian.AppendUint64(b, microsecondsY2K(t)) }}
	timePtrArray = &arrayPlan[*time.Time]{pgtype.TimestamptzOID, func(t *time.Time) int {
		if t == nil {
			return -1
		}
		return 8
	}, func(b []byte, t *time.Time) []byte { return binary.BigEndian.AppendUint64(b, microsecondsY2K(*t)) }}
	jsonbArray    = &arrayPlan[[]byte]{pgtype.JSONBOID, jsonbSize[[]byte], putJSONB[[]byte]}
	jsonbRawArray = &arrayPlan[json.RawMessage]{pgtype.JSONBOID, jsonbSize[json.RawMessage], putJSONB[json.RawMessage]}
)

// uuidCodec is pgx's uuid codec with binary plans for uuid.UUID: one that
// writes its 16 bytes without boxing it again, and ones that read them
// into a uuid.UUID or a *uuid.UUID. The read plans have to be the codec's:
// pgx asks a codec for a scan plan before it looks for an sql.Scanner
// (uuid.UUID is one, which parses the value's text form) and before any
// wrapper.
type uuidCodec struct{ pgtype.Codec }

func (c *uuidCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if format == pgtype.BinaryFormatCode {
		switch target.(type) {
		case *uuid.UUID:
			return uuidScanPlan{}
		case **uuid.UUID:
			return uuidPtrScanPlan{}
		}
	}
	return c.Codec.PlanScan(m, oid, format, target)
}

// uuidScanPlan reads a binary uuid into a uuid.UUID; NULL leaves it alone,
// as uuid.UUID's own Scan does.
type uuidScanPlan struct{}

func (uuidScanPlan) Scan(src []byte, dst any) error {
	if src == nil {
		return nil
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %d bytes", len(src))
	}
	copy(dst.(*uuid.UUID)[:], src)
	return nil
}

// uuidPtrScanPlan reads a binary uuid into a *uuid.UUID (a nullable uuid).
type uuidPtrScanPlan struct{}

func (uuidPtrScanPlan) Scan(src []byte, dst any) error {
	p := dst.(**uuid.UUID)
	if src == nil {
		*p = nil
		return nil
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %d bytes", len(src))
	}
	u := new(uuid.UUID)
	copy(u[:], src)
	*p = u
	return nil
}

func (c *uuidCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		if _, ok := value.(uuid.UUID); ok {
			return uuidPlan{}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type uuidPlan struct{}

func (uuidPlan) Encode(value any, buf []byte) ([]byte, error) {
	u := value.(uuid.UUID)
	return append(buf, u[:]...), nil
}
