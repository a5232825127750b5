/**
 * @shellwego/oci: pulling OCI / Docker images from v2 registries into a root filesystem.
 */
export { parseReference, formatReference, isDigest, isLoopbackHost, ReferenceError, DOCKER_HUB } from './reference.ts';
export type { ImageReference } from './reference.ts';
export { parseChallenges, basicHeader, tokenUrl } from './auth.ts';
export type { Challenge, Credentials } from './auth.ts';
export { BlobCache, DigestMismatchError, digestOf, sha256Hex, verifyDigest } from './cache.ts';
export { RegistryClient, RegistryError, MEDIA, hostPlatform, imageConfigFrom } from './registry.ts';
export type { Descriptor, ImageConfig, Platform, PulledImage, RegistryClientOptions, RegistryErrorCode } from './registry.ts';
export { applyLayer, unpackLayers, layerTarStream, entryComponents, symlinkStaysInRoot, resolveDirInRoot, newBudget, UnsafeLayerError, DEFAULT_LIMITS } from './unpack.ts';
export type { UnpackBudget, UnpackLimits } from './unpack.ts';
export { readTar, TarFormatError } from './tar-reader.ts';
export type { TarHeader } from './tar-reader.ts';
export { fetchImage, resolveUser, runConfigFor, envFromList, ImageConfigError } from './image.ts';
export type { FetchImageOptions, ImageRunConfig } from './image.ts';
