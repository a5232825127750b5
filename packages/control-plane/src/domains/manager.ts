/**
 * The certificate manager: issues, stores (keys sealed) and renews the certificates routers
 * terminate TLS with, and publishes them — and pending ACME HTTP-01 tokens — on the bus.
 *
 * Modes: `local-ca` (a CA generated once per install signs `*.<base domain>` and every custom
 * domain; offline/development), `acme` (HTTP-01 against an ACME directory: Let's Encrypt, or
 * Pebble in tests) and `off` (HTTP only).
 *
 * Platform-wide keys (the CA key, the ACME account key, the base-domain certificate) belong to no
 * tenant; they are sealed under the data key of a hidden system organization, so they get the
 * same envelope encryption, key provider and rotation path as every tenant secret. Custom-domain
 * keys are sealed under their own organization's data key, with the certificate id as AAD.
 */
import type { Logger } from 'pino';
import { newId, splitCertificates, subjects } from '@shellwego/core';
import type { AcmeChallengesMessage, CertificatesMessage, RouterCertificate } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { CertificateRow, DomainRow, Store } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import type { EventRecorder } from '../events.ts';
import { issueLeaf } from './local-ca.ts';
import { ensureSystemOrg, installCa, SYSTEM_ORG_ID } from './install-ca.ts';
import type { IssuedPem, LocalCa } from './local-ca.ts';
import { AcmeIssuer, acmeErrorMessage, newAccountKey } from './acme.ts';
import type { AcmeSettings, ChallengeType } from './acme.ts';
import { isDue, renewAfter, retryDelay } from './schedule.ts';

export type TlsMode = 'off' | 'local-ca' | 'acme';

export interface TlsSettings {
  mode: TlsMode;
  /** Port users reach HTTPS on (for the URLs we print). */
  httpsPort: number;
  acme?: AcmeSettings;
  /** How often due renewals and retries are looked for. Default 60 s. */
  checkIntervalMs?: number;
  /** First retry delay after a failed issuance (doubles per failure). Default 30 s. */
  retryBaseMs?: number;
}

export { SYSTEM_ORG_ID } from './install-ca.ts';

export interface CertificateManagerDeps {
  store: Store;
  bus: Bus;
  secrets: SecretBox;
  events: EventRecorder;
  logger: Logger;
  baseDomain: string;
  dataDir: string;
  tls: TlsSettings;
  /** Called after a custom domain's certificate changes state (the route table's redirect flag follows it). */
  onCertificateChange?: () => Promise<void>;
}

export class CertificateManager {
  private subs: Subscription[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lock: Promise<void> = Promise.resolve();
  private version = Date.now() * 1000;
  private lastPublished = '';
  private ca: LocalCa | null = null;
  private acmeIssuer: AcmeIssuer | null = null;
  private readonly tokens = new Map<string, string>();
  private stopped = false;

  constructor(private readonly deps: CertificateManagerDeps) {}

  get mode(): TlsMode {
    return this.deps.tls.mode;
  }

  /** Issuer name recorded on certificates of the current mode. */
  get issuer(): string {
    return this.mode === 'acme' ? 'acme' : 'local-ca';
  }

  /** Between start() and stop(): this control plane leads and does the certificate work. */
  private running = false;

  async start(): Promise<void> {
    if (this.mode === 'off') return;
    const { bus } = this.deps;
    this.stopped = false; // started again when this control plane leads again (ADR 0012)
    this.running = true;
    await this.ensureSystemOrg();
    if (this.mode === 'local-ca') {
      this.ca = await this.loadOrCreateCa();
      await this.ensureCertificate({ name: `*.${this.deps.baseDomain}`, hostnames: [`*.${this.deps.baseDomain}`, this.deps.baseDomain], organizationId: SYSTEM_ORG_ID, domainId: null });
    }
    this.subs.push(bus.subscribe(subjects.certificatesRequest, () => {
      void this.publish(true).catch((err) => this.deps.logger.error({ err }, 'publishing certificates failed'));
    }));
    this.timer = setInterval(() => this.kick(), this.deps.tls.checkIntervalMs ?? 60_000);
    this.timer.unref();
    await this.runDue();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.running = false;
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    if (this.timer) clearInterval(this.timer);
    await this.lock;
  }

  /** Looks for due work in the background (after a domain is added, and periodically). */
  kick(): void {
    // Only the leading control plane issues certificates; another one's API just records the domain.
    if (this.mode === 'off' || this.stopped || !this.running) return;
    void this.runDue().catch((err) => this.deps.logger.error({ err }, 'certificate pass failed'));
  }

  /** The pending certificate row a new domain gets, written in the caller's transaction. */
  async createForDomain(tx: Store, domain: DomainRow): Promise<CertificateRow | null> {
    if (this.mode === 'off') return null;
    return tx.certificates.createIfAbsent(this.pendingRow({ name: domain.hostname, hostnames: [domain.hostname], organizationId: domain.organizationId, domainId: domain.id }));
  }

  /** Issues and renews whatever is due, one certificate at a time; then publishes. */
  runDue(): Promise<void> {
    const run = this.lock.then(async () => {
      if (this.stopped) return;
      const now = Date.now();
      let changed = false;
      for (const row of await this.deps.store.certificates.listAll()) {
        if (row.kind !== 'leaf' || !isDue(row, this.issuer, now)) continue;
        // HTTP-01 cannot prove a wildcard: in acme mode the base-domain certificate is left as it is.
        if (this.mode === 'acme' && row.domainId === null) continue;
        await this.issueOne(row);
        changed = true;
        if (this.stopped) return;
      }
      await this.publish(false);
      if (changed) await this.deps.onCertificateChange?.();
    });
    this.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Publishes every usable certificate (issued, or renewing) to the routers, whole or in chunks. */
  async publish(force: boolean): Promise<void> {
    const { store, secrets, bus } = this.deps;
    const certificates: RouterCertificate[] = [];
    for (const row of await store.certificates.listAll()) {
      if (row.kind !== 'leaf' || row.certPem === null || row.keySealed === null || row.notAfter === null) continue;
      if (Date.parse(row.notAfter) <= Date.now()) continue;
      const keyPem = await secrets.open({ id: row.id, organizationId: row.organizationId }, row.keySealed);
      certificates.push({ hostnames: row.hostnames, certPem: row.certPem, keyPem, notAfter: row.notAfter });
    }
    const key = JSON.stringify(certificates.map((c) => [c.hostnames, c.certPem]));
    if (force || key !== this.lastPublished) {
      this.lastPublished = key;
      // In chunks when large (NATS refuses payloads over max_payload): routers swap only a whole set in.
      for (const m of splitCertificates({ version: ++this.version, certificates } satisfies CertificatesMessage)) await bus.publish(subjects.certificates, m);
    }
    if (force) await this.publishChallenges();
  }

  // ---------- issuing ----------

  private async issueOne(row: CertificateRow): Promise<void> {
    const { store, secrets, logger } = this.deps;
    const challenge: ChallengeType | null = this.mode === 'acme' ? ((row.challengeType as ChallengeType | null) ?? 'http-01') : null;
    const renewing = row.status === 'issued';
    try {
      const issued = await this.issuePem(row.hostnames, challenge);
      // Still there? (the domain may have been removed meanwhile)
      if (!(await store.certificates.byName(row.name))) return;
      const keySealed = await secrets.seal({ id: row.id, organizationId: row.organizationId }, issued.keyPem);
      await store.certificates.update(row.id, {
        status: 'issued', issuer: this.issuer, challengeType: challenge, certPem: issued.certPem, keySealed,
        notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString(),
        renewAfter: renewAfter(issued.notBefore, issued.notAfter).toISOString(), error: null, attempts: 0, nextAttemptAt: null,
      });
      logger.info({ name: row.name, notAfter: issued.notAfter.toISOString(), issuer: this.issuer }, renewing ? 'certificate renewed' : 'certificate issued');
      await this.recordEvent(row, renewing ? 'certificate.renewed' : 'certificate.issued', `Certificate for ${row.name} ${renewing ? 'renewed' : 'issued'} (${this.issuer}), valid until ${issued.notAfter.toISOString()}`, { notAfter: issued.notAfter.toISOString(), issuer: this.issuer });
    } catch (err) {
      const reason = acmeErrorMessage(err);
      const attempts = row.attempts + 1;
      const next = new Date(Date.now() + retryDelay(attempts, this.deps.tls.retryBaseMs ?? 30_000));
      if (!(await store.certificates.byName(row.name))) return;
      // A failed renewal keeps serving the certificate it has (status stays issued) and says why.
      await store.certificates.update(row.id, { status: renewing ? 'issued' : 'failed', error: reason, attempts, nextAttemptAt: next.toISOString(), challengeType: challenge });
      logger.warn({ name: row.name, attempts, retryAt: next.toISOString(), err: reason }, 'certificate issuance failed');
      await this.recordEvent(row, 'certificate.failed', `Certificate for ${row.name} failed (attempt ${attempts}, retry at ${next.toISOString()}): ${reason}`, { reason, attempts, nextAttemptAt: next.toISOString() });
    }
  }

  private async issuePem(hostnames: string[], challenge: ChallengeType | null): Promise<IssuedPem> {
    if (this.mode === 'local-ca') {
      this.ca ??= await this.loadOrCreateCa();
      return issueLeaf(this.ca, hostnames);
    }
    this.acmeIssuer ??= await this.createAcmeIssuer();
    return this.acmeIssuer.issue(hostnames, challenge ?? 'http-01');
  }

  private async recordEvent(row: CertificateRow, type: string, message: string, data: Record<string, unknown>): Promise<void> {
    if (row.domainId === null) return; // platform certificates: logged only
    const domain = (await this.deps.store.domains.list(row.organizationId)).find((d) => d.id === row.domainId);
    await this.deps.events.record({ organizationId: row.organizationId, appId: domain?.appId ?? null, type, message, data: { hostname: row.name, ...data } });
  }

  // ---------- platform keys ----------

  private async ensureSystemOrg(): Promise<void> {
    await ensureSystemOrg(this.deps.store);
  }

  /** The install's CA (one per install, in the store; shared with the API's and NATS' certificates). */
  private async loadOrCreateCa(): Promise<LocalCa> {
    return installCa(this.deps);
  }

  private async createAcmeIssuer(): Promise<AcmeIssuer> {
    const settings = this.deps.tls.acme;
    if (!settings) throw new Error('TLS mode acme needs an ACME directory URL (SHELLWEGO_ACME_DIRECTORY)');
    const { store, secrets } = this.deps;
    const name = `acme-account:${settings.directoryUrl}`;
    let row = await store.certificates.byName(name);
    if (!row || row.keySealed === null) {
      const id = newId('crt');
      row = await store.certificates.createIfAbsent({
        ...this.pendingRow({ name, hostnames: [], organizationId: SYSTEM_ORG_ID, domainId: null }), id, kind: 'acme-account', issuer: 'acme', status: 'issued',
        keySealed: await secrets.seal({ id, organizationId: SYSTEM_ORG_ID }, await newAccountKey()),
      });
    }
    const accountKey = await secrets.open({ id: row.id, organizationId: row.organizationId }, row.keySealed!);
    return new AcmeIssuer(settings, accountKey, {
      set: async (token, keyAuthorization) => {
        this.tokens.set(token, keyAuthorization);
        await this.publishChallenges();
      },
      remove: async (token) => {
        this.tokens.delete(token);
        await this.publishChallenges();
      },
    });
  }

  private async publishChallenges(): Promise<void> {
    await this.deps.bus.publish(subjects.acmeChallenges, { tokens: Object.fromEntries(this.tokens) } satisfies AcmeChallengesMessage);
  }

  private async ensureCertificate(r: { name: string; hostnames: string[]; organizationId: string; domainId: string | null }): Promise<void> {
    await this.deps.store.certificates.createIfAbsent(this.pendingRow(r));
  }

  private pendingRow(r: { name: string; hostnames: string[]; organizationId: string; domainId: string | null }): Omit<CertificateRow, 'createdAt' | 'updatedAt'> {
    return {
      id: newId('crt'), organizationId: r.organizationId, domainId: r.domainId, name: r.name, kind: 'leaf', hostnames: r.hostnames,
      issuer: this.issuer, challengeType: this.mode === 'acme' ? 'http-01' : null, status: 'pending', certPem: null, keySealed: null,
      notBefore: null, notAfter: null, renewAfter: null, error: null, attempts: 0, nextAttemptAt: null,
    };
  }
}
