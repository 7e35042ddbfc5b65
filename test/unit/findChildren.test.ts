import { strict as assert } from 'assert';
import { mkdirSync, openSync, writeSync, closeSync, readFileSync, symlinkSync, truncateSync, statSync, writeFileSync } from 'fs';
import * as path from 'path';
import { createChild } from '../../src/chain/createChild';
import { findChildren, realPath } from '../../src/chain/findChildren';
import { createImage, mayBeDifferencing, PROBE_HEAD, PROBE_TAIL } from '../../src/format/registry';
import { hasTool, sh, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

function headTail(file: string): [Buffer, Buffer, number] {
  const bytes = readFileSync(file);
  return [bytes.subarray(0, Math.min(PROBE_HEAD, bytes.length)), bytes.subarray(Math.max(0, bytes.length - PROBE_TAIL)), bytes.length];
}

// The folder scan behind merge's sibling check and discard's refusal passes over files on their
// first and last bytes; these cases pin down that it still finds every child, of every format,
// including damaged ones the format's open still accepts.
describe('findChildren: the folder scan for children', () => {
  const t = tempDir('findchildren-');
  after(() => t.cleanup());

  it('finds VHD, VHDX and qcow2 children among bases, raw dumps and other files, and only them', async () => {
    const d = path.join(t.dir, 'mixed');
    mkdirSync(d);
    const base = path.join(d, 'base.vhd');
    await createImage(base, { size: 8 * MiB, exactSize: true });
    const fixed = path.join(d, 'fixed.vhd');
    await createImage(fixed, { size: 4 * MiB, type: 'fixed', exactSize: true });
    const baseX = path.join(d, 'base.vhdx');
    await createImage(baseX, { size: 8 * MiB });
    const qBase = path.join(d, 'plain.qcow2');
    await createImage(qBase, { size: 8 * MiB });
    writeFileSync(path.join(d, 'notes.txt'), 'not an image\n');
    writeFileSync(path.join(d, 'empty.vhd'), Buffer.alloc(0));
    writeFileSync(path.join(d, 'dump.img'), Buffer.alloc(2 * MiB, 7));
    mkdirSync(path.join(d, 'sub.vhd'));

    const vhdChild = path.join(d, 'a.vhd');
    await createChild(base, vhdChild);
    const qChild = path.join(d, 'b.qcow2');
    await createChild(base, qChild);
    const xChild = path.join(d, 'c.avhdx');
    await createChild(baseX, xChild);
    const qOverQ = path.join(d, 'd.qcow2');
    await createChild(qBase, qOverQ);
    // A VHD child with its end footer gone (a crash while appending a block): its open falls back
    // to the footer copy at offset 0, so it is still a child.
    const cut = path.join(d, 'e.vhd');
    await createChild(base, cut);
    truncateSync(cut, statSync(cut).size - 512);
    // A VHD child whose footer copy at offset 0 is wiped: the end footer says differencing.
    const wiped = path.join(d, 'f.vhd');
    await createChild(base, wiped);
    const fd = openSync(wiped, 'r+');
    writeSync(fd, Buffer.alloc(512), 0, 512, 0);
    closeSync(fd);
    // The same child under a second name is one file.
    symlinkSync(vhdChild, path.join(d, 'link-to-a.vhd'));

    const found = await findChildren([base, baseX, qBase, fixed], [d, d]);
    const sorted = (p: string) => [...(found.get(realPath(p)) ?? [])].sort();
    assert.deepEqual(sorted(base), [vhdChild, qChild, cut, wiped].map(realPath).sort());
    assert.deepEqual(sorted(baseX), [realPath(xChild)]);
    assert.deepEqual(sorted(qBase), [realPath(qOverQ)]);
    assert.deepEqual(sorted(fixed), []);
    // qemu-img agrees on who the qcow2 children's parents are.
    if (hasTool('qemu-img')) {
      for (const [child, parent] of [[qChild, base], [qOverQ, qBase]]) {
        const info = JSON.parse(sh('qemu-img', ['info', '--output=json', child]));
        assert.equal(realPath(path.resolve(d, info['backing-filename'])), realPath(parent));
      }
    }
  });

  it('the byte pre-check says "maybe" for every differencing image and "no" for bases of VHD and qcow2', async () => {
    const d = path.join(t.dir, 'precheck');
    mkdirSync(d);
    const base = path.join(d, 'base.vhd');
    await createImage(base, { size: 4 * MiB, exactSize: true });
    const fixed = path.join(d, 'fixed.vhd');
    await createImage(fixed, { size: 4 * MiB, type: 'fixed', exactSize: true });
    const q = path.join(d, 'base.qcow2');
    await createImage(q, { size: 4 * MiB });
    const x = path.join(d, 'base.vhdx');
    await createImage(x, { size: 4 * MiB });
    const children = [path.join(d, 'c.vhd'), path.join(d, 'c.qcow2'), path.join(d, 'c.avhdx')];
    await createChild(base, children[0]);
    await createChild(q, children[1]);
    await createChild(x, children[2]);
    for (const c of children) assert.equal(mayBeDifferencing(...headTail(c)), true, c);
    assert.equal(mayBeDifferencing(...headTail(base)), false);
    assert.equal(mayBeDifferencing(...headTail(fixed)), false);
    assert.equal(mayBeDifferencing(...headTail(q)), false);
    // VHDX keeps its parent flag in the metadata region: its bases are opened to find out.
    assert.equal(mayBeDifferencing(...headTail(x)), true);
    assert.equal(mayBeDifferencing(Buffer.from('hello'), Buffer.from('hello'), 5), false);
  });
});
