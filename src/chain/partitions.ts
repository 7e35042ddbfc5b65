/**
 * Partition tables of the virtual disk (MBR with extended/logical partitions, and GPT), read
 * through the chain, for the editor's partition overlay. Pure parsing over a read callback, so it
 * works on a Chain, a raw buffer in tests, or anything else that reads bytes.
 */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

export interface Partition {
  /** 1-based as tools number them: MBR 1-4 primary, 5+ logical; GPT entry index + 1. */
  number: number;
  scheme: 'mbr' | 'gpt';
  /** First byte on the virtual disk. */
  start: number;
  length: number;
  /** MBR: the type byte as two hex digits ("83"); GPT: the type GUID. */
  type: string;
  /** A human name for the type, or "unknown". */
  typeName: string;
  /** GPT partition name (from the image: untrusted text). */
  name: string;
  bootable: boolean;
}

export interface PartitionTable {
  scheme: 'none' | 'mbr' | 'gpt';
  partitions: Partition[];
  /** GPT disk GUID, when there is one. */
  diskGuid: string | null;
  warnings: string[];
}

const SECTOR = 512;
const MAX_LOGICAL = 128;
const MAX_GPT_ENTRIES = 1024;

const MBR_TYPES: Record<number, string> = {
  0x01: 'FAT12', 0x04: 'FAT16 <32M', 0x05: 'Extended', 0x06: 'FAT16', 0x07: 'NTFS/exFAT/HPFS',
  0x0b: 'FAT32 (CHS)', 0x0c: 'FAT32 (LBA)', 0x0e: 'FAT16 (LBA)', 0x0f: 'Extended (LBA)',
  0x11: 'Hidden FAT12', 0x12: 'Recovery', 0x17: 'Hidden NTFS', 0x1b: 'Hidden FAT32', 0x1c: 'Hidden FAT32 (LBA)',
  0x27: 'Windows RE', 0x42: 'Windows dynamic', 0x82: 'Linux swap', 0x83: 'Linux', 0x85: 'Linux extended',
  0x8e: 'Linux LVM', 0xa5: 'FreeBSD', 0xa6: 'OpenBSD', 0xa9: 'NetBSD', 0xaf: 'HFS+', 0xee: 'GPT protective',
  0xef: 'EFI system', 0xfd: 'Linux RAID',
};

const GPT_TYPES: Record<string, string> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI system',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
  '933ac7e1-2eb4-4f13-b844-0e14e2aef915': 'Linux home',
  '21686148-6449-6e6f-744e-656564454649': 'BIOS boot',
  '48465300-0000-11aa-aa11-00306543ecac': 'Apple HFS+',
  '7c3457ef-0000-11aa-aa11-00306543ecac': 'Apple APFS',
};

const isExtended = (t: number) => t === 0x05 || t === 0x0f || t === 0x85;

export function mbrTypeName(type: number): string {
  return MBR_TYPES[type] ?? 'unknown';
}

/** GUIDs are stored with their first three fields little-endian. */
export function formatGuid(b: Buffer): string {
  const h = (from: number, to: number, le: boolean) => {
    const part = Buffer.from(b.subarray(from, to));
    if (le) part.reverse();
    return part.toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

function clampRange(start: number, length: number, diskSize: number, what: string, warnings: string[]): { start: number; length: number } | null {
  if (start >= diskSize) {
    warnings.push(`${what} starts at byte ${start}, past the end of the disk (${diskSize})`);
    return null;
  }
  if (start + length > diskSize) {
    warnings.push(`${what} runs past the end of the disk; shown up to the end`);
    return { start, length: diskSize - start };
  }
  return { start, length };
}

/** Reads the partition table of a virtual disk of `diskSize` bytes. Never throws on content. */
export async function readPartitionTable(read: ReadAt, diskSize: number): Promise<PartitionTable> {
  const warnings: string[] = [];
  if (diskSize < SECTOR) return { scheme: 'none', partitions: [], diskGuid: null, warnings };
  const mbr = await read(0, SECTOR);
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return { scheme: 'none', partitions: [], diskGuid: null, warnings };
  const primaries = [0, 1, 2, 3].map((i) => {
    const o = 446 + i * 16;
    return { index: i, boot: mbr[o], type: mbr[o + 4], lba: mbr.readUInt32LE(o + 8), count: mbr.readUInt32LE(o + 12) };
  });
  if (primaries.some((p) => p.type === 0xee) && diskSize >= 2 * SECTOR) {
    const gpt = await readGpt(read, diskSize, warnings);
    if (gpt) return { scheme: 'gpt', partitions: gpt.partitions, diskGuid: gpt.diskGuid, warnings };
  }
  const partitions: Partition[] = [];
  for (const p of primaries) {
    if (p.type === 0 || p.count === 0) continue;
    const r = clampRange(p.lba * SECTOR, p.count * SECTOR, diskSize, `MBR partition ${p.index + 1}`, warnings);
    if (!r) continue;
    partitions.push({
      number: p.index + 1, scheme: 'mbr', start: r.start, length: r.length,
      type: p.type.toString(16).padStart(2, '0'), typeName: mbrTypeName(p.type), name: '', bootable: p.boot === 0x80,
    });
    if (isExtended(p.type)) await readLogical(read, diskSize, p.lba, partitions, warnings);
  }
  return { scheme: 'mbr', partitions, diskGuid: null, warnings };
}

/** Follows the chain of extended boot records; each is relative to the extended partition's start. */
async function readLogical(read: ReadAt, diskSize: number, extLba: number, out: Partition[], warnings: string[]): Promise<void> {
  let ebrLba = extLba;
  const seen = new Set<number>();
  for (let n = 0; n < MAX_LOGICAL; n++) {
    if (seen.has(ebrLba) || ebrLba * SECTOR + SECTOR > diskSize) {
      warnings.push(`extended boot record chain is broken at LBA ${ebrLba}`);
      return;
    }
    seen.add(ebrLba);
    const ebr = await read(ebrLba * SECTOR, SECTOR);
    if (ebr[510] !== 0x55 || ebr[511] !== 0xaa) {
      warnings.push(`extended boot record at LBA ${ebrLba} has no 55AA signature`);
      return;
    }
    const type = ebr[446 + 4];
    const rel = ebr.readUInt32LE(446 + 8);
    const count = ebr.readUInt32LE(446 + 12);
    if (type !== 0 && count !== 0) {
      const number = 5 + out.filter((p) => p.number >= 5).length;
      const r = clampRange((ebrLba + rel) * SECTOR, count * SECTOR, diskSize, `logical partition ${number}`, warnings);
      if (r) {
        out.push({ number, scheme: 'mbr', start: r.start, length: r.length, type: type.toString(16).padStart(2, '0'),
          typeName: mbrTypeName(type), name: '', bootable: ebr[446] === 0x80 });
      }
    }
    const nextType = ebr[462 + 4];
    const nextRel = ebr.readUInt32LE(462 + 8);
    if (!isExtended(nextType) || nextRel === 0) return;
    ebrLba = extLba + nextRel;
  }
  warnings.push(`more than ${MAX_LOGICAL} logical partitions; the rest are not shown`);
}

async function readGpt(read: ReadAt, diskSize: number, warnings: string[]): Promise<{ partitions: Partition[]; diskGuid: string } | null> {
  const hdr = await read(SECTOR, SECTOR);
  if (hdr.toString('latin1', 0, 8) !== 'EFI PART') {
    warnings.push('protective MBR but no GPT header at LBA 1');
    return null;
  }
  const entriesLba = Number(hdr.readBigUInt64LE(72));
  const count = hdr.readUInt32LE(80);
  const entrySize = hdr.readUInt32LE(84);
  const diskGuid = formatGuid(hdr.subarray(56, 72));
  if (entrySize < 128 || entrySize > 4096 || entrySize % 8 !== 0) {
    warnings.push(`GPT entry size ${entrySize} is invalid`);
    return { partitions: [], diskGuid };
  }
  const n = Math.min(count, MAX_GPT_ENTRIES);
  if (count > MAX_GPT_ENTRIES) warnings.push(`GPT claims ${count} entries; only the first ${MAX_GPT_ENTRIES} are read`);
  const tableBytes = n * entrySize;
  if (entriesLba * SECTOR + tableBytes > diskSize) {
    warnings.push(`GPT entry table at LBA ${entriesLba} runs past the end of the disk`);
    return { partitions: [], diskGuid };
  }
  const table = await read(entriesLba * SECTOR, tableBytes);
  const partitions: Partition[] = [];
  for (let i = 0; i < n; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const type = formatGuid(e.subarray(0, 16));
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (last < first) {
      warnings.push(`GPT entry ${i + 1} ends (LBA ${last}) before it starts (LBA ${first})`);
      continue;
    }
    const nameRaw = e.subarray(56, 128).toString('utf16le');
    const nul = nameRaw.indexOf('\0');
    const r = clampRange(first * SECTOR, (last - first + 1) * SECTOR, diskSize, `GPT entry ${i + 1}`, warnings);
    if (!r) continue;
    partitions.push({
      number: i + 1, scheme: 'gpt', start: r.start, length: r.length, type, typeName: GPT_TYPES[type] ?? 'unknown',
      name: nul >= 0 ? nameRaw.slice(0, nul) : nameRaw, bootable: (e.readUInt32LE(48) & 4) !== 0,
    });
  }
  return { partitions, diskGuid };
}
