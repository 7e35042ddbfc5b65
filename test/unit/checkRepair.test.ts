import { strict as assert } from 'assert';
import { closeSync, existsSync, openSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync, writeSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage, CheckProblem } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { planRepair, repairImage } from '../../src/chain/repair';
import { scanImage } from '../../src/chain/check';
import { ImageFile } from '../../src/io/imageFile';
import { createImage } from '../../src/format/vhd/create';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { describeFixtures, fixture, FIXTURES, randomBytes, rng, runCli, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

function patch(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, existsSync(file) ? 'r+' : 'w');
  try { writeSync(fd, bytes, 0, bytes.length, offset); } finally { closeSync(fd); }
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

interface Made { file: string; size: number; bs: number; ho: number; to: number; bat: number[]; fileSize: number; }

/** A dynamic image with random data in the given blocks; returns its layout as the core reads it. */
async function makeDynamic(file: string, blocks: number[], seed: number, blockSize = 2 * MiB, size = 16 * MiB): Promise<Made> {
  await createImage(file, { size, type: 'dynamic', blockSize });
  const chain = await openChain(file, { writable: true });
  const r = rng(seed);
  for (const b of blocks) await chain.write(b * blockSize, randomBytes(r, blockSize));
  await chain.close();
  const img = await VhdImage.open(file);
  const made = {
    file, size: img.virtualSize, bs: img.blockSize, ho: img.layout.headerOffset!, to: img.layout.tableOffset!,
    bat: Array.from(img.bat!.entries), fileSize: img.layout.fileSize,
  };
  await img.close();
  return made;
}

async function readAll(file: string): Promise<Buffer> {
  const chain = await openChain(file);
  try { return await chain.readRange(0, chain.virtualSize); } finally { await chain.close(); }
}

function find(problems: CheckProblem[], structure: string, offset: number, message?: RegExp): CheckProblem {
  const p = problems.find((x) => x.structure === structure && x.offset === offset && (!message || message.test(x.message)));
  assert.ok(p, `expected a problem in ${structure} at ${offset}${message ? ` matching ${message}` : ''}; got ${JSON.stringify(problems, null, 1)}`);
  return p!;
}

function errorsOnly(problems: CheckProblem[]): CheckProblem[] {
  return problems.filter((p) => p.severity === 'error');
}

describe('check and repair', function () {
  this.timeout(60000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-check-')));
  after(() => cleanup());
  let n = 0;
  const fresh = (name: string) => path.join(dir, `${n++}-${name}`);

  it('a clean image checks clean; the CLI prints {ok, problems} and exits 0', async () => {
    const m = await makeDynamic(fresh('clean.vhd'), [0, 3, 5], 1);
    assert.deepEqual(await checkImage(m.file), { ok: true, problems: [] });
    const r = runCli(['check', m.file, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.toString()), { ok: true, problems: [] });
    const text = runCli(['check', m.file]);
    assert.equal(text.code, 0);
    assert.match(text.stdout.toString(), /: ok\n/);
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes, []);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
  });

  it('truncated file: missing end footer and the torn block are reported; repair clears the block, moves the footer, keeps the rest', async () => {
    const m = await makeDynamic(fresh('trunc.vhd'), [0, 1, 2], 2);
    const before = await readAll(m.file);
    // Cut in the middle of the last block's data (footer gone, block 2 torn).
    const cutAt = m.bat[2] * 512 + 512 + MiB;
    truncateSync(m.file, cutAt);
    const r = await checkImage(m.file);
    assert.equal(r.ok, false);
    find(r.problems, 'footer', cutAt - 512, /no 'conectix' footer at the end of the file/);
    find(r.problems, 'BAT entry', m.to + 2 * 4, /block 2 \(\d+\.\.\d+\) runs past the end of the data \(file size \d+\)/);
    assert.equal(errorsOnly(r.problems).length, 2, JSON.stringify(r.problems));
    const cli = runCli(['check', m.file, '--json']);
    assert.equal(cli.code, 1);
    assert.deepEqual(JSON.parse(cli.stdout.toString()), JSON.parse(JSON.stringify(r)));

    const dry = await repairImage(m.file, { dryRun: true });
    assert.equal(statSync(m.file).size, cutAt, 'dry run writes nothing');
    assert.ok(dry.changes.some((c) => c.structure === 'BAT entry' && c.offset === m.to + 8));
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes, dry.changes);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    // Footer right behind block 1; block 2 now reads zeros, blocks 0 and 1 unchanged.
    assert.equal(statSync(m.file).size, m.bat[1] * 512 + 512 + m.bs + 512);
    const after = await readAll(m.file);
    assert.ok(after.subarray(0, 2 * m.bs).equals(before.subarray(0, 2 * m.bs)));
    assert.ok(after.subarray(2 * m.bs).every((x) => x === 0));
    const img = await VhdImage.open(m.file);
    assert.deepEqual(img.warnings, []);
    await img.close();
  });

  it('corrupted end footer (overwritten): reported at the end; repair restores it from the copy in one write', async () => {
    const m = await makeDynamic(fresh('endfooter.vhd'), [1], 3);
    const before = await readAll(m.file);
    patch(m.file, m.fileSize - 512, randomBytes(rng(9), 512));
    const r = await checkImage(m.file);
    find(r.problems, 'footer', m.fileSize - 512, /no 'conectix' footer at the end of the file \(\d+ bytes\).*copy at offset 0 is intact/);
    assert.equal(errorsOnly(r.problems).length, 1, JSON.stringify(r.problems));
    const rep = await repairImage(m.file);
    assert.equal(rep.changes.length, 1);
    assert.equal(rep.changes[0].structure, 'footer');
    assert.equal(rep.changes[0].offset, m.fileSize - 512);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    assert.equal(statSync(m.file).size, m.fileSize);
    assert.ok((await readAll(m.file)).equals(before));
    const bytes = readFileSync(m.file);
    assert.ok(bytes.subarray(0, 512).equals(bytes.subarray(m.fileSize - 512)));
  });

  it('end footer field changed (checksum wrong, differs from the copy): both reported at exact offsets; repair restores from the copy', async () => {
    const m = await makeDynamic(fresh('endfield.vhd'), [0], 4);
    const fo = m.fileSize - 512;
    patch(m.file, fo + 48, Buffer.from([0, 0, 0, 0, 0, 0x10, 0, 0])); // current size
    const r = await checkImage(m.file);
    find(r.problems, 'footer', fo + 64, /checksum is wrong \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/);
    find(r.problems, 'footer', fo + 48, /differs from the footer copy at offset 0 in currentSize/);
    const rep = await repairImage(m.file);
    assert.match(rep.changes[0].message, /restore the end footer from the copy/);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
  });

  it('footer copy stale: reported on the copy; repair rewrites the copy from the end footer', async () => {
    const m = await makeDynamic(fresh('copy.vhd'), [0], 5);
    patch(m.file, 24, u32(12345)); // timestamp in the copy
    const r = await checkImage(m.file);
    find(r.problems, 'footer copy', 64, /checksum is wrong/);
    find(r.problems, 'footer copy', 24, /differs from the end footer in timestamp/);
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['footer copy', 0]]);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
  });

  it('bad dynamic header checksum: reported at header+36; repair writes the checksum only', async () => {
    const m = await makeDynamic(fresh('hdr.vhd'), [2], 6);
    const before = readFileSync(m.file);
    patch(m.file, m.ho + 60, u32(0xdeadbeef)); // reserved field
    const r = await checkImage(m.file);
    find(r.problems, 'dynamic header', m.ho + 36, /checksum is wrong \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/);
    assert.equal(errorsOnly(r.problems).length, 1);
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['dynamic header', m.ho + 36]]);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    const after = readFileSync(m.file);
    // Only the patched field and the checksum differ from the original bytes.
    const diffs: number[] = [];
    for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) diffs.push(i);
    assert.ok(diffs.every((i) => (i >= m.ho + 60 && i < m.ho + 64) || (i >= m.ho + 36 && i < m.ho + 40)), `changed bytes ${diffs}`);
  });

  it('BAT entry past EOF: reported on the entry; repair clears it and nothing else', async () => {
    const m = await makeDynamic(fresh('pasteof.vhd'), [0, 1], 7);
    const before = await readAll(m.file);
    patch(m.file, m.to + 3 * 4, u32(0x00100000)); // block 3 -> 512 MiB
    const r = await checkImage(m.file);
    find(r.problems, 'BAT entry', m.to + 12, new RegExp(`block 3 points at offset ${0x00100000 * 512}, past the end of the data \\(end footer at ${m.fileSize - 512}\\)`));
    assert.equal(errorsOnly(r.problems).length, 1);
    assert.equal(runCli(['check', m.file]).code, 1);
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['BAT entry', m.to + 12]]);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    assert.ok((await readAll(m.file)).equals(before));
  });

  it('two BAT entries to one block: both reported; repair clears both, the data bytes stay', async () => {
    const m = await makeDynamic(fresh('dup.vhd'), [0, 1, 2], 8);
    const before = await readAll(m.file);
    patch(m.file, m.to + 5 * 4, u32(m.bat[1]));
    const r = await checkImage(m.file);
    find(r.problems, 'BAT entry', m.to + 4, new RegExp(`block 1 points at offset ${m.bat[1] * 512}, the same place as block 5`));
    find(r.problems, 'BAT entry', m.to + 20, new RegExp(`block 5 points at offset ${m.bat[1] * 512}, the same place as block 1`));
    assert.equal(errorsOnly(r.problems).length, 2);
    const raw = readFileSync(m.file);
    const rep = await repairImage(m.file);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['BAT entry', m.to + 4], ['BAT entry', m.to + 20]]);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    const after = readFileSync(m.file);
    assert.equal(after.length, raw.length);
    // Only the two entries changed: no data sector touched.
    for (let i = 0; i < raw.length; i++) {
      if (raw[i] !== after[i]) assert.ok((i >= m.to + 4 && i < m.to + 8) || (i >= m.to + 20 && i < m.to + 24), `byte ${i} changed`);
    }
    const view = await readAll(m.file);
    assert.ok(view.subarray(0, m.bs).equals(before.subarray(0, m.bs)));
    assert.ok(view.subarray(m.bs, 2 * m.bs).every((x) => x === 0));
    assert.ok(view.subarray(2 * m.bs, 3 * m.bs).equals(before.subarray(2 * m.bs, 3 * m.bs)));
  });

  it('blocks overlapping partly, or overlapping the header/BAT, are reported with both offsets', async () => {
    const m = await makeDynamic(fresh('overlap.vhd'), [0, 1], 10, 512 * 1024);
    patch(m.file, m.to + 1 * 4, u32(m.bat[0] + 8)); // block 1 starts 4 KiB into block 0
    patch(m.file, m.to + 4 * 4, u32(m.ho / 512)); // block 4 on the header
    const r = await checkImage(m.file);
    find(r.problems, 'BAT entry', m.to + 4, /block 1 \(\d+\.\.\d+\) overlaps block 0/);
    find(r.problems, 'BAT entry', m.to, /block 0 \(\d+\.\.\d+\) overlaps block 1/);
    find(r.problems, 'BAT entry', m.to + 16, /block 4 \(\d+\.\.\d+\) overlaps the dynamic header/);
    const rep = await repairImage(m.file);
    assert.equal(rep.changes.length, 3);
    assert.ok(rep.after!.ok, JSON.stringify(rep.after));
  });

  it('fixed image: wrong footer checksum, and a truncated data area', async () => {
    const file = fresh('fixed.vhd');
    const size = await createImage(file, { size: 4 * MiB, type: 'fixed' });
    patch(file, size + 32, u32(0x00050000)); // creator version
    const r = await checkImage(file);
    find(r.problems, 'footer', size + 64, /checksum is wrong/);
    const rep = await repairImage(file);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['footer', size + 64]]);
    assert.deepEqual(rep.after, { ok: true, problems: [] });
    // A fixed disk whose data area is shorter than its size (footer kept at the end).
    const footer = readFileSync(file).subarray(size);
    truncateSync(file, size - 4096);
    patch(file, size - 4096, footer);
    const r2 = await checkImage(file);
    find(r2.problems, 'data', size - 4096, new RegExp(`the file holds ${size - 4096} data bytes but the footer says ${size}`));
  });

  it('hostile header values are reported, never allocated or crashed on', async () => {
    const m = await makeDynamic(fresh('hostile.vhd'), [0], 11);
    const hdr = readFileSync(m.file).subarray(m.ho, m.ho + 1024);
    patch(m.file, m.ho + 28, u32(0xffffffff)); // max table entries: a 16 GiB BAT
    let r = await checkImage(m.file);
    find(r.problems, 'dynamic header', m.ho + 16, /BAT of 4294967295 entries at offset \d+ .* does not fit in the file/);
    find(r.problems, 'dynamic header', m.ho + 36, /checksum is wrong/);
    patch(m.file, m.ho, hdr);
    patch(m.file, m.ho + 32, u32(3 * 1000 * 1000)); // block size not a power of two
    r = await checkImage(m.file);
    find(r.problems, 'dynamic header', m.ho + 32, /block size 3000000 is not a power of two/);
    patch(m.file, m.ho, hdr);
    patch(m.file, 16, Buffer.from('7fffffffffffffff', 'hex')); // copy's header offset
    patch(m.file, m.fileSize - 512 + 16, Buffer.from('7fffffffffffffff', 'hex'));
    r = await checkImage(m.file);
    find(r.problems, 'footer', m.fileSize - 512 + 16, /dynamic header offset 9223372036854775807 is outside the file/);
    // A footer whose header offset is outside the file is not trusted: repair writes nothing back.
    const rep = await repairImage(m.file, { dryRun: true });
    assert.deepEqual(rep.changes, []);
  });

  it('not a VHD, or too short: check throws (CLI exit 2 with file, structure and offset)', async () => {
    const file = fresh('junk.bin');
    patch(file, 0, randomBytes(rng(12), 4096));
    await assert.rejects(checkImage(file), /junk\.bin: not a VHD: no 'conectix' footer .* \(footer at offset 3584\)/);
    const r = runCli(['check', file, '--json']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^diskimg: .*junk\.bin: not a VHD/);
    const tiny = fresh('tiny.vhd');
    patch(tiny, 0, Buffer.from('conectix'));
    assert.equal(runCli(['check', tiny]).code, 2);
    assert.equal(runCli(['check', path.join(dir, 'missing.vhd')]).code, 2);
    assert.equal(runCli(['repair', file]).code, 2);
  });

  it('differencing: locator past its space, parent UUID mismatch, missing parent, stale timestamp', async () => {
    const parent = fresh('parent.vhd');
    await makeDynamic(parent, [0], 13);
    const child = fresh('child.vhd');
    await createChild(parent, child);
    const img = await VhdImage.open(child);
    const ho = img.layout.headerOffset!;
    const locs = img.header!.locators.filter((l) => l.platformCode !== '\0\0\0\0');
    await img.close();
    assert.deepEqual(await checkImage(child), { ok: true, problems: [] });
    const w2ru = locs.find((l) => l.platformCode === 'W2ru')!;
    const eo = ho + 576 + w2ru.index * 24;
    const hdr = readFileSync(child).subarray(ho, ho + 1024);
    patch(child, eo + 8, u32(5000)); // data length > space
    let r = await checkImage(child);
    find(r.problems, 'parent locator', eo + 8, /W2ru locator data length 5000 exceeds its data space of 512 bytes/);
    find(r.problems, 'dynamic header', ho + 36, /checksum is wrong/);
    patch(child, ho, hdr);
    patch(child, ho + 40, Buffer.alloc(16, 0x42)); // parent UUID
    patch(child, ho + 56, u32(1)); // parent timestamp
    r = await checkImage(child);
    find(r.problems, 'dynamic header', ho + 40, /parent UUID 42424242-.* does not match .*parent\.vhd/);
    const ts = find(r.problems, 'dynamic header', ho + 56, /parent timestamp 2000-01-01T00:00:01/);
    assert.equal(ts.severity, 'warning');
    // Repair fixes the header checksum only: it never re-links.
    const rep = await repairImage(child);
    assert.deepEqual(rep.changes.map((c) => [c.structure, c.offset]), [['dynamic header', ho + 36]]);
    assert.equal(rep.after!.ok, false);
    find(rep.after!.problems, 'dynamic header', ho + 40, /parent UUID/);
    patch(child, ho, hdr);
    renameSync(parent, `${parent}.moved`);
    r = await checkImage(child);
    find(r.problems, 'parent locators', ho + 576, /parent '.*parent\.vhd' not found; tried W2ru '\.\\.*parent\.vhd' -> .*: not found/);
  });

  it('the repair CLI: --dry-run lists and exits 1 without writing; a repair exits 0 when clean after, 1 when problems remain', async () => {
    const m = await makeDynamic(fresh('clirep.vhd'), [0, 1], 15);
    patch(m.file, m.to + 4, u32(0x00400000));
    const before = readFileSync(m.file);
    let r = runCli(['repair', m.file, '--dry-run']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout.toString(), new RegExp(`would change \\(1\\):\\n  BAT entry at ${m.to + 4}: clear the entry of block 1`));
    assert.ok(readFileSync(m.file).equals(before));
    r = runCli(['repair', m.file]);
    assert.equal(r.code, 0, r.stderr);
    // Block 1's real data, no longer referenced, is reported as unused space: a warning.
    assert.match(r.stdout.toString(), /changed \(1\):[\s\S]*after repair: ok \(1 warning\)\n/);
    r = runCli(['repair', m.file]);
    assert.equal(r.code, 0);
    assert.match(r.stdout.toString(), /nothing to change/);
    // A wrong parent UUID is not repair's to fix: it stays, exit 1.
    const child = fresh('clirep-child.vhd');
    await createChild(m.file, child);
    const img = await VhdImage.open(child);
    const ho = img.layout.headerOffset!;
    await img.close();
    patch(child, ho + 40, Buffer.alloc(16, 7));
    r = runCli(['repair', child]);
    assert.equal(r.code, 1);
    assert.match(r.stdout.toString(), /changed \(1\):\n  dynamic header at \d+: set the checksum[\s\S]*after repair: 1 error\n  error +dynamic header +at +\d+ +parent UUID 07070707-/);
  });

  it('a stale locator (its path leads nowhere, the parent found through another) is a warning at its entry', async () => {
    const parent = fresh('lp.vhd');
    await makeDynamic(parent, [0], 14);
    const child = fresh('lc.vhd');
    await createChild(parent, child);
    const img = await VhdImage.open(child);
    const ho = img.layout.headerOffset!;
    const w2ku = img.header!.locators.find((l) => l.platformCode === 'W2ku')!;
    await img.close();
    const data = readFileSync(child).subarray(w2ku.platformDataOffset, w2ku.platformDataOffset + w2ku.platformDataLength);
    const stale = Buffer.from(data.toString('utf16le').replace('lp.vhd', 'LP.vhd'), 'utf16le');
    assert.equal(stale.length, data.length);
    patch(child, w2ku.platformDataOffset, stale);
    const r = await checkImage(child);
    assert.equal(r.ok, true);
    const p = find(r.problems, 'parent locator', ho + 576 + w2ku.index * 24, /W2ku locator path '.*LP\.vhd' does not lead to the parent .*found via W2ru/);
    assert.equal(p.severity, 'warning');
    assert.equal(r.problems.length, 1, JSON.stringify(r.problems));
  });

  it('crash safety: after every prefix of the repair writes the file is a valid VHD that reads as before or as repaired', async () => {
    const scenarios: Array<{ name: string; damage: (m: Made) => void; diff?: boolean }> = [
      { name: 'truncated, header checksum, duplicate entry', damage: (m) => {
        patch(m.file, m.ho + 60, u32(7));
        patch(m.file, m.to + 6 * 4, u32(m.bat[0]));
        truncateSync(m.file, m.bat[3] * 512 + 512 + 100 * 512);
      } },
      { name: 'end footer garbage, entry past EOF', damage: (m) => {
        patch(m.file, m.fileSize - 512, randomBytes(rng(5), 512));
        patch(m.file, m.to + 7 * 4, u32(0x7fffffff));
      } },
      { name: 'copy stale, end checksum wrong', damage: (m) => {
        patch(m.file, 28, Buffer.from('junk'));
        patch(m.file, m.fileSize - 512 + 64, u32(1));
      } },
      { name: 'differencing child truncated mid-block', diff: true, damage: (m) => {
        truncateSync(m.file, m.bat[1] * 512 + 512 + 7 * 512);
      } },
    ];
    for (const sc of scenarios) {
      let m = await makeDynamic(fresh('crash.vhd'), [0, 1, 2, 3], 20, 512 * 1024);
      if (sc.diff) {
        const child = fresh('crash-child.vhd');
        await createChild(m.file, child);
        const chain = await openChain(child, { writable: true });
        const r = rng(21);
        for (const off of [100 * 1024, 600 * 1024, 1100 * 1024]) await chain.write(off, randomBytes(r, 70 * 1024));
        await chain.close();
        const img = await VhdImage.open(child);
        m = { ...m, file: child, ho: img.layout.headerOffset!, to: img.layout.tableOffset!, bat: Array.from(img.bat!.entries), fileSize: img.layout.fileSize };
        await img.close();
      }
      sc.damage(m);
      const orig = readFileSync(m.file);
      // The view before repair, block by block (null where the block cannot be read: torn).
      const blocks = Math.ceil(m.size / m.bs);
      const view = async (file: string): Promise<Array<Buffer | null>> => {
        const chain = await openChain(file);
        try {
          const out: Array<Buffer | null> = [];
          for (let b = 0; b < blocks; b++) out.push(await chain.readRange(b * m.bs, Math.min(m.bs, m.size - b * m.bs)).catch(() => null));
          return out;
        } finally { await chain.close(); }
      };
      const before = await view(m.file);
      const steps = planRepair(await scanImage(m.file));
      assert.ok(steps.length >= 2, `${sc.name}: ${JSON.stringify(steps)}`);
      const done = await view(await (async () => { const f = fresh('done.vhd'); writeFileSync(f, orig); await repairImage(f); return f; })());
      const tmp = path.join(path.dirname(m.file), `prefix-${path.basename(m.file)}`);
      for (let k = 0; k <= steps.length; k++) {
        writeFileSync(tmp, orig);
        const f = await ImageFile.open(tmp, true);
        try { for (const st of steps.slice(0, k)) await st.apply(f); } finally { await f.close(); }
        const img = await VhdImage.open(tmp);
        await img.close();
        const now = await view(tmp);
        for (let b = 0; b < blocks; b++) {
          const ok = (before[b] && now[b] && now[b]!.equals(before[b]!)) || (now[b] && done[b] && now[b]!.equals(done[b]!)) || (!before[b] && !now[b]);
          assert.ok(ok, `${sc.name}: after ${k} of ${steps.length} steps block ${b} reads neither as before nor as repaired`);
        }
      }
      assert.deepEqual(await checkImage(tmp), { ok: true, problems: [] }, sc.name);
    }
  });

  describeFixtures('real images from ../shared/fixtures', () => {
    const have = (name: string) => { try { statSync(path.join(FIXTURES, name)); return true; } catch { return false; } };

    it('dfvfs_image.vhd: wrong footer checksum (end and copy), header right; repair fixes both and keeps the patched UUID', async function () {
      if (!have('dfvfs_image.vhd.gz')) this.skip();
      const file = fixture('dfvfs_image.vhd.gz', dir);
      const size = statSync(file).size;
      const r = await checkImage(file);
      assert.deepEqual(errorsOnly(r.problems).map((p) => [p.structure, p.offset]), [['footer copy', 64], ['footer', size - 512 + 64]]);
      assert.ok(r.problems.every((p) => /checksum is wrong/.test(p.message)));
      const uuid = readFileSync(file).subarray(size - 512 + 68, size - 512 + 84);
      const view = await readAll(file);
      const rep = await repairImage(file);
      assert.deepEqual(rep.after, { ok: true, problems: [] });
      assert.ok(readFileSync(file).subarray(size - 512 + 68, size - 512 + 84).equals(uuid));
      assert.ok((await readAll(file)).equals(view));
    });

    it('dfvfs_image-differential.vhd: both checksums wrong, parent image.vhd missing', async function () {
      if (!have('dfvfs_image-differential.vhd.gz')) this.skip();
      const file = fixture('dfvfs_image-differential.vhd.gz', dir);
      const size = statSync(file).size;
      const r = await checkImage(file);
      find(r.problems, 'footer', size - 512 + 64, /checksum is wrong/);
      find(r.problems, 'dynamic header', 512 + 36, /checksum is wrong/);
      find(r.problems, 'parent locators', 512 + 576, /parent 'image\.vhd' not found/);
    });

    it('dfvfs_fat-differential.vhd: only the missing parent is an error (W2ru and W2ku tried)', async function () {
      if (!have('dfvfs_fat-differential.vhd.gz')) this.skip();
      const file = fixture('dfvfs_fat-differential.vhd.gz', dir);
      const r = await checkImage(file);
      const errors = errorsOnly(r.problems);
      assert.equal(errors.length, 1, JSON.stringify(r.problems));
      assert.equal(errors[0].structure, 'parent locators');
      assert.match(errors[0].message, /fat-parent\.vhd' not found; tried W2ru .*W2ku/);
    });

    it('images from qemu, Virtual PC, Hyper-V, Disk2vhd and FreeBSD mkimg have no errors', async function () {
      this.timeout(120000);
      const names = ['plaso_image.vhd.gz', 'dfvfs_ext2.vhd.gz', 'qemu_virtualpc-dynamic.vhd.bz2', 'qemu_hyperv2012r2-dynamic.vhd.bz2',
        'qemu_d2v-zerofilled.vhd.bz2', 'freebsd-mkimg_img-1x1-512-bsd.vhd.gz', 'freebsd-mkimg_img-1x1-512-bsd.vhdf.gz',
        'freebsd-mkimg-2015_img-1x1-512-bsd.vhd.gz', 'freebsd-mkimg-2015_img-1x1-512-bsd.vhdf.gz'].filter(have);
      if (names.length === 0) this.skip();
      for (const name of names) {
        const file = fixture(name, dir);
        const r = await checkImage(file);
        assert.equal(r.ok, true, `${name}: ${JSON.stringify(r.problems)}`);
        // Virtual PC (creator 'vpc ') sizes disagree with CHS: qemu shows less; that is a warning, not an error.
        if (name.startsWith('qemu_virtualpc')) find(r.problems, 'footer', statSync(file).size - 512 + 56, /CHS geometry 65278\/16\/255 gives 136363130880 bytes/);
        if (name.startsWith('qemu_hyperv') || name.startsWith('plaso') || name.startsWith('qemu_d2v')) assert.deepEqual(r.problems, [], name);
        const rep = await repairImage(file, { dryRun: true });
        assert.deepEqual(rep.changes, [], `${name}: repair would change nothing`);
      }
    });

    it('VHDX files are checked as VHDX (issue 12): clean ones exit 0, one with a pending log warns about it', function () {
      if (!have('discutils_swap.vhdx.gz') || !have('discutils_vhdx-log-replay.vhdx.gz')) this.skip();
      const clean = runCli(['check', fixture('discutils_swap.vhdx.gz', dir), '--json']);
      assert.equal(clean.code, 0, clean.stderr);
      assert.deepEqual(JSON.parse(clean.stdout.toString()), { ok: true, problems: [] });
      const dirty = runCli(['check', fixture('discutils_vhdx-log-replay.vhdx.gz', dir), '--json']);
      assert.equal(dirty.code, 0, dirty.stderr);
      const problems = JSON.parse(dirty.stdout.toString()).problems;
      assert.equal(problems.length, 1);
      assert.equal(problems[0].structure, 'log');
      assert.match(problems[0].message, /not yet applied/);
    });
  });
});
