/**
 * The builder service: takes `build.requested` from the bus (queue group "builders": one builder
 * per build), runs build(), streams `build.<id>.log` lines and publishes `build.<id>.result`.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import type { Bus, Subscription } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { BlobStore, BuildLogMessage, BuildRequest, BuildResultMessage } from '@shellwego/core';
import { DEFAULT_BRIDGE } from '@shellwego/sandbox';
import type { SandboxRuntime } from '@shellwego/sandbox';
import type { Compression } from './artifact.ts';
import { build, DEFAULT_BUILD_UID, ensureTraversableBelow } from './build.ts';
import { NodeProvisioner } from './node-runtime.ts';
import type { NodeDistOptions } from './node-runtime.ts';
import { RegistryProxy } from './proxy.ts';
import { buildImage } from './image-build.ts';

export interface BuilderOptions {
  bus: Bus;
  blobs: BlobStore;
  workDir: string;
  cacheDir: string;
  runtime: SandboxRuntime;
  logger?: Logger;
  /** Unprivileged uid (and gid unless buildGid) of the build steps; default 65533. */
  buildUid?: number;
  buildGid?: number;
  /**
   * Bridge gateway address (first host of the sandbox bridge CIDR). The registry proxy listens
   * there; sandboxed builds reach it over the bridge. Default: first host of the sandbox
   * package's default bridge (10.89.0.1).
   */
  gatewayIp?: string;
  /** Registry proxy settings (sandbox isolation only). `false` = builds get no network at all. */
  registryProxy?: { host?: string; port?: number; allow?: string[] } | false;
  /** Per-build timeout, default 15 minutes. */
  timeoutMs?: number;
  /** Builds run at the same time by this builder (default 1). */
  concurrency?: number;
  nodeDist?: NodeDistOptions;
  compression?: Compression;
  /** OCI image builds: the layer cache shared by all apps (default `<cacheDir>/../oci`). */
  ociDir?: string;
  /** Registries (host[:port]) pulled over plain HTTP; loopback ones always are. */
  insecureRegistries?: string[];
}

export interface Builder {
  start(): void;
  close(): Promise<void>;
  /** Builds queued or running. */
  readonly pending: number;
}

export function firstHost(cidr: string): string {
  const [base] = cidr.split('/');
  const parts = base.split('.').map(Number);
  parts[3] += 1;
  return parts.join('.');
}

function isBuildRequest(x: any): x is BuildRequest {
  return !!x && typeof x === 'object' && typeof x.buildId === 'string' && x.buildId !== '' && typeof x.sourceDigest === 'string' && typeof x.appId === 'string';
}

export function createBuilder(opts: BuilderOptions): Builder {
  const logger = opts.logger ?? pino({ level: process.env.SHELLWEGO_LOG_LEVEL ?? 'warn' });
  const concurrency = Math.max(1, opts.concurrency ?? 1);
  const provisioner = new NodeProvisioner(opts.cacheDir, opts.nodeDist);
  const queue: BuildRequest[] = [];
  const active = new Map<string, AbortController>();
  const running = new Set<Promise<void>>();
  const seen = new Set<string>();
  let sub: Subscription | null = null;
  let closed = false;
  let proxy: RegistryProxy | null = null;
  let proxyReady: Promise<string | null> | null = null;
  let ready: Promise<void> | null = null;

  const sandboxed = opts.runtime.isolation === 'sandbox';

  async function prepare(): Promise<void> {
    await fsp.mkdir(opts.workDir, { recursive: true, mode: 0o711 });
    await fsp.mkdir(opts.cacheDir, { recursive: true, mode: 0o711 });
    // Leftovers of builds that were running when a previous process died.
    for (const name of await fsp.readdir(opts.workDir).catch(() => [] as string[])) {
      if (name.startsWith('.')) continue;
      await fsp.rm(path.join(opts.workDir, name), { recursive: true, force: true }).catch(() => {});
    }
    if (typeof process.getuid === 'function' && process.getuid() === 0) {
      // Our own two directories only (see ensureTraversableBelow); their parents are not ours.
      await ensureTraversableBelow(opts.workDir, opts.workDir, (m) => logger.warn(m));
      await ensureTraversableBelow(opts.cacheDir, opts.cacheDir, (m) => logger.warn(m));
    }
  }

  /** Bring the bridge up (it is created lazily by the runtime) by starting a trivial bridged sandbox. */
  async function bringUpBridge(): Promise<void> {
    const id = `swgb-bridge-${randomBytes(4).toString('hex')}`;
    const dir = path.join(opts.workDir, `.${id}`);
    await fsp.mkdir(dir, { recursive: true, mode: 0o711 });
    try {
      const h = await opts.runtime.start({
        id,
        argv: ['true'],
        env: {},
        cwd: '/',
        mounts: [],
        uid: opts.buildUid ?? DEFAULT_BUILD_UID,
        gid: opts.buildGid ?? opts.buildUid ?? DEFAULT_BUILD_UID,
        limits: { memoryMb: 64, cpus: 1, pids: 16 },
        network: { mode: 'bridge' },
        logFile: path.join(dir, 'log'),
        stateDir: path.join(dir, 'state'),
      });
      await h.wait();
      await opts.runtime.cleanup(id, path.join(dir, 'state'));
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /** URL of the registry proxy as seen from a bridged sandbox, starting it on first use. */
  function ensureProxy(): Promise<string | null> {
    if (!sandboxed || opts.registryProxy === false) return Promise.resolve(null);
    proxyReady ??= (async () => {
      const rp = opts.registryProxy || {};
      const host = rp.host ?? opts.gatewayIp ?? firstHost(DEFAULT_BRIDGE.cidr);
      const make = () => new RegistryProxy({ host, port: rp.port ?? 0, allow: rp.allow, logger, restrictSources: true });
      let p = make();
      try {
        await p.listen();
      } catch (e: any) {
        if (e?.code !== 'EADDRNOTAVAIL') throw e;
        await bringUpBridge();
        p = make();
        await p.listen();
      }
      proxy = p;
      logger.info({ url: p.url }, 'registry proxy listening');
      return p.url;
    })().catch((e) => {
      proxyReady = null;
      throw new Error(`the registry proxy cannot listen on the bridge gateway: ${e?.message ?? e}`);
    });
    return proxyReady;
  }

  async function runOne(req: BuildRequest): Promise<void> {
    const ac = new AbortController();
    active.set(req.buildId, ac);
    let logChain: Promise<void> = Promise.resolve();
    const onLog = (line: string) => {
      const msg: BuildLogMessage = { buildId: req.buildId, ts: new Date().toISOString(), line };
      logChain = logChain.then(() => opts.bus.publish(subjects.buildLog(req.buildId), msg)).catch(() => {});
    };
    let result: BuildResultMessage;
    try {
      await ready;
      if (req.image) {
        // Image builds run nothing of the image: no sandbox, no registry proxy.
        logger.info({ buildId: req.buildId, appId: req.appId, image: req.image.reference }, 'image build started');
        result = await buildImage(req, {
          blobs: opts.blobs, workDir: opts.workDir, ociDir: opts.ociDir ?? path.join(path.dirname(opts.cacheDir), 'oci'),
          insecureRegistries: opts.insecureRegistries, signal: ac.signal, timeoutMs: opts.timeoutMs, logger,
        }, onLog);
      } else {
        let proxyUrl: string | null = null;
        try {
          proxyUrl = await ensureProxy();
        } catch (e: any) {
          logger.error({ err: e?.message }, 'registry proxy unavailable');
          onLog(` !     warning: ${e?.message}; the build has no network access`);
        }
        logger.info({ buildId: req.buildId, appId: req.appId }, 'build started');
        result = await build(
          req,
          {
            blobs: opts.blobs,
            workDir: opts.workDir,
            cacheDir: opts.cacheDir,
            runtime: opts.runtime,
            buildUid: opts.buildUid,
            buildGid: opts.buildGid,
            proxyUrl,
            proxyAccess: proxy,
            timeoutMs: opts.timeoutMs,
            signal: ac.signal,
            logger,
            provisioner,
            compression: opts.compression,
          },
          onLog,
        );
      }
    } catch (e: any) {
      result = { buildId: req.buildId, ok: false, stack: null, artifactDigest: null, processTypes: {}, cacheHit: null, error: `internal builder error: ${e?.message ?? e}`, durationMs: 0 };
    } finally {
      active.delete(req.buildId);
    }
    await logChain;
    logger.info({ buildId: req.buildId, ok: result.ok, durationMs: result.durationMs, cacheHit: result.cacheHit, error: result.error }, 'build finished');
    await opts.bus.publish(subjects.buildResult(req.buildId), result).catch((e) => logger.error({ err: e?.message }, 'publishing build result failed'));
  }

  function pump(): void {
    while (!closed && running.size < concurrency && queue.length > 0) {
      const req = queue.shift()!;
      const p: Promise<void> = runOne(req)
        .catch((e) => logger.error({ err: e?.message }, 'build runner failed'))
        .finally(() => {
          running.delete(p);
          pump();
        });
      running.add(p);
    }
  }

  return {
    get pending() {
      return queue.length + running.size;
    },
    start() {
      if (sub || closed) return;
      ready = prepare().catch((e) => logger.error({ err: e?.message }, 'builder work dir preparation failed'));
      sub = opts.bus.subscribe<BuildRequest>(
        subjects.buildRequested,
        (req) => {
          if (closed) return;
          if (!isBuildRequest(req)) {
            logger.warn({ req }, 'ignoring malformed build request');
            return;
          }
          // Redelivery of a build we already took: ignore (the result is or will be published).
          if (seen.has(req.buildId)) return;
          seen.add(req.buildId);
          if (seen.size > 10_000) seen.delete(seen.values().next().value as string);
          queue.push(req);
          pump();
        },
        { queue: 'builders' },
      );
    },
    async close() {
      if (closed) return;
      closed = true;
      sub?.unsubscribe();
      sub = null;
      // Queued builds that never started: report them failed so they do not hang.
      for (const req of queue.splice(0)) {
        await opts.bus
          .publish(subjects.buildResult(req.buildId), {
            buildId: req.buildId, ok: false, stack: null, artifactDigest: null, processTypes: {}, cacheHit: null,
            error: 'build cancelled: the builder is shutting down', durationMs: 0,
          } satisfies BuildResultMessage)
          .catch(() => {});
      }
      for (const ac of active.values()) ac.abort();
      await Promise.allSettled([...running]);
      await proxy?.close();
    },
  };
}
