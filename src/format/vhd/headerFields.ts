// The VHD field table for the editor's Header view: footer, dynamic header and parent locators.
import { bytesLabel, ChecksumCheck, HeaderDescription, HeaderField, hexOf, showCode } from '../headerFields';
import { DYNAMIC_HEADER_FIELDS } from './dynamicHeader';
import { diskTypeName, FOOTER_FIELDS, formatCreatorVersion, trimCode } from './footer';
import { chsSizeBytes } from './geometry';
import { LOCATOR_ENTRY_SIZE, locatorSpaceBytes } from './parentLocator';
import { vhdTimestampToIso } from './timestamp';
import { formatUuid } from './uuid';
import { hex32, VhdImage } from './vhdImage';

const CREATORS: Record<string, string> = {
  'vpc ': 'Virtual PC', 'vs  ': 'Virtual Server', 'win ': 'Hyper-V / Windows', 'vbox': 'VirtualBox',
  qemu: 'qemu-img', qem2: 'qemu-img', 'd2v ': 'Disk2vhd', 'd2v\0': 'Disk2vhd', 'tap\0': 'Xen blktap',
  CTXS: 'XenConverter', dimg: 'Disk Image Inspector',
};

const DISK_TYPES: Record<number, string> = { 0: 'none', 1: 'deprecated (1)', 2: 'fixed', 3: 'dynamic', 4: 'differencing', 5: 'deprecated (5)', 6: 'deprecated (6)' };

function footerDecoded(img: VhdImage, name: string): string {
  const f = img.footer;
  switch (name) {
    case 'cookie': return showCode(f.cookie);
    case 'features': return [(f.features & 1) ? 'temporary' : null, (f.features & 2) ? 'reserved bit set' : 'reserved bit NOT set'].filter(Boolean).join(', ');
    case 'formatVersion': return `${f.formatVersion >>> 16}.${f.formatVersion & 0xffff}`;
    case 'dataOffset': return f.dataOffset === 0xffffffffffffffffn ? 'none (fixed disk)' : `dynamic header at ${f.dataOffset}`;
    case 'timestamp': return vhdTimestampToIso(f.timestamp);
    case 'creatorApplication': return `${showCode(f.creatorApplication)} — ${CREATORS[f.creatorApplication] ?? 'unknown creator'}`;
    case 'creatorVersion': return formatCreatorVersion(f.creatorVersion);
    case 'creatorHostOs': return `${showCode(f.creatorHostOs)} — ${f.creatorHostOs === 'Wi2k' ? 'Windows' : f.creatorHostOs === 'Mac ' ? 'Macintosh' : 'unknown'}`;
    case 'originalSize': return bytesLabel(f.originalSize);
    case 'currentSize': return bytesLabel(f.currentSize);
    case 'geometry': return `C/H/S ${f.geometry.cylinders}/${f.geometry.heads}/${f.geometry.sectorsPerTrack} = ${chsSizeBytes(f.geometry)} bytes`;
    case 'diskType': return DISK_TYPES[f.diskType] ?? `unknown (${f.diskType})`;
    case 'checksum': return `0x${hex32(f.checksum)} (computed 0x${hex32(f.computedChecksum)})`;
    case 'uniqueId': return formatUuid(f.uniqueId);
    case 'savedState': return f.savedState ? 'saved state' : 'no saved state';
    default: return f.raw.subarray(85).every((b) => b === 0) ? 'zero' : `not zero (hidden flag ${f.hidden})`;
  }
}

function headerDecoded(img: VhdImage, name: string): string {
  const h = img.header!;
  switch (name) {
    case 'cookie': return showCode(h.cookie);
    case 'dataOffset': return h.dataOffset === 0xffffffffffffffffn ? 'unused (all ones)' : `${h.dataOffset} (should be all ones)`;
    case 'tableOffset': return `BAT at ${h.tableOffset}`;
    case 'headerVersion': return `${h.headerVersion >>> 16}.${h.headerVersion & 0xffff}`;
    case 'maxTableEntries': return `${h.maxTableEntries} blocks`;
    case 'blockSize': return bytesLabel(h.blockSize);
    case 'checksum': return `0x${hex32(h.checksum)} (computed 0x${hex32(h.computedChecksum)})`;
    case 'parentUniqueId': return img.diskType === 'differencing' ? formatUuid(h.parentUniqueId) : 'unused';
    case 'parentTimestamp': return img.diskType === 'differencing' ? vhdTimestampToIso(h.parentTimestamp) : 'unused';
    case 'reserved1': return h.reserved1 === 0 ? 'zero' : 'not zero';
    case 'parentUnicodeName': return img.diskType === 'differencing' ? h.parentUnicodeName : 'unused';
    case 'parentLocators': return `${h.locators.filter((l) => !l.raw.every((b) => b === 0)).length} of 8 entries in use`;
    default: return h.raw.subarray(768).every((b) => b === 0) ? 'zero' : 'not zero';
  }
}

/** Every footer, dynamic-header and parent-locator field with its file offset, raw bytes and meaning. */
export function describeHeader(img: VhdImage): HeaderDescription {
  const fields: HeaderField[] = [];
  const checksums: ChecksumCheck[] = [];
  const fo = img.layout.footerSource === 'end' ? img.layout.footerOffset : 0;
  const footerLabel = img.layout.footerSource === 'end' ? 'footer' : 'footer (copy at 0)';
  for (const def of FOOTER_FIELDS) {
    const field: HeaderField = {
      structure: footerLabel, name: def.name, offset: fo + def.offset, size: def.size,
      hex: hexOf(img.footer.raw.subarray(def.offset, def.offset + def.size)), decoded: footerDecoded(img, def.name),
    };
    if (def.name === 'checksum' && img.footer.checksum !== img.footer.computedChecksum) field.problem = 'checksum is wrong';
    if (def.name === 'diskType' && !diskTypeName(img.footer.diskType)) field.problem = 'unsupported disk type';
    fields.push(field);
  }
  checksums.push({ structure: footerLabel, offset: fo + 64, stored: `0x${hex32(img.footer.checksum)}`, computed: `0x${hex32(img.footer.computedChecksum)}`, ok: img.footerChecksumValid });
  const h = img.header;
  const ho = img.layout.headerOffset;
  if (h && ho !== null) {
    for (const def of DYNAMIC_HEADER_FIELDS) {
      const field: HeaderField = {
        structure: 'dynamic header', name: def.name, offset: ho + def.offset, size: def.size,
        hex: hexOf(h.raw.subarray(def.offset, def.offset + def.size)), decoded: headerDecoded(img, def.name),
      };
      if (def.name === 'checksum' && h.checksum !== h.computedChecksum) field.problem = 'checksum is wrong';
      fields.push(field);
    }
    checksums.push({ structure: 'dynamic header', offset: ho + 36, stored: `0x${hex32(h.checksum)}`, computed: `0x${hex32(h.computedChecksum)}`, ok: h.checksum === h.computedChecksum });
    for (const e of h.locators) {
      if (e.raw.every((b) => b === 0)) continue;
      const at = ho + 576 + e.index * LOCATOR_ENTRY_SIZE;
      const data = img.locatorData.find((d) => d.entry.index === e.index);
      const structure = `parent locator ${e.index}`;
      fields.push(
        { structure, name: 'platformCode', offset: at, size: 4, hex: hexOf(e.raw.subarray(0, 4)), decoded: showCode(e.platformCode) },
        { structure, name: 'platformDataSpace', offset: at + 4, size: 4, hex: hexOf(e.raw.subarray(4, 8)), decoded: `${e.platformDataSpace} (${locatorSpaceBytes(e)} bytes)` },
        { structure, name: 'platformDataLength', offset: at + 8, size: 4, hex: hexOf(e.raw.subarray(8, 12)), decoded: `${e.platformDataLength} bytes` },
        { structure, name: 'reserved', offset: at + 12, size: 4, hex: hexOf(e.raw.subarray(12, 16)), decoded: e.reserved === 0 ? 'zero' : 'not zero' },
        { structure, name: 'platformDataOffset', offset: at + 16, size: 8, hex: hexOf(e.raw.subarray(16, 24)), decoded: `data at ${e.platformDataOffset}` },
        {
          structure, name: 'path', offset: e.platformDataOffset, size: e.platformDataLength, hex: '',
          decoded: data?.path ?? (data?.problem ? `unreadable: ${data.problem}` : 'opaque data'),
          ...(data?.problem ? { problem: data.problem } : {}),
        },
      );
    }
  }
  return { fields, checksums };
}

/** The creator code trimmed for display (used by overview lines). */
export function creatorLabel(img: VhdImage): string {
  const c = img.footer.creatorApplication;
  return `${trimCode(c)} ${formatCreatorVersion(img.footer.creatorVersion)}${CREATORS[c] ? ` (${CREATORS[c]})` : ''}`;
}
