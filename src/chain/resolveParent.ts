import { statSync } from 'fs';
import * as nodePath from 'path';
import { VhdImage } from '../format/vhd/vhdImage';

export interface ParentResolution {
  /** The parent file found, or null. */
  resolvedPath: string | null;
  /** Which locator (or the unicode name) found it. */
  via: string | null;
  /** Each candidate tried, with what happened, for error messages. */
  tried: string[];
}

const WINDOWS_ABSOLUTE = /^(?:[a-zA-Z]:[\\/]|\\\\|\/\/)/;

/** `.\dir\parent.vhd` or `..\x.vhd` -> a path relative to the child's folder, with this OS's separators. */
function fromWindowsRelative(p: string): string {
  return p.replace(/\\/g, '/').replace(/^(\.\/)+/, '');
}

function windowsBaseName(p: string): string {
  const parts = p.split(/[\\/]/);
  return parts[parts.length - 1];
}

function checkCandidate(candidate: string): string | null {
  try {
    const st = statSync(candidate);
    if (st.isDirectory()) return 'is a directory';
    if (!st.isFile()) return 'is not a regular file';
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'not found';
    if (code === 'ELOOP') return 'symbolic link loop';
    return (e as Error).message;
  }
}

/**
 * Finds a differencing image's parent: W2ru (relative to the child's folder), W2ku (absolute; a
 * Windows path that does not exist here falls back to its file name in the child's folder), MacX,
 * the deprecated Wi2r/Wi2k, then the header's unicode name.
 */
export function resolveParent(child: VhdImage): ParentResolution {
  const dir = nodePath.dirname(nodePath.resolve(child.path));
  const tried: string[] = [];
  const candidates: Array<{ via: string; raw: string; path: string }> = [];
  const byCode = (code: string) => child.locatorData.filter((l) => l.entry.platformCode === code);
  const addAbsolute = (via: string, raw: string) => {
    if (WINDOWS_ABSOLUTE.test(raw) && process.platform !== 'win32') {
      candidates.push({ via, raw, path: nodePath.join(dir, windowsBaseName(raw)) });
    } else if (nodePath.isAbsolute(raw)) {
      candidates.push({ via, raw, path: raw });
      candidates.push({ via, raw, path: nodePath.join(dir, nodePath.basename(raw)) });
    } else {
      candidates.push({ via, raw, path: nodePath.resolve(dir, fromWindowsRelative(raw)) });
    }
  };
  for (const code of ['W2ru', 'W2ku', 'MacX', 'Wi2r', 'Wi2k']) {
    for (const l of byCode(code)) {
      if (l.path === null) {
        tried.push(`${code}: unreadable (${l.problem ?? 'no path'})`);
        continue;
      }
      if (code === 'W2ru' || code === 'Wi2r') {
        candidates.push({ via: code, raw: l.path, path: nodePath.resolve(dir, fromWindowsRelative(l.path)) });
      } else {
        addAbsolute(code, l.path);
      }
    }
  }
  const name = child.parent?.name ?? '';
  if (name) addAbsolute('unicode name', name);

  for (const c of candidates) {
    const problem = checkCandidate(c.path);
    if (problem === null) return { resolvedPath: c.path, via: c.via, tried };
    tried.push(`${c.via} '${c.raw}' -> ${c.path}: ${problem}`);
  }
  if (candidates.length === 0 && tried.length === 0) tried.push('no parent locators and no parent name');
  return { resolvedPath: null, via: null, tried };
}
