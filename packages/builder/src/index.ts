/**
 * @shellwego/builder: Heroku-style builds from source. See README.md.
 */
export { createBuilder, firstHost } from './builder.ts';
export type { Builder, BuilderOptions } from './builder.ts';
export { build, profileScript, DEFAULT_BUILD_UID, DEFAULT_TIMEOUT_MS, MIN_BUILD_MEMORY_MB, STATIC_SERVER_SOURCE } from './build.ts';
export type { BuildDeps } from './build.ts';
export { detect, parseProcfile, stackLabel, NOTHING_DETECTED } from './detect.ts';
export type { Detection, NodePlan, PythonPlan, StaticPlan, PackageManager } from './detect.ts';
export { extractSource, scanArchive, safeEntryPath, symlinkStaysInside } from './extract.ts';
export type { ExtractOptions } from './extract.ts';
export { createArtifact, sanitizeTree, treeBytes, AUTO_GZIP_LIMIT } from './artifact.ts';
export type { Compression, ArtifactInfo, TarEngine } from './artifact.ts';
export { DepCache, nodeCacheKey, pythonCacheKey, hashKey } from './cache.ts';
export { NodeProvisioner, resolveNodeVersion, hostSatisfies, summarizeMajors, nodePackageName, parseIntegrity } from './node-runtime.ts';
export type { NodeDistOptions, RegistryMetadata, NodeRuntimeChoice } from './node-runtime.ts';
export { RegistryProxy, DEFAULT_ALLOWED_HOSTS } from './proxy.ts';
export type { RegistryProxyOptions } from './proxy.ts';
export { BuildError } from './errors.ts';
export { buildImage, IMAGE_CONFIG_FILE, IMAGE_ROOTFS_DIR } from './image-build.ts';
export type { ImageBuildDeps } from './image-build.ts';
