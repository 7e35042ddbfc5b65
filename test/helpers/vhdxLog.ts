import { strict as assert } from 'assert';
import { execFileSync, spawn } from 'child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { readThrough } from '../../src/chain/chain';
import { createVhdx } from '../../src/format/vhdx/create';
import { newGuid } from '../../src/format/vhdx/guid';
import { HEADER_OFFSETS, parseHeader, serializeHeader } from '../../src/format/vhdx/header';
import { serializeLogEntry } from '../../src/format/vhdx/log';
import { VhdxImage } from '../../src/format/vhdx/vhdxImage';
import { ROOT } from './util';

const MiB = 1024 * 1024;
/** Our create() layout: log at 1 MiB (1 MiB long), BAT at 3 MiB. */
const LOG_OFFSET = MiB;
const LOG_LENGTH = MiB;
const BAT_OFFSET = 3 * MiB;

/**
 * Makes a clean image dirty by hand: a log entry that copies BAT entry `copyFromIndex` over
 * `batIndex`, written at `position` of the ring (wrapping when it runs past the end), and both
 * headers naming a new log GUID. Nothing else in the file changes.
 */
export function buildDirtyLog(file: string, o: { batIndex: number; copyFromIndex: number; position: number; sequence?: bigint }): void {
  const b = readFileSync(file);
  const guid = newGuid();
  const sectorAt = BAT_OFFSET + Math.floor((o.batIndex * 8) / 4096) * 4096;
  const sector = Buffer.from(b.subarray(sectorAt, sectorAt + 4096));
  b.copy(sector, (o.batIndex * 8) % 4096, BAT_OFFSET + o.copyFromIndex * 8, BAT_OFFSET + o.copyFromIndex * 8 + 8);
  const entry = serializeLogEntry({
    writes: [{ fileOffset: sectorAt, length: 4096, data: sector }],
    sequenceNumber: o.sequence ?? 77n, logGuid: guid, tail: o.position, flushedFileOffset: b.length, lastFileOffset: b.length,
  });
  for (let i = 0; i < entry.length; i += 4096) {
    const at = (o.position + i) % LOG_LENGTH;
    entry.copy(b, LOG_OFFSET + at, i, i + 4096);
  }
  for (let slot = 0; slot < 2; slot++) {
    const h = parseHeader(b.subarray(HEADER_OFFSETS[slot], HEADER_OFFSETS[slot] + 4096));
    serializeHeader({ ...h, logGuid: guid, sequenceNumber: h.sequenceNumber + 10n }).copy(b, HEADER_OFFSETS[slot]);
  }
  writeFileSync(file, b);
}

const BLOCKS = 48;
const pattern = (block: number) => (block * 7 + 3) & 0xff || 1;

/**
 * One round: a separate process writes whole blocks (each once, in a shuffled order) into a new
 * dynamic VHDX, printing each block when its write returned; it is killed with SIGKILL at a random
 * moment. Then the file must open read-only (log replayed in memory), every printed block must
 * hold its pattern, and every other block all zeros or all its pattern; qemu, replaying the log
 * itself on a copy, must read the same; a writable open replays it and leaves qemu-img check clean.
 */
export async function runKillTest(dir: string, round: number): Promise<void> {
  const p = path.join(dir, `kill-${round}.vhdx`);
  await createVhdx(p, { size: BLOCKS * MiB, blockSize: MiB });
  const child = spawn(process.execPath, ['--require', 'tsx/cjs', path.join(ROOT, 'test', 'helpers', 'vhdxWriter.ts'), p, String(round), String(BLOCKS)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d.toString(); });
  const killAfterBlocks = 3 + ((round * 11) % 20);
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (out.split('\n').filter((l) => l.startsWith('done')).length >= killAfterBlocks || child.exitCode !== null) {
        clearInterval(timer);
        child.kill('SIGKILL');
        resolve();
      }
    }, 2);
  });
  await new Promise((r) => child.once('close', r));
  const done = new Set(out.split('\n').filter((l) => l.startsWith('done ')).map((l) => Number(l.slice(5))));
  assert.ok(done.size >= killAfterBlocks || out.includes('finished'), `writer reported ${done.size} blocks`);

  const img = await VhdxImage.open(p);
  try {
    const b = Buffer.alloc(MiB);
    for (let block = 0; block < BLOCKS; block++) {
      await readThrough([img], 0, block * MiB, b);
      const full = b.equals(Buffer.alloc(MiB, pattern(block)));
      if (done.has(block)) assert.ok(full, `round ${round}: completed block ${block} lost`);
      else assert.ok(full || b.equals(Buffer.alloc(MiB)), `round ${round}: block ${block} is torn`);
    }
  } finally {
    await img.close();
  }
  const copy = `${p}.qemu`;
  copyFileSync(p, copy);
  execFileSync('qemu-img', ['check', '-r', 'all', copy], { stdio: 'ignore' });
  execFileSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', copy, `${copy}.raw`]);
  const raw = readFileSync(`${copy}.raw`);
  const ro = await VhdxImage.open(p);
  const ours = Buffer.alloc(BLOCKS * MiB);
  await readThrough([ro], 0, 0, ours);
  await ro.close();
  assert.ok(ours.equals(raw), `round ${round}: qemu's replay reads differently`);
  const rw = await VhdxImage.open(p, { writable: true });
  await rw.close();
  assert.match(execFileSync('qemu-img', ['check', p]).toString(), /No errors/);
}
