// Check of one VHD file's own structures, read tolerantly (a broken file is described, not refused).
import { DiskImageError, throwIfCancelled } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { ProblemList } from '../checkProblems';
import { FieldLocation, ParentCandidates } from '../diskImage';
import type { FormatScan, ScanOptions } from '../registry';
import { BAT_UNUSED } from './bat';
import { DYNAMIC_HEADER_COOKIE, DYNAMIC_HEADER_SIZE, DynamicHeader, HEADER_CHECKSUM_OFFSET, LOCATORS_OFFSET, parseDynamicHeader } from './dynamicHeader';
import { diskTypeName, DiskType, Footer, FOOTER_CHECKSUM_OFFSET, FOOTER_COOKIE, FOOTER_FIELDS, FOOTER_SIZE, hasFooterCookie, parseFooter } from './footer';
import { chsSizeBytes, SECTOR_SIZE } from './geometry';
import { LocatorData, vhdParentCandidates } from './locatorPaths';
import { checkVhdParent } from './parentLink';
import { decodeLocatorPath, isEmptyLocator, LOCATOR_ENTRY_SIZE, locatorSpaceBytes, MAX_LOCATOR_DATA } from './parentLocator';
import { bitmapSizeBytes } from './sectorBitmap';
import { hex32, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './vhdImage';

/** Creators whose current size qemu uses instead of CHS (see the format notes): no disagreement then. */
const QEMU_SIZE_CREATORS = new Set(['win ', 'qem2', 'd2v ', 'd2v\0', 'tap\0', 'CTXS']);
const KNOWN_LOCATORS = new Set(['W2ku', 'W2ru', 'Wi2k', 'Wi2r', 'Mac ', 'MacX']);

export interface FooterSlot {
  /** Absolute offset of the structure in the file. */
  offset: number;
  length: 511 | 512;
  footer: Footer | null;
  checksumOk: boolean;
}

/** What repair needs to know: the raw structures as found, and which BAT entries are unusable. */
export interface VhdScan extends FormatScan {
  fileSize: number;
  diskType: 'fixed' | 'dynamic' | 'differencing' | null;
  end: FooterSlot | null;
  copy: FooterSlot | null;
  /** The footer the rest of the file was interpreted with (end if sound, else the copy). */
  reference: Footer | null;
  /** True when the reference footer's fields (type, data offset) are sound enough to write back. */
  referenceSane: boolean;
  headerOffset: number | null;
  header: DynamicHeader | null;
  /** Header fields sound (cookie, block size, table in the file), so only a checksum can be wrong. */
  headerSane: boolean;
  tableOffset: number | null;
  /** BAT entries to clear: index -> why. */
  badEntries: Map<number, string>;
  /** End of the last structure still in use (blocks not in badEntries, header, BAT, locators). */
  usedEnd: number;
}

function checksumText(f: Footer | DynamicHeader): string {
  return `stored 0x${hex32(f.checksum)}, computed 0x${hex32(f.computedChecksum)}`;
}

function roundUp(n: number, to = SECTOR_SIZE): number {
  return Math.ceil(n / to) * to;
}

/**
 * Reads every structure of the file tolerantly (not through VhdImage, which refuses some broken
 * files) and lists what is wrong; the parent link is left to the chain layer (`link`). Throws only
 * when the file holds no footer at all. Repair scans under its write lock, so the file comes open.
 */
export async function scanVhd(path: string, file: ImageFile, options: ScanOptions = {}): Promise<VhdScan> {
  const p = new ProblemList();
  const size = file.size;
  const scan: VhdScan = {
    path, problems: p, link: null, fileSize: size, diskType: null, end: null, copy: null,
    reference: null, referenceSane: false, headerOffset: null, header: null, headerSane: false,
    tableOffset: null, badEntries: new Map(), usedEnd: 0,
  };
  const done = () => scan;
  throwIfCancelled(options.signal, path);
  if (size < 511) {
    throw new DiskImageError(path, `file is too small to be a VHD (${size} bytes)`, 'file', 0, 'EFORMAT');
  }

  // --- Footers: at the end (512, or 511 for pre-2004 Virtual PC) and the copy at offset 0.
  const tailLen = Math.min(size, FOOTER_SIZE);
  const tail = Buffer.alloc(tailLen);
  await file.readInto(tail, size - tailLen);
  if (tailLen === 512 && hasFooterCookie(tail)) {
    const f = parseFooter(tail);
    scan.end = { offset: size - 512, length: 512, footer: f, checksumOk: f.checksum === f.computedChecksum };
  } else if (hasFooterCookie(tail.subarray(tailLen - 511))) {
    const f = parseFooter(tail.subarray(tailLen - 511));
    scan.end = { offset: size - 511, length: 511, footer: f, checksumOk: f.checksum === f.computedChecksum };
  }
  if (size >= FOOTER_SIZE && scan.end?.offset !== 0) {
    const head = Buffer.alloc(FOOTER_SIZE);
    await file.readInto(head, 0);
    if (hasFooterCookie(head)) {
      const f = parseFooter(head);
      scan.copy = { offset: 0, length: 512, footer: f, checksumOk: f.checksum === f.computedChecksum };
    }
  }
  const end = scan.end;
  const copy = scan.copy;
  const sparse = (f: Footer | null | undefined) => !!f && (f.diskType === DiskType.Dynamic || f.diskType === DiskType.Differencing);
  let ref: FooterSlot;
  if (end && end.checksumOk) ref = end;
  else if (end && copy && copy.checksumOk && sparse(copy.footer)) ref = copy;
  else if (end) ref = end;
  else if (copy && sparse(copy.footer)) ref = copy;
  else {
    const found = tail.subarray(0, 8).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
    throw new DiskImageError(path, `not a VHD: no '${FOOTER_COOKIE}' footer at the end of the file or at offset 0 (found '${found}')`, 'footer', size - tailLen, 'EFORMAT');
  }
  const footer = ref.footer!;
  scan.reference = footer;
  const fo = ref.offset;
  const type = diskTypeName(footer.diskType);
  scan.diskType = type ?? null;
  const isSparse = type === 'dynamic' || type === 'differencing';

  if (end) {
    if (end.length === 511) p.warning('footer', end.offset, '511-byte footer (written by Virtual PC before 2004)');
    if (!end.checksumOk) p.error('footer', end.offset + FOOTER_CHECKSUM_OFFSET, `checksum is wrong (${checksumText(end.footer!)})`);
  } else {
    p.error('footer', size - tailLen, `no '${FOOTER_COOKIE}' footer at the end of the file (${size} bytes): truncated, or a block append was interrupted; the copy at offset 0 is ${copy!.checksumOk ? 'intact' : 'damaged too'}`);
  }
  if (isSparse) {
    if (!copy) {
      p.error('footer copy', 0, `no '${FOOTER_COOKIE}' footer copy at offset 0`);
    } else {
      if (!copy.checksumOk) p.error('footer copy', FOOTER_CHECKSUM_OFFSET, `checksum is wrong (${checksumText(copy.footer!)})`);
      if (end) {
        const differing = FOOTER_FIELDS.filter((fd) => fd.name !== 'checksum'
          && !end.footer!.raw.subarray(fd.offset, fd.offset + fd.size).equals(copy.footer!.raw.subarray(fd.offset, fd.offset + fd.size)));
        if (differing.length > 0) {
          // Blame the one not in use: the copy when the end footer is sound, else the end footer.
          const names = differing.map((d) => d.name).join(', ');
          if (ref === copy) p.error('footer', end.offset + differing[0].offset, `differs from the footer copy at offset 0 in ${names}`);
          else p.error('footer copy', differing[0].offset, `differs from the end footer in ${names}`);
        }
      }
    }
  }

  // --- Footer fields (of the footer in use).
  if (!type) {
    p.error(ref === copy ? 'footer copy' : 'footer', fo + 60, `unsupported disk type ${footer.diskType}`);
    return done();
  }
  const fstruct = ref === copy ? 'footer copy' : 'footer';
  if (footer.formatVersion !== 0x00010000) p.warning(fstruct, fo + 12, `unusual format version 0x${hex32(footer.formatVersion)}`);
  if ((footer.features & 2) === 0) p.warning(fstruct, fo + 8, 'reserved feature bit 0x2 is not set');
  if (footer.currentSize % SECTOR_SIZE !== 0) p.warning(fstruct, fo + 48, `current size ${footer.currentSize} is not a multiple of 512`);
  const chs = chsSizeBytes(footer.geometry);
  const g0 = footer.geometry;
  const qemuTrustsSize = QEMU_SIZE_CREATORS.has(footer.creatorApplication) || (g0.cylinders === 65535 && g0.heads === 16 && g0.sectorsPerTrack === 255);
  if (chs !== footer.currentSize && !qemuTrustsSize) {
    const g = footer.geometry;
    p.warning(fstruct, fo + 56, `CHS geometry ${g.cylinders}/${g.heads}/${g.sectorsPerTrack} gives ${chs} bytes but the current size is ${footer.currentSize} (qemu may use ${chs})`);
  }
  if (footer.savedState !== 0) p.warning(fstruct, fo + 84, 'saved-state flag is set (the disk belongs to a saved virtual machine)');

  if (type === 'fixed') {
    scan.referenceSane = true;
    if (footer.dataOffset !== 0xffffffffffffffffn) p.warning(fstruct, fo + 16, 'data offset of a fixed disk is not all ones');
    const dataBytes = end ? end.offset : size;
    if (dataBytes < footer.currentSize) {
      p.error('data', dataBytes, `the file holds ${dataBytes} data bytes but the footer says ${footer.currentSize} (truncated?)`);
    } else if (dataBytes > footer.currentSize) {
      p.warning('data', footer.currentSize, `${dataBytes - footer.currentSize} bytes between the data and the footer are not part of the disk`);
    }
    return done();
  }

  // --- Dynamic header.
  const hoBig = footer.dataOffset;
  if (hoBig < 512n || hoBig + BigInt(DYNAMIC_HEADER_SIZE) > BigInt(size)) {
    p.error(fstruct, fo + 16, `dynamic header offset ${hoBig} is outside the file (${size} bytes)`);
    return done();
  }
  scan.referenceSane = true;
  const ho = Number(hoBig);
  scan.headerOffset = ho;
  const header = parseDynamicHeader(await file.readExact(ho, DYNAMIC_HEADER_SIZE, 'dynamic header'));
  scan.header = header;
  if (header.cookie !== DYNAMIC_HEADER_COOKIE) {
    p.error('dynamic header', ho, `bad cookie '${header.cookie.replace(/[^\x20-\x7e]/g, '.')}' (expected '${DYNAMIC_HEADER_COOKIE}')`);
    return done();
  }
  if (header.checksum !== header.computedChecksum) p.error('dynamic header', ho + HEADER_CHECKSUM_OFFSET, `checksum is wrong (${checksumText(header)})`);
  if (header.dataOffset !== 0xffffffffffffffffn) p.warning('dynamic header', ho + 8, 'data offset is not all ones');
  if (header.headerVersion !== 0x00010000) p.warning('dynamic header', ho + 24, `unusual header version 0x${hex32(header.headerVersion)}`);
  const bs = header.blockSize;
  if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
    p.error('dynamic header', ho + 32, `block size ${bs} is not a power of two from 512 bytes to 256 MiB`);
    return done();
  }
  const entries = header.maxTableEntries;
  const needed = Math.ceil(footer.currentSize / bs);
  if (entries < needed) {
    p.error('dynamic header', ho + 28, `BAT has ${entries} entries but the current size ${footer.currentSize} needs ${needed}; the tail of the disk cannot be stored`);
  }
  const to = header.tableOffset;
  const batEnd = to + entries * 4;
  const regions: Array<{ name: string; start: number; end: number }> = [
    { name: 'the footer copy', start: 0, end: FOOTER_SIZE },
    { name: 'the dynamic header', start: ho, end: ho + DYNAMIC_HEADER_SIZE },
  ];
  const overlaps = (s: number, e: number, r: { start: number; end: number }) => s < r.end && r.start < e;
  if (ho < FOOTER_SIZE) p.error(fstruct, fo + 16, `dynamic header at ${ho} overlaps the footer copy`);
  if (to < FOOTER_SIZE || batEnd > size || overlaps(to, batEnd, regions[1])) {
    p.error('dynamic header', ho + 16, `BAT of ${entries} entries at offset ${to} (${to}..${batEnd}) ${batEnd > size ? `does not fit in the file (${size} bytes)` : 'overlaps the footer copy or the dynamic header'}`);
    return done();
  }
  scan.headerSane = true;
  scan.tableOffset = to;
  regions.push({ name: 'the BAT', start: to, end: roundUp(batEnd) });
  // Where blocks must end: at the end footer, or at the end of the file when it is missing.
  const limit = end ? end.offset : size;
  let usedEnd = Math.max(FOOTER_SIZE, ho + DYNAMIC_HEADER_SIZE, roundUp(batEnd));

  // --- Parent locators (their data areas are regions blocks must not overlap).
  const isDiff = type === 'differencing';
  const locatorData: LocatorData[] = [];
  const seenCodes = new Set<string>();
  for (const entry of header.locators) {
    if (isEmptyLocator(entry)) continue;
    const eo = ho + LOCATORS_OFFSET + entry.index * LOCATOR_ENTRY_SIZE;
    const code = entry.platformCode;
    const shown = code.replace(/[^\x20-\x7e]/g, '.');
    const what = `${shown} locator`;
    if (!isDiff) p.warning('parent locator', eo, `${what} in a ${type} disk, which has no parent`);
    if (!KNOWN_LOCATORS.has(code)) p.warning('parent locator', eo, `unknown platform code '${shown}'`);
    if (seenCodes.has(code)) p.warning('parent locator', eo, `duplicate ${what}; readers use the first one`);
    seenCodes.add(code);
    const space = locatorSpaceBytes(entry);
    const dOff = entry.platformDataOffset;
    const dLen = entry.platformDataLength;
    let bad = false;
    if (dLen === 0) { p.error('parent locator', eo + 8, `${what} has a data length of 0`); bad = true; }
    if (dLen > MAX_LOCATOR_DATA) { p.error('parent locator', eo + 8, `${what} data length ${dLen} is too large (at most ${MAX_LOCATOR_DATA})`); bad = true; }
    if (dLen > space) { p.error('parent locator', eo + 8, `${what} data length ${dLen} exceeds its data space of ${space} bytes`); bad = true; }
    if (dOff + Math.max(dLen, 1) > limit) {
      p.error('parent locator', eo + 16, `${what} data at offset ${dOff} (+${dLen}) is past the end of the data (${limit})`);
      bad = true;
    }
    const dEnd = dOff + Math.max(space, dLen);
    if (!bad) {
      for (const r of regions) {
        if (overlaps(dOff, dOff + Math.max(dLen, 1), r)) { p.error('parent locator', eo + 16, `${what} data at offset ${dOff} (+${dLen}) overlaps ${r.name}`); bad = true; }
      }
    }
    if (bad) {
      locatorData.push({ entry, path: null, problem: 'unreadable' });
      continue;
    }
    regions.push({ name: `the ${what} data`, start: dOff, end: Math.min(dEnd, limit) });
    usedEnd = Math.max(usedEnd, Math.min(roundUp(dEnd), limit));
    const data = await file.readExact(dOff, dLen, `${what} data`);
    const decoded = decodeLocatorPath(code, data);
    if ((code === 'W2ku' || code === 'W2ru') && dLen % 2 !== 0) p.warning('parent locator', eo + 8, `${what} data length ${dLen} is odd for UTF-16 text`);
    if (decoded !== undefined && decoded.length === 0) p.error('parent locator', dOff, `${what} holds an empty path`);
    locatorData.push({ entry, path: decoded ?? null });
  }

  // --- BAT entries.
  const bitmapBytes = bitmapSizeBytes(bs / SECTOR_SIZE);
  const span = bitmapBytes + bs;
  const bat = await file.readExact(to, entries * 4, 'BAT');
  const batEntry = (i: number) => bat.readUInt32BE(i * 4);
  const candidates: number[] = [];
  for (let i = 0; i < entries; i++) {
    if ((i & 0xffff) === 0) {
      throwIfCancelled(options.signal, path);
      options.onProgress?.(i, entries);
    }
    const e = batEntry(i);
    if (e === BAT_UNUSED) continue;
    const eo = to + i * 4;
    const off = e * SECTOR_SIZE;
    const bend = off + span;
    if (bend > limit) {
      // Past the listed ones, one shared text: a hostile BAT of a million bad entries must not
      // cost a million strings (it made check take seconds on a 6 MB file).
      const why = p.full('bat-outside') ? 'past the end of the data' : off >= limit
        ? `block ${i} points at offset ${off}, past the end of the data (${end ? `end footer at ${limit}` : `file size ${size}`})`
        : `block ${i} (${off}..${bend}) runs past the end of the data (${end ? `end footer at ${limit}` : `file size ${size}`})`;
      p.error('BAT entry', eo, why, 'bat-outside');
      scan.badEntries.set(i, why);
      continue;
    }
    const hit = regions.find((r) => overlaps(off, bend, r));
    if (hit) {
      const why = p.full('bat-metadata') ? `overlaps ${hit.name}` : `block ${i} (${off}..${bend}) overlaps ${hit.name} (${hit.start}..${hit.end})`;
      p.error('BAT entry', eo, why, 'bat-metadata');
      scan.badEntries.set(i, why);
      continue;
    }
    if (i >= needed) p.warning('BAT entry', eo, `block ${i} is allocated but lies past the virtual size ${footer.currentSize}`, 'bat-past-size');
    candidates.push(i);
  }
  // Blocks overlapping each other: sort by offset, sweep.
  const order = Uint32Array.from(candidates);
  order.sort((x, y) => batEntry(x) - batEntry(y));
  let reach = -1;
  let reachIndex = -1;
  for (const i of order) {
    const off = batEntry(i) * SECTOR_SIZE;
    if (off < reach) {
      const other = reachIndex;
      const otherOff = batEntry(other) * SECTOR_SIZE;
      const same = off === otherOff;
      for (const [x, xo, y, yo] of [[i, off, other, otherOff], [other, otherOff, i, off]]) {
        if (scan.badEntries.has(x)) continue;
        const why = p.full('bat-overlap') ? `overlaps block ${y}` : same
          ? `block ${x} points at offset ${xo}, the same place as block ${y}`
          : `block ${x} (${xo}..${xo + span}) overlaps block ${y} (${yo}..${yo + span})`;
        p.error('BAT entry', to + x * 4, why, 'bat-overlap');
        scan.badEntries.set(x, why);
      }
    }
    if (off + span > reach) { reach = off + span; reachIndex = i; }
  }
  for (const i of candidates) {
    if (!scan.badEntries.has(i)) usedEnd = Math.max(usedEnd, batEntry(i) * SECTOR_SIZE + span);
  }
  scan.usedEnd = usedEnd;
  // Small gaps are alignment padding (Hyper-V, Virtual PC); a block's worth is an interrupted append.
  if (end && end.offset - roundUp(usedEnd) >= span) {
    p.warning('file', usedEnd, `${end.offset - usedEnd} bytes between the last block and the end footer are not used by any block (left by an interrupted block append?)`);
  }
  if (end && end.length === 512 && size % SECTOR_SIZE !== 0) p.warning('file', size, `file size ${size} is not a multiple of 512`);

  // --- Sector bitmaps: padding bits (past the block's sectors) should be uniform; checked only where
  // padding exists, which is when a block has fewer than 4096 sectors.
  const spb = bs / SECTOR_SIZE;
  if (spb % (SECTOR_SIZE * 8) !== 0) {
    const firstPadByte = Math.floor(spb / 8);
    for (const i of candidates) {
      if (scan.badEntries.has(i)) continue;
      throwIfCancelled(options.signal, path);
      const at = batEntry(i) * SECTOR_SIZE;
      const bm = await file.readExact(at, bitmapBytes, `sector bitmap of block ${i}`);
      let ones = 0;
      let zeros = 0;
      for (let bit = spb; bit < bitmapBytes * 8; bit++) {
        if (bm[bit >> 3] & (0x80 >> (bit & 7))) ones++; else zeros++;
        if (ones && zeros) break;
      }
      if (ones && zeros) {
        p.warning('sector bitmap', at + firstPadByte, `padding of block ${i}'s bitmap (bits ${spb}..${bitmapBytes * 8 - 1}) is neither all zeros nor all ones`, 'bitmap-padding');
      }
    }
  }
  // Sectors past the virtual size in the last block of a differencing disk mean nothing.
  if (isDiff && needed > 0 && needed <= entries && footer.currentSize % bs !== 0) {
    const last = needed - 1;
    const e = batEntry(last);
    if (e !== BAT_UNUSED && !scan.badEntries.has(last)) {
      const bm = await file.readExact(e * SECTOR_SIZE, bitmapBytes, `sector bitmap of block ${last}`);
      const firstOut = (footer.currentSize - last * bs) / SECTOR_SIZE;
      for (let s = Math.ceil(firstOut); s < spb; s++) {
        if (bm[s >> 3] & (0x80 >> (s & 7))) {
          p.warning('sector bitmap', e * SECTOR_SIZE + (s >> 3), `block ${last} marks sector ${s}, past the virtual size, as present`);
          break;
        }
      }
    }
  }

  // --- Parent link: what the chain layer needs to follow and judge it.
  if (isDiff) {
    // A nil parent UUID is Xen vhd-util's mark of a raw parent (a plain file or block device): the
    // chain check opens the parent as raw then, and a VHD parent there is a UUID mismatch.
    const candidates: ParentCandidates = vhdParentCandidates(path, ho, locatorData, header.parentUnicodeName);
    const sizeLocation: FieldLocation = { structure: fstruct, offset: fo + 48 };
    scan.link = {
      name: header.parentUnicodeName,
      candidates,
      linkLocation: { structure: 'parent locators', offset: ho + LOCATORS_OFFSET },
      virtualSize: footer.currentSize,
      sizeLocation,
      checkParent: (parent) => checkVhdParent({ parentUniqueId: header.parentUniqueId, parentTimestamp: header.parentTimestamp, headerOffset: ho }, parent),
    };
  }
  return done();
}
