/**
 * The field table a format gives the editor's Header view: every on-disk field with its file offset,
 * raw bytes and meaning, and every checksum stored vs computed. The view renders whatever a format
 * lists; these helpers keep the formats' tables alike.
 */

/** One on-disk field as the editor's header view shows it. All strings are plain text, never HTML. */
export interface HeaderField {
  structure: string;
  name: string;
  /** Absolute file offset of the field. */
  offset: number;
  size: number;
  /** Raw bytes as hex (long fields shortened, with the total length noted). */
  hex: string;
  decoded: string;
  /** Set on checksum fields and on values the reader warned about. */
  problem?: string;
}

export interface ChecksumCheck {
  structure: string;
  offset: number;
  stored: string;
  computed: string;
  ok: boolean;
}

export interface HeaderDescription {
  fields: HeaderField[];
  checksums: ChecksumCheck[];
}

const MAX_HEX_BYTES = 32;

export function hexOf(bytes: Uint8Array): string {
  const shown = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, MAX_HEX_BYTES)).toString('hex').replace(/(..)(?!$)/g, '$1 ');
  return bytes.length > MAX_HEX_BYTES ? `${shown} … (${bytes.length} bytes)` : shown;
}

/** Printable ASCII of a 4-byte code, other bytes as \xNN. */
export function showCode(code: string): string {
  return JSON.stringify(code).slice(1, -1).replace(/\\u00([0-9a-f]{2})/g, '\\x$1');
}

/** `2097152 bytes (2 MiB)`. */
export function bytesLabel(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${n} bytes` : `${n} bytes (${Number.isInteger(v) ? v : v.toFixed(2)} ${units[u]})`;
}
