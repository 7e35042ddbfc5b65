// The first-paint bench's web server, in its own process as VS Code's webview resources are served
// outside the extension host: the page (index.html of a run), the built bundles (no caching, as on a
// first open). The host's first message reaches the page through the bench (bench/firstPaint.ts).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const defaultDist = process.argv[2];
const runs = new Map();
const run = (id) => {
  if (!runs.has(id)) runs.set(id, { html: '' });
  return runs.get(id);
};
process.on('message', (m) => {
  if (m.type === 'page') Object.assign(run(m.id), { html: m.html, dist: m.dist ?? defaultDist });
  else if (m.type === 'done') runs.delete(m.id);
});
const types = { js: 'text/javascript', css: 'text/css', html: 'text/html' };
const server = createServer((req, res) => {
  const [, , id, file] = new URL(req.url, 'http://x').pathname.split('/');
  const r = runs.get(id);
  if (!r || !file) { res.writeHead(404).end(); return; }
  const send = (body) => res.writeHead(200, { 'content-type': types[file.split('.').pop()], 'cache-control': 'no-store' }).end(body);
  if (file === 'index.html') send(r.html);
  else if (/^webview[\w-]*\.(js|css)$/.test(file)) send(readFileSync(join(r.dist, file)));
  else res.writeHead(404).end();
});
server.listen(0, '127.0.0.1', () => process.send({ type: 'listening', port: server.address().port }));
process.on('disconnect', () => process.exit(0));
