import * as vscode from 'vscode';
import { EditorCommand, HostMessage, parseWebviewMessage, ViewName, WebviewMessage } from '../protocol';
import { buildEditorHtml, readWebviewBundle } from './html';
import { ImageDocument } from './imageDocument';
import { blockDetail, diffSector, firstBlocks, sectorDetail } from './model';

export const VIEW_TYPE = 'diskImageInspector.imageEditor';
/** The same editor offered by "Open With" for raw dumps (.img, .raw, .iso, .dd), which no content probe claims. */
export const RAW_VIEW_TYPE = 'diskImageInspector.rawImageEditor';

/** Maps the webview's command names to contributed command ids. */
const COMMAND_IDS: Record<EditorCommand, string> = {
  relinkParent: 'diskImageInspector.relinkParent',
  diffWith: 'diskImageInspector.diffWith',
  createChild: 'diskImageInspector.createChild',
  snapshot: 'diskImageInspector.snapshot',
  mergeIntoParent: 'diskImageInspector.mergeIntoParent',
  check: 'diskImageInspector.checkImage',
  repair: 'diskImageInspector.repairImage',
  export: 'diskImageInspector.export',
  discard: 'diskImageInspector.discardChild',
  startSession: 'diskImageInspector.startSession',
  openTrace: 'diskImageInspector.openTrace',
};

/** The timeline and live blocks (src/extension/timeline.ts), attached by extension.ts. */
export interface TimelineHooks {
  panelReady(doc: ImageDocument, post: (m: HostMessage) => void): vscode.Disposable;
  handle(doc: ImageDocument, msg: WebviewMessage, post: (m: HostMessage) => void): Promise<void>;
}

interface Panel {
  document: ImageDocument;
  panel: vscode.WebviewPanel;
  ready: boolean;
  timelineSub?: vscode.Disposable;
}

/**
 * The read-only custom editor: one ImageDocument (the open chain) per file, any number of panels.
 * Keeps track of the panels so commands can reach the active image and push results (diffs) to it.
 */
export class ImageEditorProvider implements vscode.CustomReadonlyEditorProvider<ImageDocument> {
  private readonly panels = new Set<Panel>();
  private active: Panel | null = null;
  /** Last time-to-heatmap the webview reported, for tests and the log. */
  lastHeatmapMs: number | null = null;
  timeline: TimelineHooks | null = null;

  constructor(private readonly context: vscode.ExtensionContext, private readonly log: vscode.OutputChannel) {}

  static register(context: vscode.ExtensionContext, log: vscode.OutputChannel): ImageEditorProvider {
    const provider = new ImageEditorProvider(context, log);
    for (const viewType of [VIEW_TYPE, RAW_VIEW_TYPE]) {
      context.subscriptions.push(vscode.window.registerCustomEditorProvider(viewType, provider, {
        webviewOptions: { retainContextWhenHidden: true },
        supportsMultipleEditorsPerDocument: true,
      }));
    }
    return provider;
  }

  /**
   * Returns at once: the chain is opened, modelled and mapped while VS Code creates the webview and
   * the page loads (resolveCustomEditor sets the HTML without waiting); the page's `ready` is
   * answered when the document has loaded, or with the error that stopped it.
   */
  openCustomDocument(uri: vscode.Uri): ImageDocument {
    const started = Date.now();
    const doc = ImageDocument.open(uri, () => vscode.workspace.isTrusted);
    doc.loaded.then(
      () => this.log.appendLine(`${uri.fsPath}: opened in ${Date.now() - started} ms (${doc.timings.openMs} ms chain, ${doc.timings.modelMs} ms model, ${doc.timings.blocksMs} ms block map)`),
      (e: Error) => this.log.appendLine(`${uri.fsPath}: could not be opened: ${e.message}`));
    return doc;
  }

  async resolveCustomEditor(document: ImageDocument, panel: vscode.WebviewPanel): Promise<void> {
    const root = this.context.extensionUri;
    const webview = panel.webview;
    webview.options = {
      enableScripts: true,
      localResourceRoots: [vscode.Uri.joinPath(root, 'dist'), vscode.Uri.joinPath(root, 'media')],
    };
    // The first bundle and the styles go in the page itself: nothing is fetched before the first draw.
    const scriptUri = webview.asWebviewUri(vscode.Uri.joinPath(root, 'dist', 'webview.js')).toString();
    const { html } = buildEditorHtml({
      cspSource: webview.cspSource,
      scriptUri,
      styleUri: webview.asWebviewUri(vscode.Uri.joinPath(root, 'dist', 'webview.css')).toString(),
      inline: { ...readWebviewBundle(vscode.Uri.joinPath(root, 'dist').fsPath), restUri: webview.asWebviewUri(vscode.Uri.joinPath(root, 'dist', 'webview-rest.js')).toString() },
      title: document.uri.path.split('/').pop() ?? 'image',
    });
    webview.html = html;
    const resolvedAt = Date.now();
    const entry: Panel = { document, panel, ready: false };
    this.panels.add(entry);
    if (panel.active) this.active = entry;
    const post = (m: HostMessage) => { void webview.postMessage(m); };
    const subs: vscode.Disposable[] = [
      panel.onDidChangeViewState(() => { if (panel.active) this.active = entry; }),
      document.onDidChangeState(({ state, changed }) => {
        if (entry.ready) post({ type: 'update', model: state.model, blocks: state.blocks, changedBlocks: changed });
      }),
      document.onDidFail((message) => post({ type: 'error', message: `The image could not be re-read: ${message}` })),
      webview.onDidReceiveMessage(async (raw) => {
        const msg = parseWebviewMessage(raw);
        if (!msg) { this.log.appendLine(`ignored a malformed message from the webview: ${JSON.stringify(raw)?.slice(0, 200)}`); return; }
        try {
          switch (msg.type) {
            case 'ready': {
              // The page may be ready before the image is: wait for the first load (its error, if
              // any, reaches the page through the catch below).
              const s = await document.loaded.then(() => document.current(), (e: Error) => { throw new Error(`The image could not be opened: ${e.message}`); });
              entry.ready = true;
              // The owner map first (what the overview draws), the other per-block arrays right after.
              const b = s.blocks;
              post({ type: 'init', model: s.model, blocks: firstBlocks(b), complete: false, diff: document.lastDiff, timings: { ...document.timings, readyMs: Date.now() - resolvedAt } });
              post({ type: 'blocks', blocks: b });
              if (this.timeline && !entry.timelineSub) {
                entry.timelineSub = this.timeline.panelReady(document, post);
                subs.push(entry.timelineSub);
              }
              break;
            }
            case 'requestBlock': {
              const layers = await blockDetail(document.currentChain(), msg.block);
              post({ type: 'blockDetail', requestId: msg.requestId, block: msg.block, layers });
              break;
            }
            case 'requestSector': {
              const d = await sectorDetail(document.currentChain(), msg.sector);
              post({ type: 'sectorDetail', requestId: msg.requestId, sector: msg.sector, ...d });
              break;
            }
            case 'requestDiffSector': {
              if (!document.lastDiff) throw new Error('There is no diff to compare with; run Diff With… first.');
              const d = await diffSector(document.currentChain(), document.lastDiff.otherPath, msg.sector);
              post({ type: 'diffSector', requestId: msg.requestId, sector: msg.sector, ...d });
              break;
            }
            case 'copyText':
              await vscode.env.clipboard.writeText(msg.text);
              void vscode.window.setStatusBarMessage('Copied header fields as JSON.', 3000);
              break;
            case 'runCommand':
              await vscode.commands.executeCommand(COMMAND_IDS[msg.command], document.uri);
              break;
            case 'timelineQuery':
            case 'timelineBlock':
            case 'timelineExport':
              await this.timeline?.handle(document, msg, post);
              break;
            case 'rendered':
              if (msg.heatmapMs !== null) {
                this.lastHeatmapMs = msg.heatmapMs;
                this.log.appendLine(`${document.uri.fsPath}: heatmap drawn ${msg.heatmapMs.toFixed(0)} ms after the editor opened`);
              }
              break;
          }
        } catch (e) {
          const message = (e as Error).message;
          this.log.appendLine(`error handling ${msg.type}: ${message}`);
          post({ type: 'error', requestId: 'requestId' in msg ? msg.requestId : undefined, message });
        }
      }),
    ];
    panel.onDidDispose(() => {
      this.panels.delete(entry);
      if (this.active === entry) this.active = null;
      for (const s of subs) s.dispose();
    });
  }

  /** The image of the focused editor, if one of ours is focused. */
  activeDocument(): ImageDocument | null {
    const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    if (input instanceof vscode.TabInputCustom && input.viewType === VIEW_TYPE) {
      for (const p of this.panels) if (p.document.uri.toString() === input.uri.toString()) return p.document;
    }
    return this.active?.document ?? null;
  }

  /** Every open document for a path (commands reload them after changing files). */
  documentsFor(fsPath: string): ImageDocument[] {
    const out = new Set<ImageDocument>();
    for (const p of this.panels) if (p.document.path === fsPath) out.add(p.document);
    return [...out];
  }

  allDocuments(): ImageDocument[] {
    return [...new Set([...this.panels].map((p) => p.document))];
  }

  postTo(document: ImageDocument, message: HostMessage): void {
    for (const p of this.panels) if (p.document === document && p.ready) void p.panel.webview.postMessage(message);
  }

  showView(document: ImageDocument, view: ViewName): void {
    this.postTo(document, { type: 'showView', view });
  }
}
