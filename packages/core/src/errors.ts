/**
 * The one error type of the platform. Every API failure is rendered as
 * `{ "error": { "code", "message", "details" } }` with `status` as the HTTP status.
 * Codes are stable strings users can search for.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details ?? null;
  }

  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

export const badRequest = (code: string, message: string, details?: unknown) => new ApiError(400, code, message, details);
export const unauthorized = (message = 'missing or invalid credentials') => new ApiError(401, 'unauthorized', message);
export const forbidden = (message: string, details?: unknown) => new ApiError(403, 'forbidden', message, details);
export const notFound = (what: string, id?: string) =>
  new ApiError(404, 'not_found', id ? `${what} '${id}' not found` : `${what} not found`);
export const conflict = (code: string, message: string, details?: unknown) => new ApiError(409, code, message, details);
export const payloadTooLarge = (message: string) => new ApiError(413, 'payload_too_large', message);
export const unprocessable = (code: string, message: string, details?: unknown) => new ApiError(422, code, message, details);
export const unavailable = (code: string, message: string) => new ApiError(503, code, message);

export function isApiError(e: unknown): e is ApiError {
  return e instanceof ApiError;
}
