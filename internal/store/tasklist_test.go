package store_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/template"
)

// The task list pages through every task once, newest first, across
// namespaces or within one, ties in created_at (tasks created in one
// transaction) broken by task_uuid, with its filters applied before a
// page is cut, so a filter that skips most tasks still fills the page.
func TestTaskListAcrossNamespaces(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	ids := map[string]int64{"creating": f.id}
	for _, ns := range []string{"alpha", "beta"} {
		tpl, err := template.Parse([]byte(strings.Replace(createTemplate, "namespace: creating", "namespace: "+ns, 1)))
		if err != nil {
			t.Fatal(err)
		}
		rec, _, err := f.st.TemplateRegister(f.ctx, tpl)
		if err != nil {
			t.Fatal(err)
		}
		ids[ns] = rec.ID
	}
	// Transactions in order; each creates tasks in the namespaces listed,
	// which share the transaction's created_at.
	var created []uuid.UUID // oldest first, by (created_at, task_uuid)
	initiator, nsOf := map[uuid.UUID]string{}, map[uuid.UUID]string{}
	for i, txNamespaces := range [][]string{{"alpha"}, {"beta"}, {"creating", "alpha"}, {"alpha"}, {"beta", "creating", "alpha"}, {"beta"}, {"alpha"}} {
		var batch []uuid.UUID
		if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
			batch = batch[:0]
			for j, ns := range txNamespaces {
				nt := f.newTask(uuid.NewString())
				nt.Namespace, nt.TemplateID = ns, ids[ns]
				nt.Initiator = []string{"even", "odd"}[(i+j)%2]
				if _, _, _, err := f.st.TaskCreateTx(f.ctx, tx, nt); err != nil {
					return err
				}
				batch = append(batch, nt.UUID)
				initiator[nt.UUID], nsOf[nt.UUID] = nt.Initiator, ns
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Within a transaction the list orders by task_uuid.
		slices.SortFunc(batch, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		created = append(created, batch...)
	}
	newestFirst := func(keep func(uuid.UUID) bool) []uuid.UUID {
		var out []uuid.UUID
		for i := len(created) - 1; i >= 0; i-- {
			if keep(created[i]) {
				out = append(out, created[i])
			}
		}
		return out
	}

	for _, tc := range []struct {
		name   string
		filter store.TaskFilter
		keep   func(uuid.UUID) bool
	}{
		{"every task", store.TaskFilter{}, func(uuid.UUID) bool { return true }},
		{"one namespace", store.TaskFilter{Namespace: "alpha"}, func(id uuid.UUID) bool { return nsOf[id] == "alpha" }},
		{"a filter on every namespace", store.TaskFilter{Initiator: "odd"}, func(id uuid.UUID) bool { return initiator[id] == "odd" }},
		{"a namespace without tasks", store.TaskFilter{Namespace: "nowhere"}, func(uuid.UUID) bool { return false }},
	} {
		for _, limit := range []int{1, 2, 3, 100} {
			want := newestFirst(tc.keep)
			var got []uuid.UUID
			filter := tc.filter
			filter.Limit = limit
			for page := 0; page <= len(created); page++ {
				tasks, err := f.st.TaskList(f.ctx, filter)
				if err != nil {
					t.Fatalf("%s, limit %d: %v", tc.name, limit, err)
				}
				if len(tasks) > limit {
					t.Fatalf("%s, limit %d: a page of %d tasks", tc.name, limit, len(tasks))
				}
				for _, task := range tasks {
					got = append(got, task.UUID)
				}
				if len(tasks) < limit {
					break
				}
				last := tasks[len(tasks)-1]
				filter.AfterCreatedAt, filter.AfterUUID = &last.CreatedAt, last.UUID
			}
			if len(got) != len(want) {
				t.Errorf("%s, limit %d: listed %d tasks, want %d", tc.name, limit, len(got), len(want))
				continue
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("%s, limit %d: task %d is %s (%s), want %s (%s)", tc.name, limit, i, got[i], nsOf[got[i]], want[i], nsOf[want[i]])
					break
				}
			}
		}
	}
}
