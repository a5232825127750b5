// Web process: no dependencies, plain node:http on $PORT.
import http from 'node:http';

const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(req.url === '/health' ? 'ok\n' : 'Hello from ShellWeGo (procfile-worker web)\n');
});
server.listen(port, () => console.log(`web listening on port ${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
