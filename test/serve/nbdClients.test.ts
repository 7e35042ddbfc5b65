import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { readChain, rng, randomBytes, tempDir } from '../helpers/util';
import { py, PY_APPLY, randomChain, run, runOk, sha, startServe } from './helpers';

/**
 * Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy, python3-libnbd) against `diskimg serve`
 * over random chains, checked against a flat model of the disk.
 */
describe('serve: real NBD clients against random chains', function () {
  this.timeout(180_000);
  const t = tempDir('diskimg-serve-');
  after(() => t.cleanup());

  for (const [seed, base] of [[1, 'dynamic'], [2, 'fixed'], [3, 'dynamic']] as const) {
    it(`seed ${seed} (${base} base): reads, maps and writes of every kind equal the model; parents never change`, async () => {
      const dir = path.join(t.dir, `s${seed}`);
      require('fs').mkdirSync(dir);
      const r = rng(seed);
      const { paths, model } = await randomChain(dir, r, { layers: 2, base, blockSize: seed === 3 ? 2 * 1024 * 1024 : 512 * 1024 });
      const top = paths[paths.length - 1];
      const parentSums = paths.slice(0, -1).map(sha);
      const expected = await (async () => {
        const c = await openChain(top);
        try { return await c.map(); } finally { await c.close(); }
      })();
      const srv = await startServe([top, '--socket', path.join(dir, 's.sock')]);
      try {
        assert.equal(srv.url, `nbd+unix:///?socket=${path.join(dir, 's.sock')}`);
        // Reads: nbdcopy, qemu-img convert and qemu-img compare see exactly the model.
        const flat = path.join(dir, 'model.raw');
        writeFileSync(flat, model);
        runOk('nbdcopy', [srv.url, path.join(dir, 'copy.raw')]);
        assert.ok(readFileSync(path.join(dir, 'copy.raw')).equals(model), 'nbdcopy read differs from the model');
        runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.url, path.join(dir, 'conv.raw')]);
        assert.ok(readFileSync(path.join(dir, 'conv.raw')).equals(model), 'qemu-img convert read differs from the model');
        assert.equal(run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', srv.url, flat]).code, 0);
        const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', '-f', 'raw', srv.url]));
        assert.equal(info['virtual-size'], model.length);

        // base:allocation: a hole (and zeros) exactly where no layer holds data.
        const alloc = JSON.parse(runOk('nbdinfo', ['--map', '--json', srv.url])) as Array<{ offset: number; length: number; type: number }>;
        assertCovers(alloc, model.length);
        for (const e of alloc) {
          for (const x of expected.filter((x) => x.start < e.offset + e.length && x.start + x.length > e.offset)) {
            assert.equal(e.type, x.data ? 0 : 3, `base:allocation at ${e.offset}`);
          }
        }
        // qemu:allocation-depth: 1 for the top, 2 for its parent…, 0 where nothing is allocated.
        const depth = JSON.parse(runOk('nbdinfo', ['--map=qemu:allocation-depth', '--json', srv.url])) as Array<{ offset: number; length: number; type: number }>;
        assertCovers(depth, model.length);
        for (const e of depth) {
          for (const x of expected.filter((x) => x.start < e.offset + e.length && x.start + x.length > e.offset)) {
            assert.equal(e.type, x.data ? x.depth + 1 : 0, `allocation depth at ${e.offset}`);
          }
        }
        // qemu-img map reads the same context through qemu's NBD driver (x-dirty-bitmap).
        const qmap = JSON.parse(runOk('qemu-img', ['map', '--output=json', '--image-opts',
          `driver=nbd,server.type=unix,server.path=${path.join(dir, 's.sock')},x-dirty-bitmap=qemu:allocation-depth`])) as Array<{ start: number; length: number; data: boolean; zero: boolean; present: boolean }>;
        // qemu turns the context's value into block-status flags (bit 0 = hole, bit 1 = zero): depth 0
        // (nothing allocated) reads as plain data, the top (1) as not present, its ancestors (2, 3) as zero.
        const depthsSeen = new Set<number>();
        for (const e of qmap) {
          const triple = `${e.present}/${e.zero}/${e.data}`;
          for (const x of expected.filter((x) => x.start < e.start + e.length && x.start + x.length > e.start)) {
            const d = x.data ? x.depth + 1 : 0;
            depthsSeen.add(d);
            const want = d === 0 ? 'true/false/true' : d === 1 ? 'false/false/false' : 'true/true/true';
            assert.equal(triple, want, `qemu-img map at ${e.start} (depth ${d})`);
          }
        }
        assert.ok(depthsSeen.size >= 3, 'the chain shows several depths');

        // Writes of every kind through libnbd: aligned, unaligned, across blocks, FUA, zeroes (with and
        // without NO_HOLE), and a trim that is then overwritten.
        const ops: Array<Record<string, unknown>> = [];
        const size = model.length;
        const blk = seed === 3 ? 2 * 1024 * 1024 : 512 * 1024;
        const put = (offset: number, data: Buffer, fua = false) => {
          ops.push({ op: 'write', offset, hex: data.toString('hex'), fua });
          data.copy(model, offset);
        };
        put(0, randomBytes(r, 4096));
        put(blk - 1000, randomBytes(r, 3000), true); // across a block boundary, unaligned both ends
        put(777, randomBytes(r, 1));
        put(size - 513, randomBytes(r, 513)); // the last bytes of the disk
        for (let i = 0; i < 8; i++) {
          const len = 1 + Math.floor(r() * 70000);
          put(Math.floor(r() * (size - len)), randomBytes(r, len), i % 3 === 0);
        }
        const z1 = Math.floor(r() * (size - 100000));
        ops.push({ op: 'zero', offset: z1, length: 99999 });
        model.fill(0, z1, z1 + 99999);
        const z2 = 2 * blk + 512;
        ops.push({ op: 'zero', offset: z2, length: blk, nohole: true });
        model.fill(0, z2, z2 + blk);
        ops.push({ op: 'trim', offset: 3 * blk, length: 8192 });
        put(3 * blk, randomBytes(r, 8192));
        ops.push({ op: 'flush' });
        const opsFile = path.join(dir, 'ops.json');
        writeFileSync(opsFile, JSON.stringify(ops));
        const served = py(PY_APPLY, [srv.url, opsFile]).trim();
        assert.equal(served, createHash('sha256').update(model).digest('hex'), 'the disk read back over NBD differs from the model');

        // qemu-io: pattern writes and verified reads on the same export.
        const qio = runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 65536 12288', '-c', 'read -P 0xa5 65536 12288', '-c', 'write -z 131072 4096', '-c', 'read -P 0 131072 4096', '-c', 'flush', srv.url]);
        assert.doesNotMatch(qio, /Pattern verification failed|error/i);
        model.fill(0xa5, 65536, 65536 + 12288);
        model.fill(0, 131072, 131072 + 4096);
      } finally {
        assert.equal(await srv.stop(), 0);
      }
      // Re-read from disk: the chain holds exactly the model, the parents are byte-identical, all clean.
      assert.ok((await readChain(top)).equals(model), 'the chain re-read from disk differs from the model');
      assert.deepEqual(paths.slice(0, -1).map(sha), parentSums);
      for (const p of paths) assert.equal(run(process.execPath, [require('../helpers/util').CLI, 'check', p]).code, 0, `check ${p}`);
    });
  }

  it('read-only: trim and write-zeroes not offered; writes, zeroes and trims sent anyway get EPERM and the connection stays usable', async () => {
    const dir = path.join(t.dir, 'ro');
    require('fs').mkdirSync(dir);
    const { paths, model } = await randomChain(dir, rng(9), { layers: 1, base: 'dynamic' });
    const before = paths.map(sha);
    const srv = await startServe([paths[1], '--read-only', '--socket', path.join(dir, 's.sock')]);
    try {
      const out = py(`
import sys, nbd
h = nbd.NBD()
h.set_strict_mode(0)  # send the commands; do not let libnbd refuse them itself
h.connect_uri(sys.argv[1])
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero()  # not offered where they cannot succeed
for f in (lambda: h.pwrite(b'x' * 512, 0), lambda: h.zero(512, 0), lambda: h.trim(512, 0)):
    try:
        f(); print('ok')
    except nbd.Error as e:
        print(e.errnum)
print(h.pread(16, 0).hex())
`, [srv.url]);
      const lines = out.trim().split('\n');
      assert.deepEqual(lines.slice(0, 3), ['1', '1', '1']);
      assert.equal(lines[3], model.subarray(0, 16).toString('hex'));
    } finally {
      await srv.stop();
    }
    assert.deepEqual(paths.map(sha), before);
  });
});

function assertCovers(extents: Array<{ offset: number; length: number }>, size: number): void {
  let pos = 0;
  for (const e of extents) {
    assert.equal(e.offset, pos);
    pos += e.length;
  }
  assert.equal(pos, size);
}
