// Command example-worker runs the handlers of the demo workflow
// (config/templates/order_fulfillment.yaml) with the Go worker SDK.
//
// Environment: DATABASE_URL (required); TASKER_WORKER_NAMESPACES (default
// ecommerce); TASKER_WORKER_CONCURRENCY (default 10);
// TASKER_WORKER_METRICS_LISTEN (default 127.0.0.1:9091, empty disables
// /metrics); TASKER_DEMO_DELAY (simulated work per step, default 50ms);
// TASKER_TELEMETRY_TRACING_ENABLED=true to export traces, to
// TASKER_TELEMETRY_OTLP_ENDPOINT (host:port for grpc, http://host:port for
// plaintext) with TASKER_TELEMETRY_OTLP_PROTOCOL (grpc or http/protobuf), or
// to the standard OTEL_EXPORTER_OTLP_* variables; OTEL_SERVICE_NAME (default
// tasker-example-worker).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/demo"
	"github.com/tasker/tasker/internal/gctune"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

func main() {
	gctune.Apply()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "example-worker:", err)
		os.Exit(1)
	}
}

const usage = `usage: example-worker

Runs the handlers of the demo workflow (config/templates/order_fulfillment.yaml)
with the Go worker SDK until SIGINT or SIGTERM, then finishes or releases the
steps it is running.

Environment:
  DATABASE_URL                      Postgres connection string (required)
  TASKER_WORKER_NAMESPACES          namespaces to serve, comma-separated (default ecommerce)
  TASKER_WORKER_CONCURRENCY         steps run at once (default 10)
  TASKER_WORKER_ASYNC_SUBMIT        true to submit results without waiting for their WAL flush
                                    (lower latency; a Postgres crash may forget the last results,
                                    whose steps then run again) (default false)
  TASKER_WORKER_METRICS_LISTEN      address of /metrics (default 127.0.0.1:9091; empty disables it)
  TASKER_DEMO_DELAY                 simulated work per step (default 50ms)
  TASKER_TELEMETRY_TRACING_ENABLED  true to export traces (default false)
  TASKER_TELEMETRY_OTLP_ENDPOINT    OTLP endpoint: host:port for grpc, http://host:port for http/protobuf
  TASKER_TELEMETRY_OTLP_PROTOCOL    grpc or http/protobuf (default grpc)
  TASKER_TELEMETRY_OTLP_ENCODER     tasker (its own OTLP encoder) or sdk (the OpenTelemetry SDK's exporters) (default tasker)
  OTEL_EXPORTER_OTLP_*              the standard OpenTelemetry exporter variables
  OTEL_SERVICE_NAME                 service name in traces (default tasker-example-worker)
  GOGC                              garbage collector target (default 400)
`

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

// envBool reads a true/false variable; unset or empty is false.
func envBool(k string) (bool, error) {
	v := os.Getenv(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s is %q; want true or false", k, v)
	}
	return b, nil
}

func run() error {
	if len(os.Args) > 1 {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			fmt.Print(usage)
			return nil
		}
		return fmt.Errorf("unexpected argument %q: this worker takes no arguments, only environment variables (see --help)", os.Args[1])
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		return errors.New("DATABASE_URL is not set")
	}
	concurrency, err := strconv.Atoi(env("TASKER_WORKER_CONCURRENCY", "10"))
	if err != nil {
		return fmt.Errorf("TASKER_WORKER_CONCURRENCY: %w", err)
	}
	asyncSubmit, err := envBool("TASKER_WORKER_ASYNC_SUBMIT")
	if err != nil {
		return err
	}
	delay, err := time.ParseDuration(env("TASKER_DEMO_DELAY", "50ms"))
	if err != nil {
		return fmt.Errorf("TASKER_DEMO_DELAY: %w", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	tracing, err := envBool("TASKER_TELEMETRY_TRACING_ENABLED")
	if err != nil {
		return err
	}
	tel, err := telemetry.NewProvider(ctx, telemetry.Options{
		ServiceName: env("OTEL_SERVICE_NAME", "tasker-example-worker"), TracingEnabled: tracing,
		OTLPEndpoint: os.Getenv("TASKER_TELEMETRY_OTLP_ENDPOINT"), OTLPProtocol: env("TASKER_TELEMETRY_OTLP_PROTOCOL", "grpc"),
		OTLPEncoder:    env("TASKER_TELEMETRY_OTLP_ENCODER", "tasker"),
		MetricsEnabled: true, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = tel.Shutdown(sctx)
	}()
	obs, err := worker.NewOTelObserver(tel.TracerProvider(), tel.MeterProvider())
	if err != nil {
		return err
	}
	if addr := env("TASKER_WORKER_METRICS_LISTEN", "127.0.0.1:9091"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("TASKER_WORKER_METRICS_LISTEN %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.MetricsHandler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		// Ends when the server is closed at exit.
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		logger.Info("worker metrics served", "listen", ln.Addr().String())
	}

	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = int32(concurrency + 4)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "tasker-example-worker"
	worker.ConfigurePool(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	w, err := worker.New(pool, worker.Config{
		Namespaces:  strings.Split(env("TASKER_WORKER_NAMESPACES", demo.Namespace), ","),
		Concurrency: concurrency, AsyncSubmit: asyncSubmit, Logger: logger, Observer: obs,
	})
	if err != nil {
		return err
	}
	for name, h := range demo.Handlers(delay) {
		w.Handle(name, h)
	}
	// The worker retries its start until the orchestrator has migrated the
	// database and registered the namespace's templates.
	for {
		err = w.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		logger.Warn("worker cannot start yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}
