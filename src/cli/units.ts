/** Parses `1048576`, `512K`, `2M`, `10G`, `2T` (binary units; an optional trailing `B`/`iB`). */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(text);
  if (!m) throw new Error(`${what}: '${text}' is not a size (use N, NK, NM, NG or NT)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const v = Math.round(parseFloat(m[1]) * mult);
  if (!Number.isSafeInteger(v)) throw new Error(`${what}: '${text}' is too large`);
  return v;
}

export { formatBytes } from '../formatBytes';
