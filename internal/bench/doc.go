// Package bench is the benchmark behind `orchestrator bench`: it measures the
// whole engine (orchestrator, Go workers, Postgres) on workflow scenarios,
// and the raw PGMQ floor underneath it, on a database of its own.
//
// A run:
//
//  1. creates a fresh database on the configured server, migrates it and
//     registers the scenario's template (namespace "bench", every step the
//     no-op handler "bench.noop"); with History, seeds that many completed
//     tasks of a four-step chain (namespace "history", history.go) and
//     runs VACUUM ANALYZE, so the run meets tables with a past;
//  2. starts the system under test: the daemon (daemon.Start) and N Go SDK
//     workers in this process, or, with Processes, `orchestrator serve` and
//     N `orchestrator bench worker` processes;
//  3. submits the tasks, all at once (closed loop) or at a fixed rate (open
//     loop), and polls until every task is finished, drawing a status line;
//  4. stops everything, so that each Postgres backend flushes its
//     statistics, and reads the results from the database: throughput and
//     submit-to-complete latency from tasks.created_at/completed_at,
//     dispatch latency from the step transition rows, commits, rows
//     written, HOT updates and shared-buffer pages accessed from
//     pg_stat_database, pg_stat_user_tables and pg_statio_user_tables
//     (pages by table too), WAL bytes from the WAL position and WAL records
//     from pg_stat_wal, and CPU time from /proc (Postgres) and rusage or
//     /proc (this process, the child processes);
//  5. pushes as many messages as the run had steps through raw PGMQ
//     (send_batch, read, delete batches) on the same database: the floor;
//  6. drops the database.
//
// This package holds its own SQL, against the system catalogs and read-only
// against the engine's tables, rather than going through internal/store:
// it observes the engine from outside and must not become part of what it
// measures. The one exception, seeding the history, writes the engine's
// tables before the run starts, in bulk, as no engine path would.
package bench
