import { closeSync, linkSync, openSync, readFileSync, realpathSync, statSync, unlinkSync, writeSync } from 'fs';
import type * as OsModule from 'os';
import * as nodePath from 'path';
import { randomBytes } from './randomBytes';
import { DiskImageError } from '../format/errors';

// os is required on first use (only writers lock): it is not in Node's start-up snapshot.
const hostname = (): string => (require('os') as typeof OsModule).hostname();

/**
 * Advisory write locks between processes. Node has no flock(), so a lock is a small file next to the
 * image (`.<name>.diskimg-lock`) holding who has it: pid, host, process start time, command and a
 * random nonce. It is created complete in one atomic step (written to a temporary file, then
 * hard-linked to the lock name, which fails if the name exists), so nobody ever reads a half-written
 * lock (where the file system has no hard links, O_EXCL create then write). A lock whose process is gone (same host, pid not running, or running but started at another
 * time: the pid was reused) is stale: it is broken by exactly one process, the one that creates the
 * break token `.<name>.diskimg-lock.break-<nonce>` with O_EXCL, so two processes recovering from
 * the same crash cannot both take it. A lock from another host cannot be checked and is honoured.
 *
 * Locks are re-entrant inside one process (counted), released on close and, as a last resort,
 * when the process exits; a process killed with -9 leaves a lock that the next writer takes over.
 */
export interface LockOwner {
  pid: number;
  host: string;
  /** Process start time in clock ticks since boot (Linux), to tell a reused pid; null elsewhere. */
  start: number | null;
  command: string;
  since: string;
  nonce: string;
}

interface Held {
  lockPath: string;
  nonce: string;
  count: number;
}

const held = new Map<string, Held>();
let exitHookInstalled = false;

/** The lock file that guards `imagePath` (next to the image, keyed on its real path). */
export function lockPathFor(imagePath: string): string {
  const real = realTarget(imagePath);
  return nodePath.join(nodePath.dirname(real), `.${nodePath.basename(real)}.diskimg-lock`);
}

/** The real path of an image, or of its folder plus its name when it does not exist yet. */
function realTarget(p: string): string {
  const abs = nodePath.resolve(p);
  try {
    return realpathSync(abs);
  } catch {
    try {
      return nodePath.join(realpathSync(nodePath.dirname(abs)), nodePath.basename(abs));
    } catch {
      return abs;
    }
  }
}

function processStart(pid: number): number | null {
  if (process.platform !== 'linux') return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 22 (starttime) counted after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const v = Number(fields[19]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

function describeCommand(): string {
  const script = process.argv[1] ? nodePath.basename(process.argv[1]).replace(/\.(c|m)?js$/, '') : nodePath.basename(process.argv0);
  const name = script === 'cli' ? 'diskimg' : script;
  const text = [name, ...process.argv.slice(2)].join(' ');
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

/** Whether the process that wrote `owner` still runs (true when that cannot be told). */
export function ownerAlive(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: it exists but belongs to someone else.
  }
  if (owner.start !== null) {
    const now = processStart(owner.pid);
    if (now !== null && now !== owner.start) return false;
  }
  return true;
}

function readOwner(lockPath: string): LockOwner | null | 'missing' {
  let text: string;
  try {
    text = readFileSync(lockPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    return null;
  }
  try {
    const o = JSON.parse(text) as LockOwner;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string' || typeof o.nonce !== 'string') return null;
    return o;
  } catch {
    return null;
  }
}

/** Writes `content` to a fresh temporary file and hard-links it to `target`; false if target exists. */
function linkNew(target: string, content: string): boolean {
  const tmp = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, target);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    // File systems without hard links (exFAT, FAT, some network and FUSE mounts): create with
    // O_EXCL and write; a reader that catches it half-written waits (see UNREADABLE_STALE_MS).
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS' || code === 'EMLINK') return createExclusive(target, content);
    throw e;
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}

function createExclusive(target: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(target, 'wx', 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  return true;
}

function inUse(imagePath: string, lockPath: string, o: LockOwner | null): DiskImageError {
  const who = o
    ? `pid ${o.pid} on ${o.host}${o.command ? ` (${o.command})` : ''}${o.since ? ` since ${o.since}` : ''}`
    : 'another process (unreadable lock)';
  return new DiskImageError(imagePath, `in use by ${who}; lock file ${lockPath}`, undefined, undefined, 'ELOCKED');
}

function lockError(imagePath: string, lockPath: string, e: unknown): DiskImageError {
  const err = e as NodeJS.ErrnoException;
  return new DiskImageError(imagePath, `cannot take the write lock ${lockPath}: ${err?.code ?? ''} ${err?.message ?? String(e)}`.replace(/\s+/g, ' '), undefined, undefined, 'ELOCK');
}

/** An unreadable lock (empty or garbled) older than this is treated as left by a crash. */
const UNREADABLE_STALE_MS = 10_000;

/**
 * Takes the write lock for `imagePath` (which may not exist yet) or throws a DiskImageError
 * `in use by pid … on … (command) since …`. Returns the function that releases it.
 */
export function acquireWriteLock(imagePath: string): () => void {
  const key = realTarget(imagePath);
  const mine = held.get(key);
  if (mine) {
    mine.count++;
    return onceRelease(key);
  }
  const lockPath = lockPathFor(imagePath);
  const owner: LockOwner = {
    pid: process.pid,
    host: hostname(),
    start: processStart(process.pid),
    command: describeCommand(),
    since: new Date().toISOString(),
    nonce: randomBytes(12).toString('hex'),
  };
  const content = `${JSON.stringify(owner)}\n`;
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      if (linkNew(lockPath, content)) {
        held.set(key, { lockPath, nonce: owner.nonce, count: 1 });
        installExitHook();
        return onceRelease(key);
      }
      const other = readOwner(lockPath);
      if (other === 'missing') continue; // released meanwhile: try again
      if (other === null) {
        let age = 0;
        try { age = Date.now() - statSync(lockPath).mtimeMs; } catch { continue; }
        if (age < UNREADABLE_STALE_MS) throw inUse(imagePath, lockPath, null);
        breakStale(lockPath, `unreadable-${Math.floor(statSync(lockPath).mtimeMs)}`, null);
        continue;
      }
      if (ownerAlive(other)) throw inUse(imagePath, lockPath, other);
      if (!breakStale(lockPath, other.nonce, other.nonce)) sleepMs(20);
    }
  } catch (e) {
    if (e instanceof DiskImageError) throw e;
    throw lockError(imagePath, lockPath, e);
  }
  throw new DiskImageError(imagePath, `cannot take the write lock ${lockPath}: it keeps changing`, undefined, undefined, 'ELOCK');
}

/**
 * Removes a stale lock; only the process that creates the break token for this lock's nonce does it,
 * and it checks the lock is still the one it judged dead. Returns false when another process is
 * breaking it.
 */
function breakStale(lockPath: string, tokenId: string, nonce: string | null): boolean {
  const token = `${lockPath}.break-${tokenId.replace(/[^0-9a-zA-Z-]/g, '')}`;
  if (!linkNew(token, `${JSON.stringify({ pid: process.pid, host: hostname(), start: processStart(process.pid) })}\n`)) {
    // Someone else is breaking it; if that someone died too, clear its token for the next try.
    const o = readOwner(token);
    if (o && o !== 'missing' && !ownerAlive({ ...o, command: '', since: '', nonce: '' })) {
      try { unlinkSync(token); } catch { /* gone */ }
    }
    return false;
  }
  try {
    const current = readOwner(lockPath);
    const same = nonce === null ? current === null : current !== null && current !== 'missing' && current.nonce === nonce;
    if (same) {
      try { unlinkSync(lockPath); } catch { /* gone */ }
    }
  } finally {
    try { unlinkSync(token); } catch { /* gone */ }
  }
  return true;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function onceRelease(key: string): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    release(key);
  };
}

function release(key: string): void {
  const h = held.get(key);
  if (!h) return;
  if (--h.count > 0) return;
  held.delete(key);
  removeIfOurs(h);
}

function removeIfOurs(h: Held): void {
  const current = readOwner(h.lockPath);
  if (current !== null && current !== 'missing' && current.nonce === h.nonce) {
    try { unlinkSync(h.lockPath); } catch { /* gone */ }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const h of held.values()) removeIfOurs(h);
    held.clear();
  });
}

/** Who holds the lock on `imagePath` now, if anyone (a stale lock is reported with alive=false). */
export function lockHolder(imagePath: string): (LockOwner & { alive: boolean }) | null {
  const o = readOwner(lockPathFor(imagePath));
  if (o === null || o === 'missing') return null;
  return { ...o, alive: ownerAlive(o) };
}
