/**
 * The qcow2 malformed corpus: broken qcow2 images (made by qemu-img, then edited), each with the
 * outcome it must have in info, map/read and check, in the form of the VHD corpus (corpus.ts).
 *
 * `node --require tsx/cjs test/fuzz/qcow2Corpus.ts DIR` writes the corpus to DIR.
 */
import { execFileSync } from 'child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import type { CorpusCase, ErrorExpectation } from './corpus';

const KiB = 1024;
const MiB = 1024 * KiB;
/** qemu-img's layout for a small image of 64 KiB clusters: header, refcount table, refcount block, L1, L2. */
export const QLAYOUT = { refcountTable: 0x10000, refcountBlock: 0x20000, l1: 0x30000, l2: 0x40000 } as const;
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** Byte edits on a qcow2 file, addressed by what they change. */
export class Qcow2Bytes {
  constructor(public b: Buffer) {}

  u32(at: number, v: number): this { this.b.writeUInt32BE(v >>> 0, at); return this; }
  u64(at: number, v: bigint): this { this.b.writeBigUInt64BE(BigInt.asUintN(64, v), at); return this; }
  get l1Offset(): number { return Number(this.b.readBigUInt64BE(40)); }
  /** The active L2 table of L1 entry 0. */
  get l2Offset(): number { return Number(this.b.readBigUInt64BE(this.l1Offset) & 0x00fffffffffffe00n); }
  l2(i: number): bigint { return this.b.readBigUInt64BE(this.l2Offset + i * 8); }
  setL2(i: number, v: bigint): this { return this.u64(this.l2Offset + i * 8, v); }

  /** Replaces the backing file name (kept in the first cluster after the header extensions). */
  setBacking(name: string): this {
    const at = Number(this.b.readBigUInt64BE(8)) || 0x200;
    const bytes = Buffer.from(name, 'utf8');
    this.b.fill(0, at, at + 1024);
    bytes.copy(this.b, at);
    this.u64(8, BigInt(at));
    return this.u32(16, bytes.length);
  }
}

function qemuImg(args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'ignore' });
}

function qemuIo(img: string, cmds: string[]): void {
  execFileSync('qemu-io', [...cmds.flatMap((c) => ['-c', c]), img], { stdio: 'ignore' });
}

export async function buildQcow2Corpus(dir: string): Promise<{ dir: string; cases: CorpusCase[] }> {
  mkdirSync(dir, { recursive: true });
  const src = path.join(dir, 'src');
  mkdirSync(src, { recursive: true });
  // A 4 MiB image, 64 KiB clusters: 256 KiB of data from 0, 64 KiB at 1 MiB; a deflate-compressed copy.
  const basePath = path.join(src, 'base.qcow2');
  qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=65536', basePath, '4M']);
  qemuIo(basePath, ['write -P 0x11 0 256k', 'write -P 0x22 1M 64k']);
  const compPath = path.join(src, 'comp.qcow2');
  qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=65536', basePath, compPath]);
  const zstdPath = path.join(src, 'zstd.qcow2');
  qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=65536,compression_type=zstd', basePath, zstdPath]);
  const BASE = readFileSync(basePath);
  const COMP = readFileSync(compPath);
  const ZSTD = readFileSync(zstdPath);
  const ZSTD_L2 = new Qcow2Bytes(ZSTD).l2Offset;
  const cases: CorpusCase[] = [];
  const err = (code: string, structure: string | undefined, offset: number | undefined, message: RegExp, file?: string): ErrorExpectation => ({ code, structure, offset, message, ...(file ? { file } : {}) });

  /** A case from `from` edited by `edit`, written as `name.qcow2` in its own folder (beside `extra` files). */
  const add = (name: string, what: string, from: Buffer, edit: (q: Qcow2Bytes) => void, x: Omit<CorpusCase, 'name' | 'what' | 'image'>, extra: Record<string, Buffer> = {}) => {
    const d = path.join(dir, name);
    mkdirSync(d, { recursive: true });
    for (const [f, bytes] of Object.entries(extra)) writeFileSync(path.join(d, f), bytes);
    const q = new Qcow2Bytes(Buffer.from(from));
    edit(q);
    const image = path.join(d, `${name}.qcow2`);
    writeFileSync(image, q.b);
    cases.push({ name, what, image, ...x });
  };
  // An overlay of base.qcow2 (backing_fmt qcow2); its cases get a base.qcow2 beside them.
  const ovPath = path.join(src, 'overlay.qcow2');
  qemuImg(['create', '-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'qcow2', ovPath, '4M']);
  const OVERLAY = readFileSync(ovPath);
  /** Where qemu put the backing file name (the structure an unfollowable name is reported at). */
  const NAME_AT = Number(OVERLAY.readBigUInt64BE(8));
  const H = { backingOffset: 8, backingSize: 16, clusterBits: 20, size: 24, l1Size: 36, l1Offset: 40, refcountOffset: 48, refcountClusters: 56, nbSnapshots: 60, snapshotsOffset: 64, incompat: 72, refcountOrder: 96, headerLength: 100 };

  // ---- Header fields
  add('l1-size-past-file', 'l1_size 100000: the L1 table would run past the end of the file', BASE, (q) => q.u32(H.l1Size, 100000), {
    info: err('ETRUNC', 'L1 table', QLAYOUT.l1, /L1 table of 100000 entries at 196608 runs past the end of the file/),
    read: err('ETRUNC', 'L1 table', QLAYOUT.l1, /runs past the end of the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.l1Offset, message: /L1 table \(100000 entries at 196608\) is unaligned, too big or past the end of the file/ }] },
  });
  add('l1-size-huge', 'l1_size 0x7fffffff: an L1 table of 16 GiB (beyond qemu\'s 32 MiB limit)', BASE, (q) => q.u32(H.l1Size, 0x7fffffff), {
    info: err('EHEADER', 'qcow2 header', H.l1Size, /L1 table of 2147483647 entries exceeds 33554432 bytes/),
    read: err('EHEADER', 'qcow2 header', H.l1Size, /exceeds 33554432 bytes/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.l1Size, message: /exceeds 33554432 bytes/ }] },
  });
  add('l1-size-too-small', 'virtual size 1 TiB with the 4 MiB image\'s one-entry L1 table', BASE, (q) => q.u64(H.size, 1n << 40n), {
    info: err('EHEADER', 'qcow2 header', H.l1Size, /L1 table of 1 entries is too small for 1099511627776 bytes \(needs 2048\)/),
    read: err('EHEADER', 'qcow2 header', H.l1Size, /too small/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.l1Size, message: /too small for 1099511627776 bytes/ }] },
  });
  add('virtual-size-2-64', 'virtual size 2^64-1', BASE, (q) => q.u64(H.size, (1n << 64n) - 1n), {
    info: err('EHEADER', 'qcow2 header', H.size, /virtual size 18446744073709551615 is too large/),
    read: err('EHEADER', 'qcow2 header', H.size, /too large/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.size, message: /too large/ }] },
  });
  add('refcount-order-7', 'refcount_order 7 (128-bit refcounts; qemu allows 0..6)', BASE, (q) => q.u32(H.refcountOrder, 7), {
    info: err('EHEADER', 'qcow2 header', H.refcountOrder, /refcount order 7 out of range \(0\.\.6/),
    read: err('EHEADER', 'qcow2 header', H.refcountOrder, /refcount order 7/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.refcountOrder, message: /refcount order 7 out of range/ }] },
  });
  add('refcount-order-huge', 'refcount_order 0xffffffff', BASE, (q) => q.u32(H.refcountOrder, 0xffffffff), {
    info: err('EHEADER', 'qcow2 header', H.refcountOrder, /refcount order 4294967295 out of range/),
    read: err('EHEADER', 'qcow2 header', H.refcountOrder, /out of range/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.refcountOrder, message: /out of range/ }] },
  });
  add('cluster-bits-8', 'cluster_bits 8 (256-byte clusters; the minimum is 9)', BASE, (q) => q.u32(H.clusterBits, 8), {
    info: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 8 out of range \(9\.\.21/),
    read: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 8/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.clusterBits, message: /cluster bits 8/ }] },
  });
  add('cluster-bits-22', 'cluster_bits 22 (4 MiB clusters; the maximum is 21)', BASE, (q) => q.u32(H.clusterBits, 22), {
    info: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 22 out of range/),
    read: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 22/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.clusterBits, message: /cluster bits 22/ }] },
  });
  add('cluster-bits-63', 'cluster_bits 63', BASE, (q) => q.u32(H.clusterBits, 63), {
    info: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 63 out of range/),
    read: err('EHEADER', 'qcow2 header', H.clusterBits, /cluster bits 63/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.clusterBits, message: /cluster bits 63/ }] },
  });
  add('refcount-table-huge', 'refcount_table_clusters 0xffffffff', BASE, (q) => q.u32(H.refcountClusters, 0xffffffff), {
    info: err('EHEADER', 'qcow2 header', H.refcountClusters, /refcount table of 4294967295 clusters exceeds/),
    read: err('EHEADER', 'qcow2 header', H.refcountClusters, /exceeds/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.refcountClusters, message: /exceeds 8388608 bytes/ }] },
  });
  add('snapshots-huge-count', 'nb_snapshots 0xffffffff', BASE, (q) => { q.u32(H.nbSnapshots, 0xffffffff); q.u64(H.snapshotsOffset, 0x50000n); }, {
    info: err('EHEADER', 'qcow2 header', H.nbSnapshots, /4294967295 snapshots exceed/),
    read: err('EHEADER', 'qcow2 header', H.nbSnapshots, /snapshots exceed/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.nbSnapshots, message: /4294967295 snapshots exceed/ }] },
  });
  add('snapshots-past-file', 'one snapshot whose table lies past the end of the file', BASE, (q) => { q.u32(H.nbSnapshots, 1); q.u64(H.snapshotsOffset, 0x1000000n); }, {
    info: err('ETRUNC', 'snapshot table', 0x1000000, /snapshot table of 1 entries runs past the end of the file/),
    read: err('ETRUNC', 'snapshot table', 0x1000000, /runs past the end/),
    check: { ok: false, has: [{ severity: 'error', structure: 'snapshot table', offset: 0x1000000, message: /runs past the end of the file/ }] },
  });
  add('header-length-odd', 'header_length 105 (not a multiple of 8)', BASE, (q) => q.u32(H.headerLength, 105), {
    info: err('EHEADER', 'qcow2 header', H.headerLength, /header length 105 is not a multiple of 8/),
    read: err('EHEADER', 'qcow2 header', H.headerLength, /header length 105/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.headerLength, message: /header length 105/ }] },
  });
  add('unknown-incompatible-bit', 'incompatible feature bit 40 set', BASE, (q) => q.u64(H.incompat, 1n << 40n), {
    info: err('EUNSUPPORTED', 'qcow2 header', H.incompat, /unknown incompatible features 0x10000000000/),
    read: err('EUNSUPPORTED', 'qcow2 header', H.incompat, /unknown incompatible features/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.incompat, message: /unknown incompatible features/ }] },
  });
  add('extended-l2-small-clusters', 'extended L2 entries with 4 KiB clusters (they need 16 KiB)', BASE, (q) => { q.u64(H.incompat, 1n << 4n); q.u32(H.clusterBits, 12); }, {
    info: err('EHEADER', 'qcow2 header', H.clusterBits, /extended L2 entries need clusters of at least 16 KiB/),
    read: err('EHEADER', 'qcow2 header', H.clusterBits, /extended L2/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.clusterBits, message: /extended L2 entries need clusters of at least 16 KiB/ }] },
  });
  add('dirty-bit', 'the dirty bit is set (lazy refcounts not written back)', BASE, (q) => q.u64(H.incompat, 1n), {
    info: 'ok', warnings: [/marked dirty/], read: 'ok',
    check: { ok: true, has: [{ severity: 'warning', structure: 'qcow2 header', offset: H.incompat, message: /marked dirty/ }] },
  });
  add('corrupt-bit', 'the corrupt bit is set', BASE, (q) => q.u64(H.incompat, 2n), {
    info: 'ok', warnings: [/marked corrupt .*read-only/], read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.incompat, message: /marked corrupt/ }] },
  });

  // ---- L1 and L2 entries
  add('l1-entry-into-header', 'L1 entry 0 points its L2 table at byte 512, inside the header cluster', BASE, (q) => q.u64(QLAYOUT.l1, COPIED | 0x200n), {
    info: 'ok', warnings: [/^damaged entry: L1 entry 0: L2 table offset 512 is not cluster aligned \(L1 table at offset 196608\)/], read: err('EL1', 'L1 table', QLAYOUT.l1, /L1 entry 0: L2 table offset 512 is not cluster aligned/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L1 table', offset: QLAYOUT.l1, message: /L2 table offset 512 is not cluster aligned/ }] },
  });
  add('l1-entry-past-file', 'L1 entry 0 points its L2 table 1 GiB past the end of the file', BASE, (q) => q.u64(QLAYOUT.l1, COPIED | (1n << 30n)), {
    info: 'ok', warnings: [/^damaged entry: L1 entry 0: L2 table at 1073741824 runs past the end of the file \(L1 table at offset 196608\)/], read: err('EL1', 'L1 table', QLAYOUT.l1, /L1 entry 0: L2 table at 1073741824 runs past the end of the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L1 table', offset: QLAYOUT.l1, message: /L2 table at 1073741824 runs past the end of the file/ }] },
  });
  add('l1-entry-reserved-bits', 'L1 entry 0 has reserved bits 1-8 set', BASE, (q) => q.u64(QLAYOUT.l1, q.b.readBigUInt64BE(QLAYOUT.l1) | 0x1fen), {
    info: 'ok', warnings: [/^damaged entry: L1 entry 0 has reserved bits set/], read: err('EL1', 'L1 table', QLAYOUT.l1, /L1 entry 0 has reserved bits set/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L1 table', offset: QLAYOUT.l1, message: /reserved bits set/ }] },
  });
  add('l2-entry-into-header', 'the L2 entry of cluster 1 points its data at the header cluster (offset 0 with the copied flag)', BASE, (q) => q.setL2(1, COPIED | 0x200n), {
    info: 'ok', warnings: [/^damaged entry: cluster 1: data offset 512 is not cluster aligned \(L2 table at offset 262152\)/], read: err('EL2', 'L2 table', QLAYOUT.l2 + 8, /cluster 1: data offset 512 is not cluster aligned/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L2 table', offset: QLAYOUT.l2 + 8, message: /data offset 512 is not cluster aligned/ }] },
  });
  add('l2-entry-at-l1-table', 'the L2 entry of cluster 2 points its data at the L1 table\'s cluster (metadata overlap)', BASE, (q) => q.setL2(2, COPIED | BigInt(QLAYOUT.l1)), {
    info: 'ok', read: 'ok',
    check: { ok: false, has: [{ severity: 'error', structure: 'refcount block', offset: QLAYOUT.refcountBlock + 6, message: /cluster 3: refcount 1 is lower than its 2 reference\(s\)/ }] },
  });
  add('l2-entry-past-file', 'the L2 entry of cluster 3 points its data 1 GiB past the end of the file', BASE, (q) => q.setL2(3, COPIED | (1n << 30n)), {
    info: 'ok', read: err('ETRUNC', 'L2 table', QLAYOUT.l2 + 24, /cluster 3: data at 1073741824 runs past the end of the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L2 table', offset: QLAYOUT.l2 + 24, message: /data at 1073741824 lies past the end of the file/ }] },
  });
  add('compressed-into-header', 'the compressed descriptor of cluster 0 points at byte 100, inside the header', COMP, (q) => q.setL2(0, COMPRESSED | 100n), {
    info: 'ok', warnings: [/^damaged entry: cluster 0: compressed data at 100 points into the header \(L2 table at offset 262144\)/], read: err('EL2', 'L2 table', QLAYOUT.l2, /cluster 0: compressed data at 100 points into the header/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L2 table', offset: QLAYOUT.l2, message: /compressed data at 100 points into the header/ }] },
  });
  add('compressed-past-file', 'the compressed descriptor of cluster 16 says 256 sectors: its data runs 128 KiB past the end of the file', COMP, (q) => q.setL2(16, q.l2(16) | (0xffn << 54n)), {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', QLAYOUT.l2 + 16 * 8, /cluster 16: compressed data \(\d+ bytes at \d+\) runs past the end of the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L2 table', offset: QLAYOUT.l2 + 16 * 8, message: /compressed cluster data \(130756 bytes at \d+\) runs past the end of the file/ }] },
  });
  add('compressed-offset-past-file', 'the compressed descriptor of cluster 1 points 16 MiB past the end of the file', COMP, (q) => q.setL2(1, COMPRESSED | BigInt(16 * MiB)), {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', QLAYOUT.l2 + 8, /cluster 1: compressed data at 16777216 lies past the end of the file/),
    check: { ok: false, has: [{ severity: 'error', structure: 'L2 table', offset: QLAYOUT.l2 + 8, message: /compressed cluster data \(512 bytes at 16777216\) runs past the end of the file/ }] },
  });
  add('compressed-garbage', 'the compressed data of cluster 2 is not a deflate stream', COMP, (q) => { const at = Number(q.l2(2) & ((1n << 54n) - 1n)); q.b.fill(0xff, at, at + 40); }, {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', QLAYOUT.l2 + 16, /compressed cluster does not inflate/),
    // Like qemu-img check, check does not inflate compressed data: only reading finds this.
    check: { ok: true, has: [] },
  });
  /** Host offset of the zstd frame of cluster `i` (compressed descriptor, 64 KiB clusters: 54 offset bits). */
  const frameAt = (q: Qcow2Bytes, i: number) => Number(q.l2(i) & ((1n << 54n) - 1n));
  add('zstd-huge-window', 'the zstd frame of cluster 1 asks for a 2 GiB window (the decoder would allocate it)', ZSTD, (q) => { const at = frameAt(q, 1); q.b[at + 4] = 0x00; q.b[at + 5] = 0xa8; }, {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', ZSTD_L2 + 8, /zstd frame asks for a window of 2147483648 bytes \(more than 8388608\)/),
    check: { ok: true, has: [] },
  });
  add('zstd-garbage', 'the compressed data of cluster 2 is not a zstd frame', ZSTD, (q) => { const at = frameAt(q, 2); q.b.fill(0xff, at, at + 40); }, {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', ZSTD_L2 + 16, /compressed cluster is not a zstd frame/),
    check: { ok: true, has: [] },
  });
  add('zstd-bad-block', 'a block of the zstd frame of cluster 3 is cut short: it decodes to less than a cluster', ZSTD, (q) => { const at = frameAt(q, 3); q.b[at + 4] = 0x20; q.b[at + 5] = 0x10; q.b[at + 6] = 0x01; q.b[at + 7] = 0x00; q.b[at + 8] = 0x00; }, {
    info: 'ok', read: err('ECOMPRESSED', 'compressed cluster descriptor', ZSTD_L2 + 24, /compressed cluster decodes to 0 of 65536 bytes/),
    check: { ok: true, has: [] },
  });

  // ---- Backing files
  add('backing-dotdot', "the backing file is '../shared/base.qcow2', outside the overlay's folder (followed, with a warning)", OVERLAY, (q) => q.setBacking('../shared/base.qcow2'), {
    info: 'ok', warnings: [/backing file '\.\.\/shared\/base\.qcow2' lies outside the image's folder/], read: 'ok',
    check: { ok: true, has: [{ severity: 'warning', structure: 'qcow2 header', offset: 0, message: /lies outside the image's folder/ }] },
  });
  mkdirSync(path.join(dir, 'shared'), { recursive: true });
  writeFileSync(path.join(dir, 'shared', 'base.qcow2'), BASE);
  for (const [name, backing, prefix] of [
    ['backing-json', 'json:{"file.driver":"nbd","file.host":"127.0.0.1","file.port":"1"}', 'json'],
    ['backing-nbd', 'nbd://127.0.0.1:1/export', 'nbd'],
    ['backing-http', 'http://127.0.0.1:1/base.qcow2', 'http'],
  ] as const) {
    add(name, `the backing file is '${backing}' (a protocol prefix: not opened)`, OVERLAY, (q) => q.setBacking(backing), {
      info: 'ok', warnings: [new RegExp(`protocol prefix '${prefix}:'`)],
      read: err('ENOPARENT', 'backing file name', NAME_AT, new RegExp(`protocol prefix '${prefix}:'`)),
      check: { ok: false, has: [{ severity: 'error', structure: 'backing file name', offset: NAME_AT, message: new RegExp(`protocol prefix '${prefix}:'`) }, { severity: 'warning', structure: 'qcow2 header', offset: 0, message: new RegExp(`protocol prefix '${prefix}:'`) }] },
    });
  }
  add('backing-loop-self', 'the overlay names itself as its backing file', OVERLAY, (q) => q.setBacking('backing-loop-self.qcow2'), {
    info: 'ok', warnings: [/loops back/], read: err('ECYCLE', 'backing file name', NAME_AT, /parent chain loops back/),
    check: { ok: false, has: [{ severity: 'error', structure: 'backing file name', offset: NAME_AT, message: /is the image itself/ }] },
  });
  {
    // The case backs onto b.qcow2, which backs onto the case.
    const b = new Qcow2Bytes(Buffer.from(OVERLAY)).setBacking('backing-loop-pair.qcow2');
    add('backing-loop-pair', 'two overlays that name each other as backing files', OVERLAY, (q) => q.setBacking('b.qcow2'), {
      info: 'ok', warnings: [/loops back/], read: err('ECYCLE', 'backing file name', NAME_AT, /parent chain loops back/, 'b.qcow2'),
      check: { ok: false, has: [{ severity: 'error', structure: 'backing file name', offset: NAME_AT, message: /parent chain loops back/ }] },
    }, { 'b.qcow2': b.b });
  }
  add('backing-name-too-long', 'backing_file_size 4096 (qemu allows 1023)', OVERLAY, (q) => q.u32(H.backingSize, 4096), {
    info: err('EHEADER', 'qcow2 header', H.backingSize, /backing file name length 4096 exceeds 1023/),
    read: err('EHEADER', 'qcow2 header', H.backingSize, /exceeds 1023/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.backingSize, message: /exceeds 1023/ }] },
  });
  add('backing-name-outside-cluster', 'the backing file name lies at offset 65530, across the end of the first cluster', OVERLAY, (q) => q.u64(H.backingOffset, 65530n), {
    info: err('EHEADER', 'qcow2 header', H.backingOffset, /backing file name \(\d+ bytes at 65530\) is not inside the first cluster/),
    read: err('EHEADER', 'qcow2 header', H.backingOffset, /not inside the first cluster/),
    check: { ok: false, has: [{ severity: 'error', structure: 'qcow2 header', offset: H.backingOffset, message: /not inside the first cluster/ }] },
  });
  add('backing-missing', 'the backing file does not exist', OVERLAY, (q) => q.setBacking('gone.qcow2'), {
    info: 'ok', warnings: [/parent 'gone\.qcow2' not found/], read: err('ENOPARENT', 'backing file name', NAME_AT, /not found/),
    check: { ok: false, has: [{ severity: 'error', structure: 'backing file name', offset: NAME_AT, message: /parent 'gone\.qcow2' not found/ }] },
  });
  return { dir, cases };
}

if (require.main === module) {
  buildQcow2Corpus(process.argv[2] ?? 'qcow2-corpus').then((c) => {
    for (const k of c.cases) process.stdout.write(`${k.name.padEnd(34)} ${path.relative(process.cwd(), k.image)}  ${k.what}\n`);
    process.stdout.write(`${c.cases.length} images\n`);
  });
}
