import { strict as assert } from 'assert';
import { execFileSync, spawn, spawnSync } from 'child_process';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { Qcow2Image } from '../../src/format/qcow2/qcow2Image';
import { cliJson, cliOk, exited, readChain, rng, randomBytes, runCli, tempDir } from '../helpers/util';
import { qemuIo, randomQemuWrites } from '../helpers/qemuIo';

/** Data writes, zero writes and discards, up to 300 sectors each. */
const MIX = { data: 0.7, zero: 0.15, maxSectors: 300 };


function qemuCheck(img: string): { code: number; out: string } {
  const r = spawnSync('qemu-img', ['check', img]);
  return { code: r.status ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

function assertClean(img: string): void {
  const r = qemuCheck(img);
  assert.equal(r.code, 0, `qemu-img check ${img}: ${r.out}`);
  assert.match(r.out, /No errors were found/);
}

function qemuRaw(img: string, dir: string): Buffer {
  const out = path.join(dir, `${path.basename(img)}.${Math.random().toString(36).slice(2)}.raw`);
  execFileSync('qemu-img', ['convert', '-O', 'raw', img, out]);
  return readFileSync(out);
}

describe('qcow2: cross-check with qemu-img / qemu-io', function () {
  this.timeout(300000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2-')));
  after(() => cleanup());

  const layouts = [
    { name: 'v3 64 KiB', opts: 'cluster_size=65536' },
    { name: 'v2 (compat 0.10) 4 KiB', opts: 'compat=0.10,cluster_size=4096' },
    { name: 'v3 512 B clusters', opts: 'cluster_size=512' },
    { name: 'v3 2 MiB clusters', opts: 'cluster_size=2097152' },
    { name: 'extended L2, 64 KiB (2 KiB subclusters)', opts: 'cluster_size=65536,extended_l2=on' },
    { name: 'extended L2, 16 KiB (512 B subclusters)', opts: 'cluster_size=16384,extended_l2=on' },
    { name: '8-bit refcounts', opts: 'refcount_bits=8,cluster_size=8192' },
  ];
  layouts.forEach((l, idx) => {
    it(`reads a qemu-made chain byte-identically: ${l.name}`, async () => {
      const size = 24 * 1024 * 1024 + 512 * 7;
      const base = path.join(dir, `b${idx}.qcow2`);
      const top = path.join(dir, `t${idx}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, base, String(size)]);
      randomQemuWrites(base, size, 10 + idx, 25, MIX);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, '-b', path.basename(base), '-F', 'qcow2', top]);
      randomQemuWrites(top, size, 50 + idx, 25, MIX);
      const expected = qemuRaw(top, dir);
      const ours = path.join(dir, `t${idx}.ours.raw`);
      cliOk(['export', top, ours]);
      assert.ok(readFileSync(ours).equals(expected), 'export differs from qemu-img convert');
      const info = cliJson(['info', top]);
      assert.equal(info.diskType, 'differencing');
      assert.equal(info.virtualSize, size);
    });
  });

  it('reads deflate- and zstd-compressed clusters (qemu-img convert -c) as qemu does', async () => {
    const src = path.join(dir, 'c-src.raw');
    const r = rng(3);
    const raw = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < raw.length; i += 4096) if (r() < 0.6) raw.fill((r() * 255) | 0, i, i + 4096 - ((r() * 3000) | 0));
    randomBytes(r, 200000).copy(raw, 3000000);
    writeFileSync(src, raw);
    const z = path.join(dir, 'c.qcow2');
    execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zlib,cluster_size=16384', src, z]);
    assert.ok((await readChain(z)).equals(raw));
    // An overlay over the compressed image, written by us: copy-on-write from compressed clusters.
    cliOk(['child', z, path.join(dir, 'c-ov.qcow2')]);
    const w = randomBytes(r, 70000);
    cliOk(['write', path.join(dir, 'c-ov.qcow2'), '--offset', '1000'], w);
    const overlayView = Buffer.from(raw);
    w.copy(overlayView, 1000);
    assert.ok((await readChain(path.join(dir, 'c-ov.qcow2'))).equals(overlayView));
    assertClean(path.join(dir, 'c-ov.qcow2'));
    // Writing into the compressed image itself replaces compressed clusters and releases their refcounts.
    cliOk(['write', z, '--offset', '20000'], w);
    w.copy(raw, 20000);
    assert.ok((await readChain(z)).equals(raw));
    assertClean(z);
    // zstd (compression type 1), at the smallest, default and largest cluster sizes: export equals
    // the source, an overlay written by us reads right, and writes into the image itself check clean.
    const flat = readFileSync(src);
    for (const cs of [512, 65536, 2097152]) {
      const zs = path.join(dir, `zstd-${cs}.qcow2`);
      execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=zstd,cluster_size=${cs}`, src, zs]);
      assert.match(execFileSync('qemu-img', ['info', zs]).toString(), /compression type: zstd/);
      const out = path.join(dir, `zstd-${cs}.raw`);
      cliOk(['export', zs, out]);
      assert.ok(readFileSync(out).equals(flat), `zstd ${cs}: export differs`);
      const ov = path.join(dir, `zstd-${cs}-ov.qcow2`);
      cliOk(['child', zs, ov]);
      cliOk(['write', ov, '--offset', '1000'], w);
      assert.equal(spawnSync('qemu-img', ['compare', ov, zs]).status, 1);
      const view = Buffer.from(flat);
      w.copy(view, 1000);
      assert.ok((await readChain(ov)).equals(view), `zstd ${cs}: overlay view`);
      cliOk(['write', zs, '--offset', '20000'], w);
      assertClean(zs);
      execFileSync('qemu-img', ['convert', '-O', 'raw', zs, out]);
      assert.ok((await readChain(zs)).equals(readFileSync(out)), `zstd ${cs}: after a write, as qemu reads it`);
    }
  });

  it('creates images and overlays qemu-img checks clean, with writes that qemu-img compare agrees with', async () => {
    for (const [i, cs] of [65536, 512, 2097152].entries()) {
      const size = 20 * 1024 * 1024;
      const base = path.join(dir, `mk${i}.qcow2`);
      cliOk(['create', base, '--size', String(size), '--block-size', String(cs)]);
      assertClean(base);
      const model = Buffer.alloc(size);
      const r = rng(70 + i);
      const writeBoth = (img: string) => {
        const len = 1 + Math.floor(r() * 200000);
        const off = Math.floor(r() * (size - len));
        const data = randomBytes(r, len);
        cliOk(['write', img, '--offset', String(off)], data);
        data.copy(model, off);
      };
      for (let k = 0; k < 6; k++) writeBoth(base);
      assertClean(base);
      const ov = path.join(dir, `mk${i}-ov.qcow2`);
      cliOk(['child', base, ov]);
      const qi = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ov]).toString());
      assert.equal(qi['backing-filename'], path.basename(base));
      assert.equal(qi['backing-filename-format'], 'qcow2');
      for (let k = 0; k < 6; k++) writeBoth(ov);
      assertClean(ov);
      const flat = path.join(dir, `mk${i}.model.raw`);
      writeFileSync(flat, model);
      const cmp = spawnSync('qemu-img', ['compare', '-F', 'raw', ov, flat]);
      assert.equal(cmp.status, 0, cmp.stdout.toString());
    }
  });

  it('grows the refcount table (512-byte clusters) and stays clean', async () => {
    const img = path.join(dir, 'grow.qcow2');
    cliOk(['create', img, '--size', String(64 * 1024 * 1024), '--block-size', '512']);
    const r = rng(9);
    const data = randomBytes(r, 8 * 1024 * 1024);
    cliOk(['write', img, '--offset', '4096'], data);
    assertClean(img);
    const q = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', img]).toString());
    assert.equal(q['cluster-size'], 512);
    const back = qemuRaw(img, dir);
    assert.ok(back.subarray(4096, 4096 + data.length).equals(data));
  });

  it('overlays over VHD and raw-like parents record backing_fmt; qemu reads them identically', async () => {
    const vhd = path.join(dir, 'p.vhd');
    cliOk(['create', vhd, '--size', '8M']);
    const r = rng(11);
    const d1 = randomBytes(r, 100000);
    cliOk(['write', vhd, '--offset', '5000'], d1);
    const ov = path.join(dir, 'p-ov.qcow2');
    cliOk(['child', vhd, ov]);
    const d2 = randomBytes(r, 30000);
    cliOk(['write', ov, '--offset', '90000'], d2);
    const qi = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ov]).toString());
    assert.equal(qi['backing-filename-format'], 'vpc');
    assertClean(ov);
    assert.ok(qemuRaw(ov, dir).equals(await readChain(ov)));
  });

  it('extended L2: our writes into partly allocated clusters fill them from the backing chain', async () => {
    const size = 4 * 1024 * 1024;
    const base = path.join(dir, 'xb.qcow2');
    const top = path.join(dir, 'xt.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,extended_l2=on', base, String(size)]);
    qemuIo(base, ['write -P 0x5a 0 4M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,extended_l2=on', '-b', 'xb.qcow2', '-F', 'qcow2', top]);
    qemuIo(top, ['write -P 0x11 2048 2048', 'write -z 8192 2048', 'write -P 0x22 131072 4096']);
    const r = rng(12);
    const d = randomBytes(r, 3000);
    cliOk(['write', top, '--offset', '20000'], d);
    const img = await Qcow2Image.open(top);
    assert.equal(img.extendedL2, true);
    const bm = await img.readBlockBitmap(0);
    assert.ok(bm && bm.every((b) => b === 0xff), 'cluster 0 is now fully allocated');
    await img.close();
    const expected = Buffer.alloc(size, 0x5a);
    expected.fill(0x11, 2048, 4096);
    expected.fill(0, 8192, 10240);
    expected.fill(0x22, 131072, 135168);
    d.copy(expected, 20000);
    assert.ok((await readChain(top)).equals(expected));
    assert.ok(qemuRaw(top, dir).equals(expected));
    assertClean(top);
  });

  it('lists internal snapshots, and writes after a snapshot copy shared clusters (the snapshot keeps its data)', async () => {
    const img = path.join(dir, 'snap.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '4M']);
    qemuIo(img, ['write -P 0x77 0 1M']);
    execFileSync('qemu-img', ['snapshot', '-c', 'before-update', img]);
    const info = cliJson(['info', img]);
    assert.equal(info.snapshots.length, 1);
    assert.equal(info.snapshots[0].name, 'before-update');
    const d = Buffer.alloc(70000, 0x99);
    cliOk(['write', img, '--offset', '100'], d);
    assertClean(img);
    const snapOut = path.join(dir, 'snap-before.raw');
    execFileSync('qemu-img', ['convert', '-l', 'snapshot.name=before-update', '-O', 'raw', img, snapOut]);
    const before = readFileSync(snapOut);
    assert.ok(before.subarray(0, 1024 * 1024).every((b) => b === 0x77), 'the snapshot still reads the old data');
    const now = await readChain(img);
    assert.ok(now.subarray(100, 70100).every((b) => b === 0x99));
    assert.equal(now[0], 0x77);
  });

  it('refuses encryption, external data files and protocol backing names with clear messages', async () => {
    const enc = path.join(dir, 'enc.qcow2');
    const e1 = spawnSync('qemu-img', ['create', '-q', '--object', 'secret,id=s0,data=pw', '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0', enc, '1M']);
    if (e1.status === 0) {
      const r = runCli(['info', enc]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /encrypted qcow2 images are not supported/);
    }
    const ext = path.join(dir, 'ext.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'ext.data')}`, ext, '1M']);
    const r2 = runCli(['info', ext]);
    assert.match(r2.stderr, /external data file are not supported \(qcow2 header at offset 72\)/);
    const js = path.join(dir, 'json.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"file.driver":"nbd","file.host":"x"}', '-F', 'raw', js, '1M']);
    const r3 = runCli(['read', js, '--length', '512']);
    assert.notEqual(r3.code, 0);
    assert.match(r3.stderr, /protocol prefix 'json:'/);
    const nbd = path.join(dir, 'nbd.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://127.0.0.1:1/x', '-F', 'raw', nbd, '1M']);
    assert.match(runCli(['info', nbd]).stdout.toString() + runCli(['info', nbd]).stderr, /protocol prefix 'nbd:'/);
  });

  it('refuses a backing chain that loops', async () => {
    const a = path.join(dir, 'loop-a.qcow2');
    const b = path.join(dir, 'loop-b.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', a, '1M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'loop-a.qcow2', '-F', 'qcow2', b]);
    execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', 'loop-b.qcow2', '-F', 'qcow2', a]);
    const r = runCli(['read', b, '--length', '512']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /loops back/);
  });

  it('a corrupt image opens read-only; a dirty one is reported and repair clears it', async () => {
    const img = path.join(dir, 'flags.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
    const b = readFileSync(img);
    b.writeBigUInt64BE(2n, 72);
    writeFileSync(img, b);
    const info = cliJson(['info', img]);
    assert.equal(info.corrupt, true);
    const w = runCli(['write', img, '--offset', '0'], Buffer.alloc(512, 1));
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /marked corrupt/);
    b.writeBigUInt64BE(1n, 72);
    writeFileSync(img, b);
    const chk = runCli(['check', img, '--json']);
    assert.match(chk.stdout.toString(), /marked dirty/);
    cliOk(['repair', img]);
    assert.equal(readFileSync(img).readBigUInt64BE(72), 0n);
    assertClean(img);
  });

  it('check finds leaked and too-low refcounts; repair --dry-run lists, repair fixes them', async () => {
    const img = path.join(dir, 'leak.qcow2');
    cliOk(['create', img, '--size', '8M']);
    cliOk(['write', img, '--offset', '0'], Buffer.alloc(200000, 3));
    // A leak: a cluster counted but referenced by nothing (as a kill between refcount and L2 update leaves).
    const q = await Qcow2Image.open(img, { writable: true });
    const at = Math.ceil(q.fileSize / q.clusterSize) * q.clusterSize;
    await q.file.truncate(at + q.clusterSize);
    await q.addRefcount(at, 1, 1);
    // Too low: the L1 table's cluster uncounted.
    await q.addRefcount(q.header.l1TableOffset, 1, -1);
    await q.close();
    assert.equal(qemuCheck(img).code, 2);
    const chk = JSON.parse(runCli(['check', img, '--json']).stdout.toString());
    assert.equal(chk.ok, false);
    assert.ok(chk.problems.some((p: { message: string }) => /leaked cluster/.test(p.message)));
    assert.ok(chk.problems.some((p: { message: string }) => /lower than its 1 reference/.test(p.message)));
    const before = readFileSync(img);
    const dry = runCli(['repair', img, '--dry-run']);
    assert.match(dry.stdout.toString(), /refcount 1 -> 0 \(leak\)/);
    assert.ok(readFileSync(img).equals(before), 'dry run changes nothing');
    cliOk(['repair', img]);
    assertClean(img);
    assert.ok((await readChain(img)).subarray(0, 200000).every((x) => x === 3));
  });

  it('kill -9 during writes leaves at most leaked clusters; repair removes them', async function () {
    this.timeout(180000);
    const size = 64 * 1024 * 1024;
    const base = path.join(dir, 'kb.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', base, String(size)]);
    qemuIo(base, ['write -P 0x42 0 8M']);
    const ov = path.join(dir, 'kov.qcow2');
    cliOk(['child', base, ov]);
    const r = rng(21);
    const input = path.join(dir, 'kin.bin');
    writeFileSync(input, randomBytes(r, 6 * 1024 * 1024));
    let leaks = 0;
    for (let round = 0; round < 6; round++) {
      const off = 4096 * Math.floor(r() * 10000) + 17;
      const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'dist', 'cli.js'), 'write', ov, '--offset', String(off), '--input', input], { stdio: 'ignore' });
      await new Promise((res) => setTimeout(res, 150 + r() * 600));
      child.kill('SIGKILL');
      await exited(child);
      const c = qemuCheck(ov);
      assert.ok(c.code === 0 || c.code === 3, `after kill ${round}: ${c.out}`);
      assert.doesNotMatch(c.out, /ERROR/);
      if (c.code === 3) leaks++;
      // Still readable through the chain.
      const chain = await openChain(ov);
      await chain.readRange(0, 1 << 20);
      await chain.close();
    }
    cliOk(['repair', ov]);
    assertClean(ov);
    assert.ok(leaks >= 0);
  });
});

describe('qcow2: chains with raw and VHD members; merge, reparent, export', function () {
  this.timeout(300000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2m-')));
  after(() => cleanup());

  it('a qcow2 overlay over a raw disk: backing_fmt=raw, qemu reads it identically, merge writes into the raw file', async () => {
    const r = rng(31);
    const disk = path.join(dir, 'disk.img');
    const model = randomBytes(r, 4 * 1024 * 1024);
    writeFileSync(disk, model);
    const ov = path.join(dir, 'disk-ov.qcow2');
    cliOk(['child', disk, ov]);
    const qi = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ov]).toString());
    assert.equal(qi['backing-filename-format'], 'raw');
    const w = randomBytes(r, 90000);
    cliOk(['write', ov, '--offset', '4097'], w);
    w.copy(model, 4097);
    assertClean(ov);
    assert.ok(qemuRaw(ov, dir).equals(model));
    cliOk(['merge', ov]);
    assert.ok(readFileSync(disk).equals(model));
  });

  it('merge into a qcow2 parent, reparent (rebase -u) and export to VHDX, VHD and qcow2 agree with qemu', async () => {
    const base = path.join(dir, 'mb.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16384', base, '12M']);
    qemuIo(base, ['write -P 0x31 0 5M', 'write -z 6M 1M']);
    const top = path.join(dir, 'mt.qcow2');
    cliOk(['child', base, top]);
    const r = rng(32);
    const w = randomBytes(r, 300000);
    cliOk(['write', top, '--offset', '4000000'], w);
    const expected = qemuRaw(top, dir);
    // diff agrees with qemu-img compare
    const d = runCli(['diff', top, base]);
    const q = spawnSync('qemu-img', ['compare', top, base]);
    assert.equal(d.code, q.status);
    cliOk(['merge', top]);
    assertClean(base);
    assert.ok(qemuRaw(base, dir).equals(expected));
    // reparent: the child of a moved parent
    const c2 = path.join(dir, 'mc.qcow2');
    cliOk(['child', base, c2]);
    const moved = path.join(dir, 'moved.qcow2');
    execFileSync('mv', [base, moved]);
    cliOk(['reparent', c2, moved]);
    const qi = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', c2]).toString());
    assert.equal(qi['backing-filename'], 'moved.qcow2');
    assertClean(c2);
    for (const [fmt, ext, qfmt] of [['vhdx-dynamic', 'vhdx', 'vhdx'], ['vhd-dynamic', 'vhd', 'vpc'], ['qcow2-dynamic', 'qcow2', 'qcow2']]) {
      const out = path.join(dir, `exp.${ext}`);
      cliOk(['export', c2, out, '--format', fmt]);
      const raw = path.join(dir, `exp-${ext}.raw`);
      execFileSync('qemu-img', ['convert', '-f', qfmt, '-O', 'raw', out, raw]);
      // qemu reads a VHD by its CHS size, which may end a little short of the virtual size.
      const got = readFileSync(raw);
      const n = Math.min(got.length, expected.length);
      assert.ok(n > expected.length - 65536, fmt);
      assert.ok(got.subarray(0, n).equals(expected.subarray(0, n)), fmt);
    }
    assertClean(path.join(dir, 'exp.qcow2'));
  });
});
