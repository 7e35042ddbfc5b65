// A differencing VHDX's link to its parent: parent_linkage against the parent's DataWriteGuid, and re-linking.
import * as nodePath from 'path';
import { DiskImage, FieldLocation, ParentLinkCheck } from '../diskImage';
import { bracedGuid, formatGuid, parseGuid } from './guid';

/** The identity a VHDX child records for `parent`: a VHDX parent's DataWriteGuid, else its UUID. */
export function parentIdentity(parent: DiskImage): string {
  const dwg = (parent as { dataWriteGuid?: string }).dataWriteGuid;
  return parent.format === 'vhdx' && dwg ? dwg : parent.uuid;
}

/** parent_linkage must name the parent's DataWriteGuid (parent_linkage2 too may, during a re-link). */
export function checkVhdxParent(linkages: string[], parent: DiskImage, idLocation: FieldLocation): ParentLinkCheck {
  const found = parentIdentity(parent);
  return {
    idName: 'DataWriteGuid',
    expected: linkages[0] ?? '(none)',
    found,
    idMatches: linkages.includes(found),
    timestampMatches: null,
    timestampProblem: null,
    idLocation,
    timestampLocation: idLocation,
  };
}

/** The key/value pairs of a parent locator naming `parentPath` (seen from `childPath`) and `identity`. */
export function locatorPairs(childPath: string, parentPath: string, identity: string): Array<[string, string]> {
  const absParent = nodePath.resolve(parentPath);
  const rel = nodePath.relative(nodePath.dirname(nodePath.resolve(childPath)), absParent).split(nodePath.sep).join('\\');
  return [
    ['parent_linkage', bracedGuid(parseGuid(identity) ?? Buffer.alloc(16))],
    ['relative_path', rel.startsWith('..') ? rel : `.\\${rel}`],
    ['absolute_win32_path', absParent],
  ];
}

export { formatGuid };
