// The editor's HTML shell. No `vscode` import: the provider passes in the webview's URIs and CSP
// source, so the page and its Content-Security-Policy are unit-tested as they are served.
import { randomBytes } from 'crypto';

export interface EditorHtmlInput {
  /** `webview.cspSource`. */
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  codiconUri?: string;
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
    // The nonce lets the component toolkit's one feature-detecting <style> element in; no inline styles otherwise.
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `font-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
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
<link rel="stylesheet" href="${attr(input.styleUri)}">
<title>${escapeHtml(input.title)}</title>
</head>
<body>
<div id="app" role="main" aria-busy="true"><p class="loading">Reading image…</p></div>
<script nonce="${attr(nonce)}" src="${attr(input.scriptUri)}"></script>
</body>
</html>`;
  return { html, nonce };
}
