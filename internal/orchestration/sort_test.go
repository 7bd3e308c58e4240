package orchestration

import (
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/testdb"
)

// sortUUIDs puts uuids in the order Postgres sorts them (the order of
// `ORDER BY task_uuid`, the task locks' order) and in the order of their
// text forms: random ones, version 7 ones sharing a millisecond, and ones
// that differ in one byte with the high bit set.
func TestSortUUIDsIsPostgresOrder(t *testing.T) {
	ids := []uuid.UUID{uuid.Max, uuid.Nil}
	for range 200 {
		ids = append(ids, uuid.New(), uuid.Must(uuid.NewV7()))
	}
	for _, b := range []byte{0x00, 0x7f, 0x80, 0xff} {
		u := ids[2]
		u[15] = b
		ids = append(ids, u)
	}
	got := slices.Clone(ids)
	sortUUIDs(got)

	text := slices.Clone(ids)
	slices.SortFunc(text, func(a, b uuid.UUID) int {
		switch as, bs := a.String(), b.String(); {
		case as < bs:
			return -1
		case as > bs:
			return 1
		}
		return 0
	})
	if !slices.Equal(got, text) {
		t.Error("byte order differs from the order of the text forms")
	}

	pool := testdb.Pool(t, testdb.URL(t))
	rows, err := pool.Query(context.Background(), `SELECT u FROM unnest($1::uuid[]) AS u ORDER BY u`, ids)
	if err != nil {
		t.Fatal(err)
	}
	var pg []uuid.UUID
	for rows.Next() {
		var u uuid.UUID
		if err := rows.Scan(&u); err != nil {
			t.Fatal(err)
		}
		pg = append(pg, u)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, pg) {
		t.Errorf("Go order differs from Postgres's:\n%v\n%v", got[:5], pg[:5])
	}
}
