// Package pgxcodec teaches a pgx connection faster ways to send and receive
// the values the engine's hot statements carry.
//
// github.com/google/uuid values go and come as binary uuids (uuid.go, and
// the uuid codec in arrays.go). Without this pgx goes through their
// driver.Valuer and sql.Scanner methods — text,
// parsed on both sides — after trying and discarding several other encode
// plans for every parameter: 15 % of the orchestrator's CPU profile in the
// benchmark, most of it on the uuid arrays of the hot statements.
//
// The arrays the engine sends most (uuid[], text[], int4[], int8[], bool[],
// timestamptz[] and jsonb[] from their plain Go slices) are written in
// Postgres's binary array format in one pass (arrays.go). pgx's generic
// array encoding boxes every element in an interface and plans it again,
// one allocation or more per element (docs/performance.md).
//
// json and jsonb values scanned into a json.RawMessage are copied as they
// come, without the json.Unmarshal pgx would run on them (json.go).
//
// Configure a pool with it (ConfigurePool), or Register it on a
// connection's type map.
package pgxcodec

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConfigurePool registers the plans on every connection of a pool
// built from cfg. Call it before pgxpool.NewWithConfig; an AfterConnect hook
// already set still runs.
func ConfigurePool(cfg *pgxpool.Config) {
	prev := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		Register(c.TypeMap())
		if prev != nil {
			return prev(ctx, c)
		}
		return nil
	}
}

// Register adds uuid.UUID to m's encode and scan plans, ahead of the
// generic ones (the uuid codec of arrays.go, and an encode wrapper for a
// uuid.UUID sent as a parameter of another type), the binary array
// encodings of arrays.go, and the json.RawMessage scans of json.go.
func Register(m *pgtype.Map) {
	registerArrays(m)
	registerJSON(m)
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{wrapEncode}, m.TryWrapEncodePlanFuncs...)
}

// value is a uuid.UUID seen as pgx's UUIDValuer.
type value uuid.UUID

func (v value) UUIDValue() (pgtype.UUID, error) {
	return pgtype.UUID{Bytes: v, Valid: true}, nil
}

func wrapEncode(v any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if u, ok := v.(uuid.UUID); ok {
		return &encodePlan{}, value(u), true
	}
	return nil, nil, false
}

type encodePlan struct{ next pgtype.EncodePlan }

func (p *encodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *encodePlan) Encode(v any, buf []byte) ([]byte, error) {
	return p.next.Encode(value(v.(uuid.UUID)), buf)
}
