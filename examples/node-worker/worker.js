#!/usr/bin/env node
// The Node.js example worker: runs the demo workflow's handlers
// (config/templates/order_fulfillment.yaml) over Tasker's plain-SQL worker
// protocol. Configured by environment; see README.md beside this file.
//
//   DATABASE_URL=postgres://... node worker.js

import { Worker } from './src/tasker.js';
import { loadConfig } from './src/config.js';
import { Logger, parseLevel } from './src/log.js';

async function main() {
  let log = new Logger();
  let cfg;
  let worker;
  try {
    cfg = loadConfig();
    log = new Logger({ level: parseLevel(cfg.logLevel) });
    worker = new Worker({
      connectionString: cfg.databaseUrl,
      namespaces: cfg.namespaces,
      workerId: cfg.workerId,
      concurrency: cfg.concurrency,
      batchSize: cfg.batchSize,
      leaseSeconds: cfg.leaseSeconds,
      pollIntervalMs: cfg.pollIntervalMs,
      shutdownTimeoutMs: cfg.shutdownTimeoutMs,
      notify: cfg.notify,
      logger: log,
    });
  } catch (err) {
    log.error('invalid configuration', { error: err });
    process.exitCode = 2;
    return;
  }
  process.on('unhandledRejection', (err) => {
    log.error('unhandled promise rejection', { error: err, stack: err?.stack });
    process.exit(1);
  });

  for (const [name, fn] of Object.entries(cfg.handlers)) worker.handle(name, fn);

  // First SIGTERM/SIGINT: stop claiming, let running steps finish (bounded),
  // release the rest. A second one: release running steps now.
  let signals = 0;
  let stopped;
  const done = new Promise((resolve) => { stopped = resolve; });
  const onSignal = (sig) => {
    signals++;
    if (signals === 1) {
      worker.log.info('signal received: stopping gracefully', { signal: sig, in_flight: worker.inFlight });
      worker.stop().then(stopped);
      // Last resort if something hangs past the bound (release, pool close).
      setTimeout(() => {
        worker.log.error('shutdown did not complete in time; exiting');
        process.exit(1);
      }, cfg.shutdownTimeoutMs + 15_000).unref();
    } else {
      worker.log.warn('second signal: releasing running steps now', { signal: sig, in_flight: worker.inFlight });
      worker.stop({ hard: true });
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  // start retries (with backoff) until the database is reachable and the
  // namespaces' queues exist; a signal meanwhile ends it.
  await worker.start();
  await done;
  // Everything is settled and closed; exit now even if a handler that ignored
  // its AbortSignal still holds a timer.
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: 'ERROR', msg: 'worker failed', error: String(err?.stack || err) }) + '\n');
  process.exitCode = 1;
});
