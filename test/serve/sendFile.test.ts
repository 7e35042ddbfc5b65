import { strict as assert } from 'assert';
import { mkdirSync, readFileSync } from 'fs';
import * as path from 'path';
import { sentFromFile } from '../../src/serve/connection';
import { startServer } from '../../src/serve/server';
import { sendFileAvailable } from '../../src/io/sendFile';
import { rng, tempDir } from '../helpers/util';
import { pyAsync, randomChain } from './helpers';

/**
 * Issues a 1 MiB read for every MiB of the disk at once, waits before taking any reply (so the
 * server's socket fills and its sends stop part way), then collects them all and writes the disk
 * as read to argv[2]. argv[3]: 1 for structured replies, 0 for simple ones.
 */
const PILE_UP = `
import sys, time, nbd
h = nbd.NBD()
h.set_request_structured_replies(sys.argv[3] == '1')
h.connect_uri(sys.argv[1])
assert h.get_structured_replies_negotiated() == (sys.argv[3] == '1')
size = h.get_size()
step = 1 << 20
errors = []
def done(err):
    if err.value: errors.append(err.value)
    return 1
bufs = []
for off in range(0, size, step):
    b = nbd.Buffer(min(step, size - off))
    h.aio_pread(b, off, completion=done)
    bufs.append((off, b))
time.sleep(0.5)
while h.aio_in_flight() > 0:
    h.poll(-1)
assert not errors, errors
out = bytearray(size)
for off, b in bufs:
    data = b.to_bytearray()
    out[off:off + len(data)] = data
open(sys.argv[2], 'wb').write(out)
h.shutdown()
`;

describe('serve: read replies straight from the image file (sendfile)', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-sendfile-');
  after(() => t.cleanup());

  for (const base of ['dynamic', 'fixed'] as const) {
    it(`${base} base with a differencing child: piled-up 1 MiB reads, structured and simple, equal the model while sends stop part way`, async function () {
      if (!sendFileAvailable()) this.skip();
      const dir = path.join(t.dir, base);
      mkdirSync(dir);
      // 2 MiB blocks: 1 MiB reads lie inside one block (sent from the file) or in a child's block
      // with partly set bitmaps (read through a buffer), both in the same stream of replies.
      const { paths, model } = await randomChain(dir, rng(base === 'dynamic' ? 7 : 8), { layers: 1, base, size: 48 * 1024 * 1024, blockSize: 2 * 1024 * 1024 });
      const server = await startServer({ exports: [{ name: 'd', image: paths[1] }], socket: path.join(dir, 's.sock'), readOnly: true });
      try {
        const before = { ...sentFromFile };
        for (const structured of ['1', '0']) {
          const out = path.join(dir, `read${structured}.bin`);
          await pyAsync(PILE_UP, [server.url, out, structured]);
          assert.ok(readFileSync(out).equals(model), `${structured === '1' ? 'structured' : 'simple'} replies read the model`);
        }
        assert.ok(sentFromFile.replies - before.replies > 10, `replies sent from the file: ${sentFromFile.replies - before.replies}`);
        assert.ok(sentFromFile.partial - before.partial > 0, 'some sends stopped part way (the socket was full) and were finished through the stream');
      } finally {
        await server.close();
      }
    });
  }
});
