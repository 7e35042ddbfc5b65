// The snapshot table: variable-length entries, each padded to 8 bytes, listing internal snapshots.
import { DiskImageError } from '../errors';

export const SNAPSHOT_FIXED_SIZE = 40;
/** QEMU's limits: snapshot count and extra data per entry. */
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOT_EXTRA = 1024;
/** Most bytes of the table we read (QEMU limits the table to 64 MiB). */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;

export interface SnapshotEntry {
  offset: number;
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: number;
  /** From the extra data when present (bytes 8-15), else null. */
  diskSize: number | null;
  /** Size of the whole entry, padding included. */
  length: number;
}

/** Parses `count` entries from `table` (read from file offset `at`). */
export function parseSnapshotTable(table: Buffer, at: number, count: number, path: string): SnapshotEntry[] {
  const out: SnapshotEntry[] = [];
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const err = (what: string) => new DiskImageError(path, `snapshot ${i}: ${what}`, 'snapshot table', at + pos, 'ESNAPSHOT');
    if (pos + SNAPSHOT_FIXED_SIZE > table.length) throw err('entry runs past the table');
    const idSize = table.readUInt16BE(pos + 12);
    const nameSize = table.readUInt16BE(pos + 14);
    const extraSize = table.readUInt32BE(pos + 36);
    if (extraSize > MAX_SNAPSHOT_EXTRA) throw err(`extra data size ${extraSize} exceeds ${MAX_SNAPSHOT_EXTRA}`);
    const end = pos + SNAPSHOT_FIXED_SIZE + extraSize + idSize + nameSize;
    if (end > table.length) throw err('entry runs past the table');
    const extra = table.subarray(pos + SNAPSHOT_FIXED_SIZE, pos + SNAPSHOT_FIXED_SIZE + extraSize);
    const idAt = pos + SNAPSHOT_FIXED_SIZE + extraSize;
    const l1 = table.readBigUInt64BE(pos);
    const length = Math.ceil((end - pos) / 8) * 8;
    out.push({
      offset: at + pos,
      l1TableOffset: Number(l1 & 0x00fffffffffffe00n),
      l1Size: table.readUInt32BE(pos + 8),
      id: table.toString('utf8', idAt, idAt + idSize),
      name: table.toString('utf8', idAt + idSize, idAt + idSize + nameSize),
      dateSec: table.readUInt32BE(pos + 16),
      dateNsec: table.readUInt32BE(pos + 20),
      vmClockNsec: table.readBigUInt64BE(pos + 24),
      vmStateSize: table.readUInt32BE(pos + 32),
      diskSize: extra.length >= 16 ? Number(extra.readBigUInt64BE(8)) : null,
      length,
    });
    pos += length;
  }
  return out;
}

/** One entry as bytes (with 16 bytes of extra data: large VM state size and disk size). */
export function serializeSnapshotEntry(e: Omit<SnapshotEntry, 'offset' | 'length'>): Buffer {
  const id = Buffer.from(e.id, 'utf8');
  const name = Buffer.from(e.name, 'utf8');
  const raw = SNAPSHOT_FIXED_SIZE + 16 + id.length + name.length;
  const b = Buffer.alloc(Math.ceil(raw / 8) * 8);
  b.writeBigUInt64BE(BigInt(e.l1TableOffset), 0);
  b.writeUInt32BE(e.l1Size, 8);
  b.writeUInt16BE(id.length, 12);
  b.writeUInt16BE(name.length, 14);
  b.writeUInt32BE(e.dateSec, 16);
  b.writeUInt32BE(e.dateNsec, 20);
  b.writeBigUInt64BE(e.vmClockNsec, 24);
  b.writeUInt32BE(e.vmStateSize, 32);
  b.writeUInt32BE(16, 36);
  b.writeBigUInt64BE(BigInt(e.vmStateSize), 40);
  b.writeBigUInt64BE(BigInt(e.diskSize ?? 0), 48);
  id.copy(b, 56);
  name.copy(b, 56 + id.length);
  return b;
}
