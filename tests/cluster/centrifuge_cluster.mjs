// The official centrifuge JS SDK (npm `centrifuge`): one client per URL of a cluster.
// Run by tests/cluster/test_delivery.py. Environment: WS_URLS (comma-separated), TOKEN,
// TOPIC, EXPECT (publications each client waits for).
// Prints "ready" once every client is subscribed, then one JSON line: per client, its
// publications as [offset, session_id, version]. Exits 1 with a message on failure.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const env = process.env;
const expect = Number(env.EXPECT);
const deadline = setTimeout(() => fail('took longer than 40 s'), 40000);

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

async function until(pred, what, ms = 20000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) fail('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function main() {
  const seen = [];
  const clients = [];
  for (const url of env.WS_URLS.split(',')) {
    const c = new Centrifuge(url, {
      websocket: WebSocket,
      token: env.TOKEN,
      minReconnectDelay: 50,
      maxReconnectDelay: 300,
      timeout: 5000,
    });
    c.on('error', () => {});
    const pubs = [];
    const sub = c.newSubscription(env.TOPIC);
    sub.on('publication', (ctx) => pubs.push([ctx.offset, ctx.data.session_id, ctx.data.version]));
    sub.on('error', () => {});
    c.connect();
    sub.subscribe();
    await sub.ready(10000);
    seen.push(pubs);
    clients.push(c);
  }
  console.log('ready');
  for (const pubs of seen) await until(() => pubs.length >= expect, `${expect} publications`);
  await new Promise((r) => setTimeout(r, 300)); // a repeat would show up by now
  for (const c of clients) c.disconnect();
  return seen;
}

main()
  .then((seen) => {
    clearTimeout(deadline);
    console.log(JSON.stringify(seen));
    process.exit(0);
  })
  .catch((e) => fail(e && e.stack ? e.stack : String(e)));
