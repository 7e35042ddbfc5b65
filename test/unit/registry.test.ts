import { strict as assert } from 'assert';
import { copyFileSync, renameSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { discardChild } from '../../src/chain/discard';
import { findChildren, realPath } from '../../src/chain/findChildren';
import { DiskImage } from '../../src/format/diskImage';
import { DiskImageError } from '../../src/format/errors';
import { createImage, detectFormat, exportTargets, FORMATS, openImage, parseExportTarget } from '../../src/format/registry';
import { cliJson, cliOk, randomBytes, rng, runCli, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

describe('format registry and the format-neutral DiskImage contract', () => {
  const t = tempDir('registry-');
  after(() => t.cleanup());
  let n = 0;
  const sub = () => {
    const d = path.join(t.dir, `case${n++}`);
    require('fs').mkdirSync(d);
    return d;
  };

  it('tells the format by content, whatever the file is called', async () => {
    const d = sub();
    const base = path.join(d, 'base.vhd');
    await createImage(base, { size: 4 * MiB, exactSize: true });
    const renamed = path.join(d, 'disk.img');
    renameSync(base, renamed);
    assert.equal((await detectFormat(renamed)).name, 'vhd');
    const img = await openImage(renamed);
    try {
      assert.equal(img.format, 'vhd');
      assert.equal(img.virtualSize, 4 * MiB);
    } finally {
      await img.close();
    }
    const info = cliJson(['info', '--json', renamed]);
    assert.equal(info.format, 'vhd');
    assert.equal(info.diskType, 'dynamic');
    // A child named like nothing in particular is still found as the parent's child by content.
    const child = path.join(d, 'child.bin');
    await createChild(renamed, child);
    const found = await findChildren([renamed], [d]);
    assert.deepEqual(found.get(realPath(renamed)), [realPath(child)]);
    // ... so discarding the parent's other users is refused, and the child itself can go.
    const grandchild = path.join(d, 'snap.data');
    await createChild(child, grandchild);
    await assert.rejects(discardChild(child), (e: unknown) => e instanceof DiskImageError && e.code === 'ECHILDREN' && e.message.includes('snap.data'));
  });

  it('a file no format recognises is explained by the default format, with structure and offset', async () => {
    const d = sub();
    const junk = path.join(d, 'junk.dat');
    writeFileSync(junk, Buffer.alloc(4096, 0x41));
    assert.equal((await detectFormat(junk)).name, FORMATS[0].name);
    await assert.rejects(openImage(junk), (e: unknown) => e instanceof DiskImageError && e.code === 'EFORMAT' && e.structure === 'footer' && e.offset === 3584);
    // A name of an image format keeps that format's explanation too.
    const vhdNamed = path.join(d, 'junk.vhdx');
    writeFileSync(vhdNamed, Buffer.alloc(4096, 0x41));
    assert.equal((await detectFormat(vhdNamed)).name, 'vhdx');
  });

  it('content no format recognises, named as a raw dump (.img, .raw, .iso, .dd), opens as a raw one-layer image', async () => {
    const d = sub();
    const dump = path.join(d, 'disk.img');
    const data = randomBytes(rng(7), 3 * MiB + 512);
    writeFileSync(dump, data);
    assert.equal((await detectFormat(dump)).name, 'raw');
    const info = cliJson(['info', dump]);
    assert.equal(info.format, 'raw');
    assert.equal(info.virtualSize, data.length);
    assert.deepEqual(cliOk(['read', dump, '--offset', String(MiB), '--length', '4096']), data.subarray(MiB, MiB + 4096));
    // A raw dump exported to VHD and back is the same bytes.
    const vhd = path.join(d, 'disk.vhd');
    cliOk(['export', dump, vhd, '--format', 'vhd-dynamic']);
    assert.equal(cliJson(['diff', dump, vhd]).identical, true);
    // The same name over an image's content still opens that image.
    const qcowNamed = path.join(d, 'qcow.img');
    await createImage(path.join(d, 'q.qcow2'), { size: 4 * MiB });
    renameSync(path.join(d, 'q.qcow2'), qcowNamed);
    assert.equal((await detectFormat(qcowNamed)).name, 'qcow2');
  });

  it('export targets come from the registry; unknown ones are refused', () => {
    assert.deepEqual(exportTargets(), ['vhd-dynamic', 'vhd-fixed', 'vhdx-dynamic', 'vhdx-fixed', 'qcow2-dynamic']);
    assert.equal(parseExportTarget('vhdx').format.name, 'vhdx');
    assert.equal(parseExportTarget('vhdx').type, 'dynamic');
    assert.equal(parseExportTarget('vhdx-fixed').format.name, 'vhdx');
    assert.equal(parseExportTarget('vhd-fixed').type, 'fixed');
    assert.equal(parseExportTarget('vhd').type, 'dynamic');
    assert.throws(() => parseExportTarget('vhd-sparse'), /unknown export format/);
    assert.throws(() => parseExportTarget('qcow9-dynamic'), /unknown export format/);
    const r = runCli(['export', 'x.vhd', 'y.vhd', '--format', 'vhd-sparse']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /vhd-sparse/);
  });

  it('parent linkage through the interface: candidates in order, identity check, re-link', async () => {
    const d = sub();
    const base = path.join(d, 'base.vhd');
    const other = path.join(d, 'other.vhd');
    const child = path.join(d, 'child.vhd');
    await createImage(base, { size: 4 * MiB, exactSize: true });
    await createImage(other, { size: 4 * MiB, exactSize: true });
    await createChild(base, child);
    const c = await openImage(child);
    const b = await openImage(base);
    const o = await openImage(other);
    try {
      const list = c.parentCandidates();
      assert.deepEqual(list.candidates.map((x) => x.via), ['W2ru', 'W2ku', 'W2ku', 'unicode name']);
      assert.equal(list.candidates[0].path, base);
      assert.equal(list.candidates[0].raw, '.\\base.vhd');
      assert.deepEqual(list.sources.map((s) => s.label), ['W2ru locator', 'W2ku locator']);
      assert.deepEqual(list.unreadable, []);
      const good = c.checkParent(b);
      assert.equal(good.idMatches, true);
      assert.equal(good.timestampMatches, true);
      assert.equal(good.expected, b.uuid);
      const bad = c.checkParent(o);
      assert.equal(bad.idMatches, false);
      assert.equal(bad.idName, 'UUID');
      assert.equal(bad.found, o.uuid);
      assert.deepEqual(bad.idLocation, { structure: 'dynamic header', offset: 512 + 40 });
      assert.deepEqual(c.locate('parentLink'), { structure: 'parent locators', offset: 512 + 576 });
      assert.equal(b.parentCandidates().candidates.length, 0);
    } finally {
      await Promise.all([c.close(), b.close(), o.close()]);
    }
    // writeParentLink: the child now records `other` and its chain opens through it.
    const w = await openImage(child, { writable: true });
    const o2 = await openImage(other);
    try {
      await w.writeParentLink(o2);
      assert.equal(w.checkParent(o2).idMatches, true);
    } finally {
      await Promise.all([w.close(), o2.close()]);
    }
    const chain = await openChain(child);
    try {
      assert.equal(chain.layers[1].path, other);
    } finally {
      await chain.close();
    }
  });

  it('openChain opens every ancestor (never the top) through openAncestor and closes what it returns', async () => {
    const d = sub();
    const base = path.join(d, 'base.vhd');
    const mid = path.join(d, 'mid.vhd');
    const top = path.join(d, 'top.vhd');
    await createImage(base, { size: 4 * MiB, blockSize: 64 * 1024, exactSize: true });
    await createChild(base, mid);
    await createChild(mid, top);
    const r = rng(7);
    const pattern = randomBytes(r, 300 * 1024);
    {
      const c = await openChain(mid, { writable: true });
      await c.write(100_000, pattern);
      await c.close();
    }
    const opened: string[] = [];
    const closed: string[] = [];
    // A wrapper that counts, as a server sharing one open parent between exports would.
    const openAncestor = async (p: string): Promise<DiskImage> => {
      const img = await openImage(p);
      opened.push(path.basename(p));
      return new Proxy(img, {
        get(target, prop, receiver) {
          if (prop === 'close') return async () => { closed.push(path.basename(p)); await target.close(); };
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    };
    const chain = await openChain(top, { openAncestor });
    try {
      assert.deepEqual(opened, ['mid.vhd', 'base.vhd']);
      assert.equal(chain.layers.length, 3);
      const back = await chain.readRange(100_000, pattern.length);
      assert.ok(back.equals(pattern));
    } finally {
      await chain.close();
    }
    assert.deepEqual(closed.sort(), ['base.vhd', 'mid.vhd']);
    // Without the option the same chain reads the same.
    const plain = await openChain(top);
    try {
      assert.ok((await plain.readRange(100_000, pattern.length)).equals(pattern));
    } finally {
      await plain.close();
    }
  });

  it('a mismatched ancestor returned by openAncestor is closed by openChain when it refuses it', async () => {
    const d = sub();
    const base = path.join(d, 'base.vhd');
    const child = path.join(d, 'child.vhd');
    await createImage(base, { size: 4 * MiB, exactSize: true });
    await createChild(base, child);
    // Replace the parent by another image of the same name: the UUID no longer matches.
    const other = path.join(d, 'other.vhd');
    await createImage(other, { size: 4 * MiB, exactSize: true });
    copyFileSync(other, base);
    let closes = 0;
    const openAncestor = async (p: string): Promise<DiskImage> => {
      const img = await openImage(p);
      const close = img.close.bind(img);
      (img as { close: () => Promise<void> }).close = async () => { closes++; await close(); };
      return img;
    };
    await assert.rejects(openChain(child, { openAncestor }), (e: unknown) => e instanceof DiskImageError && e.code === 'EUUID');
    assert.equal(closes, 1);
    const info = cliJson(['info', '--json', child]);
    assert.match(info.warnings.join('\n'), /parent UUID mismatch/);
    assert.ok(cliOk(['info', child]).toString().includes('parent uuid'));
  });
});
