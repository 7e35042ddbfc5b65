import { strict as assert } from 'assert';
import { readdirSync, readFileSync, statSync } from 'fs';
import * as path from 'path';
import { buildEditorHtml, contentSecurityPolicy, escapeHtml, makeNonce, readWebviewBundle } from '../../src/extension/html';
import { ROOT } from '../helpers/util';

function filesUnder(dir: string, ext = '.ts'): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p, ext));
    else if (p.endsWith(ext)) out.push(p);
  }
  return out;
}

describe('webview safety (issue 5): CSP, nonce, escaping, no HTML from image data', () => {
  const input = { cspSource: 'https://x.vscode-cdn.net', scriptUri: 'https://x.vscode-cdn.net/dist/webview.js', styleUri: 'https://x.vscode-cdn.net/dist/webview.css' };

  it('serves a CSP of default-src none, scripts only by nonce, no unsafe-inline or unsafe-eval', () => {
    const { html, nonce } = buildEditorHtml({ ...input, title: 'disk.vhd' });
    const m = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html);
    assert.ok(m, 'CSP meta tag present');
    const csp = m![1].replace(/&#39;/g, "'");
    assert.equal(csp, contentSecurityPolicy(input.cspSource, nonce));
    const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
    assert.deepEqual(directives['default-src'], ["'none'"]);
    assert.deepEqual(directives['script-src'], [`'nonce-${nonce}'`]);
    assert.ok(!/unsafe-inline|unsafe-eval|\*/.test(csp), csp);
    assert.ok(!/https?:\/\/(?!x\.vscode-cdn\.net)/.test(csp), 'no remote sources besides the webview resource origin');
    // Every script element carries the nonce; there is no inline script or handler attribute.
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1);
    assert.ok(scripts[0][1].includes(`nonce="${nonce}"`));
    assert.equal(scripts[0][2].trim(), '');
    assert.ok(!/\son[a-z]+=/i.test(html), 'no inline event handlers');
  });

  it('as the editor serves it (first bundle and styles inline): every script and style element carries the nonce, the inline text is the built bundle, nothing from the image', () => {
    const inline = { script: 'document.body.dataset.x = "<\\/script>";', style: 'body { color: red; }', restUri: 'https://x.vscode-cdn.net/dist/webview-rest.js' };
    const { html, nonce } = buildEditorHtml({ ...input, inline, title: '</script><script>alert(1)</script>' });
    const csp = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html)![1].replace(/&#39;/g, "'");
    assert.equal(csp, contentSecurityPolicy(input.cspSource, nonce));
    assert.ok(!/unsafe-inline|unsafe-eval|\*/.test(csp), csp);
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1);
    assert.ok(scripts[0][1].includes(`nonce="${nonce}"`));
    assert.ok(scripts[0][1].includes(`data-rest="${inline.restUri}"`));
    assert.equal(scripts[0][2], inline.script);
    const styles = [...html.matchAll(/<style\b([^>]*)>([\s\S]*?)<\/style>/g)];
    assert.equal(styles.length, 1);
    assert.ok(styles[0][1].includes(`nonce="${nonce}"`));
    assert.equal(styles[0][2], inline.style);
    assert.ok(!html.includes('<link'), 'nothing fetched before the script runs');
    // A bundle that could end its element is refused rather than served.
    assert.throws(() => buildEditorHtml({ ...input, inline: { ...inline, script: 'x = "</script>"' }, title: 'a' }), /would end its element/);
    assert.throws(() => buildEditorHtml({ ...input, inline: { ...inline, style: 'a{} </STYLE><script>' }, title: 'a' }), /would end its element/);
  });

  it('the built first bundle and styles can be placed inline (npm run build first)', function () {
    const dist = path.join(ROOT, 'dist');
    try { statSync(path.join(dist, 'webview.js')); } catch { this.skip(); }
    const b = readWebviewBundle(dist);
    assert.ok(b.script.length > 1000 && b.style.length > 100);
    assert.ok(!/sourceMappingURL/.test(b.script.slice(-200)));
    buildEditorHtml({ ...input, inline: { ...b, restUri: 'https://x.vscode-cdn.net/dist/webview-rest.js' }, title: 'a' });
  });

  it('draws a fresh 128-bit nonce from crypto for every page', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const n = makeNonce();
      assert.equal(Buffer.from(n, 'base64').length, 16);
      seen.add(n);
    }
    assert.equal(seen.size, 200);
    const src = readFileSync(path.join(ROOT, 'src', 'extension', 'html.ts'), 'utf8');
    assert.match(src, /import \{ randomBytes \} from 'crypto'/);
    assert.ok(!src.includes('Math.random'));
  });

  it('escapes the file name (image-supplied text) in the page title', () => {
    const evil = `</title><script>alert(1)</script><img src=x onerror="alert(2)">'\`&`;
    const { html } = buildEditorHtml({ ...input, title: evil });
    assert.ok(!html.includes('<script>alert'));
    assert.ok(!html.includes('<img'));
    assert.ok(html.includes(`<title>${escapeHtml(evil)}</title>`));
    assert.equal(escapeHtml(`<>&"'\``), '&#60;&#62;&#38;&#34;&#39;&#96;');
  });

  it('the webview and host code never build HTML from strings (no innerHTML, eval and the like)', () => {
    const banned = /\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(|createContextualFragment|DOMParser/;
    const files = [...filesUnder(path.join(ROOT, 'webview')), ...filesUnder(path.join(ROOT, 'src', 'extension')), path.join(ROOT, 'src', 'protocol.ts')];
    assert.ok(files.length > 8);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      assert.ok(!banned.test(text), `${path.relative(ROOT, f)} uses an HTML-building API`);
      assert.ok(!/setAttribute\(\s*['"]on/i.test(text), `${path.relative(ROOT, f)} sets an event handler attribute`);
    }
  });

  it('keeps the layering: no vscode below src/extension, the toolkit only behind webview/ui', () => {
    for (const dir of ['format', 'io', 'chain', 'cli']) {
      for (const f of filesUnder(path.join(ROOT, 'src', dir))) {
        assert.ok(!/from ['"]vscode['"]|require\(['"]vscode['"]\)/.test(readFileSync(f, 'utf8')), `${path.relative(ROOT, f)} imports vscode`);
      }
    }
    assert.ok(!/from ['"]vscode['"]/.test(readFileSync(path.join(ROOT, 'src', 'protocol.ts'), 'utf8')));
    for (const f of filesUnder(path.join(ROOT, 'webview'))) {
      const inUi = f.startsWith(path.join(ROOT, 'webview', 'ui') + path.sep);
      if (!inUi) assert.ok(!readFileSync(f, 'utf8').includes('@vscode/webview-ui-toolkit'), `${path.relative(ROOT, f)} uses the toolkit directly`);
    }
  });

  it('styles use theme variables only: no literal colours in the stylesheet', () => {
    const css = readFileSync(path.join(ROOT, 'media', 'editor.css'), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
    assert.ok(!/#[0-9a-f]{3,8}\b|rgba?\(|hsla?\(/i.test(css), 'a literal colour in media/editor.css');
    for (const m of css.matchAll(/var\((--[\w-]+)/g)) assert.ok(m[1].startsWith('--vscode-'), m[1]);
  });
});
