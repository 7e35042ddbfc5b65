import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { readFileSync, readdirSync, statSync, truncateSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { CLI, cliOk, hasTool, randomBytes, rng, ROOT, sh, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

describe('streaming reads: blocks back to back in the file travel as one request', function () {
  this.timeout(120000);
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => { t = tempDir('diskimg-stream-'); });
  afterEach(() => t.cleanup());

  /** A dynamic VHD whose blocks lie in the file partly in order, partly scrambled, some half written. */
  function scrambledImage(): { img: string; expected: Buffer } {
    const img = path.join(t.dir, 'scrambled.vhd');
    cliOk(['create', img, '--size', '32M']);
    const expected = Buffer.alloc(32 * MiB);
    const r = rng(15);
    // Appended in this order: 0..3 back to back, then 9, 5, 12, 6, 7 (6 and 7 adjacent), 15 half.
    const writes: Array<[number, number]> = [[0, 8 * MiB], [9 * 2 * MiB, 2 * MiB], [5 * 2 * MiB, 2 * MiB],
      [12 * 2 * MiB + 4096, MiB], [6 * 2 * MiB, 4 * MiB], [15 * 2 * MiB + 512, MiB - 1024]];
    for (const [at, len] of writes) {
      const data = randomBytes(r, len);
      const file = path.join(t.dir, 'piece');
      writeFileSync(file, data);
      cliOk(['write', img, '--offset', String(at), '--input', file]);
      data.copy(expected, at);
    }
    return { img, expected };
  }

  it('reads ranges across coalesced and scattered blocks exactly (whole disk and odd slices)', async () => {
    const { img, expected } = scrambledImage();
    const chain = await openChain(img);
    try {
      const whole = await chain.readRange(0, expected.length);
      assert.ok(whole.equals(expected));
      assert.ok(chain.virtualSize >= expected.length);
      for (const [at, len] of [[2 * MiB - 512, 5 * MiB], [11 * 2 * MiB + 7, 3 * MiB], [13, 31 * MiB]]) {
        const got = await chain.readRange(at, len);
        assert.ok(got.equals(expected.subarray(at, at + len)), `range ${at}+${len}`);
      }
    } finally {
      await chain.close();
    }
  });

  it('export matches qemu-img convert byte for byte', function () {
    if (!hasTool('qemu-img')) this.skip();
    const { img, expected } = scrambledImage();
    const ours = path.join(t.dir, 'ours.raw');
    const qemu = path.join(t.dir, 'qemu.raw');
    cliOk(['export', img, ours]);
    sh('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, qemu]);
    assert.ok(readFileSync(ours).equals(readFileSync(qemu)));
    assert.ok(readFileSync(ours).subarray(0, expected.length).equals(expected));
  });

  it('a file cut inside a coalesced run fails naming the file, the block data and an offset', async () => {
    const { img } = scrambledImage();
    // Cut into block 2 of the first run (blocks 0..3 back to back, bitmaps between them).
    const chain0 = await openChain(img);
    const st = statSync(img);
    await chain0.close();
    truncateSync(img, 2048 + 512 * 4 + 2 * (2 * MiB + 512) + MiB);
    assert.ok(statSync(img).size < st.size);
    const chain = await openChain(img).catch((e) => e);
    if (chain instanceof Error) {
      assert.ok(chain instanceof DiskImageError, String(chain));
      return;
    }
    try {
      const e = await chain.readRange(0, 8 * MiB).then(() => null, (err: unknown) => err);
      assert.ok(e instanceof DiskImageError, `expected a DiskImageError, got ${String(e)}`);
      assert.match(e.message, /scrambled\.vhd/);
      assert.match(e.message, /block/);
      assert.match(e.message, /offset \d+/);
    } finally {
      await chain.close();
    }
  });
});

describe('CLI start-up', function () {
  this.timeout(60000);
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => { t = tempDir('diskimg-startup-'); });
  afterEach(() => t.cleanup());

  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });

  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    for (const flag of ['--version', '-V']) {
      const r = run([flag]);
      assert.equal(r.status, 0);
      assert.equal(r.stdout.toString(), `${version}\n`);
    }
  });

  it('--version loads no module beyond what a bare `node -e 0` loads', () => {
    // The modules a process loaded, printed at exit by a preload that itself requires nothing.
    const preload = path.join(t.dir, 'list.js');
    writeFileSync(preload, "process.on('exit', () => process.stderr.write(JSON.stringify(process.moduleLoadList)));");
    const loaded = (args: string[]) => new Set<string>(JSON.parse(spawnSync(process.execPath, ['--require', preload, ...args]).stderr.toString()));
    const bare = loaded(['-e', '0']);
    const ours = [...loaded([CLI, '--version'])].filter((m) => !bare.has(m) && !/^(NativeModule|Internal Binding) internal\/(modules|main|process\/execution|url|fs\/utils)/.test(m));
    assert.deepEqual(ours.filter((m) => /NativeModule (vm|os|module|fs)$/.test(m)), [], `loaded: ${ours.join(', ')}`);
  });

  it('a code cache is written once and a damaged one changes nothing but speed', () => {
    const img = path.join(t.dir, 'a.vhd');
    cliOk(['create', img, '--size', '8M']);
    const env = { TMPDIR: t.dir };
    const first = run(['info', img, '--json'], env);
    assert.equal(first.status, 0, first.stderr.toString());
    const cacheDir = readdirSync(t.dir).find((f) => f.startsWith('diskimg-code-cache-'));
    if (typeof (require('module') as { enableCompileCache?: unknown }).enableCompileCache === 'function') return; // Node's own cache
    assert.ok(cacheDir, 'no cache folder');
    const files = readdirSync(path.join(t.dir, cacheDir));
    assert.equal(files.length, 1);
    const cacheFile = path.join(t.dir, cacheDir, files[0]);
    assert.ok(statSync(cacheFile).size > 1000);
    const second = run(['info', img, '--json'], env);
    assert.equal(second.status, 0);
    assert.equal(second.stdout.toString(), first.stdout.toString());
    writeFileSync(cacheFile, Buffer.from('not a code cache'));
    const third = run(['info', img, '--json'], env);
    assert.equal(third.status, 0, third.stderr.toString());
    assert.equal(third.stdout.toString(), first.stdout.toString());
    // The rejected cache is replaced by a good one.
    assert.ok(statSync(cacheFile).size > 1000);
  });
});
