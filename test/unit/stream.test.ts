import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync, truncateSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { chainRequests, isAllZero, nonZeroRuns, runPipeline, streamChain, StreamRequest } from '../../src/chain/stream';
import { CancelledError, DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/vhd/create';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { CLI, hasTool, randomBytes, rng, runCli, sh, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Requests 0..n-1 of `size` bytes each, numbered. */
function numbered(n: number, size = 16): Array<StreamRequest & { i: number }> {
  return Array.from({ length: n }, (_, i) => ({ i, offset: i * size, length: size }));
}

describe('stream pipeline (src/chain/stream.ts)', function () {
  this.timeout(120000);

  describe('runPipeline', () => {
    it('consumes in request order, one at a time, while reads finish in any order; never more than depth buffers', async () => {
      const r = rng(7);
      for (const depth of [2, 3, 5]) {
        const order: number[] = [];
        let consuming = 0;
        let outstanding = 0;
        let maxOutstanding = 0;
        const buffers = new Set<Buffer>();
        await runPipeline(numbered(60), {
          bufferSize: 16,
          depth,
          read: async (req, buf) => {
            outstanding++;
            maxOutstanding = Math.max(maxOutstanding, outstanding);
            buffers.add(buf);
            await sleep(Math.floor(r() * 4));
            buf.fill(req.i & 0xff);
          },
          consume: async (req, buf) => {
            assert.equal(consuming, 0, 'consume calls overlap');
            consuming++;
            // The buffer holds this request's bytes, not a later read's.
            assert.equal(buf[0], req.i & 0xff);
            order.push(req.i);
            await sleep(Math.floor(r() * 3));
            assert.equal(buf[15], req.i & 0xff, 'buffer reused while being consumed');
            consuming--;
            outstanding--;
          },
        });
        assert.deepEqual(order, Array.from({ length: 60 }, (_, i) => i));
        assert.ok(buffers.size <= depth, `depth ${depth}: ${buffers.size} buffers`);
        assert.ok(maxOutstanding <= depth, `depth ${depth}: ${maxOutstanding} requests held at once`);
        // The pipeline does overlap: more than one read was under way at some point.
        assert.ok(maxOutstanding >= 2, `depth ${depth}: no overlap`);
      }
    });

    it('takes async iterables; an empty one consumes nothing', async () => {
      async function* gen() { for (const q of numbered(5)) { await sleep(1); yield q; } }
      const seen: number[] = [];
      await runPipeline(gen(), { bufferSize: 16, depth: 3, read: async () => undefined, consume: (q) => { seen.push(q.i); } });
      assert.deepEqual(seen, [0, 1, 2, 3, 4]);
      await runPipeline([], { bufferSize: 16, depth: 3, read: async () => { throw new Error('no read expected'); }, consume: () => { throw new Error('no consume expected'); } });
    });

    it('a failed read stops the pipeline with that error, after earlier requests, once reads in flight have settled', async () => {
      const consumed: number[] = [];
      let inFlight = 0;
      const boom = new DiskImageError('x.vhd', 'bad block', 'BAT entry', 1234, 'ECORRUPT');
      await assert.rejects(runPipeline(numbered(40), {
        bufferSize: 16,
        depth: 4,
        read: async (req) => {
          inFlight++;
          try {
            // Request 10 fails at once while earlier ones are still being read.
            if (req.i === 10) throw boom;
            await sleep(5);
          } finally {
            inFlight--;
          }
        },
        consume: (req) => { consumed.push(req.i); },
      }), (e: unknown) => {
        assert.equal(e, boom);
        assert.equal(inFlight, 0, 'reads still running when the error surfaced');
        return true;
      });
      assert.deepEqual(consumed, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    });

    it('a failed consume stops it too; a request larger than the buffers is refused', async () => {
      const consumed: number[] = [];
      await assert.rejects(runPipeline(numbered(20), {
        bufferSize: 16, depth: 3, read: async () => sleep(1),
        consume: (req) => { if (req.i === 4) throw new Error('disk full'); consumed.push(req.i); },
      }), /disk full/);
      assert.deepEqual(consumed, [0, 1, 2, 3]);
      await assert.rejects(runPipeline([{ offset: 0, length: 17 }], { bufferSize: 16, depth: 2, read: async () => undefined, consume: () => undefined }), RangeError);
    });

    it('stops with ECANCELLED, naming the file, when the signal is aborted', async () => {
      const ac = new AbortController();
      let consumed = 0;
      await assert.rejects(runPipeline(numbered(100), {
        bufferSize: 16, depth: 3, file: 'disk.vhd', signal: ac.signal,
        read: async () => sleep(1),
        consume: () => { if (++consumed === 5) ac.abort(); },
      }), (e: unknown) => e instanceof CancelledError && e.file === 'disk.vhd' && e.code === 'ECANCELLED');
      assert.equal(consumed, 5);
    });
  });

  describe('zero detection', () => {
    it('nonZeroRuns and isAllZero agree with a byte-by-byte scan', () => {
      const r = rng(3);
      for (let round = 0; round < 40; round++) {
        const grain = [512, 4096, 64 * KiB][round % 3];
        const buf = Buffer.alloc(Math.floor(r() * 300 * KiB) + 1);
        // Islands of data, some a single byte at a grain's edge or in its middle.
        for (let k = Math.floor(r() * 6); k > 0; k--) {
          const at = Math.floor(r() * buf.length);
          const len = r() < 0.3 ? 1 : Math.floor(r() * 20000);
          buf.fill(1 + Math.floor(r() * 255), at, Math.min(buf.length, at + len));
        }
        const want: number[] = [];
        for (let g = 0; g < buf.length; g += grain) {
          const e = Math.min(buf.length, g + grain);
          if (!buf.subarray(g, e).some((x) => x !== 0)) continue;
          if (want.length && want[want.length - 1] === g) want[want.length - 1] = e;
          else want.push(g, e);
        }
        assert.deepEqual(nonZeroRuns(buf, grain), want, `round ${round}`);
        assert.equal(isAllZero(buf), want.length === 0);
      }
      assert.ok(isAllZero(Buffer.alloc(0)));
      assert.ok(!isAllZero(Buffer.from([0, 0, 0, 7, 0, 0])));
    });
  });

  describe('over chains', () => {
    let t: ReturnType<typeof tempDir>;
    beforeEach(() => { t = tempDir('diskimg-pipeline-'); });
    afterEach(() => t.cleanup());

    /** A 24 MiB dynamic base with scattered writes and a child over it with more; the model of what the child reads. */
    async function chainWithModel(): Promise<{ top: string; base: string; model: Buffer }> {
      const base = path.join(t.dir, 'base.vhd');
      const top = path.join(t.dir, 'top.vhd');
      const size = await createImage(base, { size: 24 * MiB, type: 'dynamic', blockSize: 512 * KiB, exactSize: true });
      const model = Buffer.alloc(size);
      const r = rng(11);
      const put = async (p: string, at: number, data: Buffer) => {
        const c = await openChain(p, { writable: true });
        try { await c.write(at, data); } finally { await c.close(); }
        data.copy(model, at);
      };
      // Written out of order so blocks lie scattered in the file; one run of zeros that is allocated.
      for (const [at, len] of [[9 * MiB + 100, 3 * MiB], [0, 2 * MiB], [20 * MiB, MiB], [5 * MiB - 512, 1024]]) await put(base, at, randomBytes(r, len));
      await put(base, 14 * MiB, Buffer.alloc(MiB));
      await createChild(base, top);
      for (const [at, len] of [[MiB + 512, 4096], [10 * MiB, 700 * KiB], [23 * MiB + 3, 5000]]) await put(top, at, randomBytes(r, len));
      return { top, base, model };
    }

    it('chainRequests: ascending, cut at multiples of the request size, parts back to back, covering exactly what the map holds', async () => {
      const { top } = await chainWithModel();
      const chain = await openChain(top);
      try {
        const held = (await chain.map()).filter((e) => e.data);
        for (const requestSize of [256 * KiB, MiB, 3 * MiB, 64 * MiB]) {
          const covered: Array<[number, number]> = [];
          let last = -1;
          for await (const req of chainRequests(chain, { requestSize })) {
            assert.ok(req.offset >= last, 'ascending');
            assert.ok(req.length > 0 && req.length <= requestSize);
            assert.equal(Math.floor(req.offset / requestSize), Math.floor((req.offset + req.length - 1) / requestSize), 'crosses a request boundary');
            let at = req.offset;
            for (const p of req.parts) {
              assert.equal(p.start, at, 'parts back to back');
              assert.ok(p.data);
              at += p.length;
            }
            assert.equal(at, req.offset + req.length);
            last = req.offset + req.length;
            const prev = covered[covered.length - 1];
            if (prev && prev[1] === req.offset) prev[1] += req.length;
            else covered.push([req.offset, req.offset + req.length]);
          }
          const want: Array<[number, number]> = [];
          for (const e of held) {
            const prev = want[want.length - 1];
            if (prev && prev[1] === e.start) prev[1] += e.length;
            else want.push([e.start, e.start + e.length]);
          }
          assert.deepEqual(covered, want, `request size ${requestSize}`);
        }
        // Only the child's own data, as merge's copy phase asks for it.
        let own = 0;
        for await (const req of chainRequests(chain, { include: (e) => e.depth === 0 })) {
          for (const p of req.parts) assert.equal(p.depth, 0);
          own += req.length;
        }
        assert.equal(own, held.filter((e) => e.depth === 0).reduce((n, e) => n + e.length, 0));
      } finally {
        await chain.close();
      }
    });

    it('streamChain: data arrives in order and reads as the model, for request sizes and depths alike', async () => {
      const { top, model } = await chainWithModel();
      const chain = await openChain(top);
      try {
        for (const [requestSize, depth] of [[64 * KiB, 2], [MiB, 4], [5 * MiB, 3]]) {
          const got = Buffer.alloc(model.length);
          let last = 0;
          let progress = 0;
          await streamChain(chain, async (offset, data) => {
            assert.ok(offset >= last, 'in order');
            last = offset + data.length;
            await sleep(0);
            data.copy(got, offset);
          }, { requestSize, depth, onProgress: (done, total) => { assert.ok(done >= progress && total === model.length); progress = done; } });
          assert.ok(got.equals(model), `request size ${requestSize}, depth ${depth}`);
          assert.equal(progress, model.length);
        }
      } finally {
        await chain.close();
      }
    });

    it('a block whose data the file does not hold (cut short): export fails naming the file, the structure and the offset', async () => {
      const { base } = await chainWithModel();
      const img = await VhdImage.open(base);
      const bat = img.layout.tableOffset!;
      await img.close();
      // Cut the file in the middle of its last block's data, then put the footer back at the end.
      const size = statSync(base).size;
      const footer = readFileSync(base).subarray(size - 512);
      truncateSync(base, size - 512 - 300 * KiB);
      const fd = openSync(base, 'a');
      writeFileSync(fd, footer);
      closeSync(fd);
      const r = runCli(['export', base, path.join(t.dir, 'out.raw')]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`base\\.vhd: block \\d+ .*runs past the end of the file .*\\(BAT entry at offset (\\d+)\\)`));
      const at = Number(/BAT entry at offset (\d+)/.exec(r.stderr)![1]);
      assert.ok(at >= bat && at < bat + 4 * 48, `offset ${at} is not in the BAT at ${bat}`);
    });

    it('a write that fails (no space): export names the output and the offset', function () {
      if (!existsSync('/dev/full')) this.skip();
      const img = path.join(t.dir, 'small.vhd');
      spawnSync(process.execPath, [CLI, 'create', img, '--size', '8M']);
      const data = path.join(t.dir, 'data');
      writeFileSync(data, randomBytes(rng(5), 3 * MiB));
      assert.equal(runCli(['write', img, '--offset', String(MiB), '--input', data]).code, 0);
      const r = runCli(['export', img, '/dev/full']);
      assert.equal(r.code, 2, r.stderr);
      // A device gets every byte, the zeros before the data too: the first write fails, at 0.
      assert.match(r.stderr, /\/dev\/full: cannot write \d+ bytes: .*ENOSPC.*\(output at offset 0\)/);
    });

    it('memory stays flat: exporting 512 MiB of data peaks well under 150 MB, and matches qemu-img', function () {
      if (!hasTool('qemu-img') || !hasTool('qemu-io') || !existsSync('/usr/bin/time')) this.skip();
      const img = path.join(t.dir, 'big.vhd');
      sh('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', img, '1G']);
      sh('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5c 0 256M', '-c', 'write -P 0xa3 640M 256M', img]);
      const out = path.join(t.dir, 'big.raw');
      const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, CLI, 'export', img, out], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const peakKb = Number(r.stderr.trim().split('\n').pop());
      assert.ok(peakKb > 0 && peakKb < 150 * 1024, `peak RSS ${peakKb} KB`);
      const qemu = path.join(t.dir, 'qemu.raw');
      sh('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, qemu]);
      sh('cmp', [out, qemu]);
      // Never-written ranges stay holes in the output.
      assert.ok(statSync(out).blocks * 512 < 600 * MiB, `${statSync(out).blocks * 512} bytes allocated`);
    });
  });
});
