// The seed's flow against a redis-im server, with node-redis.
//
//   node seed_flow.mjs [host [port]]      (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD)
//
// A device connects on an IM node, gets a message and acks it, goes offline,
// misses three messages, comes back, reads the summary, pages and acks. Then a
// message is left unacked: the node hears `resend` events on its channel and
// finally a `kick`, and the device fetches the message when it reconnects.
// Every reply is checked; the exit status is 1 when one differs.
import { createClient } from 'redis';
import { isDeepStrictEqual } from 'node:util';

const host = process.argv[2] ?? process.env.REDIS_HOST ?? '127.0.0.1';
const port = Number(process.argv[3] ?? process.env.REDIS_PORT ?? 6379);
const user = `alice-node-${process.pid}@example.com`;
const device = 'phone';
const node = `xmpp-node-${process.pid}`;
// Short timer settings so that the events come within seconds.
const settings = { 'im.resend-interval': '400', 'im.ack-timeout': '2000' };

class Mismatch extends Error {}

function expect(what, got, want) {
  if (!isDeepStrictEqual(got, want)) {
    throw new Mismatch(`${what}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  }
}

// A map reply as an object: RESP3 (node-redis 6's default) gives one
// already, RESP2 a flat array [k1, v1, k2, v2, ...].
function asMap(reply) {
  if (!Array.isArray(reply)) return reply instanceof Map ? Object.fromEntries(reply) : reply;
  const m = {};
  for (let i = 0; i < reply.length; i += 2) m[reply[i]] = reply[i + 1];
  return m;
}

const stanza = (id, text) =>
  `<message from='bob@example.com/pc' to='${user}' id='${id}' type='chat'><body>${text}</body></message>`;

const r = createClient({ socket: { host, port }, password: process.env.REDIS_PASSWORD || undefined });
r.on('error', (e) => { console.log(`FAIL connection: ${e}`); process.exit(1); });
// Any failure below (a Mismatch, an error reply) ends in FAIL and exit status 1.
process.on('uncaughtException', (e) => { console.log(`FAIL ${e.message}`); process.exit(1); });
await r.connect();
const im = (...args) => r.sendCommand(args.map(String));
console.log(`node-redis -> ${host}:${port}, user ${user}`);
const saved = await r.configGet('im.*');
const channel = saved['im.event-prefix'] + node;

// The IM node listens on its own channel before it takes sessions.
const events = [];
let wake = null;
const sub = r.duplicate();
sub.on('error', (e) => { console.log(`FAIL subscriber: ${e}`); process.exit(1); });
await sub.connect();
await sub.subscribe(channel, (message) => { events.push(JSON.parse(message)); if (wake) wake(); });
const nextEvent = (ms) => new Promise((resolve) => {
  if (events.length) return resolve(events.shift());
  const timer = setTimeout(() => { wake = null; resolve(null); }, ms);
  wake = () => { clearTimeout(timer); wake = null; resolve(events.shift()); };
});
console.log(`node ${node} listens on ${channel}`);

try {
  for (const [name, value] of Object.entries(settings)) await r.configSet(name, value);
  console.log(`CONFIG SET resend-interval 400 ms, ack-timeout 2000 ms (were ${saved['im.resend-interval']}, ${saved['im.ack-timeout']})`);

  // 1. The device connects; a message is delivered and acked.
  let info = asMap(await im('IM.CONNECT', user, device, 'NODE', node));
  expect('IM.CONNECT count', info.count, 0);
  console.log(`${device} connects on ${node}: nothing missed`);
  let [seq, id, pending] = await im('IM.STORE', user, stanza('m1', 'Hi Alice'), 'DEVICES', 1, device);
  expect('IM.STORE m1', [id, pending], ['m1', [device]]);
  console.log(`stored m1 (seq ${seq}), delivered to ${device}`);
  expect('IM.ACK m1', await im('IM.ACK', user, device, 'm1'), 1);
  expect('messages after the ack', asMap(await im('IM.INFO', user)).messages, 0);
  console.log(`${device} acks m1: the mailbox is empty`);

  // 2. The device goes offline; messages are kept for it.
  expect('IM.DISCONNECT', await im('IM.DISCONNECT', user, device), 0);
  console.log(`${device} disconnects`);
  const sent = [];
  for (const [mid, text] of [['m2', 'Lunch?'], ['m3', '12:30 at the usual place'], ['m4', 'Call me']]) {
    [seq, id, pending] = await im('IM.STORE', user, stanza(mid, text));
    expect(`IM.STORE ${mid}`, [id, pending], [mid, []]);
    sent.push([seq, mid, stanza(mid, text)]);
    console.log(`stored ${mid} (seq ${seq}) offline`);
  }
  const first = sent[0][0], last = sent[2][0];

  // 3. It comes back: summary, pages, ack.
  info = asMap(await im('IM.CONNECT', user, device, 'NODE', node));
  expect('IM.CONNECT summary', [info.count, info.first, info.last], [3, first, last]);
  expect('bytes', info.bytes, sent.reduce((n, m) => n + Buffer.byteLength(m[2]), 0));
  console.log(`${device} reconnects: ${info.count} missed, ${info.bytes} bytes, seq ${info.first}..${info.last}`);
  info = asMap(await im('IM.OFFLINE.INFO', user, device, 'IDS'));
  expect('IM.OFFLINE.INFO ids', info.ids, ['m2', 'm3', 'm4']);
  console.log(`offline ids: ${info.ids.join(' ')}`);
  let cursor = 0;
  const got = [];
  do {
    let page;
    [cursor, page] = await im('IM.OFFLINE.PAGE', user, device, 'AFTER', cursor, 'COUNT', 2);
    for (const [s, mid, , body] of page) got.push([s, mid, body]);
    console.log(`page: ${page.map((m) => m[1]).join(' ')} (cursor ${cursor})`);
  } while (cursor !== 0);
  expect('paged messages', got, sent);
  expect('IM.ACK UPTO', await im('IM.ACK', user, device, 'UPTO', last), 3);
  expect('offline after the ack', asMap(await im('IM.OFFLINE.INFO', user, device)).count, 0);
  console.log(`${device} acks UPTO ${last}: 3 acked`);

  // 4. A message the device never acks: resend events, then a kick.
  const m5 = stanza('m5', 'Are you there?');
  let seq5;
  [seq5, , pending] = await im('IM.STORE', user, m5, 'DEVICES', 1, device);
  expect('IM.STORE m5 pending', pending, [device]);
  console.log(`stored m5 (seq ${seq5}), delivered to ${device}, which does not ack`);
  const attempts = [];
  let kicked = false;
  const deadline = Date.now() + 15000;
  while (!kicked && Date.now() < deadline) {
    const ev = await nextEvent(1000);
    if (ev === null) continue;
    expect('event target', [ev.user, ev.device, ev.seq, ev.id], [user, device, seq5, 'm5']);
    if (ev.event === 'resend') {
      expect('resent stanza', ev.stanza, m5);
      attempts.push(ev.attempt);
      console.log(`event resend m5, attempt ${ev.attempt}: the node writes the stanza to the session again`);
    } else if (ev.event === 'kick') {
      expect('kick reason', ev.reason, 'ack-timeout');
      kicked = true;
      console.log(`event kick ${device} (${ev.reason}): the node closes the session`);
    } else {
      expect('event kind', ev.event, 'resend or kick');
    }
  }
  expect('kicked within 15 s', kicked, true);
  expect('resend attempts', attempts, Array.from({ length: Math.max(attempts.length, 1) }, (_, i) => i + 2));
  const devices = (await im('IM.DEVICES', user)).map(asMap);
  expect('IM.DEVICES after the kick', devices.map((d) => [d.device, d.online, d.pending, d.offline]), [[device, 0, 0, 1]]);
  info = asMap(await im('IM.CONNECT', user, device, 'NODE', node));
  expect('IM.CONNECT after the kick', info.count, 1);
  const [c5, page5] = await im('IM.OFFLINE.PAGE', user, device);
  expect('page after the kick', [c5, page5.map((m) => [m[0], m[1], m[3]])], [0, [[seq5, 'm5', m5]]]);
  expect('IM.ACK m5', await im('IM.ACK', user, device, 'm5'), 1);
  expect('messages at the end', asMap(await im('IM.INFO', user)).messages, 0);
  console.log(`${device} reconnects, pages m5, acks it by id: the mailbox is empty`);
} finally {
  for (const name of Object.keys(settings)) await r.configSet(name, saved[name]);
  await r.del(user);
  await sub.close();
  await r.close();
}
console.log('OK');
