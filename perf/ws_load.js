// WebSocket load generator for perf/bench_ws.py (Node `ws` from tests/node; no compression).
//   node ws_load.js echo URL CONNS SIZE SECONDS
//       each connection keeps one binary message in flight; prints "msgs <n> seconds <s>"
//   node ws_load.js bcast URL SUBS SIZE SECONDS INFLIGHT
//       SUBS connections; connection 0 publishes (the server relays every message to all of them)
//       and sends the next one whenever its own copy comes back, INFLIGHT at a time;
//       prints "msgs <delivered to all connections> seconds <s>"
//   (the old form "node ws_load.js URL CONNS SIZE SECONDS" is echo)
const WebSocket = require(require('path').join(__dirname, '..', 'tests', 'node', 'node_modules', 'ws'));
let args = process.argv.slice(2);
if (args[0].startsWith('ws')) args = ['echo'].concat(args);
const [mode, url, connsS, sizeS, secsS, inflightS] = args;
const conns = parseInt(connsS, 10), secs = parseFloat(secsS);
const payload = Buffer.alloc(parseInt(sizeS, 10), 120);
let count = 0, open = 0, start = 0, done = false;
const socks = [];
function begin() {
  start = Date.now();
  setTimeout(() => {
    done = true;
    console.log('msgs ' + count + ' seconds ' + (Date.now() - start) / 1000);
    process.exit(0);
  }, secs * 1000);
  if (mode === 'echo') for (const ws of socks) ws.send(payload);
  else for (let i = 0; i < parseInt(inflightS || '4', 10); i++) socks[0].send(payload);
}
for (let i = 0; i < conns; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 << 20 });
  socks.push(ws);
  ws.on('open', () => { if (++open === conns) begin(); });
  ws.on('message', () => {
    if (start) count++;
    if (done) return;
    if (mode === 'echo') ws.send(payload);
    else if (i === 0) ws.send(payload);
  });
  ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
}
