package orchestration

import (
	"context"
	"time"

	"github.com/tasker/tasker/internal/store"
)

// retentionLoop runs the retention sweep (migration 00024) every
// RetentionInterval, the first one interval after start, jittered so that
// replicas do not sweep in step (they may overlap safely: the sweeps lock
// what they delete).
func (o *Orchestrator) retentionLoop(ctx context.Context) {
	var pause errorPause
	for o.wait(ctx, nil, o.cfg.RetentionInterval); ctx.Err() == nil; o.wait(ctx, nil, o.cfg.RetentionInterval) {
		if _, err := o.RetentionOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			pause.failed(ctx, o.logger, "retention", err)
			continue
		}
		pause.ok(o.logger, "retention")
	}
}

// RetentionOnce runs one retention sweep with the configured policy until
// nothing past its cut-offs is left, counting what it deletes through
// ServiceConfig.Pruned and logging a summary when it deleted anything.
func (o *Orchestrator) RetentionOnce(ctx context.Context) (store.PruneResult, error) {
	start := time.Now()
	res, err := o.engine.Store().Prune(ctx, o.cfg.Retention, store.PruneOptions{
		Progress: func(kind string, n int64, _ store.PruneResult) {
			if o.cfg.Pruned != nil {
				o.cfg.Pruned(kind, n)
			}
		},
	})
	if res != (store.PruneResult{}) {
		o.logger.Info("retention sweep deleted old rows", "tasks", res.Tasks,
			"history_of_tasks", res.HistoryTasks, "transitions", res.Transitions,
			"archived_messages", res.ArchivedMessages, "duration", time.Since(start).Round(time.Millisecond).String())
	}
	return res, err
}
