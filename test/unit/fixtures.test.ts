import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import { copyFileSync, readFileSync } from 'fs';
import * as path from 'path';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { cliJson, cliOk, describeFixtures, fixture, runCli, tempDir } from '../helpers/util';

interface Expect {
  file: string;
  diskType: string;
  virtualSize: number;
  qemuSize?: number;
  creator: string;
  creatorVersion?: string;
  hostOs?: string;
  totalBlocks: number;
  allocatedBlocks: number;
  footerOk: boolean;
  headerOk: boolean | null;
  chs?: [number, number, number];
  /** Compare every byte with qemu-img convert (small images only). */
  compareWithQemu?: boolean;
}

/** The facts in ../shared/fixtures/README.md, one row per real image. */
const EXPECTED: Expect[] = [
  { file: 'qemu_virtualpc-dynamic.vhd.bz2', diskType: 'dynamic', virtualSize: 136365211648, qemuSize: 136363130880, creator: 'vpc', hostOs: 'Wi2k', totalBlocks: 65024, allocatedBlocks: 0, footerOk: true, headerOk: true, chs: [65278, 16, 255] },
  { file: 'qemu_hyperv2012r2-dynamic.vhd.bz2', diskType: 'dynamic', virtualSize: 136365211648, qemuSize: 136365211648, creator: 'win', creatorVersion: '6.3', totalBlocks: 65024, allocatedBlocks: 0, footerOk: true, headerOk: true },
  { file: 'qemu_d2v-zerofilled.vhd.bz2', diskType: 'dynamic', virtualSize: 263454720, qemuSize: 263454720, creator: 'd2v', totalBlocks: 126, allocatedBlocks: 126, footerOk: true, headerOk: true, chs: [65535, 16, 255] },
  { file: 'dfvfs_image.vhd.gz', diskType: 'dynamic', virtualSize: 104448, creator: 'qemu', totalBlocks: 1, allocatedBlocks: 1, footerOk: false, headerOk: true },
  { file: 'plaso_image.vhd.gz', diskType: 'dynamic', virtualSize: 104448, qemuSize: 104448, creator: 'qemu', totalBlocks: 1, allocatedBlocks: 1, footerOk: true, headerOk: true, compareWithQemu: true },
  { file: 'dfvfs_ext2.vhd.gz', diskType: 'dynamic', virtualSize: 4212736, qemuSize: 4212736, creator: 'qemu', totalBlocks: 3, allocatedBlocks: 1, footerOk: true, headerOk: true, compareWithQemu: true },
  { file: 'freebsd-mkimg_img-1x1-512-bsd.vhd.gz', diskType: 'dynamic', virtualSize: 4352000, qemuSize: 4352000, creator: '*img', creatorVersion: '2.0', totalBlocks: 3, allocatedBlocks: 3, footerOk: true, headerOk: true, compareWithQemu: true },
  { file: 'freebsd-mkimg-2015_img-1x1-512-bsd.vhd.gz', diskType: 'dynamic', virtualSize: 6291456, qemuSize: 6266880, creator: '*img', creatorVersion: '1.0', hostOs: 'FBSD', totalBlocks: 3, allocatedBlocks: 3, footerOk: true, headerOk: true, compareWithQemu: true },
  { file: 'freebsd-mkimg_img-1x1-512-bsd.vhdf.gz', diskType: 'fixed', virtualSize: 5242880, qemuSize: 5222400, creator: '*img', totalBlocks: 3, allocatedBlocks: 3, footerOk: true, headerOk: null, compareWithQemu: true },
  { file: 'freebsd-mkimg-2015_img-1x1-512-bsd.vhdf.gz', diskType: 'fixed', virtualSize: 5242880, qemuSize: 5222400, creator: '*img', totalBlocks: 3, allocatedBlocks: 3, footerOk: true, headerOk: null, compareWithQemu: true },
  { file: 'dfvfs_fat-differential.vhd.gz', diskType: 'differencing', virtualSize: 4194304, creator: 'win', creatorVersion: '10.0', totalBlocks: 2, allocatedBlocks: 1, footerOk: true, headerOk: true },
  { file: 'dfvfs_image-differential.vhd.gz', diskType: 'differencing', virtualSize: 104448, creator: 'qemu', totalBlocks: 1, allocatedBlocks: 1, footerOk: false, headerOk: false },
];

function vhdiIdentifier(file: string): string {
  const out = execFileSync('vhdiinfo', [file]).toString();
  return /Identifier\s*:\s*([0-9a-f-]{36})/.exec(out)![1];
}

describeFixtures('real images from other tools (../shared/fixtures)', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-fixtures-')));
  after(() => cleanup());

  for (const e of EXPECTED) {
    it(`${e.file}: info is right${e.compareWithQemu ? ' and every byte matches qemu-img' : ''}`, async () => {
      const img = fixture(e.file, dir);
      const info = cliJson(['info', img]);
      assert.equal(info.format, 'vhd');
      assert.equal(info.path, img);
      assert.equal(info.diskType, e.diskType);
      assert.equal(info.virtualSize, e.virtualSize);
      assert.equal(info.creatorApplication, e.creator);
      if (e.creatorVersion) assert.equal(info.creatorVersion, e.creatorVersion);
      if (e.hostOs) assert.equal(info.creatorHostOs, e.hostOs);
      assert.equal(info.totalBlocks, e.totalBlocks);
      assert.equal(info.allocatedBlocks, e.allocatedBlocks);
      assert.equal(info.footerChecksumValid, e.footerOk);
      assert.equal(info.headerChecksumValid, e.headerOk);
      assert.equal(info.blockSize === null, e.diskType === 'fixed');
      assert.match(info.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(info.uuid, vhdiIdentifier(img), 'UUID as libvhdi prints it');
      if (e.chs) assert.deepEqual([info.geometry.cylinders, info.geometry.heads, info.geometry.sectorsPerTrack], e.chs);
      assert.equal(info.chsSize, info.geometry.cylinders * info.geometry.heads * info.geometry.sectorsPerTrack * 512);
      if (info.chsSize !== info.virtualSize) assert.ok(info.warnings.some((w: string) => w.includes('CHS')), 'CHS/current size disagreement is warned');
      if (!e.footerOk || e.headerOk === false) assert.ok(info.warnings.some((w: string) => w.includes('checksum')));
      const image = await VhdImage.open(img);
      if (e.qemuSize !== undefined) assert.equal(image.qemuVirtualSize, e.qemuSize);
      await image.close();
      if (e.compareWithQemu) {
        const qraw = path.join(dir, `${path.basename(img)}.qemu.raw`);
        execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, qraw]);
        const ours = cliOk(['read', img]);
        const theirs = readFileSync(qraw);
        const n = Math.min(ours.length, theirs.length);
        assert.ok(ours.subarray(0, n).equals(theirs.subarray(0, n)), 'same bytes as qemu-img convert');
      }
    });
  }

  it('the hand-patched dfvfs image (qemu refuses its checksum) reads as the unpatched plaso image', () => {
    const patched = cliOk(['read', fixture('dfvfs_image.vhd.gz', dir)]);
    const original = cliOk(['read', fixture('plaso_image.vhd.gz', dir)]);
    assert.equal(patched.length, 104448);
    assert.ok(patched.equals(original));
    assert.ok(patched.some((x) => x !== 0));
  });

  it('Disk2vhd image: all 126 blocks allocated and every byte zero', async () => {
    const img = fixture('qemu_d2v-zerofilled.vhd.bz2', dir);
    const map = cliJson(['map', img]);
    assert.deepEqual(map, [{ start: 0, length: 263454720, depth: 0, data: true }]);
    const out = path.join(dir, 'd2v.raw');
    cliOk(['export', img, out]);
    const b = readFileSync(out);
    assert.equal(b.length, 263454720);
    assert.ok(b.every((x) => x === 0));
  });

  it('Hyper-V image of 127 GiB with nothing allocated maps as one hole', () => {
    const img = fixture('qemu_hyperv2012r2-dynamic.vhd.bz2', dir);
    assert.deepEqual(cliJson(['map', img]), [{ start: 0, length: 136365211648, depth: 0, data: false }]);
    assert.ok(cliOk(['read', img, '--offset', '136365211000', '--length', '648']).every((x) => x === 0));
  });

  it('differencing image whose parent is missing: info works, read/map/export fail naming the locators tried', () => {
    const img = fixture('dfvfs_fat-differential.vhd.gz', dir);
    const info = cliJson(['info', img]);
    assert.equal(info.parent.name, 'C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd');
    assert.deepEqual(info.parent.locators.map((l: { platform: string }) => l.platform).sort(), ['W2ku', 'W2ru']);
    assert.ok(info.parent.locators.some((l: { path: string }) => l.path === 'C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd'));
    assert.equal(info.parent.resolvedPath, null);
    assert.equal(info.chain.length, 1);
    assert.ok(info.warnings.some((w: string) => /not found/.test(w)));
    for (const args of [['read', img, '--length', '512'], ['map', img], ['export', img, path.join(dir, 'x.raw')]]) {
      const r = runCli(args);
      assert.equal(r.code, 2, args[0]);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.match(r.stderr, /^diskimg: .*dfvfs_fat-differential\.vhd: .*W2ru.*W2ku.* \(parent locators at offset \d+\)/);
    }
  });

  it('Windows absolute W2ku path falls back to the file name in the child\'s folder', () => {
    const sub = path.join(dir, 'winpath');
    require('fs').mkdirSync(sub, { recursive: true });
    const child = path.join(sub, 'fat-differential.vhd');
    copyFileSync(fixture('dfvfs_fat-differential.vhd.gz', dir), child);
    // A stand-in parent with the right name but another UUID: found, then refused for the UUID.
    cliOk(['create', path.join(sub, 'fat-parent.vhd'), '--size', '4M', '--exact-size']);
    const info = cliJson(['info', child]);
    assert.equal(info.parent.resolvedPath, path.join(sub, 'fat-parent.vhd'));
    assert.ok(info.warnings.some((w: string) => w.includes('UUID mismatch') && w.includes(info.parent.uuid)));
    const r = runCli(['read', child, '--length', '512']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /parent UUID mismatch: the child expects 5fa21a55-f394-aa4d-9958-1951a67d5540 but .* is [0-9a-f-]{36} \(dynamic header at offset 552\)/);
  });
});
