package pgxcodec_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/pgxcodec"
	"github.com/tasker/tasker/internal/testdb"
)

// uuids round-trip through a registered connection exactly as through a
// plain one, alone, in arrays, and as nullable values.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.URL(t)
	plain := testdb.Pool(t, url)
	reg := testdb.Pool(t, url, pgxcodec.ConfigurePool)
	a, b := uuid.Must(uuid.NewV7()), uuid.New()
	for name, pool := range map[string]*pgxpool.Pool{"plain": plain, "registered": reg} {
		var one uuid.UUID
		var text string
		if err := pool.QueryRow(ctx, `SELECT $1::uuid, $1::uuid::text`, a).Scan(&one, &text); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if one != a || text != a.String() {
			t.Errorf("%s: %s / %s, want %s", name, one, text, a)
		}
		var arr []uuid.UUID
		var n int
		if err := pool.QueryRow(ctx, `SELECT $1::uuid[], cardinality($1::uuid[])`, []uuid.UUID{a, b}).Scan(&arr, &n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n != 2 || len(arr) != 2 || arr[0] != a || arr[1] != b {
			t.Errorf("%s: array %v (%d), want [%s %s]", name, arr, n, a, b)
		}
		var null, set *uuid.UUID
		if err := pool.QueryRow(ctx, `SELECT NULL::uuid, $1::uuid`, &b).Scan(&null, &set); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if null != nil || set == nil || *set != b {
			t.Errorf("%s: nullable %v %v", name, null, set)
		}
		var isNull bool
		if err := pool.QueryRow(ctx, `SELECT $1::uuid IS NULL`, (*uuid.UUID)(nil)).Scan(&isNull); err != nil || !isNull {
			t.Errorf("%s: a nil *uuid.UUID is sent as %v (%v), want NULL", name, isNull, err)
		}
	}
	// NULL into a uuid.UUID: no error and the value left alone, as
	// uuid.UUID's own Scan does through a plain connection.
	for name, pool := range map[string]*pgxpool.Pool{"plain": plain, "registered": reg} {
		u := a
		if err := pool.QueryRow(ctx, `SELECT NULL::uuid`).Scan(&u); err != nil || u != a {
			t.Errorf("%s: NULL scanned as %s (%v), want the value left alone", name, u, err)
		}
	}
}

// Register puts its plan first: a uuid.UUID parameter is encoded by it, not
// by the driver.Valuer fallback.
func TestRegisteredPlanIsUsed(t *testing.T) {
	before := fmt.Sprintf("%T", pgtype.NewMap().PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, uuid.New()))
	m := pgtype.NewMap() // plans are memoized per map: register before planning
	pgxcodec.Register(m)
	after := fmt.Sprintf("%T", m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, uuid.New()))
	if !strings.Contains(after, "pgxcodec") {
		t.Errorf("registered map encodes uuid.UUID with %s (before: %s), want this package's plan", after, before)
	}
	if strings.Contains(before, "pgxcodec") {
		t.Errorf("an unregistered map already uses %s", before)
	}
}

// A registered map scans a binary uuid into a uuid.UUID or a *uuid.UUID
// with this package's plans, not through uuid.UUID's sql.Scanner (which
// parses the value's text form): into a uuid.UUID without allocating. A
// value of the wrong length is an error, not a short copy.
func TestRegisteredScanPlanIsUsed(t *testing.T) {
	plain := pgtype.NewMap()
	m := pgtype.NewMap()
	pgxcodec.Register(m)
	var u uuid.UUID
	var p *uuid.UUID
	for _, target := range []any{&u, &p} {
		before := fmt.Sprintf("%T", plain.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, target))
		after := fmt.Sprintf("%T", m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, target))
		if !strings.Contains(after, "pgxcodec") {
			t.Errorf("registered map scans a uuid into %T with %s (unregistered: %s), want this package's plan", target, after, before)
		}
	}
	src := uuid.New()
	plan := m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, &u)
	allocs := testing.AllocsPerRun(100, func() {
		if err := plan.Scan(src[:], &u); err != nil {
			t.Fatal(err)
		}
	})
	if u != src || allocs != 0 {
		t.Errorf("scanned %s with %v allocations, want %s with none", u, allocs, src)
	}
	if err := plan.Scan(src[:15], &u); err == nil {
		t.Error("15 bytes scanned into a uuid.UUID without an error")
	}
	if err := m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, &p).Scan(src[:3], &p); err == nil {
		t.Error("3 bytes scanned into a *uuid.UUID without an error")
	}
}
