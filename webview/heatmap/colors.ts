/**
 * Colours for the canvas, pure: every colour comes from a `--vscode-*` theme variable read by the
 * caller (so light, dark and high-contrast themes all work); here they are parsed, blended and
 * packed as RGBA for ImageData.
 */
export interface Rgb { r: number; g: number; b: number; a: number }

/** Parses #rgb, #rgba, #rrggbb, #rrggbbaa, rgb() and rgba(); null when it cannot. */
export function parseColor(text: string): Rgb | null {
  const s = text.trim().toLowerCase();
  let m = /^#([0-9a-f]{3,8})$/.exec(s);
  if (m) {
    const h = m[1];
    if (h.length === 3 || h.length === 4) {
      const v = [...h].map((c) => parseInt(c + c, 16));
      return { r: v[0], g: v[1], b: v[2], a: h.length === 4 ? v[3] / 255 : 1 };
    }
    if (h.length === 6 || h.length === 8) {
      const v = [0, 2, 4, 6].map((i) => parseInt(h.slice(i, i + 2) || 'ff', 16));
      return { r: v[0], g: v[1], b: v[2], a: h.length === 8 ? v[3] / 255 : 1 };
    }
    return null;
  }
  m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)$/.exec(s);
  if (m) {
    const a = m[4] === undefined ? 1 : m[4].endsWith('%') ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
    return { r: +m[1], g: +m[2], b: +m[3], a };
  }
  return null;
}

/** `top` composited over an opaque `under`. */
export function over(top: Rgb, under: Rgb): Rgb {
  const a = top.a;
  return { r: Math.round(top.r * a + under.r * (1 - a)), g: Math.round(top.g * a + under.g * (1 - a)), b: Math.round(top.b * a + under.b * (1 - a)), a: 1 };
}

/** Linear mix: t = 0 gives `a`, t = 1 gives `b`. */
export function mix(a: Rgb, b: Rgb, t: number): Rgb {
  const k = Math.max(0, Math.min(1, t));
  return { r: Math.round(a.r + (b.r - a.r) * k), g: Math.round(a.g + (b.g - a.g) * k), b: Math.round(a.b + (b.b - a.b) * k), a: 1 };
}

/** Packs as a little-endian Uint32 for ImageData (bytes R, G, B, A). */
export function pack(c: Rgb): number {
  return ((255 << 24) | (c.b << 16) | (c.g << 8) | c.r) >>> 0;
}

export function toCss(c: Rgb): string {
  return `rgb(${c.r}, ${c.g}, ${c.b})`;
}

/** Theme variables the heatmap uses, in order of preference for the owner palette. */
export const OWNER_VARIABLES = [
  '--vscode-charts-blue', '--vscode-charts-orange', '--vscode-charts-green', '--vscode-charts-purple',
  '--vscode-charts-yellow', '--vscode-charts-red', '--vscode-terminal-ansiCyan', '--vscode-terminal-ansiMagenta',
];

export const PARTITION_VARIABLES = ['--vscode-terminal-ansiCyan', '--vscode-terminal-ansiMagenta', '--vscode-terminal-ansiBrightYellow', '--vscode-terminal-ansiBrightRed', '--vscode-terminal-ansiBrightGreen'];

export interface Palette {
  background: Rgb;
  empty: Rgb;
  allocated: Rgb;
  changed: Rgb;
  flash: Rgb;
  selection: Rgb;
  owners: Rgb[];
  /** Blocks the owning layer holds as zeros without data (qcow2 zero clusters): a neutral grey. */
  zero: Rgb;
  /** Partition overlay colours, distinct from the owner palette. */
  partitions: Rgb[];
}

/** Builds the palette from a variable reader (getComputedStyle in the webview, a map in tests). */
export function makePalette(read: (name: string) => string): Palette {
  const get = (name: string, fallbackName?: string): Rgb | null => {
    const c = parseColor(read(name)) ?? (fallbackName ? parseColor(read(fallbackName)) : null);
    return c;
  };
  const background = get('--vscode-editor-background') ?? { r: 128, g: 128, b: 128, a: 1 };
  const bg = { ...background, a: 1 };
  const fg = get('--vscode-editor-foreground') ?? { r: 255 - bg.r, g: 255 - bg.g, b: 255 - bg.b, a: 1 };
  const solid = (c: Rgb | null, otherwise: Rgb) => (c ? over(c, bg) : otherwise);
  // Unallocated cells: a faint tint of the foreground, so the grid is visible on any background.
  const empty = solid(get('--vscode-editorWidget-background'), mix(bg, fg, 0.08));
  const emptyVisible = distance(empty, bg) < 12 ? mix(bg, fg, 0.1) : empty;
  const owners = OWNER_VARIABLES.map((v) => get(v)).filter((c): c is Rgb => c !== null).map((c) => over(c, bg));
  const accent = owners[0] ?? mix(bg, fg, 0.8);
  return {
    background: bg,
    empty: emptyVisible,
    allocated: accent,
    changed: solid(get('--vscode-charts-red', '--vscode-errorForeground'), mix(bg, fg, 0.9)),
    flash: solid(get('--vscode-charts-yellow', '--vscode-editorWarning-foreground'), fg),
    selection: solid(get('--vscode-focusBorder'), fg),
    owners: owners.length ? owners : [accent],
    // Between "no layer" and the foreground: held, but no data; distinct from every owner colour.
    zero: mix(emptyVisible, fg, 0.35),
    partitions: (() => {
      const p = PARTITION_VARIABLES.map((v) => get(v)).filter((c): c is Rgb => c !== null).map((c) => over(c, bg));
      return p.length ? p : [fg];
    })(),
  };
}

export function distance(a: Rgb, b: Rgb): number {
  return Math.abs(a.r - b.r) + Math.abs(a.g - b.g) + Math.abs(a.b - b.b);
}

export function partitionColor(p: Palette, index: number): Rgb {
  return p.partitions[index % p.partitions.length];
}

export function ownerColor(p: Palette, layer: number): Rgb {
  return p.owners[layer % p.owners.length];
}
