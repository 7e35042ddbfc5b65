// Pure helpers of the commands (no `vscode` import, so they are unit-tested as they are).
import { readdirSync } from 'fs';
import * as nodePath from 'path';
import { DiffData } from '../protocol';

const MAX_RANGES = 2000;

/** Puts a diff's block list on the grid of the image's own blocks (the diff's grid may be coarser). */
export function toDiffData(r: { identical: boolean; differingBytes: number; ranges: Array<{ start: number; length: number }>; blocks: number[]; blockSize: number },
  otherPath: string, blockSize: number, blockCount: number): DiffData {
  const changed = new Uint8Array(blockCount);
  for (const range of r.ranges) {
    const first = Math.floor(range.start / blockSize);
    const last = Math.min(blockCount - 1, Math.floor((range.start + range.length - 1) / blockSize));
    for (let b = first; b <= last; b++) changed[b] = 1;
  }
  return {
    otherPath, otherName: nodePath.basename(otherPath), identical: r.identical, differingBytes: r.differingBytes, changed,
    ranges: r.ranges.slice(0, MAX_RANGES), rangesTruncated: r.ranges.length > MAX_RANGES,
  };
}

/** `dir/name<suffix><ext>`, numbered when taken. */
export function freeName(near: string, suffix: string, ext?: string): string {
  const dir = nodePath.dirname(near);
  const e = ext ?? nodePath.extname(near) ?? '.vhd';
  const stem = nodePath.basename(near, nodePath.extname(near));
  const taken = new Set(safeList(dir));
  for (let i = 1; ; i++) {
    const name = `${stem}${suffix}${i === 1 ? '' : `-${i}`}${e}`;
    if (!taken.has(name)) return nodePath.join(dir, name);
  }
}

export function safeList(dir: string): string[] {
  try { return readdirSync(dir); } catch { return []; }
}

/** Core messages are "file: what (structure at offset)"; show them as one sentence. */
export function sentence(message: string): string {
  const m = message.trim();
  return /[.!?]$/.test(m) ? m : `${m}.`;
}
