// `diskimg map --json` against `qemu-img map --output=json` on the same chains: every byte has the
// same depth, the same data flag, and zeros held without data (zero clusters and subclusters) are
// `zero: true, data: false` as qemu reports them. Layouts: 64 KiB, 512 B and 2 MiB clusters,
// extended L2, v2 (compat 0.10), deflate- and zstd-compressed bases; random qemu-io writes, zero
// writes and discards in base and overlay, and a three-layer chain.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as path from 'path';
import { cliJson, tempDir } from '../helpers/util';
import { qemuIo, randomQemuWrites } from '../helpers/qemuIo';

/** Data writes, zero writes (with and without unmap) and discards, up to 300 sectors each. */
const MIX = { data: 0.45, zero: 0.35, zeroUnmap: 0.1, maxSectors: 300 };


const KiB = 1024;
const MiB = 1024 * KiB;

interface QemuExtent { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean }
interface OurExtent { start: number; length: number; depth: number; data: boolean; zero?: boolean }
/** One range, as both tools must agree on it: the layer it comes from and what it holds there. */
interface Piece { start: number; length: number; depth: number; state: 'data' | 'zero' | 'absent' }

function merged(pieces: Piece[]): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    const last = out[out.length - 1];
    if (last && last.depth === p.depth && last.state === p.state && last.start + last.length === p.start) last.length += p.length;
    else out.push({ ...p });
  }
  return out;
}

function fromQemu(img: string): Piece[] {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', img], { maxBuffer: 1 << 28 }).toString()) as QemuExtent[];
  return merged(map.map((e) => ({ start: e.start, length: e.length, depth: e.depth, state: e.data ? 'data' : e.present ? 'zero' : 'absent' })));
}

function fromOurs(img: string): Piece[] {
  const map = cliJson(['map', img, '--json']) as OurExtent[];
  for (const e of map) if (e.zero) assert.equal(e.data, false, JSON.stringify(e));
  return merged(map.map((e) => ({ start: e.start, length: e.length, depth: e.depth, state: e.data ? 'data' : e.zero ? 'zero' : 'absent' })));
}

describe('qcow2: map --json agrees with qemu-img map', function () {
  this.timeout(300000);
  const t = tempDir('diskimg-qcow2-map-');
  after(() => t.cleanup());

  const layouts: Array<{ name: string; opts: string; compress?: 'zlib' | 'zstd' }> = [
    { name: '64 KiB clusters', opts: 'cluster_size=65536' },
    { name: '512 B clusters', opts: 'cluster_size=512' },
    { name: '2 MiB clusters', opts: 'cluster_size=2097152' },
    { name: 'extended L2, 64 KiB', opts: 'cluster_size=65536,extended_l2=on' },
    { name: 'extended L2, 32 KiB', opts: 'cluster_size=32768,extended_l2=on' },
    { name: 'v2 (compat 0.10)', opts: 'cluster_size=65536,compat=0.10' },
    { name: 'deflate-compressed base', opts: 'cluster_size=65536', compress: 'zlib' },
    { name: 'zstd-compressed base', opts: 'cluster_size=65536', compress: 'zstd' },
  ];
  layouts.forEach((l, i) => {
    it(`${l.name}: base, overlay and a three-layer chain`, () => {
      const cs = Number(/cluster_size=(\d+)/.exec(l.opts)![1]);
      const size = Math.max(16 * MiB, 32 * cs);
      const dir = t.dir;
      const base = path.join(dir, `b${i}.qcow2`);
      if (l.compress) {
        const src = path.join(dir, `s${i}.qcow2`);
        execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, src, String(size)]);
        randomQemuWrites(src, size, 100 + i, 40, MIX);
        execFileSync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `${l.opts},compression_type=${l.compress}`, src, base]);
      } else {
        execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, base, String(size)]);
      }
      randomQemuWrites(base, size, 200 + i, 30, MIX);
      const mid = path.join(dir, `m${i}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts.replace(',compat=0.10', ''), '-b', path.basename(base), '-F', 'qcow2', mid]);
      randomQemuWrites(mid, size, 300 + i, 30, MIX);
      // A whole cluster of zeros (the random zero writes are mostly partial clusters, which qemu fills with data).
      qemuIo(mid, [`write -z ${5 * cs} ${cs}`]);
      const top = path.join(dir, `t${i}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts.replace(',compat=0.10', ''), '-b', path.basename(mid), '-F', 'qcow2', top]);
      randomQemuWrites(top, size, 400 + i, 20, MIX);
      for (const img of [base, mid, top]) {
        const q = fromQemu(img);
        assert.deepEqual(fromOurs(img), q, `${l.name}: ${path.basename(img)}`);
        // The random writes must have made each kind of range the comparison is about.
        if (img === mid) assert.ok(q.some((p) => p.state === 'zero') && q.some((p) => p.state === 'data') && q.some((p) => p.state === 'absent'), JSON.stringify(q));
      }
    });
  });
});
