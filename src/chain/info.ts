import * as nodePath from 'path';
import { formatCreatorVersion, trimCode } from '../format/vhd/footer';
import { vhdTimestampToIso } from '../format/vhd/timestamp';
import { openChain } from './chain';

/** The `diskimg info --json` object: this image, its parent link, and the chain as far as it resolves. */
export interface ImageInfo {
  format: 'vhd';
  path: string;
  diskType: 'fixed' | 'dynamic' | 'differencing';
  virtualSize: number;
  originalSize: number;
  chsSize: number;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  blockSize: number | null;
  uuid: string;
  creatorApplication: string;
  creatorVersion: string;
  creatorHostOs: string;
  timestamp: string;
  footerChecksumValid: boolean;
  headerChecksumValid: boolean | null;
  totalBlocks: number;
  allocatedBlocks: number;
  parent: null | {
    uuid: string;
    timestamp: string;
    name: string;
    locators: Array<{ platform: string; path: string | null }>;
    resolvedPath: string | null;
  };
  chain: Array<{ path: string; diskType: string; uuid: string }>;
  warnings: string[];
}

export async function describeImage(path: string): Promise<ImageInfo> {
  const chain = await openChain(nodePath.resolve(path), { tolerant: true });
  try {
    const img = chain.top;
    const f = img.footer;
    const link = chain.links[0];
    return {
      format: 'vhd',
      path: img.path,
      diskType: img.diskType,
      virtualSize: f.currentSize,
      originalSize: f.originalSize,
      chsSize: img.chsSize,
      geometry: { ...f.geometry },
      blockSize: img.header ? img.blockSize : null,
      uuid: img.uuid,
      creatorApplication: trimCode(f.creatorApplication),
      creatorVersion: formatCreatorVersion(f.creatorVersion),
      creatorHostOs: trimCode(f.creatorHostOs),
      timestamp: vhdTimestampToIso(f.timestamp),
      footerChecksumValid: img.footerChecksumValid,
      headerChecksumValid: img.headerChecksumValid,
      totalBlocks: img.blockCount,
      allocatedBlocks: img.allocatedBlockCount(),
      parent: img.parent
        ? {
          uuid: img.parent.uuid,
          timestamp: vhdTimestampToIso(img.parent.timestamp),
          name: img.parent.name,
          locators: img.parent.locators.map((l) => ({ ...l })),
          resolvedPath: link?.resolution.resolvedPath ?? null,
        }
        : null,
      chain: chain.layers.map((l) => ({ path: l.path, diskType: l.diskType, uuid: l.uuid })),
      warnings: [...chain.warnings],
    };
  } finally {
    await chain.close();
  }
}
