/**
 * When certificates are renewed and failed attempts retried. Pure functions, so the policy is
 * unit-tested apart from the controller that applies it.
 */

const DAY = 86_400_000;
/** Renew when this much validity is left at the latest (Let's Encrypt's advice for 90-day certificates). */
export const RENEW_BEFORE_EXPIRY_MS = 30 * DAY;
/** Longest wait between two failed attempts. */
export const MAX_RETRY_DELAY_MS = 6 * 3_600_000;

/**
 * When to renew a certificate valid from `notBefore` to `notAfter`: at two thirds of its lifetime
 * or 30 days before it expires, whichever comes first. A certificate shorter-lived than that
 * margin allows (test CAs issue hours-long ones) renews at two thirds.
 */
export function renewAfter(notBefore: Date, notAfter: Date): Date {
  const from = notBefore.getTime();
  const to = notAfter.getTime();
  const twoThirds = from + ((to - from) * 2) / 3;
  const margin = to - RENEW_BEFORE_EXPIRY_MS;
  return new Date(margin > from ? Math.min(twoThirds, margin) : twoThirds);
}

/**
 * Delay before retry number `attempts` (1 = after the first failure): `baseMs` doubled per
 * failure, capped at six hours, with ±10 % jitter so many failures do not retry in lockstep.
 */
export function retryDelay(attempts: number, baseMs: number, random: () => number = Math.random): number {
  const exp = Math.min(MAX_RETRY_DELAY_MS, baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
  return Math.round(exp * (0.9 + 0.2 * random()));
}

/** Whether a certificate needs work now: never issued, retry due, renewal due, or issued by another issuer. */
export function isDue(
  cert: { status: string; issuer: string; renewAfter: string | null; nextAttemptAt: string | null },
  issuer: string,
  now: number,
): boolean {
  const retryDue = cert.nextAttemptAt === null || Date.parse(cert.nextAttemptAt) <= now;
  if (!retryDue) return false;
  if (cert.status !== 'issued') return true;
  if (cert.issuer !== issuer) return true;
  return cert.renewAfter !== null && Date.parse(cert.renewAfter) <= now;
}
