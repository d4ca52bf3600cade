// Node `ws` as a peer for powpow's WebSocket tests.
//   node ws_peer.js client URL COMPRESS N   -> echo test against a server; prints "ok <n> <ext>"
//   node ws_peer.js server COMPRESS          -> echo server on 127.0.0.1:0; prints "port <p>"
//   node ws_peer.js listen URL COMPRESS N    -> prints "open <ext>", then "msg <t|b> <len> <sha1>" for
//                                               each of N messages, then closes (1000) and exits
const WebSocket = require('ws');
const [mode, a, b, c] = process.argv.slice(2);

function payloads(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const size = [0, 1, 125, 126, 1000, 65535, 65536, 200000][i % 8];
    if (i % 2) out.push(Buffer.alloc(size, i % 256));
    else out.push('é'.repeat(Math.floor(size / 2)));
  }
  return out;
}

if (mode === 'client') {
  const compress = b === '1';
  const msgs = payloads(parseInt(c, 10));
  const ws = new WebSocket(a, { perMessageDeflate: compress });
  let i = 0;
  ws.on('open', () => ws.send(msgs[0]));
  ws.on('message', (data, isBinary) => {
    const want = msgs[i];
    const ok = isBinary ? Buffer.isBuffer(want) && want.equals(data) : typeof want === 'string' && want === data.toString();
    if (!ok) { console.log('mismatch at ' + i); process.exit(1); }
    i++;
    if (i === msgs.length) ws.close(1000, 'bye'); else ws.send(msgs[i]);
  });
  ws.on('close', (code) => {
    console.log('ok ' + i + ' ' + (ws.extensions || '-') + ' ' + code);
    process.exit(i === msgs.length && code === 1000 ? 0 : 1);
  });
  ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
} else if (mode === 'listen') {
  const crypto = require('crypto');
  const ws = new WebSocket(a, { perMessageDeflate: b === '1' });
  let left = parseInt(c, 10);
  ws.on('open', () => console.log('open ' + (ws.extensions || '-')));
  ws.on('message', (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data);
    console.log('msg ' + (isBinary ? 'b' : 't') + ' ' + buf.length + ' ' +
                crypto.createHash('sha1').update(buf).digest('hex'));
    if (--left === 0) ws.close(1000);
  });
  ws.on('close', () => process.exit(left === 0 ? 0 : 1));
  ws.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
} else {
  // a: '1' deflate, '0' none, 'w8' deflate that answers client_max_window_bits=8 (and compresses all)
  const deflate = a === 'w8' ? { clientMaxWindowBits: 8, threshold: 0 } : a === '1';
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate }, () => {
    console.log('port ' + wss.address().port);
  });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
}
