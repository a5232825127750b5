// ShellWeGo platform static file server, shipped inside static-site artifacts as
// .shellwego/static-server.mjs. Plain node:http, no dependencies.
//   node .shellwego/static-server.mjs [root]      (root relative to the cwd, default ".")
// Listens on $PORT. Serves GET/HEAD, index.html for directories, 404.html (if present) for misses,
// never files outside the root (no "..", no symlinks leading out) and never dotfiles except .well-known.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.htm': 'text/html; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8', '.txt': 'text/plain; charset=utf-8', '.md': 'text/markdown; charset=utf-8',
  '.xml': 'application/xml; charset=utf-8', '.csv': 'text/csv; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp', '.avif': 'image/avif',
  '.ico': 'image/x-icon', '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.otf': 'font/otf',
  '.wasm': 'application/wasm', '.pdf': 'application/pdf', '.mp4': 'video/mp4', '.webm': 'video/webm', '.mp3': 'audio/mpeg',
  '.webmanifest': 'application/manifest+json', '.zip': 'application/zip',
};

const root = fs.realpathSync(path.resolve(process.argv[2] || '.'));
const port = Number(process.env.PORT || 8080);

function inside(p) {
  return p === root || p.startsWith(root + path.sep);
}

/** Resolve a URL path to a regular file under root, or null. Returns { redirect } for directories without a slash. */
function resolve(urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return null;
  const segs = decoded.split('/').filter((s) => s !== '');
  for (const s of segs) {
    if (s === '..' || s === '.') return null;
    if (s.startsWith('.') && s !== '.well-known') return null;
  }
  let file = path.join(root, ...segs);
  let real;
  try {
    real = fs.realpathSync(file);
  } catch {
    return null;
  }
  if (!inside(real)) return null;
  let st = fs.statSync(real);
  if (st.isDirectory()) {
    if (!urlPath.endsWith('/')) return { redirect: urlPath + '/' };
    file = path.join(real, 'index.html');
    try {
      real = fs.realpathSync(file);
    } catch {
      return null;
    }
    if (!inside(real)) return null;
    st = fs.statSync(real);
  }
  if (!st.isFile()) return null;
  return { file: real, stat: st };
}

function send(req, res, status, found, started) {
  const type = TYPES[path.extname(found.file).toLowerCase()] || 'application/octet-stream';
  const etag = `W/"${found.stat.size.toString(16)}-${Math.floor(found.stat.mtimeMs).toString(16)}"`;
  const headers = {
    'content-type': type,
    'content-length': found.stat.size,
    etag,
    'last-modified': found.stat.mtime.toUTCString(),
    'cache-control': type.startsWith('text/html') ? 'no-cache' : 'public, max-age=300',
    'x-content-type-options': 'nosniff',
  };
  if (status === 200 && req.headers['if-none-match'] === etag) {
    res.writeHead(304, { etag });
    res.end();
    return log(req, 304, started);
  }
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
    return log(req, status, started);
  }
  const stream = fs.createReadStream(found.file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
  res.on('finish', () => log(req, status, started));
}

function log(req, status, started) {
  process.stdout.write(`${req.method} ${req.url} ${status} ${Date.now() - started}ms\n`);
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('405 Method Not Allowed\n');
    return log(req, 405, started);
  }
  const urlPath = (req.url || '/').split('?')[0].split('#')[0] || '/';
  let found = null;
  try {
    found = resolve(urlPath);
  } catch {
    found = null;
  }
  if (found && found.redirect) {
    res.writeHead(301, { location: found.redirect });
    res.end();
    return log(req, 301, started);
  }
  if (found) return send(req, res, 200, found, started);
  let notFound = null;
  try {
    notFound = resolve('/404.html');
  } catch {
    notFound = null;
  }
  if (notFound && !notFound.redirect) return send(req, res, 404, notFound, started);
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(req.method === 'HEAD' ? undefined : '404 Not Found\n');
  log(req, 404, started);
});

server.listen(port, () => process.stdout.write(`static server listening on port ${port}, serving ${root}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
