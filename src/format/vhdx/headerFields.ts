// The VHDX field table for the editor's Header view: file identifier, both headers, both region tables, metadata.
import { bytesLabel, ChecksumCheck, HeaderDescription, HeaderField, hexOf } from '../headerFields';
import { PAYLOAD_STATE_NAMES } from './bat';
import { formatGuid, isZeroGuid } from './guid';
import { HEADER_OFFSETS } from './header';
import { METADATA_ITEM } from './metadataTable';
import { BAT_REGION_GUID, METADATA_REGION_GUID, REGION_TABLE_OFFSETS } from './regionTable';
import { hex32, VhdxImage } from './vhdxImage';

const ITEM_NAMES: Record<string, string> = {
  [METADATA_ITEM.fileParameters]: 'file parameters',
  [METADATA_ITEM.virtualDiskSize]: 'virtual disk size',
  [METADATA_ITEM.page83Data]: 'page 83 data',
  [METADATA_ITEM.logicalSectorSize]: 'logical sector size',
  [METADATA_ITEM.physicalSectorSize]: 'physical sector size',
  [METADATA_ITEM.parentLocator]: 'parent locator',
};

export function describeVhdxHeader(img: VhdxImage): HeaderDescription {
  const fields: HeaderField[] = [];
  const checksums: ChecksumCheck[] = [];
  const l = img.layout;
  const add = (structure: string, name: string, offset: number, bytes: Buffer, decoded: string, problem?: string) => {
    fields.push({ structure, name, offset, size: bytes.length, hex: hexOf(bytes), decoded, ...(problem ? { problem } : {}) });
  };
  add('file identifier', 'signature', 0, Buffer.from('vhdxfile', 'latin1'), 'vhdxfile');
  add('file identifier', 'creator', 8, Buffer.from(l.creator, 'utf16le'), l.creator || '(none)');

  l.raw.headers.forEach((b, i) => {
    const o = HEADER_OFFSETS[i];
    const s = `header ${i + 1}`;
    const h = l.headers[i];
    const inUse = i === l.currentHeader ? ' (in use)' : '';
    const stored = b.readUInt32LE(4);
    add(s, 'signature', o, b.subarray(0, 4), `${b.toString('latin1', 0, 4)}${inUse}`, h ? undefined : 'damaged');
    add(s, 'checksum', o + 4, b.subarray(4, 8), `0x${hex32(stored)} (CRC-32C)`, h ? undefined : 'wrong checksum');
    checksums.push({ structure: s, offset: o + 4, stored: `0x${hex32(stored)}`, computed: h ? `0x${hex32(h.computedChecksum)}` : 'n/a (damaged)', ok: h !== null });
    add(s, 'sequence number', o + 8, b.subarray(8, 16), b.readBigUInt64LE(8).toString());
    add(s, 'FileWriteGuid', o + 16, b.subarray(16, 32), formatGuid(b, 16));
    add(s, 'DataWriteGuid', o + 32, b.subarray(32, 48), formatGuid(b, 32));
    add(s, 'LogGuid', o + 48, b.subarray(48, 64), isZeroGuid(b.subarray(48, 64)) ? 'zero: the log is empty' : `${formatGuid(b, 48)}: the log may hold entries`);
    add(s, 'log version', o + 64, b.subarray(64, 66), String(b.readUInt16LE(64)));
    add(s, 'version', o + 66, b.subarray(66, 68), String(b.readUInt16LE(66)));
    add(s, 'log length', o + 68, b.subarray(68, 72), bytesLabel(b.readUInt32LE(68)));
    add(s, 'log offset', o + 72, b.subarray(72, 80), String(b.readBigUInt64LE(72)));
  });

  l.raw.regionTables.forEach((b, i) => {
    const o = REGION_TABLE_OFFSETS[i];
    const s = `region table ${i + 1}`;
    const t = l.regionTables[i];
    const ok = t.signature === 'regi' && t.checksum === t.computedChecksum;
    add(s, 'signature', o, b.subarray(0, 4), b.toString('latin1', 0, 4), ok ? undefined : 'damaged');
    add(s, 'checksum', o + 4, b.subarray(4, 8), `0x${hex32(t.checksum)} (CRC-32C of 64 KiB)`, ok ? undefined : 'wrong checksum');
    checksums.push({ structure: s, offset: o + 4, stored: `0x${hex32(t.checksum)}`, computed: `0x${hex32(t.computedChecksum)}`, ok });
    add(s, 'entry count', o + 8, b.subarray(8, 12), String(t.entryCount));
    for (const e of t.entries.slice(0, 8)) {
      const name = e.guid === BAT_REGION_GUID ? 'BAT region' : e.guid === METADATA_REGION_GUID ? 'metadata region' : `region ${e.guid}`;
      add(s, name, o + e.at, b.subarray(e.at, e.at + 32), `${bytesLabel(e.length)} at ${e.fileOffset}${e.required ? ', required' : ''}`);
    }
  });

  const mo = l.metadata.fileOffset;
  const mt = l.raw.metadataTable;
  add('metadata table', 'signature', mo, mt.subarray(0, 8), mt.toString('latin1', 0, 8));
  add('metadata table', 'entry count', mo + 10, mt.subarray(10, 12), String(l.metadataTable.entryCount));
  for (const e of l.metadataTable.entries.slice(0, 127)) {
    const flags = [e.isUser ? 'user' : null, e.isVirtualDisk ? 'virtual disk' : null, e.isRequired ? 'required' : null].filter(Boolean).join(', ');
    add('metadata table', ITEM_NAMES[e.itemId] ?? `item ${e.itemId}`, mo + e.at, mt.subarray(e.at, e.at + 32), `${e.length} bytes at metadata offset ${e.offset}${flags ? `; ${flags}` : ''}`);
  }
  const item = (id: string) => ({ bytes: l.raw.items.get(id), at: img.itemOffset(id) ?? mo });
  const fp = item(METADATA_ITEM.fileParameters);
  if (fp.bytes) {
    add('file parameters', 'block size', fp.at, fp.bytes.subarray(0, 4), bytesLabel(img.blockSize));
    add('file parameters', 'flags', fp.at + 4, fp.bytes.subarray(4, 8), [
      img.fileParameters.leaveBlocksAllocated ? 'LeaveBlocksAllocated (fixed)' : null,
      img.fileParameters.hasParent ? 'HasParent (differencing)' : null,
    ].filter(Boolean).join(', ') || 'none (dynamic)');
  }
  const vs = item(METADATA_ITEM.virtualDiskSize);
  if (vs.bytes) add('virtual disk size', 'virtual disk size', vs.at, vs.bytes, bytesLabel(img.virtualSize));
  const ls = item(METADATA_ITEM.logicalSectorSize);
  if (ls.bytes) add('logical sector size', 'logical sector size', ls.at, ls.bytes, `${img.sectorSize} bytes`);
  const ps = item(METADATA_ITEM.physicalSectorSize);
  if (ps.bytes) add('physical sector size', 'physical sector size', ps.at, ps.bytes, `${img.physicalSectorSize} bytes`);
  const p83 = item(METADATA_ITEM.page83Data);
  if (p83.bytes) add('page 83 data', 'virtual disk identifier', p83.at, p83.bytes, img.uuid);
  const pl = item(METADATA_ITEM.parentLocator);
  if (pl.bytes && img.parentLocator) {
    add('parent locator', 'locator type', pl.at, pl.bytes.subarray(0, 16), img.parentLocator.locatorType);
    add('parent locator', 'key/value count', pl.at + 18, pl.bytes.subarray(18, 20), String(pl.bytes.readUInt16LE(18)));
    for (const e of img.parentLocator.entries) add('parent locator', e.key, pl.at + e.at, pl.bytes.subarray(e.at, e.at + 12), e.value);
    for (const pr of img.parentLocator.problems) add('parent locator', 'problem', pl.at, Buffer.alloc(0), pr, pr);
  }
  add('BAT region', 'payload block states', l.bat.fileOffset, Buffer.alloc(0), stateCounts(img));
  return { fields, checksums };
}

function stateCounts(img: VhdxImage): string {
  const counts = new Map<number, number>();
  const byState = img.payloadStateCounts();
  byState.forEach((n, st) => { if (n) counts.set(st, n); });
  return [...counts.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${n} ${PAYLOAD_STATE_NAMES[s] ?? `state ${s}`}`).join(', ');
}
