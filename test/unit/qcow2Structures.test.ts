import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { buildBlockMap, NO_OWNER } from '../../src/chain/blockMap';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { getFormat } from '../../src/format/registry';
import { ClusterKind, decodeL2Entry, l2TableWords } from '../../src/format/qcow2/l2Table';
import { getRefcount, setRefcount } from '../../src/format/qcow2/refcountTable';
import { parseHeader, serializeHeader } from '../../src/format/qcow2/header';
import { parseSnapshotTable, serializeSnapshotEntry } from '../../src/format/qcow2/snapshotTable';
import { Qcow2Image } from '../../src/format/qcow2/qcow2Image';
import { runCli, tempDir } from '../helpers/util';

describe('qcow2 structures', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2s-')));
  after(() => cleanup());

  it('decodes standard, zero, compressed and extended L2 entries', () => {
    const n = decodeL2Entry((1n << 63n) | 0x50000n, null, 16);
    assert.equal(n.kind, ClusterKind.Normal);
    assert.equal(n.hostOffset, 0x50000);
    assert.equal(n.copied, true);
    assert.equal(decodeL2Entry(1n, null, 16).kind, ClusterKind.Zero);
    // Compressed, 64 KiB clusters: offset in bits 0..53, extra sectors in bits 54..61.
    const c = decodeL2Entry((1n << 62n) | (3n << 54n) | 0x12345n, null, 16);
    assert.equal(c.kind, ClusterKind.Compressed);
    assert.equal(c.hostOffset, 0x12345);
    assert.equal(c.compressedLength, 4 * 512 - (0x12345 & 511));
    const x = decodeL2Entry(0x70000n, (0xffn << 32n) | 0xff00n, 16);
    assert.equal(x.kind, ClusterKind.Mixed);
    assert.equal(x.allocBits, 0xff00);
    assert.equal(x.zeroBits, 0xff);
    assert.equal(decodeL2Entry(0n, 0xffffffffn << 32n, 16).kind, ClusterKind.Zero);
  });

  it('an L2 table as 32-bit halves: entry j high half at 2j, low at 2j + 1, the table itself unchanged', () => {
    const table = Buffer.alloc(64 * 1024);
    for (let i = 0; i < table.length; i++) table[i] = (i * 131 + (i >> 8) * 7) & 0xff;
    table.writeBigUInt64BE(0x8000000012340000n, 8);
    const before = Buffer.from(table);
    const words = l2TableWords(table);
    assert.equal(words.length, table.length / 4);
    for (let j = 0; j < table.length / 8; j++) {
      assert.equal(words[2 * j], table.readUInt32BE(8 * j), `entry ${j} high`);
      assert.equal(words[2 * j + 1], table.readUInt32BE(8 * j + 4), `entry ${j} low`);
    }
    assert.equal(words[2], 0x80000000);
    assert.equal(words[3], 0x12340000);
    assert.ok(table.equals(before));
  });

  it('refcounts of every width round-trip, sub-byte ones least significant bit first', () => {
    for (let order = 0; order <= 6; order++) {
      const b = Buffer.alloc(64);
      const max = order >= 6 ? 12345678 : 2 ** (1 << order) - 1;
      setRefcount(b, 3, order, max);
      setRefcount(b, 2, order, 1);
      assert.equal(getRefcount(b, 3, order), max);
      assert.equal(getRefcount(b, 2, order), 1);
      assert.equal(getRefcount(b, 4, order), 0);
    }
    const b = Buffer.alloc(1);
    setRefcount(b, 1, 1, 3); // 2-bit entries: entry 1 is bits 2-3
    assert.equal(b[0], 0b1100);
  });

  it('header and snapshot entries round-trip', () => {
    const h = parseHeader(serializeHeader({
      version: 3, backingFileOffset: 0, backingFileSize: 0, clusterBits: 16, size: 1 << 30, cryptMethod: 0, l1Size: 2,
      l1TableOffset: 196608, refcountTableOffset: 65536, refcountTableClusters: 1, nbSnapshots: 0, snapshotsOffset: 0,
      incompatibleFeatures: 0x18n, compatibleFeatures: 0n, autoclearFeatures: 0n, refcountOrder: 4, headerLength: 112, compressionType: 1,
    }), 'x');
    assert.equal(h.compressionType, 1);
    assert.equal(h.size, 1 << 30);
    const e = serializeSnapshotEntry({ l1TableOffset: 0x30000, l1Size: 2, id: '1', name: 'snap one', dateSec: 1700000000, dateNsec: 5, vmClockNsec: 7n, vmStateSize: 0, diskSize: 1 << 30 });
    const [p] = parseSnapshotTable(e, 4096, 1, 'x');
    assert.equal(p.name, 'snap one');
    assert.equal(p.diskSize, 1 << 30);
    assert.equal(p.length, e.length);
  });

  /** Each kind of damage: a clear one-line error naming structure and offset, never a crash. */
  const damage: Array<{ name: string; edit: (b: Buffer) => Buffer; expect: RegExp }> = [
    { name: 'cluster bits 8', edit: (b) => { b.writeUInt32BE(8, 20); return b; }, expect: /cluster bits 8 out of range.*qcow2 header at offset 20/ },
    { name: 'cluster bits 22', edit: (b) => { b.writeUInt32BE(22, 20); return b; }, expect: /cluster bits 22 out of range/ },
    { name: 'refcount order 7', edit: (b) => { b.writeUInt32BE(7, 96); return b; }, expect: /refcount order 7 out of range.*offset 96/ },
    { name: 'L1 size past the file', edit: (b) => { b.writeUInt32BE(4000000, 36); return b; }, expect: /L1 table of 4000000 entries .*(past the end of the file|exceeds)/ },
    { name: 'L1 entry pointing into the header', edit: (b) => { const l1 = Number(b.readBigUInt64BE(40)); b.writeBigUInt64BE(0x8000000000000000n | 512n, l1); return b; }, expect: /L1 entry 0: L2 table offset 512 is not cluster aligned|points into the header/ },
    { name: 'L2 entry pointing into the header', edit: (b) => { const l1 = Number(b.readBigUInt64BE(40)); const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn); b.writeBigUInt64BE((1n << 62n) | 100n, l2); return b; }, expect: /compressed data at 100 points into the header \(L2 table at offset \d+\)/ },
    { name: 'unknown incompatible feature', edit: (b) => { b.writeBigUInt64BE(1n << 40n, 72); return b; }, expect: /unknown incompatible features/ },
    { name: 'version 4', edit: (b) => { b.writeUInt32BE(4, 4); return b; }, expect: /version 4 is not supported/ },
    { name: 'backing name past the first cluster', edit: (b) => { b.writeBigUInt64BE(65530n, 8); b.writeUInt32BE(100, 16); return b; }, expect: /backing file name .* not inside the first cluster/ },
  ];
  damage.forEach((d, i) => {
    it(`bad input: ${d.name}`, () => {
      const img = path.join(dir, `bad${i}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '64M']);
      execFileSync('qemu-io', ['-c', 'write -P 7 0 64k', img], { stdio: 'ignore' });
      writeFileSync(img, d.edit(readFileSync(img)));
      const r = runCli(['read', img, '--length', '4096']);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, d.expect);
      const c = runCli(['check', img]);
      assert.notEqual(c.code, 0);
    });
  });

  it('bad input: a compressed cluster whose length runs past the file', async () => {
    const raw = path.join(dir, 'cz.raw');
    writeFileSync(raw, Buffer.alloc(65536, 9));
    const img = path.join(dir, 'cz.qcow2');
    execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', raw, img]);
    const b = readFileSync(img);
    const l1 = Number(b.readBigUInt64BE(40));
    const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
    const e = b.readBigUInt64BE(l2);
    // Claim 255 extra sectors (the most 64 KiB clusters allow).
    b.writeBigUInt64BE(e | (0xffn << 54n), l2);
    writeFileSync(img, b);
    const r = runCli(['read', img, '--length', '4096']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /compressed data .* runs past the end of the file \(compressed cluster descriptor at offset \d+\)/);
  });

  it('bad input: backing names with .. warn; with a protocol are refused', async () => {
    const base = path.join(dir, 'up.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
    const sub = path.join(dir, 'sub');
    execFileSync('mkdir', ['-p', sub]);
    const ov = path.join(sub, 'ov.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '../up.qcow2', '-F', 'qcow2', ov]);
    const img = await Qcow2Image.open(ov);
    assert.ok(img.warnings.some((w) => /outside the image's folder/.test(w)));
    await img.close();
    const chain = await openChain(ov);
    assert.equal(chain.layers.length, 2);
    await chain.close();
    const h = path.join(dir, 'http.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'http://127.0.0.1:1/x.img', '-F', 'raw', h, '1M']);
    await assert.rejects(openChain(h), (e: unknown) => e instanceof DiskImageError && /protocol prefix 'http:'/.test(e.message));
  });

  it('a 2 TiB image with 64 KiB clusters opens and maps in bounded cells, with zero clusters as their own state', async () => {
    const img = path.join(dir, 'big.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '2T']);
    execFileSync('qemu-io', ['-c', 'write -P 1 0 64k', '-c', 'write -z 1G 1M', '-c', 'write -P 2 1T 64k', img], { stdio: 'ignore' });
    const chain = await openChain(img);
    assert.equal(chain.top.blockCount, 33554432);
    const map = await buildBlockMap(chain);
    await chain.close();
    assert.equal(map.blocksPerCell, 16);
    assert.equal(map.blockCount, 2097152);
    assert.equal(map.blockSize, 1 << 20);
    assert.equal(map.owner[0], 0);
    assert.equal(map.owner[1024], 0);
    assert.equal(map.zero![1024], 1);
    assert.equal(map.zero![0], 0);
    assert.equal(map.owner[1 << 20], 0);
    assert.equal(map.owner[5], NO_OWNER);
    let owned = 0;
    for (let i = 0; i < map.blockCount; i++) if (map.owner[i] !== NO_OWNER) owned++;
    assert.equal(owned, 3);
  });

  it('the open finds every allocated and zero cluster at the edges of the empty stretches it skips (256 L2 entries, whole L1 entries)', async () => {
    // 64 KiB clusters: an L2 table maps 8192 clusters (4096 with extended entries); stretches of 256 entries are skipped at once.
    const edges = [0, 1, 254, 255, 256, 257, 511, 512, 4095, 4096, 8191, 8192, 8193, 3 * 8192 + 300];
    for (const extended of [false, true]) {
      const img = path.join(dir, `edges-${extended}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=65536${extended ? ',extended_l2=on' : ''}`, img, '4G']);
      const zeroAt = new Set([255, 8192]);
      const cmds = edges.flatMap((c) => ['-c', zeroAt.has(c) ? `write -z ${c * 65536} 64k` : `write -P ${(c % 250) + 1} ${c * 65536} 64k`]);
      execFileSync('qemu-io', [...cmds, img], { stdio: 'ignore' });
      const chain = await openChain(img);
      try {
        const top = chain.top;
        const found: number[] = [];
        for (let b = top.nextAllocatedBlock!(0); b >= 0; b = top.nextAllocatedBlock!(b + 1)) found.push(b);
        assert.deepEqual(found, edges, `extended_l2=${extended}`);
        for (const c of edges) {
          assert.equal(top.isBlockAllocated(c), true);
          assert.equal(top.isBlockAllocated(c + 2) || edges.includes(c + 2), edges.includes(c + 2));
          assert.equal(top.isBlockZero?.(c) ?? false, zeroAt.has(c), `cluster ${c} zero`);
          const buf = Buffer.alloc(512);
          await chain.read(c * 65536, buf);
          assert.ok(buf.every((x) => x === (zeroAt.has(c) ? 0 : (c % 250) + 1)), `cluster ${c} reads back`);
        }
      } finally {
        await chain.close();
      }
    }
  });
});

describe('qcow2 in the editor and info', function () {
  this.timeout(60000);
  it('header view lists header fields, extensions, backing name and snapshots through the format table', async () => {
    const { dir, cleanup } = tempDir('diskimg-qcow2h-');
    try {
      const base = path.join(dir, 'hb.qcow2');
      const img = path.join(dir, 'hv.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'hb.qcow2', '-F', 'qcow2', img]);
      execFileSync('qemu-img', ['snapshot', '-c', 'first', img]);
      const q = await Qcow2Image.open(img);
      const d = getFormat('qcow2').headerFields(q);
      const names = d.fields.map((f) => `${f.structure}/${f.name}`);
      assert.ok(names.includes('qcow2 header/cluster bits'));
      assert.ok(names.includes('header extension (backing file format name)/data'));
      assert.ok(names.includes('header extension (feature name table)/data'));
      assert.ok(d.fields.some((f) => f.structure === 'backing file name' && f.decoded === 'hb.qcow2'));
      assert.ok(d.fields.some((f) => f.structure.startsWith('snapshot') && /first/.test(f.decoded)));
      const size = d.fields.find((f) => f.name === 'size')!;
      assert.equal(size.offset, 24);
      assert.equal(size.hex, '00 00 00 00 00 80 00 00');
      const summary = getFormat('qcow2').summary(q);
      assert.equal((summary.fields.snapshots as unknown[]).length, 1);
      await q.close();
    } finally {
      cleanup();
    }
  });
});
