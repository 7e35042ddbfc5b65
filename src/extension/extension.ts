import * as vscode from 'vscode';
import { Commands } from './commands';
import { ImageEditorProvider } from './editorProvider';
import { SessionManager } from './sessions';
import { TimelineHub } from './timeline';

export interface ExtensionApi {
  provider: ImageEditorProvider;
  sessions: SessionManager;
}

export function activate(context: vscode.ExtensionContext): ExtensionApi {
  const log = vscode.window.createOutputChannel('Disk Image Inspector');
  log.appendLine(`activated at ${new Date().toISOString()}`);
  context.subscriptions.push(log);
  const provider = ImageEditorProvider.register(context, log);
  const commands = new Commands(provider, log);
  commands.register(context);
  const sessions = new SessionManager(context, commands, log);
  sessions.register();
  const timeline = new TimelineHub(sessions, log);
  provider.timeline = timeline;
  context.subscriptions.push(vscode.commands.registerCommand('diskImageInspector.openTrace', async (uri?: vscode.Uri) => {
    const doc = (uri instanceof vscode.Uri ? provider.documentsFor(uri.fsPath)[0] : undefined) ?? provider.activeDocument();
    if (!doc) {
      void vscode.window.showInformationMessage('Open a disk image first: its timeline shows the trace on its block grid.');
      return;
    }
    try {
      await timeline.openTrace(doc);
    } catch (e) {
      void vscode.window.showErrorMessage((e as Error).message);
    }
  }));
  // Buttons that write are enabled once the workspace is trusted.
  context.subscriptions.push(vscode.workspace.onDidGrantWorkspaceTrust(() => {
    for (const doc of provider.allDocuments()) void doc.reload();
  }));
  return { provider, sessions };
}

export function deactivate(): void {
  // Documents and watchers are disposed with their editors. Emulator sessions are detached
  // `diskimg serve` processes: they keep serving when VS Code closes (an emulator may still be
  // using the disk), and the next window lists them again and says so.
}
