import { FSWatcher, watch } from 'fs';
import * as vscode from 'vscode';
import { Chain, openChain } from '../chain/chain';
import { BlockData, changedBlocks, DiffData, ImageModel } from '../protocol';
import { buildBlockData, buildImageModel } from './model';

export interface DocumentState {
  model: ImageModel;
  blocks: BlockData;
}

/**
 * The open image: its chain, opened read-only and tolerant of broken links. Bytes change only through
 * commands (or other programs); the document watches every file of the chain and reloads within a
 * second of a change, telling its editors which blocks changed.
 */
export class ImageDocument implements vscode.CustomDocument {
  private chain: Chain | null = null;
  private state: DocumentState | null = null;
  private watchers: FSWatcher[] = [];
  private reloadTimer: NodeJS.Timeout | null = null;
  private reloading: Promise<void> | null = null;
  private disposed = false;
  lastDiff: DiffData | null = null;
  /** How long the last load took, by step (shown in the log; sent to the webview for tests). */
  timings = { openMs: 0, modelMs: 0, blocksMs: 0, openedAt: 0 };
  private readonly changed = new vscode.EventEmitter<{ state: DocumentState; changed: Uint32Array }>();
  readonly onDidChangeState = this.changed.event;
  private readonly failed = new vscode.EventEmitter<string>();
  readonly onDidFail = this.failed.event;

  /** The first load: settles when the chain, the model and the block map are ready (or failed). */
  readonly loaded: Promise<DocumentState>;

  private constructor(readonly uri: vscode.Uri, private readonly canWrite: () => boolean) {
    this.loaded = this.load();
    // A failure is reported where the document is used (the editor shows it); not unhandled here.
    this.loaded.catch(() => undefined);
  }

  /**
   * Starts opening the image and returns at once: the editor sets its webview's HTML while the chain
   * is opened and mapped, so the page loads in parallel with the host's work (see `loaded`).
   */
  static open(uri: vscode.Uri, canWrite: () => boolean): ImageDocument {
    return new ImageDocument(uri, canWrite);
  }

  get path(): string {
    return this.uri.fsPath;
  }

  current(): DocumentState {
    if (!this.state) throw new Error(`${this.path}: the image is still being opened`);
    return this.state;
  }

  currentChain(): Chain {
    if (!this.chain) throw new Error(`${this.path}: the image is still being opened`);
    return this.chain;
  }

  private async load(): Promise<DocumentState> {
    const t0 = Date.now();
    // A parent on a server is read through its cache next to the child: the editor reads it often.
    const chain = await openChain(this.path, { tolerant: true, cache: true });
    try {
      const t1 = Date.now();
      const model = await buildImageModel(chain, this.canWrite());
      const t2 = Date.now();
      const blocks = await buildBlockData(chain);
      this.timings = { openMs: t1 - t0, modelMs: t2 - t1, blocksMs: Date.now() - t2, openedAt: t0 };
      // Closed while it was loading (the editor closed at once): keep nothing open.
      if (this.disposed) { await chain.close(); return { model, blocks }; }
      const old = this.chain;
      this.chain = chain;
      this.state = { model, blocks };
      if (old) await old.close();
      this.watch();
      return this.state;
    } catch (e) {
      await chain.close();
      throw e;
    }
  }

  /** Re-reads the chain now (after a command changed it, or a watcher fired). */
  async reload(): Promise<void> {
    if (this.disposed) return;
    if (this.reloading) { await this.reloading; }
    const before = this.state;
    this.reloading = (async () => {
      try {
        const next = await this.load();
        const diff = before ? changedBlocks(before.blocks, next.blocks) : new Uint32Array(0);
        this.changed.fire({ state: next, changed: diff });
      } catch (e) {
        this.failed.fire((e as Error).message);
      }
    })();
    try { await this.reloading; } finally { this.reloading = null; }
  }

  private watch(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (!this.chain) return;
    for (const layer of this.chain.layers) {
      try {
        const w = watch(layer.path, { persistent: false }, () => this.scheduleReload());
        w.on('error', () => this.scheduleReload());
        this.watchers.push(w);
      } catch {
        // A file that cannot be watched is still shown; it just will not refresh by itself.
      }
    }
  }

  private scheduleReload(): void {
    if (this.disposed) return;
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    // Writers append in bursts: wait for a short quiet spell, well inside the one-second promise.
    this.reloadTimer = setTimeout(() => { this.reloadTimer = null; void this.reload(); }, 250);
  }

  dispose(): void {
    this.disposed = true;
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
    void this.chain?.close();
    this.chain = null;
    this.changed.dispose();
    this.failed.dispose();
  }
}
