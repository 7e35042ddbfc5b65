/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), the checksum of every VHDX header,
 * region table and log entry. Table-driven, eight bytes per step ("slicing by 8") so checking a
 * 64 KiB region table or a 1 MiB log costs little.
 */
const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[i] = c >>> 0;
  }
  t.push(t0);
  for (let s = 1; s < 8; s++) {
    const ts = new Uint32Array(256);
    for (let i = 0; i < 256; i++) ts[i] = (t[s - 1][i] >>> 8) ^ t0[t[s - 1][i] & 0xff];
    t.push(ts);
  }
  return t;
})();

/** Continues a CRC over `bytes` (start with crc = 0). */
export function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const n = bytes.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24))) >>> 0;
    c = t7[a & 0xff] ^ t6[(a >>> 8) & 0xff] ^ t5[(a >>> 16) & 0xff] ^ t4[a >>> 24]
      ^ t3[bytes[i + 4]] ^ t2[bytes[i + 5]] ^ t1[bytes[i + 6]] ^ t0[bytes[i + 7]];
  }
  for (; i < n; i++) c = t0[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

export function crc32c(bytes: Uint8Array): number {
  return crc32cUpdate(0, bytes);
}

/** CRC-32C of a structure whose 4-byte checksum field at `at` counts as zero. */
export function crc32cWithZeroField(bytes: Uint8Array, at: number): number {
  let c = crc32cUpdate(0, bytes.subarray(0, at));
  c = crc32cUpdate(c, new Uint8Array(4));
  return crc32cUpdate(c, bytes.subarray(at + 4));
}
