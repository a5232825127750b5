/**
 * ACME issuance (TLS mode `acme`) with acme-client: one account per install and directory, orders
 * proven by HTTP-01 — the router answers `/.well-known/acme-challenge/<token>` from the tokens
 * the certificate manager publishes on the bus. `challengeType` is recorded per certificate so
 * DNS-01 (wildcards, hosts behind other proxies) can be added as another solver.
 */
import https from 'node:https';
import tls from 'node:tls';
import type { Client } from 'acme-client';
import { certificateDates } from './local-ca.ts';
import type { IssuedPem } from './local-ca.ts';

export interface AcmeSettings {
  /** ACME directory, e.g. https://acme-v02.api.letsencrypt.org/directory. */
  directoryUrl: string;
  /** Account contact. */
  email?: string;
  /** Extra CA certificates (PEM) to trust for the ACME server's own TLS (test CAs like Pebble). */
  caBundle?: string;
}

export const SUPPORTED_CHALLENGES = ['http-01'] as const;
export type ChallengeType = 'http-01' | 'dns-01';

/** Where HTTP-01 key authorizations go while an order is validated (the routers, via the bus). */
export interface Http01Solver {
  set(token: string, keyAuthorization: string): Promise<void>;
  remove(token: string): Promise<void>;
}

/** acme-client (with axios and its crypto) is ≈ 5.5 MB of heap: loaded only where TLS mode acme issues certificates. */
const loadAcme = () => import('acme-client');

export async function newAccountKey(): Promise<string> {
  return (await (await loadAcme()).crypto.createPrivateEcdsaKey()).toString();
}

export class AcmeIssuer {
  private client: Promise<Client> | null = null;

  constructor(private readonly settings: AcmeSettings, private readonly accountKeyPem: string, private readonly solver: Http01Solver) {}

  private acmeClient(): Promise<Client> {
    this.client ??= loadAcme().then((acme) => {
      if (this.settings.caBundle) {
        // acme-client talks through its own axios instance; trust the extra CA there only.
        acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, this.settings.caBundle], keepAlive: true });
      }
      return new acme.Client({ directoryUrl: this.settings.directoryUrl, accountKey: this.accountKeyPem, backoffAttempts: 10, backoffMin: 500, backoffMax: 5_000 });
    });
    return this.client;
  }

  async issue(hostnames: string[], challengeType: ChallengeType): Promise<IssuedPem> {
    if (challengeType !== 'http-01') throw new Error(`ACME challenge type ${challengeType} is not supported yet; use http-01`);
    const acme = await loadAcme();
    const client = await this.acmeClient();
    const [key, csr] = await acme.crypto.createCsr({ commonName: hostnames[0], altNames: hostnames }, await acme.crypto.createPrivateEcdsaKey());
    const certPem = await client.auto({
      csr,
      email: this.settings.email,
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // acme-client's own pre-check fetches http://<host>/ on port 80 from here; the CA's check is what counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type !== 'http-01') throw new Error(`unexpected challenge ${challenge.type}`);
        await this.solver.set(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        await this.solver.remove(challenge.token);
      },
    });
    const { notBefore, notAfter } = certificateDates(certPem);
    return { certPem, keyPem: key.toString(), notBefore, notAfter };
  }
}

/** A readable reason from an ACME failure (problem documents carry `detail`). */
export function acmeErrorMessage(err: unknown): string {
  const e = err as { message?: string; detail?: string; response?: { data?: { detail?: string } } };
  return e?.response?.data?.detail ?? e?.detail ?? e?.message ?? String(err);
}
