// Package attrcache keeps the attribute sets of metric measurements made on
// hot paths, so that each is built once rather than on every measurement.
//
// metric.WithAttributes copies, sorts, de-duplicates and hashes its
// attributes each time it is called; with several counters per step
// transition that was 6–8 % of the engine's CPU in a linear4 benchmark
// (docs/performance.md, row 34). The attribute values of those metrics come
// from small closed sets (states, event names, outcomes) and the namespaces
// served, so a cache keyed by them stays as small as the metrics' own label
// sets, which the metrics SDK keeps for the process's life anyway.
package attrcache

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Cache maps a comparable key to the measurement option carrying the
// attribute set built from it. It is safe for concurrent use.
type Cache[K comparable] struct {
	build func(K) []attribute.KeyValue
	mu    sync.RWMutex
	m     map[K]metric.MeasurementOption
}

// New returns a cache whose sets are build(key).
func New[K comparable](build func(K) []attribute.KeyValue) *Cache[K] {
	return &Cache[K]{build: build, m: map[K]metric.MeasurementOption{}}
}

// Option returns metric.WithAttributeSet of build(k), built on first use.
func (c *Cache[K]) Option(k K) metric.MeasurementOption {
	c.mu.RLock()
	o, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return o
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.m[k]; ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(c.build(k)...))
	c.m[k] = o
	return o
}

// Len is the number of sets built so far.
func (c *Cache[K]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
