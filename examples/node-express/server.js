const express = require('express');

const app = express();
const port = Number(process.env.PORT || 3000);

// One log line per request on stdout (the platform collects it).
app.use((req, res, next) => {
  const started = Date.now();
  // Which release answered: the platform sets SHELLWEGO_RELEASE (e.g. v3) for every instance.
  res.set('X-Release', process.env.SHELLWEGO_RELEASE || 'dev');
  res.on('finish', () => console.log(`${req.method} ${req.originalUrl} ${res.statusCode} ${Date.now() - started}ms`));
  next();
});

app.get('/', (_req, res) => res.type('text/plain').send('Hello from ShellWeGo (node-express)\n'));
app.get('/health', (_req, res) => res.json({ status: 'ok', uptime: process.uptime() }));

const server = app.listen(port, () => console.log(`node-express listening on port ${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
