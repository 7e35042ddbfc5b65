// The fuzzer's own oracle must catch what it claims to catch: an untyped throw, an unhandled
// rejection, a case over its CPU budget (1 s here), and an allocation not bounded by the files' size.
import { strict as assert } from 'assert';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { Fuzzer } from './fuzzer';

describe('fuzz harness', function () {
  this.timeout(60000);
  let work: string;
  let fuzzer: Fuzzer;
  const original = VhdImage.open;
  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'diskimg-harness-'));
    fuzzer = new Fuzzer(99, work, 1000);
    await fuzzer.init(false);
  });
  afterEach(() => { (VhdImage as { open: typeof VhdImage.open }).open = original; });
  after(() => rmSync(work, { recursive: true, force: true }));

  const patchOpen = (extra: () => void) => {
    (VhdImage as { open: typeof VhdImage.open }).open = async (...args: Parameters<typeof VhdImage.open>) => {
      extra();
      return original.apply(VhdImage, args);
    };
  };

  it('a clean run has no failure', async () => {
    const r = await fuzzer.run(1);
    assert.equal(r.failure, undefined, JSON.stringify(r.failure));
  });

  it('catches a thrown value that is not a DiskImageError', async () => {
    patchOpen(() => { throw new TypeError('boom'); });
    const r = await fuzzer.run(1);
    assert.equal(r.failure?.kind, 'untyped');
    assert.match(r.failure!.detail, /TypeError: boom/);
  });

  it('catches an unhandled promise rejection', async () => {
    patchOpen(() => { void Promise.reject(new RangeError('nobody listens')); });
    const r = await fuzzer.run(1);
    assert.equal(r.failure?.kind, 'unhandled rejection');
    assert.match(r.failure!.detail, /nobody listens/);
  });

  it('catches a case over 1 s of CPU', async () => {
    let once = false;
    patchOpen(() => {
      if (once) return;
      once = true;
      const c0 = process.cpuUsage();
      for (;;) { const c = process.cpuUsage(c0); if (c.user + c.system > 1_100_000) break; }
    });
    const r = await fuzzer.run(1);
    assert.equal(r.failure?.kind, 'slow', JSON.stringify({ cpu: r.cpuMs, wall: r.wallMs, ms: r.targetMs }));
    assert.ok(r.cpuMs > 1000);
  });

  it('catches an allocation far beyond the size of the files', async () => {
    let keep: Buffer | null = null;
    patchOpen(() => { keep = Buffer.alloc(256 * 1024 * 1024); });
    const r = await fuzzer.run(1);
    keep = null;
    void keep;
    assert.equal(r.failure?.kind, 'alloc');
    assert.match(r.failure!.detail, /allocated 268435456 bytes at once/);
  });
});
