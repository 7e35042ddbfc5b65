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

/**
 * Continues a CRC over `bytes` (start with crc = 0). A run of zeros at the end (most of a 64 KiB
 * region table, a header's reserved bytes) is found with memcmp and applied in O(log n) steps
 * instead of byte by byte: the checks stay cheap before the JIT has compiled the loop below
 * (a cold process checking a region table spent ~4 ms in it).
 */
export function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  if (bytes.length >= ZERO_TAIL_MIN) {
    const zeros = trailingZeros(bytes);
    if (zeros >= ZERO_TAIL_MIN) return crc32cZeros(crc32cTable(crc, bytes.subarray(0, bytes.length - zeros)), zeros);
  }
  return crc32cTable(crc, bytes);
}

/** Slicing by 8 over every byte. */
function crc32cTable(crc: number, bytes: Uint8Array): number {
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

/** Zero runs shorter than this go through the table loop (the search would cost more). */
const ZERO_TAIL_MIN = 256;
const ZERO_PAGE = Buffer.alloc(4096);

/**
 * How many bytes at the end of `bytes` are zero: memcmp whole pages, then halves down to 64 bytes,
 * then byte-wise (a few dozen calls for a 64 KiB table, each a few microseconds).
 */
function trailingZeros(bytes: Uint8Array): number {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = b.length;
  while (end >= 4096 && ZERO_PAGE.compare(b, end - 4096, end) === 0) end -= 4096;
  for (let step = 2048; step >= 64; step /= 2) {
    if (end >= step && ZERO_PAGE.compare(b, end - step, end, 0, step) === 0) end -= step;
  }
  while (end > 0 && b[end - 1] === 0) end--;
  return b.length - end;
}

const POLY = 0x82f63b78;

/**
 * a * b modulo the polynomial, in the reflected bit order the table uses (bit 31 is x^0). The
 * register's change over zero bytes is linear: n zero bytes multiply it by x^(8n) mod P.
 */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) mod P, built on first use (32 squarings). */
let X2N: Uint32Array | null = null;

/** x^(n * 2^k) mod P. */
function x2nModP(n: number, k: number): number {
  if (!X2N) {
    X2N = new Uint32Array(32);
    let p = 0x40000000; // x^1
    X2N[0] = p;
    for (let i = 1; i < 32; i++) X2N[i] = p = multModP(p, p);
  }
  let p = 0x80000000; // x^0
  for (; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = multModP(X2N[k & 31], p);
  return p;
}

/** Continues a CRC over `n` zero bytes without touching them. */
export function crc32cZeros(crc: number, n: number): number {
  return ~multModP(x2nModP(n, 3), ~crc >>> 0) >>> 0;
}
