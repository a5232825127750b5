/**
 * The two ways a call fails: the API answered with an error (ShellWeGoApiError, carrying the
 * platform's stable `code`), or it could not be talked to at all (ShellWeGoNetworkError).
 */

/** The API answered `{ "error": { code, message, details } }` (or some non-2xx it did not explain). */
export class ShellWeGoApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  /** The route that failed, when known. */
  readonly route: string | undefined;

  constructor(status: number, code: string, message: string, details?: unknown, route?: string) {
    super(message);
    this.name = 'ShellWeGoApiError';
    this.status = status;
    this.code = code;
    this.details = details ?? null;
    this.route = route;
  }
}

/** Error codes of a connection that never got an HTTP answer because no server was reached. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'EADDRNOTAVAIL']);

/** No HTTP answer: refused, unresolvable host, reset mid-request… */
export class ShellWeGoNetworkError extends Error {
  /** `unreachable` when no server answered at all, `connection_failed` when a connection broke. */
  readonly code: 'unreachable' | 'connection_failed';
  /** The system error code (ECONNREFUSED, ENOTFOUND, ECONNRESET…) when there is one. */
  readonly errno: string | undefined;
  readonly baseUrl: string;

  constructor(baseUrl: string, cause: unknown) {
    const errno = systemCode(cause);
    let detail = errno ?? causeMessage(cause);
    // fetch refuses ports browsers block (6000, 6665-6669…) before connecting.
    if (detail === 'bad port') detail = 'fetch refuses to connect to this port (one browsers block); serve the API on another port';
    const unreachable = errno !== undefined && UNREACHABLE.has(errno);
    super(
      unreachable
        ? `cannot reach the API at ${baseUrl}: ${detail} — is the platform running? (\`npm start\`)`
        : `the connection to the API at ${baseUrl} failed: ${detail}`,
      { cause },
    );
    this.name = 'ShellWeGoNetworkError';
    this.code = unreachable ? 'unreachable' : 'connection_failed';
    this.errno = errno;
    this.baseUrl = baseUrl;
  }
}

/** undici wraps the system error: `TypeError('fetch failed', { cause: Error{ code } })`, sometimes an AggregateError. */
function systemCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown; errors?: unknown[] } | undefined, depth = 0; e && depth < 5; depth++) {
    if (typeof e.code === 'string' && e.code !== 'ERR_INVALID_ARG_TYPE') return e.code;
    if (Array.isArray(e.errors)) {
      for (const inner of e.errors) {
        const c = systemCode(inner);
        if (c) return c;
      }
    }
    e = e.cause as typeof e;
  }
  return undefined;
}

function causeMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  let msg = e?.message ?? String(err);
  // 'fetch failed' says nothing; the cause says what.
  while (e?.cause && typeof (e.cause as { message?: unknown }).message === 'string') {
    e = e.cause as typeof e;
    msg = e!.message!;
  }
  return msg;
}

export function isApiError(err: unknown): err is ShellWeGoApiError {
  return err instanceof ShellWeGoApiError;
}

export function isNetworkError(err: unknown): err is ShellWeGoNetworkError {
  return err instanceof ShellWeGoNetworkError;
}
