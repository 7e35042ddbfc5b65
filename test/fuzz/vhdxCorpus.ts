/**
 * The VHDX malformed corpus: broken VHDX images, each with the outcome it must have when opened
 * (read-only, the log replayed in memory) and when every byte is read. Built from a small image we
 * write, then edited; checksums are recomputed where the case is not about them.
 *
 * `node --require tsx/cjs test/fuzz/vhdxCorpus.ts DIR` writes the corpus to DIR.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { createVhdx } from '../../src/format/vhdx/create';
import { createVhdxChild } from '../../src/format/vhdx/createChild';
import { crc32cWithZeroField } from '../../src/format/vhdx/crc32c';
import { newGuid, parseGuid } from '../../src/format/vhdx/guid';
import { HEADER_OFFSETS, parseHeader, serializeHeader } from '../../src/format/vhdx/header';
import { serializeLogEntry } from '../../src/format/vhdx/log';
import { METADATA_ITEM } from '../../src/format/vhdx/metadataTable';
import { serializeParentLocator } from '../../src/format/vhdx/parentLocator';
import { REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from '../../src/format/vhdx/regionTable';
import { VhdxImage } from '../../src/format/vhdx/vhdxImage';

export interface VhdxErrorExpectation {
  code: string;
  structure: string;
  offset: number;
  message: RegExp;
}

export interface VhdxCorpusCase {
  name: string;
  what: string;
  image: string;
  open: 'ok' | VhdxErrorExpectation;
  /** Reading the whole virtual disk (only when open succeeds). */
  read?: 'ok' | VhdxErrorExpectation;
  /** Each pattern must match one of the image's warnings. */
  warnings?: RegExp[];
}

const MiB = 1024 * 1024;
/** Our create() layout. */
export const LAYOUT = { log: MiB, logLength: MiB, metadata: 2 * MiB, bat: 3 * MiB, data: 4 * MiB } as const;

/** Byte edits on a VHDX with its checksums recomputed on request. */
export class VhdxBytes {
  constructor(public b: Buffer) {}

  fixHeaders(): void {
    for (const o of HEADER_OFFSETS) this.b.writeUInt32LE(crc32cWithZeroField(this.b.subarray(o, o + 4096), 4), o + 4);
  }

  fixRegionTables(): void {
    for (const o of REGION_TABLE_OFFSETS) this.b.writeUInt32LE(crc32cWithZeroField(this.b.subarray(o, o + REGION_TABLE_SIZE), 4), o + 4);
  }

  /** Offset of a metadata item's entry in the table (our layout) and of its data. */
  metadataEntry(itemId: string): { entry: number; data: number } {
    const id = parseGuid(itemId)!;
    for (let i = 0; i < 16; i++) {
      const at = LAYOUT.metadata + 32 + i * 32;
      if (this.b.subarray(at, at + 16).equals(id)) return { entry: at, data: LAYOUT.metadata + this.b.readUInt32LE(at + 16) };
    }
    throw new Error(`no item ${itemId}`);
  }

  /** Writes `entries` as a log whose newest entry is the last, and sets a log GUID in both headers. */
  setLog(entries: Array<{ position: number; bytes: (guid: Buffer) => Buffer }>): void {
    const guid = newGuid();
    for (const e of entries) {
      const bytes = e.bytes(guid);
      for (let i = 0; i < bytes.length; i += 4096) bytes.copy(this.b, LAYOUT.log + ((e.position + i) % LAYOUT.logLength), i, i + 4096);
    }
    for (const o of HEADER_OFFSETS) {
      const h = parseHeader(this.b.subarray(o, o + 4096));
      serializeHeader({ ...h, logGuid: guid }).copy(this.b, o);
    }
  }
}

/** A differencing child of the image at `parent`. */
export async function childOf(parent: string, child: string): Promise<void> {
  const p = await VhdxImage.open(parent, { linkOnly: true });
  try {
    await createVhdxChild(p, child);
  } finally {
    await p.close();
  }
}

const zeros = async (_o: number, t: Buffer) => { t.fill(0); };

async function baseImage(dir: string, name: string): Promise<Buffer> {
  const p = path.join(dir, `${name}.src.vhdx`);
  await createVhdx(p, { size: 8 * MiB, blockSize: MiB });
  const img = await VhdxImage.open(p, { writable: true });
  await img.write(0, Buffer.alloc(2 * MiB, 0x5a), zeros);
  await img.write(5 * MiB + 512, Buffer.alloc(1000, 0xa5), zeros);
  await img.close();
  return readFileSync(p);
}

export async function buildVhdxCorpus(dir: string): Promise<VhdxCorpusCase[]> {
  mkdirSync(dir, { recursive: true });
  const base = await baseImage(dir, 'base');
  const parentPath = path.join(dir, 'parent.vhdx');
  writeFileSync(parentPath, base);
  const childSrc = path.join(dir, 'child.src.avhdx');
  await childOf(parentPath, childSrc);
  const childBase = readFileSync(childSrc);
  const cases: VhdxCorpusCase[] = [];
  const add = (name: string, what: string, from: Buffer, edit: (v: VhdxBytes) => void, rest: Omit<VhdxCorpusCase, 'name' | 'what' | 'image'>, ext = '.vhdx') => {
    const v = new VhdxBytes(Buffer.from(from));
    edit(v);
    const image = path.join(dir, `${name}${ext}`);
    writeFileSync(image, v.b);
    cases.push({ name, what, image, ...rest });
  };
  const err = (code: string, structure: string, offset: number, message: RegExp): VhdxErrorExpectation => ({ code, structure, offset, message });
  const batEntry = (block: number) => LAYOUT.bat + block * 8; // 1 MiB blocks, 512-byte sectors: chunk ratio 4096

  add('header1-bad-checksum', 'the first header has a wrong CRC-32C; the second is intact', base, (v) => { v.b[HEADER_OFFSETS[0] + 300] ^= 1; },
    { open: 'ok', read: 'ok', warnings: [/header 1 at offset 65536 has a wrong checksum/] });
  add('headers-both-bad', 'both headers have wrong checksums', base, (v) => { v.b[HEADER_OFFSETS[0] + 300] ^= 1; v.b[HEADER_OFFSETS[1] + 300] ^= 1; },
    { open: err('ECORRUPT', 'header', 65536, /neither header is valid/) });
  add('header-newer-but-torn', 'the header with the higher sequence number is torn: the older one is used', base, (v) => {
    const h = parseHeader(v.b.subarray(HEADER_OFFSETS[1], HEADER_OFFSETS[1] + 4096));
    serializeHeader({ ...h, sequenceNumber: h.sequenceNumber + 5n, logOffset: 7 * MiB }).copy(v.b, HEADER_OFFSETS[1]);
    v.b.fill(0, HEADER_OFFSETS[1] + 2048, HEADER_OFFSETS[1] + 2100);
    v.b[HEADER_OFFSETS[1] + 2050] = 1;
  }, { open: 'ok', read: 'ok', warnings: [/header 2 at offset 131072 has a wrong checksum/] });
  add('region-table1-bad', 'the first region table has a wrong checksum', base, (v) => { v.b[REGION_TABLE_OFFSETS[0] + 1000] ^= 1; },
    { open: 'ok', read: 'ok', warnings: [/region table 1 at offset 196608 has a wrong checksum/] });
  add('region-tables-both-bad', 'both region tables are damaged', base, (v) => { v.b[REGION_TABLE_OFFSETS[0] + 1000] ^= 1; v.b.write('xxxx', REGION_TABLE_OFFSETS[1]); },
    { open: err('ECORRUPT', 'region table', 196608, /neither region table is valid/) });
  add('region-overlap', 'the BAT region overlaps the metadata region', base, (v) => {
    for (const o of REGION_TABLE_OFFSETS) v.b.writeBigUInt64LE(BigInt(LAYOUT.metadata), o + 16 + 16);
    v.fixRegionTables();
  }, { open: err('ECORRUPT', 'region table entry', 196608 + 48 + 16, /metadata region .* overlaps BAT region/) });
  add('region-over-log', 'the metadata region lies on the log', base, (v) => {
    for (const o of REGION_TABLE_OFFSETS) v.b.writeBigUInt64LE(BigInt(LAYOUT.log), o + 48 + 16);
    v.fixRegionTables();
  }, { open: err('ECORRUPT', 'region table entry', 196608 + 48 + 16, /overlaps the log/) });
  add('bat-region-past-end', 'the BAT region runs past the end of the file', base, (v) => {
    for (const o of REGION_TABLE_OFFSETS) v.b.writeBigUInt64LE(BigInt(1024 * MiB), o + 16 + 16);
    v.fixRegionTables();
  }, { open: err('ECORRUPT', 'region table entry', 196608 + 16 + 16, /BAT region .* runs past the end of the file/) });
  add('region-count-huge', 'a region table claims 100000 entries (both copies)', base, (v) => {
    for (const o of REGION_TABLE_OFFSETS) v.b.writeUInt32LE(100000, o + 8);
    v.fixRegionTables();
  }, { open: err('ECORRUPT', 'region table', 196608, /neither region table is valid/) });
  add('unknown-required-region', 'a region this reader does not know, marked required', base, (v) => {
    for (const o of REGION_TABLE_OFFSETS) {
      v.b.writeUInt32LE(3, o + 8);
      parseGuid('12345678-1234-1234-1234-123456789abc')!.copy(v.b, o + 16 + 64);
      v.b.writeBigUInt64LE(BigInt(20 * MiB), o + 16 + 64 + 16);
      v.b.writeUInt32LE(MiB, o + 16 + 64 + 24);
      v.b.writeUInt32LE(1, o + 16 + 64 + 28);
    }
    v.fixRegionTables();
  }, { open: err('EUNSUPPORTED', 'region table entry', 196608 + 80, /unknown required region 12345678-1234-1234-1234-123456789abc/) });
  add('bat-entry-past-end', 'a BAT entry points a block past the end of the file', base, (v) => {
    v.b.writeBigUInt64LE((BigInt(4000) << 20n) | 6n, batEntry(1));
  }, { open: 'ok', read: err('ECORRUPT', 'BAT entry', LAYOUT.bat + 8, /block 1 .* runs past the end of the file/) });
  add('bat-entry-into-headers', 'a BAT entry points a block at offset 0', base, (v) => {
    v.b.writeBigUInt64LE(6n, batEntry(0));
  }, { open: 'ok', read: err('ECORRUPT', 'BAT entry', LAYOUT.bat, /block 0 points at offset 0, inside the headers/) });
  add('bat-entry-unknown-state', 'a payload entry with state 5', base, (v) => {
    v.b.writeBigUInt64LE((BigInt(4) << 20n) | 5n, batEntry(3));
  }, { open: 'ok', read: err('ECORRUPT', 'BAT entry', LAYOUT.bat + 24, /block 3 has unknown state 5/), warnings: [/1 BAT entry has an unknown state \(first: entry 3/] });
  add('block-size-bad', 'file parameters give a 3 MiB block size', base, (v) => {
    v.b.writeUInt32LE(3 * MiB, v.metadataEntry(METADATA_ITEM.fileParameters).data);
  }, { open: err('ECORRUPT', 'file parameters', LAYOUT.metadata + 65536, /block size 3145728 is not a power of two/) });
  add('virtual-size-zero', 'virtual disk size 0', base, (v) => {
    v.b.writeBigUInt64LE(0n, v.metadataEntry(METADATA_ITEM.virtualDiskSize).data);
  }, { open: err('ECORRUPT', 'virtual disk size', LAYOUT.metadata + 65536 + 8, /virtual disk size 0 is not a positive multiple/) });
  add('virtual-size-huge', 'virtual disk size 2^60: more BAT entries than its region holds', base, (v) => {
    v.b.writeBigUInt64LE(1n << 50n, v.metadataEntry(METADATA_ITEM.virtualDiskSize).data);
  }, { open: err('ECORRUPT', 'virtual disk size', LAYOUT.metadata + 65536 + 8, /up to 64 TiB/) });
  add('bat-too-small', 'virtual size 1 TiB: the BAT would need more than its 1 MiB region', base, (v) => {
    v.b.writeBigUInt64LE(1n << 40n, v.metadataEntry(METADATA_ITEM.virtualDiskSize).data);
  }, { open: err('ECORRUPT', 'region table entry', 196608 + 16 + 24, /the BAT needs \d+ entries \(\d+ bytes\) but its region holds 1048576 bytes/) });
  add('sector-size-bad', 'logical sector size 1024', base, (v) => {
    v.b.writeUInt32LE(1024, v.metadataEntry(METADATA_ITEM.logicalSectorSize).data);
  }, { open: err('ECORRUPT', 'logical sector size', LAYOUT.metadata + 65536 + 32, /logical sector size 1024/) });
  add('metadata-count-huge', 'the metadata table claims 65535 entries', base, (v) => {
    v.b.writeUInt16LE(65535, LAYOUT.metadata + 10);
  }, { open: err('ECORRUPT', 'metadata table', LAYOUT.metadata + 10, /65535 entries/) });
  add('metadata-item-outside', 'the virtual disk size item points outside the metadata region', base, (v) => {
    v.b.writeUInt32LE(2 * MiB, v.metadataEntry(METADATA_ITEM.virtualDiskSize).entry + 16);
  }, { open: err('ECORRUPT', 'metadata table entry', LAYOUT.metadata + 64 + 16, /lies outside the metadata region/) });
  add('metadata-item-missing', 'no virtual disk size item', base, (v) => {
    v.b.fill(0xee, v.metadataEntry(METADATA_ITEM.virtualDiskSize).entry, v.metadataEntry(METADATA_ITEM.virtualDiskSize).entry + 16);
  }, { open: err('EUNSUPPORTED', 'metadata table entry', LAYOUT.metadata + 64, /unknown required metadata item/) });

  // The log.
  const batSectorWith = (b: Buffer, block: number, entry: bigint) => {
    const s = Buffer.from(b.subarray(LAYOUT.bat, LAYOUT.bat + 4096));
    s.writeBigUInt64LE(entry, block * 8);
    return s;
  };
  const copyOfBlock0 = base.readBigUInt64LE(batEntry(0));
  const entry = (o: { writes: Array<{ fileOffset: number; length: number; data: Buffer | null }>; seq: bigint; tail: number; flushed?: number; last?: number }) =>
    (guid: Buffer) => serializeLogEntry({ writes: o.writes, sequenceNumber: o.seq, logGuid: guid, tail: o.tail, flushedFileOffset: o.flushed ?? base.length, lastFileOffset: o.last ?? base.length });
  add('log-wrapped-entry', 'a valid log entry written across the end of the ring (points block 6 at block 0)', base, (v) => {
    const pos = LAYOUT.logLength - 4096;
    v.setLog([{ position: pos, bytes: entry({ writes: [{ fileOffset: LAYOUT.bat, length: 4096, data: batSectorWith(base, 6, copyOfBlock0) }], seq: 9n, tail: pos }) }]);
  }, { open: 'ok', read: 'ok', warnings: [/the log holds 1 entry not yet applied; replayed in memory/] });
  add('log-two-entries', 'a sequence of two entries, the second zeroing a range', base, (v) => {
    const e1 = entry({ writes: [{ fileOffset: LAYOUT.bat, length: 4096, data: batSectorWith(base, 6, copyOfBlock0) }], seq: 20n, tail: 8192 });
    v.setLog([{ position: 8192, bytes: e1 }, { position: 8192 + 8192, bytes: entry({ writes: [{ fileOffset: LAYOUT.data + MiB, length: 8192, data: null }], seq: 21n, tail: 8192 }) }]);
  }, { open: 'ok', read: 'ok', warnings: [/the log holds 2 entries/] });
  add('log-write-past-file', 'a log entry writes far past the end of the file', base, (v) => {
    v.setLog([{ position: 0, bytes: entry({ writes: [{ fileOffset: 900 * MiB, length: 4096, data: Buffer.alloc(4096, 1) }], seq: 3n, tail: 0 }) }]);
  }, { open: err('ECORRUPT', 'log entry', LAYOUT.log, /writes 4096 bytes at offset 943718400, outside the file's regions/) });
  add('log-write-into-headers', 'a log entry writes over the headers', base, (v) => {
    v.setLog([{ position: 0, bytes: entry({ writes: [{ fileOffset: 64 * 1024, length: 4096, data: Buffer.alloc(4096, 1) }], seq: 3n, tail: 0 }) }]);
  }, { open: err('ECORRUPT', 'log entry', LAYOUT.log, /outside the file's regions/) });
  add('log-write-into-log', 'a log entry writes into the log itself', base, (v) => {
    v.setLog([{ position: 0, bytes: entry({ writes: [{ fileOffset: LAYOUT.log + 8192, length: 4096, data: Buffer.alloc(4096, 1) }], seq: 3n, tail: 0 }) }]);
  }, { open: err('ECORRUPT', 'log entry', LAYOUT.log, /writes into the log itself/) });
  add('log-tail-outside', 'the newest entry\'s tail points at a position that holds no entry', base, (v) => {
    v.setLog([{ position: 4096 * 10, bytes: entry({ writes: [{ fileOffset: LAYOUT.bat, length: 4096, data: batSectorWith(base, 6, copyOfBlock0) }], seq: 3n, tail: 4096 * 4 }) }]);
  }, { open: err('ECORRUPT', 'log', LAYOUT.log + 4096 * 4, /active sequence is broken at log position 16384/) });
  add('log-truncated-file', 'the log says the file was larger than it is (FlushedFileOffset)', base, (v) => {
    v.setLog([{ position: 0, bytes: entry({ writes: [{ fileOffset: LAYOUT.bat, length: 4096, data: batSectorWith(base, 6, copyOfBlock0) }], seq: 3n, tail: 0, flushed: base.length + MiB, last: base.length + MiB }) }]);
  }, { open: err('ECORRUPT', 'log entry', LAYOUT.log + 48, /truncated/) });
  add('log-torn-only-entry', 'the only log entry is torn (bad checksum): nothing to replay', base, (v) => {
    v.setLog([{ position: 0, bytes: (g) => { const e = entry({ writes: [{ fileOffset: LAYOUT.bat, length: 4096, data: batSectorWith(base, 6, copyOfBlock0) }], seq: 3n, tail: 0 })(g); e[5000] ^= 1; return e; } }]);
  }, { open: 'ok', read: 'ok' });
  const currentHeader = (() => {
    const [a, b] = HEADER_OFFSETS.map((o) => parseHeader(base.subarray(o, o + 4096)).sequenceNumber);
    return b > a ? HEADER_OFFSETS[1] : HEADER_OFFSETS[0];
  })();
  add('log-outside-file', 'the header puts a dirty log past the end of the file', base, (v) => {
    v.setLog([]);
    for (const o of HEADER_OFFSETS) v.b.writeBigUInt64LE(BigInt(100 * MiB), o + 72);
    v.fixHeaders();
  }, { open: err('ECORRUPT', 'header', currentHeader + 68, /log of 1048576 bytes at offset 104857600 is not 1 MiB aligned or lies outside the file/) });

  // Parent locators.
  const withLocator = (pairs: Array<[string, string]>, patch?: (item: Buffer) => void) => (v: VhdxBytes) => {
    const m = v.metadataEntry(METADATA_ITEM.parentLocator);
    const item = serializeParentLocator(pairs);
    patch?.(item);
    v.b.fill(0, m.data, m.data + 4096);
    item.copy(v.b, m.data);
    v.b.writeUInt32LE(item.length, m.entry + 20);
  };
  const linkage = `{${(await VhdxImage.open(parentPath).then(async (i) => { const g = i.dataWriteGuid; await i.close(); return g; }))}}`;
  const plItem = LAYOUT.metadata + 65536 + 48; // after the five fixed-size items
  add('locator-duplicate-keys', 'the parent locator lists relative_path twice (the first wins)', childBase,
    withLocator([['parent_linkage', linkage], ['relative_path', '.\\parent.vhdx'], ['relative_path', '.\\elsewhere.vhdx']]),
    { open: 'ok', read: 'ok', warnings: [/parent locator: duplicate key 'relative_path'/] }, '.avhdx');
  add('locator-huge-value', 'a parent locator value length runs far past the item', childBase,
    withLocator([['parent_linkage', linkage], ['relative_path', '.\\parent.vhdx']], (item) => item.writeUInt16LE(0xfff0, 20 + 10)),
    { open: 'ok', read: 'ok', warnings: [/parent locator: entry 0 \(at 20\) points past the end/, /no parent_linkage/] }, '.avhdx');
  add('locator-huge-count', 'the parent locator claims 40000 key/value entries', childBase,
    withLocator([['parent_linkage', linkage]], (item) => item.writeUInt16LE(40000, 18)),
    { open: err('ECORRUPT', 'parent locator', plItem + 18, /40000 key\/value entries/) }, '.avhdx');
  add('locator-no-linkage', 'the parent locator has no parent_linkage', childBase,
    withLocator([['relative_path', '.\\parent.vhdx']]),
    { open: 'ok', read: 'ok', warnings: [/parent locator has no parent_linkage/] }, '.avhdx');
  return cases;
}

if (require.main === module) {
  buildVhdxCorpus(process.argv[2] ?? 'vhdx-corpus').then((cases) => {
    for (const c of cases) console.log(`${path.basename(c.image)}\t${c.what}`);
  });
}
