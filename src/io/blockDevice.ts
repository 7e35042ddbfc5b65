// Block devices as images: their size (fstat reports 0) and whether they are mounted.
import { readdirSync, readFileSync } from 'fs';

/** Linux's major and minor numbers of a device number (st_rdev), as glibc's major()/minor() split it. */
export function deviceNumbers(rdev: number): { major: number; minor: number } {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return { major, minor };
}

/** The device's size in bytes from /sys/dev/block/MAJ:MIN/size (always in 512-byte units), or null. */
export function blockDeviceSize(rdev: number): number | null {
  const { major, minor } = deviceNumbers(rdev);
  try {
    const sectors = Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
    return Number.isSafeInteger(sectors) && sectors >= 0 ? sectors * 512 : null;
  } catch {
    return null;
  }
}

/** `MAJ:MIN` of the device and of each of its partitions (sysfs lists partitions as subfolders with a `partition` file). */
export function deviceAndPartitions(rdev: number): string[] {
  const { major, minor } = deviceNumbers(rdev);
  const self = `${major}:${minor}`;
  const out = [self];
  const dir = `/sys/dev/block/${self}`;
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      try {
        readFileSync(`${dir}/${e.name}/partition`, 'utf8');
        out.push(readFileSync(`${dir}/${e.name}/dev`, 'utf8').trim());
      } catch {
        // not a partition
      }
    }
  } catch {
    // no sysfs: the device alone
  }
  return out;
}

/**
 * Mount points of the device or any of its partitions, from /proc/self/mountinfo (field 3 is the
 * mounted device's MAJ:MIN, field 5 the mount point).
 */
export function mountsOf(rdev: number, mountinfo?: string): string[] {
  const ids = new Set(deviceAndPartitions(rdev));
  let text = mountinfo;
  if (text === undefined) {
    try { text = readFileSync('/proc/self/mountinfo', 'utf8'); } catch { return []; }
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4 && ids.has(f[2])) out.push(f[4].replace(/\\040/g, ' '));
  }
  return out;
}
