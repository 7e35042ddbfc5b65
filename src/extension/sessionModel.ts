// Emulator sessions without `vscode` (so they are unit-tested as they are): settings, command
// lines, the undo question's wording, the server process and the undo answer.
import { spawn } from 'child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as nodePath from 'path';
import { discardChild } from '../chain/discard';
import { mergeChild } from '../chain/merge';
import { OperationOptions, throwIfCancelled } from '../chain/progress';
import { parseDuration } from '../serve/duration';
import type { ExportStatus } from '../serve/servedExport';

export type SessionMode = 'undo' | 'persistent';
export type UndoChoice = 'keep' | 'discard' | 'merge';

/** What the extension remembers of a session (in globalState, so a reloaded window finds its running servers). */
export interface SessionRecord {
  id: string;
  image: string;
  mode: SessionMode;
  control: string;
  trace: string;
  log: string;
  url: string;
  pid: number;
  started: string;
  snapshotEvery: string | null;
}

/** One export as `diskimg ctl status` reports it. */
export type ExportStatusView = ExportStatus;

/** `60m`, `30s`, `1.5h`, `500ms` -> milliseconds; null for empty; throws on anything else. */
export function parseDurationSetting(text: string, what: string): number | null {
  const s = text.trim();
  if (!s) return null;
  return parseDuration(s, what);
}

/** The arguments of `diskimg serve` for a session. */
export function serveArgs(r: Pick<SessionRecord, 'image' | 'mode' | 'control' | 'trace' | 'snapshotEvery'>, socket: string): string[] {
  const args = ['serve', r.image, '--socket', socket, '--control', r.control, '--trace', r.trace];
  // An undo session always ends with the child kept: the extension asks the undo question itself
  // and then discards or merges with progress and cancel.
  if (r.mode === 'undo') args.push('--session', '--on-exit', 'keep');
  if (r.snapshotEvery) args.push('--snapshot-every', r.snapshotEvery);
  return args;
}

/** The `serving <exports> on <url>` line the server prints when it accepts connections. */
export function servingUrl(logText: string): string | null {
  const m = /^serving .* on (\S+)$/m.exec(logText);
  return m ? m[1] : null;
}

/** Splits the `diskImageInspector.qemu.args` setting (an array, or one string split on spaces honouring quotes). */
export function splitArgs(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  if (typeof value !== 'string') return [];
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(value))) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/** `qemu-system-x86_64 <extra> -drive file=<URL>,format=raw,if=virtio` as argv. */
export function qemuArgv(qemuPath: string, extra: string[], url: string): string[] {
  // A comma inside a -drive value is written twice (QEMU's option syntax).
  return [qemuPath, ...extra, '-drive', `file=${url.replace(/,/g, ',,')},format=raw,if=virtio`];
}

/** The argv as one shell line, each word quoted only when it needs it. */
export function shellLine(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** The layers an undo session created: from the top down to the session child, newest first. */
export function sessionLayers(s: Pick<ExportStatusView, 'chain' | 'session'>): string[] {
  if (!s.session) return [];
  const at = s.chain.indexOf(s.session);
  return at < 0 ? [] : s.chain.slice(0, at + 1);
}

/** What each answer to the undo question changes, naming the files (the question's detail text). */
export function undoConsequences(s: Pick<ExportStatusView, 'chain' | 'session' | 'image'>): Record<UndoChoice, string> {
  const layers = sessionLayers(s).map((p) => nodePath.basename(p));
  const image = nodePath.basename(s.image);
  const list = layers.join(', ');
  return {
    keep: `Keep: ${list} stay${layers.length === 1 ? 's' : ''} next to ${image}; ${image} is not changed. Open ${layers[0] ?? 'the top'} to use the disk as the session left it.`,
    discard: `Discard: deletes ${list}; ${image} is as before the session.`,
    merge: `Merge: writes the session's blocks into ${image}, then deletes ${list}.`,
  };
}

/** Layers a revert to `snapshot` deletes: every layer above it (newest first). */
export function revertDiscards(s: Pick<ExportStatusView, 'chain'>, snapshot: string): string[] {
  const at = s.chain.indexOf(snapshot);
  return at <= 0 ? [] : s.chain.slice(0, at);
}

export function formatBytesShort(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** Writes per second over the last `windowS` seconds from (time, cumulative count) samples. */
export class RateMeter {
  private readonly samples: Array<[number, number]> = [];
  constructor(private readonly windowS = 5) {}
  push(timeS: number, cumulative: number): void {
    this.samples.push([timeS, cumulative]);
    while (this.samples.length > 2 && timeS - this.samples[0][0] > this.windowS) this.samples.shift();
  }
  get rate(): number {
    if (this.samples.length < 2) return 0;
    const [t0, c0] = this.samples[0];
    const [t1, c1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? (c1 - c0) / (t1 - t0) : 0;
  }
}

// ---- the session's server process and the undo answer (Node only, no vscode) --------------------

/** Starts `diskimg serve` detached (it outlives VS Code), its output in `record.log`; resolves with its pid and URL once it serves. */
export async function spawnServe(record: SessionRecord, cli: string, socket: string, nodeExe = process.execPath, timeoutMs = 30_000): Promise<{ pid: number; url: string }> {
  const out = openSync(record.log, 'a');
  const child = spawn(nodeExe, [cli, ...serveArgs(record, socket)], {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
  });
  closeSync(out);
  child.unref();
  const pid = child.pid ?? 0;
  let exited: number | null = null;
  child.once('exit', (code) => { exited = code ?? -1; });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(record.log) ? readFileSync(record.log, 'utf8') : '';
    const url = servingUrl(text);
    if (url) {
      // The control socket is made just after the ready line.
      for (let i = 0; i < 250 && !existsSync(record.control); i++) await new Promise((r) => setTimeout(r, 20));
      return { pid, url };
    }
    if (exited !== null) throw new Error(`diskimg serve could not start: ${text.trim().split('\n').pop() || `exit ${exited}`}`);
    if (Date.now() > deadline) {
      try { process.kill(pid); } catch { /* gone */ }
      throw new Error(`diskimg serve did not start within ${timeoutMs / 1000} s; see ${record.log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Applies the answer to the undo question once the server has stopped with the session kept:
 * discard deletes the session's layers newest first (the image is as before); merge writes them
 * into the image. Both take a signal and report progress.
 */
export async function applyUndoChoice(choice: UndoChoice, layers: string[], image: string, opts: OperationOptions = {}): Promise<{ deleted: string[]; mergedInto: string | null }> {
  if (choice === 'keep' || layers.length === 0) return { deleted: [], mergedInto: null };
  if (choice === 'discard') {
    const deleted: string[] = [];
    for (let i = 0; i < layers.length; i++) {
      throwIfCancelled(opts.signal, layers[i]);
      await discardChild(layers[i]);
      deleted.push(layers[i]);
      opts.onProgress?.(i + 1, layers.length);
    }
    return { deleted, mergedInto: null };
  }
  const r = await mergeChild(layers[0], { ...opts, into: image });
  return { deleted: r.merged, mergedInto: r.target };
}

// ---- session records on disk -------------------------------------------------------------------

/**
 * Where running sessions are announced: `<id>.json` (a SessionRecord) next to their sockets. The
 * extension writes one per session it starts and, when a window opens, shows every live session
 * announced there, so a session started outside VS Code (`npm run demo`, a script) appears in the
 * Sessions view like its own. Unix socket paths are limited to ~107 bytes: hence the temp folder.
 */
export function sessionRecordDir(): string {
  return nodePath.join(tmpdir(), 'diskimg-sessions');
}

export function writeSessionRecord(dir: string, r: SessionRecord): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = nodePath.join(dir, `${r.id}.json`);
  // Written whole, then renamed: a window opening meanwhile never reads half a record.
  writeFileSync(`${file}.tmp`, `${JSON.stringify(r, null, 1)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  return file;
}

export function removeSessionRecord(dir: string, id: string): void {
  try { unlinkSync(nodePath.join(dir, `${id}.json`)); } catch { /* already gone */ }
}

function isRecord(o: unknown): o is SessionRecord {
  if (!o || typeof o !== 'object') return false;
  const r = o as Record<string, unknown>;
  const str = (k: string) => typeof r[k] === 'string' && (r[k] as string).length > 0;
  return str('id') && /^[\w.-]+$/.test(r.id as string) && str('image') && (r.mode === 'undo' || r.mode === 'persistent') && str('control') && str('trace')
    && str('log') && str('url') && typeof r.pid === 'number' && Number.isInteger(r.pid) && r.pid > 0 && str('started')
    && (r.snapshotEvery === null || typeof r.snapshotEvery === 'string');
}

/**
 * The records announced in `dir`: well-formed ones in files this user owns (the folder is in the
 * shared temp folder; another user's file is not trusted), named after their id. Liveness is the
 * caller's to check (pid and control socket).
 */
export function readSessionRecords(dir: string): SessionRecord[] {
  let names: string[];
  try { names = readdirSync(dir); } catch { return []; }
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  const out: SessionRecord[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    const file = nodePath.join(dir, n);
    try {
      const st = statSync(file);
      if (!st.isFile() || st.size > 64 * 1024 || (uid !== null && st.uid !== uid)) continue;
      const r: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (isRecord(r) && `${r.id}.json` === n) out.push(r);
    } catch {
      // torn or foreign: not a session
    }
  }
  return out;
}
