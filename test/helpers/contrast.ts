/**
 * Readability of what the editor webview shows, measured in the page: every visible text's colour
 * against the background it is drawn on (WCAG contrast ratio, alpha composited), and the toolkit's
 * buttons and dropdowns against the theme colours they should take. Written as a string so it runs
 * unchanged in the harness page and in code-server's webview frame (no transpiler helpers).
 */
export interface Readability {
  /** The least readable texts first. */
  texts: Array<{ text: string; where: string; color: string; background: string; ratio: number }>;
  /** Toolkit controls: tag, the background their inner control is drawn with, and their text colour. */
  controls: Array<{ tag: string; label: string; background: string; color: string; ratio: number }>;
  /** The page's theme colours the controls should take (its --vscode-* variables, resolved). */
  theme: { buttons: string[]; dropdown: string };
}

export const READABILITY_JS = `(() => {
  const rgba = (s) => { const m = s.match(/rgba?\\(([^)]+)\\)/); if (!m) return [0, 0, 0, 0]; const p = m[1].split(',').map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (fg, bg) => [0, 1, 2].map((i) => fg[i] * fg[3] + bg[i] * (1 - fg[3]));
  const lum = (c) => { const l = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const page = rgba(getComputedStyle(document.body).backgroundColor);
  const pageBg = page[3] > 0 ? page : rgba(getComputedStyle(document.documentElement).backgroundColor);
  const bgOf = (e) => { for (let x = e; x; x = x.parentElement) { const c = rgba(getComputedStyle(x).backgroundColor); if (c[3] > 0) return over(c, pageBg); } return pageBg.slice(0, 3); };
  const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < innerHeight && getComputedStyle(e).visibility !== 'hidden'; };
  const TOOLKIT = /^VSCODE-(BUTTON|DROPDOWN|OPTION|TEXT-FIELD|BADGE)$/;
  const texts = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const e = n.parentElement;
    if (!e || !n.textContent.trim() || !visible(e) || e.closest('script,style')) continue;
    let inControl = false;
    for (let x = e; x; x = x.parentElement) if (TOOLKIT.test(x.tagName)) inControl = true;
    if (inControl) continue;
    const bg = bgOf(e);
    const fg = over(rgba(getComputedStyle(e).color), bg);
    texts.push({ text: n.textContent.trim().slice(0, 40), where: e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''), color: 'rgb(' + fg.map(Math.round) + ')', background: 'rgb(' + bg.map(Math.round) + ')', ratio: ratio(fg, bg) });
  }
  texts.sort((a, b) => a.ratio - b.ratio);
  const controls = [];
  for (const e of document.querySelectorAll('vscode-button, vscode-dropdown')) {
    if (!visible(e) || !e.shadowRoot) continue;
    const inner = e.shadowRoot.querySelector('.control') || e;
    const bgc = rgba(getComputedStyle(inner).backgroundColor);
    const bg = bgc[3] > 0 ? over(bgc, bgOf(e)) : bgOf(e);
    const fg = over(rgba(getComputedStyle(inner).color), bg);
    controls.push({ tag: e.tagName.toLowerCase(), label: (e.textContent || '').trim().slice(0, 30), background: 'rgb(' + bg.map(Math.round) + ')', color: 'rgb(' + fg.map(Math.round) + ')', ratio: ratio(fg, bg) });
  }
  const probe = document.createElement('div');
  document.body.appendChild(probe);
  const resolve = (v) => { probe.style.backgroundColor = 'var(' + v + ')'; const c = rgba(getComputedStyle(probe).backgroundColor); return 'rgb(' + over(c, pageBg).map(Math.round) + ')'; };
  const theme = { buttons: [resolve('--vscode-button-background'), resolve('--vscode-button-secondaryBackground')], dropdown: resolve('--vscode-dropdown-background') };
  probe.remove();
  return { texts, controls, theme };
})()`;

/**
 * What is hard to read in a READABILITY_JS report: texts under 3:1 against their background (the
 * muted description colour of every VS Code theme clears it; the toolkit's dark defaults on a light
 * page do not), buttons and dropdowns not in the theme's colours, control text under 4.5:1.
 */
export function readabilityProblems(r: Readability): string[] {
  const out: string[] = [];
  if (r.texts.length < 5) out.push(`only ${r.texts.length} texts found`);
  for (const t of r.texts) if (t.ratio < 3) out.push(`text "${t.text}" (${t.where}) ${t.color} on ${t.background}: ${t.ratio.toFixed(2)}:1`);
  for (const c of r.controls) {
    if (c.tag === 'vscode-button' && !r.theme.buttons.includes(c.background)) out.push(`button "${c.label}" drawn ${c.background}, the theme's buttons are ${r.theme.buttons.join(' / ')}`);
    if (c.tag === 'vscode-dropdown' && c.background !== r.theme.dropdown) out.push(`dropdown "${c.label}" drawn ${c.background}, the theme's is ${r.theme.dropdown}`);
    if (c.ratio < 4.5) out.push(`${c.tag} "${c.label}" text ${c.color} on ${c.background}: ${c.ratio.toFixed(2)}:1`);
  }
  return out;
}
