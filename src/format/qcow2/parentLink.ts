// A qcow2 overlay records its backing file's name and (optionally) format, no identity: the link
// check compares the recorded backing format with the parent's.
import * as nodePath from 'path';
import { DiskImage, FieldLocation, ParentLinkCheck } from '../diskImage';

/** QEMU's driver names for this project's formats, and back. */
const QEMU_NAMES: Record<string, string> = { vhd: 'vpc', vhdx: 'vhdx', qcow2: 'qcow2', raw: 'raw' };

export function qemuFormatName(format: string): string {
  return QEMU_NAMES[format] ?? format;
}

export function checkQcow2Parent(backingFormat: string | null, parent: DiskImage, location: FieldLocation): ParentLinkCheck {
  const found = qemuFormatName(parent.format);
  return {
    idName: 'backing format',
    expected: backingFormat ?? '(not recorded)',
    found,
    idMatches: backingFormat === null || backingFormat === found,
    timestampMatches: null,
    timestampProblem: null,
    idLocation: location,
    timestampLocation: location,
  };
}

/** The backing file name an overlay at `childPath` records for `parentPath`: relative when both share a folder tree. */
export function backingFileName(childPath: string, parentPath: string): string {
  const rel = nodePath.relative(nodePath.dirname(nodePath.resolve(childPath)), nodePath.resolve(parentPath));
  return rel.split(nodePath.sep).join('/');
}
