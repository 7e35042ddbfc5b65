import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { mergeChild } from '../../src/chain/merge';
import { DiskImageError } from '../../src/format/errors';
import { createImage, detectFormat, openImage } from '../../src/format/registry';
import { mountsOf } from '../../src/io/blockDevice';
import { CLI, cliJson, cliOk, randomBytes, readChain, rng, runCli, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Random sector-aligned writes into the child, mirrored in a flat model of the virtual disk. */
async function scribble(child: string, model: Buffer, seed: number, count: number, limit = model.length): Promise<void> {
  const rand = rng(seed);
  const chain = await openChain(child, { writable: true });
  try {
    for (let i = 0; i < count; i++) {
      const len = (1 + Math.floor(rand() * 64)) * 512;
      const off = Math.floor(rand() * ((limit - len) / 512)) * 512;
      const data = randomBytes(rand, len);
      await chain.write(off, data);
      data.copy(model, off);
    }
  } finally {
    await chain.close();
  }
}

describe('raw files and block devices as parents', () => {
  const t = tempDir('raw-');
  after(() => t.cleanup());
  let n = 0;
  const sub = () => {
    const d = path.join(t.dir, `case${n++}`);
    require('fs').mkdirSync(d);
    return d;
  };

  it('child of a raw file: vhd-util convention (nil parent UUID), size rounded up to a sector, reads through', async () => {
    const d = sub();
    const raw = path.join(d, 'disk.img');
    const size = 3 * MiB + 1000; // not a whole number of sectors
    const bytes = randomBytes(rng(1), size);
    writeFileSync(raw, bytes);
    const child = path.join(d, 'overlay.vhd');
    cliOk(['child', raw, child]);
    const info = cliJson(['info', '--json', child]);
    assert.equal(info.virtualSize, Math.ceil(size / 512) * 512);
    assert.equal(info.parent.uuid, '00000000-0000-0000-0000-000000000000');
    assert.equal(info.chain.length, 2);
    assert.deepEqual(Object.keys(info.chain[0]).sort(), ['diskType', 'path', 'uuid'], 'image layers keep the plain entry');
    assert.equal(info.chain[1].path, raw);
    assert.equal(info.chain[1].format, 'raw');
    assert.equal(info.chain[1].kind, 'raw file');
    assert.equal(info.chain[1].device, null);
    assert.equal(info.chain[1].virtualSize, size);
    assert.equal(info.chain[1].uuid, '00000000-0000-0000-0000-000000000000');
    assert.deepEqual(info.warnings, info.warnings.filter((w: string) => /CHS/.test(w)), 'no warning but CHS geometry');
    const padded = Buffer.concat([bytes, Buffer.alloc(info.virtualSize - size)]);
    assert.ok(cliOk(['read', child]).equals(padded));
    const check = cliJson(['check', '--json', child]);
    assert.equal(check.ok, true, JSON.stringify(check.problems));
    // Named on its own, the raw dump (disk.img) is a one-layer raw image (issue 13) ...
    assert.equal(cliJson(['info', raw]).format, 'raw');
    // ... while the same bytes under a name that suggests no raw dump are explained by the default format.
    const dat = path.join(d, 'disk.dat');
    writeFileSync(dat, bytes);
    const r = runCli(['info', dat]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not a VHD/);
    // Where a parent stands it is raw whatever its name.
    assert.equal((await detectFormat(raw, { rawFallback: true })).name, 'raw');
  });

  it('random writes over a raw parent match a flat model; merge writes the sectors in place and deletes the child', async () => {
    const d = sub();
    const raw = path.join(d, 'disk.img');
    const size = 5 * MiB;
    const model = randomBytes(rng(2), size);
    writeFileSync(raw, model);
    const child = path.join(d, 'a.vhd');
    await createChild(raw, child);
    await scribble(child, model, 3, 60);
    const grand = path.join(d, 'b.vhd');
    await createChild(child, grand);
    await scribble(grand, model, 4, 40);
    assert.ok((await readChain(grand)).equals(model));
    const chain = await openChain(grand);
    try {
      assert.deepEqual(chain.layers.map((l) => l.format), ['vhd', 'vhd', 'raw']);
      const ext = await chain.map();
      assert.ok(ext.some((e) => e.depth === 2 && e.data), 'the raw layer supplies data');
    } finally {
      await chain.close();
    }
    const inode = statSync(raw).ino;
    const result = await mergeChild(grand, { into: raw });
    assert.deepEqual(result.merged.map((p) => path.basename(p)), ['b.vhd', 'a.vhd']);
    assert.ok(!existsSync(grand) && !existsSync(child));
    assert.equal(statSync(raw).ino, inode, 'written in place, not replaced');
    assert.equal(statSync(raw).size, size);
    assert.ok(readFileSync(raw).equals(model));
  });

  it('merge into a raw file survives kill -9 after the copy; running it again completes it', async () => {
    const d = sub();
    const raw = path.join(d, 'disk.img');
    const model = randomBytes(rng(5), 4 * MiB);
    writeFileSync(raw, model);
    const child = path.join(d, 'c.vhd');
    await createChild(raw, child);
    await scribble(child, model, 6, 30);
    for (const point of ['flushed', 'deleted-one']) {
      if (!existsSync(child)) break;
      const r = spawnSync(process.execPath, [CLI, 'merge', child], { env: { ...process.env, DISKIMG_FAILPOINT: point } });
      assert.equal(r.signal, 'SIGKILL', `killed at ${point}`);
      if (existsSync(child)) assert.ok((await readChain(child)).equals(model), `chain reads the same after a kill at ${point}`);
    }
    if (existsSync(child)) cliOk(['merge', child]);
    assert.ok(!existsSync(child));
    assert.ok(readFileSync(raw).equals(model));
  });

  it('merge refuses data the child holds past the end of an unaligned raw parent, leaving the chain readable', async () => {
    const d = sub();
    const raw = path.join(d, 'odd.img');
    const size = MiB + 100;
    const model = randomBytes(rng(7), size);
    writeFileSync(raw, model);
    const child = path.join(d, 'o.vhd');
    await createChild(raw, child);
    const chain = await openChain(child, { writable: true });
    await chain.write(MiB, Buffer.alloc(512, 0x5a));
    await chain.close();
    await assert.rejects(mergeChild(child), (e: unknown) => e instanceof DiskImageError && e.code === 'ESIZE' && /past the end of the raw image/.test(e.message));
    const after = await readChain(child);
    assert.ok(after.subarray(MiB, MiB + 512).equals(Buffer.alloc(512, 0x5a)));
    assert.ok(after.subarray(0, MiB).equals(model.subarray(0, MiB)));
  });

  it('a nil parent UUID that leads to a VHD is a UUID mismatch, not a raw read of the VHD', async () => {
    const d = sub();
    const raw = path.join(d, 'parent.vhd');
    writeFileSync(raw, randomBytes(rng(8), 2 * MiB));
    const child = path.join(d, 'x.vhd');
    await createChild(raw, child);
    // Replace the raw parent by a VHD of the same name.
    require('fs').unlinkSync(raw);
    await createImage(raw, { size: 2 * MiB, exactSize: true });
    const r = runCli(['read', child, '--length', '512']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /parent UUID mismatch: the child expects 00000000-0000-0000-0000-000000000000/);
    const c = runCli(['check', '--json', child]);
    assert.equal(c.code, 1);
    const check = JSON.parse(c.stdout.toString());
    assert.equal(check.ok, false);
    assert.ok(check.problems.some((p: { severity: string; message: string }) => p.severity === 'error' && /parent UUID 00000000-0000-0000-0000-000000000000 does not match/.test(p.message)), c.stdout.toString());
  });

  it('a raw parent is opened read-only', async () => {
    const d = sub();
    const raw = path.join(d, 'ro.img');
    writeFileSync(raw, Buffer.alloc(MiB, 1));
    const img = await openImage(raw, { rawFallback: true });
    try {
      assert.equal(img.format, 'raw');
      assert.equal(img.writable, false);
      await assert.rejects(img.write(0, Buffer.alloc(512), async () => undefined), /read-only/);
    } finally {
      await img.close();
    }
  });

  it('mount check reads /proc/self/mountinfo by MAJ:MIN (device or a partition of it)', () => {
    // loop0 is 7:0; a line for it and one for another device.
    const rdev = (7 << 8) | 0;
    const info = [
      '36 25 7:0 / /mnt/a\\040b rw,relatime shared:1 - ext4 /dev/loop0 rw',
      '37 25 8:1 / /boot rw - ext4 /dev/sda1 rw',
    ].join('\n');
    assert.deepEqual(mountsOf(rdev, info), ['/mnt/a b']);
    assert.deepEqual(mountsOf((8 << 8) | 2, info), []);
  });

  describe('loop devices', function () {
    let loop: string | null = null;
    let backing = '';
    const d = path.join(t.dir, 'loop');
    before(function () {
      require('fs').mkdirSync(d, { recursive: true });
      backing = path.join(d, 'backing.img');
      writeFileSync(backing, randomBytes(rng(9), 4 * MiB));
      const r = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
      if (r.status !== 0) {
        console.log(`    (loop device tests not run: losetup -f --show failed: ${(r.stderr || r.error?.message || '').trim()})`);
        this.skip();
      }
      loop = r.stdout.trim();
    });
    after(() => {
      if (loop) spawnSync('losetup', ['-d', loop]);
    });

    it('child of a block device: size from sysfs, kind block device; merge only with --force, in place', async () => {
      const dev = loop!;
      const child = path.join(d, 'dev.vhd');
      cliOk(['child', dev, child]);
      const info = cliJson(['info', '--json', child]);
      assert.equal(info.virtualSize, 4 * MiB);
      assert.equal(info.chain[1].kind, 'block device');
      assert.equal(info.chain[1].path, dev);
      assert.equal(info.chain[1].device, dev);
      const model = readFileSync(backing);
      assert.ok(cliOk(['read', child]).equals(model));
      await scribble(child, model, 10, 20);
      const r = runCli(['merge', child]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /block device .* without --force/);
      assert.ok(existsSync(child));
      cliOk(['merge', child, '--force']);
      assert.ok(!existsSync(child));
      // The loop device writes through to its backing file.
      spawnSync('sync');
      const dd = spawnSync('dd', [`if=${dev}`, 'bs=1M', 'iflag=direct', 'status=none'], { maxBuffer: 8 * MiB });
      assert.ok(dd.stdout.equals(model));
    });

    it('a mounted block device is never written, even with --force', async function () {
      const dev = loop!;
      const mnt = path.join(d, 'mnt');
      require('fs').mkdirSync(mnt, { recursive: true });
      const mk = spawnSync('mkfs.ext4', ['-q', '-F', dev], { encoding: 'utf8' });
      const mount = mk.status === 0 ? spawnSync('mount', [dev, mnt], { encoding: 'utf8' }) : mk;
      if (mount.status !== 0) {
        console.log(`    (mounted-device test not run: ${(mount.stderr || mount.error?.message || '').trim()})`);
        this.skip();
      }
      try {
        const child = path.join(d, 'm.vhd');
        cliOk(['child', dev, child]);
        const r = runCli(['merge', child, '--force']);
        assert.equal(r.code, 2);
        assert.match(r.stderr, /mounted/);
      } finally {
        spawnSync('umount', [mnt]);
      }
    });
  });
});
