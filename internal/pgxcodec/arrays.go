package pgxcodec

import (
	"encoding/binary"
	"encoding/json"
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
// element for a nil pointer or a nil []byte, an empty array (no dimensions)
// for an empty slice, and SQL NULL for a nil slice, as pgx does. Any other
// Go type, and the text format, go to pgx's own array codec.

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
			return uuidArrayPlan{}
		}
	case pgtype.TextOID:
		if _, ok := value.([]string); ok {
			return textArrayPlan{}
		}
	case pgtype.Int4OID:
		if _, ok := value.([]int32); ok {
			return int4ArrayPlan{}
		}
	case pgtype.Int8OID:
		if _, ok := value.([]int64); ok {
			return int8ArrayPlan{}
		}
	case pgtype.BoolOID:
		if _, ok := value.([]bool); ok {
			return boolArrayPlan{}
		}
	case pgtype.TimestamptzOID:
		switch value.(type) {
		case []*time.Time:
			return timePtrArrayPlan{}
		case []time.Time:
			return timeArrayPlan{}
		}
	case pgtype.JSONBOID:
		switch value.(type) {
		case [][]byte:
			return jsonbArrayPlan{}
		case []json.RawMessage:
			return jsonbRawArrayPlan{}
		}
	}
	return nil
}

// arrayHeader appends the header of a one-dimensional array of n elements
// (no dimensions when n is 0) and returns where the has-nulls flag is, to
// be set by setHasNull.
func arrayHeader(buf []byte, elemOID uint32, n int) ([]byte, int) {
	if n == 0 {
		buf = binary.BigEndian.AppendUint32(buf, 0) // dimensions
		at := len(buf)
		buf = binary.BigEndian.AppendUint32(buf, 0) // has nulls
		return binary.BigEndian.AppendUint32(buf, elemOID), at
	}
	buf = binary.BigEndian.AppendUint32(buf, 1)
	at := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, 0)
	buf = binary.BigEndian.AppendUint32(buf, elemOID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1), at // lower bound
}

func setHasNull(buf []byte, at int) { binary.BigEndian.PutUint32(buf[at:], 1) }

// appendNull appends a NULL element (length -1).
func appendNull(buf []byte) []byte { return binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF) }

// grow makes room for n more bytes at once (growing as append does, so
// that the query builder's shared buffer keeps its amortized growth).
func grow(buf []byte, n int) []byte { return slices.Grow(buf, n) }

type uuidArrayPlan struct{}

func (uuidArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]uuid.UUID)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+20*len(a))
	buf, _ = arrayHeader(buf, pgtype.UUIDOID, len(a))
	for i := range a {
		buf = binary.BigEndian.AppendUint32(buf, 16)
		buf = append(buf, a[i][:]...)
	}
	return buf, nil
}

type textArrayPlan struct{}

func (textArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]string)
	if a == nil {
		return nil, nil
	}
	n := 20 + 4*len(a)
	for _, s := range a {
		n += len(s)
	}
	buf = grow(buf, n)
	buf, _ = arrayHeader(buf, pgtype.TextOID, len(a))
	for _, s := range a {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
		buf = append(buf, s...)
	}
	return buf, nil
}

type int4ArrayPlan struct{}

func (int4ArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]int32)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+8*len(a))
	buf, _ = arrayHeader(buf, pgtype.Int4OID, len(a))
	for _, v := range a {
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(v))
	}
	return buf, nil
}

type int8ArrayPlan struct{}

func (int8ArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]int64)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+12*len(a))
	buf, _ = arrayHeader(buf, pgtype.Int8OID, len(a))
	for _, v := range a {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, uint64(v))
	}
	return buf, nil
}

type boolArrayPlan struct{}

func (boolArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]bool)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+5*len(a))
	buf, _ = arrayHeader(buf, pgtype.BoolOID, len(a))
	for _, v := range a {
		buf = binary.BigEndian.AppendUint32(buf, 1)
		if v {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
	}
	return buf, nil
}

// microsecondsY2K is t as timestamptz's binary value: microseconds since
// 2000-01-01 00:00:00 UTC, sub-microseconds dropped as pgx drops them.
func microsecondsY2K(t time.Time) uint64 {
	const unixToY2K = 946_684_800 * 1_000_000
	return uint64(t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - unixToY2K)
}

type timePtrArrayPlan struct{}

func (timePtrArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]*time.Time)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+12*len(a))
	buf, at := arrayHeader(buf, pgtype.TimestamptzOID, len(a))
	for _, t := range a {
		if t == nil {
			setHasNull(buf, at)
			buf = appendNull(buf)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, microsecondsY2K(*t))
	}
	return buf, nil
}

type timeArrayPlan struct{}

func (timeArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]time.Time)
	if a == nil {
		return nil, nil
	}
	buf = grow(buf, 20+12*len(a))
	buf, _ = arrayHeader(buf, pgtype.TimestamptzOID, len(a))
	for _, t := range a {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, microsecondsY2K(t))
	}
	return buf, nil
}

// jsonb's binary form is a version byte (1) and the JSON text; the server
// parses and checks the text as it would the text format's.
func appendJSONBElems[T ~[]byte](buf []byte, a []T) []byte {
	n := 20 + 5*len(a)
	for _, b := range a {
		n += len(b)
	}
	buf = grow(buf, n)
	buf, at := arrayHeader(buf, pgtype.JSONBOID, len(a))
	for _, b := range a {
		if b == nil {
			setHasNull(buf, at)
			buf = appendNull(buf)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)+1))
		buf = append(buf, 1)
		buf = append(buf, b...)
	}
	return buf
}

type jsonbArrayPlan struct{}

func (jsonbArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([][]byte)
	if a == nil {
		return nil, nil
	}
	return appendJSONBElems(buf, a), nil
}

type jsonbRawArrayPlan struct{}

func (jsonbRawArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	a := value.([]json.RawMessage)
	if a == nil {
		return nil, nil
	}
	return appendJSONBElems(buf, a), nil
}

// uuidCodec is pgx's uuid codec with a binary plan for uuid.UUID that
// writes its 16 bytes without boxing it again.
type uuidCodec struct{ pgtype.Codec }

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
