// What a parent is when it is not an image file next to its child: on a server, a raw file, a device.
import { statSync } from 'fs';
import { RawImage } from '../format/raw/rawImage';
import { isRemoteLocation } from '../io/byteSource';
import { cacheStatus, parentCachePath } from '../io/parentCache';
import type { Chain } from './chain';

/**
 * One shape for `info --json`, `check --json` and the editor's chain view. `kind` says where the
 * parent's bytes come from; `location` is the URL or the path; `size` its size in bytes (from the
 * server, or the cache's record of it when the server did not answer); `reachable` whether it
 * could be opened now; `cache` the fill of the local cache of a parent on a server.
 */
export interface ParentSource {
  kind: 'http' | 'nbd' | 'raw-file' | 'block-device';
  /** The URL's scheme for a parent on a server (`https`, `nbds+unix`…), else null. */
  scheme: string | null;
  location: string;
  /** The device node of a block device, else null. */
  device: string | null;
  /** The format the parent's bytes are read as (`vhd`, `raw`…), null when it could not be opened. */
  format: string | null;
  size: number | null;
  reachable: boolean;
  problem: string | null;
  cache: null | { path: string; cachedBytes: number; size: number; fill: number };
}

function remoteKind(url: string): { kind: 'http' | 'nbd'; scheme: string } {
  const scheme = new URL(url).protocol.replace(':', '').toLowerCase();
  return { kind: scheme.startsWith('http') ? 'http' : 'nbd', scheme };
}

/**
 * The parent of the layer at `depth` as a source, or null when it is an ordinary local image file
 * (or the layer has no parent). Reads no parent bytes: the chain was opened already.
 */
export function describeParentSource(chain: Chain, depth = 0): ParentSource | null {
  const link = chain.links.find((l) => l.depth === depth);
  const location = link?.resolution.resolvedPath;
  if (!link || !location) return null;
  const parent = chain.layers[depth + 1] ?? null;
  if (isRemoteLocation(location)) {
    const cache = cacheStatus(parentCachePath(chain.layers[depth].path));
    return {
      ...remoteKind(location),
      location,
      device: null,
      format: parent?.format ?? null,
      size: parent ? parent.fileSize : cache?.size ?? null,
      reachable: parent !== null,
      problem: parent ? null : link.problem,
      cache: cache ? { path: cache.path, cachedBytes: cache.cachedBytes, size: cache.size, fill: cache.size ? cache.cachedBytes / cache.size : 1 } : null,
    };
  }
  if (parent && !(parent instanceof RawImage)) return null;
  let device = false;
  try {
    device = statSync(location).isBlockDevice();
  } catch {
    device = false;
  }
  if (!parent && !device) return null; // a missing local parent: the link's problem says it all
  return {
    kind: device ? 'block-device' : 'raw-file',
    scheme: null,
    location,
    device: device ? location : null,
    format: parent ? 'raw' : null,
    size: parent ? parent.virtualSize : null,
    reachable: parent !== null,
    problem: parent ? null : link.problem,
    cache: null,
  };
}
