export { createClient, encodeQuery, nextLink, SDK_VERSION } from './client.ts';
export type {
  CallOptions,
  CallRouteName,
  PagedRouteName,
  ClientOptions,
  ShellWeGoClient,
  StreamOptions,
  StreamRouteName,
  UploadOptions,
  UploadRequest,
  UploadRouteName,
} from './client.ts';
export { ShellWeGoApiError, ShellWeGoNetworkError, isApiError, isNetworkError } from './errors.ts';
export { SseParser, decodeSseData, parseSse } from './sse.ts';
export type { SseMessage, SseRawMessage } from './sse.ts';
