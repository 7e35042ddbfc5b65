import { formatGuid, parseGuid } from './guid';

/**
 * Parent locator metadata item: a 20-byte header (locator type GUID, key/value count) and 12-byte
 * entries whose keys and values are UTF-16LE strings inside the item.
 */
export const PARENT_LOCATOR_TYPE_VHDX = 'b04aefb7-d19e-4a81-b789-25b8e9445913';
export const PARENT_LOCATOR_HEADER_SIZE = 20;
export const PARENT_LOCATOR_ENTRY_SIZE = 12;
/** Far more than the five keys the spec names; a hostile count is refused before the loop. */
export const MAX_LOCATOR_ENTRIES = 256;

export interface ParentLocatorEntry {
  key: string;
  value: string;
  /** Offset of the entry inside the item. */
  at: number;
}

export interface ParentLocator {
  locatorType: string;
  entries: ParentLocatorEntry[];
  /** Problems found (a string outside the item, duplicate keys, …); the item is still usable. */
  problems: string[];
}

export class ParentLocatorError extends Error {
  constructor(message: string, readonly at: number) {
    super(message);
  }
}

export function parseParentLocator(item: Buffer): ParentLocator {
  if (item.length < PARENT_LOCATOR_HEADER_SIZE) throw new ParentLocatorError(`item of ${item.length} bytes is shorter than its 20-byte header`, 0);
  const count = item.readUInt16LE(18);
  if (count > MAX_LOCATOR_ENTRIES) throw new ParentLocatorError(`${count} key/value entries (more than ${MAX_LOCATOR_ENTRIES})`, 18);
  if (PARENT_LOCATOR_HEADER_SIZE + count * PARENT_LOCATOR_ENTRY_SIZE > item.length) {
    throw new ParentLocatorError(`${count} key/value entries do not fit in the ${item.length}-byte item`, 18);
  }
  const problems: string[] = [];
  const entries: ParentLocatorEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const at = PARENT_LOCATOR_HEADER_SIZE + i * PARENT_LOCATOR_ENTRY_SIZE;
    const keyOffset = item.readUInt32LE(at);
    const valueOffset = item.readUInt32LE(at + 4);
    const keyLength = item.readUInt16LE(at + 8);
    const valueLength = item.readUInt16LE(at + 10);
    if (keyOffset + keyLength > item.length || valueOffset + valueLength > item.length) {
      problems.push(`entry ${i} (at ${at}) points past the end of the ${item.length}-byte item`);
      continue;
    }
    const key = item.subarray(keyOffset, keyOffset + keyLength).toString('utf16le');
    const value = item.subarray(valueOffset, valueOffset + valueLength).toString('utf16le');
    if (seen.has(key)) {
      problems.push(`duplicate key '${key}' (entry ${i} at ${at}); the first one is used`);
      continue;
    }
    seen.add(key);
    entries.push({ key, value, at });
  }
  return { locatorType: formatGuid(item, 0), entries, problems };
}

export function locatorValue(l: ParentLocator, key: string): string | undefined {
  return l.entries.find((e) => e.key === key)?.value;
}

export function serializeParentLocator(pairs: Array<[string, string]>): Buffer {
  const strings = pairs.map(([k, v]) => [Buffer.from(k, 'utf16le'), Buffer.from(v, 'utf16le')] as const);
  const head = PARENT_LOCATOR_HEADER_SIZE + pairs.length * PARENT_LOCATOR_ENTRY_SIZE;
  const total = head + strings.reduce((n, [k, v]) => n + k.length + v.length, 0);
  const b = Buffer.alloc(total);
  parseGuid(PARENT_LOCATOR_TYPE_VHDX)!.copy(b, 0);
  b.writeUInt16LE(pairs.length, 18);
  let pos = head;
  strings.forEach(([k, v], i) => {
    const at = PARENT_LOCATOR_HEADER_SIZE + i * PARENT_LOCATOR_ENTRY_SIZE;
    b.writeUInt32LE(pos, at);
    k.copy(b, pos);
    b.writeUInt16LE(k.length, at + 8);
    pos += k.length;
    b.writeUInt32LE(pos, at + 4);
    v.copy(b, pos);
    b.writeUInt16LE(v.length, at + 10);
    pos += v.length;
  });
  return b;
}
