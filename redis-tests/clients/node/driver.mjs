// Calls redis-im commands through a Node.js cluster client, as an
// application would, and prints each reply as one JSON line.
//
//   node driver.mjs node-redis|ioredis <port>
//
// Each line on standard input is one call: tab-separated, the key the call
// names first (for the client's routing), then the command and its
// arguments. Each reply is printed at once as one line, {"ok": reply}
// (bulk strings as UTF-8 text, integers as numbers, arrays as arrays) or
// {"error": message}.
import { createInterface } from 'node:readline';
import { createCluster } from 'redis';
import Redis from 'ioredis';

const [client, port] = process.argv.slice(2);
const READONLY = new Set(['IM.INFO', 'IM.DEVICES', 'IM.OFFLINE.INFO', 'IM.OFFLINE.PAGE', 'IM.OFFLINE']);

function plain(v) {
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'bigint') return Number(v);
  return v;
}

async function nodeRedis() {
  const cluster = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${port}` }] });
  cluster.on('error', (e) => process.stderr.write(`cluster error: ${e}\n`));
  await cluster.connect();
  return {
    call: (key, args) => cluster.sendCommand(key, READONLY.has(args[0].toUpperCase()), args),
    close: () => cluster.close(),
  };
}

async function ioredis() {
  const cluster = new Redis.Cluster([{ host: '127.0.0.1', port: Number(port) }], {
    retryDelayOnMoved: 0,
  });
  return {
    call: (_key, args) => cluster.call(...args),
    close: () => cluster.quit(),
  };
}

const c = client === 'ioredis' ? await ioredis() : await nodeRedis();
for await (const line of createInterface({ input: process.stdin })) {
  if (line.length === 0) continue;
  const [key, ...args] = line.split('\t');
  let reply;
  try {
    reply = { ok: plain(await c.call(key, args)) };
  } catch (e) {
    reply = { error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
await c.close();
