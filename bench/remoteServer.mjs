// A range-serving HTTP server for the remote-parent bench: latency per request; GET /__count gives the request count.
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';

const [dir, latency] = [process.argv[2], Number(process.argv[3] ?? 20)];
let count = 0;
const server = createServer((req, res) => {
  if (req.url === '/__count') { res.end(String(count)); return; }
  count++;
  setTimeout(() => {
    const file = `${dir}/${decodeURIComponent(req.url.slice(1))}`;
    let st;
    try { st = statSync(file); } catch { res.writeHead(404).end(); return; }
    const etag = `"${st.size}-${st.mtimeMs}"`;
    const m = /^bytes=(\d+)-(\d+)?$/.exec(req.headers.range ?? '');
    if (!m) { res.writeHead(200, { 'Content-Length': st.size, ETag: etag }); createReadStream(file).pipe(res); return; }
    const start = Number(m[1]);
    const end = Math.min(st.size - 1, m[2] ? Number(m[2]) : st.size - 1);
    res.writeHead(206, { 'Content-Range': `bytes ${start}-${end}/${st.size}`, 'Content-Length': end - start + 1, ETag: etag });
    createReadStream(file, { start, end }).pipe(res);
  }, latency);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
