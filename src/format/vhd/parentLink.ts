// A differencing VHD's link to its parent: comparing the recorded identity, and re-writing it.
import { statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImage, FieldLocation, ParentLinkCheck } from '../diskImage';
import { isRemoteLocation } from '../../io/byteSource';
import { relativeLocatorPath } from './create';
import { dateToVhdTimestamp, vhdTimestampToIso } from './timestamp';
import { formatUuid, parseUuid } from './uuid';
import type { VhdImage } from './vhdImage';

/** What the child records: the parent's UUID and a time, and where they are. */
export interface RecordedParent {
  parentUniqueId: Uint8Array;
  parentTimestamp: number;
  /** Offset of the dynamic header. */
  headerOffset: number;
}

/** The parent's creation time as its footer records it (VHD parents only), else null. */
function creationTimestamp(parent: DiskImage): number | null {
  return parent.format === 'vhd' ? (parent as VhdImage).footer.timestamp : null;
}

/**
 * UUID: must match. Timestamp: real tools write either the parent's creation time or its file's
 * modification time, so either matches (a mismatch is only a warning).
 */
export function checkVhdParent(recorded: RecordedParent, parent: DiskImage): ParentLinkCheck {
  const expected = formatUuid(recorded.parentUniqueId);
  // A parent on a server has no file time here: only its creation time (VHD) can match.
  const remote = isRemoteLocation(parent.path);
  const mtime = remote ? -1 : dateToVhdTimestamp(statSync(parent.path).mtime);
  const created = creationTimestamp(parent);
  const stored = recorded.parentTimestamp;
  const timestampMatches = stored === created || stored === mtime || (remote && created === null);
  const createdText = created === null ? 'unknown' : vhdTimestampToIso(created);
  const idLocation: FieldLocation = { structure: 'dynamic header', offset: recorded.headerOffset + 40 };
  return {
    idName: 'UUID',
    expected,
    found: parent.uuid,
    idMatches: expected === parent.uuid,
    timestampMatches,
    timestampProblem: timestampMatches ? null
      : `parent timestamp ${vhdTimestampToIso(stored)} matches neither the parent's creation time ${createdText} nor its modification time ${vhdTimestampToIso(mtime)}`,
    idLocation,
    timestampLocation: { structure: 'dynamic header', offset: recorded.headerOffset + 56 },
  };
}

/**
 * Points a differencing child at `parent`: new W2ru and W2ku locators (UTF-16LE), the parent's
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

/** relinkTo with the identity taken from an open parent image (any format: its `uuid`). */
export async function writeVhdParentLink(child: VhdImage, parent: DiskImage): Promise<void> {
  await relinkTo(child, parent.path, parseUuid(parent.uuid));
}
