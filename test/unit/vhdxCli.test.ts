// diskimg on VHDX and AVHDX files, end to end through the built CLI, cross-checked with qemu and libvhdi.
import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'fs';
import * as path from 'path';
import { cliJson, cliOk, fixture, hasTool, randomBytes, rng, runCli, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;
const PYVHDI = path.join(__dirname, '..', 'helpers', 'pyvhdi_read.py');
const haveTools = hasTool('qemu-img') && hasTool('qemu-io') && hasTool('vhdiinfo') && spawnSync('/usr/bin/python3', ['-c', 'import pyvhdi']).status === 0;

describe('diskimg on VHDX', function () {
  this.timeout(180_000);
  let dir: string;
  let cleanup: () => void;
  before(function () {
    if (!haveTools) this.skip(); // scripts/setup.sh installs qemu-utils, libvhdi-utils and python3-libvhdi
    ({ dir, cleanup } = tempDir('vhdx-cli-'));
  });
  after(() => cleanup?.());
  const at = (name: string) => path.join(dir, name);

  it('create: dynamic and fixed, block size and logical sector size; qemu-img and vhdiinfo agree', () => {
    cliOk(['create', at('d.vhdx'), '--size', '100M', '--block-size', '8M']);
    cliOk(['create', at('f.vhdx'), '--size', '20M', '--type', 'fixed', '--block-size', '1M']);
    cliOk(['create', at('s4k.vhdx'), '--size', '10M', '--logical-sector', '4096']);
    const d = cliJson(['info', at('d.vhdx')]);
    assert.deepEqual([d.format, d.diskType, d.virtualSize, d.blockSize, d.logicalSectorSize], ['vhdx', 'dynamic', 100 * MiB, 8 * MiB, 512]);
    const f = cliJson(['info', at('f.vhdx')]);
    assert.deepEqual([f.format, f.diskType, f.allocatedBlocks, f.totalBlocks], ['vhdx', 'fixed', 20, 20]);
    assert.equal(cliJson(['info', at('s4k.vhdx')]).logicalSectorSize, 4096);
    const q = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', at('d.vhdx')]).toString());
    assert.deepEqual([q.format, q['virtual-size'], q['cluster-size']], ['vhdx', 100 * MiB, 8 * MiB]);
    assert.match(execFileSync('vhdiinfo', [at('f.vhdx')]).toString(), /Disk type\s*: Fixed/);
    assert.match(execFileSync('vhdiinfo', [at('s4k.vhdx')]).toString(), /Bytes per sector\s*: 4096 bytes/);
    for (const n of ['d.vhdx', 'f.vhdx']) assert.match(execFileSync('qemu-img', ['check', at(n)]).toString(), /No errors/);
    const bad = runCli(['create', at('x.vhd'), '--size', '10M', '--logical-sector', '4096']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /512-byte sectors only/);
  });

  it('write and read: qemu-io reads what diskimg wrote, diskimg reads what qemu-io wrote', () => {
    cliOk(['create', at('rw.vhdx'), '--size', '40M', '--block-size', '2M']);
    const data = randomBytes(rng(1), 3 * MiB + 777);
    cliOk(['write', at('rw.vhdx'), '--offset', String(5 * MiB - 300)], data);
    execFileSync('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x6b 30M 1M', at('rw.vhdx')]);
    const ours = cliOk(['read', at('rw.vhdx'), '--offset', String(5 * MiB - 300), '--length', String(data.length)]);
    assert.ok(ours.equals(data));
    assert.ok(cliOk(['read', at('rw.vhdx'), '--offset', String(30 * MiB), '--length', String(MiB)]).equals(Buffer.alloc(MiB, 0x6b)));
    execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', at('rw.vhdx'), at('rw.raw')]);
    const raw = readFileSync(at('rw.raw'));
    assert.ok(raw.subarray(5 * MiB - 300, 5 * MiB - 300 + data.length).equals(data));
    assert.ok(cliOk(['read', at('rw.vhdx')]).equals(raw));
    assert.match(execFileSync('qemu-img', ['check', at('rw.vhdx')]).toString(), /No errors/);
  });

  it('content decides the format, not the name: a VHDX named .vhd is read as VHDX', () => {
    copyFileSync(at('rw.vhdx'), at('misnamed.vhd'));
    assert.equal(cliJson(['info', at('misnamed.vhd')]).format, 'vhdx');
    assert.ok(cliOk(['read', at('misnamed.vhd')]).equals(readFileSync(at('rw.raw'))));
  });

  it('child, map, check: an AVHDX child reads through its parent as libvhdi reads it', () => {
    cliOk(['create', at('base.vhdx'), '--size', '16M', '--block-size', '1M']);
    cliOk(['write', at('base.vhdx'), '--offset', '0'], Buffer.alloc(16 * MiB, 0x11));
    cliOk(['child', at('base.vhdx'), at('top.avhdx')]);
    cliOk(['write', at('top.avhdx'), '--offset', '1000'], Buffer.alloc(100, 0x22));
    cliOk(['write', at('top.avhdx'), '--offset', String(4 * MiB)], Buffer.alloc(MiB, 0x33));
    const info = cliJson(['info', at('top.avhdx')]);
    assert.equal(info.diskType, 'differencing');
    assert.equal(info.parent.resolvedPath, at('base.vhdx'));
    assert.equal(info.parent.uuid, cliJson(['info', at('base.vhdx')]).dataWriteGuid);
    const map = cliJson(['map', at('top.avhdx')]) as Array<{ start: number; length: number; depth: number }>;
    const top = map.filter((e) => e.depth === 0).map((e) => [e.start, e.length]);
    assert.deepEqual(top, [[512, 1024], [4 * MiB, MiB]]);
    assert.deepEqual(cliJson(['check', at('top.avhdx')]), { ok: true, problems: [] });
    const theirs = execFileSync('/usr/bin/python3', [PYVHDI, at('top.avhdx'), at('base.vhdx')], { maxBuffer: 1 << 26 });
    assert.ok(cliOk(['read', at('top.avhdx')]).equals(theirs));
    assert.match(execFileSync('vhdiinfo', [at('top.avhdx')]).toString(), /Disk type\s*: Differential/);
  });

  it('a write to the parent changes its DataWriteGuid: check and read report the broken link', () => {
    cliOk(['create', at('p2.vhdx'), '--size', '4M', '--block-size', '1M']);
    cliOk(['child', at('p2.vhdx'), at('c2.avhdx')]);
    cliOk(['write', at('p2.vhdx'), '--offset', '0'], Buffer.alloc(512, 9));
    const r = runCli(['check', at('c2.avhdx'), '--json']);
    assert.equal(r.code, 1);
    const problems = JSON.parse(r.stdout.toString()).problems as Array<{ structure: string; message: string }>;
    assert.ok(problems.some((p) => p.structure === 'parent locator' && /DataWriteGuid/.test(p.message)), JSON.stringify(problems));
    const read = runCli(['read', at('c2.avhdx'), '--length', '512']);
    assert.equal(read.code, 2);
    assert.match(read.stderr, /DataWriteGuid/);
  });

  it('export: VHDX to raw as qemu-img convert; VHDX <-> VHD both ways; diff VHD against VHDX', () => {
    cliOk(['export', at('top.avhdx'), at('top.raw')]);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', at('top.raw'), at('top-copy.raw')]);
    const theirs = execFileSync('/usr/bin/python3', [PYVHDI, at('top.avhdx'), at('base.vhdx')], { maxBuffer: 1 << 26 });
    assert.ok(readFileSync(at('top.raw')).equals(theirs));
    cliOk(['export', at('top.avhdx'), at('top.vhd'), '--format', 'vhd-dynamic']);
    cliOk(['export', at('top.vhd'), at('again.vhdx'), '--format', 'vhdx-dynamic']);
    cliOk(['export', at('top.vhd'), at('again-fixed.vhdx'), '--format', 'vhdx-fixed']);
    for (const x of ['again.vhdx', 'again-fixed.vhdx']) {
      execFileSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', at(x), at('top.raw')]);
      assert.match(execFileSync('qemu-img', ['check', at(x)]).toString(), /No errors/);
    }
    assert.ok(cliOk(['read', at('top.vhd')]).equals(readFileSync(at('top.raw'))));
    assert.equal(runCli(['diff', at('top.vhd'), at('top.avhdx')]).code, 0);
    cliOk(['write', at('again.vhdx'), '--offset', String(8 * MiB)], Buffer.alloc(4096, 0x44));
    const d = runCli(['diff', at('top.vhd'), at('again.vhdx'), '--json']);
    assert.equal(d.code, 1);
    assert.deepEqual(JSON.parse(d.stdout.toString()).ranges, [{ start: 8 * MiB, length: 4096 }]);
  });

  it('snapshot, merge, discard, reparent: the chain reads the same, parent_linkage follows the merge', () => {
    const sub = at('ops');
    mkdirSync(sub);
    const base = path.join(sub, 'base.vhdx');
    cliOk(['create', base, '--size', '8M', '--block-size', '1M']);
    cliOk(['write', base, '--offset', '0'], Buffer.alloc(8 * MiB, 0x01));
    const c1 = path.join(sub, 'c1.avhdx');
    cliOk(['child', base, c1]);
    cliOk(['write', c1, '--offset', String(MiB)], Buffer.alloc(MiB + 512, 0x02));
    const c2 = cliOk(['snapshot', c1]).toString().trim();
    assert.ok(existsSync(c2));
    cliOk(['write', c2, '--offset', '100'], Buffer.alloc(50, 0x03));
    const before = cliOk(['read', c2]);
    // Merge c1 into base: c2 must be re-linked to base (its new DataWriteGuid) and read the same.
    cliOk(['merge', c1]);
    assert.equal(existsSync(c1), false);
    const after = cliJson(['info', c2]);
    assert.equal(after.parent.resolvedPath, base);
    assert.equal(after.parent.uuid, cliJson(['info', base]).dataWriteGuid);
    assert.ok(cliOk(['read', c2]).equals(before));
    assert.deepEqual(cliJson(['check', c2]), { ok: true, problems: [] });
    assert.match(execFileSync('qemu-img', ['check', base]).toString(), /No errors/);
    // Reparent after moving the parent.
    const moved = path.join(sub, 'moved');
    mkdirSync(moved);
    renameSync(base, path.join(moved, 'base.vhdx'));
    assert.equal(runCli(['read', c2, '--length', '512']).code, 2);
    cliOk(['reparent', c2, path.join(moved, 'base.vhdx')]);
    assert.ok(cliOk(['read', c2]).equals(before));
    const theirs = execFileSync('/usr/bin/python3', [PYVHDI, c2, path.join(moved, 'base.vhdx')], { maxBuffer: 1 << 26 });
    assert.ok(theirs.equals(before));
    // Discard the top.
    cliOk(['discard', c2]);
    assert.equal(existsSync(c2), false);
  });

  it('check and repair: a dirty log is reported, repaired by replaying it, and qemu then opens the file read-only', () => {
    const p = fixture('discutils_vhdx-log-replay.vhdx.gz', dir);
    const before = cliOk(['read', p, '--length', String(4 * MiB)]);
    const r = runCli(['check', p, '--json']);
    assert.equal(r.code, 0, 'a dirty log is a warning: reads replay it');
    const problems = JSON.parse(r.stdout.toString()).problems;
    assert.deepEqual(problems.map((x: { structure: string; severity: string }) => [x.severity, x.structure]), [['warning', 'log']]);
    assert.equal(runCli(['repair', p, '--dry-run']).code, 1, 'repair has the log to apply');
    assert.notEqual(spawnSync('qemu-img', ['info', p]).status, 0, 'qemu refuses the dirty log read-only');
    cliOk(['repair', p]);
    assert.deepEqual(cliJson(['check', p]), { ok: true, problems: [] });
    execFileSync('qemu-img', ['info', p]);
    assert.ok(cliOk(['read', p, '--length', String(4 * MiB)]).equals(before));
  });

  it('check and repair: a damaged header copy and region table copy are restored from the good ones', () => {
    cliOk(['create', at('dmg.vhdx'), '--size', '8M', '--block-size', '1M']);
    const b = readFileSync(at('dmg.vhdx'));
    b[64 * 1024 + 500] ^= 0xff;
    b[256 * 1024 + 500] ^= 0xff;
    writeFileSync(at('dmg.vhdx'), b);
    const r = runCli(['check', at('dmg.vhdx'), '--json']);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout.toString()).problems.map((x: { structure: string; offset: number }) => [x.structure, x.offset]), [['header', 65536], ['region table', 262144]]);
    cliOk(['repair', at('dmg.vhdx')]);
    assert.deepEqual(cliJson(['check', at('dmg.vhdx')]), { ok: true, problems: [] });
    assert.match(execFileSync('qemu-img', ['check', at('dmg.vhdx')]).toString(), /No errors/);
  });

  it('info on a Hyper-V fixture', () => {
    const p = fixture('qemu_iotest-dynamic-1G.vhdx.bz2', dir);
    const i = cliJson(['info', p]);
    assert.deepEqual([i.format, i.diskType, i.virtualSize, i.blockSize, i.allocatedBlocks], ['vhdx', 'dynamic', 1024 ** 3, 32 * MiB, 3]);
    assert.match(i.creator, /Microsoft Windows 6\.2\.9200/);
  });
});
