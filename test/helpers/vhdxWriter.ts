// Writes whole blocks into a VHDX (each block once, shuffled by seed), printing "done N" after each.
// Killed with SIGKILL by test/helpers/vhdxLog.ts.
import { VhdxImage } from '../../src/format/vhdx/vhdxImage';
import { rng } from './util';

(async () => {
  const [file, seed, count] = process.argv.slice(2);
  const n = Number(count);
  const rand = rng(Number(seed) + 1);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [order[i], order[j]] = [order[j], order[i]]; }
  const img = await VhdxImage.open(file, { writable: true });
  for (const block of order) {
    await img.write(block * 1024 * 1024, Buffer.alloc(1024 * 1024, (block * 7 + 3) & 0xff || 1), async (_o, t) => { t.fill(0); });
    process.stdout.write(`done ${block}\n`);
  }
  await img.close();
  process.stdout.write('finished\n');
})();
