// A new differencing VHD over an open parent image.
import { statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImage } from '../diskImage';
import { isRemoteLocation } from '../../io/byteSource';
import { DEFAULT_BLOCK_SIZE, relativeLocatorPath, writeSparseImage } from './create';
import { DiskType } from './footer';
import { geometryForSize } from './geometry';
import { dateToVhdTimestamp } from './timestamp';
import { parseUuid } from './uuid';
import type { VhdImage } from './vhdImage';

export interface CreateChildOptions {
  overwrite?: boolean;
}

/**
 * Creates a differencing child of `parent`: same size, geometry and block size, the parent's
 * UUID and modification time, its file name as the unicode name, and W2ru + W2ku locators (UTF-16LE).
 */
export async function createVhdChild(parent: DiskImage, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  if (isRemoteLocation(parent.path)) return createRemoteChild(parent, childPath, options);
  const absParent = nodePath.resolve(parent.path);
  const vhdParent = parent.format === 'vhd' ? (parent as VhdImage) : null;
  await writeSparseImage(childPath, {
    // A raw parent's size need not be a whole number of sectors: the child rounds it up.
    size: Math.ceil(parent.virtualSize / 512) * 512,
    blockSize: parent.diskType !== 'fixed' ? parent.blockSize : DEFAULT_BLOCK_SIZE,
    diskType: DiskType.Differencing,
    geometry: vhdParent ? vhdParent.footer.geometry : geometryForSize(parent.virtualSize),
    parentUniqueId: parseUuid(parent.uuid),
    parentTimestamp: dateToVhdTimestamp(statSync(absParent).mtime),
    parentUnicodeName: nodePath.basename(absParent),
    locators: [
      { code: 'W2ru', data: Buffer.from(relativeLocatorPath(childPath, absParent), 'utf16le') },
      { code: 'W2ku', data: Buffer.from(absParent, 'utf16le') },
    ],
  }, options.overwrite);
}

/**
 * A child of a parent on a server. The URL goes in a MacX locator as UTF-8 text: the spec's MacX
 * holds a URL (file:// for local Mac paths), and Windows tools read only W2ru/W2ku/Wi2*, so they
 * see a differencing disk whose parent (named by the unicode name, the URL's last segment) is
 * missing, and say so, instead of following a path that means something else on their host.
 * The parent time is the parent's creation time when it is a VHD (a server gives no file time we
 * could compare later), else zero.
 */
async function createRemoteChild(parent: DiskImage, childPath: string, options: CreateChildOptions): Promise<void> {
  const vhdParent = parent.format === 'vhd' ? (parent as VhdImage) : null;
  const name = decodeURIComponent(new URL(parent.path).pathname.split('/').pop() || 'parent');
  await writeSparseImage(childPath, {
    size: Math.ceil(parent.virtualSize / 512) * 512,
    blockSize: parent.diskType !== 'fixed' ? parent.blockSize : DEFAULT_BLOCK_SIZE,
    diskType: DiskType.Differencing,
    geometry: vhdParent ? vhdParent.footer.geometry : geometryForSize(Math.ceil(parent.virtualSize / 512) * 512),
    parentUniqueId: parseUuid(parent.uuid),
    parentTimestamp: vhdParent ? vhdParent.footer.timestamp : 0,
    parentUnicodeName: name,
    locators: [{ code: 'MacX', data: Buffer.from(parent.path, 'utf8') }],
  }, options.overwrite);
}
