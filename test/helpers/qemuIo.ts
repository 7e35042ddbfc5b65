// Writes made by QEMU's own tool, for the qcow2 tests that compare our reading with qemu's.
import { execFileSync } from 'child_process';
import { rng } from './util';

/** Runs qemu-io commands (`write -P 7 0 1M`, `write -z …`, `discard …`) on an image, in order. */
export function qemuIo(img: string, cmds: string[]): void {
  execFileSync('qemu-io', [...cmds.flatMap((c) => ['-c', c]), img], { stdio: 'ignore' });
}

/** How often each kind of operation comes up in randomQemuWrites (the rest are discards). */
export interface QemuWriteMix { data: number; zero: number; zeroUnmap?: number; maxSectors: number }

/**
 * `count` random data writes, zero writes (with and without unmap) and discards through qemu-io,
 * sector-aligned but not cluster-aligned, so partial clusters and subclusters come up.
 */
export function randomQemuWrites(img: string, size: number, seed: number, count: number, mix: QemuWriteMix): void {
  const r = rng(seed);
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 512 * (1 + Math.floor(r() * mix.maxSectors));
    const off = 512 * Math.floor(r() * ((size - len) / 512));
    const k = r();
    if (k < mix.data) cmds.push(`write -P ${1 + ((r() * 254) | 0)} ${off} ${len}`);
    else if (k < mix.data + mix.zero) cmds.push(`write -z ${off} ${len}`);
    else if (k < mix.data + mix.zero + (mix.zeroUnmap ?? 0)) cmds.push(`write -z -u ${off} ${len}`);
    else cmds.push(`discard ${off} ${len}`);
  }
  qemuIo(img, cmds);
}
