import { readFileSync, writeFileSync } from 'fs';
import * as nodePath from 'path';
import * as vscode from 'vscode';
import { HostMessage, WebviewMessage } from '../protocol';
import { TraceIndex, TraceRecord, changesData } from '../serve/traceIndex';
import { ImageDocument } from './imageDocument';
import { Session, SessionManager } from './sessions';

const DENSITY_BINS = 600;

interface Source {
  index: TraceIndex;
  label: string;
  session: Session | null;
  sub: vscode.Disposable | null;
}

type Post = (m: HostMessage) => void;

/**
 * The editor's Timeline and live blocks, on the host: one TraceIndex per open image, fed by the
 * session serving that image (its trace, as lines arrive) or by a trace file opened with
 * "Open Trace…". The webview gets densities and query answers, never the whole trace.
 */
export class TimelineHub {
  private readonly sources = new Map<ImageDocument, Source>();
  private readonly posts = new Map<ImageDocument, Set<Post>>();

  constructor(private readonly sessions: SessionManager, private readonly log: vscode.OutputChannel) {
    sessions.onDidChangeSessions(() => {
      for (const doc of this.posts.keys()) this.attachSession(doc);
    });
  }

  /** A panel of `doc` is ready: remember how to reach it and send what the timeline has. */
  panelReady(doc: ImageDocument, post: Post): vscode.Disposable {
    let set = this.posts.get(doc);
    if (!set) this.posts.set(doc, (set = new Set()));
    set.add(post);
    this.attachSession(doc);
    const src = this.sources.get(doc);
    if (src) post(this.summary(src));
    return new vscode.Disposable(() => {
      set!.delete(post);
      if (set!.size === 0) {
        this.posts.delete(doc);
        this.sources.get(doc)?.sub?.dispose();
        this.sources.delete(doc);
      }
    });
  }

  private broadcast(doc: ImageDocument, m: HostMessage): void {
    for (const p of this.posts.get(doc) ?? []) p(m);
  }

  private grid(doc: ImageDocument): { blockSize: number; blockCount: number } {
    const o = doc.current().model.overview;
    return { blockSize: o.blockSize, blockCount: o.blockCount };
  }

  /** Follows the session that serves this image (or one of its layers), if any. */
  private attachSession(doc: ImageDocument): void {
    const session = this.sessions.sessionFor(doc.path) ?? null;
    const cur = this.sources.get(doc);
    if (cur?.session === session && session) return;
    if (!session) {
      if (cur?.session) {
        cur.sub?.dispose();
        cur.sub = null;
        cur.session = null;
        this.broadcast(doc, this.summary(cur));
      }
      return;
    }
    cur?.sub?.dispose();
    const { blockSize, blockCount } = this.grid(doc);
    const index = session.indexWhole(blockSize, blockCount);
    const src: Source = { index, label: `session on ${session.label} (${session.record.trace})`, session, sub: null };
    src.sub = session.onRecords((records) => this.onLive(doc, src, records));
    this.sources.set(doc, src);
    this.broadcast(doc, this.summary(src));
  }

  private onLive(doc: ImageDocument, src: Source, records: TraceRecord[]): void {
    const { blockSize, blockCount } = this.grid(doc);
    const hit = new Set<number>();
    for (const r of records) {
      src.index.add(r);
      if (!changesData(r.op) || r.length === 0) continue;
      const last = Math.min(blockCount - 1, Math.floor((r.offset + r.length - 1) / blockSize));
      for (let b = Math.floor(r.offset / blockSize); b <= last; b++) hit.add(b);
    }
    if (hit.size) this.broadcast(doc, { type: 'liveWrites', blocks: Uint32Array.from(hit), writesPerSecond: src.session?.writes.rate ?? 0 });
    // Batches come once per trace poll (a second apart): every one updates the axis, so the last
    // writes before the guest goes quiet (and a new snapshot mark) are never left out.
    this.broadcast(doc, this.summary(src));
  }

  private summary(src: Source): HostMessage {
    const span = src.index.timeRange ?? { from: 0, to: 0 };
    const to = span.to > span.from ? span.to : span.from + 1;
    const d = src.index.density(span.from, to, DENSITY_BINS);
    // The server marks each snapshot in the trace while requests are held: exact on the axis,
    // for a live session and for a trace file alike.
    const snapshots = src.index.snapshots.map((m, i) => ({ label: `#${i + 1}`, t: m.t, layer: m.layer }));
    return { type: 'timeline', source: src.label, from: span.from, to, reads: d.reads, writes: d.writes, records: src.index.size, live: !!src.session, snapshots };
  }

  /** "Open Trace…": index a trace file written by `diskimg serve --trace` for this image's timeline. */
  async openTrace(doc: ImageDocument): Promise<void> {
    const picked = await vscode.window.showOpenDialog({ title: 'Trace written by diskimg serve --trace', canSelectMany: false, filters: { 'Trace (JSON lines)': ['jsonl', 'trace', 'json', 'log', 'txt'], 'All files': ['*'] } });
    const file = picked?.[0]?.fsPath;
    if (!file) return;
    const { blockSize, blockCount } = this.grid(doc);
    const started = Date.now();
    const index = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Indexing ${nodePath.basename(file)}` }, async () => {
      const idx = new TraceIndex({ blockSize, blockCount });
      idx.addLines(readFileSync(file, 'utf8').split('\n'));
      idx.blocksWritten(0, 0); // sorts now, not on the first brush
      return idx;
    });
    this.log.appendLine(`${file}: ${index.size} trace records indexed in ${Date.now() - started} ms`);
    this.sources.get(doc)?.sub?.dispose();
    const src: Source = { index, label: file, session: null, sub: null };
    this.sources.set(doc, src);
    this.broadcast(doc, this.summary(src));
    this.broadcast(doc, { type: 'showView', view: 'timeline' });
  }

  async handle(doc: ImageDocument, msg: WebviewMessage, post: Post): Promise<void> {
    const src = this.sources.get(doc);
    if (!src) throw new Error('No trace: start an emulator session on this image or use Open Trace….');
    switch (msg.type) {
      case 'timelineQuery': {
        // Packed: 2 bytes a written block (+ a bitmap of the grid when dense) instead of 12.
        const p = src.index.brushPacked(msg.from, msg.to);
        post({ type: 'timelineRange', requestId: msg.requestId, from: msg.from, to: msg.to, blocks: p.blocks, lastWrite: new Float64Array(0), records: p.records, ranks: p.ranks, written: p.written });
        break;
      }
      case 'timelineBlock': {
        const writes = src.index.writesOfBlock(msg.block, msg.from, msg.to).map((w) => ({ t: w.t, offset: w.offset, length: w.length, layer: w.layer }));
        post({ type: 'timelineWrites', requestId: msg.requestId, block: msg.block, writes });
        break;
      }
      case 'timelineExport': {
        const target = await vscode.window.showSaveDialog({
          title: 'Export the selected writes as JSON',
          defaultUri: vscode.Uri.file(nodePath.join(nodePath.dirname(doc.path), `${nodePath.basename(doc.path)}.writes-${msg.from.toFixed(3)}-${msg.to.toFixed(3)}.json`)),
          filters: { JSON: ['json'] },
        });
        if (!target) return;
        const json = src.index.exportJson(msg.from, msg.to);
        writeFileSync(target.fsPath, `${JSON.stringify(json, null, 1)}\n`);
        void vscode.window.showInformationMessage(`Exported ${json.writes.length} writes to ${nodePath.basename(target.fsPath)}.`);
        break;
      }
      default:
        break;
    }
  }
}
