import { statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { relativeLocatorPath } from '../format/vhd/create';
import { dateToVhdTimestamp } from '../format/vhd/timestamp';
import { formatUuid } from '../format/vhd/uuid';
import { VhdImage } from '../format/vhd/vhdImage';
import { openChain } from './chain';
import { realPath } from './findChildren';

export interface ReparentOptions {
  /** Accept a parent whose UUID is not the one the child records (and record the new one). */
  ignoreIdMismatch?: boolean;
}

export interface ReparentResult {
  child: string;
  parent: string;
  previousParentUuid: string;
  parentUuid: string;
  uuidChanged: boolean;
}

/**
 * Points a differencing child at `parentPath`: new W2ru and W2ku locators (UTF-16LE), the parent's
 * file name as unicode name, its UUID and modification time. The locator data goes to fresh space
 * appended before the footer (one write), and only then is the 1 KiB header rewritten in one write,
 * so a crash leaves either the old link or the new one, never a mix.
 */
export async function relinkTo(child: VhdImage, parentPath: string, parentUuid: Buffer): Promise<void> {
  const h = child.header!;
  const absParent = nodePath.resolve(parentPath);
  const w2ru = Buffer.from(relativeLocatorPath(child.path, absParent), 'utf16le');
  const w2ku = Buffer.from(absParent, 'utf16le');
  const ruSpace = Math.max(512, Math.ceil(w2ru.length / 512) * 512);
  const kuSpace = Math.max(512, Math.ceil(w2ku.length / 512) * 512);
  const region = Buffer.alloc(ruSpace + kuSpace);
  w2ru.copy(region, 0);
  w2ku.copy(region, ruSpace);
  const at = await child.appendRegion(region, { structure: 'parent locators', offset: child.layout.headerOffset! + 576 });
  await child.flush();
  await child.rewriteHeader({
    ...h,
    parentUniqueId: parentUuid,
    parentTimestamp: dateToVhdTimestamp(statSync(absParent).mtime),
    parentUnicodeName: nodePath.basename(absParent),
    locators: [
      { platformCode: 'W2ru', platformDataSpace: ruSpace, platformDataLength: w2ru.length, reserved: 0, platformDataOffset: at },
      { platformCode: 'W2ku', platformDataSpace: kuSpace, platformDataLength: w2ku.length, reserved: 0, platformDataOffset: at + ruSpace },
    ],
  });
  await child.flush();
}

/** `diskimg reparent`: re-link a child to a moved (or replaced) parent. */
export async function reparent(childPath: string, parentPath: string, options: ReparentOptions = {}): Promise<ReparentResult> {
  const child = await VhdImage.open(childPath, { writable: true });
  try {
    if (child.diskType !== 'differencing') {
      throw new DiskImageError(childPath, `is a ${child.diskType} image, not a differencing one: it has no parent to re-link`, 'footer', child.layout.footerOffset + 60, 'ENOTDIFF');
    }
    const headerOffset = child.layout.headerOffset!;
    if (realPath(parentPath) === realPath(childPath)) {
      throw new DiskImageError(childPath, 'an image cannot be its own parent', 'parent locators', headerOffset + 576, 'ECYCLE');
    }
    // The new parent's own chain must resolve and must not lead back to the child.
    const parentChain = await openChain(parentPath);
    let parentUuid: Buffer;
    try {
      if (parentChain.layers.some((l) => realPath(l.path) === realPath(childPath))) {
        throw new DiskImageError(childPath, `re-linking to ${parentPath} would make a cycle (its chain contains this image)`, 'parent locators', headerOffset + 576, 'ECYCLE');
      }
      const parent = parentChain.top;
      if (parent.virtualSize !== child.virtualSize) {
        throw new DiskImageError(childPath, `virtual size ${child.virtualSize} differs from ${parentPath}'s ${parent.virtualSize}`, 'footer', child.layout.footerOffset + 48, 'ESIZE');
      }
      parentUuid = parent.footer.uniqueId;
    } finally {
      await parentChain.close();
    }
    const previous = formatUuid(child.header!.parentUniqueId);
    const next = formatUuid(parentUuid);
    if (previous !== next && !options.ignoreIdMismatch) {
      throw new DiskImageError(childPath, `parent UUID mismatch: the child expects ${previous} but ${parentPath} is ${next} (use --ignore-id-mismatch to link anyway)`, 'dynamic header', headerOffset + 40, 'EUUID');
    }
    await relinkTo(child, parentPath, parentUuid);
    return { child: child.path, parent: nodePath.resolve(parentPath), previousParentUuid: previous, parentUuid: next, uuidChanged: previous !== next };
  } finally {
    await child.close();
  }
}
