package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/template"
	"github.com/tasker/tasker/internal/testdb"
)

func versionOf(t *testing.T, v string) *template.Template {
	t.Helper()
	tpl, err := template.Parse(fmt.Appendf(nil, "namespace: caching\nname: flow\nversion: %s\nsteps:\n  - name: a\n    handler: h\n", v))
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

// TestTemplateLookupsAreCachedUntilAChange: a store told about template
// changes (CacheLatestTemplates) serves lookups by name from memory, until
// its own registration or a signal that templates changed elsewhere; a
// store without that signal never caches the latest version.
func TestTemplateLookupsAreCachedUntilAChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	cached, other, plain := store.New(pool), store.New(pool), store.New(pool)
	changed := make(chan struct{}, 1)
	cached.CacheLatestTemplates(changed)

	latest := func(st *store.Store) string {
		t.Helper()
		rec, err := st.TemplateGet(ctx, "caching", "flow", "")
		if err != nil {
			t.Fatal(err)
		}
		return rec.Template.Version
	}
	register := func(st *store.Store, v string) {
		t.Helper()
		if _, created, err := st.TemplateRegister(ctx, versionOf(t, v)); err != nil || !created {
			t.Fatalf("register %s: created %v, %v", v, created, err)
		}
	}

	register(cached, "1.0.0")
	if got := latest(cached); got != "1.0.0" {
		t.Fatalf("latest = %s, want 1.0.0", got)
	}
	// Registered through another store (another replica): the cached
	// store keeps its answer until told, the plain one reads every time.
	register(other, "1.1.0")
	if got := latest(cached); got != "1.0.0" {
		t.Errorf("latest from the cache = %s, want 1.0.0 (the lookup was not cached)", got)
	}
	if got := latest(plain); got != "1.1.0" {
		t.Errorf("latest from a store without change signals = %s, want 1.1.0", got)
	}
	changed <- struct{}{}
	if got := latest(cached); got != "1.1.0" {
		t.Errorf("latest after a change signal = %s, want 1.1.0", got)
	}
	// A registration through the store itself takes effect at once.
	register(cached, "2.0.0")
	if got := latest(cached); got != "2.0.0" {
		t.Errorf("latest after registering through this store = %s, want 2.0.0", got)
	}
	// A named version resolves to the same template whatever is
	// registered later, and an unknown one is still an error.
	rec, err := cached.TemplateGet(ctx, "caching", "flow", "1.1.0")
	if err != nil || rec.Template.Version != "1.1.0" {
		t.Errorf("version 1.1.0 = %v, %v", rec.Template, err)
	}
	if _, err := cached.TemplateGet(ctx, "caching", "flow", "9.9.9"); err == nil {
		t.Error("an unregistered version was found")
	}
	register(other, "9.9.9")
	if rec, err := cached.TemplateGet(ctx, "caching", "flow", "9.9.9"); err != nil || rec.Template.Version != "9.9.9" {
		t.Errorf("version 9.9.9 once registered elsewhere = %v, %v (a miss must not be cached)", rec.Template, err)
	}
}

// submitVersion submits a task of caching/flow without a version and
// returns the version it was created on.
func submitVersion(h *enginetest.Harness) string {
	h.T.Helper()
	req := orchestration.TaskRequest{Namespace: "caching", Name: "flow",
		Context: json.RawMessage(fmt.Sprintf(`{"n": %d}`, submissions.Add(1)))}
	return h.Submit(req).Version
}

var submissions atomic.Int64

// TestTemplateChangesAreAnnounced (00019): a registration anywhere reaches
// a listener subscribed to store.TemplatesChannel, and an engine harness
// (wired as the daemon is) then submits on the new latest version.
func TestTemplateChangesAreAnnounced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{})
	lis := queue.NewListener(h.Pool, h.Logger)
	ch := lis.SubscribeChannel(store.TemplatesChannel)
	if err := lis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lis.Stop)
	select { // the wake-up every (re)connection gives
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no signal when the listener connected")
	}

	h.Register(`namespace: caching
name: flow
version: 1.0.0
steps:
  - name: a
    handler: h
`)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification for a registration")
	}
	if got := submitVersion(h); got != "1.0.0" {
		t.Fatalf("a submission used version %s, want 1.0.0", got)
	}

	// Registered by another process: the harness's store learns of it
	// through the notification.
	other := store.New(testdb.Pool(t, h.URL))
	if _, _, err := other.TemplateRegister(ctx, versionOf(t, "1.1.0")); err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 10*time.Second, "submissions use version 1.1.0", func() bool {
		return submitVersion(h) == "1.1.0"
	})
}
