/**
 * The extension's own share of a first paint, from a Chromium timeline trace of the page's main
 * thread: which of its tasks are the page's own work (our HTML parsed, our script, our message
 * handler, the style, layout and paint of our DOM) and which are not ours (the navigation's commit,
 * the test driver's and the messaging stand-in's scripts, VS Code's theme injection, idle waiting).
 */

export interface TraceEvent { name: string; ph: string; ts: number; dur?: number; tdur?: number; pid: number; tid: number; cat?: string; args?: { name?: string; data?: Record<string, unknown> } }

export interface PageShare {
  /** The page's own main-thread time before the task that handles the host's first message. */
  ownBeforeMs: number;
  /** The page's own main-thread time from that task to the frame holding the first draw painted (the handler, its frame). */
  ownAfterMs: number;
  /** Wall time from that task's start to the painted frame (ownAfterMs plus waiting for the frame's turn). */
  afterWallMs: number;
  /** Main-thread time in the same window that is not ours (the stand-in's messaging, injected scripts, navigation bookkeeping). */
  notOursMs: number;
  /** The same own work in the main thread's CPU time (the trace's thread durations): what other processes on a busy machine do not stretch. */
  ownBeforeCpuMs: number; ownAfterCpuMs: number;
}

/** Scripts tagged with this sourceURL are the bench's or VS Code's stand-ins, not the extension's. */
export const STAND_IN_URL = 'firstpaint-stand-in';

/** Work inside a task that shows the task is the page's own (our document's parse, script, frame). */
const OURS = new Set(['ParseHTML', 'EvaluateScript', 'FunctionCall', 'Layout', 'UpdateLayoutTree', 'PrePaint', 'Paint', 'Commit', 'FireAnimationFrame', 'HandlePostMessage', 'TimerFire']);

/**
 * The page's share, from the first parse of `pageUrl` to the TimeStamp `doneLabel` (the stand-in
 * stamps it when the page marks its first heatmap frame painted). A top-level task counts as ours
 * when it holds any of our document's parsing, scripts or rendering; the scripts in it that are not
 * from `pageUrl`, or are tagged STAND_IN_URL, are taken out of it.
 */
export function pageShare(events: TraceEvent[], pageUrl: string, doneLabel: string): PageShare {
  const threads = new Map<string, string>();
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') threads.set(`${e.pid}:${e.tid}`, String(e.args?.name));
  // The renderer main thread that parsed our page (each run gets its own renderer).
  const parse = events.find((e) => e.name === 'ParseHTML' && String((e.args as { beginData?: { url?: string } })?.beginData?.url ?? '') === pageUrl);
  if (!parse) throw new Error(`trace: no parse of ${pageUrl}`);
  const main = `${parse.pid}:${parse.tid}`;
  const done = events.find((e) => e.name === 'TimeStamp' && e.args?.data?.message === doneLabel);
  if (!done) throw new Error(`trace: no ${doneLabel} stamp`);
  const mainX = events.filter((e) => `${e.pid}:${e.tid}` === main && e.ph === 'X');
  // From the start of the task that parses our HTML.
  const from = mainX.find((e) => e.name === 'RunTask' && e.ts <= parse.ts && parse.ts < e.ts + (e.dur ?? 0))?.ts ?? parse.ts;
  const onMain = mainX.filter((e) => e.ts >= from && e.ts <= done.ts).sort((a, b) => a.ts - b.ts);
  const tasks = onMain.filter((e) => e.name === 'RunTask');
  const within = (t: TraceEvent) => onMain.filter((e) => e !== t && e.ts >= t.ts && e.ts < t.ts + (t.dur ?? 0));
  const url = (e: TraceEvent) => String(e.args?.data?.url ?? '');
  const foreign = (e: TraceEvent) => (e.name === 'EvaluateScript' || e.name === 'FunctionCall') && (url(e) !== pageUrl || url(e).includes(STAND_IN_URL));
  // The task that handles the host's message: the first posted message our script receives.
  const handler = tasks.find((t) => within(t).some((e) => e.name === 'HandlePostMessage') && within(t).some((e) => e.name === 'FunctionCall' && !foreign(e)));
  if (!handler) throw new Error('trace: no message handled by the page');
  let ownBefore = 0; let ownAfter = 0; let notOurs = 0; let cpuBefore = 0; let cpuAfter = 0;
  for (const t of tasks) {
    const inner = within(t);
    const dur = Math.min(t.ts + (t.dur ?? 0), done.ts) - t.ts;
    const cpu = Math.min(t.tdur ?? dur, dur);
    // Foreign scripts at the outermost level of the task only (their own callees are inside them).
    let foreignUs = 0; let foreignCpu = 0;
    let until = -1;
    for (const e of inner) {
      if (e.ts < until) continue;
      if (foreign(e)) { foreignUs += e.dur ?? 0; foreignCpu += e.tdur ?? e.dur ?? 0; until = e.ts + (e.dur ?? 0); }
    }
    const ours = inner.some((e) => OURS.has(e.name) && !foreign(e));
    const own = ours ? Math.max(0, dur - foreignUs) : 0;
    const ownCpu = ours ? Math.max(0, cpu - foreignCpu) : 0;
    notOurs += dur - own;
    if (t.ts < handler.ts) { ownBefore += own; cpuBefore += ownCpu; } else { ownAfter += own; cpuAfter += ownCpu; }
  }
  return { ownBeforeMs: ownBefore / 1000, ownAfterMs: ownAfter / 1000, afterWallMs: (done.ts - handler.ts) / 1000, notOursMs: notOurs / 1000, ownBeforeCpuMs: cpuBefore / 1000, ownAfterCpuMs: cpuAfter / 1000 };
}
