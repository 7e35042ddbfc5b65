import { randomBytes } from '../../io/randomBytes';

/**
 * VHDX GUIDs are stored the Microsoft way: the first three fields little-endian, the last eight
 * bytes as they are. Text form is lower-case hyphenated; parent_linkage values carry braces.
 */
export const GUID_SIZE = 16;

export function formatGuid(b: Uint8Array, at = 0): string {
  const x = Buffer.from(b.buffer, b.byteOffset + at, 16);
  const hex = (from: number, to: number) => x.subarray(from, to).toString('hex');
  const le = (from: number, len: number) => Buffer.from(x.subarray(from, from + len)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${hex(8, 10)}-${hex(10, 16)}`;
}

/** Parses `xxxxxxxx-xxxx-…` with or without braces; null when it is not a GUID. */
export function parseGuid(text: string): Buffer | null {
  const m = /^\{?([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})\}?$/.exec(text.trim());
  if (!m) return null;
  const out = Buffer.alloc(16);
  Buffer.from(m[1], 'hex').reverse().copy(out, 0);
  Buffer.from(m[2], 'hex').reverse().copy(out, 4);
  Buffer.from(m[3], 'hex').reverse().copy(out, 6);
  Buffer.from(m[4] + m[5], 'hex').copy(out, 8);
  return out;
}

/** A random (version 4) GUID in stored byte order. */
export function newGuid(): Buffer {
  const b = randomBytes(16);
  b[7] = (b[7] & 0x0f) | 0x40; // version nibble sits in the little-endian third field's high byte
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

export function isZeroGuid(b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (b[i] !== 0) return false;
  return true;
}

/** Braced upper-case form, as Hyper-V writes parent_linkage. */
export function bracedGuid(b: Uint8Array): string {
  return `{${formatGuid(b)}}`;
}

export function guidEquals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}
