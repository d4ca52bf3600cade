// Echo load generator for perf/bench_ws.py: node ws_load.js URL CONNS SIZE SECONDS
// Each connection keeps one message in flight; prints "msgs <n> seconds <s>".
const WebSocket = require(require('path').join(__dirname, '..', 'tests', 'node', 'node_modules', 'ws'));
const [url, conns, size, secs] = process.argv.slice(2);
const payload = Buffer.alloc(parseInt(size, 10), 120);
let count = 0, open = 0, start = 0, done = false;
for (let i = 0; i < parseInt(conns, 10); i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('open', () => {
    if (++open === parseInt(conns, 10)) {
      start = Date.now();
      setTimeout(() => { done = true; console.log('msgs ' + count + ' seconds ' + (Date.now() - start) / 1000); process.exit(0); }, parseFloat(secs) * 1000);
    }
    ws.send(payload);
  });
  ws.on('message', () => { if (start) count++; if (!done) ws.send(payload); });
  ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
}
