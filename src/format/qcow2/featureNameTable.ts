// The feature name table header extension: 48-byte entries naming feature bits (type, bit, name).

export const FEATURE_NAME_ENTRY_SIZE = 48;
export const FEATURE_TYPES = ['incompatible', 'compatible', 'autoclear'] as const;

export interface FeatureName {
  type: number;
  bit: number;
  name: string;
}

export function parseFeatureNameTable(data: Buffer): FeatureName[] {
  const out: FeatureName[] = [];
  for (let at = 0; at + FEATURE_NAME_ENTRY_SIZE <= data.length; at += FEATURE_NAME_ENTRY_SIZE) {
    const raw = data.subarray(at + 2, at + FEATURE_NAME_ENTRY_SIZE);
    const end = raw.indexOf(0);
    out.push({ type: data[at], bit: data[at + 1], name: raw.subarray(0, end < 0 ? raw.length : end).toString('latin1') });
  }
  return out;
}

export function serializeFeatureNameTable(names: FeatureName[]): Buffer {
  const b = Buffer.alloc(names.length * FEATURE_NAME_ENTRY_SIZE);
  names.forEach((n, i) => {
    b[i * FEATURE_NAME_ENTRY_SIZE] = n.type;
    b[i * FEATURE_NAME_ENTRY_SIZE + 1] = n.bit;
    b.write(n.name.slice(0, 46), i * FEATURE_NAME_ENTRY_SIZE + 2, 'latin1');
  });
  return b;
}

/** The names qemu writes, so other tools can name the bits of images we create. */
export const STANDARD_FEATURE_NAMES: FeatureName[] = [
  { type: 0, bit: 0, name: 'dirty bit' },
  { type: 0, bit: 1, name: 'corrupt bit' },
  { type: 0, bit: 2, name: 'external data file' },
  { type: 0, bit: 3, name: 'compression type' },
  { type: 0, bit: 4, name: 'extended L2 entries' },
  { type: 1, bit: 0, name: 'lazy refcounts' },
  { type: 2, bit: 0, name: 'bitmaps' },
  { type: 2, bit: 1, name: 'raw external data' },
];
