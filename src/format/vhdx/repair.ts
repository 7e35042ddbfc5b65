// Repair plan for one VHDX file: metadata only, each step one write that leaves a valid file.
import type { RepairStep } from '../registry';
import { encodeEntry } from './bat';
import { HEADER_OFFSETS, serializeHeader } from './header';
import { LogWrite } from './log';
import { REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from './regionTable';
import { VhdxScan } from './check';

/**
 * Order: first the log is replayed (its writes are idempotent, and the log stays dirty until the
 * header says otherwise, so a kill in between replays again), then the headers mark it empty; a
 * damaged header or region table copy is rewritten from the good one (the good copy is never
 * touched); then BAT entries that point at nothing usable are cleared (8 bytes each).
 */
export function planVhdxRepair(scan: VhdxScan): RepairStep[] {
  const steps: RepairStep[] = [];
  const img = scan.image;
  if (!img) return steps;
  const l = img.layout;
  const current = l.headers[l.currentHeader]!;
  let seq = current.sequenceNumber;
  for (const h of l.headers) if (h && h.sequenceNumber > seq) seq = h.sequenceNumber;
  // Headers at the 64-bit limit cannot be superseded by a higher number: renumber them from 1,
  // the copy not in use first (the current one keeps winning until it is rewritten with 2).
  const renumber = seq > 0xffff_ffff_ffff_ffffn - 2n;
  if (renumber) seq = 0n;
  const other = 1 - l.currentHeader;
  if (l.replayedInMemory) {
    for (const w of l.pendingLog) {
      steps.push({
        structure: 'log', offset: img.header.logOffset,
        message: `replay the log: write ${w.length} bytes at offset ${w.fileOffset}`,
        apply: (f) => writeLogged(f, w),
      });
    }
    const clean = { ...current, logGuid: Buffer.alloc(16) };
    // Two header writes, as the spec updates headers: the copy not in use first.
    steps.push({ structure: 'header', offset: HEADER_OFFSETS[other], message: 'mark the log empty (header copy not in use)', apply: (f) => f.writeAt(serializeHeader({ ...clean, sequenceNumber: seq + 1n }), HEADER_OFFSETS[other]) });
    steps.push({ structure: 'header', offset: HEADER_OFFSETS[l.currentHeader], message: 'mark the log empty (the other header copy)', apply: (f) => f.writeAt(serializeHeader({ ...clean, sequenceNumber: seq + 2n }), HEADER_OFFSETS[l.currentHeader]) });
  } else {
    for (const slot of scan.badHeaders) {
      steps.push({ structure: 'header', offset: HEADER_OFFSETS[slot], message: `rewrite header ${slot + 1} from the good copy`, apply: (f) => f.writeAt(serializeHeader({ ...current, sequenceNumber: seq + 1n }), HEADER_OFFSETS[slot]) });
    }
    if (renumber) {
      if (!scan.badHeaders.includes(other)) {
        steps.push({ structure: 'header', offset: HEADER_OFFSETS[other], message: 'renumber the headers (sequence number at its 64-bit limit): the copy not in use', apply: (f) => f.writeAt(serializeHeader({ ...current, sequenceNumber: 1n }), HEADER_OFFSETS[other]) });
      }
      steps.push({ structure: 'header', offset: HEADER_OFFSETS[l.currentHeader], message: 'renumber the headers (sequence number at its 64-bit limit): the copy in use', apply: (f) => f.writeAt(serializeHeader({ ...current, sequenceNumber: 2n }), HEADER_OFFSETS[l.currentHeader]) });
    }
  }
  for (const slot of scan.badRegionTables) {
    const good = REGION_TABLE_OFFSETS[l.currentRegionTable];
    steps.push({
      structure: 'region table', offset: REGION_TABLE_OFFSETS[slot], message: `rewrite region table ${slot + 1} from the good copy`,
      apply: async (f) => {
        const b = Buffer.alloc(REGION_TABLE_SIZE);
        await f.readInto(b, good);
        await f.writeAt(b, REGION_TABLE_OFFSETS[slot]);
      },
    });
  }
  for (const [index, why] of scan.badEntries) {
    const at = l.bat.fileOffset + index * 8;
    steps.push({
      structure: 'BAT entry', offset: at,
      message: `clear BAT entry ${index} (${why}); it then reads as ${img.diskType === 'differencing' ? 'the parent' : 'zeros'} and the bytes stay in the file`,
      apply: (f) => f.writeAt(encodeEntry(0, 0), at),
    });
  }
  return steps;
}

async function writeLogged(f: { writeAt(data: Uint8Array, pos: number): Promise<void> }, w: LogWrite): Promise<void> {
  if (w.data) { await f.writeAt(w.data, w.fileOffset); return; }
  const zeros = Buffer.alloc(Math.min(w.length, 1 << 20));
  for (let done = 0; done < w.length; done += zeros.length) await f.writeAt(zeros.subarray(0, Math.min(zeros.length, w.length - done)), w.fileOffset + done);
}
