// The tolerant scan of one qcow2 file for `check`: header, L1/L2 entries (aligned, inside the file,
// clear of the header) for the active table and every snapshot's, and the refcounts against the
// references counted from those tables (leaks, too low, overlaps, copied flags).
import type { FormatScan, ScanOptions } from '../registry';
import { ProblemList } from '../checkProblems';
import { DiskImageError, throwIfCancelled } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { hasFeature, HEADER_OFFSETS, INCOMPAT, parseHeader, Qcow2Header, V3_HEADER_LENGTH_WITH_COMPRESSION } from './header';
import { COPIED_FLAG, L1_ENTRY_SIZE, l1EntriesNeeded, l1ReservedBits, l2OffsetOf, MAX_L1_BYTES } from './l1Table';
import { ClusterKind, decodeL2Entry } from './l2Table';
import { getRefcount, MAX_REFCOUNT_TABLE_BYTES, refcountBlockEntries, REFT_OFFSET_MASK } from './refcountTable';
import { Qcow2Image } from './qcow2Image';

/** A refcount to set: host cluster, the value stored (or null: no refcount block covers it), the value it should have. */
export interface RefcountFix {
  cluster: number;
  stored: number;
  actual: number;
  /** File offset of the refcount block holding it (0: none). */
  blockAt: number;
}

export interface Qcow2Scan extends FormatScan {
  header: Qcow2Header | null;
  image: Qcow2Image | null;
  fixes: RefcountFix[];
  /** Fixes that need a refcount block that does not exist (repair cannot make them). */
  unfixable: number;
  clusterSize: number;
}

/** The most host clusters whose references we count (a 2 TiB file of 64 KiB clusters is 33.5 M). */
const MAX_COUNTED_CLUSTERS = 1 << 27;

export async function scanQcow2(path: string, file: ImageFile, options: ScanOptions = {}): Promise<Qcow2Scan> {
  const p = new ProblemList();
  const scan: Qcow2Scan = { path, problems: p, link: null, header: null, image: null, fixes: [], unfixable: 0, clusterSize: 0 };
  const head = Buffer.alloc(Math.min(file.size, V3_HEADER_LENGTH_WITH_COMPRESSION));
  await file.readInto(head, 0);
  let h: Qcow2Header;
  try {
    h = parseHeader(head, path);
  } catch (e) {
    if (!(e instanceof DiskImageError) || e.code === 'EFORMAT' || e.code === 'ETRUNC') throw e;
    p.error(e.structure ?? 'qcow2 header', e.offset ?? 0, e.what);
    return scan;
  }
  scan.header = h;
  const cs = 2 ** h.clusterBits;
  scan.clusterSize = cs;
  const extended = hasFeature(h.incompatibleFeatures, INCOMPAT.extendedL2);
  const entryBytes = extended ? 16 : 8;
  const hostClusters = Math.ceil(file.size / cs);
  if (hostClusters > MAX_COUNTED_CLUSTERS) {
    p.error('file', 0, `file of ${file.size} bytes has too many clusters to count references (${hostClusters})`);
    return scan;
  }
  if (hasFeature(h.incompatibleFeatures, INCOMPAT.corrupt)) p.error('qcow2 header', HEADER_OFFSETS.incompatibleFeatures, 'image is marked corrupt');
  if (hasFeature(h.incompatibleFeatures, INCOMPAT.dirty)) p.warning('qcow2 header', HEADER_OFFSETS.incompatibleFeatures, 'image is marked dirty: refcounts are checked and repair rewrites them');
  // The open image gives the backing link and catches what reads would trip on.
  try {
    scan.image = await Qcow2Image.fromOpenFile(path, file);
  } catch (e) {
    if (!(e instanceof DiskImageError)) throw e;
    p.error(e.structure ?? 'qcow2 header', e.offset ?? 0, e.what);
  }
  const img = scan.image;
  if (img && img.diskType === 'differencing') {
    scan.link = {
      name: img.parent?.name ?? '',
      candidates: img.parentCandidates(),
      linkLocation: img.locate('parentLink'),
      virtualSize: img.virtualSize,
      sizeLocation: img.locate('virtualSize'),
      checkParent: (parent) => img.checkParent(parent),
    };
  }
  if (img) for (const w of img.warnings) if (!/corrupt|dirty|damaged (entry|L1\/L2)/.test(w)) p.warning('qcow2 header', 0, w);

  // Count references: header cluster, refcount table, refcount blocks, L1 tables, L2 tables, data, snapshot table.
  const refs = new Uint16Array(hostClusters);
  const owner = (at: number) => Math.floor(at / cs);
  const ref = (at: number, clusters: number, what: string, where: string, whereAt: number) => {
    const first = owner(at);
    for (let c = first; c < first + clusters; c++) {
      if (c >= hostClusters) {
        p.error(where, whereAt, `${what} at ${at} lies past the end of the file`);
        return;
      }
      if (refs[c] < 0xffff) refs[c]++;
    }
  };
  ref(0, 1, 'header', 'qcow2 header', 0);
  const tableBytes = h.refcountTableClusters * cs;
  let refTable: Buffer | null = null;
  if (tableBytes > MAX_REFCOUNT_TABLE_BYTES || h.refcountTableOffset % cs !== 0 || h.refcountTableOffset + tableBytes > file.size || h.refcountTableOffset === 0) {
    p.error('qcow2 header', HEADER_OFFSETS.refcountTableOffset, `refcount table (${h.refcountTableClusters} clusters at ${h.refcountTableOffset}) is unaligned, too big or past the end of the file`);
  } else {
    refTable = await file.readExact(h.refcountTableOffset, tableBytes, 'refcount table');
    ref(h.refcountTableOffset, h.refcountTableClusters, 'refcount table', 'qcow2 header', HEADER_OFFSETS.refcountTableOffset);
    for (let i = 0; i < refTable.length / 8; i++) {
      const b = Number(refTable.readBigUInt64BE(i * 8) & REFT_OFFSET_MASK);
      const at = h.refcountTableOffset + i * 8;
      if (b === 0) continue;
      if (b % cs !== 0) p.error('refcount table', at, `refcount block offset ${b} is not cluster aligned`);
      else if (b + cs > file.size) p.error('refcount table', at, `refcount block at ${b} lies past the end of the file`);
      else ref(b, 1, 'refcount block', 'refcount table', at);
    }
  }
  const walk = async (l1At: number, l1Size: number, active: boolean, label: string, labelAt: number) => {
    if (l1Size === 0) return;
    if (l1Size * 8 > MAX_L1_BYTES || l1At % cs !== 0 || l1At + l1Size * 8 > file.size || l1At === 0) {
      p.error(label, labelAt, `L1 table (${l1Size} entries at ${l1At}) is unaligned, too big or past the end of the file`);
      return;
    }
    ref(l1At, Math.ceil(l1Size * 8 / cs), 'L1 table', label, labelAt);
    const l1 = await file.readExact(l1At, l1Size * L1_ENTRY_SIZE, 'L1 table');
    const used = Math.min(l1Size, l1EntriesNeeded(h.size, h.clusterBits, entryBytes));
    for (let i = 0; i < used; i++) {
      throwIfCancelled(options.signal, path);
      const e = l1.readBigUInt64BE(i * 8);
      const at = l1At + i * 8;
      if (l1ReservedBits(e) !== 0n) p.error('L1 table', at, `L1 entry ${i} has reserved bits set`);
      const off = l2OffsetOf(e);
      if (off === 0) continue;
      if (off % cs !== 0) { p.error('L1 table', at, `L1 entry ${i}: L2 table offset ${off} is not cluster aligned`); continue; }
      if (off < cs) { p.error('L1 table', at, `L1 entry ${i}: L2 table offset ${off} points into the header`); continue; }
      if (off + cs > file.size) { p.error('L1 table', at, `L1 entry ${i}: L2 table at ${off} runs past the end of the file`); continue; }
      ref(off, 1, 'L2 table', 'L1 table', at);
      if (active) l2Copied.push({ host: owner(off), copied: (e & COPIED_FLAG) !== 0n, at });
      const table = await file.readExact(off, cs, 'L2 table');
      const n = cs / entryBytes;
      for (let j = 0; j < n; j++) {
        const ea = j * entryBytes;
        const word = table.readBigUInt64BE(ea);
        const bitmap = extended ? table.readBigUInt64BE(ea + 8) : null;
        if (word === 0n && (bitmap === null || bitmap === 0n)) continue;
        const x = decodeL2Entry(word, bitmap, h.clusterBits);
        const eat = off + ea;
        // The guest cluster the entry maps, as reads name it.
        const g = `cluster ${i * n + j}: `;
        if (x.kind === ClusterKind.Compressed) {
          if (x.hostOffset < cs) { p.error('L2 table', eat, `${g}compressed data at ${x.hostOffset} points into the header`); continue; }
          const last = x.hostOffset + x.compressedLength;
          if (x.hostOffset >= file.size || last - file.size >= 512) { p.error('L2 table', eat, `${g}compressed cluster data (${x.compressedLength} bytes at ${x.hostOffset}) runs past the end of the file`); continue; }
          ref(x.hostOffset, owner(Math.min(last, file.size) - 1) - owner(x.hostOffset) + 1, 'compressed data', 'L2 table', eat);
          continue;
        }
        if (x.reserved !== 0n) p.error('L2 table', eat, `${g}L2 entry has reserved bits set (0x${x.reserved.toString(16)})`);
        if (extended && (x.allocBits & x.zeroBits) !== 0) { p.error('L2 table', eat, `${g}subclusters both allocated and zero`); continue; }
        if (extended && x.hostOffset === 0 && x.allocBits !== 0) { p.error('L2 table', eat, `${g}allocated subclusters without a data offset`); continue; }
        if (x.hostOffset === 0) continue;
        if (x.hostOffset % cs !== 0) { p.error('L2 table', eat, `${g}data offset ${x.hostOffset} is not cluster aligned`); continue; }
        if (x.hostOffset < cs) { p.error('L2 table', eat, `${g}data offset ${x.hostOffset} points into the header`); continue; }
        if (x.hostOffset + cs > file.size + cs - 1 && x.hostOffset >= file.size) { p.error('L2 table', eat, `${g}data at ${x.hostOffset} lies past the end of the file`); continue; }
        ref(x.hostOffset, 1, 'data cluster', 'L2 table', eat);
        if (active) dataCopied.push({ host: owner(x.hostOffset), copied: x.copied, at: eat });
      }
    }
  };
  const l2Copied: Array<{ host: number; copied: boolean; at: number }> = [];
  const dataCopied: Array<{ host: number; copied: boolean; at: number }> = [];
  await walk(h.l1TableOffset, h.l1Size, true, 'qcow2 header', HEADER_OFFSETS.l1TableOffset);
  if (img) {
    for (const s of img.snapshots) await walk(s.l1TableOffset, s.l1Size, false, 'snapshot table', s.offset);
    if (h.nbSnapshots > 0) {
      const bytes = img.snapshots.reduce((n, s) => n + s.length, 0);
      ref(h.snapshotsOffset, Math.ceil(bytes / cs), 'snapshot table', 'qcow2 header', HEADER_OFFSETS.snapshotsOffset);
    }
  }
  if (!refTable) return scan;
  // Compare with the stored refcounts.
  const perBlock = refcountBlockEntries(h.clusterBits, h.refcountOrder);
  const stored = new Uint16Array(hostClusters);
  for (let ti = 0; ti * perBlock < hostClusters; ti++) {
    const b = ti * 8 < refTable.length ? Number(refTable.readBigUInt64BE(ti * 8) & REFT_OFFSET_MASK) : 0;
    const blockOk = b !== 0 && b % cs === 0 && b + cs <= file.size;
    const block = blockOk ? await file.readExact(b, cs, 'refcount block') : null;
    for (let i = 0; i < perBlock && ti * perBlock + i < hostClusters; i++) {
      const c = ti * perBlock + i;
      const r = block ? Math.min(getRefcount(block, i, h.refcountOrder), 0xffff) : 0;
      stored[c] = r;
      if (r === refs[c]) continue;
      const fix: RefcountFix = { cluster: c, stored: r, actual: refs[c], blockAt: block ? b : 0 };
      scan.fixes.push(fix);
      if (!block) scan.unfixable++;
      const at = block ? b + Math.floor(i * (1 << h.refcountOrder) / 8) : h.refcountTableOffset + ti * 8;
      if (r > refs[c]) p.warning('refcount block', at, `leaked cluster ${c}: refcount ${r}, referenced ${refs[c]} time(s)`);
      else p.error('refcount block', at, `cluster ${c}: refcount ${r} is lower than its ${refs[c]} reference(s)${refs[c] > 1 && r <= 1 ? ' (overlap?)' : ''}`);
    }
  }
  // Copied flags: set exactly when the refcount is 1 (else a write in place would change a snapshot).
  for (const x of [...l2Copied, ...dataCopied]) {
    const r = stored[x.host];
    if (x.copied && r !== 1) p.error(l2Copied.includes(x) ? 'L1 table' : 'L2 table', x.at, `copied flag set but refcount of host cluster ${x.host} is ${r}`);
  }
  return scan;
}
