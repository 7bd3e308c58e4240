// The demo workflow's handlers (config/templates/order_fulfillment.yaml), a
// port of internal/demo/demo.go: same results, same failures. A step's result
// is a plain JSON value; throw permanent(...) for a failure retrying cannot
// fix, anything else is retried while the step has attempts left.

import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';

import { permanent } from './tasker.js';

/** Namespace of the demo workflow. */
export const NAMESPACE = 'ecommerce';

/** shortHash is the first 6 bytes of SHA-256(s) in hex, as in demo.go. */
export function shortHash(s) {
  return createHash('sha256').update(s).digest('hex').slice(0, 12);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Field readers with Go's decoding rules: a missing or null field is the zero
// value; a field of the wrong type is an error (a permanent one: retrying
// cannot change the task context).
function str(obj, key, where) {
  const v = obj[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw permanent(`${where}: ${key} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function int(obj, key, where) {
  const v = obj[key];
  if (v === undefined || v === null) return 0;
  if (!Number.isInteger(v)) throw permanent(`${where}: ${key} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function object(v, where) {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw permanent(`${where}: want a JSON object, got ${JSON.stringify(v)}`);
  return v;
}

/** order decodes the task context (demo.Order). */
export function order(step) {
  const where = 'decode task context';
  const ctx = object(step.context, where);
  const rawItems = ctx.items ?? [];
  if (!Array.isArray(rawItems)) throw permanent(`${where}: items must be an array`);
  const items = rawItems.map((it, i) => {
    const item = object(it, `${where}: items[${i}]`);
    return {
      sku: str(item, 'sku', `${where}: items[${i}]`),
      quantity: int(item, 'quantity', `${where}: items[${i}]`),
      unitPriceCents: int(item, 'unit_price_cents', `${where}: items[${i}]`),
    };
  });
  const simulate = object(ctx.simulate, `${where}: simulate`);
  return {
    customerId: str(ctx, 'customer_id', where),
    items,
    currency: str(ctx, 'currency', where),
    simulate: { paymentFailures: int(simulate, 'payment_failures', `${where}: simulate`) },
  };
}

/** dependency returns the result of parent step `name` (an object; null reads as {}). */
export function dependency(step, name) {
  const deps = step.dependencyResults || {};
  if (!Object.prototype.hasOwnProperty.call(deps, name)) {
    throw permanent(`step ${step.name} has no dependency named ${JSON.stringify(name)}`);
  }
  return object(deps[name], `decode result of ${name}`);
}

export function validateCart(step) {
  const o = order(step);
  let total = 0;
  let count = 0;
  for (const it of o.items) {
    if (it.quantity > 1000) {
      throw permanent(`item ${it.sku}: quantity ${it.quantity} exceeds the per-order limit of 1000`);
    }
    total += it.quantity * it.unitPriceCents;
    count += it.quantity;
  }
  return { total_cents: total, item_count: count, currency: o.currency || 'USD' };
}

export function processPayment(step) {
  const o = order(step);
  const dep = dependency(step, 'validate_cart');
  const cart = {
    totalCents: int(dep, 'total_cents', 'decode result of validate_cart'),
    currency: str(dep, 'currency', 'decode result of validate_cart'),
  };
  if (o.customerId.startsWith('blocked')) {
    throw permanent('card declined: the payment method is blocked');
  }
  if (step.attempt <= o.simulate.paymentFailures) {
    // A plain Error: retryable, like a plain Go error.
    throw new Error(`payment gateway timed out (simulated failure ${step.attempt} of ${o.simulate.paymentFailures})`);
  }
  return { payment_id: 'pay_' + shortHash(step.taskUuid), amount_cents: cart.totalCents, currency: cart.currency };
}

export function updateInventory(step) {
  const o = order(step);
  return {
    reservation_id: 'res_' + shortHash(step.taskUuid + 'inv'),
    reserved: o.items.map((it) => ({ sku: it.sku, quantity: it.quantity })),
  };
}

export function createOrder(step) {
  const pay = dependency(step, 'process_payment');
  const inv = dependency(step, 'update_inventory');
  return {
    order_id: 'ord_' + shortHash(step.taskUuid + 'order'),
    payment_id: str(pay, 'payment_id', 'decode result of process_payment'),
    reservation_id: str(inv, 'reservation_id', 'decode result of update_inventory'),
  };
}

export function sendConfirmation(step) {
  const o = order(step);
  const ord = dependency(step, 'create_order');
  return { sent_to: o.customerId, order_id: str(ord, 'order_id', 'decode result of create_order'), channel: 'email' };
}

/** withDelay simulates work before h (abortable, like demo.go's withDelay). */
export function withDelay(ms, h) {
  if (!(ms > 0)) return h;
  return async (step, ctx) => {
    await delay(ms, undefined, { signal: ctx.signal });
    return h(step, ctx);
  };
}

/** handlers maps each demo handler name to its function; delayMs simulates work in each. */
export function handlers(delayMs = 0) {
  return {
    'ecommerce.validate_cart': withDelay(delayMs, validateCart),
    'ecommerce.process_payment': withDelay(delayMs, processPayment),
    'ecommerce.update_inventory': withDelay(delayMs, updateInventory),
    'ecommerce.create_order': withDelay(delayMs, createOrder),
    'ecommerce.send_confirmation': withDelay(delayMs, sendConfirmation),
  };
}
