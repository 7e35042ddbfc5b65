import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { copyFileSync, openSync, readSync, closeSync, readFileSync, statSync, writeFileSync } from 'fs';
import * as path from 'path';
import { readThrough } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { PayloadBlockState } from '../../src/format/vhdx/bat';
import { createVhdx } from '../../src/format/vhdx/create';
import { createVhdxChild } from '../../src/format/vhdx/createChild';
import { HEADER_OFFSETS, parseHeader, serializeHeader } from '../../src/format/vhdx/header';
import { repairImage } from '../../src/chain/repair';
import { VhdxImage } from '../../src/format/vhdx/vhdxImage';
import { buildDirtyLog, runKillTest } from '../helpers/vhdxLog';
import { fixture, hasTool, randomBytes, rng, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;
/** A differencing child of the image at `parent`. */
async function childOf(parent: string, child: string): Promise<void> {
  const p = await VhdxImage.open(parent, { linkOnly: true });
  try {
    await createVhdxChild(p, child);
  } finally {
    await p.close();
  }
}

const zeros = async (_o: number, t: Buffer) => { t.fill(0); };

function fileHash(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

/** Ranges holding data in a raw file (qemu-img map uses SEEK_DATA on raw files). */
function rawDataRanges(raw: string): Array<[number, number]> {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '-f', 'raw', '--output=json', raw]).toString()) as Array<{ start: number; length: number; data: boolean }>;
  return map.filter((e) => e.data).map((e) => [e.start, e.length]);
}

/**
 * Compares our view of `vhdx` with a raw file of the same disk: byte for byte wherever either
 * side holds data (everything else is zero on both sides by construction), in 4 MiB pieces.
 */
async function assertSameAsRaw(img: VhdxImage, raw: string, layers: VhdxImage[] = [img]): Promise<number> {
  assert.equal(statSync(raw).size, img.virtualSize);
  const ranges: Array<[number, number]> = rawDataRanges(raw);
  for (const r of await img.runs(0, img.virtualSize)) if (r.present) ranges.push([r.offset, r.length]);
  const fd = openSync(raw, 'r');
  let compared = 0;
  try {
    for (const [start, length] of ranges) {
      for (let pos = start; pos < start + length; pos += 4 * MiB) {
        const n = Math.min(4 * MiB, start + length - pos);
        const ours = Buffer.alloc(n);
        await readThrough(layers, 0, pos, ours);
        const theirs = Buffer.alloc(n);
        readSync(fd, theirs, 0, n, pos);
        if (!ours.equals(theirs)) {
          let i = 0;
          while (ours[i] === theirs[i]) i++;
          assert.fail(`${img.path}: differs from ${raw} at virtual offset ${pos + i}`);
        }
        compared += n;
      }
    }
  } finally {
    closeSync(fd);
  }
  return compared;
}

function vhdiinfo(p: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of execFileSync('vhdiinfo', [p]).toString().split('\n')) {
    const m = /^\s*([^:]+?)\s*:\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

const haveQemu = hasTool('qemu-img') && hasTool('qemu-io');
const haveLibvhdi = hasTool('vhdiinfo') && spawnSync('/usr/bin/python3', ['-c', 'import pyvhdi']).status === 0;
const PYVHDI = path.join(__dirname, '..', 'helpers', 'pyvhdi_read.py');

describe('VHDX images', function () {
  this.timeout(300_000);
  let dir: string;
  let cleanup: () => void;
  before(function () {
    if (!haveQemu || !haveLibvhdi) this.skip(); // scripts/setup.sh installs qemu-utils and libvhdi
    ({ dir, cleanup } = tempDir('vhdx-'));
  });
  after(() => cleanup?.());

  describe('fixtures from other tools', () => {
    const cases: Array<{ name: string; dirty: boolean; size: number; blockSize: number; allocated: number }> = [
      { name: 'qemu_iotest-dynamic-1G.vhdx.bz2', dirty: false, size: 1024 ** 3, blockSize: 32 * MiB, allocated: 3 },
      { name: 'qemu_iotest-dirtylog-10G-4M.vhdx.bz2', dirty: true, size: 10 * 1024 ** 3, blockSize: MiB, allocated: 18 },
      { name: 'discutils_swap.vhdx.gz', dirty: false, size: 10 * 1024 ** 3, blockSize: 32 * MiB, allocated: 1 },
      { name: 'discutils_vhdx-log-replay.vhdx.gz', dirty: true, size: 1024 ** 3, blockSize: 32 * MiB, allocated: 1 },
    ];
    for (const c of cases) {
      it(`${c.name}: metadata as vhdiinfo reports it, contents as qemu-img reads them${c.dirty ? ' (log replayed in memory, file untouched)' : ''}`, async () => {
        const p = fixture(c.name, dir);
        const before = fileHash(p);
        const img = await VhdxImage.open(p);
        try {
          const info = vhdiinfo(p);
          assert.equal(img.virtualSize, c.size);
          assert.equal(Number(/\((\d+) bytes\)/.exec(info['Media size'])![1]), img.virtualSize);
          assert.equal(info['Bytes per sector'], `${img.sectorSize} bytes`);
          assert.equal(info['Identifier'], img.dataWriteGuid);
          assert.equal(info['Disk type'], 'Dynamic');
          assert.equal(img.diskType, 'dynamic');
          assert.equal(img.blockSize, c.blockSize);
          assert.equal(img.allocatedBlockCount(), c.allocated);
          assert.equal(img.layout.replayedInMemory, c.dirty);
          if (c.dirty) assert.ok(img.layout.replayedEntries > 0);
          // qemu replays the log only on a writable open: give it a copy.
          const copy = path.join(dir, `q-${path.basename(p)}`);
          copyFileSync(p, copy);
          if (c.dirty) execFileSync('qemu-img', ['check', '-r', 'all', copy]);
          const raw = `${copy}.raw`;
          execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', copy, raw]);
          const compared = await assertSameAsRaw(img, raw);
          assert.ok(compared >= c.allocated * c.blockSize);
        } finally {
          await img.close();
        }
        assert.equal(fileHash(p), before, 'a read-only open must not change the file');
      });
    }

    it('a writable open replays the log into the file: qemu then opens it read-only and reads the same', async () => {
      const p = fixture('qemu_iotest-dirtylog-10G-4M.vhdx.bz2', dir);
      const ref = path.join(dir, 'ref.vhdx');
      copyFileSync(p, ref);
      execFileSync('qemu-img', ['check', '-r', 'all', ref]);
      const img = await VhdxImage.open(p, { writable: true });
      assert.match(img.warnings.join(), /replayed 1 log entry into the file/);
      assert.equal(img.layout.replayedInMemory, false);
      await img.close();
      const h = parseHeader(readFileSync(p).subarray(HEADER_OFFSETS[0], HEADER_OFFSETS[0] + 4096));
      const h2 = parseHeader(readFileSync(p).subarray(HEADER_OFFSETS[1], HEADER_OFFSETS[1] + 4096));
      assert.ok(h.logGuid.equals(Buffer.alloc(16)) && h2.logGuid.equals(Buffer.alloc(16)), 'both headers say the log is empty');
      // Read-only qemu refuses a dirty log: this succeeding is the proof the log is clean.
      execFileSync('qemu-img', ['compare', '-U', '-f', 'vhdx', '-F', 'vhdx', p, ref]);
      assert.match(execFileSync('qemu-img', ['check', p]).toString(), /No errors/);
    });
  });

  describe('images written by qemu-img and qemu-io', () => {
    const variants = [
      { name: 'dynamic-1M', opts: 'subformat=dynamic,block_size=1M', size: '64M' },
      { name: 'dynamic-8M-zero', opts: 'subformat=dynamic,block_size=8M,block_state_zero=on', size: '100M' },
      { name: 'dynamic-32M-nozero', opts: 'subformat=dynamic,block_size=32M,block_state_zero=off,log_size=2M', size: '200M' },
      { name: 'fixed-2M', opts: 'subformat=fixed,block_size=2M', size: '40M' },
    ];
    for (const v of variants) {
      it(`${v.name}: reads byte-identical to qemu-img convert`, async () => {
        const p = path.join(dir, `${v.name}.vhdx`);
        execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', v.opts, p, v.size]);
        execFileSync('qemu-io', ['-f', 'vhdx',
          '-c', 'write -P 0x5a 0 65536',
          '-c', 'write -P 0xa5 1000448 3145728',
          '-c', 'write -P 0x33 20971520 512',
          '-c', 'write -z 1048576 1048576',
          '-c', 'write -P 0x77 33554432 4096', p]);
        const raw = `${p}.raw`;
        execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', p, raw]);
        const img = await VhdxImage.open(p);
        try {
          assert.equal(img.diskType, v.name.startsWith('fixed') ? 'fixed' : 'dynamic');
          assert.equal(img.warnings.length, 0, img.warnings.join());
          await assertSameAsRaw(img, raw);
          const whole = Buffer.alloc(img.virtualSize);
          await readThrough([img], 0, 0, whole);
          assert.ok(whole.equals(readFileSync(raw)));
        } finally {
          await img.close();
        }
      });
    }
  });

  describe('images we write', () => {
    for (const type of ['dynamic', 'fixed'] as const) {
      for (const blockSize of [MiB, 4 * MiB]) {
        it(`${type}, ${blockSize / MiB} MiB blocks: qemu-img check clean, qemu-img compare identical to a flat model`, async () => {
          const p = path.join(dir, `ours-${type}-${blockSize}.vhdx`);
          const size = 48 * MiB + 7 * 512;
          assert.equal(await createVhdx(p, { size, type, blockSize }), size);
          const model = Buffer.alloc(size);
          const rand = rng(blockSize + (type === 'fixed' ? 1 : 0));
          const img = await VhdxImage.open(p, { writable: true });
          const dwBefore = img.dataWriteGuid;
          for (let i = 0; i < 40; i++) {
            const len = 1 + Math.floor(rand() * 3 * MiB);
            const off = Math.floor(rand() * (size - len));
            const data = randomBytes(rand, len);
            await img.write(off, data, zeros);
            data.copy(model, off);
          }
          assert.notEqual(img.dataWriteGuid, dwBefore, 'DataWriteGuid renewed by the first write');
          await img.close();
          const raw = `${p}.model`;
          writeFileSync(raw, model);
          execFileSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p, raw]);
          assert.match(execFileSync('qemu-img', ['check', p]).toString(), /No errors/);
          const info = vhdiinfo(p);
          assert.equal(info['Disk type'], type === 'fixed' ? 'Fixed' : 'Dynamic');
          const back = await VhdxImage.open(p);
          try {
            assert.equal(back.diskType, type);
            assert.equal(back.layout.replayedEntries, 0, 'closed with an empty log');
            const whole = Buffer.alloc(size);
            await readThrough([back], 0, 0, whole);
            assert.ok(whole.equals(model));
          } finally {
            await back.close();
          }
        });
      }
    }

    it('4096-byte logical sectors (which qemu does not open): libvhdi reads what we wrote', async () => {
      const p = path.join(dir, 'ours-4k.vhdx');
      const size = 30 * MiB;
      await createVhdx(p, { size, blockSize: MiB, logicalSectorSize: 4096 });
      const model = Buffer.alloc(size);
      const img = await VhdxImage.open(p, { writable: true });
      const rand = rng(4096);
      for (let i = 0; i < 20; i++) {
        const len = 1 + Math.floor(rand() * MiB);
        const off = Math.floor(rand() * (size - len));
        const data = randomBytes(rand, len);
        await img.write(off, data, zeros);
        data.copy(model, off);
      }
      await img.close();
      assert.equal(vhdiinfo(p)['Bytes per sector'], '4096 bytes');
      const theirs = execFileSync('/usr/bin/python3', [PYVHDI, p], { maxBuffer: 1 << 27 });
      assert.ok(theirs.equals(model));
    });

    for (const sector of [512, 4096] as const) {
      it(`differencing (${sector}-byte sectors): libvhdi reads the child through its parent as our model says`, async () => {
        const parent = path.join(dir, `base-${sector}.vhdx`);
        const child = path.join(dir, `child-${sector}.avhdx`);
        const size = 24 * MiB;
        await createVhdx(parent, { size, blockSize: MiB, logicalSectorSize: sector });
        const model = Buffer.alloc(size);
        const rand = rng(sector);
        const p = await VhdxImage.open(parent, { writable: true });
        const base = randomBytes(rand, 10 * MiB);
        await p.write(3 * MiB, base, zeros);
        base.copy(model, 3 * MiB);
        await p.close();
        await childOf(parent, child);
        const c = await VhdxImage.open(child, { writable: true });
        const pr = await VhdxImage.open(parent);
        try {
          assert.equal(c.diskType, 'differencing');
          assert.equal(c.resolveParent().resolvedPath, parent);
          assert.ok(c.linksTo(pr), 'parent_linkage is the parent DataWriteGuid');
          const layers = [c, pr];
          const below = (o: number, t: Buffer) => readThrough(layers, 1, o, t);
          // Partial sectors, whole blocks, a write across a block boundary.
          const writes: Array<[number, number]> = [[1000, 10], [3 * MiB - 5, MiB], [8 * MiB, MiB], [12 * MiB + 300, 5000], [20 * MiB, 3]];
          for (let i = 0; i < 25; i++) writes.push([Math.floor(rand() * (size - 70000)), 1 + Math.floor(rand() * 70000)]);
          for (const [off, len] of writes) {
            const data = randomBytes(rand, len);
            await c.write(off, data, below);
            data.copy(model, off);
          }
          const view = Buffer.alloc(size);
          await readThrough(layers, 0, 0, view);
          assert.ok(view.equals(model), 'our own chain read');
          assert.equal(c.blockState(8), PayloadBlockState.FullyPresent);
          assert.equal(c.blockState(0), PayloadBlockState.PartiallyPresent);
        } finally {
          await c.close();
          await pr.close();
        }
        const info = vhdiinfo(child);
        assert.equal(info['Disk type'], 'Differential');
        assert.equal(info['Parent identifier'], (await VhdxImage.open(parent).then(async (i) => { const g = i.dataWriteGuid; await i.close(); return g; })));
        const theirs = execFileSync('/usr/bin/python3', [PYVHDI, child, parent], { maxBuffer: 1 << 27 });
        assert.ok(theirs.equals(model), 'pyvhdi reads the chain as the model');
      });
    }

    it('a write to the parent renews its DataWriteGuid, so the old child no longer links to it', async () => {
      const parent = path.join(dir, 'guid-base.vhdx');
      const child = path.join(dir, 'guid-child.avhdx');
      await createVhdx(parent, { size: 8 * MiB, blockSize: MiB });
      await childOf(parent, child);
      const p = await VhdxImage.open(parent, { writable: true });
      const fw = p.fileWriteGuid;
      await p.write(0, Buffer.alloc(512, 1), zeros);
      assert.notEqual(p.fileWriteGuid, fw);
      await p.close();
      const c = await VhdxImage.open(child);
      const p2 = await VhdxImage.open(parent);
      try {
        assert.equal(c.linksTo(p2), false);
      } finally {
        await c.close();
        await p2.close();
      }
    });
  });

  describe('the log', () => {
    // (helpers in test/helpers/vhdxLog.ts)
    it('a hand-built log entry (wrapped across the end of the ring): we replay it in memory, qemu replays it into a copy, both read the same', async () => {
      const p = path.join(dir, 'handlog.vhdx');
      await createVhdx(p, { size: 16 * MiB, blockSize: MiB });
      const img = await VhdxImage.open(p, { writable: true });
      await img.write(0, Buffer.alloc(MiB, 0x42), zeros);
      await img.close();
      // Points block 5 at block 0's data and zeroes nothing else; the entry straddles the ring's end.
      buildDirtyLog(p, { batIndex: 5, copyFromIndex: 0, position: 1024 * 1024 - 4096 });
      const before = fileHash(p);
      const dirty = await VhdxImage.open(p);
      try {
        assert.equal(dirty.layout.replayedInMemory, true);
        assert.equal(dirty.blockState(5), PayloadBlockState.FullyPresent);
        const b = Buffer.alloc(MiB);
        await dirty.readOwn(5 * MiB, b);
        assert.ok(b.equals(Buffer.alloc(MiB, 0x42)));
      } finally {
        await dirty.close();
      }
      assert.equal(fileHash(p), before);
      const copy = `${p}.qemu`;
      copyFileSync(p, copy);
      execFileSync('qemu-img', ['check', '-r', 'all', copy]);
      const raw = `${copy}.raw`;
      execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', copy, raw]);
      const again = await VhdxImage.open(p);
      try {
        await assertSameAsRaw(again, raw);
      } finally {
        await again.close();
      }
    });

    it('kill -9 during writes: every file opens (log replayed) and holds each completed write, torn ones all-or-nothing per block', async function () {
      for (let round = 0; round < 4; round++) await runKillTest(dir, round);
    });
  });

  describe('damaged images', () => {
    let good: string;
    before(async () => {
      good = path.join(dir, 'good.vhdx');
      await createVhdx(good, { size: 8 * MiB, blockSize: MiB });
      const img = await VhdxImage.open(good, { writable: true });
      await img.write(0, Buffer.alloc(2 * MiB, 7), zeros);
      await img.close();
    });
    const damaged = (name: string, patch: (b: Buffer) => void): string => {
      const b = readFileSync(good);
      patch(b);
      const p = path.join(dir, name);
      writeFileSync(p, b);
      return p;
    };
    const expectError = async (p: string, structure: string, offset: number, what: RegExp) => {
      await assert.rejects(VhdxImage.open(p), (e: unknown) => {
        assert.ok(e instanceof DiskImageError, String(e));
        assert.equal(e.structure, structure);
        assert.equal(e.offset, offset);
        assert.match(e.message, what);
        assert.ok(e.message.startsWith(p));
        return true;
      });
    };

    it('one bad header checksum: the other header is used, with a warning', async () => {
      const p = damaged('hdr1.vhdx', (b) => { b[HEADER_OFFSETS[1] + 200] ^= 1; });
      const img = await VhdxImage.open(p);
      assert.equal(img.layout.currentHeader, 0);
      assert.match(img.warnings.join(), /header 2 at offset 131072 has a wrong checksum/);
      await img.close();
    });
    it('both headers bad: refused, naming the header', async () => {
      await expectError(damaged('hdr2.vhdx', (b) => { b[HEADER_OFFSETS[0] + 200] ^= 1; b[HEADER_OFFSETS[1] + 200] ^= 1; }), 'header', 65536, /neither header is valid/);
    });
    it('headers at the 64-bit sequence limit: a write is refused naming the header, repair renumbers them', async () => {
      const p = damaged('seqmax.vhdx', (b) => {
        for (const [slot, seq] of [[0, 0xffff_ffff_ffff_fffen], [1, 0xffff_ffff_ffff_ffffn]] as Array<[number, bigint]>) {
          const h = parseHeader(b.subarray(HEADER_OFFSETS[slot], HEADER_OFFSETS[slot] + 4096));
          serializeHeader({ ...h, sequenceNumber: seq }).copy(b, HEADER_OFFSETS[slot]);
        }
      });
      const before = fileHash(p);
      const img = await VhdxImage.open(p, { writable: true });
      await assert.rejects(img.write(3 * MiB, Buffer.alloc(4096, 9), zeros), (e: unknown) =>
        e instanceof DiskImageError && e.structure === 'header' && e.code === 'EFORMAT' && /64-bit limit/.test(e.message));
      await img.close();
      assert.equal(fileHash(p), before, 'nothing written');
      await repairImage(p);
      const fixed = await VhdxImage.open(p, { writable: true });
      await fixed.write(3 * MiB, Buffer.alloc(4096, 9), zeros);
      await fixed.close();
      const again = await VhdxImage.open(p);
      const out = Buffer.alloc(4096);
      await readThrough([again], 0, 3 * MiB, out);
      await again.close();
      assert.ok(out.equals(Buffer.alloc(4096, 9)));
      assert.ok(hasTool('qemu-img'));
      const chk = spawnSync('qemu-img', ['check', '-f', 'vhdx', p]);
      assert.equal(chk.status, 0, chk.stdout.toString() + chk.stderr.toString());
    });
    it('a BAT entry pointing into the log: a write into that block is refused naming the entry, the log untouched', async () => {
      const probe = await VhdxImage.open(good);
      const batEntry = probe.layout.bat.fileOffset; // block 0's payload entry is the first
      const logOffset = probe.header.logOffset;
      const logLength = probe.header.logLength;
      await probe.close();
      const p = damaged('batlog.vhdx', (b) => { b.writeBigUInt64LE((BigInt(logOffset / MiB) << 20n) | BigInt(PayloadBlockState.FullyPresent), batEntry); });
      const logBefore = readFileSync(p).subarray(logOffset, logOffset + logLength);
      const img = await VhdxImage.open(p, { writable: true });
      await assert.rejects(img.write(4096, Buffer.alloc(4096, 5), zeros), (e: unknown) =>
        e instanceof DiskImageError && e.structure === 'BAT entry' && e.offset === batEntry && e.code === 'ECORRUPT' && /lies in the log/.test(e.message));
      await img.close();
      assert.ok(readFileSync(p).subarray(logOffset, logOffset + logLength).equals(logBefore));
    });
    it('not a VHDX', async () => {
      await expectError(damaged('sig.vhdx', (b) => { b.write('VHDXFILE', 0); }), 'file identifier', 0, /not a VHDX/);
    });
  });
});
