import * as vscode from 'vscode';
import { Commands } from './commands';
import { ImageEditorProvider } from './editorProvider';

export interface ExtensionApi {
  provider: ImageEditorProvider;
}

export function activate(context: vscode.ExtensionContext): ExtensionApi {
  const log = vscode.window.createOutputChannel('Disk Image Inspector');
  log.appendLine(`activated at ${new Date().toISOString()}`);
  context.subscriptions.push(log);
  const provider = ImageEditorProvider.register(context, log);
  new Commands(provider, log).register(context);
  // Buttons that write are enabled once the workspace is trusted.
  context.subscriptions.push(vscode.workspace.onDidGrantWorkspaceTrust(() => {
    for (const doc of provider.allDocuments()) void doc.reload();
  }));
  return { provider };
}

export function deactivate(): void {
  // Documents and watchers are disposed with their editors.
}
