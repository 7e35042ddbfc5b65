import * as nodePath from 'path';
import { getFormat } from '../format/registry';
import { isRemoteLocation } from '../io/byteSource';
import { cacheStatus, parentCachePath } from '../io/parentCache';
import { Chain, openChain } from './chain';
import { describeParentSource, ParentSource } from './parentSource';

/**
 * The `diskimg info --json` object: this image, its parent link, and the chain as far as it
 * resolves. Between `virtualSize` and `totalBlocks` come the format's own fields (VHD: original
 * size, CHS, block size, UUID, creator, checksums), in the order the format gives them.
 */
export interface ImageInfo {
  format: string;
  path: string;
  diskType: 'fixed' | 'dynamic' | 'differencing';
  virtualSize: number;
  totalBlocks: number;
  allocatedBlocks: number;
  parent: null | {
    uuid: string;
    timestamp: string | null;
    name: string;
    locators: Array<{ platform: string; path: string | null }>;
    resolvedPath: string | null;
    /** A parent on a server: kind, URL, size, whether it could be opened, and the local cache's fill. */
    remote?: {
      kind: string;
      url: string;
      size: number | null;
      reachable: boolean;
      problem: string | null;
      cache: { path: string; cachedBytes: number; size: number; fill: number } | null;
    };
    /** A parent on a server, a raw file or a block device (see parentSource.ts); null for an image file. */
    source?: ParentSource | null;
  };
  /**
   * Each layer. A layer that is not an image file of its own (a raw file, a block device) adds
   * `format`, `kind` (`raw file`, `block device`), `virtualSize` and the format's source fields.
   */
  chain: Array<{ path: string; diskType: string; uuid: string; format?: string; kind?: string; virtualSize?: number }>;
  warnings: string[];
  [formatField: string]: unknown;
}

/** `info` as JSON and as the text lines the format adds after `virtual size`. */
export interface ImageDescription {
  info: ImageInfo;
  lines: Array<[string, string]>;
}

function describeChain(chain: Chain): ImageDescription {
  const img = chain.top;
  const link = chain.links[0];
  const summary = getFormat(img.format).summary(img);
  const info: ImageInfo = {
    format: img.format,
    path: img.path,
    diskType: img.diskType,
    virtualSize: img.virtualSize,
    ...summary.fields,
    totalBlocks: img.blockCount,
    allocatedBlocks: img.allocatedBlockCount(),
    parent: img.parent
      ? {
        uuid: img.parent.uuid,
        timestamp: img.parent.timestamp,
        name: img.parent.name,
        locators: img.parent.locators.map((l) => ({ ...l })),
        resolvedPath: link?.resolution.resolvedPath ?? null,
        ...remoteParent(chain),
        source: describeParentSource(chain),
      }
      : null,
    chain: chain.layers.map((l) => {
      const entry = { path: l.path, diskType: l.diskType, uuid: l.uuid };
      const fields = getFormat(l.format).summary(l).fields;
      const remote = isRemoteLocation(l.path) ? { kind: new URL(l.path).protocol.replace(':', ''), url: l.path } : {};
      if (fields.kind === undefined && !isRemoteLocation(l.path)) return entry;
      return { ...entry, format: l.format, virtualSize: l.virtualSize, ...fields, ...remote };
    }),
    warnings: [...chain.warnings],
  };
  return { info, lines: summary.lines };
}

/** A parent on a server: its URL, whether it answered, and how much of it the local cache holds. */
function remoteParent(chain: Chain): Record<string, unknown> {
  const url = chain.links[0]?.resolution.resolvedPath;
  if (!url || !isRemoteLocation(url)) return {};
  const reachable = chain.layers.length > 1;
  const cache = cacheStatus(parentCachePath(chain.top.path));
  return {
    remote: {
      kind: new URL(url).protocol.replace(':', ''),
      url,
      size: reachable ? chain.layers[1].virtualSize : cache?.size ?? null,
      reachable,
      problem: reachable ? null : chain.links[0].problem,
      cache: cache ? { path: cache.path, cachedBytes: cache.cachedBytes, size: cache.size, fill: cache.size ? cache.cachedBytes / cache.size : 1 } : null,
    },
  };
}

/** `info` of an image with the format's text lines (the CLI prints them). */
export async function describeImageWithLines(path: string): Promise<ImageDescription> {
  const chain = await openChain(nodePath.resolve(path), { tolerant: true });
  try {
    return describeChain(chain);
  } finally {
    await chain.close();
  }
}

export async function describeImage(path: string): Promise<ImageInfo> {
  return (await describeImageWithLines(path)).info;
}
