import { crc32cWithZeroField } from './crc32c';
import { guidEquals } from './guid';

/**
 * The log: a ring of 4 KiB sectors holding log entries. An entry is a 64-byte entry header and
 * 32-byte descriptors (zero or data), then one data sector per data descriptor. The active
 * sequence is the run of entries, consecutive in sequence number, from the newest valid entry's
 * tail up to it; replaying it writes each descriptor's sector (or zeros) at its file offset.
 */
export const LOG_SECTOR_SIZE = 4096;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;
export const LOG_ENTRY_SIGNATURE = 'loge';
export const ZERO_DESCRIPTOR_SIGNATURE = 'zero';
export const DATA_DESCRIPTOR_SIGNATURE = 'desc';
export const DATA_SECTOR_SIGNATURE = 'data';
/** Largest log we read into memory to replay (Hyper-V and qemu write 1 MiB logs). */
export const MAX_LOG_LENGTH = 64 * 1024 * 1024;
/** How far a log entry may extend the file past its current size (LastFileOffset). */
export const MAX_LOG_FILE_GROWTH = 1024 * 1024 * 1024;

export interface LogEntryHeader {
  signature: string;
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: Buffer;
  flushedFileOffset: number;
  lastFileOffset: number;
}

export function parseLogEntryHeader(b: Buffer): LogEntryHeader {
  return {
    signature: b.subarray(0, 4).toString('latin1'),
    checksum: b.readUInt32LE(4),
    entryLength: b.readUInt32LE(8),
    tail: b.readUInt32LE(12),
    sequenceNumber: b.readBigUInt64LE(16),
    descriptorCount: b.readUInt32LE(24),
    logGuid: Buffer.from(b.subarray(32, 48)),
    flushedFileOffset: Number(b.readBigUInt64LE(48)),
    lastFileOffset: Number(b.readBigUInt64LE(56)),
  };
}

/** One write a log entry describes: `data` null means `length` zero bytes. */
export interface LogWrite {
  fileOffset: number;
  length: number;
  data: Buffer | null;
}

export interface LogEntry {
  /** Position inside the log. */
  position: number;
  header: LogEntryHeader;
  writes: LogWrite[];
}

/** Sectors the descriptors take: the header fills two descriptor slots of the first sector. */
export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / (LOG_SECTOR_SIZE / LOG_DESCRIPTOR_SIZE));
}

/** The `length` bytes of the ring starting at `position`, wrapping at the end. */
function ringSlice(log: Buffer, position: number, length: number): Buffer {
  if (position + length <= log.length) return log.subarray(position, position + length);
  const out = Buffer.alloc(length);
  const first = log.length - position;
  log.copy(out, 0, position);
  log.copy(out, first, 0, length - first);
  return out;
}

/**
 * Parses and fully validates the entry at `position` (signature, lengths, checksum, log GUID,
 * every descriptor and data sector); returns the reason when it is not a valid entry.
 */
export function readLogEntry(log: Buffer, position: number, logGuid: Buffer): LogEntry | string {
  const head = parseLogEntryHeader(ringSlice(log, position, LOG_ENTRY_HEADER_SIZE));
  if (head.signature !== LOG_ENTRY_SIGNATURE) return 'no entry signature';
  if (head.entryLength === 0 || head.entryLength % LOG_SECTOR_SIZE !== 0 || head.entryLength > log.length) {
    return `entry length ${head.entryLength} is not a whole number of sectors inside the ${log.length}-byte log`;
  }
  if (head.tail % LOG_SECTOR_SIZE !== 0 || head.tail >= log.length) return `tail ${head.tail} is outside the log`;
  if (head.sequenceNumber === 0n) return 'sequence number 0';
  if (!guidEquals(head.logGuid, logGuid)) return 'log GUID differs from the header\'s';
  const dSectors = descriptorSectors(head.descriptorCount);
  if (dSectors * LOG_SECTOR_SIZE > head.entryLength) return `${head.descriptorCount} descriptors do not fit in the entry`;
  const entry = ringSlice(log, position, head.entryLength);
  if (crc32cWithZeroField(entry, 4) !== head.checksum) return 'entry checksum is wrong';
  const writes: LogWrite[] = [];
  let dataSector = dSectors;
  for (let i = 0; i < head.descriptorCount; i++) {
    const d = entry.subarray(LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE, LOG_ENTRY_HEADER_SIZE + (i + 1) * LOG_DESCRIPTOR_SIZE);
    const sig = d.subarray(0, 4).toString('latin1');
    const fileOffset = Number(d.readBigUInt64LE(16));
    if (d.readBigUInt64LE(24) !== head.sequenceNumber) return `descriptor ${i} has another sequence number`;
    if (fileOffset % LOG_SECTOR_SIZE !== 0) return `descriptor ${i} file offset ${fileOffset} is not 4 KiB aligned`;
    if (sig === ZERO_DESCRIPTOR_SIGNATURE) {
      const zeroLength = Number(d.readBigUInt64LE(8));
      if (zeroLength % LOG_SECTOR_SIZE !== 0) return `zero descriptor ${i} length ${zeroLength} is not 4 KiB aligned`;
      writes.push({ fileOffset, length: zeroLength, data: null });
    } else if (sig === DATA_DESCRIPTOR_SIGNATURE) {
      if ((dataSector + 1) * LOG_SECTOR_SIZE > head.entryLength) return `data descriptor ${i} has no data sector in the entry`;
      const s = entry.subarray(dataSector * LOG_SECTOR_SIZE, (dataSector + 1) * LOG_SECTOR_SIZE);
      dataSector++;
      if (s.subarray(0, 4).toString('latin1') !== DATA_SECTOR_SIGNATURE) return `data sector of descriptor ${i} has no signature`;
      const seq = (BigInt(s.readUInt32LE(4)) << 32n) | BigInt(s.readUInt32LE(4092));
      if (seq !== head.sequenceNumber) return `data sector of descriptor ${i} has another sequence number`;
      const data = Buffer.alloc(LOG_SECTOR_SIZE);
      d.copy(data, 0, 8, 16); // leading bytes
      s.copy(data, 8, 8, 4092);
      d.copy(data, 4092, 4, 8); // trailing bytes
      writes.push({ fileOffset, length: LOG_SECTOR_SIZE, data });
    } else {
      return `descriptor ${i} has an unknown signature`;
    }
  }
  return { position, header: head, writes };
}

export interface ActiveSequence {
  entries: LogEntry[];
  /** Where the next entry would go (just after the head). */
  nextPosition: number;
  headSequence: bigint;
}

export class LogError extends Error {
  constructor(message: string, readonly position: number) {
    super(message);
  }
}

/**
 * Finds the active sequence: the valid entry with the highest sequence number is its head; from
 * the head's tail, entries must follow one another with sequence numbers rising by one. Returns
 * null when the log holds no valid entry (nothing to replay).
 */
export function findActiveSequence(log: Buffer, logGuid: Buffer): ActiveSequence | null {
  let head: LogEntry | null = null;
  for (let pos = 0; pos < log.length; pos += LOG_SECTOR_SIZE) {
    if (log.toString('latin1', pos, pos + 4) !== LOG_ENTRY_SIGNATURE) continue;
    const e = readLogEntry(log, pos, logGuid);
    if (typeof e !== 'string' && (!head || e.header.sequenceNumber > head.header.sequenceNumber)) head = e;
  }
  if (!head) return null;
  const entries: LogEntry[] = [];
  let pos = head.header.tail;
  // Bounded: each step moves at least one sector, and the ring has log.length / 4096 of them.
  for (let steps = 0; steps <= log.length / LOG_SECTOR_SIZE; steps++) {
    const e = readLogEntry(log, pos, logGuid);
    if (typeof e === 'string') throw new LogError(`the active sequence is broken at log position ${pos}: ${e}`, pos);
    if (entries.length > 0 && e.header.sequenceNumber !== entries[entries.length - 1].header.sequenceNumber + 1n) {
      throw new LogError(`log entry at position ${pos} has sequence number ${e.header.sequenceNumber}, expected ${entries[entries.length - 1].header.sequenceNumber + 1n}`, pos);
    }
    entries.push(e);
    if (e.position === head.position) {
      return { entries, nextPosition: (pos + e.header.entryLength) % log.length, headSequence: e.header.sequenceNumber };
    }
    if (e.header.sequenceNumber >= head.header.sequenceNumber) break;
    pos = (pos + e.header.entryLength) % log.length;
  }
  throw new LogError(`the tail of the newest log entry (sequence ${head.header.sequenceNumber}) does not lead to it`, head.position);
}

/** Builds one entry describing `writes` (each a 4 KiB-aligned sector with data, or a zero range). */
export function serializeLogEntry(opts: {
  writes: LogWrite[];
  sequenceNumber: bigint;
  logGuid: Buffer;
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
}): Buffer {
  const { writes } = opts;
  const dSectors = descriptorSectors(writes.length);
  const dataCount = writes.filter((w) => w.data).length;
  const length = (dSectors + dataCount) * LOG_SECTOR_SIZE;
  const b = Buffer.alloc(length);
  b.write(LOG_ENTRY_SIGNATURE, 0, 'latin1');
  b.writeUInt32LE(length, 8);
  b.writeUInt32LE(opts.tail, 12);
  b.writeBigUInt64LE(opts.sequenceNumber, 16);
  b.writeUInt32LE(writes.length, 24);
  opts.logGuid.copy(b, 32);
  b.writeBigUInt64LE(BigInt(opts.flushedFileOffset), 48);
  b.writeBigUInt64LE(BigInt(opts.lastFileOffset), 56);
  let sector = dSectors;
  writes.forEach((w, i) => {
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    b.writeBigUInt64LE(BigInt(w.fileOffset), d + 16);
    b.writeBigUInt64LE(opts.sequenceNumber, d + 24);
    if (!w.data) {
      b.write(ZERO_DESCRIPTOR_SIGNATURE, d, 'latin1');
      b.writeBigUInt64LE(BigInt(w.length), d + 8);
      return;
    }
    b.write(DATA_DESCRIPTOR_SIGNATURE, d, 'latin1');
    w.data.copy(b, d + 4, 4092, 4096);
    w.data.copy(b, d + 8, 0, 8);
    const s = sector++ * LOG_SECTOR_SIZE;
    b.write(DATA_SECTOR_SIGNATURE, s, 'latin1');
    b.writeUInt32LE(Number(opts.sequenceNumber >> 32n), s + 4);
    w.data.copy(b, s + 8, 8, 4092);
    b.writeUInt32LE(Number(opts.sequenceNumber & 0xffffffffn), s + 4092);
  });
  b.writeUInt32LE(crc32cWithZeroField(b, 4), 4);
  return b;
}
