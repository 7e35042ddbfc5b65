// A real emulator for the serve tests: qemu-system-x86_64 (TCG, no KVM) boots Debian's kernel with
// a tiny busybox initramfs whose /init writes a known plan to /dev/vda (a virtio disk given as an
// NBD URL): an ext2 file system made by the guest's own mke2fs with files copied into it through
// the guest kernel, and raw patterns at known offsets past it. Then it unmounts, syncs and powers
// off. The host checks the disk afterwards with verifyDisk (patterns at their offsets, e2fsprogs'
// debugfs reading each file). scripts/vm/prepare.sh puts kernel, modules and busybox in the cache.
import { spawn, spawnSync } from 'child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, writeFileSync } from 'fs';
import { homedir } from 'os';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createImage } from '../../src/format/vhd/create';
import { buildCpio, CpioEntry } from './initramfs';

export interface GuestFile {
  name: string; // path inside the file system, e.g. "dir/notes.txt"
  data: Buffer;
}

export interface GuestWrite {
  offset: number; // byte offset on /dev/vda (need not be sector-aligned)
  data: Buffer;
}

/** What the guest writes: an ext2 file system over [0, fsBytes) holding `files`, then `writes`. */
export interface GuestPlan {
  fsBytes: number;
  files: GuestFile[];
  writes: GuestWrite[];
}

export interface VmAssets {
  dir: string;
  kernel: string;
  busybox: string;
  modules: string[]; // .ko paths in load order
}

export const VM_CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'disk-image-inspector', 'vm');

/** The prepared kernel, modules and busybox, or why they cannot be used. */
export function vmAssets(): VmAssets | { missing: string } {
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['debugfs', 'e2fsprogs'], ['e2fsck', 'e2fsprogs'], ['nbdcopy', 'libnbd-bin']]) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) return { missing: `${cmd} is not installed (Debian ${pkg}; bash scripts/setup.sh)` };
  }
  const dir = path.join(VM_CACHE, 'current');
  if (!existsSync(path.join(dir, 'ready'))) return { missing: `no prepared kernel in ${dir} (bash scripts/vm/prepare.sh)` };
  const order = readFileSync(path.join(dir, 'modules.order'), 'utf8').split('\n').filter(Boolean);
  return {
    dir,
    kernel: path.join(dir, 'vmlinuz'),
    busybox: path.join(dir, 'busybox'),
    modules: order.map((m) => path.join(dir, 'modules', `${m}.ko`)),
  };
}

/** Fails in CI when the VM tools are missing (CI installs them); elsewhere skips, saying why. */
export function requireVm(ctx: Mocha.Context): void {
  const a = vmAssets();
  if (!('missing' in a)) return;
  if (process.env.CI) throw new Error(`VM tools missing in CI: ${a.missing}`);
  console.log(`    skipped: ${a.missing}`);
  ctx.skip();
}

/** Deterministic bytes (xorshift32) so a plan is reproducible from its seed. */
function patternBytes(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * A plan for a disk of `diskBytes` (at least 16 MiB): a file system over the first half with a
 * few files (text, binary, one spanning many blocks, one in a subfolder), and raw patterns in the
 * second half: sector-aligned, unaligned and crossing 64 KiB and 2 MiB boundaries, and the last
 * sector of the disk.
 */
/**
 * A dynamic VHD base (2 MiB blocks) holding 70,000 bytes of 0x5a where the guest writes nothing (past
 * the start of its pattern area in the second half): data that must read through the whole chain.
 */
export async function makeBaseWithKeptData(base: string, diskBytes: number): Promise<{ offset: number; data: Buffer }> {
  await createImage(base, { size: diskBytes, type: 'dynamic', blockSize: 2 << 20, exactSize: true });
  const kept = { offset: diskBytes / 2 + (6 << 20) + 4096, data: Buffer.alloc(70_000, 0x5a) };
  const c = await openChain(base, { writable: true });
  await c.write(kept.offset, kept.data);
  await c.flush();
  await c.close();
  return kept;
}

export function makePlan(seed: number, diskBytes: number): GuestPlan {
  if (diskBytes < 16 << 20) throw new Error('makePlan: disk must be at least 16 MiB');
  const fsBytes = Math.floor(diskBytes / 2 / (1 << 20)) * (1 << 20);
  const files: GuestFile[] = [
    { name: 'hello.txt', data: Buffer.from(`written by the guest, plan ${seed}\n`) },
    { name: 'random.bin', data: patternBytes(seed + 1, 300_000) },
    { name: 'sub/dir/nested.bin', data: patternBytes(seed + 2, 4097) },
    { name: 'big.bin', data: patternBytes(seed + 3, 2_500_000) },
  ];
  const hi = fsBytes;
  const writes: GuestWrite[] = [
    { offset: hi, data: patternBytes(seed + 10, 4096) },
    { offset: hi + (1 << 20) + 77, data: patternBytes(seed + 11, 1000) },
    { offset: hi + (2 << 20) - 300, data: patternBytes(seed + 12, 600) }, // crosses 2 MiB
    { offset: hi + (3 << 20) + 65536 - 512, data: patternBytes(seed + 13, 200_000) },
    { offset: diskBytes - 512, data: patternBytes(seed + 14, 512) },
  ];
  return { fsBytes, files, writes };
}

function initScript(plan: GuestPlan): string {
  const lines = [
    '#!/bin/busybox sh',
    '/bin/busybox mkdir -p /proc /sys /dev /mnt /sbin /usr/bin /usr/sbin',
    '/bin/busybox --install -s',
    'export PATH=/sbin:/bin:/usr/sbin:/usr/bin',
    'fail() { echo "DISKIMG-VM: failed: $*"; sync; poweroff -f; sleep 10; }',
    'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null',
    'for m in $(cat /modules.order); do insmod /modules/$m.ko || fail "insmod $m"; done',
    'i=0; while [ ! -b /dev/vda ]; do i=$((i+1)); [ $i -gt 300 ] && fail "no /dev/vda"; sleep 0.1; done',
    'echo "DISKIMG-VM: /dev/vda has $(cat /sys/block/vda/size) sectors"',
    // The file system first: mke2fs may clear areas beyond it; the patterns are written after.
    `mke2fs -F -b 1024 -L diskimg /dev/vda ${plan.fsBytes / 1024} >/dev/null || fail mke2fs`,
    'mount -t ext2 /dev/vda /mnt || fail mount',
  ];
  plan.files.forEach((f, i) => {
    const dir = path.posix.dirname(f.name);
    if (dir !== '.') lines.push(`mkdir -p "/mnt/${dir}" || fail mkdir`);
    lines.push(`cp /plan/f${i} "/mnt/${f.name}" || fail "cp ${f.name}"`);
  });
  lines.push('umount /mnt || fail umount');
  plan.writes.forEach((w, i) => {
    lines.push(`dd if=/plan/w${i} of=/dev/vda bs=65536 seek=${w.offset} oflag=seek_bytes conv=notrunc,fsync 2>/dev/null || fail "dd w${i}"`);
  });
  lines.push('sync', 'echo "DISKIMG-VM: done"', 'poweroff -f', 'sleep 10');
  return lines.join('\n') + '\n';
}

export function buildInitramfs(assets: VmAssets, plan: GuestPlan): Buffer {
  const entries: CpioEntry[] = [
    { path: 'bin', kind: 'dir' },
    { path: 'dev', kind: 'dir' },
    { path: 'dev/console', kind: 'char', mode: 0o600, rdev: [5, 1] },
    { path: 'bin/busybox', kind: 'file', mode: 0o755, data: readFileSync(assets.busybox) },
    { path: 'bin/sh', kind: 'symlink', data: Buffer.from('busybox') },
    { path: 'init', kind: 'file', mode: 0o755, data: Buffer.from(initScript(plan)) },
    { path: 'modules', kind: 'dir' },
    { path: 'plan', kind: 'dir' },
    { path: 'modules.order', kind: 'file', data: Buffer.from(assets.modules.map((m) => path.basename(m, '.ko')).join('\n') + '\n') },
  ];
  for (const m of assets.modules) entries.push({ path: `modules/${path.basename(m)}`, kind: 'file', data: readFileSync(m) });
  plan.files.forEach((f, i) => entries.push({ path: `plan/f${i}`, kind: 'file', data: f.data }));
  plan.writes.forEach((w, i) => entries.push({ path: `plan/w${i}`, kind: 'file', data: w.data }));
  return buildCpio(entries);
}

export interface BootResult {
  seconds: number;
  serialLog: string;
  logPath: string;
}

/**
 * Boots the guest against `nbdUrl` and waits until it powers off. Rejects (with the end of the
 * serial log) when the guest did not report success, qemu failed, or `timeoutMs` passed (then
 * qemu is killed).
 */
export async function bootGuest(opts: {
  nbdUrl: string;
  plan: GuestPlan;
  workDir: string;
  timeoutMs?: number;
  memoryMb?: number;
}): Promise<BootResult> {
  const assets = vmAssets();
  if ('missing' in assets) throw new Error(assets.missing);
  mkdirSync(opts.workDir, { recursive: true });
  const initrd = path.join(opts.workDir, 'initrd.cpio');
  const logPath = path.join(opts.workDir, 'serial.log');
  writeFileSync(initrd, buildInitramfs(assets, opts.plan));
  writeFileSync(logPath, '');
  // QEMU's option parser splits on commas; a comma inside a value is written twice.
  const drive = `file=${opts.nbdUrl.replace(/,/g, ',,')},format=raw,if=virtio,cache=writeback`;
  const args = [
    '-machine', 'pc,accel=tcg', '-smp', '1', '-m', String(opts.memoryMb ?? 256),
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none', '-no-reboot',
    '-serial', `file:${logPath}`, '-monitor', 'none',
    '-kernel', assets.kernel, '-initrd', initrd,
    '-append', 'console=ttyS0 panic=-1 rdinit=/init loglevel=4 tsc=reliable no_timer_check',
    '-drive', drive,
  ];
  const t0 = process.hrtime.bigint();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d.toString(); if (stderr.length > 65536) stderr = stderr.slice(-65536); });
  const timeoutMs = opts.timeoutMs ?? 600_000;
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (c) => resolve(c));
  }).finally(() => clearTimeout(timer));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const serialLog = readFileSync(logPath, 'utf8');
  const tail = serialLog.split('\n').slice(-25).join('\n');
  if (timedOut) throw new Error(`guest did not power off within ${timeoutMs / 1000} s; serial log ${logPath}:\n${tail}`);
  if (code !== 0) throw new Error(`qemu-system-x86_64 exited ${code}: ${stderr.trim()}\nserial log ${logPath}:\n${tail}`);
  if (!serialLog.includes('DISKIMG-VM: done')) throw new Error(`guest did not finish its plan; serial log ${logPath}:\n${tail}`);
  return { seconds, serialLog, logPath };
}

/**
 * Differences between the raw disk image `rawPath` and what the plan wrote: each pattern at its
 * offset, and each file as e2fsprogs' debugfs reads it from the file system. Empty when equal.
 */
export function verifyDisk(rawPath: string, plan: GuestPlan): string[] {
  const problems: string[] = [];
  const fd = openSync(rawPath, 'r');
  try {
    plan.writes.forEach((w, i) => {
      const got = Buffer.alloc(w.data.length);
      const n = readSync(fd, got, 0, got.length, w.offset);
      if (n !== got.length || !got.equals(w.data)) {
        problems.push(`pattern ${i} (${w.data.length} bytes at offset ${w.offset}) differs`);
      }
    });
  } finally {
    closeSync(fd);
  }
  for (const f of plan.files) {
    const r = spawnSync('debugfs', ['-R', `cat /${f.name}`, rawPath], { maxBuffer: 1 << 28 });
    if (r.status !== 0) problems.push(`debugfs cat /${f.name} exited ${r.status}: ${r.stderr}`);
    else if (!r.stdout.equals(f.data)) problems.push(`file /${f.name}: debugfs reads ${r.stdout.length} bytes, differing from the ${f.data.length} the guest wrote`);
  }
  const fsck = spawnSync('e2fsck', ['-fn', rawPath]);
  if (fsck.status !== 0) problems.push(`e2fsck -fn exited ${fsck.status}: ${fsck.stdout.toString().slice(-500)}`);
  return problems;
}
