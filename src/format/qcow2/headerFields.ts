// The qcow2 field table for the editor's Header view: header, header extensions, backing name, snapshots.
import { bytesLabel, HeaderDescription, HeaderField, hexOf } from '../headerFields';
import { FEATURE_TYPES } from './featureNameTable';
import { HEADER_OFFSETS as O } from './header';
import { EXTENSION_NAMES } from './headerExtension';
import { Qcow2Image } from './qcow2Image';

function featureList(bits: bigint, type: number, img: Qcow2Image): string {
  const names: string[] = [];
  for (let i = 0; i < 64; i++) {
    if (((bits >> BigInt(i)) & 1n) === 0n) continue;
    names.push(img.layout.extensions.featureNames.find((f) => f.type === type && f.bit === i)?.name ?? `bit ${i}`);
  }
  return names.length ? `0x${bits.toString(16)}: ${names.join(', ')}` : 'none';
}

export function describeQcow2Header(img: Qcow2Image): HeaderDescription {
  const fields: HeaderField[] = [];
  const b = img.layout.headerBytes;
  const h = img.header;
  const add = (structure: string, name: string, offset: number, size: number, decoded: string, problem?: string) => {
    fields.push({ structure, name, offset, size, hex: hexOf(b.subarray(offset, offset + size)), decoded, ...(problem ? { problem } : {}) });
  };
  const s = 'qcow2 header';
  add(s, 'magic', O.magic, 4, 'QFI\\xfb');
  add(s, 'version', O.version, 4, String(h.version));
  add(s, 'backing file offset', O.backingFileOffset, 8, h.backingFileOffset ? String(h.backingFileOffset) : '0: no backing file');
  add(s, 'backing file size', O.backingFileSize, 4, String(h.backingFileSize));
  add(s, 'cluster bits', O.clusterBits, 4, `${h.clusterBits}: ${bytesLabel(2 ** h.clusterBits)} clusters`);
  add(s, 'size', O.size, 8, bytesLabel(h.size));
  add(s, 'crypt method', O.cryptMethod, 4, h.cryptMethod === 0 ? 'none' : String(h.cryptMethod));
  add(s, 'L1 size', O.l1Size, 4, `${h.l1Size} entries`);
  add(s, 'L1 table offset', O.l1TableOffset, 8, String(h.l1TableOffset));
  add(s, 'refcount table offset', O.refcountTableOffset, 8, String(h.refcountTableOffset));
  add(s, 'refcount table clusters', O.refcountTableClusters, 4, String(h.refcountTableClusters));
  add(s, 'snapshots', O.nbSnapshots, 4, String(h.nbSnapshots));
  add(s, 'snapshot table offset', O.snapshotsOffset, 8, String(h.snapshotsOffset));
  if (h.version === 3) {
    add(s, 'incompatible features', O.incompatibleFeatures, 8, featureList(h.incompatibleFeatures, 0, img), img.corrupt ? 'marked corrupt' : img.dirty ? 'marked dirty' : undefined);
    add(s, 'compatible features', O.compatibleFeatures, 8, featureList(h.compatibleFeatures, 1, img));
    add(s, 'autoclear features', O.autoclearFeatures, 8, featureList(h.autoclearFeatures, 2, img));
    add(s, 'refcount order', O.refcountOrder, 4, `${h.refcountOrder}: ${1 << h.refcountOrder}-bit refcounts`);
    add(s, 'header length', O.headerLength, 4, String(h.headerLength));
    if (h.headerLength > 104) add(s, 'compression type', O.compressionType, 1, h.compressionType === 0 ? 'zlib (deflate)' : 'zstd');
  }
  for (const x of img.layout.extensions.list) {
    const name = EXTENSION_NAMES[x.type] ?? `unknown 0x${x.type.toString(16)}`;
    const st = `header extension (${name})`;
    add(st, 'type', x.offset, 4, `0x${x.type.toString(16).padStart(8, '0')}`);
    add(st, 'length', x.offset + 4, 4, String(x.data.length));
    let decoded = `${x.data.length} bytes`;
    if (x.type === 0xe2792aca) decoded = img.backingFormat ?? '';
    else if (x.type === 0x6803f857) decoded = img.layout.extensions.featureNames.map((f) => `${FEATURE_TYPES[f.type] ?? f.type} ${f.bit}: ${f.name}`).join('; ');
    else if (x.type === 0x23852875) decoded = `${img.layout.extensions.bitmapCount ?? 0} bitmap(s)`;
    fields.push({ structure: st, name: 'data', offset: x.offset + 8, size: x.data.length, hex: hexOf(x.data), decoded });
  }
  if (img.layout.backingFile !== null) {
    fields.push({ structure: 'backing file name', name: 'name', offset: h.backingFileOffset, size: h.backingFileSize, hex: hexOf(Buffer.from(img.layout.backingFile, 'utf8')), decoded: img.layout.backingFile });
  }
  for (const sn of img.snapshots) {
    const st = `snapshot ${sn.id}`;
    const when = new Date(sn.dateSec * 1000).toISOString();
    fields.push({ structure: st, name: 'name', offset: sn.offset, size: sn.length, hex: '', decoded: `${sn.name} (id ${sn.id}, ${when}, L1 ${sn.l1Size} entries at ${sn.l1TableOffset}${sn.vmStateSize ? `, VM state ${bytesLabel(sn.vmStateSize)}` : ''})` });
  }
  return { fields, checksums: [] };
}
