package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

// DomainEventsSendTx leaves checking the bodies to the server: in a
// deferred transaction a body that is not JSON fails the transaction at
// its flush with the server's JSON error, and nothing it wrote stays; valid
// bodies arrive in order, with their headers.
func TestDomainEventsSendTxBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.URL(t))
	st := store.New(pool)
	if _, err := pool.Exec(ctx, `SELECT tasker.namespace_provision('evsend')`); err != nil {
		t.Fatal(err)
	}
	q, err := queue.DomainEventsQueue("evsend")
	if err != nil {
		t.Fatal(err)
	}
	send := func(bodies ...string) error {
		raw := make([]json.RawMessage, len(bodies))
		hdrs := make([]map[string]string, len(bodies))
		for i, b := range bodies {
			raw[i] = json.RawMessage(b)
			hdrs[i] = map[string]string{"event_type": "test." + string(rune('a'+i))}
		}
		return st.InTxDeferred(ctx, func(tx store.Tx) error {
			return st.DomainEventsSendTx(ctx, tx, "evsend", raw, hdrs)
		})
	}

	err = send(`{"ok": 1}`, `{"not json"`)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "json") {
		t.Fatalf("a body that is not JSON: %v, want the server's JSON error", err)
	}
	if msgs, err := queue.Browse(ctx, pool, q, 0, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("after the failed transaction the queue holds %d messages (%v), want none", len(msgs), err)
	}

	if err := send(`{"n": 1}`, `{"n": 2}`, `[3]`); err != nil {
		t.Fatal(err)
	}
	msgs, err := queue.Browse(ctx, pool, q, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Body)+" "+m.Headers["event_type"])
	}
	if want := `{"n": 1} test.a|{"n": 2} test.b|[3] test.c`; strings.Join(got, "|") != want {
		t.Errorf("queue holds %q, want %q", strings.Join(got, "|"), want)
	}
}
