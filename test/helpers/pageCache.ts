import { hasTool, sh } from './util';

/** statfs f_type of the file systems the direct-write tests tell apart. */
export const TMPFS_MAGIC = 0x01021994;
export const EXT4_MAGIC = 0xef53;

/** Bytes of `file` held in the page cache (fincore), or null without the tool. */
export function cachedBytes(file: string): number | null {
  if (!hasTool('fincore')) return null;
  return Number(sh('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]).trim());
}
