import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'fs';
import { StringDecoder } from 'string_decoder';
import * as nodePath from 'path';
import * as vscode from 'vscode';
import { controlRequest } from '../serve/control';
import { TraceIndex, TraceLineSplitter, parseTraceLine, TraceRecord, changesData } from '../serve/traceIndex';
import { Commands } from './commands';
import {
  applyUndoChoice, ExportStatusView, formatBytesShort, parseDurationSetting, qemuArgv, RateMeter, readSessionRecords, removeSessionRecord,
  revertDiscards, serveArgs, SessionMode, SessionRecord, sessionLayers, sessionRecordDir, shellLine, spawnServe, splitArgs, undoConsequences,
  UndoChoice, writeSessionRecord,
} from './sessionModel';

const STATE_KEY = 'diskImageInspector.sessions';
const POLL_MS = 1000;
const TRACE_CHUNK = 4 * 1024 * 1024;

/** A running `diskimg serve` this window started (or found still running from an earlier window). */
export class Session {
  status: ExportStatusView | null = null;
  /** Seconds since the session's trace started, per write record, for the editor's live view. */
  readonly writes = new RateMeter(5);
  writeRecords = 0;
  readRecords = 0;
  ended = false;
  private traceOffset = 0;
  private readonly splitter = new TraceLineSplitter();
  /** Keeps a UTF-8 character split across two reads whole (layer names may be non-ASCII). */
  private readonly decoder = new StringDecoder('utf8');
  private readonly listeners = new Set<(records: TraceRecord[]) => void>();
  reconcileTimer: NodeJS.Timeout | null = null;
  qemuTerminal: vscode.Terminal | null = null;

  constructor(readonly record: SessionRecord) {}

  get label(): string {
    return nodePath.basename(this.record.image);
  }

  /** Calls `fn` with each batch of new trace records (the editor's live blocks and timeline). */
  onRecords(fn: (records: TraceRecord[]) => void): vscode.Disposable {
    this.listeners.add(fn);
    return new vscode.Disposable(() => this.listeners.delete(fn));
  }

  /** Reads what the server appended to the trace since the last call. */
  pollTrace(): void {
    if (!existsSync(this.record.trace)) return;
    const fd = openSync(this.record.trace, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size < this.traceOffset) this.traceOffset = 0;
      const batch: TraceRecord[] = [];
      while (this.traceOffset < size) {
        const buf = Buffer.alloc(Math.min(TRACE_CHUNK, size - this.traceOffset));
        const n = readSync(fd, buf, 0, buf.length, this.traceOffset);
        if (n <= 0) break;
        this.traceOffset += n;
        for (const line of this.splitter.push(this.decoder.write(buf.subarray(0, n)))) {
          const r = parseTraceLine(line);
          if (!r) continue;
          if (changesData(r.op)) this.writeRecords++;
          else if (r.op === 'read') this.readRecords++;
          batch.push(r);
        }
      }
      this.writes.push(Date.now() / 1000, this.writeRecords);
      if (batch.length) for (const l of this.listeners) l(batch);
    } finally {
      closeSync(fd);
    }
  }

  /** Every record so far (Open Trace… and a timeline opened mid-session read the file whole). */
  indexWhole(blockSize: number, blockCount: number): TraceIndex {
    const idx = new TraceIndex({ blockSize, blockCount });
    if (existsSync(this.record.trace)) idx.addLines(readFileSync(this.record.trace, 'utf8').split('\n'));
    return idx;
  }

  /** Asks the server for its status (one export per session). */
  async refresh(): Promise<void> {
    const reply = await this.control({ command: 'status' });
    if (typeof reply.error === 'string') throw new Error(reply.error);
    this.status = (reply.exports as ExportStatusView[])[0] ?? null;
  }

  control(request: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    return controlRequest(this.record.control, request, timeoutMs);
  }
}

function isAlive(pid: number): boolean {
  if (!(pid > 0)) return false; // kill(0) would signal our own process group
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Emulator sessions: each is a detached `diskimg serve` child process with a control socket and a
 * trace file, so it survives the editor's webview closing and reopening, and even VS Code closing
 * (the next window finds it again through globalState and the control socket).
 */
export class SessionManager implements vscode.TreeDataProvider<SessionItem> {
  readonly sessions: Session[] = [];
  private readonly changed = new vscode.EventEmitter<SessionItem | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly statusBar: vscode.StatusBarItem;
  private timer: NodeJS.Timeout | null = null;
  private readonly sessionsChanged = new vscode.EventEmitter<void>();
  readonly onDidChangeSessions = this.sessionsChanged.event;

  constructor(private readonly context: vscode.ExtensionContext, private readonly commands: Commands, private readonly log: vscode.OutputChannel) {
    this.statusBar = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
    this.statusBar.command = 'diskImageInspector.sessions.focus';
    this.statusBar.name = 'Disk Image Sessions';
    context.subscriptions.push(this.statusBar, this.changed, this.sessionsChanged);
  }

  register(): void {
    const c = this.context;
    const reg = (id: string, fn: (...args: any[]) => Promise<unknown>) => c.subscriptions.push(vscode.commands.registerCommand(id, async (...args: any[]) => {
      try {
        await fn(...args);
      } catch (e) {
        this.log.appendLine(`[${new Date().toISOString()}] ${id} failed: ${(e as Error)?.stack ?? String(e)}`);
        void vscode.window.showErrorMessage((e as Error)?.message ?? String(e));
      }
    }));
    c.subscriptions.push(vscode.window.createTreeView('diskImageInspector.sessions', { treeDataProvider: this, showCollapseAll: true }));
    reg('diskImageInspector.startSession', (uri?: vscode.Uri) => this.startInteractive(uri));
    reg('diskImageInspector.sessionSnapshot', (item?: SessionItem) => this.snapshotNow(this.pick(item)));
    reg('diskImageInspector.sessionRevert', (item?: SessionItem) => this.revert(item));
    reg('diskImageInspector.endSession', (item?: SessionItem) => this.end(this.pick(item)));
    reg('diskImageInspector.copyQemuCommand', (item?: SessionItem) => this.copyQemu(this.pick(item)));
    reg('diskImageInspector.launchQemu', (item?: SessionItem) => this.launchQemu(this.pick(item)));
    reg('diskImageInspector.copySessionUrl', async (item?: SessionItem) => {
      const s = this.pick(item);
      if (s) await vscode.env.clipboard.writeText(s.record.url);
    });
    c.subscriptions.push(vscode.window.onDidCloseTerminal((t) => {
      const s = this.sessions.find((x) => x.qemuTerminal === t);
      if (!s || s.ended) return;
      s.qemuTerminal = null;
      // The emulator exited: the undo question (the server keeps serving until it is answered).
      void this.end(s, `QEMU exited (${t.exitStatus?.code ?? 'no exit code'}).`).catch((e) => this.log.appendLine(String(e)));
    }));
    c.subscriptions.push({ dispose: () => { if (this.timer) clearInterval(this.timer); } });
    void this.adopt();
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.updateStatusBar();
  }

  private pick(item?: SessionItem): Session | undefined {
    if (item?.session) return item.session;
    return this.sessions.length === 1 ? this.sessions[0] : undefined;
  }

  sessionFor(path: string): Session | undefined {
    const p = nodePath.resolve(path);
    return this.sessions.find((s) => nodePath.resolve(s.record.image) === p || (s.status?.chain ?? []).some((l) => nodePath.resolve(l) === p));
  }

  private save(): void {
    void this.context.globalState.update(STATE_KEY, this.sessions.filter((s) => !s.ended).map((s) => s.record));
  }

  /**
   * Sessions a previous window left running (their server is detached), and sessions announced in
   * the records folder by anything else (`npm run demo`): shown, and said so.
   */
  private async adopt(): Promise<void> {
    const saved = this.context.globalState.get<SessionRecord[]>(STATE_KEY) ?? [];
    const announced = readSessionRecords(sessionRecordDir()).filter((r) => !saved.some((x) => x.id === r.id));
    const alive: Session[] = [];
    for (const r of [...saved, ...announced]) {
      if (!isAlive(r.pid) || !existsSync(r.control)) continue;
      const s = new Session(r);
      try {
        await s.refresh();
      } catch {
        continue;
      }
      alive.push(s);
    }
    for (const s of alive) this.add(s);
    this.save();
    if (alive.length) {
      const kept = alive.filter((s) => saved.includes(s.record));
      const found = alive.filter((s) => !saved.includes(s.record));
      const list = (xs: Session[]) => xs.map((s) => `${s.label} on ${s.record.url}`).join('; ');
      const parts = [
        kept.length ? `${kept.length} emulator session${kept.length > 1 ? 's' : ''} kept running while VS Code was closed: ${list(kept)}.` : '',
        found.length ? `${found.length} emulator session${found.length > 1 ? 's' : ''} started outside VS Code: ${list(found)}.` : '',
      ];
      const pick = await vscode.window.showInformationMessage(parts.filter(Boolean).join(' '), 'Show Sessions');
      if (pick) await vscode.commands.executeCommand('diskImageInspector.sessions.focus');
    }
  }

  private add(s: Session): void {
    this.sessions.push(s);
    this.armReconcile(s);
    this.sessionsChanged.fire();
    this.changed.fire(undefined);
    this.updateStatusBar();
  }

  private remove(s: Session): void {
    s.ended = true;
    removeSessionRecord(sessionRecordDir(), s.record.id);
    if (s.reconcileTimer) clearInterval(s.reconcileTimer);
    const i = this.sessions.indexOf(s);
    if (i >= 0) this.sessions.splice(i, 1);
    this.save();
    this.sessionsChanged.fire();
    this.changed.fire(undefined);
    this.updateStatusBar();
  }

  private async poll(): Promise<void> {
    for (const s of [...this.sessions]) {
      try {
        await s.refresh();
        s.pollTrace();
      } catch (e) {
        if (!isAlive(s.record.pid)) {
          this.log.appendLine(`session on ${s.record.image}: the server (pid ${s.record.pid}) is gone: ${(e as Error).message}`);
          s.pollTrace();
          this.remove(s);
          void vscode.window.showWarningMessage(`The emulator session on ${s.label} stopped on its own; see ${s.record.log}.`);
        }
      }
    }
    this.changed.fire(undefined);
    this.updateStatusBar();
  }

  private updateStatusBar(): void {
    if (this.sessions.length === 0) {
      this.statusBar.hide();
      return;
    }
    const rate = this.sessions.reduce((a, s) => a + s.writes.rate, 0);
    this.statusBar.text = `$(server-process) ${this.sessions.length} session${this.sessions.length > 1 ? 's' : ''} · ${rate.toFixed(0)} writes/s`;
    this.statusBar.tooltip = this.sessions.map((s) => `${s.label} (${s.record.mode}) on ${s.record.url}`).join('\n');
    this.statusBar.show();
  }

  // ---- starting ------------------------------------------------------------------------------

  private async startInteractive(uri?: vscode.Uri): Promise<void> {
    if (!vscode.workspace.isTrusted) {
      void vscode.window.showWarningMessage('An emulator session writes disk images, so it needs a trusted workspace.');
      return;
    }
    const image = await this.commands.targetImage(uri, 'Image to serve to the emulator');
    if (!image) return;
    if (this.sessionFor(image)) throw new Error(`${nodePath.basename(image)} is already served by a running session.`);
    const mode = await vscode.window.showQuickPick([
      { label: 'Undo session', description: 'writes go to a new child; the image is not written', mode: 'undo' as SessionMode },
      { label: 'Persistent', description: `writes go into ${nodePath.basename(image)} itself`, mode: 'persistent' as SessionMode },
    ], { title: `Start Emulator Session on ${nodePath.basename(image)}`, placeHolder: 'Where do the emulator\'s writes go?' });
    if (!mode) return;
    const every = await vscode.window.showInputBox({
      title: 'Automatic snapshots',
      prompt: 'Freeze the disk and continue in a new child this often (e.g. 10m, 30s); empty for none',
      value: '',
      validateInput: (v) => { try { parseDurationSetting(v, 'interval'); return null; } catch (e) { return (e as Error).message; } },
    });
    if (every === undefined) return;
    const s = await this.start(image, mode.mode, every.trim() || null);
    const pick = await vscode.window.showInformationMessage(`Serving ${s.label} on ${s.record.url}`, 'Copy QEMU command line', 'Launch QEMU', 'Copy URL');
    if (pick === 'Copy QEMU command line') await this.copyQemu(s);
    else if (pick === 'Launch QEMU') await this.launchQemu(s);
    else if (pick === 'Copy URL') await vscode.env.clipboard.writeText(s.record.url);
  }

  /** Starts `diskimg serve` detached, waits for its "serving … on URL" line. */
  async start(image: string, mode: SessionMode, snapshotEvery: string | null): Promise<Session> {
    const abs = nodePath.resolve(image);
    const dir = nodePath.join(this.context.globalStorageUri.fsPath, 'sessions');
    mkdirSync(dir, { recursive: true });
    const id = `${Date.now().toString(36)}-${process.pid}`;
    // Unix socket paths are limited to ~107 bytes: keep them in the temp folder.
    const sockDir = sessionRecordDir();
    mkdirSync(sockDir, { recursive: true, mode: 0o700 });
    const record: SessionRecord = {
      id, image: abs, mode,
      control: nodePath.join(sockDir, `${id}.ctl`),
      trace: nodePath.join(dir, `${id}.trace.jsonl`),
      log: nodePath.join(dir, `${id}.log`),
      url: '', pid: 0, started: new Date().toISOString(), snapshotEvery,
    };
    const socket = nodePath.join(sockDir, `${id}.nbd`);
    const cli = nodePath.join(this.context.extensionPath, 'dist', 'cli.js');
    this.log.appendLine(`session: ${process.execPath} ${cli} ${serveArgs(record, socket).join(' ')} (log ${record.log})`);
    const { pid, url } = await spawnServe(record, cli, socket);
    record.pid = pid;
    record.url = url;
    const s = new Session(record);
    await s.refresh();
    writeSessionRecord(sessionRecordDir(), record);
    this.add(s);
    this.save();
    this.log.appendLine(`session: serving ${abs} on ${record.url} (${mode}${snapshotEvery ? `, snapshot every ${snapshotEvery}` : ''})`);
    return s;
  }

  // ---- actions -------------------------------------------------------------------------------

  private qemuArgv(s: Session): string[] {
    const cfg = vscode.workspace.getConfiguration('diskImageInspector.qemu');
    return qemuArgv(cfg.get<string>('path') || 'qemu-system-x86_64', splitArgs(cfg.get('args')), s.record.url);
  }

  async copyQemu(s: Session | undefined): Promise<void> {
    if (!s) throw new Error('Choose a session in the Sessions view.');
    const line = shellLine(this.qemuArgv(s));
    await vscode.env.clipboard.writeText(line);
    void vscode.window.showInformationMessage(`Copied: ${line}`);
  }

  async launchQemu(s: Session | undefined): Promise<void> {
    if (!s) throw new Error('Choose a session in the Sessions view.');
    const [exe, ...args] = this.qemuArgv(s);
    if (!findExecutable(exe)) {
      throw new Error(`${exe} was not found (set diskImageInspector.qemu.path to QEMU's system emulator). The command line is: ${shellLine(this.qemuArgv(s))}`);
    }
    s.qemuTerminal = vscode.window.createTerminal({ name: `QEMU: ${s.label}`, shellPath: exe, shellArgs: args });
    s.qemuTerminal.show();
  }

  async snapshotNow(s: Session | undefined): Promise<void> {
    if (!s) throw new Error('Choose a session in the Sessions view.');
    const reply = await s.control({ command: 'snapshot' }, 600_000);
    if (typeof reply.error === 'string') throw new Error(reply.error);
    await s.refresh();
    this.changed.fire(undefined);
    void vscode.window.showInformationMessage(`Snapshot taken; ${s.label}'s writes continue in ${nodePath.basename(String(reply.top))}.`);
  }

  private async revert(item?: SessionItem): Promise<void> {
    const s = item?.session;
    const snap = item?.snapshot;
    if (!s || !snap || !s.status) throw new Error('Choose a snapshot in the Sessions view.');
    if (s.status.clients > 0) {
      throw new Error(`${s.status.clients} client${s.status.clients > 1 ? 's are' : ' is'} connected to ${s.label}: stop the emulator before reverting.`);
    }
    const doomed = revertDiscards(s.status, snap.path).map((p) => nodePath.basename(p));
    const ok = await vscode.window.showWarningMessage(`Revert ${s.label} to the snapshot of ${new Date(snap.created).toLocaleTimeString()}?`,
      { modal: true, detail: `Deletes ${doomed.join(', ')} (every write since that snapshot) and continues in a new child of ${nodePath.basename(snap.path)}.` },
      'Revert');
    if (ok !== 'Revert') return;
    const reply = await s.control({ command: 'revert', snapshot: snap.path }, 600_000);
    if (typeof reply.error === 'string') throw new Error(reply.error);
    await s.refresh();
    this.changed.fire(undefined);
    void vscode.window.showInformationMessage(`Reverted ${s.label}: deleted ${doomed.join(', ')}.`);
  }

  /** Ends a session: for an undo session, the undo question first; then stop, then discard or merge with progress. */
  async end(s: Session | undefined, why?: string, preset?: UndoChoice): Promise<void> {
    if (!s) throw new Error('Choose a session in the Sessions view.');
    await s.refresh().catch(() => undefined);
    const st = s.status;
    let choice: UndoChoice = 'keep';
    if (s.record.mode === 'undo' && st) {
      if (preset) {
        choice = preset;
      } else {
        const c = undoConsequences(st);
        const written = formatBytesShort(st.bytesWritten);
        const pick = await vscode.window.showWarningMessage(
          `${why ? `${why} ` : ''}End the session on ${s.label}: what happens to its ${written} of writes?`,
          { modal: true, detail: `${c.keep}\n${c.discard}\n${c.merge}` },
          'Keep the changes', 'Discard them', 'Merge into the parent');
        if (!pick) return;
        choice = pick === 'Discard them' ? 'discard' : pick === 'Merge into the parent' ? 'merge' : 'keep';
      }
    } else if (!preset) {
      const ok = await vscode.window.showWarningMessage(`Stop serving ${s.label}${st?.clients ? ` (${st.clients} client(s) connected)` : ''}?`, { modal: true }, 'End Session');
      if (ok !== 'End Session') return;
    }
    const reply = await s.control({ command: 'stop', onExit: s.record.mode === 'undo' ? 'keep' : undefined }, 600_000);
    if (typeof reply.error === 'string') throw new Error(reply.error);
    s.pollTrace();
    this.remove(s);
    const outcome = (reply.exports as Array<{ chain: string[]; top: string; error?: string }>)[0];
    if (s.record.mode !== 'undo' || !st) {
      void vscode.window.showInformationMessage(`Stopped serving ${s.label}.`);
      return;
    }
    const layers = sessionLayers({ chain: outcome.chain, session: st.session });
    if (choice === 'keep') {
      void vscode.window.showInformationMessage(`Session ended; kept ${layers.map((l) => nodePath.basename(l)).join(', ')}.`);
      return;
    }
    const r = await this.commands.withProgress(choice === 'discard' ? `Discarding the session on ${s.label}` : `Merging the session into ${s.label}`,
      (opts) => applyUndoChoice(choice, layers, st.image, opts));
    void vscode.window.showInformationMessage(choice === 'discard'
      ? `Discarded ${r.deleted.map((l) => nodePath.basename(l)).join(', ')}; ${s.label} is as before the session.`
      : `Merged ${r.deleted.map((l) => nodePath.basename(l)).join(', ')} into ${nodePath.basename(r.mergedInto ?? st.image)}.`);
    await this.commands.reloadAll([st.image, ...layers]);
  }

  /** `diskImageInspector.session.reconcileEvery`: a periodic "the session holds N: merge, discard or keep going?". */
  private armReconcile(s: Session): void {
    let every: number | null = null;
    try {
      every = parseDurationSetting(vscode.workspace.getConfiguration('diskImageInspector.session').get<string>('reconcileEvery') ?? '', 'diskImageInspector.session.reconcileEvery');
    } catch (e) {
      void vscode.window.showWarningMessage((e as Error).message);
    }
    if (!every || s.record.mode !== 'undo') return;
    s.reconcileTimer = setInterval(() => void this.reconcilePrompt(s), every);
  }

  private async reconcilePrompt(s: Session): Promise<void> {
    if (s.ended || !s.status) return;
    const layers = sessionLayers(s.status);
    const pick = await vscode.window.showInformationMessage(
      `The session on ${s.label} holds ${formatBytesShort(s.status.bytesWritten)} of writes in ${layers.length} layer${layers.length > 1 ? 's' : ''} since ${new Date(s.record.started).toLocaleTimeString()}.`,
      'Merge now', 'Discard', 'Keep going');
    if (pick === 'Merge now') await this.end(s, undefined, 'merge');
    else if (pick === 'Discard') await this.end(s, undefined, 'discard');
  }

  // ---- tree ----------------------------------------------------------------------------------

  getTreeItem(e: SessionItem): vscode.TreeItem {
    return e;
  }

  getChildren(e?: SessionItem): SessionItem[] {
    if (!e) return this.sessions.map((s) => sessionItem(s));
    return e.children ?? [];
  }

  dispose(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

export class SessionItem extends vscode.TreeItem {
  session?: Session;
  snapshot?: { path: string; created: string };
  children?: SessionItem[];
}

function leaf(label: string, description?: string, tooltip?: string): SessionItem {
  const i = new SessionItem(label, vscode.TreeItemCollapsibleState.None);
  i.description = description;
  i.tooltip = tooltip;
  return i;
}

function sessionItem(s: Session): SessionItem {
  const st = s.status;
  const item = new SessionItem(s.label, vscode.TreeItemCollapsibleState.Expanded);
  item.session = s;
  item.id = `session:${s.record.id}`;
  item.contextValue = 'diskImageSession';
  item.description = `${s.record.mode === 'undo' ? 'undo' : 'persistent'} · ${s.record.url}`;
  item.iconPath = new vscode.ThemeIcon('server-process');
  item.tooltip = `${s.record.image}\n${s.record.url}\nserver pid ${s.record.pid}, log ${s.record.log}`;
  const kids: SessionItem[] = [];
  kids.push(leaf('Export', st?.name ?? '', s.record.url));
  kids.push(leaf('Clients', String(st?.clients ?? 0)));
  kids.push(leaf('Read / written', `${formatBytesShort(st?.bytesRead ?? 0)} / ${formatBytesShort(st?.bytesWritten ?? 0)}`));
  kids.push(leaf('Writes/s', s.writes.rate.toFixed(1)));
  const chain = new SessionItem('Chain', vscode.TreeItemCollapsibleState.Collapsed);
  chain.id = `session:${s.record.id}:chain`;
  chain.description = `${st?.chain.length ?? 0} layers`;
  chain.children = (st?.chain ?? []).map((p, i) => {
    const l = leaf(nodePath.basename(p), i === 0 ? 'writes go here' : p === st?.image ? 'the image' : undefined, p);
    l.resourceUri = vscode.Uri.file(p);
    l.command = { command: 'vscode.open', title: 'Open', arguments: [vscode.Uri.file(p)] };
    return l;
  });
  kids.push(chain);
  const snaps = new SessionItem('Snapshots', vscode.TreeItemCollapsibleState.Expanded);
  snaps.id = `session:${s.record.id}:snapshots`;
  snaps.description = st?.snapshots.length ? String(st.snapshots.length) : 'none';
  snaps.children = (st?.snapshots ?? []).map((sn) => {
    const l = leaf(new Date(sn.created).toLocaleTimeString(), nodePath.basename(sn.path), `${sn.path}\nfrozen ${sn.created}`);
    l.session = s;
    l.snapshot = sn;
    l.contextValue = 'diskImageSessionSnapshot';
    l.iconPath = new vscode.ThemeIcon('history');
    return l;
  });
  kids.push(snaps);
  item.children = kids;
  return item;
}

/** True when `exe` is a path to a file, or a name found on the PATH. */
function findExecutable(exe: string): boolean {
  if (exe.includes('/')) return existsSync(exe);
  for (const dir of (process.env.PATH ?? '').split(nodePath.delimiter)) {
    if (dir && existsSync(nodePath.join(dir, exe))) {
      try { if (statSync(nodePath.join(dir, exe)).isFile()) return true; } catch { /* keep looking */ }
    }
  }
  return false;
}
