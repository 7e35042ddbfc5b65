// The editor's HTML shell. No `vscode` import: the provider passes in the webview's URIs and CSP
// source, so the page and its Content-Security-Policy are unit-tested as they are served.
import { randomBytes } from 'crypto';
import { readFileSync } from 'fs';
import * as path from 'path';

export interface EditorHtmlInput {
  /** `webview.cspSource`. */
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  codiconUri?: string;
  /**
   * The first bundle and the styles placed in the page itself (nonce-tagged), so nothing is fetched
   * before the first draw: in VS Code every webview resource is a round trip through the service
   * worker and the workbench (60-190 ms each in the e2e measurements). scriptUri and styleUri are
   * then not fetched; restUri names the second bundle, which the page loads after the first frame.
   */
  inline?: { script: string; style: string; restUri: string };
  /** The document title (the image's file name: untrusted text). */
  title: string;
  nonce?: string;
}

/** 128 random bits from the crypto module, base64. */
export function makeNonce(): string {
  return randomBytes(16).toString('base64');
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `img-src ${cspSource} data:`,
    // The nonce lets in the page's own <style> (the editor's styles, inline) and the component
    // toolkit's one feature-detecting <style> element; no other inline styles.
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `font-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
}

/** The built first bundle and styles of a dist folder, read once per folder (they do not change while the extension runs). */
const bundles = new Map<string, { script: string; style: string }>();
export function readWebviewBundle(distDir: string): { script: string; style: string } {
  let b = bundles.get(distDir);
  if (!b) {
    // The source map comment would resolve against the page's own address: dropped.
    const script = readFileSync(path.join(distDir, 'webview.js'), 'utf8').replace(/\n\/\/# sourceMappingURL=[^\n]*\s*$/, '\n');
    const style = readFileSync(path.join(distDir, 'webview.css'), 'utf8');
    b = { script, style };
    bundles.set(distDir, b);
  }
  return b;
}

/** Text placed inside a <script> or <style> element must not be able to close it (esbuild escapes such text; checked anyway). */
function inlineSafe(text: string, tag: 'script' | 'style'): string {
  if (new RegExp(`</${tag}|<!--`, 'i').test(text)) throw new Error(`the built ${tag} contains text that would end its element`);
  return text;
}

/**
 * Nothing from the image is placed in the page here except the escaped title; all image data
 * reaches the webview as messages and is shown with textContent.
 */
export function buildEditorHtml(input: EditorHtmlInput): { html: string; nonce: string } {
  const nonce = input.nonce ?? makeNonce();
  const csp = contentSecurityPolicy(input.cspSource, nonce);
  const attr = escapeHtml;
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${attr(csp)}">
<meta property="csp-nonce" content="${attr(nonce)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
${input.inline ? `<style nonce="${attr(nonce)}">${inlineSafe(input.inline.style, 'style')}</style>` : `<link rel="stylesheet" href="${attr(input.styleUri)}">`}
<title>${escapeHtml(input.title)}</title>
</head>
<body>
<div id="app" role="main" aria-busy="true"><p class="loading">Reading image…</p></div>
${input.inline
    ? `<script nonce="${attr(nonce)}" data-rest="${attr(input.inline.restUri)}">${inlineSafe(input.inline.script, 'script')}</script>`
    : `<script nonce="${attr(nonce)}" src="${attr(input.scriptUri)}"></script>`}
</body>
</html>`;
  return { html, nonce };
}
