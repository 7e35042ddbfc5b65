import * as nodePath from 'path';
import { getFormat } from '../format/registry';
import { Chain, openChain } from './chain';

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
      }
      : null,
    chain: chain.layers.map((l) => {
      const entry = { path: l.path, diskType: l.diskType, uuid: l.uuid };
      const fields = getFormat(l.format).summary(l).fields;
      return fields.kind === undefined ? entry : { ...entry, format: l.format, virtualSize: l.virtualSize, ...fields };
    }),
    warnings: [...chain.warnings],
  };
  return { info, lines: summary.lines };
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
