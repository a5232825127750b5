/**
 * `GET /v1/apps/:app/run` upgraded to a WebSocket: an interactive one-off process (oneoff.ts).
 * Outside the route table (a stream, not JSON), but with the same rules as a REST route: the token
 * in the Authorization header, developer role + `apps:deploy` scope, the app looked up in the
 * token's organization (another org's app: 404), bad input 400 — all answered as plain HTTP
 * JSON errors before upgrading.
 *
 * Query: command (shell line, required), tty (1|0, default 1), cols, rows, env (repeatable K=V),
 * release (id; default the current release).
 * Frames: binary = terminal bytes (client → stdin; server → stdout). Text = JSON:
 *   client → server: {"type":"resize","cols","rows"} | {"type":"signal","signal"} | {"type":"eof"}
 *   server → client: {"type":"stderr","data":base64} (no TTY only) | {"type":"exit","exitCode","signal"}
 *                    | {"type":"error","message"}; the server closes after exit/error.
 * Closing the socket kills the process.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { ApiError, badRequest, isApiError, notFound } from '@shellwego/core';
import type { RouteDef } from '@shellwego/core';
import { authenticate, authorize } from './auth.ts';
import type { ControlPlaneContext } from './context.ts';
import { startOneOff, validateOneOffRequest } from './oneoff.ts';
import type { OneOffSession } from './oneoff.ts';

export const RUN_PATH_RE = /^\/v1\/apps\/([^/?#]+)\/run$/;
/** Same access as starting a build: running code in the app's environment is a deploy-level act. */
const ACCESS: RouteDef = { method: 'GET', path: '/v1/apps/:app/run', summary: 'run a one-off process', auth: 'token', scope: 'apps:deploy', role: 'developer', response: undefined as never };
const PING_MS = 20_000;

export interface RunQuery {
  command: string;
  tty: boolean;
  cols?: number;
  rows?: number;
  env: Record<string, string>;
  release?: string;
}

/** Parses and checks the query of a run request; throws a 400 naming the problem. */
export function parseRunQuery(search: URLSearchParams): RunQuery {
  const command = search.get('command') ?? '';
  const ttyRaw = search.get('tty') ?? '1';
  if (!['1', '0', 'true', 'false'].includes(ttyRaw)) throw badRequest('invalid_tty', 'tty must be 1 or 0');
  const num = (name: string): number | undefined => {
    const v = search.get(name);
    if (v === null) return undefined;
    if (!/^\d{1,4}$/.test(v)) throw badRequest('invalid_terminal_size', `${name} must be an integer between 1 and 1000`);
    return Number(v);
  };
  const env: Record<string, string> = {};
  for (const kv of search.getAll('env')) {
    const i = kv.indexOf('=');
    if (i <= 0) throw badRequest('invalid_env', `env must be KEY=VALUE, got "${kv.split('=')[0]}"`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const q: RunQuery = { command, tty: ttyRaw === '1' || ttyRaw === 'true', cols: num('cols'), rows: num('rows'), env, release: search.get('release') ?? undefined };
  validateOneOffRequest(q);
  return q;
}

function reject(socket: Duplex, err: ApiError): void {
  const body = JSON.stringify(err.toJSON());
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 503: 'Service Unavailable' }[err.status] ?? 'Error';
  socket.end(
    `HTTP/1.1 ${err.status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export function registerRunRoutes(app: FastifyInstance, cp: ControlPlaneContext): void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const m = RUN_PATH_RE.exec(url.pathname);
    if (!m) return; // someone else's upgrade
    socket.on('error', () => {});
    void (async () => {
      let session: OneOffSession;
      let by: string;
      try {
        const auth = await authenticate(cp.store, req.headers.authorization);
        authorize(ACCESS, auth);
        const name = decodeURIComponent(m[1]);
        const row = await cp.store.apps.get(auth.organization.id, name);
        if (!row) throw notFound('app', name);
        const q = parseRunQuery(url.searchParams);
        by = auth.user.email;
        session = await startOneOff(cp, {
          organizationId: auth.organization.id, appId: row.id, releaseId: q.release, command: q.command, tty: q.tty, cols: q.cols, rows: q.rows, env: q.env, by,
        });
      } catch (err) {
        if (isApiError(err)) return reject(socket, err);
        cp.logger.error({ err }, 'run request failed');
        return reject(socket, new ApiError(500, 'internal', 'internal error'));
      }
      if (socket.destroyed) {
        session.kill();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => serve(ws, session));
    })();
  });
  app.addHook('onClose', async () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
}

function serve(ws: WebSocket, session: OneOffSession): void {
  let alive = true;
  const ping = setInterval(() => {
    // A client that vanished without a close frame stops answering pings: treat it as gone.
    if (!alive) return ws.terminate();
    alive = false;
    ws.ping();
  }, PING_MS);
  ping.unref();
  ws.on('pong', () => (alive = true));
  session.onOutput((chunk, stream) => {
    if (ws.readyState !== ws.OPEN) return;
    if (stream === 'stdout') ws.send(chunk, { binary: true });
    else ws.send(JSON.stringify({ type: 'stderr', data: chunk.toString('base64') }));
  });
  session.onExit((e) => {
    clearInterval(ping);
    if (ws.readyState !== ws.OPEN) return;
    ws.send(JSON.stringify(e.error ? { type: 'error', message: e.error } : { type: 'exit', exitCode: e.exitCode, signal: e.signal }));
    ws.close(1000, 'exited');
  });
  ws.on('message', (data, isBinary) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) return session.write(buf);
    let msg: { type?: unknown; cols?: unknown; rows?: unknown; signal?: unknown };
    try {
      msg = JSON.parse(buf.toString('utf8'));
    } catch {
      return;
    }
    if (msg?.type === 'resize') session.resize(Number(msg.cols), Number(msg.rows));
    else if (msg?.type === 'signal' && typeof msg.signal === 'string') session.signal(msg.signal);
    else if (msg?.type === 'eof') session.eof();
  });
  ws.on('close', () => {
    clearInterval(ping);
    session.kill();
  });
  ws.on('error', () => {});
}
