// Opening a 2 TiB image in the editor: the extension's share of open to first heatmap painted, the
// host (open, model, block map) and the page (load and compile, script, draw, paint) starting
// together as the editor starts them, each step timed from that common start, for a dynamic VHD child (1,048,576 BAT entries), a VHDX child with 1 MiB
// blocks (2,097,152) and a qcow2 overlay with 64 KiB clusters (33,554,432, aggregated into cells on
// the host), runs interleaved.
// The headline figure is the extension's share: the later of the host's three steps and the page's
// own main-thread work before the host's message (they run side by side), plus the page's own work
// from that message to the frame painted; what is VS Code's (here: its stand-ins: navigation, the
// messaging, injected scripts) and waiting are left out (bench/firstPaintTrace.ts reads the page's
// work from a timeline trace of each run). The end-to-end wall time is reported beside it.
// There is no peer tool to pair with: each figure is the median and min of the runs, with the load.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { benchDir, load, median } from './common.mjs';

const KINDS = [
  { kind: 'vhd', name: '2 TiB VHD (2 MiB blocks)', goal: '<= 150 ms' },
  { kind: 'vhdx', name: '2 TiB VHDX (1 MiB blocks)', goal: '<= 400 ms (issue 12); 150 ms as VHD' },
  { kind: 'qcow2', name: '2 TiB qcow2 (64 KiB clusters)', goal: '<= the VHD figure (issue 13)' },
];
const RUNS = Number(process.env.FIRSTPAINT_RUNS ?? 9);

export default async function ({ root }) {
  const out = execFileSync(process.execPath, ['--require', 'tsx/cjs', join(root, 'bench', 'firstPaint.ts'), benchDir(root), String(RUNS), KINDS.map((k) => k.kind).join(',')],
    { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const all = out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .map((r) => ({ ...r, hostMs: r.openMs + r.modelMs + r.blocksMs, scriptToDrawMs: r.drawMs - r.scriptMs }));
  const date = new Date().toISOString().slice(0, 10);
  const rows = [];
  for (const { kind, name, goal } of KINDS) {
    // The first run pays Chromium's and the JIT's warm-up, as a first open after starting VS Code does: report it apart.
    const runs = all.filter((r) => r.kind === kind && r.which === 'after');
    const [first, ...rest] = runs;
    const med = (k, rs = rest) => median(rs.map((r) => r[k])).toFixed(0);
    const total = rest.map((r) => r.totalMs);
    const share = rest.map((r) => r.shareMs);
    const shareCpu = rest.map((r) => r.shareCpuMs);
    // Host and page run side by side from the same start; the page waits for the host's message if it is ready first.
    const host = `host ${med("hostMs")} (started at ${med("hostStartMs")}; open ${med('openMs')} + model ${med('modelMs')} + block map ${med('blocksMs')}; CPU ${med('hostCpuMs')})`;
    // Ours on the page: the HTML (our markup, and now the inline first bundle and styles) in, the fetched files in (none when inline), then our script onwards.
    const assets = (rs) => rs.every((r) => r.assetsMs === null) ? 'nothing fetched (inline)' : `CSS and script fetched by ${med('assetsMs', rs.filter((r) => r.assetsMs !== null))}`;
    // The loading skeleton is built only when the host's answer is not in 40 ms after the script starts.
    const skeleton = rest.filter((r) => r.skeleton).length;
    const page = `page: HTML in at ${med('htmlMs')}, ${assets(rest)}, script starts at ${med('scriptMs')}, ready at ${med('readyMs')}, skeleton in ${skeleton} of ${rest.length} runs, message (posted at ${med('postedMs')}, handed to the page at ${med('deliveredMs')}, in its stand-in at ${med('msgInMs')}) rebuilt at ${med('dataMs')}, handled at ${med('initMs')}, drawn at ${med('drawMs')} (${med('scriptToDrawMs')} after the script started: what test/e2e/vscode.test.ts records in code-server as bigImageWebviewToHeatmapMs), painted at ${med('paintedMs')} (main thread CPU ${med('pageCpuMs')}, script ${med('pageScriptMs')})`;
    const own = `page's own work ${med('ownBeforeMs')} before the message, ${med('ownAfterMs')} from it to painted (wall ${med('afterWallMs')}; CPU ${med('ownBeforeCpuMs')} + ${med('ownAfterCpuMs')}); not ours on the page's main thread ${med('notOursMs')}`;
    const breakdown = `${host} || ${own} || ${page}`;
    // FIRSTPAINT_BEFORE=DIR: the same runs with the code before (its dist/, page loaded after the host), paired.
    const before = all.filter((r) => r.kind === kind && r.which === 'before').slice(1);
    let vs = '';
    let ratio = {};
    if (before.length === rest.length && rest.length > 0) {
      const wall = rest.map((r, i) => r.shareMs / before[i].shareMs);
      const cpu = rest.map((r, i) => r.shareCpuMs / before[i].shareCpuMs);
      ratio = { median: median(wall), min: Math.min(...wall), cpuMedian: median(cpu), pairs: wall.length };
      const bt = before.map((r) => r.totalMs);
      const bs = before.map((r) => r.shareMs);
      vs = `; before: share median ${median(bs).toFixed(0)} ms (min ${Math.min(...bs).toFixed(0)}), end to end ${median(bt).toFixed(0)} ms (min ${Math.min(...bt).toFixed(0)}), own ${med('ownBeforeMs', before)} + ${med('ownAfterMs', before)}, host ${med('hostMs', before)} then page: HTML in at ${med('htmlMs', before)}, ${assets(before)}, script starts at ${med('scriptMs', before)}, painted at ${med('paintedMs', before)} (main thread CPU ${med('pageCpuMs', before)}, script ${med('pageScriptMs', before)}); after/before median ${ratio.median.toFixed(2)}x (min ${ratio.min.toFixed(2)}x; CPU ${ratio.cpuMedian.toFixed(2)}x)`;
    }
    // VS Code's share (creating the webview frame, handing it the HTML) is not in these figures: the page is a blank tab made beforehand.
    const line = `${name}, ${runs[0].cells} cells: extension's share median ${median(share).toFixed(0)} ms (min ${Math.min(...share).toFixed(0)} ms; in CPU time ${median(shareCpu).toFixed(0)}, min ${Math.min(...shareCpu).toFixed(0)}), end to end median ${median(total).toFixed(0)} ms (min ${Math.min(...total).toFixed(0)} ms); ${breakdown} ms (medians from the common start); first run ${first.shareMs.toFixed(0)} ms (end to end ${first.totalMs.toFixed(0)}); ${rest.length} runs${vs}; ${date}, ${load()}`;
    console.log(line);
    rows.push({
      name: `${name}, open to first heatmap painted (extension's share)`,
      ours: { seconds: median(share) / 1000, minSeconds: Math.min(...share) / 1000 },
      ...(before.length ? { reference: { seconds: median(before.map((r) => r.shareMs)) / 1000, minSeconds: Math.min(...before.map((r) => r.shareMs)) / 1000 }, referenceName: 'the code before' } : {}),
      ...ratio,
      goal,
      note: `share in CPU time median ${median(shareCpu).toFixed(0)} ms (min ${Math.min(...shareCpu).toFixed(0)}); end to end median ${median(total).toFixed(0)} ms (min ${Math.min(...total).toFixed(0)}); ${breakdown} ms (medians); first (cold) run ${first.totalMs.toFixed(0)} ms; ${rest.length} runs; ${load()}`,
    });
  }
  return rows;
}
