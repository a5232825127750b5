import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RETRY_DELAY_MS, isDue, renewAfter, retryDelay } from './schedule.ts';

const DAY = 86_400_000;
const t0 = Date.parse('2026-01-01T00:00:00Z');

test('90-day certificates renew 30 days before expiry (= two thirds)', () => {
  assert.equal(renewAfter(new Date(t0), new Date(t0 + 90 * DAY)).getTime(), t0 + 60 * DAY);
});

test('a year-long certificate renews at two thirds, which comes before the 30-day margin', () => {
  assert.equal(renewAfter(new Date(t0), new Date(t0 + 360 * DAY)).getTime(), t0 + 240 * DAY);
});

test('60-day certificates renew when 30 days are left; hours-long ones at two thirds', () => {
  assert.equal(renewAfter(new Date(t0), new Date(t0 + 60 * DAY)).getTime(), t0 + 30 * DAY);
  assert.equal(renewAfter(new Date(t0), new Date(t0 + 6 * 3_600_000)).getTime(), t0 + 4 * 3_600_000);
});

test('retry delays double per failure, with jitter, capped at six hours', () => {
  const mid = () => 0.5;
  assert.equal(retryDelay(1, 30_000, mid), 30_000);
  assert.equal(retryDelay(2, 30_000, mid), 60_000);
  assert.equal(retryDelay(5, 30_000, mid), 480_000);
  assert.equal(retryDelay(40, 30_000, mid), MAX_RETRY_DELAY_MS);
  assert.equal(retryDelay(1, 30_000, () => 0), 27_000);
  assert.equal(retryDelay(1, 30_000, () => 1), 33_000);
});

test('due: never issued, retry time reached, renewal time reached, or another issuer', () => {
  const now = t0;
  const past = new Date(now - 1000).toISOString();
  const future = new Date(now + 1000).toISOString();
  const base = { status: 'issued', issuer: 'acme', renewAfter: future, nextAttemptAt: null };
  assert.equal(isDue(base, 'acme', now), false);
  assert.equal(isDue({ ...base, renewAfter: past }, 'acme', now), true);
  assert.equal(isDue({ ...base, renewAfter: past, nextAttemptAt: future }, 'acme', now), false, 'a failed renewal waits for its retry');
  assert.equal(isDue({ ...base, issuer: 'local-ca' }, 'acme', now), true, 'switching modes reissues');
  assert.equal(isDue({ ...base, status: 'pending', renewAfter: null }, 'acme', now), true);
  assert.equal(isDue({ ...base, status: 'failed', nextAttemptAt: future }, 'acme', now), false);
  assert.equal(isDue({ ...base, status: 'failed', nextAttemptAt: past }, 'acme', now), true);
});
