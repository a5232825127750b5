/**
 * The API contract: every route with its request and response schemas. This table is the single
 * source for request validation (control plane), the OpenAPI document, the typed client (sdk),
 * and the cross-tenant test that walks every app-scoped route.
 */
import { z } from 'zod';
import { APP_NAME_RE, APP_NAME_RULE, ENV_KEY_RE, ENV_KEY_RULE, PROCESS_TYPE_RE, mountPathProblem } from './names.ts';
import { BUILD_STATES, DEPLOY_STRATEGIES, DEPLOYMENT_STATES, INSTANCE_STATES, NODE_STATES, ROLES, SCOPES, STACKS, TAINT_EFFECTS } from './domain.ts';
import type { Role, Scope } from './domain.ts';
import { hostnameProblem } from './hostnames.ts';

// ---------- building blocks ----------

export const AppName = z.string().regex(APP_NAME_RE, `app names are DNS labels: ${APP_NAME_RULE}`);
export const EnvKey = z.string().regex(ENV_KEY_RE, `config keys must be ${ENV_KEY_RULE}`);
export const ProcessType = z.string().regex(PROCESS_TYPE_RE, 'process types are lowercase words like web or worker');
const Timestamp = z.string().describe('ISO 8601 timestamp');
// Deliberately loose: self-hosted installs use addresses like admin@localhost that strict validators refuse.
const Email = z.string().trim().toLowerCase().regex(/^[^\s@]+@[^\s@]+$/, 'a valid email address is required').max(254);

// ---------- resources ----------

export const User = z.object({ id: z.string(), email: z.string(), createdAt: Timestamp });
export const Organization = z.object({ id: z.string(), name: z.string(), createdAt: Timestamp });
export const Member = z.object({ userId: z.string(), email: z.string(), role: z.enum(ROLES), createdAt: Timestamp });

export const TokenInfo = z.object({
  id: z.string(),
  name: z.string(),
  scopes: z.array(z.string()),
  createdAt: Timestamp,
  expiresAt: Timestamp.nullable(),
  lastUsedAt: Timestamp.nullable(),
});

export const App = z.object({
  id: z.string(),
  name: z.string(),
  organizationId: z.string(),
  plan: z.string(),
  url: z.string(),
  currentRelease: z.number().int().nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

/**
 * Readiness check of a process type. `http`: GET `path` on $PORT must answer 2xx/3xx
 * `healthyThreshold` times in a row before the instance gets traffic, and `unhealthyThreshold`
 * failures in a row take it out again. Default (null): a TCP connect on $PORT (web only).
 */
export const HealthCheck = z.strictObject({
  type: z.literal('http'),
  path: z.string().regex(/^\/[\x21-\x7e]*$/, 'the path must start with / and be printable ASCII without spaces').max(1024),
  intervalSeconds: z.number().min(0.1).max(300).default(2),
  timeoutSeconds: z.number().min(0.1).max(60).default(2),
  healthyThreshold: z.number().int().min(1).max(20).default(1),
  unhealthyThreshold: z.number().int().min(1).max(20).default(3),
});

export const Formation = z.object({ type: z.string(), quantity: z.number().int(), command: z.string().nullable(), healthcheck: HealthCheck.nullable() });

/** How an app's new releases replace the running one. Every field has a default. */
export const DeploySettings = z.strictObject({
  strategy: z.enum(DEPLOY_STRATEGIES).default('rolling'),
  /** rolling: instances replaced per step. */
  batchSize: z.number().int().min(1).max(1000).default(1),
  /** rolling: instances allowed above the formation while replacing. */
  maxSurge: z.number().int().min(0).max(1000).default(1),
  /** rolling: ready instances allowed below the formation while replacing (0 = zero downtime). */
  maxUnavailable: z.number().int().min(0).max(1000).default(0),
  /** canary: share of traffic (percent) sent to the new release at each step before full promotion. */
  canarySteps: z.array(z.number().int().min(1).max(99)).min(1).max(10).default([10, 50]),
  /** canary: how long each step is watched before moving on. */
  canaryStepSeconds: z.number().int().min(1).max(86400).default(60),
  /** canary: abort when the new release's share of 5xx/failed requests exceeds this. */
  canaryMaxErrorRate: z.number().min(0).max(1).default(0.05),
  /** canary: requests needed in a step before its error rate counts. */
  canaryMinRequests: z.number().int().min(0).max(1_000_000).default(20),
  /** Deadline for new instances to become ready (k8s-style: reset whenever one more becomes ready). */
  healthTimeoutSeconds: z.number().int().min(5).max(3600).default(120),
  /** Time between taking an instance out of the router and sending it SIGTERM. */
  drainSeconds: z.number().min(0).max(600).default(2),
  /** Time between SIGTERM and SIGKILL. */
  stopTimeoutSeconds: z.number().int().min(1).max(3600).default(30),
  /** Roll back automatically when the new release fails its checks. */
  autoRollback: z.boolean().default(true),
}).refine((s) => s.maxSurge + s.maxUnavailable >= 1, { message: 'maxSurge and maxUnavailable cannot both be 0: nothing could be replaced', path: ['maxSurge'] });
export type DeploySettingsT = z.output<typeof DeploySettings>;
export const DEFAULT_DEPLOY_SETTINGS: DeploySettingsT = DeploySettings.parse({});

export const Deployment = z.object({
  id: z.string(),
  appId: z.string(),
  fromVersion: z.number().int().nullable(),
  toVersion: z.number().int(),
  strategy: z.enum(DEPLOY_STRATEGIES),
  state: z.enum(DEPLOYMENT_STATES),
  /** What it is doing now, in words ("2/3 web ready", "canary 10% for 60s"). */
  phase: z.string(),
  /** Why it failed or rolled back. */
  reason: z.string().nullable(),
  settings: z.record(z.string(), z.unknown()),
  createdBy: z.string().nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  finishedAt: Timestamp.nullable(),
  history: z.array(z.object({ at: Timestamp, message: z.string() })),
});

export const Build = z.object({
  id: z.string(),
  appId: z.string(),
  state: z.enum(BUILD_STATES),
  stack: z.enum(STACKS).nullable(),
  sourceDigest: z.string(),
  artifactDigest: z.string().nullable(),
  processTypes: z.record(z.string(), z.string()),
  cacheHit: z.boolean().nullable(),
  error: z.string().nullable(),
  releaseVersion: z.number().int().nullable(),
  createdAt: Timestamp,
  finishedAt: Timestamp.nullable(),
});

export const Release = z.object({
  id: z.string(),
  appId: z.string(),
  version: z.number().int(),
  buildId: z.string(),
  description: z.string(),
  processTypes: z.record(z.string(), z.string()),
  configKeys: z.array(z.string()),
  createdBy: z.string().nullable(),
  createdAt: Timestamp,
  current: z.boolean(),
});

export const Instance = z.object({
  id: z.string(),
  appId: z.string(),
  type: z.string(),
  index: z.number().int(),
  releaseVersion: z.number().int(),
  nodeId: z.string().nullable(),
  state: z.enum(INSTANCE_STATES),
  desired: z.enum(['running', 'stopped']),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  oomKilled: z.boolean(),
  restarts: z.number().int(),
  address: z.string().nullable(),
  startedAt: Timestamp.nullable(),
  updatedAt: Timestamp,
  lastLog: z.array(z.string()),
  /** Why the scheduler put the instance where it is, or why it is pending (`ps --explain`). */
  placement: z.string().nullable(),
});

export const LogLine = z.object({
  ts: Timestamp,
  source: z.enum(['app', 'build', 'platform', 'router']),
  instanceId: z.string().nullable(),
  type: z.string().nullable(),
  line: z.string(),
});

export const Event = z.object({
  id: z.string(),
  organizationId: z.string(),
  appId: z.string().nullable(),
  type: z.string(),
  message: z.string(),
  data: z.record(z.string(), z.unknown()),
  createdAt: Timestamp,
});

export const NodeInfo = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(NODE_STATES),
  isolation: z.string(),
  capacity: z.object({ cpus: z.number(), memoryMb: z.number(), diskMb: z.number().nullable() }),
  /** Promised to the instances placed on the node (their plans' limits). */
  allocated: z.object({ cpus: z.number(), memoryMb: z.number() }),
  /** Effective labels: the agent's, overridden by the operator's. */
  labels: z.record(z.string(), z.string()),
  operatorLabels: z.record(z.string(), z.string()),
  taints: z.array(z.string()),
  instances: z.number().int(),
  lastHeartbeatAt: Timestamp.nullable(),
});

// ---------- node scheduling ----------
const LabelKey = z.string().regex(/^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/, 'a label key is 1-63 lowercase letters, digits, . _ / - (starting and ending with a letter or digit)');
const LabelValue = z.string().regex(/^[A-Za-z0-9._-]{0,63}$/, 'a label value is up to 63 letters, digits, . _ -');
export const TaintSpec = z.strictObject({ key: LabelKey, value: LabelValue, effect: z.enum(TAINT_EFFECTS) });
export const TolerationSpec = z.strictObject({ key: LabelKey, value: LabelValue.optional().describe('absent: any value'), effect: z.enum(TAINT_EFFECTS) });
export const Placement = z.strictObject({
  requiredLabels: z.record(LabelKey, LabelValue).default({}).describe('labels a node must have to run the app'),
  tolerations: z.array(TolerationSpec).max(50).default([]).describe('node taints the app accepts'),
});
const NodeParams = z.strictObject({ node: z.string().min(1).describe('node id or name') });

export const PlanInfo = z.object({ name: z.string(), memoryMb: z.number(), cpus: z.number(), pids: z.number() });

// ---------- domains ----------

/** Custom domain hostname: lowercased, then checked (see hostnames.ts). */
export const Hostname = z.string().trim().toLowerCase().superRefine((h, ctx) => {
  const problem = hostnameProblem(h);
  if (problem) ctx.addIssue({ code: 'custom', message: `'${h}' is not a valid hostname: ${problem}` });
});
/** Strict-Transport-Security max-age in seconds; 0 turns HSTS off. At most two years. */
const HstsMaxAge = z.number().int().min(0).max(63_072_000);
const DomainParams = z.strictObject({ app: z.string().min(1), domain: z.string().min(1) });
export const CERTIFICATE_STATES = ['pending', 'issued', 'failed'] as const;

export const Certificate = z.object({
  status: z.enum(CERTIFICATE_STATES),
  /** Who issues it: `acme` or `local-ca`. */
  issuer: z.string(),
  /** ACME challenge type (`http-01`, later `dns-01`); null for the local CA. */
  challenge: z.string().nullable(),
  notBefore: Timestamp.nullable(),
  notAfter: Timestamp.nullable(),
  renewAfter: Timestamp.nullable(),
  /** Why the last attempt failed (status failed, or a failed renewal of an issued certificate). */
  error: z.string().nullable(),
  attempts: z.number().int(),
  nextAttemptAt: Timestamp.nullable(),
  updatedAt: Timestamp,
});

export const Domain = z.object({
  id: z.string(),
  hostname: z.string(),
  appId: z.string(),
  appName: z.string(),
  redirectHttps: z.boolean(),
  hstsMaxAge: z.number().int(),
  url: z.string(),
  /** Null when TLS is off on this platform. */
  certificate: Certificate.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

// ---------- webhooks (resources) ----------

export const WEBHOOK_PROVIDERS = ['github', 'gitlab'] as const;
// A conservative subset of git's ref-name rules: what a branch to deploy may be called.
const BranchName = z.string().trim().min(1).max(200)
  .regex(/^(?!-)(?!\/)[A-Za-z0-9._/-]+$/, 'branch names use letters, digits and . _ / -')
  .refine((b) => !b.includes('..') && !b.includes('//') && !b.endsWith('/') && !b.endsWith('.lock') && !b.endsWith('.'), 'not a valid git branch name');
export const WebhookDelivery = z.object({
  deliveryId: z.string(),
  event: z.string(),
  status: z.enum(['received', 'ignored', 'building', 'failed']),
  message: z.string(),
  buildId: z.string().nullable(),
  createdAt: Timestamp,
});
export const Webhook = z.object({
  id: z.string(),
  appId: z.string(),
  provider: z.enum(WEBHOOK_PROVIDERS),
  /** Without credentials. */
  repository: z.string(),
  branch: z.string(),
  /** Where the provider sends deliveries (the payload URL). */
  url: z.string(),
  createdBy: z.string().nullable(),
  createdAt: Timestamp,
  lastDelivery: WebhookDelivery.nullable(),
});

// ---------- volumes (resources) ----------

/** A persistent directory mounted into every instance of one process type (Dokku storage, Fly volumes). */
export const Volume = z.object({
  id: z.string(),
  appId: z.string(),
  name: z.string(),
  processType: z.string(),
  mountPath: z.string(),
  sizeMb: z.number().int(),
  /** The node its data lives on: null until its first instance is placed, then fixed. */
  nodeId: z.string().nullable(),
  nodeName: z.string().nullable(),
  createdAt: Timestamp,
});
export const VolumeName = z.string().regex(APP_NAME_RE, `volume names are ${APP_NAME_RULE}`);
export const MountPath = z.string().superRefine((p, ctx) => {
  const problem = mountPathProblem(p);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

// ---------- route table ----------

export type HttpMethod = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

export interface RouteDef {
  method: HttpMethod;
  path: string;
  summary: string;
  /** 'none' routes are public; everything else needs a bearer token. */
  auth: 'none' | 'token';
  scope?: Scope;
  /** Minimum role in the token's organization. */
  role?: Role;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** Raw upload body instead of JSON (source tarballs). */
  upload?: { contentType: string };
  response: z.ZodType;
  /** Server-sent events: `response` describes each event's data. */
  stream?: 'sse';
  status?: number;
  /**
   * A keyset-paged list (`query` has `limit` and `after`): while more items follow, the answer
   * carries `Link: <…>; rel="next"`, the URL of the next page (RFC 8288, as GitHub does).
   */
  paged?: true;
}

/** Page size of paged lists when the request names none, and the most one page holds. */
export const PAGE_DEFAULT = 200;
export const PAGE_MAX = 1000;
const pageLimit = z.coerce.number().int().min(1).max(PAGE_MAX).default(PAGE_DEFAULT);

const route = <const T extends RouteDef>(def: T): T => def;

const AppParams = z.strictObject({ app: z.string().min(1) });
const strict = z.strictObject;

/** A node's cluster certificate (router-to-router mTLS, ADR 0022). */
const NodeCertificate = z.object({
  certPem: z.string().describe('identity: URI SAN shellwego://node/<node id>; serverAuth and clientAuth'),
  caPem: z.string().describe("the install's CA: the only trust root of router-to-router hops"),
  notAfter: z.string(),
});

export const routes = {
  health: route({
    method: 'GET', path: '/v1/health', summary: 'Liveness of the API', auth: 'none',
    response: z.object({ ok: z.boolean(), version: z.string() }),
  }),
  login: route({
    method: 'POST', path: '/v1/auth/login', summary: 'Exchange email and password for a token', auth: 'none',
    body: strict({ email: Email, password: z.string().min(1), organization: z.string().optional() }),
    response: z.object({ token: z.string(), user: User, organization: Organization, role: z.enum(ROLES) }),
  }),
  me: route({
    method: 'GET', path: '/v1/me', summary: 'The calling user, organization, role and token scopes', auth: 'token',
    response: z.object({ user: User, organization: Organization, role: z.enum(ROLES), scopes: z.array(z.string()), platformAdmin: z.boolean() }),
  }),

  listOrganizations: route({
    method: 'GET', path: '/v1/organizations', summary: 'Organizations the caller belongs to', auth: 'token', scope: 'orgs:read', role: 'viewer',
    response: z.array(Organization.extend({ role: z.enum(ROLES) })),
  }),
  createOrganization: route({
    method: 'POST', path: '/v1/organizations', summary: 'Create an organization owned by the caller', auth: 'token', scope: 'orgs:admin', role: 'viewer',
    body: strict({ name: z.string().trim().min(2).max(60) }),
    response: Organization, status: 201,
  }),
  listMembers: route({
    method: 'GET', path: '/v1/members', summary: 'Members of the current organization', auth: 'token', scope: 'orgs:read', role: 'viewer',
    response: z.array(Member),
  }),
  addMember: route({
    method: 'POST', path: '/v1/members', summary: 'Add a user to the organization (creating the account if needed)', auth: 'token', scope: 'orgs:admin', role: 'admin',
    body: strict({ email: Email, role: z.enum(ROLES) }),
    response: z.object({ member: Member, initialPassword: z.string().nullable() }), status: 201,
  }),
  updateMember: route({
    method: 'PATCH', path: '/v1/members/:user', summary: "Change a member's role", auth: 'token', scope: 'orgs:admin', role: 'admin',
    params: strict({ user: z.string().min(1) }), body: strict({ role: z.enum(ROLES) }),
    response: Member,
  }),
  removeMember: route({
    method: 'DELETE', path: '/v1/members/:user', summary: 'Remove a member', auth: 'token', scope: 'orgs:admin', role: 'admin',
    params: strict({ user: z.string().min(1) }),
    response: z.object({ removed: z.boolean() }),
  }),

  listTokens: route({
    method: 'GET', path: '/v1/tokens', summary: "The caller's API tokens", auth: 'token', scope: 'tokens:manage', role: 'viewer',
    response: z.array(TokenInfo),
  }),
  createToken: route({
    method: 'POST', path: '/v1/tokens', summary: 'Create an API token; the secret is shown once', auth: 'token', scope: 'tokens:manage', role: 'viewer',
    body: strict({
      name: z.string().trim().min(1).max(80),
      scopes: z.array(z.enum([...SCOPES, '*'])).min(1),
      expiresInDays: z.number().int().min(1).max(3650).optional(),
    }),
    response: z.object({ token: TokenInfo, secret: z.string() }), status: 201,
  }),
  deleteToken: route({
    method: 'DELETE', path: '/v1/tokens/:token', summary: 'Revoke an API token', auth: 'token', scope: 'tokens:manage', role: 'viewer',
    params: strict({ token: z.string().min(1) }),
    response: z.object({ deleted: z.boolean() }),
  }),

  listPlans: route({
    method: 'GET', path: '/v1/plans', summary: 'Resource plans', auth: 'token', scope: 'apps:read', role: 'viewer',
    response: z.array(PlanInfo),
  }),

  listApps: route({
    method: 'GET', path: '/v1/apps', summary: 'Apps of the organization, by name, a page at a time', auth: 'token', scope: 'apps:read', role: 'viewer',
    // `after`: the last name of the previous page (the next page starts after it).
    query: strict({ limit: pageLimit, after: z.string().min(1).max(100).optional() }),
    response: z.array(App), paged: true,
  }),
  createApp: route({
    method: 'POST', path: '/v1/apps', summary: 'Create an app', auth: 'token', scope: 'apps:write', role: 'developer',
    body: strict({ name: AppName, plan: z.string().optional() }),
    response: App, status: 201,
  }),
  getApp: route({
    method: 'GET', path: '/v1/apps/:app', summary: 'One app', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: App,
  }),
  updateApp: route({
    method: 'PATCH', path: '/v1/apps/:app', summary: "Change an app's plan", auth: 'token', scope: 'apps:write', role: 'developer',
    params: AppParams, body: strict({ plan: z.string() }), response: App,
  }),
  deleteApp: route({
    method: 'DELETE', path: '/v1/apps/:app', summary: 'Delete an app and stop its instances', auth: 'token', scope: 'apps:write', role: 'admin',
    params: AppParams, response: z.object({ deleted: z.boolean() }),
  }),

  getConfig: route({
    method: 'GET', path: '/v1/apps/:app/config', summary: 'Config vars', auth: 'token', scope: 'apps:read', role: 'developer',
    params: AppParams, response: z.record(z.string(), z.string()),
  }),
  updateConfig: route({
    method: 'PATCH', path: '/v1/apps/:app/config', summary: 'Set (string) or unset (null) config vars; creates a release when the app has a build', auth: 'token', scope: 'apps:write', role: 'developer',
    params: AppParams,
    body: strict({ vars: z.record(EnvKey, z.string().max(32768).nullable()).refine((v) => Object.keys(v).length > 0, 'give at least one variable') }),
    response: z.object({ config: z.record(z.string(), z.string()), release: Release.nullable() }),
  }),

  getFormation: route({
    method: 'GET', path: '/v1/apps/:app/formation', summary: 'Process types and their scale', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Formation),
  }),
  scale: route({
    method: 'PATCH', path: '/v1/apps/:app/formation', summary: 'Scale process types', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams,
    body: strict({ quantities: z.record(ProcessType, z.number().int().min(0).max(100)).refine((v) => Object.keys(v).length > 0, 'give at least one process type') }),
    response: z.array(Formation),
  }),

  setHealthcheck: route({
    method: 'PUT', path: '/v1/apps/:app/formation/:type/healthcheck', summary: 'Set (object) or clear (null: TCP connect) the readiness check of a process type', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: strict({ app: z.string().min(1), type: ProcessType }), body: strict({ healthcheck: HealthCheck.nullable() }), response: Formation,
  }),

  // ---------- deployments ----------
  getDeploySettings: route({
    method: 'GET', path: '/v1/apps/:app/deploy-settings', summary: 'How new releases replace running ones (strategy and limits)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: DeploySettings,
  }),
  updateDeploySettings: route({
    method: 'PATCH', path: '/v1/apps/:app/deploy-settings', summary: 'Change the deploy strategy or its limits', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams,
    body: z.strictObject({
      strategy: z.enum(DEPLOY_STRATEGIES).optional(), batchSize: z.number().int().min(1).max(1000).optional(),
      maxSurge: z.number().int().min(0).max(1000).optional(), maxUnavailable: z.number().int().min(0).max(1000).optional(),
      canarySteps: z.array(z.number().int().min(1).max(99)).min(1).max(10).optional(), canaryStepSeconds: z.number().int().min(1).max(86400).optional(),
      canaryMaxErrorRate: z.number().min(0).max(1).optional(), canaryMinRequests: z.number().int().min(0).max(1_000_000).optional(),
      healthTimeoutSeconds: z.number().int().min(5).max(3600).optional(), drainSeconds: z.number().min(0).max(600).optional(),
      stopTimeoutSeconds: z.number().int().min(1).max(3600).optional(), autoRollback: z.boolean().optional(),
    }).refine((v) => Object.keys(v).length > 0, 'give at least one setting'),
    response: DeploySettings,
  }),
  listDeployments: route({
    method: 'GET', path: '/v1/apps/:app/deployments', summary: 'Deployments, newest first: what happened and why', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, query: strict({ limit: z.coerce.number().int().min(1).max(200).optional() }), response: z.array(Deployment),
  }),
  getDeployment: route({
    method: 'GET', path: '/v1/apps/:app/deployments/:deployment', summary: 'One deployment', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: strict({ app: z.string().min(1), deployment: z.string().min(1) }), response: Deployment,
  }),
  abortDeployment: route({
    method: 'POST', path: '/v1/apps/:app/deployments/:deployment/abort', summary: 'Stop a running deployment and roll back to the release before it', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: strict({ app: z.string().min(1), deployment: z.string().min(1) }), response: Deployment,
  }),

  createBuild: route({
    method: 'POST', path: '/v1/apps/:app/builds', summary: 'Upload a source tarball (tar.gz) and build it; deploys on success', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams, upload: { contentType: 'application/gzip' }, response: Build, status: 202,
  }),
  listBuilds: route({
    method: 'GET', path: '/v1/apps/:app/builds', summary: 'Builds, newest first', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Build),
  }),
  getBuild: route({
    method: 'GET', path: '/v1/apps/:app/builds/:build', summary: 'One build', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: strict({ app: z.string().min(1), build: z.string().min(1) }), response: Build,
  }),
  buildLog: route({
    method: 'GET', path: '/v1/apps/:app/builds/:build/log', summary: 'Build output, live until the build ends (SSE: `line` events, then one `end` event with the build)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: strict({ app: z.string().min(1), build: z.string().min(1) }), response: LogLine, stream: 'sse',
  }),

  listReleases: route({
    method: 'GET', path: '/v1/apps/:app/releases', summary: 'Releases, newest first', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Release),
  }),
  rollback: route({
    method: 'POST', path: '/v1/apps/:app/rollback', summary: 'Create a new release from an earlier one (default: the one before current)', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams, body: strict({ version: z.number().int().min(1).optional() }), response: Release, status: 201,
  }),
  restart: route({
    method: 'POST', path: '/v1/apps/:app/restart', summary: 'Restart instances (all, or one process type)', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams, body: strict({ type: ProcessType.optional() }), response: z.object({ restarted: z.number().int() }),
  }),
  listInstances: route({
    method: 'GET', path: '/v1/apps/:app/instances', summary: 'Running and recently exited instances (ps)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Instance),
  }),
  logs: route({
    method: 'GET', path: '/v1/apps/:app/logs', summary: 'Recent log lines', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, query: strict({ lines: z.coerce.number().int().min(1).max(10000).default(100) }), response: z.array(LogLine),
  }),
  followLogs: route({
    method: 'GET', path: '/v1/apps/:app/logs/stream', summary: 'Recent log lines, then new ones as they arrive (SSE `line` events)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, query: strict({ lines: z.coerce.number().int().min(0).max(10000).default(100) }), response: LogLine, stream: 'sse',
  }),
  appEvents: route({
    method: 'GET', path: '/v1/apps/:app/events', summary: "An app's events, newest first", auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, query: strict({ limit: z.coerce.number().int().min(1).max(1000).default(100) }), response: z.array(Event),
  }),
  followAppEvents: route({
    method: 'GET', path: '/v1/apps/:app/events/stream', summary: "An app's events as they happen (SSE `event` events)", auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: Event, stream: 'sse',
  }),
  followEvents: route({
    method: 'GET', path: '/v1/events/stream', summary: "The organization's events as they happen (SSE `event` events)", auth: 'token', scope: 'apps:read', role: 'viewer',
    response: Event, stream: 'sse',
  }),

  // ---------- domains ----------
  listDomains: route({
    method: 'GET', path: '/v1/apps/:app/domains', summary: "An app's custom domains with their certificate status", auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Domain),
  }),
  listAllDomains: route({
    method: 'GET', path: '/v1/domains', summary: "Custom domains of every app of the organization", auth: 'token', scope: 'apps:read', role: 'viewer',
    response: z.array(Domain),
  }),
  addDomain: route({
    method: 'POST', path: '/v1/apps/:app/domains', summary: 'Route a custom domain to the app and get it a certificate', auth: 'token', scope: 'apps:write', role: 'developer',
    params: AppParams,
    body: strict({ hostname: Hostname, redirectHttps: z.boolean().optional(), hstsMaxAge: HstsMaxAge.optional() }),
    response: Domain, status: 201,
  }),
  updateDomain: route({
    method: 'PATCH', path: '/v1/apps/:app/domains/:domain', summary: "Change a domain's HTTP→HTTPS redirect and HSTS", auth: 'token', scope: 'apps:write', role: 'developer',
    params: DomainParams,
    body: strict({ redirectHttps: z.boolean().optional(), hstsMaxAge: HstsMaxAge.optional() }).refine((v) => v.redirectHttps !== undefined || v.hstsMaxAge !== undefined, 'give redirectHttps and/or hstsMaxAge'),
    response: Domain,
  }),
  removeDomain: route({
    method: 'DELETE', path: '/v1/apps/:app/domains/:domain', summary: 'Stop routing a custom domain and drop its certificate', auth: 'token', scope: 'apps:write', role: 'developer',
    params: DomainParams, response: z.object({ removed: z.boolean() }),
  }),

  // ---------- webhooks ----------
  listWebhooks: route({
    method: 'GET', path: '/v1/apps/:app/webhooks', summary: 'Inbound GitHub/GitLab webhooks that deploy the app (secrets are never shown again)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Webhook),
  }),
  createWebhook: route({
    method: 'POST', path: '/v1/apps/:app/webhooks', summary: 'Add a webhook: pushes to the branch of the repository deploy the app; the secret is shown once', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams,
    body: strict({
      provider: z.enum(WEBHOOK_PROVIDERS),
      repository: z.string().trim().min(1).max(2048).describe('https://, http:// or git:// URL of the repository to fetch (may carry credentials; stored encrypted)'),
      branch: BranchName.default('main'),
      secret: z.string().min(16, 'a webhook secret needs at least 16 characters').max(256).regex(/^[\x21-\x7e]+$/, 'use printable ASCII without spaces').optional().describe('default: generated'),
    }),
    response: Webhook.extend({ secret: z.string() }), status: 201,
  }),
  deleteWebhook: route({
    method: 'DELETE', path: '/v1/apps/:app/webhooks/:hook', summary: 'Remove a webhook', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: strict({ app: z.string().min(1), hook: z.string().min(1) }), response: z.object({ deleted: z.boolean() }),
  }),
  // ---------- end webhooks ----------

  // ---------- volumes ----------
  listVolumes: route({
    method: 'GET', path: '/v1/apps/:app/volumes', summary: "The app's persistent volumes and the node each lives on", auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: z.array(Volume),
  }),
  createVolume: route({
    method: 'POST', path: '/v1/apps/:app/volumes', summary: 'Create a volume mounted into every instance of a process type (its running instances are replaced to mount it)', auth: 'token', scope: 'apps:write', role: 'developer',
    params: AppParams,
    body: strict({
      name: VolumeName,
      processType: ProcessType.describe('the process type it is mounted into (may be one a later release adds)'),
      mountPath: MountPath.describe('absolute path inside the sandbox, e.g. /data'),
      sizeMb: z.number().int().min(1).max(16 * 1024 * 1024).default(1024).describe('size limit in MB (recorded and shown; not enforced yet)'),
    }),
    response: Volume, status: 201,
  }),
  getVolume: route({
    method: 'GET', path: '/v1/apps/:app/volumes/:volume', summary: 'One volume (by name or id)', auth: 'token', scope: 'apps:read', role: 'viewer',
    params: strict({ app: z.string().min(1), volume: z.string().min(1) }), response: Volume,
  }),
  deleteVolume: route({
    method: 'DELETE', path: '/v1/apps/:app/volumes/:volume', summary: 'Destroy a volume and its data (refused while its process type is scaled above 0 or still has instances)', auth: 'token', scope: 'apps:write', role: 'developer',
    params: strict({ app: z.string().min(1), volume: z.string().min(1) }), response: z.object({ deleted: z.boolean() }),
  }),
  // ---------- end volumes ----------

  // ---------- OCI image deploys ----------
  createImageBuild: route({
    method: 'POST', path: '/v1/apps/:app/builds/image', summary: 'Build from an OCI/Docker image (pulled from a v2 registry); deploys on success', auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams,
    body: strict({
      image: z.string().trim().min(1).max(512).describe('registry/repository[:tag][@sha256:digest]; Docker Hub when no registry is given'),
      credentials: strict({ username: z.string().min(1).max(256), password: z.string().min(1).max(8192) }).optional()
        .describe('registry credentials (sealed at rest, never logged)'),
    }),
    response: Build, status: 202,
  }),
  // ---------- end OCI image deploys ----------

  listNodes: route({
    method: 'GET', path: '/v1/nodes', summary: 'Nodes of the platform (operators)', auth: 'token', scope: 'platform:admin', role: 'viewer',
    response: z.array(NodeInfo),
  }),
  // ---------- node scheduling ----------
  getNode: route({
    method: 'GET', path: '/v1/nodes/:node', summary: 'One node: state, capacity, labels, taints, allocation', auth: 'token', scope: 'platform:admin', role: 'viewer',
    params: NodeParams, response: NodeInfo,
  }),
  setNodeState: route({
    method: 'POST', path: '/v1/nodes/:node/state', summary: 'Cordon (no new instances), drain (move instances away) or uncordon (ready) a node', auth: 'token', scope: 'platform:admin', role: 'viewer',
    params: NodeParams, body: strict({ state: z.enum(['ready', 'cordoned', 'draining']) }), response: NodeInfo,
  }),
  setNodeLabels: route({
    method: 'PATCH', path: '/v1/nodes/:node/labels', summary: "Set (string) or remove (null) operator labels of a node", auth: 'token', scope: 'platform:admin', role: 'viewer',
    params: NodeParams,
    body: strict({ labels: z.record(LabelKey, LabelValue.nullable()).refine((l) => Object.keys(l).length > 0, 'give at least one label') }),
    response: NodeInfo,
  }),
  setNodeTaints: route({
    method: 'PATCH', path: '/v1/nodes/:node/taints', summary: 'Add taints and/or remove taints (by key) of a node', auth: 'token', scope: 'platform:admin', role: 'viewer',
    params: NodeParams,
    body: strict({ add: z.array(TaintSpec).max(50).default([]), remove: z.array(LabelKey).max(50).default([]) })
      .refine((b) => b.add.length + b.remove.length > 0, 'give a taint to add or a key to remove'),
    response: NodeInfo,
  }),
  deleteNode: route({
    method: 'DELETE', path: '/v1/nodes/:node', summary: 'Forget a node (refused while instances are assigned to it: drain it first)', auth: 'token', scope: 'platform:admin', role: 'viewer',
    params: NodeParams, response: z.object({ deleted: z.boolean() }),
  }),
  getPlacement: route({
    method: 'GET', path: '/v1/apps/:app/placement', summary: "Where the app's instances may run: required node labels, tolerated taints", auth: 'token', scope: 'apps:read', role: 'viewer',
    params: AppParams, response: Placement,
  }),
  setPlacement: route({
    method: 'PUT', path: '/v1/apps/:app/placement', summary: "Replace the app's placement constraints (applies to instances placed from now on)", auth: 'token', scope: 'apps:deploy', role: 'developer',
    params: AppParams, body: Placement, response: Placement,
  }),
  // ---------- end node scheduling ----------
  // ---------- node join ----------
  createJoinToken: route({
    method: 'POST', path: '/v1/nodes/join-tokens', summary: 'Create a token a node joins with (`shellwego-server node --join`); the secret is shown once', auth: 'token', scope: 'platform:admin', role: 'viewer',
    body: strict({
      expiresInSeconds: z.number().int().min(1).max(30 * 86_400).default(3600).describe('validity in seconds, up to 30 days (default 1 hour)'),
      uses: z.number().int().min(1).max(1000).default(1).describe('how many nodes may join with it (default 1)'),
    }),
    response: z.object({
      id: z.string(), token: z.string(), expiresAt: z.string(), uses: z.number(),
      caFingerprint: z.string().nullable().describe("sha256 of the install's CA the node pins with --ca-fingerprint (null: the API is plain http)"),
      apiUrl: z.string().nullable().describe('the API URL nodes join (null: not known to the server)'),
    }), status: 201,
  }),
  joinNode: route({
    method: 'POST', path: '/v1/nodes/join', summary: 'A node joins with a join token and gets its own credentials (public: the token is the credential)', auth: 'none',
    body: strict({
      token: z.string().min(1).max(200),
      name: z.string().trim().min(1).max(253),
      isolation: z.string().min(1).max(32),
      capacity: strict({ cpus: z.number().int().min(1).max(4096), memoryMb: z.number().int().min(1), diskMb: z.number().int().min(0).optional() }),
      clusterPublicKey: z.string().max(4096).optional().describe("the node's own ECDSA P-256 public key (SPKI PEM): the answer carries its cluster certificate for it (router-to-router mTLS)"),
    }),
    response: z.object({
      nodeId: z.string(), secret: z.string(),
      cluster: NodeCertificate.nullable().describe('the cluster certificate for clusterPublicKey (null: none asked for)'),
      caPem: z.string().nullable().describe("the install's CA (https API): the node checks it against the fingerprint it pinned"),
      natsUsesInstallCa: z.boolean().describe("nats-server's certificate is signed by that CA: the node verifies NATS against it"),
      natsCreds: z.string().nullable().describe("the node's NATS user credentials (.creds: JWT + seed), allowed only its own subjects (null: NATS without authentication)"),
    }), status: 201,
  }),
  issueNodeCertificate: route({
    method: 'POST', path: '/v1/node/certificate', summary: "A new cluster certificate for the calling node's public key (Authorization: Node <node id>:<secret>; renewal)", auth: 'none',
    body: strict({ publicKey: z.string().min(1).max(4096).describe('ECDSA P-256 public key, SPKI PEM') }),
    response: NodeCertificate,
  }),
  getNodeBlob: route({
    method: 'GET', path: '/v1/node/blobs/:digest', summary: 'A build artifact by sha256, for nodes (Authorization: Node <node id>:<secret>; streams application/octet-stream)', auth: 'none',
    params: z.strictObject({ digest: z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 digest: 64 lowercase hex characters') }),
    response: z.unknown(),
  }),
  // ---------- end node join ----------
} as const satisfies Record<string, RouteDef>;

export type Routes = typeof routes;
export type RouteName = keyof Routes;

type Get<T, K extends string> = T extends Record<K, infer V> ? V : undefined;
type In<S> = S extends z.ZodType ? z.input<S> : undefined;
type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export type RouteParams<N extends RouteName> = In<Get<Routes[N], 'params'>>;
export type RouteQuery<N extends RouteName> = In<Get<Routes[N], 'query'>>;
export type RouteBody<N extends RouteName> = In<Get<Routes[N], 'body'>>;
export type RouteResponse<N extends RouteName> = Out<Routes[N]['response']>;

export type AppT = z.output<typeof App>;
export type BuildT = z.output<typeof Build>;
export type ReleaseT = z.output<typeof Release>;
export type InstanceT = z.output<typeof Instance>;
export type LogLineT = z.output<typeof LogLine>;
export type EventT = z.output<typeof Event>;
export type FormationT = z.output<typeof Formation>;
export type TokenInfoT = z.output<typeof TokenInfo>;
export type MemberT = z.output<typeof Member>;
export type OrganizationT = z.output<typeof Organization>;
export type UserT = z.output<typeof User>;
export type NodeInfoT = z.output<typeof NodeInfo>;
export type PlacementT = z.output<typeof Placement>;
export type WebhookT = z.output<typeof Webhook>;
export type VolumeT = z.output<typeof Volume>;
export type HealthCheckT = z.output<typeof HealthCheck>;
export type DeploymentT = z.output<typeof Deployment>;
export type DomainT = z.output<typeof Domain>;
export type CertificateT = z.output<typeof Certificate>;

/** Express-style `/v1/apps/:app` to OpenAPI `/v1/apps/{app}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([a-zA-Z]+)/g, '{$1}');
}

/** Fill `:params` of a route path. */
export function fillPath(path: string, params: Record<string, string | number> | undefined): string {
  return path.replace(/:([a-zA-Z]+)/g, (_, k: string) => {
    const v = params?.[k];
    if (v === undefined) throw new Error(`missing path parameter '${k}' for ${path}`);
    return encodeURIComponent(String(v));
  });
}
