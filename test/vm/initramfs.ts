// A minimal initramfs writer: the kernel's "newc" cpio format (uncompressed, which the kernel
// unpacks as is), so building a guest needs no cpio tool and no root for device nodes.

export interface CpioEntry {
  path: string; // without a leading slash
  kind: 'file' | 'dir' | 'char' | 'symlink';
  mode?: number; // permission bits
  data?: Buffer; // file contents, or the symlink's target
  rdev?: [number, number]; // major, minor of a device node
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** One newc record: 110-byte ASCII header, NUL-terminated name, data, each padded to 4 bytes. */
function record(ino: number, name: string, mode: number, data: Buffer, rdev: [number, number]): Buffer[] {
  const nameBytes = Buffer.from(name + '\0');
  const header =
    '070701' +
    hex8(ino) + hex8(mode) + hex8(0) + hex8(0) + hex8(1) + hex8(0) + hex8(data.length) +
    hex8(0) + hex8(0) + hex8(rdev[0]) + hex8(rdev[1]) + hex8(nameBytes.length) + hex8(0);
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBytes]);
  return [head, Buffer.alloc(pad4(head.length)), data, Buffer.alloc(pad4(data.length))];
}

export function buildCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const typeBits = { file: S_IFREG, dir: S_IFDIR, char: S_IFCHR, symlink: S_IFLNK }[e.kind];
    const perm = e.mode ?? (e.kind === 'dir' ? 0o755 : e.kind === 'symlink' ? 0o777 : 0o644);
    parts.push(...record(ino++, e.path, typeBits | perm, e.data ?? Buffer.alloc(0), e.rdev ?? [0, 0]));
  }
  parts.push(...record(0, 'TRAILER!!!', 0, Buffer.alloc(0), [0, 0]));
  return Buffer.concat(parts);
}
