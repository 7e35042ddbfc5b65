/**
 * The malformed corpus: a generator of broken images, each with the outcome it must have. Every case
 * says, for `info`, `map`/`read` and `check`, whether the command succeeds or which DiskImageError
 * (code, structure, offset, message) it raises, which warnings the chain carries, and which problem
 * `check` lists first for it.
 *
 * `node --require tsx/cjs test/fuzz/corpus.ts DIR` writes the corpus to DIR (for manual runs).
 */
import { execFileSync } from 'child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { ImageBytes } from './patch';

export interface ErrorExpectation {
  code: string;
  /** File the message names (basename); default: the case's image. */
  file?: string;
  structure?: string;
  offset?: number;
  message: RegExp;
}

export interface CheckExpectation {
  ok: boolean;
  /** Problems that must be listed (each: severity, structure, offset, message). */
  has: Array<{ severity: 'error' | 'warning'; structure: string; offset?: number; message: RegExp }>;
}

export interface CorpusCase {
  name: string;
  /** What is broken, in words. */
  what: string;
  image: string;
  /** `diskimg info` (tolerant: a broken parent link is a warning there). */
  info: 'ok' | ErrorExpectation;
  /** `diskimg map` and `diskimg read` (the whole disk). */
  read: 'ok' | ErrorExpectation;
  /** Warnings the chain (info) reports; each pattern must match one. */
  warnings?: RegExp[];
  check: CheckExpectation | ErrorExpectation;
}

export interface Corpus {
  dir: string;
  cases: CorpusCase[];
}

const KiB = 1024;
const BLOCK = 512 * KiB;

function patternBytes(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt + (i >> 9)) & 0xff || 1;
  return b;
}

async function write(image: string, writes: Array<[number, Buffer]>): Promise<void> {
  const chain = await openChain(image, { writable: true });
  try {
    for (const [o, d] of writes) await chain.write(o, d);
  } finally {
    await chain.close();
  }
}

function utf16le(s: string): Buffer {
  return Buffer.from(s, 'utf16le');
}

/** Rewrites a child's locators (data written after the header area, in the space the original ones used). */
export function setLocators(img: ImageBytes, locs: Array<{ code: string; data: Buffer }>, name?: string): void {
  const first = img.locatorEntry(0);
  let at = first.offset;
  for (let i = 0; i < 8; i++) img.locator(i, { code: '\0\0\0\0', space: 0, length: 0, offset: 0 });
  locs.forEach((l, i) => {
    img.b.fill(0, at, at + 512);
    l.data.copy(img.b, at);
    img.locator(i, { code: l.code, space: 512, length: l.data.length, offset: at });
    at += 512;
  });
  if (name !== undefined) {
    const h = img.header;
    img.b.fill(0, h + 64, h + 576);
    const enc = Buffer.from(name, 'utf16le');
    enc.swap16();
    enc.copy(img.b, h + 64);
  }
}

export async function buildCorpus(dir: string): Promise<Corpus> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const src = path.join(dir, 'src');
  mkdirSync(src);

  // Pristine material: a dynamic image with blocks 0 and 3 allocated, a fixed image, and a chain.
  const dyn = path.join(src, 'dynamic.vhd');
  await createImage(dyn, { size: 4 * 1024 * KiB, blockSize: BLOCK, exactSize: true });
  await write(dyn, [[1000, patternBytes(3000, 1)], [3 * BLOCK + 4096, patternBytes(8192, 2)]]);
  const fixed = path.join(src, 'fixed.vhd');
  await createImage(fixed, { size: 1024 * KiB, type: 'fixed', exactSize: true });
  await write(fixed, [[0, patternBytes(4096, 3)]]);
  const base = path.join(src, 'base.vhd');
  await createImage(base, { size: 2 * 1024 * KiB, blockSize: BLOCK, exactSize: true });
  await write(base, [[0, patternBytes(BLOCK * 2, 4)]]);
  const childSrc = path.join(src, 'child.vhd');
  await createChild(base, childSrc);
  await write(childSrc, [[700, patternBytes(5000, 5)]]);

  const D = readFileSync(dyn);
  const F = readFileSync(fixed);
  const C = readFileSync(childSrc);
  const B = readFileSync(base);
  const dynImg = new ImageBytes(D);
  const H = dynImg.header; // 512
  const T = dynImg.table; // 1536
  const E = D.length - 512; // end footer
  const FE = F.length - 512;
  const childImg = new ImageBytes(C);
  const CH = childImg.header;
  const CE = C.length - 512;

  const cases: CorpusCase[] = [];
  /** Each case in its own folder, with an intact parent when it is a child. */
  const place = (name: string, bytes: Buffer, fileName: string, parent: Buffer | null = null): string => {
    const d = path.join(dir, name);
    mkdirSync(d, { recursive: true });
    if (parent) writeFileSync(path.join(d, 'base.vhd'), parent);
    const p = path.join(d, fileName);
    writeFileSync(p, bytes);
    return p;
  };
  const dynCase = (name: string, what: string, edit: (i: ImageBytes) => void, rest: Omit<CorpusCase, 'name' | 'what' | 'image'>) => {
    const i = new ImageBytes(Buffer.from(D));
    edit(i);
    cases.push({ name, what, image: place(name, i.b, 'disk.vhd'), ...rest });
  };
  const fixedCase = (name: string, what: string, edit: (i: ImageBytes) => void, rest: Omit<CorpusCase, 'name' | 'what' | 'image'>) => {
    const i = new ImageBytes(Buffer.from(F));
    edit(i);
    cases.push({ name, what, image: place(name, i.b, 'disk.vhd'), ...rest });
  };
  const childCase = (name: string, what: string, edit: (i: ImageBytes, d: string) => void, rest: Omit<CorpusCase, 'name' | 'what' | 'image'>, parent: Buffer | null = B) => {
    const d = path.join(dir, name);
    mkdirSync(d, { recursive: true });
    const i = new ImageBytes(Buffer.from(C));
    edit(i, d);
    cases.push({ name, what, image: place(name, i.b, 'child.vhd', parent), ...rest });
  };
  const fmt = (structure: string, offset: number, message: RegExp, file?: string): ErrorExpectation => ({ code: 'EFORMAT', structure, offset, message, file });

  // ---- Too small, truncated in each structure
  dynCase('empty', 'a zero-byte file', (i) => i.truncate(0), {
    info: fmt('footer', 0, /file is too small to be a VHD \(0 bytes\)/), read: fmt('footer', 0, /too small/),
    check: { code: 'EFORMAT', structure: 'file', offset: 0, message: /too small/ },
  });
  dynCase('tiny', 'a 100-byte file', (i) => i.truncate(100), {
    info: fmt('footer', 0, /too small to be a VHD \(100 bytes\)/), read: fmt('footer', 0, /too small/),
    check: { code: 'EFORMAT', structure: 'file', offset: 0, message: /too small/ },
  });
  dynCase('truncated-after-footer-copy', 'only the footer copy and 88 bytes of header left (600 bytes)', (i) => i.truncate(600), {
    info: fmt('footer', 16, /dynamic header offset 512 is outside the file \(600 bytes\)/), read: fmt('footer', 16, /dynamic header offset 512 is outside/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: 88, message: /no 'conectix' footer at the end/ }, { severity: 'error', structure: 'footer copy', offset: 16, message: /dynamic header offset 512 is outside the file/ }] },
  });
  dynCase('truncated-in-footer-copy', 'only the first 511 bytes (read as a 511-byte footer whose header is missing)', (i) => i.truncate(511), {
    info: fmt('footer', 16, /dynamic header offset 512 is outside the file \(511 bytes\)/), read: fmt('footer', 16, /outside the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: 16, message: /dynamic header offset 512 is outside the file/ }] },
  });
  dynCase('truncated-in-header', 'cut inside the dynamic header (1000 bytes left)', (i) => i.truncate(1000), {
    info: fmt('footer', 16, /dynamic header offset 512 is outside the file \(1000 bytes\)/), read: fmt('footer', 16, /dynamic header offset 512 is outside/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: 488, message: /no 'conectix' footer at the end/ }, { severity: 'error', structure: 'footer copy', offset: 16, message: /dynamic header offset 512 is outside the file/ }] },
  });
  dynCase('truncated-in-bat', 'cut inside the BAT (1550 bytes left)', (i) => i.truncate(T + 14), {
    info: fmt('dynamic header', H + 16, /BAT of 8 entries at offset 1536 does not fit in the file \(1550 bytes\)/), read: fmt('dynamic header', H + 16, /BAT of 8 entries/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 16, message: /BAT of 8 entries at offset 1536 \(1536\.\.1568\) does not fit in the file/ }] },
  });
  {
    const b3 = dynImg.batEntry(3) * 512;
    dynCase('truncated-in-block', 'cut in the middle of block 3 (a crash while appending it)', (i) => i.truncate(b3 + 512 + 100000), {
      info: 'ok', warnings: [/no footer at the end of the file \(crash while appending a block\?\); using the copy at offset 0/],
      read: { code: 'ECORRUPT', structure: 'BAT entry', offset: T + 12, message: new RegExp(`block 3 \\(${b3}\\.\\.${b3 + 512 + BLOCK}\\) runs past the end of the file \\(${b3 + 512 + 100000} bytes\\)`) },
      check: { ok: false, has: [{ severity: 'error', structure: 'BAT entry', offset: T + 12, message: /block 3 .* runs past the end of the data/ }] },
    });
  }
  dynCase('truncated-in-end-footer', 'the end footer cut to 200 bytes', (i) => i.truncate(E + 200), {
    info: 'ok', warnings: [/no footer at the end of the file .*using the copy at offset 0/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', message: /no 'conectix' footer at the end of the file .*copy at offset 0 is intact/ }] },
  });
  dynCase('end-footer-missing', 'the end footer entirely missing (crash after a block append)', (i) => i.truncate(E), {
    info: 'ok', warnings: [/no footer at the end of the file \(crash while appending a block\?\); using the copy at offset 0/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E - 512, message: /no 'conectix' footer at the end of the file/ }] },
  });
  fixedCase('fixed-truncated-footer', 'a fixed image whose footer was cut off', (i) => i.truncate(FE), {
    info: fmt('footer', FE - 512, /not a VHD: no 'conectix' footer \(found '\.\.\.\.\.\.\.\.'\)/), read: fmt('footer', FE - 512, /not a VHD/),
    check: { code: 'EFORMAT', structure: 'footer', offset: FE - 512, message: /not a VHD/ },
  });
  fixedCase('fixed-truncated-data', 'a fixed image missing 64 KiB of data (footer re-appended)', (i) => {
    const footer = Buffer.from(i.b.subarray(FE));
    i.truncate(FE - 65536).append(footer);
  }, {
    info: 'ok', warnings: [/file holds 983040 data bytes but the footer says 1048576; the missing tail reads as zeros/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'data', offset: 983040, message: /the file holds 983040 data bytes but the footer says 1048576/ }] },
  });

  // ---- Cookies
  dynCase('bad-cookie-both-footers', "both footers' cookies damaged", (i) => { i.b.write('conectiX', 0, 'latin1'); i.b.write('conectiX', E, 'latin1'); }, {
    info: fmt('footer', E, /not a VHD: no 'conectix' footer \(found 'conectiX'\)/), read: fmt('footer', E, /not a VHD/),
    check: { code: 'EFORMAT', structure: 'footer', offset: E, message: /not a VHD/ },
  });
  dynCase('bad-cookie-end-footer', "the end footer's cookie damaged, the copy intact", (i) => { i.b.write('XXXXXXXX', E, 'latin1'); }, {
    info: 'ok', warnings: [/no footer at the end of the file/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E, message: /no 'conectix' footer at the end/ }] },
  });
  dynCase('bad-cookie-header', "the dynamic header's cookie damaged", (i) => { i.b.write('cxsparsX', H, 'latin1'); }, {
    info: fmt('dynamic header', H, /bad dynamic header cookie 'cxsparsX'/), read: fmt('dynamic header', H, /bad dynamic header cookie/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H, message: /bad cookie 'cxsparsX' \(expected 'cxsparse'\)/ }] },
  });

  // ---- Checksums
  dynCase('bad-checksum-end-footer', 'end footer checksum wrong, copy right', (i) => i.footer32(64, 0x12345678, 'end'), {
    info: 'ok', warnings: [/end footer checksum is wrong \(stored 0x12345678, computed 0x[0-9a-f]{8}\); using the copy at offset 0/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 64, message: /checksum is wrong/ }] },
  });
  dynCase('bad-checksum-both-footers', 'both footer checksums wrong', (i) => i.footer32(64, 0x12345678), {
    info: 'ok', warnings: [/footer checksum is wrong \(stored 0x12345678/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 64, message: /checksum is wrong/ }, { severity: 'error', structure: 'footer copy', offset: 64, message: /checksum is wrong/ }] },
  });
  dynCase('bad-checksum-header', 'dynamic header checksum wrong', (i) => i.header32(36, 0xdeadbeef), {
    info: 'ok', warnings: [/dynamic header checksum is wrong \(stored 0xdeadbeef/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 36, message: /checksum is wrong/ }] },
  });
  fixedCase('bad-checksum-fixed', 'fixed image footer checksum wrong', (i) => i.footer32(64, 1), {
    info: 'ok', warnings: [/footer checksum is wrong \(stored 0x00000001/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: FE + 64, message: /checksum is wrong/ }] },
  });

  // ---- Footer copies that disagree
  dynCase('copy-differs-uuid', 'the footer copy has another UUID (both checksums right)', (i) => { i.b[68] ^= 0xff; i.fixChecksums(); }, {
    info: 'ok', warnings: [/the footer copy at offset 0 differs from the end footer/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer copy', offset: 68, message: /differs from the end footer in uniqueId/ }] },
  });
  dynCase('copy-differs-size', 'the footer copy has another current size', (i) => { i.footer64(48, 8n << 20n, 'copy'); i.fixChecksums(); }, {
    info: 'ok', warnings: [/the footer copy at offset 0 differs from the end footer/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'footer copy', offset: 48, message: /differs from the end footer in currentSize/ }] },
  });

  // ---- BAT
  {
    const past = (D.length >> 9) + 1000;
    dynCase('bat-entry-past-eof', 'BAT entry 1 points far past the end of the file', (i) => i.setBat(1, past), {
      info: 'ok', read: { code: 'ECORRUPT', structure: 'BAT entry', offset: T + 4, message: new RegExp(`block 1 \\(${past * 512}\\.\\.\\d+\\) runs past the end of the file`) },
      check: { ok: false, has: [{ severity: 'error', structure: 'BAT entry', offset: T + 4, message: new RegExp(`block 1 points at offset ${past * 512}, past the end of the data`) }] },
    });
  }
  dynCase('bat-entry-overlap', 'BAT entries 0 and 1 point at the same block', (i) => i.setBat(1, i.batEntry(0)), {
    info: 'ok', read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'BAT entry', offset: T + 4, message: /block 1 points at offset 2048, the same place as block 0/ }] },
  });
  dynCase('bat-entry-into-header', 'BAT entry 1 points into the dynamic header', (i) => i.setBat(1, 1), {
    info: 'ok', read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'BAT entry', offset: T + 4, message: /block 1 \(512\.\.\d+\) overlaps (the )?dynamic header/ }] },
  });
  dynCase('bat-entry-zero', 'BAT entry 1 is 0 (the footer copy)', (i) => i.setBat(1, 0), {
    info: 'ok', read: { code: 'ECORRUPT', structure: 'BAT entry', offset: T + 4, message: /block 1 points at offset 0, inside the footer copy/ },
    check: { ok: false, has: [{ severity: 'error', structure: 'BAT entry', offset: T + 4, message: /block 1 \(0\.\.\d+\) overlaps (the )?footer copy/ }] },
  });

  // ---- Block size and table
  for (const [name, bs] of [['block-size-not-power-of-two', 3 << 20], ['block-size-zero', 0], ['block-size-absurd', 1 << 30], ['block-size-tiny', 256]] as const) {
    dynCase(name, `block size ${bs}`, (i) => { i.header32(32, bs); i.fixChecksums(); }, {
      info: fmt('dynamic header', H + 32, new RegExp(`block size ${bs} is not a power of two from 512 bytes to 256 MiB`)),
      read: fmt('dynamic header', H + 32, /block size/),
      check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 32, message: new RegExp(`block size ${bs} is not a power of two`) }] },
    });
  }
  dynCase('table-entries-far-beyond-file', 'max table entries 0x7fffffff', (i) => { i.header32(28, 0x7fffffff); i.fixChecksums(); }, {
    info: fmt('dynamic header', H + 16, /BAT of 2147483647 entries at offset 1536 does not fit in the file/), read: fmt('dynamic header', H + 16, /BAT of 2147483647 entries/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 16, message: /BAT of 2147483647 entries .*does not fit in the file/ }] },
  });
  dynCase('table-entries-too-few', 'max table entries 2 where the size needs 8 (block 3 is lost)', (i) => { i.header32(28, 2); i.fixChecksums(); }, {
    info: 'ok', warnings: [/BAT has 2 entries but the size needs 8; blocks past the table read as zeros/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 28, message: /BAT has 2 entries but the current size 4194304 needs 8/ }] },
  });
  dynCase('table-offset-past-eof', 'table offset 2^40', (i) => { i.header64(16, 1n << 40n); i.fixChecksums(); }, {
    info: fmt('dynamic header', H + 16, /BAT of 8 entries at offset 1099511627776 does not fit in the file/), read: fmt('dynamic header', H + 16, /does not fit/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 16, message: /BAT of 8 entries at offset 1099511627776/ }] },
  });
  dynCase('table-offset-zero', 'table offset 0', (i) => { i.header64(16, 0n); i.fixChecksums(); }, {
    info: fmt('dynamic header', H + 16, /BAT of 8 entries at offset 0 does not fit/), read: fmt('dynamic header', H + 16, /BAT of 8 entries at offset 0/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 16, message: /BAT of 8 entries at offset 0 .*overlaps the footer copy or the dynamic header/ }] },
  });
  dynCase('header-offset-past-eof', "the footers' data offset 2^40", (i) => { i.footer64(16, 1n << 40n); i.fixChecksums(); }, {
    info: fmt('footer', E + 16, /dynamic header offset 1099511627776 is outside the file/), read: fmt('footer', E + 16, /outside the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 16, message: /dynamic header offset 1099511627776 is outside the file/ }] },
  });
  dynCase('header-offset-all-ones', 'a dynamic image whose data offset is all ones (as if fixed)', (i) => { i.footer64(16, 0xffffffffffffffffn); i.fixChecksums(); }, {
    info: fmt('footer', E + 16, /dynamic header offset 18446744073709551615 is outside the file/), read: fmt('footer', E + 16, /outside the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 16, message: /outside the file/ }] },
  });
  dynCase('current-size-absurd', 'current size 2^50', (i) => { i.footer64(48, 1n << 50n); i.fixChecksums(); }, {
    info: fmt('footer', E + 48, /current size 1125899906842624 is larger than a VHD can be/), read: fmt('footer', E + 48, /larger than a VHD can be/),
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: H + 28, message: /BAT has 8 entries but the current size 1125899906842624 needs/ }] },
  });
  dynCase('disk-type-unsupported', 'disk type 5 (deprecated)', (i) => { i.footer32(60, 5); i.fixChecksums(); }, {
    info: fmt('footer', E + 60, /unsupported disk type 5/), read: fmt('footer', E + 60, /unsupported disk type 5/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 60, message: /unsupported disk type 5/ }] },
  });
  dynCase('disk-type-none', 'disk type 0', (i) => { i.footer32(60, 0); i.fixChecksums(); }, {
    info: fmt('footer', E + 60, /unsupported disk type 0/), read: fmt('footer', E + 60, /unsupported disk type 0/),
    check: { ok: false, has: [{ severity: 'error', structure: 'footer', offset: E + 60, message: /unsupported disk type 0/ }] },
  });

  // ---- Locators (the child keeps another locator that works, so reads still resolve)
  const loc0 = childImg.locatorEntry(0); // W2ru
  const loc1 = childImg.locatorEntry(1); // W2ku
  const L0 = CH + 576;
  const L1 = CH + 576 + 24;
  childCase('locator-offset-past-eof', 'W2ru data offset 2^40 (W2ku still works)', (i) => { i.locator(0, { offset: 2 ** 40 }); i.fixChecksums(); }, {
    info: 'ok', warnings: [new RegExp(`W2ru locator \\(entry at offset ${L0}\\): data at offset 1099511627776 \\(\\+${loc0.length}\\) is past the end of the file`)], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locator', offset: L0 + 16, message: /W2ru.* data at offset 1099511627776 .*is past the end of the data/ }] },
  });
  childCase('locator-length-huge', 'W2ku data length 0x7fffffff', (i) => { i.locator(1, { length: 0x7fffffff }); i.fixChecksums(); }, {
    info: 'ok', warnings: [new RegExp(`W2ku locator \\(entry at offset ${L1}\\): data length 2147483647 is too large`)], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locator', offset: L1 + 8, message: /data length 2147483647 is too large/ }] },
  });
  childCase('locator-length-exceeds-space', 'W2ku data length 4096 in a data space of 1 sector', (i) => { i.locator(1, { length: 4096, space: 1 }); i.fixChecksums(); }, {
    info: 'ok', warnings: [/W2ku locator .*data length 4096 exceeds its data space 512/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locator', offset: L1 + 8, message: /data length 4096 exceeds its data space of 512 bytes/ }] },
  });
  childCase('locator-offset-into-header', 'W2ru data points into the dynamic header', (i) => { i.locator(0, { offset: CH + 64 }); i.fixChecksums(); }, {
    info: 'ok', read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locator', offset: L0 + 16, message: /overlaps (the )?dynamic header/ }] },
  });
  const noParent = (name: string, what: string, edit: (i: ImageBytes, d: string) => void, tried: RegExp, parent: Buffer | null = B, checkTried = tried) => childCase(name, what, (i, d) => { edit(i, d); i.fixChecksums(); }, {
    info: 'ok', warnings: [tried],
    read: { code: 'ENOPARENT', structure: 'parent locators', offset: CH + 576, message: tried },
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locators', offset: CH + 576, message: checkTried }] },
  }, parent);
  noParent('locators-all-unreadable', 'every locator past the end of the file and no unicode name', (i) => {
    i.locator(0, { offset: 2 ** 40 }); i.locator(1, { offset: 2 ** 40 }); setLocatorsName(i, '');
  }, /parent '' not found; tried W2ru: unreadable \(data at offset 1099511627776 .*is past the end of the file\); W2ku: unreadable/, B, /parent '' not found; tried W2ru: unreadable.*; W2ku: unreadable/);
  noParent('locators-unknown-codes', "locators with unknown platform codes and no unicode name", (i) => {
    i.locator(0, { code: 'abcd' }); i.locator(1, { code: 'W2KU' }); setLocatorsName(i, '');
  }, /parent '' not found; tried no parent locators and no parent name/);

  // ---- Parents
  noParent('missing-parent', 'the parent file is not there', () => undefined,
    /parent 'base\.vhd' not found; tried W2ru '\.\\base\.vhd' -> .*missing-parent\/base\.vhd: not found/, null);
  noParent('parent-is-directory', 'every locator names a directory', (i) => {
    setLocators(i, [{ code: 'W2ru', data: utf16le('.\\adir') }], 'adir');
  }, /W2ru '\.\\adir' -> .*\/adir: is a directory/);
  noParent('parent-is-device', 'the absolute locator names a character device (/dev/zero)', (i) => {
    setLocators(i, [{ code: 'W2ku', data: utf16le('/dev/zero') }], '');
  }, /W2ku '\/dev\/zero' -> \/dev\/zero: is not a regular file/);
  noParent('parent-is-fifo', 'the relative locator names a FIFO', (i) => {
    setLocators(i, [{ code: 'W2ru', data: utf16le('.\\pipe.vhd') }], '');
  }, /W2ru '\.\\pipe\.vhd' -> .*\/pipe\.vhd: is not a regular file/);
  noParent('parent-symlink-loop', 'the locator names a symbolic link that points at itself', (i) => {
    setLocators(i, [{ code: 'W2ru', data: utf16le('.\\loop.vhd') }], '');
  }, /W2ru '\.\\loop\.vhd' -> .*\/loop\.vhd: symbolic link loop/);
  execFileSync('mkfifo', [path.join(dir, 'parent-is-fifo', 'pipe.vhd')]);
  mkdirSync(path.join(dir, 'parent-is-directory', 'adir'));
  symlinkSync('loop.vhd', path.join(dir, 'parent-symlink-loop', 'loop.vhd'));

  childCase('self-parent', "the child's locators and name point at the child itself", (i) => {
    setLocators(i, [{ code: 'W2ru', data: utf16le('.\\child.vhd') }], 'child.vhd');
    i.fixChecksums();
  }, {
    info: 'ok', warnings: [/child\.vhd: parent chain loops back to .*self-parent\/child\.vhd/],
    read: { code: 'ECYCLE', structure: 'parent locators', offset: CH + 576, message: /parent chain loops back to .*self-parent\/child\.vhd/ },
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locators', offset: CH + 576, message: /the parent .*self-parent\/child\.vhd is the image itself/ }, { severity: 'error', structure: 'dynamic header', offset: CH + 40, message: /parent UUID .* does not match/ }] },
  });
  {
    // A -> B -> A: B is a child of A, then A is re-pointed at B (with B's UUID), so each is the other's parent.
    const d = path.join(dir, 'parent-cycle');
    mkdirSync(d);
    const a = path.join(d, 'a.vhd');
    const b = path.join(d, 'b.vhd');
    writeFileSync(path.join(d, 'base.vhd'), B);
    writeFileSync(a, C);
    await createChild(a, b);
    const bImg = ImageBytes.read(b);
    const aImg = ImageBytes.read(a);
    setLocators(aImg, [{ code: 'W2ru', data: utf16le('.\\b.vhd') }], 'b.vhd');
    bImg.b.copy(aImg.b, aImg.header + 40, bImg.size - 512 + 68, bImg.size - 512 + 84); // b's UUID
    aImg.fixChecksums().write(a);
    cases.push({
      name: 'parent-cycle', what: 'A is the parent of B and B the parent of A', image: a,
      info: 'ok', warnings: [/b\.vhd: parent chain loops back to .*parent-cycle\/a\.vhd/],
      read: { code: 'ECYCLE', file: 'b.vhd', structure: 'parent locators', offset: CH + 576, message: /parent chain loops back to .*parent-cycle\/a\.vhd/ },
      check: { ok: false, has: [{ severity: 'error', structure: 'parent locators', offset: CH + 576, message: /parent chain loops back to .*parent-cycle\/a\.vhd/ }] },
    });
  }
  childCase('parent-uuid-mismatch', "the child's parent UUID is not the parent's", (i) => { i.b[i.header + 40] ^= 0x55; i.fixChecksums(); }, {
    info: 'ok', warnings: [/parent UUID mismatch: the child expects [0-9a-f-]{36} but .*base\.vhd is [0-9a-f-]{36}/],
    read: { code: 'EUUID', structure: 'dynamic header', offset: CH + 40, message: /parent UUID mismatch/ },
    check: { ok: false, has: [{ severity: 'error', structure: 'dynamic header', offset: CH + 40, message: /parent UUID [0-9a-f-]{36} does not match/ }] },
  });
  childCase('parent-size-differs', "the child's virtual size (3 MiB) differs from its parent's (2 MiB)", (i) => { i.footer64(48, 3n << 20n); i.fixChecksums(); }, {
    info: 'ok', warnings: [/virtual size 3145728 differs from its parent's 2097152/], read: 'ok',
    check: { ok: false, has: [{ severity: 'warning', structure: 'footer', offset: CE + 48, message: /virtual size 3145728 differs from the parent's 2097152/ }, { severity: 'error', structure: 'dynamic header', offset: CH + 28, message: /BAT has 4 entries but the current size 3145728 needs 6/ }] },
  });
  childCase('parent-broken', "the parent's dynamic header cookie is damaged", () => undefined, {
    info: 'ok', warnings: [/base\.vhd: bad dynamic header cookie/],
    read: { code: 'EFORMAT', file: 'base.vhd', structure: 'dynamic header', offset: 512, message: /bad dynamic header cookie 'XXXXXXXX'/ },
    check: { ok: false, has: [{ severity: 'error', structure: 'parent locators', offset: CH + 576, message: /cannot be opened: .*bad dynamic header cookie/ }] },
  }, (() => { const p = Buffer.from(B); p.write('XXXXXXXX', 512, 'latin1'); return p; })());
  childCase('parent-timestamp-mismatch', "the child's parent timestamp matches nothing", (i) => { i.header32(56, 12345); i.fixChecksums(); }, {
    info: 'ok', warnings: [/parent timestamp 2000-01-01T03:25:45\.000Z matches neither/], read: 'ok',
    check: { ok: true, has: [{ severity: 'warning', structure: 'dynamic header', offset: CH + 56, message: /parent timestamp .* matches neither/ }] },
  });

  // ---- Odd but readable fields
  dynCase('reserved-feature-bit-clear', 'features field 0 (bit 0x2 not set) and format version 2.0', (i) => { i.footer32(8, 0); i.footer32(12, 0x00020000); i.fixChecksums(); }, {
    info: 'ok', warnings: [/reserved feature bit 0x2 is not set/, /unusual format version 0x00020000/], read: 'ok',
    check: { ok: true, has: [{ severity: 'warning', structure: 'footer', offset: E + 8, message: /reserved feature bit/ }, { severity: 'warning', structure: 'footer', offset: E + 12, message: /unusual format version/ }] },
  });

  // The pristine sources go, so that no absolute locator (W2ku) finds its way back to them.
  rmSync(src, { recursive: true, force: true });
  return { dir, cases };
}

function setLocatorsName(i: ImageBytes, name: string): void {
  const h = i.header;
  i.b.fill(0, h + 64, h + 576);
  const enc = Buffer.from(name, 'utf16le');
  enc.swap16();
  enc.copy(i.b, h + 64);
}

if (require.main === module) {
  buildCorpus(process.argv[2] ?? 'malformed-corpus').then((c) => {
    for (const k of c.cases) process.stdout.write(`${k.name.padEnd(34)} ${path.relative(process.cwd(), k.image)}  ${k.what}\n`);
    process.stdout.write(`${c.cases.length} images\n`);
  });
}
