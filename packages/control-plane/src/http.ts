import Fastify from 'fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { ApiError, buildOpenApi, isApiError, routes } from '@shellwego/core';
import type { RouteDef, RouteName, RouteResponse, Routes } from '@shellwego/core';
import { authenticate, authorize } from './auth.ts';
import type { AuthContext } from './auth.ts';
import type { ControlPlaneContext } from './context.ts';
import { metrics } from './metrics.ts';
import { registerGitRoutes } from './git/http.ts';
import { registerRunRoutes } from './run-ws.ts';
import { registerWebhookRoutes } from './webhooks/inbound.ts';

type Get<T, K extends string> = T extends Record<K, infer V> ? V : undefined;
type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface HandlerContext<N extends RouteName> {
  params: Out<Get<Routes[N], 'params'>>;
  query: Out<Get<Routes[N], 'query'>>;
  body: Out<Get<Routes[N], 'body'>>;
  /** Set on every route whose auth is 'token'. */
  auth: AuthContext;
  req: FastifyRequest;
  reply: FastifyReply;
  cp: ControlPlaneContext;
}

/** Returned by handlers that took over the response (SSE streams). */
export const STREAMED = Symbol('streamed');

export type Handler<N extends RouteName> = (ctx: HandlerContext<N>) => Promise<RouteResponse<N> | typeof STREAMED>;
/** One handler per route of the table: a new route without a handler does not compile. */
export type Handlers = { [N in RouteName]: Handler<N> };

const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'payload_too_large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_content_length'],
};

function toApiError(err: unknown): ApiError {
  if (isApiError(err)) return err;
  const e = err as { code?: string; statusCode?: number; message?: string; name?: string };
  const mapped = e.code ? FASTIFY_CODES[e.code] : undefined;
  if (mapped) return new ApiError(mapped[0], mapped[1], e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ? `request body is not valid JSON: ${e.message}` : String(e.message));
  if (e.name === 'SyntaxError' && e.statusCode === 400) return new ApiError(400, 'invalid_json', `request body is not valid JSON: ${e.message}`);
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return new ApiError(e.statusCode, 'bad_request', String(e.message));
  if ((e as { code?: string }).code === 'SQLITE_BUSY') return new ApiError(503, 'store_busy', 'the database is busy; retry');
  return new ApiError(500, 'internal', 'internal error');
}

function validationError(where: string, error: z.ZodError): ApiError {
  const details = error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  const first = details[0];
  return new ApiError(400, 'validation_failed', `invalid ${where}: ${first.path.split('.').slice(1).join('.') || where}: ${first.message}`, details);
}

function parse<S extends z.ZodType | undefined>(schema: S, value: unknown, where: string): unknown {
  if (!schema) return undefined;
  const r = schema.safeParse(value ?? (where === 'body' || where === 'query' ? {} : value));
  if (!r.success) throw validationError(where, r.error);
  return r.data;
}

export async function buildHttpServer(cp: ControlPlaneContext, handlers: Handlers, https?: { cert: string; key: string }): Promise<FastifyInstance> {
  const fastifyOptions = { logger: false, bodyLimit: 1024 * 1024, requestIdHeader: 'x-request-id', return503OnClosing: true, forceCloseConnections: true } as const;
  // https (split mode's API): the same routes; the raw server is then a node:https Server.
  const app = https ? Fastify({ ...fastifyOptions, https }) as unknown as FastifyInstance : Fastify(fastifyOptions);
  const openapi = buildOpenApi(cp.settings.version);

  // Source uploads are streamed straight to disk with their own size limit (see builds.ts).
  app.addContentTypeParser(['application/gzip', 'application/x-gzip', 'application/octet-stream'], (_req, payload, done) => done(null, payload));

  app.setErrorHandler((err, req, reply) => {
    const apiErr = toApiError(err);
    if (apiErr.status >= 500) cp.logger.error({ err, url: req.url, reqId: req.id }, 'request failed');
    void reply.status(apiErr.status).type('application/json').send(apiErr.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send(new ApiError(404, 'not_found', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON());
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.httpRequests.inc({ method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
    if (req.url !== '/v1/health') cp.logger.debug({ reqId: req.id, method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request');
  });

  app.get('/v1/openapi.json', async () => openapi);
  app.get('/metrics', async (_req, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  // git smart-HTTP (`/git/<app>.git/...`): git's protocol, not JSON, so not in the route table.
  registerGitRoutes(app, cp);
  // ---------- one-off processes ----------
  // `GET /v1/apps/:app/run` as a WebSocket (interactive `shellwego run`): a stream, not in the table.
  registerRunRoutes(app, cp);
  // GitHub/GitLab deliveries: authenticated by their signature over the raw body, so not in the table.
  registerWebhookRoutes(app, cp);

  for (const [name, def] of Object.entries(routes) as [RouteName, RouteDef][]) {
    const handler = handlers[name] as Handler<RouteName>;
    app.route({
      method: def.method,
      url: def.path,
      handler: async (req, reply) => {
        let auth = undefined as unknown as AuthContext;
        if (def.auth === 'token') {
          auth = await authenticate(cp.store, req.headers.authorization);
          authorize(def, auth);
        }
        if (def.upload && typeof (req.body as { pipe?: unknown } | undefined)?.pipe !== 'function') throw new ApiError(415, 'unsupported_media_type', `send the tarball with Content-Type: ${def.upload.contentType}`);
        const params = parse(def.params, req.params, 'path');
        const query = parse(def.query, req.query, 'query');
        const body = def.upload ? req.body : parse(def.body, req.body, 'body');
        if (!def.body && !def.upload && req.body !== undefined && req.body !== null && !(typeof req.body === 'object' && Object.keys(req.body as object).length === 0)) {
          throw new ApiError(400, 'unexpected_body', `${def.method} ${def.path} takes no request body`);
        }
        const result = await handler({ params, query, body, auth, req, reply, cp } as never);
        if (result === STREAMED) return reply;
        void reply.status(def.status ?? 200);
        return result;
      },
    });
  }
  return app;
}

/** Opens a server-sent-events stream; returns a writer. Keep-alive comments every 15 s. */
export function openSse(req: FastifyRequest, reply: FastifyReply, onClose: () => void) {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(': connected\n\n');
  const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(ping);
    onClose();
  };
  req.raw.on('close', close);
  res.on('close', close);
  return {
    send(event: string, data: unknown) {
      if (closed) return;
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    end() {
      close();
      res.end();
    },
    get closed() {
      return closed;
    },
  };
}
