// The official centrifuge JS SDK (npm `centrifuge`) against a running sessionhub.
// Run by tests/realtime/test_node_sdk.py:  node tests/node/centrifuge_sdk.mjs
// Environment: WS_URL, HTTP_URL, TOKEN_ALICE, TOKEN_BOB, TOKEN_ADMIN, SCENARIO (main|window).
// Prints one JSON line of observations and exits 0; exits 1 with a message on failure.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const env = process.env;
const opts = { websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 300, timeout: 5000 };
const deadline = setTimeout(() => fail('scenario took longer than 45 s'), 45000);

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

async function until(pred, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) fail('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function rest(method, path, token, body) {
  const r = await fetch(env.HTTP_URL + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  check(r.ok, `${method} ${path} -> ${r.status}`);
  return r.json();
}

function client(token) {
  return new Centrifuge(env.WS_URL, { ...opts, token });
}

function record(sub) {
  const seen = { pubs: [], subscribed: [], unsubscribed: [], joins: [], leaves: [] };
  sub.on('publication', (ctx) => seen.pubs.push({ offset: ctx.offset, data: ctx.data }));
  sub.on('subscribed', (ctx) => seen.subscribed.push(ctx));
  sub.on('unsubscribed', (ctx) => seen.unsubscribed.push(ctx.code));
  sub.on('join', (ctx) => seen.joins.push(ctx.info.user));
  sub.on('leave', (ctx) => seen.leaves.push(ctx.info.user));
  sub.on('error', () => {});
  return seen;
}

async function main() {
  const out = {};

  // Connect with a bad token: a final disconnect (3500).
  const bad = client('bad.token.value');
  const badCodes = [];
  bad.on('disconnected', (ctx) => badCodes.push(ctx.code));
  bad.on('error', () => {});
  bad.connect();
  await until(() => badCodes.length > 0, 'bad token disconnect');
  out.bad_token_code = badCodes[0];

  // Connect with a good token.
  const alice = client(env.TOKEN_ALICE);
  alice.on('error', () => {});
  alice.connect();
  await alice.ready(5000);
  out.connected = alice.state;

  if (env.SCENARIO === 'window') {
    // Recovery out of the history window: recovered false, the missed stretch not replayed.
    const sub = alice.newSubscription('user:alice');
    const seen = record(sub);
    sub.subscribe();
    await sub.ready(5000);
    await rest('POST', '/api/sessions', env.TOKEN_ALICE, {});
    await until(() => seen.pubs.length === 1, 'first publication');
    alice.disconnect();
    for (let i = 0; i < 4; i++) await rest('POST', '/api/sessions', env.TOKEN_ALICE, {});
    alice.connect();
    await until(() => seen.subscribed.length === 2, 'resubscribed');
    out.was_recovering = seen.subscribed[1].wasRecovering;
    out.recovered = seen.subscribed[1].recovered;
    out.offsets = seen.pubs.map((p) => p.offset);
    alice.disconnect();
    return out;
  }

  // Subscribe allowed and refused (a permission error on the subscription, no disconnect).
  const mine = alice.newSubscription('user:alice', { joinLeave: true });
  const seen = record(mine);
  mine.subscribe();
  await mine.ready(5000);
  const theirs = alice.newSubscription('user:bob');
  const refused = record(theirs);
  theirs.subscribe();
  await until(() => refused.unsubscribed.length > 0, 'refusal');
  out.refused_code = refused.unsubscribed[0];
  out.state_after_refusal = alice.state;

  // Publications in order, as REST calls return.
  const s = await rest('POST', '/api/sessions', env.TOKEN_ALICE, {});
  for (let i = 0; i < 3; i++) {
    await rest('PATCH', `/api/sessions/${s.id}`, env.TOKEN_ALICE, { metadata: { n: i } });
  }
  await until(() => seen.pubs.length === 4, '4 publications');
  out.offsets = seen.pubs.map((p) => p.offset);
  out.versions = seen.pubs.map((p) => p.data.version);

  // Presence: an admin joins the same topic, then leaves.
  const admin = client(env.TOKEN_ADMIN);
  admin.on('error', () => {});
  admin.connect();
  const asub = admin.newSubscription('user:alice');
  asub.on('error', () => {});
  asub.subscribe();
  await asub.ready(5000);
  await until(() => seen.joins.includes('root'), 'join of root');
  const presence = await alice.presence('user:alice');
  out.presence_users = Object.values(presence.clients).map((c) => c.user).sort();
  admin.disconnect();
  await until(() => seen.leaves.includes('root'), 'leave of root');
  out.joins = seen.joins;
  out.leaves = seen.leaves;

  // Recovery: away while two changes happen; back with exactly those.
  alice.disconnect();
  await rest('PATCH', `/api/sessions/${s.id}`, env.TOKEN_ALICE, { metadata: { n: 'away1' } });
  await rest('PATCH', `/api/sessions/${s.id}`, env.TOKEN_ALICE, { metadata: { n: 'away2' } });
  alice.connect();
  await until(() => seen.subscribed.length === 2, 'resubscribed');
  await until(() => seen.pubs.length === 6, 'recovered publications');
  out.recovered = seen.subscribed[1].recovered;
  out.was_recovering = seen.subscribed[1].wasRecovering;
  out.after_recovery = seen.pubs.slice(4).map((p) => [p.offset, p.data.data.session.metadata.n]);
  alice.disconnect();
  return out;
}

main()
  .then((out) => {
    clearTimeout(deadline);
    console.log(JSON.stringify(out));
    process.exit(0);
  })
  .catch((e) => fail(e && e.stack ? e.stack : String(e)));
