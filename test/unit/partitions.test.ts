import { strict as assert } from 'assert';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { formatGuid, readPartitionTable } from '../../src/chain/partitions';
import { createImage } from '../../src/format/vhd/create';
import { tempDir } from '../helpers/util';

const S = 512;

function reader(disk: Buffer) {
  return async (o: number, l: number) => {
    const b = Buffer.alloc(l);
    disk.copy(b, 0, o, Math.min(disk.length, o + l));
    return b;
  };
}

function mbrEntry(b: Buffer, sectorOffset: number, i: number, boot: number, type: number, lba: number, count: number): void {
  const o = sectorOffset + 446 + i * 16;
  b[o] = boot; b[o + 4] = type; b.writeUInt32LE(lba, o + 8); b.writeUInt32LE(count, o + 12);
  b[sectorOffset + 510] = 0x55; b[sectorOffset + 511] = 0xaa;
}

function guidBytes(text: string): Buffer {
  const h = text.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse(); b.subarray(4, 6).reverse(); b.subarray(6, 8).reverse();
  return b;
}

describe('partitions (core): MBR, extended/logical and GPT through a read callback', () => {
  it('finds no table without the 55AA signature', async () => {
    const t = await readPartitionTable(reader(Buffer.alloc(64 * S)), 64 * S);
    assert.equal(t.scheme, 'none');
    assert.equal(t.partitions.length, 0);
  });

  it('reads primary MBR partitions with type names, boot flag and byte ranges', async () => {
    const disk = Buffer.alloc(10000 * S);
    mbrEntry(disk, 0, 0, 0x80, 0x0c, 2048, 3000);
    mbrEntry(disk, 0, 1, 0, 0x83, 5048, 4000);
    const t = await readPartitionTable(reader(disk), disk.length);
    assert.equal(t.scheme, 'mbr');
    assert.deepEqual(t.partitions.map((p) => [p.number, p.type, p.typeName, p.start, p.length, p.bootable]), [
      [1, '0c', 'FAT32 (LBA)', 2048 * S, 3000 * S, true],
      [2, '83', 'Linux', 5048 * S, 4000 * S, false],
    ]);
  });

  it('follows extended boot records to logical partitions, relative to the extended start', async () => {
    const disk = Buffer.alloc(20000 * S);
    mbrEntry(disk, 0, 0, 0, 0x83, 63, 937);
    mbrEntry(disk, 0, 1, 0, 0x05, 1000, 10000);
    mbrEntry(disk, 1000 * S, 0, 0, 0x07, 63, 2000);           // logical 5 at 1063
    mbrEntry(disk, 1000 * S, 1, 0, 0x05, 3000, 5000);         // next EBR at 1000 + 3000
    mbrEntry(disk, 4000 * S, 0, 0, 0x82, 63, 1000);           // logical 6 at 4063
    const t = await readPartitionTable(reader(disk), disk.length);
    assert.deepEqual(t.partitions.map((p) => [p.number, p.typeName, p.start / S, p.length / S]), [
      [1, 'Linux', 63, 937], [2, 'Extended', 1000, 10000], [5, 'NTFS/exFAT/HPFS', 1063, 2000], [6, 'Linux swap', 4063, 1000],
    ]);
    assert.deepEqual(t.warnings, []);
  });

  it('stops at a looping EBR chain with a warning instead of hanging', async () => {
    const disk = Buffer.alloc(5000 * S);
    mbrEntry(disk, 0, 0, 0, 0x0f, 1000, 3000);
    mbrEntry(disk, 1000 * S, 0, 0, 0x83, 63, 100);
    mbrEntry(disk, 1000 * S, 1, 0, 0x05, 0x7fffffff, 10);     // points past the disk
    const t = await readPartitionTable(reader(disk), disk.length);
    assert.equal(t.partitions.filter((p) => p.number >= 5).length, 1);
    assert.match(t.warnings.join(), /broken/);
  });

  it('reads GPT entries behind a protective MBR: type GUIDs, names, clamping', async () => {
    const disk = Buffer.alloc(4096 * S);
    mbrEntry(disk, 0, 0, 0, 0xee, 1, 4095);
    const h = S;
    disk.write('EFI PART', h, 'latin1');
    guidBytes('11111111-2222-3333-4444-555555555555').copy(disk, h + 56);
    disk.writeBigUInt64LE(2n, h + 72);
    disk.writeUInt32LE(128, h + 80);
    disk.writeUInt32LE(128, h + 84);
    const e0 = 2 * S;
    guidBytes('c12a7328-f81f-11d2-ba4b-00a0c93ec93b').copy(disk, e0);
    disk.writeBigUInt64LE(34n, e0 + 32); disk.writeBigUInt64LE(1057n, e0 + 40);
    disk.write('EFI <b>system</b>', e0 + 56, 'utf16le');
    const e1 = e0 + 128 * 3; // entries may have holes
    guidBytes('0fc63daf-8483-4772-8e79-3d69d8477de4').copy(disk, e1);
    disk.writeBigUInt64LE(2048n, e1 + 32); disk.writeBigUInt64LE(9999n, e1 + 40);
    const t = await readPartitionTable(reader(disk), disk.length);
    assert.equal(t.scheme, 'gpt');
    assert.equal(t.diskGuid, '11111111-2222-3333-4444-555555555555');
    assert.deepEqual(t.partitions.map((p) => [p.number, p.typeName, p.name, p.start / S, p.length / S]), [
      [1, 'EFI system', 'EFI <b>system</b>', 34, 1024],
      [4, 'Linux filesystem', '', 2048, 4096 - 2048],
    ]);
    assert.match(t.warnings.join(), /past the end/);
  });

  it('formats mixed-endian GUIDs as tools print them', () => {
    assert.equal(formatGuid(guidBytes('c12a7328-f81f-11d2-ba4b-00a0c93ec93b')), 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b');
  });

  it('reads the table through a differencing chain (child overrides the parent MBR)', async () => {
    const t = tempDir('parts-');
    try {
      const base = path.join(t.dir, 'b.vhd');
      await createImage(base, { size: 32 * 1024 * 1024, exactSize: true });
      const mbr = Buffer.alloc(S);
      mbrEntry(mbr, 0, 0, 0x80, 0x83, 2048, 4096);
      let c = await openChain(base, { writable: true });
      await c.write(0, mbr); await c.close();
      const child = path.join(t.dir, 'c.vhd');
      await createChild(base, child);
      const mbr2 = Buffer.from(mbr);
      mbrEntry(mbr2, 0, 1, 0, 0x07, 8192, 1000);
      c = await openChain(child, { writable: true });
      await c.write(0, mbr2); await c.close();
      for (const [p, n] of [[base, 1], [child, 2]] as const) {
        const chain = await openChain(p);
        try {
          const table = await readPartitionTable((o, l) => chain.readRange(o, l), chain.virtualSize);
          assert.equal(table.partitions.length, n, p);
        } finally { await chain.close(); }
      }
    } finally { t.cleanup(); }
  });
});
