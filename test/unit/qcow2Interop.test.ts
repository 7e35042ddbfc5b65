// qcow2 interop beyond reading: overlays without backing_fmt (probed as qemu does), merges into a base
// with internal snapshots (shared clusters copied, never overwritten), and random sequences of our
// write operations, each ending with `qemu-img check` clean and `qemu-img compare` equal to a flat model.
import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { readFileSync, renameSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { Qcow2Image } from '../../src/format/qcow2/qcow2Image';
import { cliJson, cliOk, readChain, rng, randomBytes, runCli, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;

function qemuIo(img: string, cmds: string[]): void {
  execFileSync('qemu-io', [...cmds.flatMap((c) => ['-c', c]), img], { stdio: 'ignore' });
}

/** qemu-img check: no errors and no leaks. */
function assertClean(img: string, what: string): void {
  const r = spawnSync('qemu-img', ['check', img]);
  const out = r.stdout.toString() + r.stderr.toString();
  assert.equal(r.status, 0, `${what}: qemu-img check ${path.basename(img)}: ${out}`);
  assert.match(out, /No errors were found/, what);
}

function assertSameAs(img: string, flat: string, what: string): void {
  const r = spawnSync('qemu-img', ['compare', '-F', 'raw', img, flat]);
  assert.equal(r.status, 0, `${what}: qemu-img compare: ${r.stdout.toString()}${r.stderr.toString()}`);
}

function qemuInfo(img: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', img]).toString());
}

function snapshotRaw(img: string, name: string, out: string): Buffer {
  execFileSync('qemu-img', ['convert', '-l', `snapshot.name=${name}`, '-O', 'raw', img, out]);
  return readFileSync(out);
}

/** Removes the backing format extension (as images made before qemu required -F have none). */
async function dropBackingFormat(img: string): Promise<void> {
  const q = await Qcow2Image.open(img, { writable: true });
  try {
    await q.rewriteBacking(q.layout.backingFile, null);
  } finally {
    await q.close();
  }
}

describe('qcow2 interop: backing format probing, snapshots in merge targets, random op sequences', function () {
  this.timeout(600000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2io-')));
  after(() => cleanup());

  it('`child disk.img overlay.qcow2` records backing_fmt=raw; qemu reads the overlay directly', () => {
    const disk = path.join(dir, 'boot.img');
    const r = rng(5);
    const model = randomBytes(r, 3 * MiB + 512);
    writeFileSync(disk, model);
    const ov = path.join(dir, 'boot-ov.qcow2');
    cliOk(['child', disk, ov]);
    const qi = qemuInfo(ov);
    assert.equal(qi['backing-filename'], 'boot.img');
    assert.equal(qi['backing-filename-format'], 'raw');
    assertClean(ov, 'new overlay');
    const w = randomBytes(r, 70000);
    cliOk(['write', ov, '--offset', '12345'], w);
    w.copy(model, 12345);
    const flat = path.join(dir, 'boot.model');
    writeFileSync(flat, model);
    assertSameAs(ov, flat, 'after a write');
    assertClean(ov, 'after a write');
  });

  it('a backing file without backing_fmt is probed by content (raw, qcow2, VHD) with a warning, and reads as qemu reads it', async () => {
    const r = rng(6);
    const parents: Array<{ name: string; make: (p: string) => void; fmt: string }> = [
      { name: 'nofmt.img', fmt: 'raw', make: (p) => writeFileSync(p, randomBytes(r, 2 * MiB)) },
      { name: 'nofmt-base.qcow2', fmt: 'qcow2', make: (p) => { execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', p, '2M']); qemuIo(p, ['write -P 0x44 4096 100000']); } },
      { name: 'nofmt-base.vhd', fmt: 'vpc', make: (p) => { cliOk(['create', p, '--size', '2M']); cliOk(['write', p, '--offset', '777'], randomBytes(r, 50000)); } },
    ];
    for (const p of parents) {
      const parent = path.join(dir, p.name);
      p.make(parent);
      const ov = path.join(dir, `${p.name}.ov.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', p.name, '-F', p.fmt, ov]);
      qemuIo(ov, ['write -P 0x99 65536 3000']);
      await dropBackingFormat(ov);
      const qi = qemuInfo(ov);
      assert.equal(qi['backing-filename'], p.name);
      assert.equal(qi['backing-filename-format'], undefined, 'no backing format recorded');
      assertClean(ov, p.name);
      const info = cliJson(['info', ov]);
      assert.equal(info.backingFormat, null);
      assert.ok(info.warnings.some((w: string) => /backing file format not recorded .*probed from its content/.test(w)), JSON.stringify(info.warnings));
      assert.equal(info.chain.length, 2, `${p.name}: the chain reaches the backing file`);
      // qemu probes the same way: what it reads is what we read.
      const flat = path.join(dir, `${p.name}.flat`);
      execFileSync('qemu-img', ['convert', '-O', 'raw', ov, flat]);
      const ours = await readChain(ov);
      assert.ok(ours.equals(readFileSync(flat).subarray(0, ours.length)), p.name);
      assert.ok(ours.subarray(65536, 68536).every((b) => b === 0x99));
    }
  });

  it('merge into a qcow2 base with internal snapshots copies shared clusters: snapshots unchanged, qemu-img check clean', async () => {
    for (const [i, opts] of ['cluster_size=65536', 'cluster_size=16384,extended_l2=on', 'compat=0.10,cluster_size=4096'].entries()) {
      const base = path.join(dir, `sb${i}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, base, '8M']);
      qemuIo(base, ['write -P 0x11 0 4M', ...(i === 2 ? [] : ['write -z 4M 1M'])]);
      execFileSync('qemu-img', ['snapshot', '-c', 's1', base]);
      qemuIo(base, ['write -P 0x22 1M 1M']);
      execFileSync('qemu-img', ['snapshot', '-c', 's2', base]);
      const s1 = snapshotRaw(base, 's1', path.join(dir, `sb${i}-s1-before.raw`));
      const s2 = snapshotRaw(base, 's2', path.join(dir, `sb${i}-s2-before.raw`));
      const top = path.join(dir, `sb${i}-top.qcow2`);
      cliOk(['child', base, top]);
      const r = rng(40 + i);
      // Unaligned writes over data shared by both snapshots, by one, over the zero range, and past them.
      for (const [off, len] of [[300001, 900000], [MiB + 7, 20000], [4 * MiB - 100, 300000], [6 * MiB + 3, 5000]]) cliOk(['write', top, '--offset', String(off)], randomBytes(r, len));
      const expected = path.join(dir, `sb${i}-expected.raw`);
      execFileSync('qemu-img', ['convert', '-O', 'raw', top, expected]);
      cliOk(['merge', top]);
      assertClean(base, `${opts}: after merge`);
      assertSameAs(base, expected, `${opts}: active layer after merge`);
      assert.ok(snapshotRaw(base, 's1', path.join(dir, `sb${i}-s1.raw`)).equals(s1), `${opts}: snapshot s1 unchanged`);
      assert.ok(snapshotRaw(base, 's2', path.join(dir, `sb${i}-s2.raw`)).equals(s2), `${opts}: snapshot s2 unchanged`);
      // Going back to a snapshot gives its data, and the image stays clean.
      execFileSync('qemu-img', ['snapshot', '-a', 's1', base]);
      assertClean(base, `${opts}: after snapshot -a s1`);
      const applied = path.join(dir, `sb${i}-applied.raw`);
      execFileSync('qemu-img', ['convert', '-O', 'raw', base, applied]);
      assert.ok(readFileSync(applied).equals(s1), `${opts}: snapshot -a s1 reads the snapshot's data`);
    }
  });

  it('a wrong copied flag on a cluster shared with a snapshot does not let a write overwrite the snapshot', async () => {
    const img = path.join(dir, 'flag.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, '4M']);
    qemuIo(img, ['write -P 0x5a 0 1M']);
    execFileSync('qemu-img', ['snapshot', '-c', 'keep', img]);
    const before = snapshotRaw(img, 'keep', path.join(dir, 'flag-before.raw'));
    // Set the copied flag on L1 entry 0 and on the L2 entry of cluster 0 (refcounts are 2: damage).
    const b = readFileSync(img);
    const l1At = Number(b.readBigUInt64BE(40));
    const l1 = b.readBigUInt64BE(l1At);
    b.writeBigUInt64BE(l1 | (1n << 63n), l1At);
    const l2At = Number(l1 & 0x00fffffffffffe00n);
    b.writeBigUInt64BE(b.readBigUInt64BE(l2At) | (1n << 63n), l2At);
    writeFileSync(img, b);
    const damaged = spawnSync('qemu-img', ['check', img]);
    assert.match(damaged.stderr.toString(), /OFLAG_COPIED data cluster/, 'qemu calls the flags wrong');
    const chain = await openChain(img, { writable: true });
    try {
      await chain.write(100, Buffer.alloc(5000, 0xee));
    } finally {
      await chain.close();
    }
    assert.ok(snapshotRaw(img, 'keep', path.join(dir, 'flag-after.raw')).equals(before), 'the snapshot keeps its data');
    const now = await readChain(img);
    assert.ok(now.subarray(100, 5100).every((x) => x === 0xee) && now[0] === 0x5a && now[5100] === 0x5a);
    // Our write gave cluster 0 and its L2 table copies of their own: the wrong flags are gone with them.
    assertClean(img, 'after the write');
  });

  it('a refcount table entry pointing past the file (the table moved onto the L1 table) stops a write with a one-line error, nothing written', async () => {
    const img = path.join(dir, 'reft.qcow2');
    cliOk(['create', img, '--size', '6M', '--block-size', '4096']);
    cliOk(['write', img, '--offset', '0'], Buffer.alloc(8192, 1));
    const b = readFileSync(img);
    const l1At = Number(b.readBigUInt64BE(40));
    b.writeBigUInt64BE(BigInt(l1At), 48); // refcount table offset := the L1 table (entries with bit 63 set)
    writeFileSync(img, b);
    const r = runCli(['write', img, '--offset', String(5 * MiB)], Buffer.alloc(4096, 2));
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^diskimg: [^\n]*refcount table entry 0 \(0x8[0-9a-f]+\) is not a cluster-aligned refcount block inside the file.*\(refcount table at offset \d+\)\n$/);
    assert.ok(readFileSync(img).subarray(0, b.length).equals(b), 'nothing written');
  });

  const layouts = [
    { name: '64 KiB clusters', opts: 'cluster_size=65536' },
    { name: '4 KiB clusters, v2', opts: 'compat=0.10,cluster_size=4096' },
    { name: 'extended L2, 32 KiB clusters', opts: 'cluster_size=32768,extended_l2=on' },
    { name: '512 B clusters, 8-bit refcounts', opts: 'cluster_size=512,refcount_bits=8' },
    { name: 'deflate-compressed base', opts: 'cluster_size=65536', compressed: true },
  ];
  layouts.forEach((l, li) => {
    it(`random op sequence (writes, zeros, snapshot, internal snapshot, merge, reparent): ${l.name}`, async () => {
      const size = 6 * MiB;
      const r = rng(1000 + li);
      let model = Buffer.alloc(size);
      const flat = path.join(dir, `rs${li}.model`);
      let base = path.join(dir, `rs${li}-base.qcow2`);
      const made = path.join(dir, `rs${li}-made.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, made, String(size)]);
      qemuIo(made, ['write -P 0x61 0 2M', `write -P 0x62 ${3 * MiB} 1M`, ...(l.opts.includes('compat=0.10') ? [] : [`write -z ${2 * MiB} 512k`])]);
      if (l.compressed) execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', l.opts, made, base]);
      else renameSync(made, base);
      model = Buffer.from(readChainSync(base, dir));
      const chain: string[] = [base];
      const internal: Array<{ img: string; name: string; data: Buffer }> = [];
      const log: string[] = [];
      for (let step = 0; step < 22; step++) {
        const top = chain[0];
        const k = r();
        let op: string;
        if (k < 0.45) {
          const len = 1 + Math.floor(r() * (r() < 0.3 ? 400000 : 20000));
          const off = Math.floor(r() * (size - len));
          const data = r() < 0.25 ? Buffer.alloc(len) : randomBytes(r, len);
          op = `write ${off}+${len}${data.every((x) => x === 0) ? ' zeros' : ''}`;
          const c = await openChain(top, { writable: true });
          try { await c.write(off, data); } finally { await c.close(); }
          data.copy(model, off);
        } else if (k < 0.6 && chain.length < 4) {
          op = 'snapshot';
          chain.unshift(cliOk(['snapshot', top]).toString().trim());
        } else if (k < 0.75 && chain.length > 1) {
          op = 'merge';
          cliOk(['merge', top]);
          chain.shift();
        } else if (k < 0.85 && chain.length > 1) {
          op = 'reparent';
          const moved = path.join(dir, `rs${li}-moved${step}.qcow2`);
          renameSync(chain[1], moved);
          cliOk(['reparent', top, moved]);
          if (chain[1] === base) base = moved;
          for (const s of internal) if (s.img === chain[1]) s.img = moved;
          chain[1] = moved;
        } else if (chain.length === 1 && internal.length < 3) {
          op = 'internal snapshot';
          const name = `i${step}`;
          execFileSync('qemu-img', ['snapshot', '-c', name, top]);
          internal.push({ img: top, name, data: Buffer.from(model) });
        } else {
          op = 'read back';
          assert.ok((await readChain(top)).equals(model), `step ${step}: read back`);
        }
        log.push(op);
        const what = `${l.name} step ${step} (${log.join(', ')})`;
        for (const img of chain) assertClean(img, what);
        writeFileSync(flat, model);
        assertSameAs(chain[0], flat, what);
      }
      for (const s of internal) {
        assert.ok(snapshotRaw(s.img, s.name, path.join(dir, `rs${li}-${s.name}.raw`)).equals(s.data), `${l.name}: internal snapshot ${s.name} unchanged (${log.join(', ')})`);
      }
      assert.ok(log.includes('merge') || log.includes('snapshot'), `the sequence changed the chain: ${log.join(', ')}`);
    });
  });
});

/** The whole disk as qemu reads it (the model's starting point for images qemu wrote). */
function readChainSync(img: string, dir: string): Buffer {
  const out = path.join(dir, `${path.basename(img)}.start.raw`);
  execFileSync('qemu-img', ['convert', '-O', 'raw', img, out]);
  return readFileSync(out);
}
