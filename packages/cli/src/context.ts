/**
 * What every command needs: where the API is, who we are, which app, and where output goes.
 * Precedence for scripts: SHELLWEGO_API_URL and SHELLWEGO_TOKEN override the stored login.
 */
import { createClient } from '@shellwego/sdk';
import type { ShellWeGoClient } from '@shellwego/sdk';
import { configPath, readStoredLogin } from './config-file.ts';
import type { StoredLogin } from './config-file.ts';
import { CliError, UsageError } from './errors.ts';
import type { Io } from './io.ts';
import { findLink } from './link.ts';

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';
export const CLI_VERSION = '0.1.0';

export interface Session {
  apiUrl: string;
  token: string | undefined;
  /** Where the token came from, for messages. */
  tokenSource: 'env' | 'login' | 'none';
  login: StoredLogin | null;
}

export class Ctx {
  readonly configFile: string;
  private session: Promise<Session> | null = null;

  constructor(readonly io: Io) {
    this.configFile = configPath(io.env, io.home);
  }

  /** A line of data on stdout. */
  out(line = ''): void {
    this.io.stdout.write(`${line}\n`);
  }

  /** A line of progress or commentary on stderr. */
  err(line = ''): void {
    this.io.stderr.write(`${line}\n`);
  }

  /** `--json` output: the API's JSON and nothing else on stdout. */
  json(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  now(): number {
    return this.io.now();
  }

  env(name: string): string | undefined {
    const v = this.io.env[name];
    return v === undefined || v === '' ? undefined : v;
  }

  async storedLogin(): Promise<StoredLogin | null> {
    return readStoredLogin(this.configFile);
  }

  resolveSession(): Promise<Session> {
    this.session ??= (async () => {
      const login = await this.storedLogin();
      const apiUrl = normalizeUrl(this.env('SHELLWEGO_API_URL') ?? login?.apiUrl ?? DEFAULT_API_URL);
      const envToken = this.env('SHELLWEGO_TOKEN');
      // The stored token only goes to the API it was issued by, never to another SHELLWEGO_API_URL.
      const storedToken = login && normalizeUrl(login.apiUrl) === apiUrl ? login.token : undefined;
      const token = envToken ?? storedToken;
      return { apiUrl, token, tokenSource: envToken ? 'env' : storedToken ? 'login' : 'none', login };
    })();
    return this.session;
  }

  newClient(apiUrl: string, token?: string): ShellWeGoClient {
    try {
      return createClient({ baseUrl: apiUrl, token, userAgent: `shellwego-cli/${CLI_VERSION}` });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }

  /** A client with credentials, or a clear "log in first". */
  async client(): Promise<ShellWeGoClient> {
    const s = await this.resolveSession();
    if (!s.token) {
      const elsewhere = s.login ? ` (the stored login is for ${s.login.apiUrl})` : '';
      throw new CliError(`not logged in to ${s.apiUrl}${elsewhere}: run \`shellwego login\` or set SHELLWEGO_TOKEN`, 'not_logged_in');
    }
    return this.newClient(s.apiUrl, s.token);
  }

  /** `--app`, else the nearest `.shellwego.json` walking up from `from` (default: cwd). */
  async app(flag: string | undefined, from?: string): Promise<string> {
    if (flag) return flag;
    const link = await findLink(from ?? this.io.cwd);
    if (link) return link.app;
    throw new UsageError('no app given: use --app NAME, or run inside a directory linked with `shellwego apps create` or `shellwego deploy --app NAME`');
  }
}

export function normalizeUrl(url: string): string {
  return url.trim().replace(/\/+$/, '');
}
