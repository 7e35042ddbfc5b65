import { strict as assert } from 'assert';
import { makePalette, mix, pack } from '../../webview/heatmap/colors';
import { cellColor } from '../../webview/heatmap/render';
import { blockAges, brushRange, flashAlpha, FLASH_FADE_MS, FLASH_HOLD_MS, replayStep, timeToX, xToTime } from '../../webview/timeline/logic';
import { parseWebviewMessage } from '../../src/protocol';

describe('timeline logic (webview)', () => {
  it('maps time to pixels and back, and orders a brush dragged right to left', () => {
    assert.equal(timeToX(5, 0, 10, 200), 100);
    assert.equal(xToTime(50, 10, 20, 100), 15);
    assert.equal(xToTime(-5, 10, 20, 100), 10);
    assert.equal(xToTime(500, 10, 20, 100), 20);
    assert.deepEqual(brushRange(80, 20, 0, 100, 100), { from: 20, to: 80 });
  });

  it('gives exactly the written blocks an age from 0 (oldest) to 1 (newest), others -1', () => {
    const age = blockAges(8, [1, 3, 6, 9], [10, 15, 20, 20], 10, 20);
    assert.deepEqual([...age], [-1, 0, -1, 0.5, -1, -1, 1, -1]);
    assert.deepEqual([...blockAges(2, [0], [5], 5, 5)], [1, -1]);
  });

  it('colours a timeline cell by its newest block, empty where nothing was written', () => {
    const vars: Record<string, string> = { '--vscode-editorWidget-background': '#101010', '--vscode-charts-blue': '#0000ff', '--vscode-charts-red': '#ff0000', '--vscode-editor-background': '#000000' };
    const p = makePalette((n) => vars[n] ?? '');
    const d = { blockCount: 4, allocated: new Uint8Array(4), fill: new Uint8Array(4), owner: new Uint16Array(4), changed: null, age: Float32Array.from([-1, 0, 1, 0.5]) };
    assert.equal(cellColor(d, 'timeline', 0, 1, p), pack(p.empty));
    assert.equal(cellColor(d, 'timeline', 1, 2, p), pack(mix(p.allocated, p.changed, 0)));
    assert.equal(cellColor(d, 'timeline', 2, 3, p), pack(mix(p.allocated, p.changed, 1)));
    assert.equal(cellColor(d, 'timeline', 0, 4, p), pack(mix(p.allocated, p.changed, 1)), 'an aggregated cell shows its newest write');
    assert.notEqual(pack(mix(p.allocated, p.changed, 0)), pack(mix(p.allocated, p.changed, 1)));
  });

  it('fades a write flash gradually: full for a moment, then strictly decreasing to 0, never on/off', () => {
    assert.equal(flashAlpha(0), 1);
    assert.equal(flashAlpha(FLASH_HOLD_MS), 1);
    assert.equal(flashAlpha(FLASH_FADE_MS), 0);
    assert.equal(flashAlpha(FLASH_FADE_MS + 1000), 0);
    let prev = 1;
    const levels = new Set<number>();
    for (let ms = FLASH_HOLD_MS + 50; ms < FLASH_FADE_MS; ms += 50) {
      const a = flashAlpha(ms);
      assert.ok(a < prev && a > 0, `${ms} ms: ${a} after ${prev}`);
      levels.add(Math.round(a * 10));
      prev = a;
    }
    assert.ok(levels.size >= 9, `many intermediate levels (${[...levels]})`);
    const mid = flashAlpha((FLASH_HOLD_MS + FLASH_FADE_MS) / 2);
    assert.ok(Math.abs(mid - 0.5) < 1e-9, `half way through the fade: ${mid}`);
  });

  it('steps a replay at the chosen speed and stops at the end', () => {
    assert.deepEqual(replayStep(10, 500, 4, 100), { t: 12, done: false });
    assert.deepEqual(replayStep(99, 1000, 4, 100), { t: 100, done: true });
  });

  it('accepts only well-formed timeline messages from the webview', () => {
    assert.deepEqual(parseWebviewMessage({ type: 'timelineQuery', requestId: 3, from: 0.5, to: 2 }), { type: 'timelineQuery', requestId: 3, from: 0.5, to: 2 });
    assert.equal(parseWebviewMessage({ type: 'timelineQuery', requestId: 3, from: 'a', to: 2 }), null);
    assert.equal(parseWebviewMessage({ type: 'timelineQuery', requestId: 3, from: NaN, to: 2 }), null);
    assert.equal(parseWebviewMessage({ type: 'timelineBlock', requestId: 1, block: -1, from: 0, to: 1 }), null);
    assert.deepEqual(parseWebviewMessage({ type: 'timelineExport', from: 1, to: 2 }), { type: 'timelineExport', from: 1, to: 2 });
    assert.deepEqual(parseWebviewMessage({ type: 'runCommand', command: 'startSession' }), { type: 'runCommand', command: 'startSession' });
    assert.deepEqual(parseWebviewMessage({ type: 'runCommand', command: 'openTrace' }), { type: 'runCommand', command: 'openTrace' });
    assert.equal(parseWebviewMessage({ type: 'runCommand', command: 'rm -rf' }), null);
  });
});
