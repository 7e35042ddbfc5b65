import { strict as assert } from 'assert';
import { mkdirSync, readFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { rng, tempDir } from '../helpers/util';
import { py, randomChain, startServe } from './helpers';

/**
 * Reads the whole disk in 256 KiB structured reads through libnbd, recording each chunk; then the
 * same with simple replies. Prints JSON: the chunks (offset, length, hole?) and both readings' hex
 * digests, and writes the structured reading to argv[2].
 */
const READER = `
import sys, json, nbd, hashlib
def read_all(structured):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(sys.argv[1])
    assert h.get_structured_replies_negotiated() == structured
    size = h.get_size()
    out = bytearray(size)
    chunks = []
    step = 256 * 1024
    for off in range(0, size, step):
        n = min(step, size - off)
        if structured:
            def cb(sub, o, status, err):
                chunks.append([o, len(sub), status == nbd.READ_HOLE])
                if status == nbd.READ_HOLE:
                    assert bytes(sub) == bytes(len(sub)), 'a hole chunk reads as zeros'
                return 0
            buf = h.pread_structured(n, off, cb)
        else:
            buf = h.pread(n, off)
        out[off:off + n] = buf
    h.shutdown()
    return bytes(out), chunks
data, chunks = read_all(True)
plain, _ = read_all(False)
open(sys.argv[2], 'wb').write(data)
print(json.dumps({'chunks': chunks, 'same': data == plain}))
`;

describe('serve: structured reads send ranges no layer holds as hole chunks', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-sparse-');
  after(() => t.cleanup());

  for (const seed of [1, 2]) {
    it(`seed ${seed}: a sparse chain reads as the model; holes exactly where no layer holds data`, async () => {
      const dir = path.join(t.dir, `s${seed}`);
      mkdirSync(dir);
      const { paths, model } = await randomChain(dir, rng(seed), { layers: 2, base: 'dynamic', size: 8 * 1024 * 1024, blockSize: 512 * 1024 });
      const top = paths[paths.length - 1];
      const chain = await openChain(top);
      const map = await chain.map();
      await chain.close();
      const srv = await startServe([top, '--read-only', '--socket', path.join(dir, 's.sock')]);
      try {
        const outFile = path.join(dir, 'read.bin');
        const r = JSON.parse(py(READER, [srv.url, outFile])) as { chunks: Array<[number, number, boolean]>; same: boolean };
        assert.ok(readFileSync(outFile).equals(model), 'structured reads equal the model');
        assert.ok(r.same, 'simple replies read the same bytes');
        const holes = r.chunks.filter((c) => c[2]);
        assert.ok(holes.length > 0, 'the sparse chain gets hole chunks');
        // Every hole chunk lies in a range the chain map calls unallocated; every unallocated byte is in a hole chunk.
        const unallocated = map.filter((e) => !e.data);
        for (const [off, len] of holes) {
          assert.ok(unallocated.some((e) => e.start <= off && off + len <= e.start + e.length), `hole ${off}+${len} is not unallocated in the map`);
        }
        const holeBytes = holes.reduce((n, c) => n + c[1], 0);
        assert.equal(holeBytes, unallocated.reduce((n, e) => n + e.length, 0), 'all unallocated bytes come back as holes');
        // Chunks tile each request: the whole disk once, no overlaps.
        const sorted = [...r.chunks].sort((a, b) => a[0] - b[0]);
        let pos = 0;
        for (const [off, len] of sorted) {
          assert.equal(off, pos, `chunk at ${off} leaves a gap or overlaps at ${pos}`);
          pos += len;
        }
        assert.equal(pos, model.length);
      } finally {
        await srv.stop();
      }
    });
  }
});
