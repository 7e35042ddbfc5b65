// Repair plan for one VHD file: metadata only, each step one write that leaves a valid file.
import type { RepairStep } from '../registry';
import { Bat, BAT_UNUSED } from './bat';
import { VhdScan } from './check';
import { HEADER_CHECKSUM_OFFSET } from './dynamicHeader';
import { Footer, FOOTER_CHECKSUM_OFFSET, FOOTER_SIZE } from './footer';
import { SECTOR_SIZE } from './geometry';
import { hex32 } from './vhdImage';

function checksumBytes(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}

/** The footer's 512 bytes with the checksum it should carry. */
function fixedFooterBytes(f: Footer): Buffer {
  const b = Buffer.from(f.raw);
  b.writeUInt32BE(f.computedChecksum >>> 0, FOOTER_CHECKSUM_OFFSET);
  return b;
}

/**
 * Plans the repair from a scan. Order matters for crash safety: first BAT entries that point at
 * nothing usable are cleared (each a 4-byte write, so a reader never follows a bad entry into the
 * area a moved footer may take), then the header checksum, then the end footer (one write; a
 * footer that must move goes behind the last block in use, then the file is cut behind it), then
 * the copy at offset 0. No data sector is written: only metadata, and bytes no BAT entry refers to.
 */
export function planVhdRepair(scan: VhdScan): RepairStep[] {
  const steps: RepairStep[] = [];
  const to = scan.tableOffset;
  if (to !== null) {
    for (const [i, why] of [...scan.badEntries].sort((x, y) => x[0] - y[0])) {
      const at = to + i * 4;
      steps.push({
        structure: 'BAT entry', offset: at,
        message: `clear the entry of block ${i} (${why}); the block then reads as ${scan.diskType === 'differencing' ? 'the parent' : 'zeros'} and its bytes stay in the file`,
        apply: (f) => f.writeAt(Bat.entryBytes(BAT_UNUSED), at),
      });
    }
  }
  const h = scan.header;
  if (h && scan.headerSane && scan.headerOffset !== null && h.checksum !== h.computedChecksum) {
    const at = scan.headerOffset + HEADER_CHECKSUM_OFFSET;
    steps.push({
      structure: 'dynamic header', offset: at,
      message: `set the checksum to 0x${hex32(h.computedChecksum)} (was 0x${hex32(h.checksum)})`,
      apply: (f) => f.writeAt(checksumBytes(h.computedChecksum), at),
    });
  }
  if (!scan.reference || !scan.referenceSane) return steps;

  const { end, copy } = scan;
  const ok = (s: typeof end) => !!s && s.checksumOk;
  if (scan.diskType === 'fixed') {
    // Only the end footer exists; it was the reference, so its fields are sane: fix the checksum.
    if (end && !end.checksumOk && end.length === 512) {
      const f = end.footer!;
      const at = end.offset + FOOTER_CHECKSUM_OFFSET;
      steps.push({
        structure: 'footer', offset: at,
        message: `set the checksum to 0x${hex32(f.computedChecksum)} (was 0x${hex32(f.checksum)})`,
        apply: (file) => file.writeAt(checksumBytes(f.computedChecksum), at),
      });
    }
    return steps;
  }

  // Sparse: the good footer is the end one when sound, else the copy, else the reference with its checksum fixed.
  const good: Buffer = ok(end) ? end!.footer!.raw : ok(copy) ? copy!.footer!.raw : fixedFooterBytes(scan.reference);
  const goodName = ok(end) ? 'the end footer' : ok(copy) ? 'the copy at offset 0' : 'the footer with its checksum recomputed';
  if (end && end.length === 512) {
    if (!end.footer!.raw.equals(good)) {
      const at = end.offset;
      steps.push({
        structure: 'footer', offset: at,
        message: ok(copy) && !ok(end) ? `restore the end footer from the copy at offset 0 (one 512-byte write)` : `rewrite the end footer from ${goodName} (one 512-byte write)`,
        apply: (f) => f.writeAt(good, at),
      });
    }
  } else if (!end && scan.tableOffset !== null) {
    // (Only once the whole BAT was read: usedEnd is then where the last block in use ends.)
    // No footer at the end: put it right behind the last structure in use (past any torn block,
    // whose entry was cleared above), then cut the file behind it.
    const at = Math.ceil(scan.usedEnd / SECTOR_SIZE) * SECTOR_SIZE;
    const newSize = at + FOOTER_SIZE;
    const cut = newSize < scan.fileSize;
    steps.push({
      structure: 'footer', offset: at,
      message: `write the end footer (from ${goodName}) at offset ${at}, behind the last block in use`,
      apply: (f) => f.writeAt(good, at),
    });
    if (cut) {
      // Until the cut, the file does not end in a footer and readers use the copy: still valid.
      steps.push({
        structure: 'file', offset: newSize,
        message: `cut the file from ${scan.fileSize} to ${newSize} bytes, right behind the new end footer (the cut bytes belong to no block)`,
        apply: (f) => f.truncate(newSize),
      });
    }
  }
  if (!copy || !copy.footer!.raw.equals(good)) {
    steps.push({
      structure: 'footer copy', offset: 0,
      message: copy ? `rewrite the footer copy at offset 0 from ${goodName === 'the copy at offset 0' ? 'the end footer' : goodName}` : 'write the missing footer copy at offset 0',
      apply: (f) => f.writeAt(good, 0),
    });
  }
  return steps;
}
