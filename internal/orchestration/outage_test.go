package orchestration_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/testdb"
)

// TestLeasesExpiredInAnOutageWaitOutTheGrace: when the orchestrator could
// not reach the database, neither could the workers' heartbeats and
// submissions; a lease that expired meanwhile is not reaped until
// orchestrator.reap_grace has passed since the orchestrator reached the
// database again, so a worker whose handler ran on still submits its
// result (the attempt is not lost, nor a step that is not retryable
// failed), while a step whose worker really died is reaped after the grace.
func TestLeasesExpiredInAnOutageWaitOutTheGrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const grace = 5 * time.Second
	dbURL := testdb.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := enginetest.StartProxy(t, u.Host)
	u.Host = proxy.Addr()
	// The orchestrator reaches the database through the proxy; the
	// "workers" below, directly.
	h := enginetest.New(t, enginetest.Options{DatabaseURL: u.String(), Service: orchestration.ServiceConfig{
		TimerInterval: 100 * time.Millisecond, ReapInterval: 100 * time.Millisecond, ReapGrace: grace}})
	direct := testdb.Pool(t, dbURL)
	h.Register(fmt.Sprintf(notRetryable, "outage"))
	stepOf := func(task uuid.UUID) uuid.UUID {
		var s uuid.UUID
		if err := direct.QueryRow(ctx, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1`, task).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	alive := h.Submit(orchestration.TaskRequest{Namespace: "outage", Name: "once"}).UUID
	dead := h.Submit(orchestration.TaskRequest{Namespace: "outage", Name: "once"}).UUID
	for _, task := range []uuid.UUID{alive, dead} {
		var claimed bool
		// A one-second lease, never renewed: it expires during the outage.
		if err := direct.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, 1, 'w1', 1)`, stepOf(task)).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("claim: %v %v", claimed, err)
		}
	}

	proxy.Cut()
	// The orchestrator's loops fail to reach the database, and the leases
	// expire meanwhile.
	enginetest.Eventually(t, 10*time.Second, "the orchestrator failed to reconnect, the leases expired", func() bool {
		var expired int
		_ = direct.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_steps
			WHERE task_uuid = ANY ($1) AND lease_expires_at < clock_timestamp()`, []uuid.UUID{alive, dead}).Scan(&expired)
		return proxy.Refused() >= 3 && expired == 2
	})
	proxy.Restore()
	restored := time.Now()
	forwarded := proxy.Accepted()
	enginetest.Eventually(t, 10*time.Second, "the orchestrator reconnected", func() bool { return proxy.Accepted() > forwarded })

	// Two seconds later (the reaper runs every 100 ms: a deliberate
	// window, since what is checked is that nothing happened in it) the
	// expired leases are still there, and the live worker's result is
	// taken.
	time.Sleep(2 * time.Second)
	var accepted bool
	if err := direct.QueryRow(ctx, `SELECT tasker.step_submit_result($1, 1, 'w1', true, '{"ok":true}', NULL)`, stepOf(alive)).Scan(&accepted); err != nil {
		t.Fatal(err)
	}
	if !accepted {
		t.Fatalf("a result submitted %s after the outage was refused: the step was reaped within the grace", time.Since(restored).Round(time.Millisecond))
	}
	h.WaitTask(alive, 30*time.Second, lifecycle.TaskComplete)

	// The dead worker's step is reaped once the grace has passed: it is
	// not retryable, so its task fails.
	h.WaitTask(dead, 30*time.Second, lifecycle.TaskError)
	var reapedAt time.Time
	if err := direct.QueryRow(ctx, `SELECT created_at FROM tasker.workflow_step_transitions
		WHERE step_uuid = $1 AND from_state = 'in_progress'`, stepOf(dead)).Scan(&reapedAt); err != nil {
		t.Fatal(err)
	}
	if d := reapedAt.Sub(restored); d < grace-time.Second {
		t.Errorf("the dead worker's step was reaped %s after the outage, want no sooner than the %s grace", d, grace)
	}
}
