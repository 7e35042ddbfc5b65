import { existsSync, readdirSync } from 'fs';
import * as nodePath from 'path';
import * as vscode from 'vscode';
import { createChild } from '../chain/createChild';
import { exportRaw } from '../chain/export';
import { OperationOptions } from '../chain/progress';
import { parseSize } from '../cli/units';
import { CancelledError } from '../format/errors';
import { createImage } from '../format/vhd/create';
import { ImageEditorProvider, VIEW_TYPE } from './editorProvider';

/**
 * The "Disk Image" commands. Each is thin over a core function; results and errors are one plain
 * sentence in a notification, details go to the output channel. Commands that write refuse in an
 * untrusted workspace (they are also disabled there through `enablement`).
 */
export class Commands {
  constructor(private readonly provider: ImageEditorProvider, private readonly log: vscode.OutputChannel) {}

  register(context: vscode.ExtensionContext): void {
    const reg = (id: string, fn: (...args: any[]) => Promise<unknown>) => context.subscriptions.push(vscode.commands.registerCommand(id, async (...args: any[]) => {
      try {
        await fn(...args);
      } catch (e) {
        this.fail(id, e);
      }
    }));
    reg('diskImageInspector.open', (uri?: vscode.Uri) => this.open(uri));
    reg('diskImageInspector.createImage', (uri?: vscode.Uri) => this.createImage(uri));
    reg('diskImageInspector.createChild', (uri?: vscode.Uri) => this.createChild(uri));
    reg('diskImageInspector.export', (uri?: vscode.Uri) => this.exportRaw(uri));
    reg('diskImageInspector.showLog', async () => this.log.show());
  }

  // ---- helpers -----------------------------------------------------------------------------

  private fail(id: string, e: unknown): void {
    if (e instanceof CancelledError) {
      void vscode.window.showInformationMessage('Cancelled; nothing was changed.');
      return;
    }
    const err = e as Error;
    this.log.appendLine(`[${new Date().toISOString()}] ${id} failed: ${err?.stack ?? String(e)}`);
    void vscode.window.showErrorMessage(`${sentence(err?.message ?? String(e))}`, 'Show Details').then((pick) => {
      if (pick) this.log.show(true);
    });
  }

  private requireTrust(what: string): boolean {
    if (vscode.workspace.isTrusted) return true;
    void vscode.window.showWarningMessage(`${what} changes files on disk, so it needs a trusted workspace.`);
    return false;
  }

  /** The image a command applies to: the argument (explorer, editor title), the focused editor, or a pick. */
  async targetImage(uri: vscode.Uri | undefined, title: string): Promise<string | undefined> {
    if (uri instanceof vscode.Uri) return uri.fsPath;
    const active = this.provider.activeDocument();
    if (active) return active.path;
    const picked = await vscode.window.showOpenDialog({ title, canSelectMany: false, filters: { 'Disk images': ['vhd', 'avhd'] } });
    return picked?.[0]?.fsPath;
  }

  /** A path to create, suggested next to `near`; refuses existing files. */
  async askNewPath(title: string, suggestion: string): Promise<string | undefined> {
    const base = nodePath.basename(suggestion);
    const dot = base.lastIndexOf('.');
    const start = suggestion.length - base.length;
    const value = await vscode.window.showInputBox({
      title,
      prompt: 'Path of the new file',
      value: suggestion,
      valueSelection: [start, start + (dot > 0 ? dot : base.length)],
      validateInput: (v) => (!v.trim() ? 'Enter a path.' : existsSync(v.trim()) ? 'That file already exists.' : !existsSync(nodePath.dirname(v.trim())) ? 'That folder does not exist.' : null),
    });
    return value?.trim() || undefined;
  }

  /** Runs a long core operation in a cancellable notification with progress in percent. */
  async withProgress<T>(title: string, fn: (opts: OperationOptions) => Promise<T>): Promise<T> {
    return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
      const abort = new AbortController();
      token.onCancellationRequested(() => abort.abort());
      let last = 0;
      return fn({
        signal: abort.signal,
        onProgress: (done, total) => {
          const pct = total > 0 ? Math.floor((done / total) * 100) : 0;
          if (pct > last) { progress.report({ increment: pct - last, message: `${pct}%` }); last = pct; }
        },
      });
    });
  }

  async reloadAll(paths: string[]): Promise<void> {
    const set = new Set(paths.map((p) => nodePath.resolve(p)));
    for (const doc of this.provider.allDocuments()) {
      const chain = doc.currentChain();
      if (chain.layers.some((l) => set.has(nodePath.resolve(l.path))) || set.has(doc.path)) await doc.reload();
    }
  }

  private async openInEditor(path: string): Promise<void> {
    await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(path), VIEW_TYPE);
  }

  // ---- commands ----------------------------------------------------------------------------

  private async open(uri?: vscode.Uri): Promise<void> {
    const path = await this.targetImage(uri, 'Open Disk Image');
    if (path) await this.openInEditor(path);
  }

  private async createImage(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Creating a disk image')) return;
    const folder = uri instanceof vscode.Uri ? (existsSync(uri.fsPath) && !/\.a?vhd$/i.test(uri.fsPath) ? uri.fsPath : nodePath.dirname(uri.fsPath))
      : vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd();
    const path = await this.askNewPath('Create Disk Image: file', nodePath.join(folder, 'disk.vhd'));
    if (!path) return;
    const type = await vscode.window.showQuickPick([
      { label: 'dynamic', description: 'grows as data is written' },
      { label: 'fixed', description: 'all space allocated now' },
    ], { title: 'Create Disk Image: type' });
    if (!type) return;
    const sizeText = await vscode.window.showInputBox({
      title: 'Create Disk Image: virtual size', prompt: 'N, NK, NM, NG or NT (rounded up to an exact CHS size)', value: '1G',
      validateInput: (v) => { try { parseSize(v, 'size'); return null; } catch (e) { return (e as Error).message; } },
    });
    if (!sizeText) return;
    const size = await createImage(path, { size: parseSize(sizeText, 'size'), type: type.label as 'dynamic' | 'fixed' });
    this.log.appendLine(`created ${type.label} image ${path} of ${size} bytes`);
    void vscode.window.showInformationMessage(`Created ${type.label} image ${nodePath.basename(path)} (${size} bytes).`);
    await this.openInEditor(path);
  }

  private async createChild(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Creating a differencing child')) return;
    const parent = await this.targetImage(uri, 'Create Differencing Child: parent image');
    if (!parent) return;
    const child = await this.askNewPath(`Create Differencing Child of ${nodePath.basename(parent)}`, freeName(parent, '-child'));
    if (!child) return;
    await createChild(parent, child);
    this.log.appendLine(`created differencing child ${child} of ${parent}`);
    void vscode.window.showInformationMessage(`Created ${nodePath.basename(child)}, a differencing child of ${nodePath.basename(parent)}.`);
    await this.openInEditor(child);
  }

  private async exportRaw(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Export')) return;
    const image = await this.targetImage(uri, 'Export: image');
    if (!image) return;
    const out = await this.askNewPath(`Export ${nodePath.basename(image)} as a raw disk`, freeName(image, '', '.raw'));
    if (!out) return;
    await this.withProgress(`Exporting ${nodePath.basename(image)}`, (opts) => exportRaw(image, out, opts));
    this.log.appendLine(`exported ${image} to ${out}`);
    void vscode.window.showInformationMessage(`Exported the whole virtual disk of ${nodePath.basename(image)} to ${nodePath.basename(out)}.`);
  }
}

/** `dir/name<suffix><ext>`, numbered when taken. */
export function freeName(near: string, suffix: string, ext?: string): string {
  const dir = nodePath.dirname(near);
  const e = ext ?? nodePath.extname(near) ?? '.vhd';
  const stem = nodePath.basename(near, nodePath.extname(near));
  const taken = new Set(safeList(dir));
  for (let i = 1; ; i++) {
    const name = `${stem}${suffix}${i === 1 ? '' : `-${i}`}${e}`;
    if (!taken.has(name)) return nodePath.join(dir, name);
  }
}

function safeList(dir: string): string[] {
  try { return readdirSync(dir); } catch { return []; }
}

/** Core messages are "file: what (structure at offset)"; show them as one sentence. */
export function sentence(message: string): string {
  const m = message.trim();
  return /[.!?]$/.test(m) ? m : `${m}.`;
}
