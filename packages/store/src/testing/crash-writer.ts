/**
 * Child process for the crash-safety test: writes multi-row transactions in a loop and prints
 * the number of each one after it commits, until it is killed.
 * Usage: crash-writer.ts <db> <org-id> <config keys per transaction> <events per transaction>
 */
import { openSqliteStore } from '../sqlite.ts';

const [path, organizationId, configKeys, events] = process.argv.slice(2);
const CONFIG_KEYS = Number(configKeys);
const EVENTS = Number(events);
const store = await openSqliteStore(path);
let i = (await store.apps.list(organizationId)).length;
for (;;) {
  const n = i++;
  await store.transaction(async (tx) => {
    const appId = `app_crash${String(n).padStart(6, '0')}`;
    await tx.apps.create({ id: appId, organizationId, name: `crash-${n}`, plan: 'free' });
    const config: Record<string, string> = {};
    for (let k = 0; k < CONFIG_KEYS; k++) config[`KEY_${k}`] = `sealed-${n}-${k}-${'x'.repeat(200)}`;
    await tx.config.apply(organizationId, appId, config);
    await tx.formation.upsert(organizationId, appId, 'web', { quantity: 1, command: 'node server.js' });
    const build = await tx.builds.create({ id: `bld_crash${n}`, appId, organizationId, sourceDigest: 'f'.repeat(64), createdBy: null });
    await tx.releases.create({
      id: `rel_crash${n}`, appId, organizationId, buildId: build.id, description: `v${n}`, processTypes: { web: 'node server.js' },
      artifactDigest: 'e'.repeat(64), configSealed: 'sealed', configKeys: Object.keys(config), createdBy: null,
    });
    for (let e = 0; e < EVENTS; e++) {
      await tx.events.append({ id: `evt_crash${n}_${e}`, organizationId, appId, type: 'crash.test', message: `event ${e}`, data: { n, e } });
    }
  });
  process.stdout.write(`${n}\n`);
}
