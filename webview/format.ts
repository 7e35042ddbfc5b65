/** Number and byte formatting for the views, pure. */
export { formatBytes } from '../src/formatBytes';

export function formatInt(n: number): string {
  // Integers are grouped here as en-US groups them: the first toLocaleString call loads the locale
  // data, ~50 ms on the overview's first render (the 2 TiB first paint).
  if (!Number.isSafeInteger(n)) return n.toLocaleString('en-US');
  const digits = String(Math.abs(n));
  let out = '';
  for (let i = digits.length; i > 0; i -= 3) out = digits.slice(Math.max(0, i - 3), i) + (out ? `,${out}` : '');
  return n < 0 ? `-${out}` : out;
}

export function hex(n: number, width = 0): string {
  return `0x${n.toString(16).padStart(width, '0')}`;
}

export function percent(part: number, whole: number): string {
  if (whole <= 0) return '0%';
  const p = (part / whole) * 100;
  return `${p === 0 || p === 100 || p >= 10 ? p.toFixed(0) : p.toFixed(1)}%`;
}

/** A hex dump of `bytes`, 16 per line: "000: 00 11 …  ascii". */
export function hexDump(bytes: Uint8Array, base = 0): string[] {
  const lines: string[] = [];
  for (let o = 0; o < bytes.length; o += 16) {
    const row = bytes.subarray(o, o + 16);
    const h = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const a = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${(base + o).toString(16).padStart(3, '0')}: ${h.padEnd(47)}  ${a}`);
  }
  return lines;
}

/** Parses "1234", "0x4d2", "1M", "2G" (binary units) into a non-negative integer, or null. */
export function parseNumber(text: string): number | null {
  const s = text.trim().replace(/_/g, '');
  let v: number;
  if (/^0x[0-9a-f]+$/i.test(s)) v = parseInt(s.slice(2), 16);
  else {
    const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(s);
    if (!m) return null;
    v = Math.floor(parseFloat(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 } as Record<string, number>)[m[2].toLowerCase()]);
  }
  return Number.isSafeInteger(v) && v >= 0 ? v : null;
}

/** The block holding an LBA or byte offset, or an error sentence. */
export function locate(kind: 'lba' | 'offset', text: string, blockSize: number, virtualSize: number): { block: number; sector: number } | string {
  const v = parseNumber(text);
  if (v === null) return `'${text}' is not a number.`;
  const offset = kind === 'lba' ? v * 512 : v;
  if (offset >= virtualSize) return `${kind === 'lba' ? `LBA ${v}` : `Offset ${v}`} is past the end of the disk (${virtualSize} bytes).`;
  return { block: Math.floor(offset / blockSize), sector: Math.floor(offset / 512) };
}
