// The reconnection schedule of livepanel.js: pure functions, no browser needed.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DEFAULT_OPTIONS,
  backoffCeiling,
  backoffDelay,
  backoffSchedule,
  planReconnect,
  shouldGiveUp,
} from "../../src/livepanel/static/livepanel.js";

test("the ceiling doubles from initialDelay and is capped at maxDelay", () => {
  assert.deepEqual(backoffSchedule(8, { initialDelay: 500, maxDelay: 30000 }), [
    500, 1000, 2000, 4000, 8000, 16000, 30000, 30000,
  ]);
});

test("the defaults are 500 ms doubling to a 30 s cap, 10 retries", () => {
  assert.equal(DEFAULT_OPTIONS.initialDelay, 500);
  assert.equal(DEFAULT_OPTIONS.maxDelay, 30000);
  assert.equal(DEFAULT_OPTIONS.retries, 10);
  assert.equal(backoffCeiling(0), 500);
  assert.equal(backoffCeiling(100), 30000);
});

test("a huge attempt number never overflows the cap", () => {
  assert.equal(backoffCeiling(5000, { maxDelay: 1234 }), 1234);
  assert.equal(backoffCeiling(Number.MAX_SAFE_INTEGER), DEFAULT_OPTIONS.maxDelay);
});

test("full jitter: every delay lies in [0, ceiling)", () => {
  for (let attempt = 0; attempt < 12; attempt += 1) {
    const ceiling = backoffCeiling(attempt);
    for (let i = 0; i < 200; i += 1) {
      const delay = backoffDelay(attempt, undefined, Math.random);
      assert.ok(delay >= 0 && delay < ceiling, `attempt ${attempt}: ${delay} not in [0, ${ceiling})`);
      assert.ok(Number.isInteger(delay));
    }
  }
});

test("jitter bounds: random 0 gives 0, random just under 1 stays under the ceiling", () => {
  assert.equal(backoffDelay(3, undefined, () => 0), 0);
  assert.equal(backoffDelay(3, undefined, () => 0.999999), 3999);
  assert.equal(backoffDelay(3, undefined, () => 0.5), 2000);
});

test("jitter spreads clients out instead of bunching them at the ceiling", () => {
  const delays = Array.from({ length: 1000 }, () => backoffDelay(4));
  const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
  assert.ok(mean > 8000 * 0.4 && mean < 8000 * 0.6, `mean ${mean} is not near half the ceiling`);
  assert.ok(new Set(delays).size > 500, "delays repeat too often for a uniform spread");
});

test("gives up after `retries` attempts, not before", () => {
  for (let attempts = 0; attempts < 10; attempts += 1) assert.equal(shouldGiveUp(attempts), false);
  assert.equal(shouldGiveUp(10), true);
  assert.equal(shouldGiveUp(11), true);
  assert.equal(shouldGiveUp(2, 3), false);
  assert.equal(shouldGiveUp(3, 3), true);
});

test("retries: 0 never retries, Infinity never gives up", () => {
  assert.equal(shouldGiveUp(0, 0), true);
  assert.equal(shouldGiveUp(1e9, Number.POSITIVE_INFINITY), false);
});

test("planReconnect is a jittered delay while retries remain, then null", () => {
  const options = { retries: 3, initialDelay: 100, maxDelay: 1000 };
  assert.deepEqual(
    [0, 1, 2, 3].map((n) => planReconnect(n, options, () => 0.5)),
    [50, 100, 200, null],
  );
});
