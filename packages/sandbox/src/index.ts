export type {
  IsolationMode,
  ResourceLimits,
  Mount,
  NetworkAttachment,
  SandboxSpec,
  SandboxExit,
  SandboxStats,
  SandboxHandle,
  SandboxRuntime,
  ManagedSandboxRuntime,
  BridgeOptions,
  RuntimeOptions,
  IsolationReport,
  SandboxStdio,
  ChildProcessLike,
} from './types.ts';
export { createRuntime, readFinalExit, readMeta, DEFAULT_BRIDGE, DEFAULT_CGROUP_ROOT, DEFAULT_STATE_ROOT, DEFAULT_NET_POOL_SIZE } from './runtime.ts';
export type { SandboxMeta } from './runtime.ts';
export { detectIsolation } from './detect.ts';
export { prepareWritableDir } from './fsutil.ts';
export { removeBridge } from './net.ts';
export { detectCgroups, removeCgroupRoot } from './cgroups.ts';
