// `export` between qcow2, VHD, VHDX and raw, every direction, checked by qemu-img: compare of the
// output with the source (each read by qemu in its own format), check of each output qemu can
// check, and the format picked from the output's name when --format is not given.
import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { writeFileSync } from 'fs';
import * as path from 'path';
import { cliOk, rng, randomBytes, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

function qemuIo(fmt: string, img: string, cmds: string[]): void {
  execFileSync('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), img], { stdio: 'ignore' });
}

function qemuFormat(img: string): string {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', img]).toString()).format;
}

describe('qcow2: export between qcow2, VHD, VHDX and raw (qemu-img compare)', function () {
  this.timeout(300000);
  const t = tempDir('diskimg-qcow2-export-');
  after(() => t.cleanup());
  const at = (f: string) => path.join(t.dir, f);
  /** Sources as [file, qemu format]: a qcow2 overlay over a qcow2 base, VHD and VHDX made by qemu-img, a raw file. */
  const sources: Array<[string, string]> = [];

  before(() => {
    const size = 24 * MiB;
    const ops = ['write -P 0x41 0 3M', 'write -P 0x42 5249024 100k', 'write -z 8M 2M', 'write -P 0x43 20M 1M'];
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', at('base.qcow2'), String(size)]);
    qemuIo('qcow2', at('base.qcow2'), ops);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('src.qcow2')]);
    qemuIo('qcow2', at('src.qcow2'), ['write -P 0x51 1M 64k', 'write -z 2M 1M', 'write -P 0x52 9M 4k']);
    sources.push([at('src.qcow2'), 'qcow2']);
    for (const [f, fmt] of [['src.vhd', 'vpc'], ['src.vhdx', 'vhdx']]) {
      execFileSync('qemu-img', ['create', '-q', '-f', fmt, at(f), String(size)]);
      qemuIo(fmt, at(f), ops);
      sources.push([at(f), fmt]);
    }
    const raw = Buffer.alloc(size);
    randomBytes(rng(7), 3 * MiB).copy(raw, 2 * MiB);
    raw.fill(0x61, 12 * MiB, 13 * MiB);
    writeFileSync(at('src.img'), raw);
    sources.push([at('src.img'), 'raw']);
  });

  const targets: Array<[string, string, string]> = [
    ['raw', 'raw', 'raw'], ['vhd-dynamic', 'vhd', 'vpc'], ['vhd-fixed', 'vhd', 'vpc'], ['vhdx-dynamic', 'vhdx', 'vhdx'],
    ['vhdx-fixed', 'vhdx', 'vhdx'], ['qcow2-dynamic', 'qcow2', 'qcow2'],
  ];
  it('every source to every target reads as the source under qemu-img compare; qcow2 and VHDX outputs check clean', () => {
    const failures: string[] = [];
    for (const [src, sfmt] of sources) {
      for (const [target, ext, qfmt] of targets) {
        const out = at(`${path.basename(src).replace('.', '-')}-to-${target}.${ext}`);
        cliOk(['export', src, out, '--format', target]);
        // qemu probes a fixed VHD (footer at the end only) as raw: it is read as vpc by -F below.
        if (target !== 'vhd-fixed') assert.equal(qemuFormat(out), qfmt, out);
        const c = spawnSync('qemu-img', ['compare', '-f', sfmt, '-F', qfmt, src, out]);
        if (c.status !== 0) failures.push(`${path.basename(src)} -> ${target}: ${c.stdout}${c.stderr}`);
        if (qfmt === 'qcow2' || qfmt === 'vhdx') {
          const k = spawnSync('qemu-img', ['check', '-f', qfmt, out]);
          if (k.status !== 0) failures.push(`${path.basename(src)} -> ${target}: qemu-img check: ${k.stdout}${k.stderr}`);
        }
      }
    }
    assert.deepEqual(failures, []);
  });

  it('without --format the output name picks the format (.qcow2, .vhd, .vhdx dynamic; anything else raw)', () => {
    for (const [name, qfmt] of [['n.qcow2', 'qcow2'], ['n.vhd', 'vpc'], ['n.vhdx', 'vhdx'], ['n.img', 'raw'], ['n.bin', 'raw']]) {
      cliOk(['export', sources[0][0], at(name)]);
      assert.equal(qemuFormat(at(name)), qfmt, name);
      assert.equal(spawnSync('qemu-img', ['compare', '-F', qfmt, sources[0][0], at(name)]).status, 0, name);
    }
  });
});
