// Unit tests of the demo handlers and the worker's helpers: `npm test` (or
// `node --test`). The protocol itself is tested end to end from Go
// (internal/nodeworker), against the real orchestrator.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as demo from '../src/handlers.js';
import {
  StepError, errorPayload, permanent, workerQueue, notifyChannel, quoteIdent, stepMessageProblem, permanentError,
  Worker, sleep,
} from '../src/tasker.js';
import { parseDuration } from '../src/config.js';
import { Logger } from '../src/log.js';

const TASK = '0b5a2d4e-6f1c-4c1e-9d57-1f6b0c2a9e11';

function step(fields) {
  return { taskUuid: TASK, name: 'x', attempt: 1, context: {}, dependencyResults: {}, ...fields };
}

const cart = {
  customer_id: 'cust-0001',
  currency: 'USD',
  items: [
    { sku: 'BOOK-1', quantity: 2, unit_price_cents: 1299 },
    { sku: 'PEN-1', quantity: 2, unit_price_cents: 250 },
  ],
};

test('shortHash is the first 6 bytes of sha256 in hex', () => {
  // printf '%s' abc | sha256sum
  assert.equal(demo.shortHash('abc'), 'ba7816bf8f01');
});

test('validate_cart totals the cart and defaults the currency', () => {
  assert.deepEqual(demo.validateCart(step({ context: cart })), { total_cents: 3098, item_count: 4, currency: 'USD' });
  const noCurrency = { ...cart, currency: undefined };
  assert.equal(demo.validateCart(step({ context: noCurrency })).currency, 'USD');
});

test('validate_cart refuses more than 1000 of an item, permanently', () => {
  const big = { ...cart, items: [{ sku: 'BULK', quantity: 1001, unit_price_cents: 1 }] };
  assert.throws(() => demo.validateCart(step({ context: big })), (err) => {
    assert.ok(err instanceof StepError);
    assert.equal(err.retryable, false);
    assert.equal(err.message, 'item BULK: quantity 1001 exceeds the per-order limit of 1000');
    return true;
  });
});

test('a context of the wrong shape is a permanent failure', () => {
  assert.throws(() => demo.validateCart(step({ context: { items: [{ sku: 'A', quantity: 1.5 }] } })), (err) => err.retryable === false);
  assert.throws(() => demo.validateCart(step({ context: [] })), (err) => err.retryable === false);
});

test('process_payment: blocked customers are declined permanently', () => {
  const s = step({ name: 'process_payment', context: { ...cart, customer_id: 'blocked-7' }, dependencyResults: { validate_cart: { total_cents: 10, currency: 'USD' } } });
  assert.throws(() => demo.processPayment(s), (err) => {
    assert.deepEqual(errorPayload(err), { message: 'card declined: the payment method is blocked', retryable: false, kind: 'permanent' });
    return true;
  });
});

test('process_payment: simulated failures are retryable, then it succeeds', () => {
  const context = { ...cart, simulate: { payment_failures: 2 } };
  const deps = { validate_cart: { total_cents: 3098, item_count: 4, currency: 'USD' } };
  for (const attempt of [1, 2]) {
    assert.throws(() => demo.processPayment(step({ attempt, context, dependencyResults: deps })), (err) => {
      assert.deepEqual(errorPayload(err), { message: `payment gateway timed out (simulated failure ${attempt} of 2)`, retryable: true, kind: 'error' });
      return true;
    });
  }
  assert.deepEqual(demo.processPayment(step({ attempt: 3, context, dependencyResults: deps })), {
    payment_id: 'pay_' + demo.shortHash(TASK), amount_cents: 3098, currency: 'USD',
  });
});

test('a missing dependency is a permanent failure', () => {
  assert.throws(() => demo.processPayment(step({ name: 'process_payment', context: cart })), (err) => {
    assert.equal(err.message, 'step process_payment has no dependency named "validate_cart"');
    assert.equal(err.retryable, false);
    return true;
  });
});

test('update_inventory, create_order and send_confirmation chain their results', () => {
  const inv = demo.updateInventory(step({ context: cart }));
  assert.deepEqual(inv, {
    reservation_id: 'res_' + demo.shortHash(TASK + 'inv'),
    reserved: [{ sku: 'BOOK-1', quantity: 2 }, { sku: 'PEN-1', quantity: 2 }],
  });
  const ord = demo.createOrder(step({ dependencyResults: { process_payment: { payment_id: 'pay_1' }, update_inventory: inv } }));
  assert.deepEqual(ord, { order_id: 'ord_' + demo.shortHash(TASK + 'order'), payment_id: 'pay_1', reservation_id: inv.reservation_id });
  assert.deepEqual(demo.sendConfirmation(step({ context: cart, dependencyResults: { create_order: ord } })), {
    sent_to: 'cust-0001', order_id: ord.order_id, channel: 'email',
  });
});

test('withDelay is abortable', async () => {
  const ac = new AbortController();
  const h = demo.withDelay(60_000, () => 'never');
  const p = h(step({}), { signal: ac.signal });
  ac.abort(new Error('stop'));
  await assert.rejects(p);
});

test('errorPayload classifies thrown values', () => {
  assert.deepEqual(errorPayload(new Error('boom')), { message: 'boom', retryable: true, kind: 'error' });
  assert.deepEqual(errorPayload(permanent('no')), { message: 'no', retryable: false, kind: 'permanent' });
  assert.deepEqual(errorPayload(new StepError('slow', { kind: 'timeout' })), { message: 'slow', retryable: true, kind: 'timeout' });
  assert.deepEqual(errorPayload('text'), { message: 'text', retryable: true, kind: 'error' });
});

test('queue and channel names follow the engine', () => {
  assert.equal(workerQueue('ecommerce'), 'worker_ecommerce_queue');
  assert.equal(notifyChannel('worker_ecommerce_queue'), 'pgmq.q_worker_ecommerce_queue.INSERT');
  assert.equal(quoteIdent('pgmq.q_x.INSERT'), '"pgmq.q_x.INSERT"');
  assert.throws(() => workerQueue('Ecommerce'));
  assert.throws(() => workerQueue('a-b'));
});

test('stepMessageProblem says why a message can never be claimed', () => {
  const step = (fields) => ({ step_uuid: TASK, handler: 'ecommerce.validate_cart', ...fields });
  assert.equal(stepMessageProblem(step({ attempt: 1 })), '');
  assert.equal(stepMessageProblem(step({ attempt: 2147483647 })), '');
  assert.equal(stepMessageProblem(step({ step_uuid: TASK.toUpperCase(), attempt: 3 })), '');
  for (const [body, why] of [
    [null, 'not a step message: the body is not a JSON object'],
    [[1], 'not a step message: the body is not a JSON object'],
    ['text', 'not a step message: the body is not a JSON object'],
    [{ hello: 'world' }, 'no step_uuid'],
    [step({ step_uuid: '00000000-0000-0000-0000-000000000000', attempt: 1 }), 'no step_uuid'],
    [step({ step_uuid: 'x', attempt: 1 }), 'not a step message: step_uuid "x" is not a uuid'],
    [step({}), 'no attempt (attempts count from 1)'],
    [step({ attempt: 0 }), 'no attempt (attempts count from 1)'],
    [step({ attempt: 1.5 }), 'not a step message: attempt 1.5 is not an integer'],
    [step({ attempt: '1' }), 'not a step message: attempt "1" is not an integer'],
    // Postgres integers: a larger attempt would make the whole batch's claim
    // raise (22003), or be wrapped by a driver into another attempt.
    [step({ attempt: -1 }), 'attempt -1 is out of range (1 to 2147483647)'],
    [step({ attempt: 2147483648 }), 'attempt 2147483648 is out of range (1 to 2147483647)'],
    [step({ attempt: 4294967297 }), 'attempt 4294967297 is out of range (1 to 2147483647)'],
  ]) {
    assert.equal(stepMessageProblem(body), why, JSON.stringify(body));
  }
});

test('permanentError follows the Go SDK: SQLSTATE classes 0A, 22, 23, 42 and P0', () => {
  for (const code of ['0A000', '22003', '23505', '42501', '42883', 'P0001']) {
    assert.equal(permanentError(Object.assign(new Error('x'), { code })), true, code);
  }
  // Transient: serialization failure, deadlock, query cancelled (statement
  // timeout), admin shutdown, connection errors, Node's socket errors.
  for (const code of ['40001', '40P01', '57014', '57P01', '08006', '53300', 'ECONNRESET', 'EPIPE', undefined]) {
    assert.equal(permanentError(Object.assign(new Error('x'), { code })), false, String(code));
  }
  assert.equal(permanentError(undefined), false);
});

test('parseDuration reads Go durations', () => {
  assert.equal(parseDuration('0'), 0);
  assert.equal(parseDuration('50ms'), 50);
  assert.equal(parseDuration('2s'), 2000);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.throws(() => parseDuration('5'));
  assert.throws(() => parseDuration('5 s'));
});

test('the logger writes JSON lines with its fields', () => {
  const out = [];
  const log = new Logger({ level: 'info', stream: { write: (s) => out.push(s) } }).with({ worker_id: 'w1' });
  log.debug('hidden');
  log.info('step completed', { task_uuid: TASK, error: new Error('x') });
  assert.equal(out.length, 1);
  const line = JSON.parse(out[0]);
  assert.equal(line.level, 'INFO');
  assert.equal(line.msg, 'step completed');
  assert.equal(line.worker_id, 'w1');
  assert.equal(line.task_uuid, TASK);
  assert.equal(line.error, 'x');
});

test('a worker running more than ten steps raises no MaxListenersExceededWarning', async () => {
  const concurrency = 16;
  const w = new Worker({ connectionString: 'postgres://127.0.0.1:1/unused', namespaces: ['ecommerce'], concurrency });
  const warnings = [];
  const onWarning = (warning) => warnings.push(warning.name);
  process.on('warning', onWarning);
  try {
    // Each running step's handler, heartbeat and a submission retry's
    // sleep listen for the hard stop at once.
    const listeners = Array.from({ length: 3 * concurrency }, () => () => {});
    for (const l of listeners) w.hardAbort.signal.addEventListener('abort', l);
    const sleeping = Array.from({ length: concurrency }, () => sleep(20, w.hardAbort.signal));
    await Promise.all(sleeping);
    await new Promise((resolve) => setImmediate(resolve));
    for (const l of listeners) w.hardAbort.signal.removeEventListener('abort', l);
  } finally {
    process.off('warning', onWarning);
    await w.pool.end();
  }
  assert.deepEqual(warnings.filter((name) => name === 'MaxListenersExceededWarning'), []);
});
