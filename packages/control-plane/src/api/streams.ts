import { notFound, subjects } from '@shellwego/core';
import type { EventT, LogLineT } from '@shellwego/core';
import type { Handlers } from '../http.ts';
import { STREAMED, openSse } from '../http.ts';
import { toEvent } from '../events.ts';
import { findApp } from './apps.ts';
import { toBuild } from './convert.ts';

export const streamHandlers = {
  async listBuilds({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const builds = await cp.store.builds.list(app.organizationId, app.id, 100);
    const versions = new Map((await cp.store.releases.list(app.organizationId, app.id)).map((r) => [r.id, r.version]));
    return builds.map((b) => toBuild(b, b.releaseId ? versions.get(b.releaseId) ?? null : null));
  },

  async getBuild({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const b = await cp.store.builds.get(app.organizationId, app.id, params.build);
    if (!b) throw notFound('build', params.build);
    const rel = b.releaseId ? await cp.store.releases.byId(app.organizationId, b.releaseId) : undefined;
    return toBuild(b, rel?.version ?? null);
  },

  /** Replays the build's output, follows it live, and ends with the finished build. */
  async buildLog({ auth, params, req, reply, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const build = await cp.store.builds.get(app.organizationId, app.id, params.build);
    if (!build) throw notFound('build', params.build);
    let unsubscribe = () => {};
    const sse = openSse(req, reply, () => unsubscribe());
    const finish = async () => {
      const b = await cp.store.builds.get(app.organizationId, app.id, build.id);
      const rel = b?.releaseId ? await cp.store.releases.byId(app.organizationId, b.releaseId) : undefined;
      if (b) sse.send('end', toBuild(b, rel?.version ?? null));
      sse.end();
    };
    const followed = cp.buildLogs.follow(build.id, { line: (l) => sse.send('line', l), end: () => void finish() });
    if (followed) {
      unsubscribe = followed.unsubscribe;
      for (const l of followed.lines) sse.send('line', l);
    } else {
      for (const l of await cp.buildLogs.read(build.id)) sse.send('line', l);
      await finish();
    }
    return STREAMED;
  },

  async logs({ auth, params, query, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return cp.logs.recent(app.id, query.lines);
  },

  async followLogs({ auth, params, query, req, reply, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const buffered: LogLineT[] = [];
    let live = false;
    let sse: ReturnType<typeof openSse> | null = null;
    // Subscribe before reading history so no line falls between the two.
    const unsubscribe = cp.logs.follow(app.id, (l) => (live && sse ? sse.send('line', l) : buffered.push(l)));
    const recent = await cp.logs.recent(app.id, query.lines);
    sse = openSse(req, reply, unsubscribe);
    // The ring hands listeners the same objects it stores: identity tells which buffered lines history already has.
    const seen = new Set(recent);
    for (const l of [...recent, ...buffered.filter((b) => !seen.has(b))]) sse.send('line', l);
    live = true;
    return STREAMED;
  },

  async appEvents({ auth, params, query, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.events.list(app.organizationId, { appId: app.id, limit: query.limit })).map(toEvent);
  },

  async followAppEvents({ auth, params, req, reply, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const sub = cp.bus.subscribe<EventT>(subjects.events(auth.organization.id), (e) => {
      if (e.appId === app.id) sse.send('event', e);
    });
    const sse = openSse(req, reply, () => sub.unsubscribe());
    return STREAMED;
  },

  async followEvents({ auth, req, reply, cp }) {
    const sub = cp.bus.subscribe<EventT>(subjects.events(auth.organization.id), (e) => sse.send('event', e));
    const sse = openSse(req, reply, () => sub.unsubscribe());
    return STREAMED;
  },
} satisfies Partial<Handlers>;
