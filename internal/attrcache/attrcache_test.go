package attrcache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tasker/tasker/internal/attrcache"
)

type key struct{ event, ns string }

func attrs(k key) []attribute.KeyValue {
	// Out of order on purpose: a set is sorted, so this must still match.
	return []attribute.KeyValue{attribute.String("namespace", k.ns), attribute.String("event", k.event)}
}

// A cached option records under the very series metric.WithAttributes
// records under, and each key's set is built once however many goroutines
// ask for it at the same time.
func TestCachedSetsRecordTheSameSeries(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	counter, err := mp.Meter("test").Int64Counter("events")
	if err != nil {
		t.Fatal(err)
	}
	var builds atomic.Int64
	c := attrcache.New(func(k key) []attribute.KeyValue { builds.Add(1); return attrs(k) })

	keys := []key{{"task.completed", "billing"}, {"step.completed", "billing"}, {"task.completed", "shipping"}}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, k := range keys {
				counter.Add(context.Background(), 1, c.Option(k))
			}
		}()
	}
	wg.Wait()
	for _, k := range keys {
		counter.Add(context.Background(), 1, metric.WithAttributes(attrs(k)...))
	}
	if got := builds.Load(); got != int64(len(keys)) || c.Len() != len(keys) {
		t.Errorf("built %d sets, cached %d, for %d keys", got, c.Len(), len(keys))
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sum := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64])
	if len(sum.DataPoints) != len(keys) {
		t.Fatalf("%d series, want %d: %+v", len(sum.DataPoints), len(keys), sum.DataPoints)
	}
	for _, dp := range sum.DataPoints {
		ev, _ := dp.Attributes.Value("event")
		ns, _ := dp.Attributes.Value("namespace")
		if dp.Attributes.Len() != 2 || dp.Value != 9 {
			t.Errorf("series event=%s namespace=%s: %d attributes, value %d; want 2 and 9 (8 cached + 1 uncached)",
				ev.AsString(), ns.AsString(), dp.Attributes.Len(), dp.Value)
		}
	}
}

func BenchmarkOption(b *testing.B) {
	c := attrcache.New(attrs)
	k := key{"step.before_transition", "billing"}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = c.Option(k)
		}
	})
	b.Run("WithAttributes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = metric.WithAttributes(attrs(k)...)
		}
	})
}
