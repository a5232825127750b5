import { randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { badRequest, newId, notFound } from '@shellwego/core';
import type { WebhookT } from '@shellwego/core';
import type { WebhookDeliveryRow, WebhookRow } from '@shellwego/store';
import type { ControlPlaneContext } from '../context.ts';
import type { Handlers } from '../http.ts';
import { UrlPolicyError, parseRepositoryUrl } from '../webhooks/url-policy.ts';
import { findApp } from './apps.ts';

/**
 * The payload URL to give GitHub/GitLab: this API as the caller reached it (the platform has
 * no configured public URL of its own yet; behind a proxy, the Host the proxy forwards).
 */
function hookUrl(req: FastifyRequest, id: string): string {
  return `${req.protocol}://${req.host}/v1/hooks/${id}`;
}

function toWebhook(row: WebhookRow, url: string, last: WebhookDeliveryRow | undefined): WebhookT {
  return {
    id: row.id, appId: row.appId, provider: row.provider, repository: row.repositoryUrl, branch: row.branch, url,
    createdBy: row.createdBy, createdAt: row.createdAt,
    lastDelivery: last ? { deliveryId: last.deliveryId, event: last.event, status: last.status, message: last.message, buildId: last.buildId, createdAt: last.createdAt } : null,
  };
}

async function view(cp: ControlPlaneContext, req: FastifyRequest, row: WebhookRow): Promise<WebhookT> {
  const [last] = await cp.store.webhooks.listDeliveries(row.organizationId, row.id, 1);
  return toWebhook(row, hookUrl(req, row.id), last);
}

export const webhookHandlers = {
  async listWebhooks({ auth, params, cp, req }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const rows = await cp.store.webhooks.list(app.organizationId, app.id);
    return Promise.all(rows.map((r) => view(cp, req, r)));
  },

  async createWebhook({ auth, params, body, cp, req }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    let repo;
    try {
      repo = parseRepositoryUrl(body.repository, { allowPrivate: cp.settings.fetchAllowPrivate ?? false });
    } catch (err) {
      if (err instanceof UrlPolicyError) throw badRequest('invalid_repository', err.message);
      throw err;
    }
    const id = newId('whk');
    const secret = body.secret ?? randomBytes(32).toString('hex');
    // Sealed under the organization's key with the hook id as associated data (ADR 0005).
    const scope = { id, organizationId: app.organizationId };
    const row = await cp.store.webhooks.create({
      id, organizationId: app.organizationId, appId: app.id, provider: body.provider, repositoryUrl: repo.display,
      repositorySealed: await cp.secrets.seal(scope, repo.url), branch: body.branch, secretSealed: await cp.secrets.seal(scope, secret),
      createdBy: auth.user.email,
    });
    await cp.events.record({
      organizationId: app.organizationId, appId: app.id, type: 'webhook.created',
      message: `${body.provider} webhook ${id} added by ${auth.user.email}: pushes to ${body.branch} of ${repo.display} deploy`,
      data: { hookId: id, provider: body.provider, repository: repo.display, branch: body.branch },
    });
    return { ...toWebhook(row, hookUrl(req, id), undefined), secret };
  },

  async deleteWebhook({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const hook = await cp.store.webhooks.get(app.organizationId, app.id, params.hook);
    if (!hook || !(await cp.store.webhooks.delete(app.organizationId, app.id, hook.id))) throw notFound('webhook', params.hook);
    await cp.events.record({
      organizationId: app.organizationId, appId: app.id, type: 'webhook.deleted',
      message: `${hook.provider} webhook ${hook.id} removed by ${auth.user.email}`, data: { hookId: hook.id },
    });
    return { deleted: true };
  },
} satisfies Partial<Handlers>;
