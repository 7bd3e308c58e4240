// Package domainevents is the Go API for Tasker's domain events: the
// business-facing events (TaskInitiated, StepCompleted, StepFailed,
// WorkflowProgressed, TaskCompleted, TaskFailed, TaskCancelled, and the
// business events that template steps declare) that the orchestrator writes
// to the PGMQ queue domain_events_<namespace> in the same database
// transaction as the change that causes them. An event is therefore never
// published for a change that rolled back, and never lost for one that
// committed. The catalog of events and payloads is docs/domain-events.md;
// the envelope's JSON Schema is EnvelopeSchema (envelope.schema.json).
//
// A Consumer subscribes to namespaces:
//
//	c, err := domainevents.NewConsumer(pool, domainevents.Config{
//		Namespaces: []string{"ecommerce"},
//		EventTypes: []string{domainevents.TaskCompleted, "PaymentCaptured"},
//		Handler: func(ctx context.Context, ev domainevents.Event) error {
//			var p domainevents.TaskCompletedPayload
//			if ev.EventType == domainevents.TaskCompleted {
//				if err := ev.DecodePayload(&p); err != nil {
//					return err
//				}
//			}
//			return ship(ctx, ev.TaskUUID, p) // nil acknowledges the event
//		},
//	})
//	err = c.Run(ctx) // until ctx is cancelled; then stops gracefully
//
// Delivery is at least once, with explicit acknowledgement: an event is
// deleted from its queue only when the handler returns nil. A handler error,
// a crash or a kill leaves it in the queue, and it is delivered again after
// VisibilityTimeout; after MaxAttempts deliveries it is moved to the queue's
// archive (pgmq.a_domain_events_<namespace>), logged with the reason and
// passed to OnDeadLetter. Handlers must therefore be idempotent; Event.EventID
// identifies an event across deliveries.
//
// A namespace's queue is consumed by ONE logical consumer: every Consumer
// reading it takes events away from the others. Run several instances of the
// same consumer (same EventTypes, same handler) to share the load; two
// different applications that both want a namespace's events need the
// events fanned out (one consumer that forwards them). EventTypes filters:
// events of other types are acknowledged (deleted) unseen.
//
// Order: the orchestrator writes a task's events in the order they happened
// (increasing msg_id). A Consumer hands events to the handler in msg_id order
// and never runs two events of one task at once; while an event waits for
// redelivery after a handler error, later events of its task are held back
// so that they are handled after it. With Concurrency 1 (the default) the
// whole queue is handled in msg_id order. The guarantee is per process: with
// several instances, or after a restart, a later event of a task may be
// handled while an earlier one waits for redelivery.
package domainevents
