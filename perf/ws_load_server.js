// Node `ws` as a peer server for perf/bench_ws.py: node ws_load_server.js MODE COMPRESS
//   MODE echo: echo every message; bcast: relay every message to every client. Prints "PORT <p>".
const WebSocket = require(require('path').join(__dirname, '..', 'tests', 'node', 'node_modules', 'ws'));
const [mode, comp] = process.argv.slice(2);
const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: comp === '1', maxPayload: 2 << 20 });
wss.on('listening', () => console.log('PORT ' + wss.address().port));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (mode === 'echo') ws.send(data, { binary: isBinary });
    else for (const c of wss.clients) c.send(data, { binary: isBinary });
  });
});
