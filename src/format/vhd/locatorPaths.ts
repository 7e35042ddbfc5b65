// Where a VHD child's parent may be: the paths its parent locators and unicode name lead to.
import * as nodePath from 'path';
import { isRemoteLocation } from '../../io/byteSource';
import { ParentCandidate, ParentCandidates, ParentLocatorSource } from '../diskImage';
import { LOCATOR_ENTRY_SIZE, ParentLocatorEntry } from './parentLocator';
import { LOCATORS_OFFSET } from './dynamicHeader';

/** A locator entry and its decoded path (null when unreadable or an opaque blob). */
export interface LocatorData {
  entry: ParentLocatorEntry;
  path: string | null;
  /** Why the path could not be read, when it could not. */
  problem?: string;
}

const WINDOWS_ABSOLUTE = /^(?:[a-zA-Z]:[\\/]|\\\\|\/\/)/;
/** The order locators are tried in: relative first, then absolute, then the deprecated ones. */
const LOCATOR_ORDER = ['W2ru', 'W2ku', 'MacX', 'Wi2r', 'Wi2k'];

/** `.\dir\parent.vhd` or `..\x.vhd` -> a path relative to the child's folder, with this OS's separators. */
function fromWindowsRelative(p: string): string {
  return p.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
}

function windowsBaseName(p: string): string {
  const parts = p.split(/[\\/]/);
  return parts[parts.length - 1];
}

/**
 * An absolute path: a Windows path that cannot exist here falls back to its file name in the
 * child's folder; a path of this OS is tried as is, then by its file name in the child's folder.
 */
function absoluteCandidates(dir: string, via: string, raw: string): ParentCandidate[] {
  if (WINDOWS_ABSOLUTE.test(raw) && process.platform !== 'win32') return [{ via, raw, path: nodePath.join(dir, windowsBaseName(raw)) }];
  if (nodePath.isAbsolute(raw)) return [{ via, raw, path: raw }, { via, raw, path: nodePath.join(dir, nodePath.basename(raw)) }];
  return [{ via, raw, path: nodePath.resolve(dir, fromWindowsRelative(raw)) }];
}

/** The paths one locator leads to: W2ru/Wi2r relative to the child's folder, the others absolute. */
function locatorCandidates(dir: string, code: string, raw: string): ParentCandidate[] {
  // A URL (a parent on a server, recorded in MacX) is tried as it is.
  if (isRemoteLocation(raw)) return [{ via: code, raw, path: raw }];
  if (code === 'W2ru' || code === 'Wi2r') return [{ via: code, raw, path: nodePath.resolve(dir, fromWindowsRelative(raw)) }];
  if (LOCATOR_ORDER.includes(code)) return absoluteCandidates(dir, code, raw);
  return [];
}

/**
 * A differencing VHD's parent candidates: W2ru (relative to the child's folder), W2ku (absolute),
 * MacX, the deprecated Wi2r/Wi2k, then the header's unicode name.
 */
export function vhdParentCandidates(childPath: string, headerOffset: number, locatorData: LocatorData[], unicodeName: string): ParentCandidates {
  const dir = nodePath.dirname(nodePath.resolve(childPath));
  const candidates: ParentCandidate[] = [];
  const unreadable: string[] = [];
  for (const code of LOCATOR_ORDER) {
    for (const l of locatorData.filter((d) => d.entry.platformCode === code)) {
      if (l.path === null) {
        unreadable.push(`${code}: unreadable (${l.problem ?? 'no path'})`);
        continue;
      }
      candidates.push(...locatorCandidates(dir, code, l.path));
    }
  }
  if (unicodeName) candidates.push(...absoluteCandidates(dir, 'unicode name', unicodeName));
  const sources: ParentLocatorSource[] = locatorData.filter((l) => l.path !== null).map((l) => ({
    label: `${l.entry.platformCode.replace(/[^\x20-\x7e]/g, '.')} locator`,
    structure: 'parent locator',
    offset: headerOffset + LOCATORS_OFFSET + l.entry.index * LOCATOR_ENTRY_SIZE,
    raw: l.path!,
    candidates: locatorCandidates(dir, l.entry.platformCode, l.path!),
  }));
  return { candidates, unreadable, sources };
}
