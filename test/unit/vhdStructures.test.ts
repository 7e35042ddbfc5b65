import { strict as assert } from 'assert';
import { readFileSync } from 'fs';
import * as path from 'path';
import { Bat, BAT_UNUSED } from '../../src/format/vhd/bat';
import { vhdChecksum } from '../../src/format/vhd/checksum';
import { chsSizeBytes, geometryForSize, roundUpToChsSize } from '../../src/format/vhd/geometry';
import { parseFooter, serializeFooter, FOOTER_CHECKSUM_OFFSET, trimCode, formatCreatorVersion } from '../../src/format/vhd/footer';
import { parseDynamicHeader, serializeDynamicHeader } from '../../src/format/vhd/dynamicHeader';
import { decodeLocatorPath, decodeUtf16Detect, locatorSpaceBytes } from '../../src/format/vhd/parentLocator';
import { bitmapRuns, bitmapSizeBytes, countSetBits, setBits, testBit } from '../../src/format/vhd/sectorBitmap';
import { dateToVhdTimestamp, vhdTimestampToIso } from '../../src/format/vhd/timestamp';
import { formatUuid, parseUuid } from '../../src/format/vhd/uuid';
import { FIXTURES, itFixtures, rng } from '../helpers/util';

describe('VHD structures', () => {
  it('checksum is the one\'s complement of the byte sum without the checksum field', () => {
    const b = Buffer.alloc(16);
    b[0] = 1; b[1] = 2; b[8] = 0xff; b[9] = 0xff; b[10] = 0xff; b[11] = 0xff;
    assert.equal(vhdChecksum(b, 8), (~3) >>> 0);
  });

  it('geometry follows the spec appendix at each branch', () => {
    // spt 17 branch
    assert.deepEqual(geometryForSize(10 * 1024 * 1024), { cylinders: 301, heads: 4, sectorsPerTrack: 17 });
    // spt 63 branch
    const g = geometryForSize(4 * 1024 ** 3);
    assert.equal(g.sectorsPerTrack, 63);
    assert.equal(g.heads, 16);
    // spt 255 branch and cap
    assert.deepEqual(geometryForSize(200 * 1024 ** 3), { cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });

  it('rounding up lands on a size whose CHS is exact and never below the request', () => {
    const r = rng(7);
    for (let i = 0; i < 300; i++) {
      const req = Math.floor(r() * 100 * 1024 ** 3) + 1;
      const s = roundUpToChsSize(req);
      assert.ok(s >= req, `${s} >= ${req}`);
      assert.equal(chsSizeBytes(geometryForSize(s)), s, `exact CHS for ${req} -> ${s}`);
    }
    // Past the CHS limit the sector-rounded size is kept.
    assert.equal(roundUpToChsSize(1024 ** 4 + 1), 1024 ** 4 + 512);
  });

  it('timestamps count from 2000-01-01 UTC', () => {
    assert.equal(vhdTimestampToIso(0), '2000-01-01T00:00:00.000Z');
    assert.equal(dateToVhdTimestamp(new Date('2000-01-02T00:00:00Z')), 86400);
  });

  it('UUIDs format in stored byte order and round-trip', () => {
    const u = '01234567-89ab-cdef-0123-456789abcdef';
    assert.equal(formatUuid(parseUuid(u)), u);
  });

  itFixtures('parses and re-serializes libvhdi\'s Virtual PC differencing footer and header byte for byte', () => {
    const fDir = path.join(FIXTURES, 'libvhdi_fragments');
    const footerBytes = readFileSync(path.join(fDir, 'file_footer.1'));
    const f = parseFooter(footerBytes);
    assert.equal(f.cookie, 'conectix');
    assert.equal(f.diskType, 4);
    assert.equal(f.checksum, f.computedChecksum);
    assert.deepEqual(serializeFooter(f), footerBytes.subarray(0, 512));
    const headerBytes = readFileSync(path.join(fDir, 'dynamic_disk_header.1'));
    const h = parseDynamicHeader(headerBytes);
    assert.equal(h.cookie, 'cxsparse');
    assert.equal(h.checksum, h.computedChecksum);
    assert.equal(h.parentUnicodeName, 'dynamic.vhd');
    const codes = h.locators.filter((l) => l.platformCode !== '\0\0\0\0').map((l) => l.platformCode);
    assert.deepEqual(codes.sort(), ['W2ku', 'W2ru', 'Wi2k', 'Wi2r']);
    assert.deepEqual(serializeDynamicHeader(h), headerBytes.subarray(0, 1024));
    assert.equal(trimCode(f.creatorApplication), 'vpc');
    assert.match(formatCreatorVersion(f.creatorVersion), /^\d+\.\d+$/);
  });

  itFixtures('serializing a footer writes a checksum that validates', () => {
    const f = parseFooter(readFileSync(path.join(FIXTURES, 'libvhdi_fragments', 'file_footer.1')));
    const b = serializeFooter({ ...f, currentSize: 12345 * 512 });
    assert.equal(b.readUInt32BE(FOOTER_CHECKSUM_OFFSET), vhdChecksum(b, FOOTER_CHECKSUM_OFFSET));
    assert.equal(parseFooter(b).currentSize, 12345 * 512);
  });

  it('decodes UTF-16 locators in either byte order and file URLs', () => {
    const p = 'C:\\VMs\\Ünïcode parent.vhd';
    const le = Buffer.from(p, 'utf16le');
    const be = Buffer.from(le); be.swap16();
    assert.equal(decodeUtf16Detect(le), p);
    assert.equal(decodeUtf16Detect(be), p);
    assert.equal(decodeLocatorPath('MacX', Buffer.from('file:///srv/vm%20disks/base.vhd')), '/srv/vm disks/base.vhd');
    assert.equal(decodeLocatorPath('Mac ', Buffer.from([1, 2, 3])), undefined);
  });

  it('locator data space under 512 is sectors, otherwise bytes', () => {
    const base = { index: 0, platformCode: 'W2ku', platformDataLength: 10, reserved: 0, platformDataOffset: 0, raw: Buffer.alloc(24) };
    assert.equal(locatorSpaceBytes({ ...base, platformDataSpace: 1 }), 512);
    assert.equal(locatorSpaceBytes({ ...base, platformDataSpace: 512 }), 512);
    assert.equal(locatorSpaceBytes({ ...base, platformDataSpace: 1024 }), 1024);
  });

  it('sector bitmaps: MSB first, runs, counts, padding', () => {
    assert.equal(bitmapSizeBytes(4096), 512);
    assert.equal(bitmapSizeBytes(65536), 8192);
    assert.equal(bitmapSizeBytes(8), 512);
    const bm = Buffer.alloc(512);
    setBits(bm, 3, 14);
    assert.equal(bm[0], 0b00011111);
    assert.equal(bm[1], 0xff);
    assert.equal(bm[2], 0b10000000);
    assert.ok(testBit(bm, 16) && !testBit(bm, 17) && !testBit(bm, 2));
    assert.equal(countSetBits(bm, 4096), 14);
    assert.deepEqual(bitmapRuns(bm, 0, 40), [
      { start: 0, count: 3, set: false }, { start: 3, count: 14, set: true }, { start: 17, count: 23, set: false },
    ]);
  });
});

describe('VHD BAT scans (stretches of unused entries compared natively)', () => {
  it('nextAllocated and allocatedCount agree with an entry-by-entry scan, sparse and dense, at stretch edges and in a partial last stretch', () => {
    const rand = rng(15);
    for (const [count, density] of [[1_048_576, 0.00001], [5000, 0.01], [3073, 0.5], [1024, 0], [2047, 1]] as const) {
      const bytes = Buffer.alloc(count * 4, 0xff);
      const bat0 = Bat.parse(bytes, count);
      // Entries set at stretch edges (1023, 1024, 2047) and at random; also through the live entries (as writes do).
      const set = new Set<number>();
      for (let i = 0; i < count; i++) if (rand() < density) set.add(i);
      for (const i of [1023, 1024, 2047, count - 1]) if (i < count && density > 0) set.add(i);
      for (const i of set) bat0.entries[i] = 1000 + i;
      let n = 0;
      for (let i = 0; i < count; i++) if (bat0.entries[i] !== BAT_UNUSED) n++;
      assert.equal(bat0.allocatedCount(), n, `count of ${count} at ${density}`);
      const sorted = [...set].sort((a, b) => a - b);
      for (const from of [0, 1, 1023, 1024, 1025, 2048, count - 1, count, ...sorted.slice(0, 50), ...sorted.slice(0, 50).map((x) => x + 1)]) {
        const want = sorted.find((x) => x >= from) ?? -1;
        assert.equal(bat0.nextAllocated(from), want, `next from ${from} of ${count}`);
      }
    }
  });
});
