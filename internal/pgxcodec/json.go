package pgxcodec

import (
	"encoding/json"

	"github.com/jackc/pgx/v5/pgtype"
)

// jsonCodec is pgx's json or jsonb codec with one more scan plan: into a
// *json.RawMessage as into a *[]byte, a copy of the bytes the server sent.
// pgx plans a json.RawMessage, which is not a *[]byte, as json.Unmarshal,
// which checks the server's JSON and then scans it again to find where the
// value ends before it copies it: a third of the application's CPU in a
// linear4 run with 16 KiB task contexts, which every claim returns
// (docs/performance.md, row 67).
type jsonCodec struct{ pgtype.Codec }

func (c *jsonCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*json.RawMessage); ok {
		var b []byte
		return rawMessagePlan{next: c.Codec.PlanScan(m, oid, format, &b)}
	}
	return c.Codec.PlanScan(m, oid, format, target)
}

// rawMessagePlan scans into a *json.RawMessage with the plan of *[]byte
// (for jsonb in binary, the codec's own plan strips the format's version
// byte first). SQL NULL gives nil, as json.Unmarshal does.
type rawMessagePlan struct{ next pgtype.ScanPlan }

func (p rawMessagePlan) Scan(src []byte, dst any) error {
	return p.next.Scan(src, (*[]byte)(dst.(*json.RawMessage)))
}

func registerJSON(m *pgtype.Map) {
	for _, oid := range []uint32{pgtype.JSONOID, pgtype.JSONBOID} {
		if t, ok := m.TypeForOID(oid); ok {
			if _, done := t.Codec.(*jsonCodec); !done {
				m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: &jsonCodec{Codec: t.Codec}})
			}
		}
	}
}
