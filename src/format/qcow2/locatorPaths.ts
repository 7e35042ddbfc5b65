// Where a qcow2 overlay's backing file is: its recorded name, relative to the overlay's folder.
import * as nodePath from 'path';
import { ParentCandidates } from '../diskImage';

/** `json:{…}`, `nbd://…`, `http:`, `file:` and other protocol prefixes (a Windows drive letter is one letter). */
const PROTOCOL_PREFIX = /^([a-zA-Z][a-zA-Z0-9+.-]+):/;

/** Why a backing file name cannot be followed here, or null when it names a local file. */
export function backingNameProblem(name: string): string | null {
  if (name.length === 0) return 'the backing file name is empty';
  if (name.includes('\0')) return 'the backing file name contains a NUL byte';
  const m = PROTOCOL_PREFIX.exec(name);
  if (m) return `backing file '${name.length > 60 ? name.slice(0, 60) + '…' : name}' uses the protocol prefix '${m[1]}:', which is not supported`;
  return null;
}

export function qcow2ParentCandidates(childPath: string, name: string | null, nameOffset: number): ParentCandidates {
  if (name === null) return { candidates: [], unreadable: ['no backing file name'], sources: [] };
  const problem = backingNameProblem(name);
  if (problem) return { candidates: [], unreadable: [`backing file name: ${problem}`], sources: [] };
  const dir = nodePath.dirname(nodePath.resolve(childPath));
  const candidates = nodePath.isAbsolute(name)
    ? [{ via: 'backing file', raw: name, path: name }, { via: 'backing file', raw: name, path: nodePath.join(dir, nodePath.basename(name)) }]
    : [{ via: 'backing file', raw: name, path: nodePath.resolve(dir, name) }];
  return { candidates, unreadable: [], sources: [{ label: 'backing file name', structure: 'backing file name', offset: nameOffset, raw: name, candidates }] };
}
