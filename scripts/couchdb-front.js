// couchdb-front.js LISTEN_PORT BACKEND_PORT — authentication in front of pouchdb-server,
// which answers anonymous requests even with an admin set (and crashes on some of them):
// a request without credentials gets CouchDB's own 401; every other request goes through
// unchanged and pouchdb-server checks the credentials. Loopback only.
'use strict';
const http = require('http');
const [listen, backend] = process.argv.slice(2).map(Number);
http
  .createServer((req, res) => {
    if (!/^Basic /i.test(req.headers.authorization || '')) {
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': 'Basic realm="server"',
      });
      res.end(JSON.stringify({ error: 'unauthorized', reason: 'Authentication required.' }) + '\n');
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port: backend, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (e) => {
      if (!res.headersSent) res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unavailable', reason: String(e.message) }) + '\n');
    });
    req.pipe(upstream);
  })
  .listen(listen, '127.0.0.1');
