import { existsSync } from 'fs';
import * as nodePath from 'path';
import * as vscode from 'vscode';
import { openChain } from '../chain/chain';
import { checkImage } from '../chain/check';
import { createChild } from '../chain/createChild';
import { diffImages } from '../chain/diff';
import { discardChild } from '../chain/discard';
import { ExportFormat, exportImage } from '../chain/export';
import { mergeChild, MergePlan, planMerge } from '../chain/merge';
import { OperationOptions } from '../chain/progress';
import { repairImage } from '../chain/repair';
import { reparent } from '../chain/reparent';
import { snapshot } from '../chain/snapshot';
import { DiskImageError } from '../format/errors';
import { freeName, safeList, sentence, toDiffData } from './commandHelpers';
import { parseSize } from '../cli/units';
import { CancelledError } from '../format/errors';
import { createImage, FORMATS, imageExtensions } from '../format/registry';
import { ImageEditorProvider, VIEW_TYPE } from './editorProvider';

/** Extensions of every registered format, without dots, for file pickers. */
const PICKER_EXTENSIONS = imageExtensions().map((e) => e.slice(1));
/** True for a file name some format uses (pickers and folder lists only; formats are told by content). */
function hasImageExtension(name: string): boolean {
  return imageExtensions().includes(nodePath.extname(name).toLowerCase());
}

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
    reg('diskImageInspector.createChild', (uri?: vscode.Uri, target?: vscode.Uri) => this.createChild(uri, target));
    reg('diskImageInspector.snapshot', (uri?: vscode.Uri) => this.snapshot(uri));
    reg('diskImageInspector.mergeIntoParent', (uri?: vscode.Uri) => this.merge(uri, false));
    reg('diskImageInspector.mergeDownTo', (uri?: vscode.Uri) => this.merge(uri, true));
    reg('diskImageInspector.discardChild', (uri?: vscode.Uri) => this.discard(uri));
    reg('diskImageInspector.diffWith', (uri?: vscode.Uri, other?: vscode.Uri) => this.diffWith(uri, other));
    reg('diskImageInspector.checkImage', (uri?: vscode.Uri) => this.check(uri));
    reg('diskImageInspector.repairImage', (uri?: vscode.Uri) => this.repair(uri));
    reg('diskImageInspector.relinkParent', (uri?: vscode.Uri, parent?: vscode.Uri) => this.relink(uri, parent));
    reg('diskImageInspector.export', (uri?: vscode.Uri) => this.exportImage(uri));
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
    const picked = await vscode.window.showOpenDialog({ title, canSelectMany: false, filters: { 'Disk images': PICKER_EXTENSIONS } });
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
    const folder = uri instanceof vscode.Uri ? (existsSync(uri.fsPath) && !hasImageExtension(uri.fsPath) ? uri.fsPath : nodePath.dirname(uri.fsPath))
      : vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd();
    const path = await this.askNewPath('Create Disk Image: file', nodePath.join(folder, `disk${FORMATS[0].extensions[0]}`));
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

  /** `target` (from scripts and tests) skips the question for the new file's path. */
  private async createChild(uri?: vscode.Uri, target?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Creating a differencing child')) return;
    const parent = await this.targetImage(uri, 'Create Differencing Child: parent image');
    if (!parent) return;
    const child = target instanceof vscode.Uri ? target.fsPath : await this.askNewPath(`Create Differencing Child of ${nodePath.basename(parent)}`, freeName(parent, '-child'));
    if (!child) return;
    await createChild(parent, child);
    this.log.appendLine(`created differencing child ${child} of ${parent}`);
    void vscode.window.showInformationMessage(`Created ${nodePath.basename(child)}, a differencing child of ${nodePath.basename(parent)}.`);
    await this.openInEditor(child);
  }

  private async exportImage(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Export')) return;
    const image = await this.targetImage(uri, 'Export: image');
    if (!image) return;
    const pick = await vscode.window.showQuickPick<{ label: string; description: string; format: ExportFormat; ext: string }>([
      { label: 'Raw disk image', description: 'the whole virtual disk, flat (sparse where zero)', format: 'raw', ext: '.raw' },
      ...FORMATS.flatMap((f) => f.creatableTypes.map((type) => ({
        label: `${type === 'dynamic' ? 'Dynamic' : 'Fixed'} ${f.name.toUpperCase()}`,
        description: type === 'dynamic' ? 'one image, only non-zero blocks allocated' : 'one image, all space allocated',
        format: `${f.name}-${type}`,
        ext: f.extensions[0],
      }))),
    ], { title: `Export ${nodePath.basename(image)} (the whole chain, flattened)` });
    if (!pick) return;
    const out = await this.askNewPath(`Export ${nodePath.basename(image)} as ${pick.label}`, freeName(image, pick.format !== 'raw' ? '-flat' : '', pick.ext));
    if (!out) return;
    await this.withProgress(`Exporting ${nodePath.basename(image)}`, (opts) => exportImage(image, out, { ...opts, format: pick.format }));
    this.log.appendLine(`exported ${image} to ${out} as ${pick.format}`);
    void vscode.window.showInformationMessage(`Exported the whole virtual disk of ${nodePath.basename(image)} to ${nodePath.basename(out)}.`);
  }

  private async snapshot(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Snapshot')) return;
    const top = await this.targetImage(uri, 'Snapshot: image to freeze');
    if (!top) return;
    const next = await snapshot(top);
    this.log.appendLine(`snapshot: ${top} is frozen; new top ${next}`);
    void vscode.window.showInformationMessage(`${nodePath.basename(top)} is now frozen; write to ${nodePath.basename(next)}, its new differencing child.`);
    await this.openInEditor(next);
  }

  /** Lists a merge plan as sentences naming every file. */
  private describeMerge(plan: MergePlan): string {
    const lines = [`Changes: ${plan.target}`];
    const deleted = plan.merged.filter((m) => !plan.kept.includes(m));
    if (deleted.length) lines.push(`Deletes: ${deleted.join(', ')}`);
    if (plan.relink.length) lines.push(`Re-links to the target: ${plan.relink.join(', ')}`);
    if (plan.siblings.length) lines.push(`Other images that use ${nodePath.basename(plan.target)} as parent and will read DIFFERENTLY (invalid) afterwards: ${plan.siblings.join(', ')}`);
    if (plan.kept.length) lines.push(`Kept because siblings use them: ${plan.kept.join(', ')}`);
    return lines.join('\n');
  }

  private async merge(uri: vscode.Uri | undefined, pickTarget: boolean): Promise<void> {
    if (!this.requireTrust('Merge')) return;
    const child = await this.targetImage(uri, pickTarget ? 'Merge Down To: image' : 'Merge Into Parent: child image');
    if (!child) return;
    let into: string | undefined;
    if (pickTarget) {
      const chain = await openChain(child);
      const ancestors = chain.layers.slice(1).map((l, i) => ({ label: nodePath.basename(l.path), description: i === 0 ? 'parent' : `${i + 1} levels down`, detail: l.path }));
      await chain.close();
      if (ancestors.length === 0) throw new DiskImageError(child, 'has no parent to merge into');
      const pick = await vscode.window.showQuickPick(ancestors, { title: `Merge ${nodePath.basename(child)} down to…` });
      if (!pick) return;
      into = pick.detail;
    }
    const plan = await planMerge(child, { into });
    const force = plan.siblings.length > 0;
    const action = force ? 'Merge Anyway' : 'Merge';
    const answer = await vscode.window.showWarningMessage(
      `Merge ${nodePath.basename(plan.child)} into ${nodePath.basename(plan.target)}?`,
      { modal: true, detail: this.describeMerge(plan) }, action);
    if (answer !== action) return;
    const result = await this.withProgress(`Merging ${nodePath.basename(plan.child)} into ${nodePath.basename(plan.target)}`, (opts) => mergeChild(child, { ...opts, into, force }));
    this.log.appendLine(`merged ${result.merged.join(', ')} into ${result.target}: ${result.bytesWritten} bytes written\n${this.describeMerge(result)}`);
    await this.closeEditorsOf(result.merged.filter((m) => !result.kept.includes(m)));
    await this.reloadAll([result.target, ...result.relink]);
    void vscode.window.showInformationMessage(`Merged ${nodePath.basename(result.child)} into ${nodePath.basename(result.target)}.`);
    await this.openInEditor(result.target);
  }

  private async discard(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Discard')) return;
    const child = await this.targetImage(uri, 'Discard Child: differencing image to delete');
    if (!child) return;
    const answer = await vscode.window.showWarningMessage(`Delete ${nodePath.basename(child)}?`,
      { modal: true, detail: `Deletes: ${child}\nEverything written to it since it was created is lost. Its parent is not changed.` }, 'Delete');
    if (answer !== 'Delete') return;
    const r = await discardChild(child);
    await this.closeEditorsOf([r.deleted]);
    this.log.appendLine(`discarded ${r.deleted}`);
    void vscode.window.showInformationMessage(`Deleted ${nodePath.basename(r.deleted)}; its parent is unchanged.`);
  }

  private async pickOtherImage(image: string): Promise<string | undefined> {
    const dir = nodePath.dirname(image);
    const others = safeList(dir).filter((n) => hasImageExtension(n) && nodePath.join(dir, n) !== image).sort();
    const browse = { label: 'Browse…', description: 'pick a file' };
    const pick = await vscode.window.showQuickPick([...others.map((n) => ({ label: n, description: dir })), browse], { title: `Diff ${nodePath.basename(image)} with…` });
    if (!pick) return undefined;
    if (pick === browse) {
      const f = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Disk images': PICKER_EXTENSIONS } });
      return f?.[0]?.fsPath;
    }
    return nodePath.join(dir, pick.label);
  }

  private async diffWith(uri?: vscode.Uri, otherUri?: vscode.Uri): Promise<void> {
    const image = await this.targetImage(uri, 'Diff: first image');
    if (!image) return;
    const other = otherUri instanceof vscode.Uri ? otherUri.fsPath : await this.pickOtherImage(image);
    if (!other) return;
    const result = await this.withProgress(`Comparing ${nodePath.basename(image)} with ${nodePath.basename(other)}`, (opts) => diffImages(image, other, opts));
    this.log.appendLine(`diff ${image} ${other}: ${result.identical ? 'identical' : `${result.differingBytes} bytes differ in ${result.ranges.length} ranges`}`);
    await this.openInEditor(image);
    const doc = this.provider.documentsFor(nodePath.resolve(image))[0];
    if (doc) {
      const state = doc.current();
      const diff = toDiffData(result, other, state.blocks.blockSize, state.blocks.blockCount);
      doc.lastDiff = diff;
      this.provider.postTo(doc, { type: 'diff', diff });
    }
    void vscode.window.showInformationMessage(result.identical
      ? `${nodePath.basename(image)} and ${nodePath.basename(other)} read the same.`
      : `${nodePath.basename(image)} and ${nodePath.basename(other)} differ in ${result.differingBytes} bytes (${result.ranges.length} ranges); see the Blocks view.`);
  }

  private async check(uri?: vscode.Uri): Promise<void> {
    const image = await this.targetImage(uri, 'Check Image');
    if (!image) return;
    const r = await this.withProgress(`Checking ${nodePath.basename(image)}`, (opts) => checkImage(image, opts));
    this.log.appendLine(`check ${image}: ${r.ok ? 'ok' : 'errors'}`);
    for (const p of r.problems) this.log.appendLine(`  ${p.severity}: ${p.message} (${p.structure} at offset ${p.offset})`);
    const errors = r.problems.filter((p) => p.severity === 'error').length;
    const warnings = r.problems.length - errors;
    if (r.problems.length === 0) {
      void vscode.window.showInformationMessage(`${nodePath.basename(image)} passed the check: no problems found.`);
    } else {
      const text = `${nodePath.basename(image)}: ${errors} error(s), ${warnings} warning(s). First: ${r.problems[0].message}.`;
      const show = errors ? vscode.window.showErrorMessage : vscode.window.showWarningMessage;
      void show(text, 'Show Details').then((p) => { if (p) this.log.show(true); });
    }
  }

  private async repair(uri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Repair')) return;
    const image = await this.targetImage(uri, 'Repair Image');
    if (!image) return;
    const plan = await repairImage(image, { dryRun: true });
    if (plan.changes.length === 0) {
      void vscode.window.showInformationMessage(`${nodePath.basename(image)} needs no repair.`);
      return;
    }
    const list = plan.changes.slice(0, 12).map((c) => `• ${c.message} (${c.structure} at offset ${c.offset})`).join('\n');
    const more = plan.changes.length > 12 ? `\n… and ${plan.changes.length - 12} more` : '';
    const answer = await vscode.window.showWarningMessage(`Repair ${nodePath.basename(image)}?`,
      { modal: true, detail: `Changes: ${image}\n${list}${more}` }, 'Repair');
    if (answer !== 'Repair') return;
    const r = await this.withProgress(`Repairing ${nodePath.basename(image)}`, (opts) => repairImage(image, opts));
    for (const c of r.changes) this.log.appendLine(`repair ${image}: ${c.message} (${c.structure} at offset ${c.offset})`);
    await this.reloadAll([image]);
    void vscode.window.showInformationMessage(`Repaired ${nodePath.basename(image)}: ${r.changes.length} change(s)${r.after && !r.after.ok ? '; problems remain, see the log' : ''}.`);
  }

  private async relink(uri?: vscode.Uri, parentUri?: vscode.Uri): Promise<void> {
    if (!this.requireTrust('Re-link Parent')) return;
    const image = await this.targetImage(uri, 'Re-link Parent: differencing image');
    if (!image) return;
    // From a broken chain, the layer to re-link is the last one that opened.
    const chain = await openChain(image, { tolerant: true });
    const broken = chain.links.find((l) => l.problem !== null || l.uuidMatches === false);
    const child = broken ? chain.layers[broken.depth].path : image;
    await chain.close();
    let parent = parentUri instanceof vscode.Uri ? parentUri.fsPath : undefined;
    if (!parent) {
      const f = await vscode.window.showOpenDialog({ title: `New parent for ${nodePath.basename(child)}`, canSelectMany: false, defaultUri: vscode.Uri.file(nodePath.dirname(child)), filters: { 'Disk images': PICKER_EXTENSIONS } });
      parent = f?.[0]?.fsPath;
    }
    if (!parent) return;
    const answer = await vscode.window.showWarningMessage(`Re-link ${nodePath.basename(child)} to ${nodePath.basename(parent)}?`,
      { modal: true, detail: `Changes: ${child} (its parent locators and parent name).\nNew parent: ${parent}` }, 'Re-link');
    if (answer !== 'Re-link') return;
    try {
      await reparent(child, parent);
    } catch (e) {
      if (!(e instanceof DiskImageError) || e.code !== 'EUUID') throw e;
      const again = await vscode.window.showWarningMessage(`${nodePath.basename(parent)} is not the image ${nodePath.basename(child)} was made from.`,
        { modal: true, detail: `${e.what}.\nLinking anyway records the new parent's UUID in ${child}; if the parent's data differs from the original, the child's disk reads as garbage.` }, 'Re-link Anyway');
      if (again !== 'Re-link Anyway') return;
      await reparent(child, parent, { ignoreIdMismatch: true });
    }
    this.log.appendLine(`re-linked ${child} to ${parent}`);
    await this.reloadAll([child, image]);
    void vscode.window.showInformationMessage(`${nodePath.basename(child)} now uses ${nodePath.basename(parent)} as its parent.`);
  }

  /** Closes editor tabs showing any of these files (they were deleted). */
  private async closeEditorsOf(paths: string[]): Promise<void> {
    const gone = new Set(paths.map((p) => nodePath.resolve(p)));
    const tabs = vscode.window.tabGroups.all.flatMap((g) => g.tabs).filter((t) => {
      const input = t.input as { uri?: vscode.Uri } | undefined;
      return input?.uri && gone.has(input.uri.fsPath);
    });
    if (tabs.length) await vscode.window.tabGroups.close(tabs);
  }
}
