/** `30m`, `500ms`, `2s`, `1.5h` -> whole milliseconds (1 ms to 24 days, what a timer takes); throws on anything else. */
export function parseDuration(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text);
  if (!m) throw new Error(`${what}: '${text}' is not a duration (use N followed by ms, s, m or h, e.g. 60m)`);
  const ms = parseFloat(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  if (!(ms >= 1) || ms > 2 ** 31 - 1) throw new Error(`${what}: '${text}' is out of range (1 ms to 24 days)`);
  return Math.round(ms);
}
