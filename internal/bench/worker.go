package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

// WorkerOptions configures benchmark workers: Go SDK workers whose handler
// for every scenario step does nothing and returns a tiny result.
type WorkerOptions struct {
	DatabaseURL string
	// Concurrency and Batch are worker.Config's Concurrency and BatchSize.
	Concurrency int
	Batch       int
	// ResultBytes pads each result to about this many bytes.
	ResultBytes int
	// HandlerTime is how long each handler waits before it returns.
	HandlerTime time.Duration
	// AsyncSubmit is worker.Config.AsyncSubmit.
	AsyncSubmit bool
	// Tracing exports the workers' spans by OTLP to OTLPEndpoint
	// (OTLPProtocol grpc or http/protobuf).
	Tracing      bool
	OTLPEndpoint string
	OTLPProtocol string
	Logger       *slog.Logger
}

// workerSet is a group of workers in this process, each with its own pool,
// as if each were its own process.
type workerSet struct {
	workers  []*worker.Worker
	pools    []*pgxpool.Pool
	tel      *telemetry.Provider
	executed atomic.Int64
}

// noopResult is what every benchmark step returns.
var noopResult = map[string]any{"ok": true}

func startWorkers(ctx context.Context, o WorkerOptions, n int) (*workerSet, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &workerSet{}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	// The same telemetry as cmd/example-worker: worker metrics always,
	// spans when tracing is on.
	var err error
	s.tel, err = telemetry.NewProvider(ctx, telemetry.Options{
		ServiceName: "tasker-bench-worker", TracingEnabled: o.Tracing,
		OTLPEndpoint: o.OTLPEndpoint, OTLPProtocol: o.OTLPProtocol,
		MetricsEnabled: true, Logger: o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("worker telemetry: %w", err)
	}
	obs, err := worker.NewOTelObserver(s.tel.TracerProvider(), s.tel.MeterProvider())
	if err != nil {
		return nil, err
	}
	result := any(noopResult)
	if o.ResultBytes > 0 {
		result = map[string]any{"ok": true, "pad": strings.Repeat("x", o.ResultBytes)}
	}
	handler := func(ctx context.Context, _ *worker.Step) (any, error) {
		if o.HandlerTime > 0 {
			t := time.NewTimer(o.HandlerTime)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		s.executed.Add(1)
		return result, nil
	}
	for i := 0; i < n; i++ {
		// Room for every running handler's submission, the reader and the
		// notification listener.
		pool, err := openPool(ctx, o.DatabaseURL, "tasker-bench-worker", int32(o.Concurrency+3), nil, worker.ConfigurePool)
		if err != nil {
			return nil, fmt.Errorf("worker pool: %w", err)
		}
		s.pools = append(s.pools, pool)
		w, err := worker.New(pool, worker.Config{
			Namespaces: []string{Namespace}, Concurrency: o.Concurrency, BatchSize: o.Batch,
			AsyncSubmit: o.AsyncSubmit, Logger: o.Logger, Observer: obs, ShutdownTimeout: 10 * time.Second,
		})
		if err != nil {
			return nil, err
		}
		w.Handle(Handler, handler)
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		s.workers = append(s.workers, w)
	}
	ok = true
	return s, nil
}

// stop stops the workers, flushes their telemetry and closes their pools.
func (s *workerSet) stop() {
	for _, w := range s.workers {
		w.Stop()
	}
	if s.tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.tel.Shutdown(ctx)
		cancel()
	}
	for _, p := range s.pools {
		p.Close()
	}
	s.workers, s.pools, s.tel = nil, nil, nil
}

// RunWorker runs one benchmark worker until ctx is cancelled: the worker
// process of `orchestrator bench --processes`. It writes "ready" and a
// newline to ready once the worker polls its queue.
func RunWorker(ctx context.Context, o WorkerOptions, ready io.Writer) error {
	if o.DatabaseURL == "" {
		return errors.New("no database URL")
	}
	s, err := startWorkers(ctx, o, 1)
	if err != nil {
		return err
	}
	fmt.Fprintln(ready, "ready")
	<-ctx.Done()
	s.stop()
	return nil
}
