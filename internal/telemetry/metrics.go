package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tasker/tasker/internal/attrcache"
	"github.com/tasker/tasker/internal/store"
)

// Metrics are the orchestrator's instruments. Names are chosen so that the
// Prometheus exporter produces exactly the names in docs/metrics.md (it adds
// _total to counters and _seconds to histograms in seconds). Labels are
// bounded: never a uuid or a correlation id.
type Metrics struct {
	TaskTransitions  metric.Int64Counter     // tasker_task_state_transitions_total{from_state,to_state,namespace}
	TaskStateSeconds metric.Float64Histogram // tasker_task_state_duration_seconds{state,namespace}
	TaskCompletion   metric.Float64Histogram // tasker_task_completion_duration_seconds{namespace,outcome}
	StepTransitions  metric.Int64Counter     // tasker_step_state_transitions_total{from_state,to_state,namespace}
	StepExecution    metric.Float64Histogram // tasker_step_execution_duration_seconds{handler_name,namespace,outcome}
	StepAttempts     metric.Int64Counter     // tasker_step_attempts_total{handler_name,namespace,outcome}
	Events           metric.Int64Counter     // tasker_events_total{event,namespace}
	PoisonMessages   metric.Int64Counter     // tasker_poison_messages_total{queue,reason}
	RetentionDeleted metric.Int64Counter     // tasker_retention_deleted_total{kind}
	HTTPRequests     metric.Int64Counter     // tasker_http_requests_total{method,route,status}
	HTTPDuration     metric.Float64Histogram // tasker_http_request_duration_seconds{method,route,status}

	// attrs holds the attribute sets of the per-transition measurements.
	attrs *attrcache.Cache[attrKey]
}

// attrKey names one attribute set of the per-transition measurements.
type attrKey struct {
	kind    attrKind
	a, b, c string
}

type attrKind uint8

const (
	attrsTransition attrKind = iota // from_state=a, to_state=b, namespace=c
	attrsState                      // state=a, namespace=b
	attrsCompletion                 // namespace=a, outcome=b
	attrsEvent                      // event=a, namespace=b
	attrsHandler                    // handler_name=a, namespace=b, outcome=c
)

func buildAttrs(k attrKey) []attribute.KeyValue {
	switch k.kind {
	case attrsTransition:
		return []attribute.KeyValue{attribute.String("from_state", k.a), attribute.String("to_state", k.b), attribute.String("namespace", k.c)}
	case attrsState:
		return []attribute.KeyValue{attribute.String("state", k.a), attribute.String("namespace", k.b)}
	case attrsCompletion:
		return []attribute.KeyValue{attribute.String("namespace", k.a), attribute.String("outcome", k.b)}
	case attrsHandler:
		return []attribute.KeyValue{attribute.String("handler_name", k.a), attribute.String("namespace", k.b), attribute.String("outcome", k.c)}
	default:
		return []attribute.KeyValue{attribute.String("event", k.a), attribute.String("namespace", k.b)}
	}
}

func (m *Metrics) attrSet(kind attrKind, a, b, c string) metric.MeasurementOption {
	return m.attrs.Option(attrKey{kind: kind, a: a, b: b, c: c})
}

// NewMetrics creates the instruments on meter. The worker SDK creates the
// step execution instruments with the same names on its own meter.
func NewMetrics(meter metric.Meter) (*Metrics, error) {
	m := Metrics{attrs: attrcache.New(buildAttrs)}
	var err error
	c := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var inst metric.Int64Counter
		inst, err = meter.Int64Counter(name, metric.WithDescription(desc))
		return inst
	}
	h := func(name, desc string) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var inst metric.Float64Histogram
		inst, err = meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"))
		return inst
	}
	m.TaskTransitions = c("tasker_task_state_transitions", "Task state transitions.")
	m.TaskStateSeconds = h("tasker_task_state_duration", "Time a task spent in a state, observed when it leaves the state.")
	m.TaskCompletion = h("tasker_task_completion_duration", "Time from task creation to a terminal state, by outcome.")
	m.StepTransitions = c("tasker_step_state_transitions", "Step state transitions.")
	m.StepExecution = h("tasker_step_execution_duration", "Step handler run time in the worker, by outcome.")
	m.StepAttempts = c("tasker_step_attempts", "Step attempts finished by workers, by outcome.")
	m.Events = c("tasker_events", "System events published (the 35 names of the event catalog).")
	m.PoisonMessages = c("tasker_poison_messages", "Queue messages archived because they can never be processed.")
	m.RetentionDeleted = c("tasker_retention_deleted", "Rows the retention sweep deleted, by kind (tasks, transitions, archived_messages).")
	m.HTTPRequests = c("tasker_http_requests", "HTTP requests served.")
	m.HTTPDuration = h("tasker_http_request_duration", "HTTP request duration.")
	if err != nil {
		return nil, fmt.Errorf("create metrics: %w", err)
	}
	return &m, nil
}

// ObserveStore registers gauges read at scrape time: queue depth and
// oldest-message age per queue, and the connection pool's figures.
func (p *Provider) ObserveStore(st *store.Store) error {
	if p.mp == nil {
		return nil
	}
	depth, err := p.meter.Int64ObservableGauge("tasker_queue_depth", metric.WithDescription("Messages in a PGMQ queue (visible or not)."))
	if err != nil {
		return err
	}
	visible, err := p.meter.Int64ObservableGauge("tasker_queue_visible_depth", metric.WithDescription("Messages in a PGMQ queue that a reader could take now."))
	if err != nil {
		return err
	}
	age, err := p.meter.Float64ObservableGauge("tasker_queue_oldest_message_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest message in a PGMQ queue (0 when empty)."))
	if err != nil {
		return err
	}
	conns, err := p.meter.Int64ObservableGauge("tasker_db_pool_connections", metric.WithDescription("Database pool connections by state (idle, acquired, total, max)."))
	if err != nil {
		return err
	}
	acquires, err := p.meter.Int64ObservableCounter("tasker_db_pool_acquires", metric.WithDescription("Connections acquired from the pool."))
	if err != nil {
		return err
	}
	empty, err := p.meter.Int64ObservableCounter("tasker_db_pool_empty_acquires", metric.WithDescription("Acquires that had to wait because the pool had no idle connection."))
	if err != nil {
		return err
	}
	wait, err := p.meter.Float64ObservableCounter("tasker_db_pool_acquire_wait", metric.WithUnit("s"),
		metric.WithDescription("Total time spent acquiring connections."))
	if err != nil {
		return err
	}
	reg, err := p.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ps := st.PoolStats()
		for state, v := range map[string]int32{"idle": ps.Idle, "acquired": ps.Acquired, "total": ps.Total, "max": ps.Max} {
			o.ObserveInt64(conns, int64(v), metric.WithAttributes(attribute.String("state", state)))
		}
		o.ObserveInt64(acquires, ps.AcquireCount)
		o.ObserveInt64(empty, ps.EmptyAcquireCount)
		o.ObserveFloat64(wait, ps.AcquireWait.Seconds())
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		qs, err := st.QueueMetrics(qctx)
		if err != nil {
			// A scrape during a database outage still returns the pool
			// figures; queue figures are simply absent.
			return nil
		}
		for _, q := range qs {
			attrs := metric.WithAttributes(attribute.String("queue", q.Queue))
			o.ObserveInt64(depth, q.Length, attrs)
			o.ObserveInt64(visible, q.VisibleLength, attrs)
			o.ObserveFloat64(age, q.OldestAge.Seconds(), attrs)
		}
		return nil
	}, depth, visible, age, conns, acquires, empty, wait)
	if err != nil {
		return err
	}
	p.regs = append(p.regs, reg)
	return nil
}
