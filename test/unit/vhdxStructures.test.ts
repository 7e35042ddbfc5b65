import { strict as assert } from 'assert';
import { readFileSync } from 'fs';
import * as path from 'path';
import { crc32c, crc32cUpdate, crc32cWithZeroField, crc32cZeros } from '../../src/format/vhdx/crc32c';
import { parseFileIdentifier } from '../../src/format/vhdx/fileIdentifier';
import { formatGuid, parseGuid } from '../../src/format/vhdx/guid';
import { isHeaderValid, parseHeader, serializeHeader } from '../../src/format/vhdx/header';
import { findActiveSequence, readLogEntry, serializeLogEntry } from '../../src/format/vhdx/log';
import { METADATA_ITEM, parseMetadataTable } from '../../src/format/vhdx/metadataTable';
import { locatorValue, parseParentLocator, serializeParentLocator, PARENT_LOCATOR_TYPE_VHDX } from '../../src/format/vhdx/parentLocator';
import { BAT_REGION_GUID, isRegionTableValid, METADATA_REGION_GUID, parseRegionTable, REGION_TABLE_SIZE } from '../../src/format/vhdx/regionTable';
import { Bat, batGeometry, chunkRatio, encodeEntry, payloadEntryIndex, sectorBitmapEntryIndex } from '../../src/format/vhdx/bat';
import { bitRunLength, setBitRange, testBit } from '../../src/format/vhdx/sectorBitmap';
import { FIXTURES } from '../helpers/util';

const FRAG = path.join(FIXTURES, 'libvhdi_fragments');
const frag = (name: string) => readFileSync(path.join(FRAG, name));

describe('VHDX structures', () => {
  it('CRC-32C matches the standard check value and the RFC 3720 vectors', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    // Slicing-by-8 and the byte loop agree on every length around the 8-byte step.
    const data = Buffer.from(Array.from({ length: 50 }, (_, i) => (i * 37 + 11) & 0xff));
    for (let n = 0; n <= data.length; n++) {
      let c = ~0 >>> 0;
      for (const byte of data.subarray(0, n)) {
        c ^= byte;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      assert.equal(crc32c(data.subarray(0, n)), ~c >>> 0, `length ${n}`);
    }
  });

  it('CRC-32C: zero runs applied in O(log n) agree with the bitwise definition', () => {
    const bitwise = (crc: number, data: Uint8Array) => {
      let c = ~crc >>> 0;
      for (const byte of data) {
        c ^= byte;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return ~c >>> 0;
    };
    // Zero tails of every size class around the search's steps (page, halves, bytes), behind
    // prefixes of several lengths, and buffers that are all zero or end in a non-zero byte.
    const tails = [0, 1, 63, 64, 255, 256, 257, 1000, 2048, 4095, 4096, 4097, 6000, 8192, 65536 - 16];
    for (const prefix of [0, 1, 16, 100, 4096]) {
      for (const tail of tails) {
        const data = Buffer.alloc(prefix + tail);
        for (let i = 0; i < prefix; i++) data[i] = (i * 73 + prefix + 1) & 0xff || 1;
        assert.equal(crc32c(data), bitwise(0, data), `prefix ${prefix}, zero tail ${tail}`);
        // A view into a larger buffer (offset not zero) and a continued CRC.
        const framed = Buffer.concat([Buffer.from([9, 9, 9]), data, Buffer.from([5])]).subarray(3, 3 + data.length);
        assert.equal(crc32cUpdate(0x12345678, framed), bitwise(0x12345678, data), `continued, prefix ${prefix}, tail ${tail}`);
      }
    }
    for (const n of [0, 1, 7, 8, 255, 256, 4096, 65539, 1 << 20]) {
      assert.equal(crc32cZeros(0xdeadbeef, n), bitwise(0xdeadbeef, new Uint8Array(n)), `${n} zeros`);
    }
    // The region table's shape: a 16-byte header and two entries, then 65,456 zero bytes.
    const table = Buffer.alloc(65536);
    table.write('regi', 0);
    table.writeUInt32LE(2, 8);
    for (let i = 16; i < 80; i++) table[i] = i * 13;
    assert.equal(crc32cWithZeroField(table, 4), bitwise(0, table));
  });

  it('GUIDs: Microsoft byte order, round trip through text', () => {
    const b = frag('region_table_entry.1').subarray(0, 16);
    assert.equal(formatGuid(b), BAT_REGION_GUID);
    assert.deepEqual(parseGuid(`{${BAT_REGION_GUID.toUpperCase()}}`), b);
    assert.equal(parseGuid('not-a-guid'), null);
  });

  it('file identifier (libvhdi fragment): signature and creator', () => {
    const id = parseFileIdentifier(frag('file_identifier.1'));
    assert.equal(id.signature, 'vhdxfile');
    assert.equal(id.creator, 'Microsoft Windows 10.0.19041.0');
  });

  it('header (libvhdi fragment): checksum, sequence number, log location; re-serialized identically', () => {
    const raw = frag('image_header.1');
    const h = parseHeader(raw);
    assert.ok(isHeaderValid(h));
    assert.equal(h.sequenceNumber, 6n);
    assert.equal(h.version, 1);
    assert.equal(h.logOffset, 1024 * 1024);
    assert.equal(h.logLength, 1024 * 1024);
    assert.equal(formatGuid(h.logGuid), '00000000-0000-0000-0000-000000000000');
    assert.deepEqual(serializeHeader(h), raw);
    const broken = Buffer.from(raw);
    broken[100] ^= 1;
    assert.ok(!isHeaderValid(parseHeader(broken)));
  });

  it('region table (libvhdi fragment): BAT and metadata regions, CRC over the 64 KiB table', () => {
    const t = Buffer.alloc(REGION_TABLE_SIZE);
    frag('region_table.1').copy(t);
    const rt = parseRegionTable(t);
    assert.ok(isRegionTableValid(rt));
    assert.deepEqual(rt.entries.map((e) => [e.guid, e.fileOffset, e.length, e.required]), [
      [BAT_REGION_GUID, 3 * 1024 * 1024, 1024 * 1024, true],
      [METADATA_REGION_GUID, 2 * 1024 * 1024, 1024 * 1024, true],
    ]);
  });

  it('metadata table header and entry (libvhdi fragments)', () => {
    const t = Buffer.alloc(64 * 1024);
    frag('metadata_table_header.1').copy(t);
    frag('metadata_table_entry.1').copy(t, 32);
    const mt = parseMetadataTable(t);
    assert.equal(mt.signature, 'metadata');
    assert.equal(mt.entryCount, 5);
    const e = mt.entries[0];
    assert.equal(e.itemId, METADATA_ITEM.fileParameters);
    assert.deepEqual([e.offset, e.length, e.isUser, e.isVirtualDisk, e.isRequired], [65536, 8, false, false, true]);
  });

  it('parent locator header and entry (libvhdi fragments); duplicate keys and strings past the item', () => {
    const hdr = frag('parent_locator_header.1');
    assert.equal(formatGuid(hdr), PARENT_LOCATOR_TYPE_VHDX);
    assert.equal(hdr.readUInt16LE(18), 5);
    const entry = frag('parent_locator_entry.1');
    assert.deepEqual([entry.readUInt32LE(0), entry.readUInt32LE(4), entry.readUInt16LE(8), entry.readUInt16LE(10)], [80, 108, 28, 76]);

    const item = serializeParentLocator([['parent_linkage', '{a}'], ['relative_path', '.\\p.vhdx'], ['parent_linkage', '{b}']]);
    const l = parseParentLocator(item);
    assert.equal(locatorValue(l, 'parent_linkage'), '{a}');
    assert.equal(locatorValue(l, 'relative_path'), '.\\p.vhdx');
    assert.match(l.problems.join(), /duplicate key 'parent_linkage'/);
    const huge = Buffer.from(item);
    huge.writeUInt16LE(0xfffe, 20 + 10); // first value length far past the item
    assert.match(parseParentLocator(huge).problems.join(), /past the end/);
    const many = Buffer.from(item);
    many.writeUInt16LE(60000, 18);
    assert.throws(() => parseParentLocator(many), /60000 key\/value entries/);
  });

  it('BAT geometry: chunk ratio, interleaved sector bitmap entries, entry encoding', () => {
    assert.equal(chunkRatio(512, 32 * 1024 * 1024), 128);
    assert.equal(chunkRatio(4096, 1024 * 1024), 32768);
    const g = batGeometry(10 * 1024 ** 3, 32 * 1024 * 1024, 512, false);
    assert.deepEqual(g, { chunkRatio: 128, payloadBlocks: 320, sectorBitmapBlocks: 3, totalEntries: 322 });
    assert.equal(batGeometry(10 * 1024 ** 3, 32 * 1024 * 1024, 512, true).totalEntries, 3 * 129);
    assert.equal(payloadEntryIndex(127, 128), 127);
    assert.equal(payloadEntryIndex(128, 128), 129);
    assert.equal(sectorBitmapEntryIndex(1, 128), 257);
    const e = encodeEntry(6, 5 * 1024 * 1024 * 4096 + 3 * 1024 * 1024);
    const bat = Bat.parse(e, 1);
    assert.equal(bat.state(0), 6);
    assert.equal(bat.offset(0), 5 * 1024 * 1024 * 4096 + 3 * 1024 * 1024);
    bat.set(0, 7, 4097 * 1024 * 1024);
    assert.deepEqual([bat.state(0), bat.offset(0)], [7, 4097 * 1024 * 1024]);
  });

  it('sector bitmap: least significant bit first, runs', () => {
    const b = Buffer.alloc(8);
    setBitRange(b, 3, 10);
    assert.equal(b[0], 0xf8);
    assert.equal(b[1], 0x1f);
    assert.ok(testBit(b, 12) && !testBit(b, 13));
    assert.equal(bitRunLength(b, 3, 64, true), 10);
    assert.equal(bitRunLength(b, 13, 64, false), 51);
  });

  it('log entries: round trip, a wrapped entry, and the active sequence from the newest tail', () => {
    const guid = parseGuid('11111111-2222-3333-4444-555555555555')!;
    const sector = (v: number) => Buffer.alloc(4096, v);
    const log = Buffer.alloc(64 * 1024);
    const e1 = serializeLogEntry({ writes: [{ fileOffset: 3 << 20, length: 4096, data: sector(1) }], sequenceNumber: 10n, logGuid: guid, tail: 0, flushedFileOffset: 0, lastFileOffset: 0 });
    e1.copy(log, 0);
    const e2 = serializeLogEntry({ writes: [{ fileOffset: 4 << 20, length: 8192, data: null }, { fileOffset: 5 << 20, length: 4096, data: sector(2) }], sequenceNumber: 11n, logGuid: guid, tail: 0, flushedFileOffset: 0, lastFileOffset: 0 });
    e2.copy(log, e1.length);
    const seq = findActiveSequence(log, guid)!;
    assert.deepEqual(seq.entries.map((e) => e.header.sequenceNumber), [10n, 11n]);
    assert.deepEqual(seq.entries[1].writes.map((w) => [w.fileOffset, w.length, w.data?.[0] ?? null]), [[4 << 20, 8192, null], [5 << 20, 4096, 2]]);
    assert.equal(seq.nextPosition, e1.length + e2.length);

    // An entry written across the end of the ring, its tail pointing at itself.
    const ring = Buffer.alloc(16 * 1024);
    const w = serializeLogEntry({ writes: [{ fileOffset: 3 << 20, length: 4096, data: sector(7) }], sequenceNumber: 3n, logGuid: guid, tail: 12 * 1024, flushedFileOffset: 0, lastFileOffset: 0 });
    w.copy(ring, 12 * 1024, 0, 4096);
    w.copy(ring, 0, 4096);
    const wrapped = findActiveSequence(ring, guid)!;
    assert.equal(wrapped.entries.length, 1);
    assert.equal(wrapped.entries[0].writes[0].data![100], 7);
    assert.equal(wrapped.nextPosition, 4096);

    // Another log GUID, a torn data sector: not entries.
    assert.equal(findActiveSequence(log, parseGuid('11111111-2222-3333-4444-555555555556')!), null);
    const torn = Buffer.from(log);
    torn[e1.length + 4096 + 100] ^= 0xff;
    assert.match(readLogEntry(torn, e1.length, guid) as string, /checksum/);
    assert.deepEqual(findActiveSequence(torn, guid)!.entries.map((e) => e.header.sequenceNumber), [10n]);
    // A newest entry whose tail leads to a gap: the log is damaged, not silently skipped.
    const gap = Buffer.from(log);
    gap.fill(0, 0, e1.length);
    assert.throws(() => findActiveSequence(gap, guid), /active sequence is broken/);
  });
});
