// A Tasker worker over the plain-SQL worker protocol (DESIGN §6), in plain
// JavaScript with the `pg` driver only. It does what the Go SDK (worker/
// worker.go) does:
//
//   1. read step messages:  pgmq.read('worker_<ns>_queue', lease_seconds, n),
//      woken by NOTIFY on "pgmq.q_worker_<ns>_queue.INSERT", polling as a
//      fallback;
//   2. claim the steps:     tasker.step_claim_batch(uuid[], int[], worker_id,
//      lease_seconds); a message whose step is not claimable (finished,
//      or a stale attempt) is deleted (pgmq.delete) and nothing runs; a
//      message for a handler this worker lacks is pushed back
//      (pgmq.set_vt(queue, msg_id, 5)) for another worker; of several
//      messages naming one step, the newest attempt is claimed, the others
//      deleted only when that claim's answer shows they cannot be claimed,
//      and the step claimed again through the one for its next attempt when
//      the newest is refused (see settleDuplicates);
//      poison is archived (pgmq.archive) with a warning naming queue,
//      msg_id, step_uuid and reason, and nothing runs: a malformed message
//      (no step_uuid, an attempt outside 1..2147483647) before any SQL; a
//      message whose step does not exist (reason "step not found"); and,
//      when a batch claim raises an error the same call would raise again
//      (SQLSTATE class 0A, 22, 23, 42 or P0, e.g. 42501 for a step of a
//      namespace this login does not serve), a message whose own claim
//      raises when the batch's steps are then claimed one at a time (unless
//      a claim of no steps fails too: then the fault is the worker's and
//      nothing is archived; transient errors archive nothing either);
//      a step claimed through a message of another namespace's queue, or
//      whose handler this worker lacks, is given back unrun
//      (tasker.step_release without msg_id, handler_started false) and the
//      message archived;
//   3. run the handler with an AbortSignal (per-step timeout, lease lost,
//      hard shutdown) while tasker.step_heartbeat renews the lease and the
//      message's visibility every lease/3;
//   4. submit:              tasker.step_submit_result(step, attempt,
//      worker_id, success, result, error, msg_id, headers), which also
//      deletes the message and notifies the orchestrator;
//   5. on shutdown: stop reading, wait (bounded) for running handlers, then
//      abort the rest and give their steps back with tasker.step_release
//      (handler_started true; false for a step the hard stop caught before
//      its handler).

import { setMaxListeners } from 'node:events';
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import pg from 'pg';

import { Logger } from './log.js';

export const DEFAULTS = Object.freeze({
  concurrency: 10,
  leaseSeconds: 30,
  pollIntervalMs: 1000,
  shutdownTimeoutMs: 30_000,
  // Used when a claim carries no timeout_seconds (the Go SDK's default).
  defaultStepTimeoutSeconds: 300,
  // How long a message for a handler this worker lacks stays hidden.
  unknownHandlerDeferSeconds: 5,
});

const NAMESPACE_RE = /^[a-z][a-z0-9_]{0,32}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';
// The largest attempt a claim can be made for: attempts are Postgres integers.
const MAX_ATTEMPT = 2147483647;
// How much longer than its lease a result is retried while the database
// cannot be reached: longer than the orchestrator's reap grace after an
// outage (orchestrator.reap_grace, 1 minute by default). As the Go SDK's
// worker.SubmitRetryBeyondLease.
const SUBMIT_RETRY_BEYOND_LEASE_MS = 90_000;
// SQLSTATE classes of errors the same call raises again (the Go SDK's
// classification): feature not supported, data exception, integrity
// constraint violation, syntax error or access rule violation (42501:
// insufficient privilege), PL/pgSQL RAISE.
const PERMANENT_SQLSTATE_CLASSES = new Set(['0A', '22', '23', '42', 'P0']);

const CLAIM_SQL = `SELECT claimed, reason, step_uuid, task_uuid, namespace, step_name, handler, attempt,
       max_attempts, timeout_seconds, correlation_id, traceparent,
       task_context, step_inputs, dependency_results
  FROM tasker.step_claim_batch($1::uuid[], $2::integer[], $3::text, $4::integer)`;

/** validateNamespace applies the engine's rule (DESIGN §6) before any SQL or channel name is built. */
export function validateNamespace(ns) {
  if (!NAMESPACE_RE.test(ns)) {
    throw new Error(`namespace ${JSON.stringify(ns)} must match ${NAMESPACE_RE} (a lowercase letter, then up to 32 lowercase letters, digits or underscores)`);
  }
  return ns;
}

/** workerQueue is the PGMQ queue carrying a namespace's step messages. */
export function workerQueue(ns) {
  return `worker_${validateNamespace(ns)}_queue`;
}

/** notifyChannel is the channel PGMQ signals on every insert into queue. */
export function notifyChannel(queue) {
  return `pgmq.q_${queue}.INSERT`;
}

/** quoteIdent quotes a name for LISTEN (the channel has dots and capitals). */
export function quoteIdent(name) {
  return '"' + String(name).replace(/"/g, '""') + '"';
}

/**
 * StepError is a handler failure with its retry classification; it becomes
 * the `error` argument of step_submit_result: {message, retryable, kind}.
 * Any other thrown value is a retryable failure of kind "error".
 */
export class StepError extends Error {
  constructor(message, { retryable = true, kind, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StepError';
    this.retryable = retryable;
    this.kind = kind || (retryable ? 'retryable' : 'permanent');
  }
}

/** permanent marks a failure retrying cannot fix: the step fails at once. */
export function permanent(message, opts = {}) {
  return new StepError(message, { ...opts, retryable: false, kind: 'permanent' });
}

/** retryable marks a failure explicitly as retryable (the default for any thrown error). */
export function retryable(message, opts = {}) {
  return new StepError(message, { ...opts, retryable: true, kind: 'retryable' });
}

/** errorPayload is the protocol's error object for a thrown value. */
export function errorPayload(err) {
  if (err instanceof StepError) {
    return { message: err.message, retryable: err.retryable, kind: err.kind };
  }
  if (err && typeof err === 'object' && typeof err.retryable === 'boolean') {
    return {
      message: String(err.message ?? err),
      retryable: err.retryable,
      kind: typeof err.kind === 'string' && err.kind ? err.kind : (err.retryable ? 'retryable' : 'permanent'),
    };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { message: message || 'handler failed', retryable: true, kind: 'error' };
}

/**
 * stepMessageProblem says what is wrong with a step message body that no
 * claim can ever accept ('' when nothing is): it must be a JSON object with
 * a step_uuid and an integer attempt from 1 to 2147483647 (a Postgres
 * integer; a larger one would make the claim raise, or be read as another
 * attempt by a driver that wraps it).
 */
export function stepMessageProblem(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return 'not a step message: the body is not a JSON object';
  }
  const { step_uuid: step, attempt } = body;
  if (step === undefined || step === null || step === '' || step === NIL_UUID) return 'no step_uuid';
  if (typeof step !== 'string' || !UUID_RE.test(step)) {
    return `not a step message: step_uuid ${JSON.stringify(step)} is not a uuid`;
  }
  if (attempt === undefined || attempt === null || attempt === 0) return 'no attempt (attempts count from 1)';
  if (!Number.isInteger(attempt)) return `not a step message: attempt ${JSON.stringify(attempt)} is not an integer`;
  if (attempt < 1 || attempt > MAX_ATTEMPT) return `attempt ${attempt} is out of range (1 to ${MAX_ATTEMPT})`;
  return '';
}

/**
 * permanentError reports whether a database call failed in a way that the
 * same call would fail again: an error about the data, the statement or
 * the caller's rights (SQLSTATE classes 0A, 22, 23, 42, P0), as the Go SDK
 * decides. Anything else (connection loss, timeouts, serialization
 * failures, a server shutting down, Node's own ECONNRESET and the like)
 * may pass.
 */
export function permanentError(err) {
  const code = err?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && PERMANENT_SQLSTATE_CLASSES.has(code.slice(0, 2));
}

/** sleep resolves after ms, or at once when signal aborts (it never rejects). */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** raceAbort settles with p, or rejects with signal.reason as soon as signal aborts. */
function raceAbort(p, signal) {
  if (signal.aborted) {
    // Keep a late rejection of p from being reported as unhandled.
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e) => { signal.removeEventListener('abort', onAbort); reject(e); },
    );
  });
}

// Slots is a counting semaphore shared by every namespace's read loop: a
// worker never claims a step it cannot start at once.
class Slots {
  constructor(n) {
    this.free = n;
    this.waiters = [];
  }

  tryTake() {
    if (this.free > 0) {
      this.free--;
      return true;
    }
    return false;
  }

  /** take waits for a slot; false when signal aborted first. */
  take(signal) {
    if (this.tryTake()) return Promise.resolve(true);
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = (ok) => {
        signal.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  give() {
    const waiter = this.waiters.shift();
    if (waiter) waiter(true);
    else this.free++;
  }
}

// Wake is a coalescing wake-up flag for one read loop.
class Wake {
  constructor() {
    this.pending = false;
    this.resolver = null;
  }

  notify() {
    if (this.resolver) this.resolver();
    else this.pending = true;
  }

  /** wait resolves on notify(), after ms, or when signal aborts. */
  wait(ms, signal) {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        if (this.resolver === done) this.resolver = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.resolver = done;
    });
  }
}

// Listener holds one dedicated connection LISTENing on the queues' insert
// channels and turns notifications into wake-ups. Notifications are hints:
// the read loops poll anyway, and a lost connection is re-established with
// backoff (waking every loop, since messages may have arrived meanwhile).
class Listener {
  constructor(clientConfig, wakes, log) {
    this.clientConfig = clientConfig;
    this.wakes = wakes; // channel -> Wake
    this.log = log;
    this.abort = new AbortController();
    this.client = null;
    this.drop = null;
    this.done = null;
  }

  start() {
    this.done = this.loop();
  }

  wakeAll() {
    for (const w of this.wakes.values()) w.notify();
  }

  async loop() {
    let backoff = 100;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let err = null;
      const client = new pg.Client(this.clientConfig);
      this.client = client;
      let dropped;
      const gone = new Promise((resolve) => { dropped = resolve; });
      this.drop = dropped;
      client.on('error', (e) => { err = e; dropped(); });
      client.on('end', () => dropped());
      client.on('notification', (n) => this.wakes.get(n.channel)?.notify());
      try {
        await client.connect();
        for (const channel of this.wakes.keys()) {
          await client.query(`LISTEN ${quoteIdent(channel)}`);
        }
        backoff = 100;
        this.log.debug('listening for queue notifications', { channels: [...this.wakes.keys()] });
        this.wakeAll();
        await gone;
      } catch (e) {
        err = e;
      } finally {
        this.client = null;
        client.end().catch(() => {});
      }
      if (signal.aborted) break;
      this.log.warn('queue listener lost its connection; reconnecting', { error: err ?? 'connection ended', retry_in_ms: backoff });
      this.wakeAll();
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  async stop() {
    this.abort.abort();
    if (this.drop) this.drop();
    if (this.client) this.client.end().catch(() => {});
    await this.done;
  }
}

/**
 * Worker runs registered handlers for the steps of its namespaces.
 *
 *   const w = new Worker({ connectionString, namespaces: ['ecommerce'] });
 *   w.handle('ecommerce.validate_cart', async (step, { signal, log }) => ({ ok: true }));
 *   await w.start();          // resolves once reading; retries while the database is unreachable
 *   ...
 *   await w.stop();           // graceful: finish or release in-flight steps
 *
 * A handler receives the step ({taskUuid, stepUuid, name, handler,
 * namespace, attempt, maxAttempts, timeoutSeconds, correlationId,
 * traceparent, context, inputs, dependencyResults}) and {signal, log}; it
 * returns the step's result (any JSON value) or throws. Throw permanent(msg)
 * for a failure that retrying cannot fix. signal aborts at the step's
 * timeout, when the step is taken away (cancelled, resolved, lease lost) and
 * at a hard shutdown; the worker stops waiting for the handler then.
 */
// hardStopListeners is how many listeners a worker's stop signals may
// have: a few per running step (the handler's signal, its heartbeat, a
// submission's retry sleep), plus the read loops and the shutdown.
export function hardStopListeners(concurrency) {
  return 4 * concurrency + 16;
}

export class Worker {
  constructor({
    connectionString,
    pool,
    namespaces,
    workerId,
    concurrency = DEFAULTS.concurrency,
    batchSize,
    leaseSeconds = DEFAULTS.leaseSeconds,
    pollIntervalMs = DEFAULTS.pollIntervalMs,
    shutdownTimeoutMs = DEFAULTS.shutdownTimeoutMs,
    notify = true,
    logger,
    applicationName = 'tasker-node-worker',
  } = {}) {
    if (!Array.isArray(namespaces) || namespaces.length === 0) {
      throw new Error('namespaces is empty');
    }
    namespaces.forEach(validateNamespace);
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`concurrency must be a positive integer, got ${concurrency}`);
    }
    if (!Number.isInteger(leaseSeconds) || leaseSeconds < 3) {
      throw new Error(`lease must be at least 3 seconds (it is renewed every third of it), got ${leaseSeconds}`);
    }
    if (!Number.isFinite(pollIntervalMs) || pollIntervalMs < 10) {
      throw new Error(`poll interval must be at least 10ms, got ${pollIntervalMs}`);
    }
    if (!Number.isFinite(shutdownTimeoutMs) || shutdownTimeoutMs < 0) {
      throw new Error(`shutdown timeout must be >= 0, got ${shutdownTimeoutMs}`);
    }
    if (!pool && !connectionString) {
      throw new Error('connectionString (DATABASE_URL) is required');
    }
    this.namespaces = [...new Set(namespaces)];
    this.workerId = workerId || `node-${os.hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.concurrency = concurrency;
    this.batchSize = Math.min(Math.max(1, batchSize || concurrency), concurrency);
    this.leaseSeconds = leaseSeconds;
    this.pollIntervalMs = pollIntervalMs;
    this.shutdownTimeoutMs = shutdownTimeoutMs;
    this.notify = notify;
    this.log = (logger || new Logger()).with({ worker_id: this.workerId });

    this.clientConfig = {
      connectionString,
      application_name: applicationName,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
      // Server-side bound on every statement, so a stuck query cannot hang
      // the worker (pgmq.read and the protocol functions are short).
      statement_timeout: 30_000,
    };
    this.ownPool = !pool;
    this.pool = pool || new pg.Pool({ ...this.clientConfig, max: concurrency + this.namespaces.length + 2 });
    // An idle client's error (server restart, network) must not crash us:
    // the pool drops the client and the next query reconnects.
    this.pool.on('error', (err) => this.log.warn('idle database connection failed', { error: err }));

    this.handlers = new Map();
    this.slots = new Slots(concurrency);
    this.readAbort = new AbortController(); // stop reading (graceful)
    this.hardAbort = new AbortController(); // abort running handlers
    // Every running step (its handler, heartbeat and retry sleeps) listens
    // for the hard stop: allow that many listeners without Node's
    // MaxListenersExceededWarning, which fired above 10 running steps.
    setMaxListeners(hardStopListeners(concurrency), this.hardAbort.signal, this.readAbort.signal);
    this.wakes = new Map(); // namespace -> Wake
    this.readLoops = [];
    this.inflight = new Set();
    this.unknownLogged = new Map();
    this.listener = null;
    this.started = false;
    this.stopping = null;
  }

  /** handle registers fn for steps whose template names handler `name`. */
  handle(name, fn) {
    if (typeof fn !== 'function') throw new Error(`handler ${name} is not a function`);
    this.handlers.set(name, fn);
    return this;
  }

  /** inFlight is how many steps are running. */
  get inFlight() {
    return this.inflight.size;
  }

  /**
   * start waits (retrying with backoff) until the database is reachable and
   * every namespace's queue exists, then starts reading. It resolves false
   * if stop() was called first.
   */
  async start() {
    if (this.started) return true;
    const queues = this.namespaces.map(workerQueue);
    const signal = this.readAbort.signal;
    for (let failures = 0; !signal.aborted; failures++) {
      try {
        for (const q of queues) {
          await this.pool.query('SELECT queue_length FROM pgmq.metrics($1::text)', [q]);
        }
        if (failures > 0) this.log.info('database reachable and queues ready', { after_failures: failures });
        break;
      } catch (err) {
        const retryMs = Math.min(250 * 2 ** Math.min(failures, 5), 5000);
        if (failures === 0 || failures % 10 === 0) {
          this.log.warn('cannot start yet: database unreachable or a queue is missing (is a template of the namespace registered?); retrying', {
            error: err, queues, failures: failures + 1, retry_in_ms: retryMs,
          });
        }
        await sleep(retryMs, signal);
      }
    }
    if (signal.aborted) return false;

    const channels = new Map();
    for (const ns of this.namespaces) {
      const wake = new Wake();
      this.wakes.set(ns, wake);
      channels.set(notifyChannel(workerQueue(ns)), wake);
    }
    if (this.notify) {
      this.listener = new Listener(this.clientConfig, channels, this.log);
      this.listener.start();
    }
    for (const ns of this.namespaces) {
      this.readLoops.push(this.readLoop(ns));
    }
    this.started = true;
    this.log.info('worker started', {
      namespaces: this.namespaces, concurrency: this.concurrency, batch_size: this.batchSize,
      lease_seconds: this.leaseSeconds, handlers: [...this.handlers.keys()].sort(),
    });
    return true;
  }

  /**
   * stop stops reading new messages, waits up to shutdownTimeoutMs for the
   * running handlers to finish and submit, then aborts the rest and releases
   * their steps (tasker.step_release) so they are retried at once. With
   * {hard: true} it does not wait. Safe to call more than once.
   */
  stop({ hard = false } = {}) {
    if (hard) this.hardAbort.abort();
    if (!this.stopping) this.stopping = this.shutdown();
    return this.stopping;
  }

  async shutdown() {
    this.log.info('worker stopping: no new steps will be claimed', { in_flight: this.inflight.size, shutdown_timeout_ms: this.shutdownTimeoutMs });
    this.readAbort.abort();
    await Promise.allSettled(this.readLoops);
    if (this.inflight.size > 0 && !this.hardAbort.signal.aborted) {
      const bound = new AbortController();
      const all = Promise.allSettled([...this.inflight]).then(() => true);
      const timedOut = sleep(this.shutdownTimeoutMs, bound.signal).then(() => false);
      const hardStop = sleep(2 ** 31 - 1, this.hardAbort.signal).then(() => false);
      const finished = await Promise.race([all, timedOut, hardStop]);
      bound.abort();
      if (!finished) {
        const why = this.hardAbort.signal.aborted ? 'forced stop' : 'shutdown bound reached';
        this.log.warn(`${why}: aborting running handlers and releasing their steps`, { in_flight: this.inflight.size });
      }
    }
    this.hardAbort.abort();
    await Promise.allSettled([...this.inflight]);
    if (this.listener) await this.listener.stop();
    if (this.ownPool) await this.pool.end().catch((err) => this.log.warn('closing the connection pool', { error: err }));
    this.log.info('worker stopped');
  }

  // readLoop reads step messages for one namespace while there are free slots.
  async readLoop(ns) {
    const queue = workerQueue(ns);
    const signal = this.readAbort.signal;
    const wake = this.wakes.get(ns);
    let failures = 0;
    while (!signal.aborted) {
      // Take a slot before reading, then as many more as are free, up to a batch.
      if (!(await this.slots.take(signal))) break;
      let free = 1;
      while (free < this.batchSize && this.slots.tryTake()) free++;
      let read = 0;
      let used = 0;
      let error = null;
      try {
        ({ read, used } = await this.readOnce(ns, queue, free));
      } catch (err) {
        error = err;
      }
      for (let i = used; i < free; i++) this.slots.give();
      if (error) {
        if (signal.aborted) break;
        failures++;
        const retryMs = Math.min(failures * 200, 5000);
        if (failures === 1 || failures % 30 === 0) {
          this.log.error('reading step messages failed; retrying with backoff', { queue, error, failures, retry_in_ms: retryMs });
        }
        await sleep(retryMs, signal);
        continue;
      }
      if (failures > 0) {
        this.log.info('reading step messages recovered', { queue, after_failures: failures });
        failures = 0;
      }
      if (read === 0) {
        await wake.wait(this.pollIntervalMs, signal);
      }
    }
  }

  // readOnce reads up to n messages from namespace ns's queue, claims their
  // steps in one round trip (two when the newest of several messages for a
  // step is refused) and starts the claimed ones. It returns how many
  // messages it read and how many slots it used.
  async readOnce(ns, queue, n) {
    const { rows: msgs } = await this.pool.query(
      'SELECT msg_id, read_ct, message, headers FROM pgmq.read($1::text, $2::integer, $3::integer)',
      [queue, this.leaseSeconds, n],
    );
    if (msgs.length === 0) return { read: 0, used: 0 };
    if (this.readAbort.signal.aborted) {
      // Stopping: hand the messages back at once instead of claiming them.
      await Promise.allSettled(msgs.map((m) => this.pool.query('SELECT 1 FROM pgmq.set_vt($1::text, $2::bigint, 0)', [queue, m.msg_id])));
      return { read: msgs.length, used: 0 };
    }

    const byStep = new Map(); // step uuid -> the message to claim it with
    // The other messages of steps that several messages name (a duplicate
    // delivery, a stale message of an older attempt, a forged or corrupt
    // one): step uuid -> messages. They are never claimed together with the
    // newest: step_claim_batch claims a step once, at the highest attempt it
    // is asked for, and answers every entry for it with the same outcome, so
    // a step sent twice would run twice. The newest attempt is claimed
    // first, and what becomes of the others depends on its claim's answer
    // (settleDuplicates).
    const others = new Map();
    for (const m of msgs) {
      const body = m.message;
      const why = stepMessageProblem(body);
      if (why) {
        const step = typeof body?.step_uuid === 'string' && UUID_RE.test(body.step_uuid) ? body.step_uuid.toLowerCase() : undefined;
        await this.archivePoison(queue, m.msg_id, step, why, { message: body });
        continue;
      }
      const stepUuid = body.step_uuid.toLowerCase();
      if (!this.handlers.has(body.handler)) {
        await this.deferUnknown(queue, m.msg_id, body.handler);
        continue;
      }
      const prev = byStep.get(stepUuid);
      if (prev) {
        const rest = others.get(stepUuid) || [];
        if (body.attempt > prev.message.attempt) {
          rest.push(prev);
          byStep.set(stepUuid, m);
        } else {
          rest.push(m);
        }
        others.set(stepUuid, rest);
        continue;
      }
      byStep.set(stepUuid, m);
    }
    let ids = [...byStep.keys()];
    let used = 0;
    // At most two rounds: the second claims, for a step whose newest attempt
    // was refused, the one attempt its claim answer says the step can still
    // be claimed at. A read without duplicates makes one claim round trip,
    // as one with stale duplicates does.
    while (ids.length > 0) {
      const attempts = ids.map((id) => byStep.get(id).message.attempt);
      let claims;
      let error = null;
      try {
        claims = await this.claim(ids, attempts);
      } catch (err) {
        // Not permanent: nothing more is claimed; the messages not claimed,
        // and their steps' other messages, reappear after the lease.
        if (!permanentError(err)) {
          if (used === 0) throw err;
          this.log.warn('claiming step messages failed; the rest come back after the lease', { queue, error: err, claimed: used });
          break;
        }
        // One message can make the whole batch fail (a step of a namespace
        // this login does not serve: 42501); the others must not wait for it
        // forever.
        ({ claims, error } = await this.claimEach(queue, ids, attempts, byStep, err));
        if (error) {
          // The steps claimed before it run; the messages not claimed come
          // back after their visibility timeout.
          if (claims.length === 0 && used === 0) throw error;
          this.log.warn('claiming step messages one at a time failed; the rest come back after the lease', { queue, error, claimed: used + claims.length });
        }
      }
      used += await this.startClaims(ns, queue, n - used, claims, byStep);
      if (error || others.size === 0) break;
      ids = await this.settleDuplicates(queue, claims, byStep, others);
    }
    return { read: msgs.length, used };
  }

  // settleDuplicates decides, from a claim round's answers, what becomes of
  // the other messages (others) of the steps claimed through byStep, and
  // returns the steps to claim again (through the message byStep now holds
  // for each). A message is deleted only when its claim could not succeed:
  //
  //   - the step was claimed: it is now at the attempt claimed, the newest
  //     of the read, so every other message is stale;
  //   - its claim was refused: attempt numbers are the step's attempts plus
  //     one when a message is sent and never decrease, so of the other
  //     messages only one for the attempt after those the claim answer
  //     reports can be genuine and claimable (the step has moved past the
  //     older ones, and the newer ones were never sent for it). That one is
  //     claimed in the next round, unless it is for the attempt just
  //     refused; the rest are deleted, as the refused message is. This is
  //     how a real message survives a forged one for a higher attempt.
  //
  // Messages for a step that does not exist are archived as poison, as the
  // claimed one is. A step the round has no answer for (its claim failed)
  // keeps its messages, which come back after their visibility timeout.
  async settleDuplicates(queue, claims, byStep, others) {
    const again = [];
    const stale = [];
    for (const c of claims) {
      const stepUuid = String(c.step_uuid).toLowerCase();
      const rest = others.get(stepUuid);
      if (!rest) continue;
      others.delete(stepUuid);
      if (c.claimed) {
        stale.push(...rest.map((m) => m.msg_id));
        continue;
      }
      if (c.task_uuid == null) {
        for (const m of rest) await this.archivePoison(queue, m.msg_id, c.step_uuid, c.reason || 'step not found');
        continue;
      }
      const refused = byStep.get(stepUuid);
      // Refused at the step's next attempt: the step is not claimable now
      // (not enqueued), at any attempt.
      const next = c.attempt + 1 === refused.message.attempt ? 0 : c.attempt + 1;
      const keep = rest.filter((m) => m.message.attempt === next);
      stale.push(...rest.filter((m) => m.message.attempt !== next).map((m) => m.msg_id));
      if (keep.length === 0) continue;
      // Never normal: no message for a later attempt than the step's next
      // one is ever sent.
      this.log.warn('step message for an attempt its step is not at refused; claiming the step through another message of its read', {
        queue, step_uuid: c.step_uuid, refused_msg_id: refused.msg_id, refused_attempt: refused.message.attempt,
        msg_id: keep[0].msg_id, attempt: next, reason: c.reason,
      });
      // Copies of the message claimed next stay for the round after, which
      // settles them by that claim's answer.
      byStep.set(stepUuid, keep[0]);
      if (keep.length > 1) others.set(stepUuid, keep.slice(1));
      again.push(stepUuid);
    }
    if (stale.length > 0) {
      await this.pool.query('SELECT pgmq.delete($1::text, $2::bigint[])', [queue, stale])
        .catch((err) => this.log.warn('deleting duplicate step messages failed', { queue, error: err }));
    }
    return again;
  }

  // startClaims starts the steps claimed through byStep's messages, using at
  // most n slots, and disposes of the messages whose claim failed. It returns
  // how many slots it used.
  async startClaims(ns, queue, n, claims, byStep) {
    let used = 0;
    for (const c of claims) {
      const m = byStep.get(String(c.step_uuid).toLowerCase());
      if (!m) continue;
      if (!c.claimed && c.task_uuid == null) {
        // No such step: there never was, or its task has been deleted
        // (retention). No claim of this message can ever succeed.
        await this.archivePoison(queue, m.msg_id, c.step_uuid, c.reason || 'step not found');
        continue;
      }
      if (!c.claimed) {
        // Its state moved on, or the message is of an older attempt: normal.
        this.log.debug('step not claimable; message deleted', { step_uuid: c.step_uuid, task_uuid: c.task_uuid, reason: c.reason, msg_id: m.msg_id });
        await this.pool.query('SELECT pgmq.delete($1::text, $2::bigint)', [queue, m.msg_id])
          .catch((err) => this.log.warn('deleting an unclaimable step message failed', { queue, msg_id: m.msg_id, error: err }));
        continue;
      }
      // The claim checks the step and attempt the message names, not the
      // rest of it: the step's own namespace and handler are the claim's.
      if (c.namespace !== ns || !this.handlers.has(c.handler)) {
        const why = c.namespace !== ns
          ? `the step is of namespace ${c.namespace}, not ${ns}`
          : `the step's handler ${c.handler} is not registered in this worker`;
        await this.giveBack(c, why);
        await this.archivePoison(queue, m.msg_id, c.step_uuid, why);
        continue;
      }
      if (used >= n) break; // cannot happen: one claim per message
      used++;
      const run = this.execute(c, m).catch((err) => {
        this.log.error('internal error running a step', { step_uuid: c.step_uuid, task_uuid: c.task_uuid, error: err });
      });
      const tracked = run.finally(() => {
        this.inflight.delete(tracked);
        this.slots.give();
      });
      this.inflight.add(tracked);
    }
    return used;
  }

  // claim calls tasker.step_claim_batch for the steps ids at attempts (one
  // attempt per step) and returns its rows, one per step.
  async claim(ids, attempts) {
    const { rows } = await this.pool.query(CLAIM_SQL, [ids, attempts, this.workerId, this.leaseSeconds]);
    return rows;
  }

  // claimEach claims the steps one at a time, after their batch claim failed
  // with an error that the same call would raise again (batchErr), so that
  // the message behind it does not keep the others from being claimed. A
  // message whose own claim fails that way can never be claimed and is
  // archived. A claim of nothing is made first: when that fails too, the
  // error is the worker's (the function missing or not granted to this
  // login), not any message's, and nothing is archived (batchErr is
  // thrown). It returns the claims made, and the error of a claim that
  // failed in a way that may pass (the steps after it are not tried).
  async claimEach(queue, ids, attempts, byStep, batchErr) {
    try {
      await this.claim([], []);
    } catch {
      throw batchErr;
    }
    const claims = [];
    for (let i = 0; i < ids.length; i++) {
      try {
        claims.push(...(await this.claim([ids[i]], [attempts[i]])));
      } catch (err) {
        if (!permanentError(err)) return { claims, error: err };
        await this.archivePoison(queue, byStep.get(ids[i]).msg_id, ids[i], `its claim fails: ${err.message} (SQLSTATE ${err.code})`);
      }
    }
    return { claims, error: null };
  }

  // archivePoison archives a step message that can never be processed, with
  // a warning naming the message, its step when known, and why.
  async archivePoison(queue, msgId, stepUuid, reason, fields = {}) {
    const about = { queue, msg_id: msgId, step_uuid: stepUuid, reason, ...fields };
    try {
      await this.pool.query('SELECT pgmq.archive($1::text, $2::bigint)', [queue, msgId]);
    } catch (err) {
      this.log.error('archiving a poison step message failed', { ...about, error: err });
      return;
    }
    this.log.warn('poison step message archived', about);
  }

  // giveBack releases a step claimed through a message that named it in the
  // wrong queue or for a handler this worker lacks, without running it.
  // There is no way back to enqueued with the attempt unclaimed:
  // step_release ends the lease at once, the orchestrator's reaper retries
  // the step through its own namespace's queue with a message naming its
  // own handler, and the attempt the reaper counts is given back
  // (max_attempts grows by one), so the step has as many attempts left as
  // before. The release says the handler did not start, so the step is
  // retried at once even if it is not retryable. No msg_id is passed: step_release would delete that id from the
  // queue of the step's namespace, where it may be another message; the
  // caller archives the message from the queue it came from.
  async giveBack(c, why) {
    const log = this.log.with({
      task_uuid: c.task_uuid, step_uuid: c.step_uuid, step_name: c.step_name, namespace: c.namespace, attempt: c.attempt,
    });
    try {
      const { rows } = await raceAbort(
        this.pool.query('SELECT tasker.step_release($1::uuid, $2::integer, $3::text, $4::bigint, $5::boolean) AS released',
          [c.step_uuid, c.attempt, this.workerId, null, false]),
        AbortSignal.timeout(5000),
      );
      if (rows[0]?.released) log.info('step claimed through a misleading message released unrun; it will be retried', { reason: why });
      else log.info('step claimed through a misleading message not released: it was no longer this worker\'s', { reason: why });
    } catch (err) {
      log.warn('release of a step claimed through a misleading message failed; its lease will expire', { reason: why, error: err });
    }
  }

  // deferUnknown pushes back a message for a handler this worker lacks, so
  // that a worker that has it can take it; logged at most once a minute.
  async deferUnknown(queue, msgId, handler) {
    await this.pool.query('SELECT 1 FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)', [queue, msgId, DEFAULTS.unknownHandlerDeferSeconds])
      .catch((err) => this.log.warn('deferring a message for an unknown handler failed', { queue, msg_id: msgId, error: err }));
    const last = this.unknownLogged.get(handler) || 0;
    if (Date.now() - last > 60_000) {
      this.unknownLogged.set(handler, Date.now());
      this.log.info('no handler registered for step messages of this handler; left for other workers', { queue, handler });
    }
  }

  // execute runs one claimed step: heartbeats while the handler runs, then
  // submits the outcome (or releases the step at a hard shutdown).
  async execute(c, msg) {
    const headers = msg.headers && typeof msg.headers === 'object' && !Array.isArray(msg.headers) ? { ...msg.headers } : {};
    const step = Object.freeze({
      taskUuid: c.task_uuid,
      stepUuid: c.step_uuid,
      name: c.step_name,
      handler: c.handler,
      namespace: c.namespace,
      attempt: c.attempt,
      maxAttempts: c.max_attempts,
      timeoutSeconds: c.timeout_seconds > 0 ? c.timeout_seconds : DEFAULTS.defaultStepTimeoutSeconds,
      correlationId: c.correlation_id,
      traceparent: typeof headers.traceparent === 'string' && headers.traceparent ? headers.traceparent : (c.traceparent || ''),
      context: c.task_context,
      inputs: c.step_inputs,
      dependencyResults: c.dependency_results || {},
    });
    if (!headers.traceparent && step.traceparent) headers.traceparent = step.traceparent;
    const log = this.log.with({
      task_uuid: step.taskUuid, step_uuid: step.stepUuid, step_name: step.name, handler: step.handler,
      namespace: step.namespace, correlation_id: step.correlationId, attempt: step.attempt, msg_id: msg.msg_id,
    });
    log.debug('step claimed');
    if (this.hardAbort.signal.aborted) {
      // A hard stop came before the handler (while the read that claimed
      // the step was finishing): give the step back unrun rather than start
      // a handler only to abort it. Unrun, it is retried at once even if it
      // is not retryable.
      await this.release(step, log, false);
      return;
    }

    const ac = new AbortController();
    const abort = (reason) => { if (!ac.signal.aborted) ac.abort(reason); };
    const timer = setTimeout(
      () => abort(new StepError(`step timed out after ${step.timeoutSeconds}s`, { retryable: true, kind: 'timeout' })),
      Math.min(step.timeoutSeconds * 1000, 2 ** 31 - 1),
    );
    const onHardStop = () => abort(new StepError('worker shutting down', { retryable: true, kind: 'shutdown' }));
    this.hardAbort.signal.addEventListener('abort', onHardStop, { once: true });

    // Heartbeat every lease/3. False means the step is no longer ours
    // (cancelled, resolved, reaped): abort the handler.
    let beat = Promise.resolve();
    let beating = false;
    const heartbeat = setInterval(() => {
      if (beating) return;
      beating = true;
      beat = this.pool.query(
        'SELECT tasker.step_heartbeat($1::uuid, $2::integer, $3::text, $4::integer, $5::bigint) AS ok',
        [step.stepUuid, step.attempt, this.workerId, this.leaseSeconds, msg.msg_id],
      ).then(({ rows }) => {
        if (rows[0]?.ok === false) {
          abort(new StepError('step is no longer this worker\'s (cancelled, resolved, or lease lost)', { retryable: true, kind: 'lost' }));
        }
      }, (err) => {
        // Keep running: the lease covers a short outage; if it expires the
        // step is retried and our late result is refused.
        log.warn('heartbeat failed', { error: err });
      }).finally(() => { beating = false; });
    }, Math.max(1000, Math.floor((this.leaseSeconds * 1000) / 3)));

    const fn = this.handlers.get(step.handler);
    const started = performance.now();
    let result;
    let failure = null;
    try {
      const p = Promise.resolve().then(() => fn(step, { signal: ac.signal, log }));
      result = await raceAbort(p, ac.signal);
    } catch (err) {
      failure = err ?? new Error('handler threw a nullish value');
    }
    const durationMs = Math.round(performance.now() - started);
    clearTimeout(timer);
    clearInterval(heartbeat);
    this.hardAbort.signal.removeEventListener('abort', onHardStop);
    await beat;

    const reason = ac.signal.aborted ? ac.signal.reason : null;
    if (reason?.kind === 'lost') {
      log.warn('step was taken away while running (cancelled, resolved, or lease lost); result discarded', { duration_ms: durationMs });
      return;
    }
    if (failure && this.hardAbort.signal.aborted) {
      // Hard stop: give the step back rather than report a failure we
      // caused. Its handler ran: a step that is not retryable fails.
      await this.release(step, log, true);
      return;
    }
    if (failure instanceof Error && !(failure instanceof StepError)) {
      log.debug('handler threw', { error: failure, stack: failure.stack });
    }
    await this.submit(step, msg.msg_id, headers, result, failure, durationMs, log);
  }

  // release gives a claimed step back at shutdown; handlerStarted says
  // whether its handler was called (the orchestrator retries a step
  // released unrun whatever its retryable setting, and one whose handler
  // started only if it is retryable).
  async release(step, log, handlerStarted) {
    try {
      const { rows } = await raceAbort(
        this.pool.query('SELECT tasker.step_release($1::uuid, $2::integer, $3::text, $4::bigint, $5::boolean) AS released',
          [step.stepUuid, step.attempt, this.workerId, null, handlerStarted]),
        AbortSignal.timeout(5000),
      );
      if (!rows[0]?.released) log.info('step not released: it was no longer this worker\'s');
      else if (handlerStarted) log.info('step released at shutdown; it will be retried if it is retryable');
      else log.info('step released unrun at shutdown; it will be retried');
    } catch (err) {
      log.warn('releasing the step at shutdown failed; its lease will expire', { handler_started: handlerStarted, error: err });
    }
  }

  // submit posts the outcome with tasker.step_submit_result, retrying
  // database errors for the lease and SUBMIT_RETRY_BEYOND_LEASE_MS more:
  // after a database outage the orchestrator leaves expired leases alone
  // for a while (orchestrator.reap_grace, 1 minute by default), so a result
  // that could not be submitted during the outage is still taken; one that
  // comes after its step was retried elsewhere is refused and changes
  // nothing. A hard stop ends the retries (the lease then expires).
  async submit(step, msgId, headers, result, failure, durationMs, log) {
    let success = failure === null;
    let resultJSON = null;
    let errorJSON = null;
    if (success) {
      try {
        resultJSON = JSON.stringify(result === undefined ? null : result);
      } catch (err) {
        success = false;
        failure = permanent(`handler result is not JSON-encodable: ${err.message}`);
      }
    }
    let payload = null;
    if (!success) {
      payload = errorPayload(failure);
      errorJSON = JSON.stringify(payload);
    }
    const deadline = Date.now() + this.leaseSeconds * 1000 + SUBMIT_RETRY_BEYOND_LEASE_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        const { rows } = await this.pool.query(
          `SELECT tasker.step_submit_result($1::uuid, $2::integer, $3::text, $4::boolean,
                  $5::jsonb, $6::jsonb, $7::bigint, $8::jsonb) AS accepted`,
          [step.stepUuid, step.attempt, this.workerId, success, resultJSON, errorJSON, msgId, JSON.stringify(headers)],
        );
        if (!rows[0]?.accepted) {
          log.warn('result refused: the step is no longer this worker\'s (cancelled or retried elsewhere)', { success, duration_ms: durationMs });
        } else if (success) {
          log.info('step completed', { duration_ms: durationMs });
        } else {
          log.info('step failed', { error: payload.message, retryable: payload.retryable, kind: payload.kind, duration_ms: durationMs });
        }
        return;
      } catch (err) {
        if (Date.now() > deadline || this.hardAbort.signal.aborted) {
          log.error('could not submit the step result; the step will be retried after its lease expires', { error: err });
          return;
        }
        if (attempt === 1) log.warn('submitting the step result failed; retrying', { error: err });
        await sleep(Math.min(attempt * 250, 3000), this.hardAbort.signal);
      }
    }
  }
}
