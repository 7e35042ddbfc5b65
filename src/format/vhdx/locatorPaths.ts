// Where a VHDX child's parent may be: the paths its parent locator's key/value entries lead to.
import * as nodePath from 'path';
import { ParentCandidate, ParentCandidates, ParentLocatorSource } from '../diskImage';
import { ParentLocator } from './parentLocator';

const WINDOWS_ABSOLUTE = /^(?:[a-zA-Z]:[\\/]|\\\\|\/\/)/;
/** Tried in this order, as Hyper-V does: relative first, then the volume and absolute paths. */
export const LOCATOR_KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'] as const;

function baseName(p: string): string {
  const parts = p.split(/[\\/]/);
  return parts[parts.length - 1];
}

function keyCandidates(dir: string, key: string, raw: string): ParentCandidate[] {
  if (key === 'relative_path' && !WINDOWS_ABSOLUTE.test(raw) && !nodePath.isAbsolute(raw)) {
    return [{ via: key, raw, path: nodePath.resolve(dir, raw.replace(/\\/g, '/').replace(/^(\.\/)+/, '')) }];
  }
  // \\?\Volume{…}\dir\x.vhdx and C:\dir\x.vhdx cannot exist here: their file name next to the child.
  if (WINDOWS_ABSOLUTE.test(raw) && process.platform !== 'win32') return [{ via: key, raw, path: nodePath.join(dir, baseName(raw)) }];
  if (nodePath.isAbsolute(raw)) return [{ via: key, raw, path: raw }, { via: key, raw, path: nodePath.join(dir, nodePath.basename(raw)) }];
  return [{ via: key, raw, path: nodePath.resolve(dir, raw.replace(/\\/g, '/')) }];
}

/** `itemOffset`: file offset of the parent locator item (entries are named by their offset). */
export function vhdxParentCandidates(childPath: string, locator: ParentLocator | null, itemOffset: number): ParentCandidates {
  if (!locator) return { candidates: [], unreadable: ['no parent locator'], sources: [] };
  const dir = nodePath.dirname(nodePath.resolve(childPath));
  const candidates: ParentCandidate[] = [];
  const sources: ParentLocatorSource[] = [];
  for (const key of LOCATOR_KEYS) {
    const e = locator.entries.find((x) => x.key === key);
    if (!e || !e.value) continue;
    const c = keyCandidates(dir, key, e.value);
    candidates.push(...c);
    sources.push({ label: `${key} locator entry`, structure: 'parent locator', offset: itemOffset + e.at, raw: e.value, candidates: c });
  }
  return { candidates, unreadable: locator.problems.map((p) => `parent locator: ${p}`), sources };
}
