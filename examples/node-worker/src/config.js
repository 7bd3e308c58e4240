// Configuration of the example worker, from the environment (README.md).

import { DEFAULTS } from './tasker.js';
import { handlers as demoHandlers, NAMESPACE } from './handlers.js';

const UNITS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** parseDuration reads a Go-style duration ("50ms", "2s", "1m30s", "0") into milliseconds. */
export function parseDuration(text) {
  const s = String(text).trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNITS[m[2]];
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) {
    throw new Error(`invalid duration ${JSON.stringify(text)} (want e.g. 50ms, 2s, 1m30s)`);
  }
  return total;
}

function env(name, def) {
  const v = process.env[name];
  return v === undefined || v === '' ? def : v;
}

function positiveInt(name, def) {
  const raw = env(name, String(def));
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: want a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function seconds(name, def) {
  const raw = env(name, String(def));
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: want a number of seconds >= 0, got ${JSON.stringify(raw)}`);
  return n;
}

function bool(name, def) {
  const raw = env(name, String(def)).toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
  if (['0', 'false', 'no', 'off'].includes(raw)) return false;
  throw new Error(`${name}: want true or false, got ${JSON.stringify(raw)}`);
}

function list(raw) {
  return String(raw).split(',').map((s) => s.trim()).filter(Boolean);
}

/** loadConfig reads the worker's configuration from the environment. */
export function loadConfig() {
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) throw new Error('DATABASE_URL is not set');
  const concurrency = positiveInt('TASKER_WORKER_CONCURRENCY', DEFAULTS.concurrency);
  const all = demoHandlers(parseDuration(env('TASKER_DEMO_DELAY', '50ms')));
  let selected = Object.keys(all);
  if (env('TASKER_HANDLERS', '') !== '') {
    selected = list(process.env.TASKER_HANDLERS);
    const unknown = selected.filter((h) => !(h in all));
    if (unknown.length) {
      throw new Error(`TASKER_HANDLERS: unknown handler(s) ${unknown.join(', ')}; known: ${Object.keys(all).join(', ')}`);
    }
  }
  return {
    databaseUrl,
    namespaces: list(env('TASKER_WORKER_NAMESPACES', NAMESPACE)),
    workerId: env('TASKER_WORKER_ID', undefined),
    concurrency,
    batchSize: positiveInt('TASKER_WORKER_BATCH_SIZE', concurrency),
    leaseSeconds: positiveInt('TASKER_WORKER_LEASE_SECONDS', DEFAULTS.leaseSeconds),
    pollIntervalMs: positiveInt('TASKER_WORKER_POLL_INTERVAL_MS', DEFAULTS.pollIntervalMs),
    shutdownTimeoutMs: seconds('TASKER_WORKER_SHUTDOWN_TIMEOUT_SECONDS', DEFAULTS.shutdownTimeoutMs / 1000) * 1000,
    notify: bool('TASKER_WORKER_NOTIFY', true),
    logLevel: env('TASKER_LOG_LEVEL', 'info'),
    handlers: Object.fromEntries(selected.map((h) => [h, all[h]])),
  };
}
