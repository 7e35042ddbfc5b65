/**
 * The first-paint bench's accounting (bench/firstPaintTrace.ts): which of the page's main-thread
 * tasks are the extension's own work, on a small trace made by hand in Chromium's format.
 */
import { strict as assert } from 'assert';
import { pageShare, STAND_IN_URL, TraceEvent } from '../../bench/firstPaintTrace';

const PAGE = 'http://127.0.0.1:1/run/x/index.html';
const MAIN = { pid: 1, tid: 1 };
const ms = 1000;

/** A complete event on the page's main thread: start and wall duration in ms, CPU duration too. */
function x(name: string, at: number, dur: number, data: Record<string, unknown> = {}, cpu = dur): TraceEvent {
  return { name, ph: 'X', ts: at * ms, dur: dur * ms, tdur: cpu * ms, ...MAIN, args: { data } };
}

function trace(): TraceEvent[] {
  return [
    { name: 'thread_name', ph: 'M', ts: 0, ...MAIN, args: { name: 'CrRendererMain' } },
    // The navigation's commit, with the driver's and stand-in's init scripts: before our parse, not ours.
    x('RunTask', 0, 30), x('EvaluateScript', 5, 10, { url: `${STAND_IN_URL}.js` }),
    // Our HTML parsed, with VS Code's theme script (a stand-in, tagged) and our bundle: 20 ms, 3 of them the theme's.
    x('RunTask', 40, 20, {}, 16),
    { ...x('ParseHTML', 41, 18), args: { beginData: { url: PAGE } } } as TraceEvent,
    x('EvaluateScript', 42, 3, { url: `${STAND_IN_URL}-theme.js` }, 2),
    x('EvaluateScript', 46, 10, { url: PAGE }, 9),
    // A frame of our page: 6 ms.
    x('RunTask', 62, 6), x('Layout', 62, 4), x('Paint', 66, 1),
    // The stand-in's messaging (promise reactions, no script of ours): 4 ms, not ours.
    x('RunTask', 70, 4), x('RunMicrotasks', 70, 4),
    // A test driver's script in its own task: not ours.
    x('RunTask', 75, 2), x('FunctionCall', 75, 2, { url: '' }),
    // The host's message handled by our script (25 ms wall, 15 of CPU), then its frame (5 ms).
    x('RunTask', 80, 25, {}, 15), x('HandlePostMessage', 80, 25), x('FunctionCall', 80, 25, { url: PAGE }, 15), x('Layout', 82, 12),
    x('RunTask', 110, 5), x('Paint', 110, 2),
    { name: 'TimeStamp', ph: 'I', ts: 120 * ms, ...MAIN, args: { data: { message: '__done' } } },
    // After the painted frame: not counted.
    x('RunTask', 121, 50), x('FunctionCall', 121, 50, { url: PAGE }),
  ];
}

describe('first-paint bench accounting (bench/firstPaintTrace.ts)', () => {
  it('counts the page\'s own parse, script and frames before the message and from it to the painted frame, not the stand-ins\' scripts, navigation or driver', () => {
    const s = pageShare(trace(), PAGE, '__done');
    // Before: the parse task less the theme script (20 - 3) and the frame (6).
    assert.equal(s.ownBeforeMs, 23);
    // From the message's task to the stamp: its task and its frame.
    assert.equal(s.ownAfterMs, 30);
    assert.equal(s.afterWallMs, 40);
    // CPU: (16 - 2) + 6 before, 15 + 5 after.
    assert.equal(s.ownBeforeCpuMs, 20);
    assert.equal(s.ownAfterCpuMs, 20);
    // The stand-in's messaging task, the driver's script task, the theme script inside our parse task.
    assert.equal(s.notOursMs, 4 + 2 + 3);
  });

  it('refuses a trace without the page\'s parse, the end stamp or a handled message', () => {
    assert.throws(() => pageShare(trace(), 'http://other/index.html', '__done'), /no parse/);
    assert.throws(() => pageShare(trace(), PAGE, '__never'), /no __never stamp/);
    assert.throws(() => pageShare(trace().filter((e) => e.name !== 'HandlePostMessage'), PAGE, '__done'), /no message handled/);
  });
});
