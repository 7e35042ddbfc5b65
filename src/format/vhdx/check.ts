// The tolerant scan of one VHDX file for `check`: every structure, each problem with the offset of the field at fault.
import type { FormatScan, ScanOptions } from '../registry';
import { ProblemList } from '../checkProblems';
import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { MIB, payloadEntryIndex, PayloadBlockState, sectorBitmapEntryIndex, SectorBitmapState } from './bat';
import { HEADER_OFFSETS } from './header';
import { METADATA_ITEM } from './metadataTable';
import { REGION_TABLE_OFFSETS } from './regionTable';
import { SECTOR_BITMAP_BLOCK_SIZE } from './sectorBitmap';
import { VhdxImage } from './vhdxImage';

export interface VhdxScan extends FormatScan {
  /** The image as read (null when a structure it needs is broken beyond use). */
  image: VhdxImage | null;
  /** Header slots (0, 1) whose copy is damaged while the other is good. */
  badHeaders: number[];
  badRegionTables: number[];
  /** BAT entries to clear: index and why. */
  badEntries: Array<[number, string]>;
}

export async function scanVhdx(path: string, file: ImageFile, options: ScanOptions = {}): Promise<VhdxScan> {
  const p = new ProblemList();
  const scan: VhdxScan = { path, problems: p, link: null, image: null, badHeaders: [], badRegionTables: [], badEntries: [] };
  let img: VhdxImage;
  try {
    img = await VhdxImage.fromOpenFile(path, file);
  } catch (e) {
    if (!(e instanceof DiskImageError)) throw e;
    if (e.code === 'EFORMAT' && e.structure === 'file identifier') throw e;
    p.error(e.structure ?? 'file', e.offset ?? 0, e.what);
    return scan;
  }
  scan.image = img;
  const l = img.layout;
  l.headers.forEach((h, i) => {
    if (h) return;
    scan.badHeaders.push(i);
    p.error('header', HEADER_OFFSETS[i], `header ${i + 1} is damaged (signature or CRC-32C checksum); the other copy is used`);
  });
  l.regionTables.forEach((t, i) => {
    if (t.signature === 'regi' && t.checksum === t.computedChecksum && t.entryCount <= 2047) return;
    scan.badRegionTables.push(i);
    p.error('region table', REGION_TABLE_OFFSETS[i], `region table ${i + 1} is damaged (signature, entry count or CRC-32C checksum); the other copy is used`);
  });
  if (l.replayedInMemory) {
    // Normal after a crash and read correctly (replayed in memory), so a warning; qemu opens such a file only writable.
    p.warning('log', img.header.logOffset, `the log holds ${l.replayedEntries} entr${l.replayedEntries === 1 ? 'y' : 'ies'} not yet applied (a writer stopped mid-update); reads replay ${l.replayedEntries === 1 ? 'it' : 'them'} in memory, repair or the next writable open applies ${l.replayedEntries === 1 ? 'it' : 'them'} to the file`);
  }
  for (const w of img.warnings) {
    if (/^(header|region table) \d at offset/.test(w) || w.startsWith('the log holds') || /BAT entr(y|ies) ha(s|ve) an unknown state/.test(w)) continue;
    if (w.startsWith('parent locator')) p.warning('parent locator', img.itemOffset(METADATA_ITEM.parentLocator) ?? l.metadata.fileOffset, w);
    else p.warning('metadata table', l.metadata.fileOffset, w);
  }

  // Every BAT entry: a known state, and present blocks inside the file, clear of the fixed regions and of each other.
  const bat = img.bat!;
  const ratio = img.geometry.chunkRatio;
  const fixed: Array<{ name: string; start: number; end: number }> = [
    { name: 'the headers', start: 0, end: MIB },
    { name: 'the log', start: img.header.logOffset, end: img.header.logOffset + img.header.logLength },
    { name: 'the BAT region', start: l.bat.fileOffset, end: l.bat.fileOffset + l.bat.length },
    { name: 'the metadata region', start: l.metadata.fileOffset, end: l.metadata.fileOffset + l.metadata.length },
  ];
  const extents: Array<{ start: number; end: number; index: number }> = [];
  const bad = (index: number, why: string) => {
    scan.badEntries.push([index, why]);
    p.error('BAT entry', l.bat.fileOffset + index * 8, why, 'error:BAT entry');
  };
  const fileSize = file.size;
  for (let i = 0; i < bat.length; i++) {
    if (options.signal?.aborted) break;
    const isBitmap = (i + 1) % (ratio + 1) === 0;
    const state = bat.state(i);
    const what = isBitmap ? `sector bitmap block ${Math.floor(i / (ratio + 1))}` : `block ${i - Math.floor(i / (ratio + 1))}`;
    const present = isBitmap ? state === SectorBitmapState.Present : state === PayloadBlockState.FullyPresent || state === PayloadBlockState.PartiallyPresent;
    const known = isBitmap ? state === 0 || state === 6 : state <= 3 || state === 6 || state === 7;
    if (!known) { bad(i, `${what} has unknown state ${state}`); continue; }
    if (!present) continue;
    if (!isBitmap && state === PayloadBlockState.PartiallyPresent && img.diskType !== 'differencing') {
      p.warning('BAT entry', l.bat.fileOffset + i * 8, `${what} is partially present in an image without a parent`);
    }
    const start = bat.offset(i);
    const end = start + (isBitmap ? SECTOR_BITMAP_BLOCK_SIZE : img.blockSize);
    if (end > fileSize) { bad(i, `${what} (${start}..${end}) runs past the end of the file (${fileSize} bytes)`); continue; }
    const hit = fixed.find((r) => start < r.end && r.start < end);
    if (hit) { bad(i, `${what} (${start}..${end}) overlaps ${hit.name} (${hit.start}..${hit.end})`); continue; }
    extents.push({ start, end, index: i });
    if (i % 65536 === 0) options.onProgress?.(i, bat.length);
  }
  extents.sort((a, b) => a.start - b.start);
  for (let k = 1; k < extents.length; k++) {
    const prev = extents[k - 1];
    const cur = extents[k];
    if (cur.start < prev.end) bad(cur.index, `BAT entry ${cur.index} (${cur.start}..${cur.end}) overlaps BAT entry ${prev.index} (${prev.start}..${prev.end})`);
  }
  // A differencing image's partially present block needs its chunk's sector bitmap.
  if (img.diskType === 'differencing') {
    for (let b = 0; b < img.blockCount; b++) {
      const i = payloadEntryIndex(b, ratio);
      if (i >= bat.length || bat.state(i) !== PayloadBlockState.PartiallyPresent) continue;
      const sb = sectorBitmapEntryIndex(Math.floor(b / ratio), ratio);
      if (sb >= bat.length || bat.state(sb) !== SectorBitmapState.Present) {
        p.error('BAT entry', l.bat.fileOffset + i * 8, `block ${b} is partially present but its chunk has no sector bitmap block`, 'error:BAT entry:bitmap');
      }
    }
  }

  if (img.diskType === 'differencing') {
    scan.link = {
      name: img.parent?.name ?? '',
      candidates: img.parentCandidates(),
      linkLocation: img.locate('parentLink'),
      virtualSize: img.virtualSize,
      sizeLocation: img.locate('virtualSize'),
      checkParent: (parent) => img.checkParent(parent),
    };
  }
  return scan;
}
