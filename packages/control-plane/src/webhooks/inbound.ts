/**
 * `POST /v1/hooks/:hook`: deliveries from GitHub and GitLab. Not in the /v1 route table: there
 * is no token, the provider's signature over the exact raw bytes authenticates the request, so
 * this route gets the body as a Buffer (bounded) instead of parsed JSON.
 *
 * Order matters: nothing is stored before the signature checks out, and a delivery id is
 * recorded (insert-or-nothing) before any work, so a replay or a concurrent duplicate never
 * starts a second build.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError, badRequest, isApiError, notFound, unauthorized } from '@shellwego/core';
import type { AppRow, BuildRow, WebhookRow } from '@shellwego/store';
import type { ControlPlaneContext } from '../context.ts';
import { startSourceBuild } from '../source-builds.ts';
import { FetchError, fetchCommit } from './fetch.ts';
import { UrlPolicyError, parseRepositoryUrl, redactCredentials } from './url-policy.ts';
import { PayloadError, deliveryId, isDeletion, parseDelivery, verifySignature } from './verify.ts';

/** GitHub caps payloads at 25 MB but push payloads are far smaller; ours is bounded at 1 MiB. */
export const MAX_WEBHOOK_BYTES = 1024 * 1024;
/** How long a delivery waits for its build to start before it is answered anyway (GitHub gives up at 10 s). */
const ANSWER_WITHIN_MS = 8_000;

const HOOK_ID_RE = /^whk_[0-9a-z]{26}$/;

export function registerWebhookRoutes(app: FastifyInstance, cp: ControlPlaneContext): void {
  // Encapsulated: the raw-body parser applies to this route only, not to the JSON API.
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_WEBHOOK_BYTES }, (_req, body, done) => done(null, body));
    scope.post('/v1/hooks/:hook', { bodyLimit: MAX_WEBHOOK_BYTES }, async (req, reply) => {
      const { status, body } = await receive(cp, req);
      return reply.status(status).send(body);
    });
  });
}

type Answer = { status: number; body: Record<string, unknown> };

async function receive(cp: ControlPlaneContext, req: FastifyRequest): Promise<Answer> {
  const hookId = (req.params as { hook: string }).hook;
  // Hook ids carry 80 random bits: knowing one is what lets a sender try a signature at all.
  const hook = HOOK_ID_RE.test(hookId) ? await cp.store.webhooks.byId(hookId) : undefined;
  if (!hook) throw notFound('webhook', hookId);
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const secret = await cp.secrets.open({ id: hook.id, organizationId: hook.organizationId }, hook.secretSealed);
  if (!verifySignature(hook.provider, secret, raw, req.headers)) {
    cp.logger.warn({ hook: hook.id, provider: hook.provider, ip: req.ip }, 'webhook delivery with a bad or missing signature refused');
    throw unauthorized(hook.provider === 'github'
      ? 'X-Hub-Signature-256 is missing or does not match the body signed with this webhook\'s secret'
      : 'X-Gitlab-Token is missing or is not this webhook\'s secret token');
  }
  const id = deliveryId(hook.provider, req.headers);
  if (!id) {
    throw badRequest('missing_delivery_id', hook.provider === 'github'
      ? 'X-GitHub-Delivery is required: deliveries are deduplicated by it'
      : 'X-Gitlab-Event-UUID (or Idempotency-Key) is required: deliveries are deduplicated by it');
  }
  let delivery;
  try {
    delivery = parseDelivery(hook.provider, req.headers, raw);
  } catch (err) {
    if (err instanceof PayloadError) throw badRequest('invalid_payload', err.message);
    throw err;
  }
  const app = await cp.store.apps.get(hook.organizationId, hook.appId);
  if (!app) throw notFound('webhook', hookId);

  let ignored: string | undefined;
  if (delivery.kind === 'ping') ignored = `ping received: the webhook for ${app.name} is set up`;
  else if (delivery.kind === 'other') ignored = `${delivery.event} events are ignored: only pushes deploy`;
  else if (delivery.ref !== `refs/heads/${hook.branch}`) ignored = `push to ${delivery.ref.replace(/^refs\/heads\//, '')} ignored: this webhook deploys ${hook.branch}`;
  else if (isDeletion(delivery.sha)) ignored = `deletion of ${hook.branch} ignored: nothing to deploy`;

  const row = await cp.store.webhooks.recordDelivery({
    hookId: hook.id, deliveryId: id, organizationId: hook.organizationId, appId: hook.appId, event: delivery.event,
    status: ignored ? 'ignored' : 'received', message: ignored ?? `push of ${delivery.kind === 'push' ? delivery.sha.slice(0, 7) : ''} received`,
  });
  if (!row) {
    const first = await cp.store.webhooks.getDelivery(hook.id, id);
    return {
      status: 200,
      body: {
        duplicate: true, deliveryId: id, status: first?.status ?? null, buildId: first?.buildId ?? null,
        message: `delivery ${id} was already received${first ? ` at ${first.createdAt}` : ''}; nothing was done this time`,
      },
    };
  }
  const data = { hookId: hook.id, deliveryId: id, provider: hook.provider, event: delivery.event };
  if (ignored || delivery.kind !== 'push') {
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'webhook.ignored', message: `${hook.provider} webhook: ${ignored}`, data });
    return { status: delivery.kind === 'ping' ? 200 : 202, body: { deliveryId: id, status: 'ignored', buildId: null, message: ignored } };
  }

  const short = delivery.sha.slice(0, 7);
  await cp.events.record({
    organizationId: app.organizationId, appId: app.id, type: 'webhook.received',
    message: `${hook.provider} webhook: push of ${short} to ${hook.branch}${delivery.pusher ? ` by ${delivery.pusher}` : ''}; fetching ${hook.repositoryUrl}`,
    data: { ...data, sha: delivery.sha },
  });
  const work = deploy(cp, hook, app, id, delivery.sha, delivery.pusher);
  const stopWaiting = new AbortController();
  const timeout = sleep(ANSWER_WITHIN_MS, undefined, { signal: stopWaiting.signal }).catch(() => undefined);
  const waited = await Promise.race([work, timeout]);
  stopWaiting.abort();
  if (!waited) {
    return { status: 202, body: { deliveryId: id, status: 'received', buildId: null, message: `fetching ${short}; the build starts when the fetch completes (see the app's events)` } };
  }
  if ('error' in waited) {
    const e = waited.error;
    return { status: e.status, body: { ...e.toJSON(), deliveryId: id, status: 'failed', buildId: null } };
  }
  return { status: 202, body: { deliveryId: id, status: 'building', buildId: waited.build.id, message: `building ${short} of ${hook.branch} for ${app.name}` } };
}

/** Fetches the pushed commit and starts its build; never throws (failures are recorded). */
async function deploy(cp: ControlPlaneContext, hook: WebhookRow, app: AppRow, id: string, sha: string, pusher: string): Promise<{ build: BuildRow } | { error: ApiError }> {
  const allowPrivate = cp.settings.fetchAllowPrivate ?? false;
  try {
    const url = await cp.secrets.open({ id: hook.id, organizationId: hook.organizationId }, hook.repositorySealed);
    const repo = parseRepositoryUrl(url, { allowPrivate });
    const fetched = await fetchCommit({ repo, branch: hook.branch, sha, workRoot: join(cp.settings.dataDir, 'tmp', 'webhooks'), allowPrivate });
    let build: BuildRow;
    try {
      const { size } = await stat(fetched.file);
      build = await startSourceBuild(cp, app, createReadStream(fetched.file), {
        createdBy: pusher ? `${pusher} (${hook.provider})` : `${hook.provider} webhook`, declaredLength: size, via: `${hook.provider} webhook ${id}`,
      });
    } finally {
      await fetched.cleanup();
    }
    await cp.store.webhooks.updateDelivery(hook.id, id, { status: 'building', buildId: build.id, message: `building ${sha.slice(0, 7)}` });
    return { build };
  } catch (err) {
    const error = isApiError(err)
      ? err
      : err instanceof UrlPolicyError
        ? new ApiError(422, 'repository_refused', err.message)
        : new ApiError(502, 'fetch_failed', redactCredentials((err as Error).message));
    if (error.status >= 500 && !(err instanceof FetchError)) cp.logger.error({ err, hook: hook.id }, 'webhook deploy failed');
    const message = `${hook.provider} webhook: could not deploy ${sha.slice(0, 7)}: ${error.message}`;
    await cp.store.webhooks.updateDelivery(hook.id, id, { status: 'failed', message: error.message }).catch(() => {});
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'webhook.failed', message, data: { hookId: hook.id, deliveryId: id, sha } }).catch(() => {});
    cp.logs.platform(app.id, message);
    return { error };
  }
}
