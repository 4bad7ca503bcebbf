// End to end on 127.0.0.1: the test relay and the real ticktockd as processes,
// nostr-tools as the outside world. An `echo` agent configured with the relay
// publishes through nostr/publish (nostr-tools verifies the event it finds on
// the relay), receives a mention and a NIP-17 DM made by nostr-tools (its echo
// shows what its tick saw), and keeps its relay across a restart.
//
// usage: node e2e_ticktockd.mjs /path/to/ticktockd /path/to/ticktock-test-relay

import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { finalizeEvent, generateSecretKey, getPublicKey, verifyEvent } from 'nostr-tools/pure';
import * as nip17 from 'nostr-tools/nip17';
import * as nip19 from 'nostr-tools/nip19';

const [ticktockd, relayBin] = process.argv.slice(2);
if (!ticktockd || !relayBin) {
  console.error('usage: node e2e_ticktockd.mjs TICKTOCKD TEST_RELAY');
  process.exit(2);
}
const TOKEN = 'nostr-e2e-token';
const children = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits (bounded) until f() returns a truthy value, which it returns.
async function eventually(what, f, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// A child process whose stdout lines can be awaited.
function start(cmd, args) {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(p);
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: p.stdout }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  p.nextLine = async (pred, ms = 15000) => {
    const end = Date.now() + ms;
    for (;;) {
      const i = lines.findIndex(pred);
      if (i >= 0) return lines.splice(0, i + 1)[i];
      if (Date.now() > end) throw new Error(`no line from ${path.basename(cmd)} within ${ms} ms`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 200); });
    }
  };
  return p;
}

const relay = start(relayBin, []);
const relayPort = (await relay.nextLine((l) => l.startsWith('port='))).slice(5);
const relayUrl = `ws://127.0.0.1:${relayPort}`;
async function relayEvents() {
  relay.stdin.write('dump\n');
  const out = [];
  for (;;) {
    const l = await relay.nextLine((x) => x === 'end' || x.startsWith('event '));
    if (l === 'end') return out;
    out.push(JSON.parse(l.slice(6)));
  }
}
async function relayStore(ev) {
  relay.stdin.write(`store ${JSON.stringify(ev)}\n`);
  await relay.nextLine((l) => l === 'stored');
}

const data = fs.mkdtempSync(path.join(os.tmpdir(), 'ticktock-nostr-e2e-'));
let server;
let base;
async function startServer() {
  server = start(ticktockd, ['--listen', '127.0.0.1:0', '--data', data, '--admin-token', TOKEN]);
  const line = await server.nextLine((l) => l.includes('event=start'));
  base = `http://${line.match(/listen=([0-9.]+:\d+)/)[1]}`;
}
async function stopServer() {
  const done = new Promise((r) => server.on('exit', r));
  server.kill('SIGTERM');
  assert.equal(await done, 0, 'ticktockd exits 0 on SIGTERM');
}
async function call(method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}
// What the echo agent's ticks saw of Nostr, from its outbox.
async function seen() {
  const r = await call('GET', '/v1/agents/herald/fs/outbox');
  return r.json.events.map((e) => e.payload).filter((p) => typeof p === 'string')
    .map((p) => { try { return JSON.parse(p); } catch { return null; } })
    .filter((p) => p && p.nostr).map((p) => p.nostr);
}

let failed = false;
try {
  await startServer();
  let r = await call('POST', '/v1/agents',
    { id: 'herald', type: 'echo', config: { nostr: { relays: [relayUrl] } } });
  assert.equal(r.status, 201, r.text);
  const keys = (await call('GET', '/v1/agents/herald/fs/identity/pubkey')).json;
  assert.equal(nip19.decode(keys.npub).data, keys.nostr, 'the npub encodes the agent key');
  await eventually('the relay connection', async () => {
    const s = await call('GET', '/v1/agents/herald/fs/nostr/relays');
    return s.status === 200 && s.text.includes('"connected"');
  });
  console.log('ok - the agent is connected to its relay');

  // Publishing through nostr/publish: the relay holds an event nostr-tools verifies.
  r = await call('POST', '/v1/agents/herald/fs/nostr/publish',
    { content: 'hello from ticktockd "quoted" \\ ✓', tags: [['t', 'ticktock']] });
  assert.equal(r.status, 202, r.text);
  const published = await eventually('the event on the relay',
    async () => (await relayEvents()).find((e) => e.id === r.json.id));
  assert.ok(verifyEvent(published), 'nostr-tools verifies the published event');
  assert.equal(published.pubkey, keys.nostr);
  assert.equal(published.content, 'hello from ticktockd "quoted" \\ ✓');
  console.log('ok - nostr/publish: the relay holds an event nostr-tools verifies, by the agent key');

  // A mention and a NIP-17 DM from a nostr-tools user reach the agent's tick.
  const sk = generateSecretKey();
  const pk = getPublicKey(sk);
  await relayStore(finalizeEvent({ kind: 1, created_at: Math.floor(Date.now() / 1000),
    tags: [['p', keys.nostr]], content: 'hi herald' }, sk));
  await relayStore(nip17.wrapEvent(sk, { publicKey: keys.nostr }, 'a secret for herald'));
  const got = await eventually('the mention and the DM in the tick', async () => {
    const s = await seen();
    return s.length >= 2 ? s : null;
  });
  const mention = got.find((n) => n.kind === 1);
  const dm = got.find((n) => n.dm === true);
  assert.ok(mention && mention.content === 'hi herald' && mention.from === pk, JSON.stringify(got));
  assert.ok(dm && dm.kind === 14 && dm.content === 'a secret for herald' && dm.from === pk,
    JSON.stringify(got));
  assert.equal(dm.npub, nip19.npubEncode(pk));
  console.log('ok - a nostr-tools mention and NIP-17 DM reach the tick, the DM opened');

  const metrics = (await (await fetch(base + '/metrics')).text());
  assert.match(metrics, /ticktock_nostr_events_total\{outcome="delivered"\} 2/);
  assert.match(metrics, /ticktock_nostr_published_total 1/);

  // After a restart the agent is connected again and new mentions arrive once.
  await stopServer();
  await startServer();
  await relayStore(finalizeEvent({ kind: 1, created_at: Math.floor(Date.now() / 1000),
    tags: [['p', keys.nostr]], content: 'after the restart' }, sk));
  const after = await eventually('the mention after the restart', async () => {
    const s = await seen();
    return s.some((n) => n.content === 'after the restart') ? s : null;
  });
  assert.equal(after.filter((n) => n.content === 'hi herald').length, 1, 'old mention once');
  assert.equal(after.filter((n) => n.content === 'a secret for herald').length, 1, 'DM once');
  assert.ok((await call('GET', '/v1/agents/herald/fs/logs/trajectory?verify')).json.ok);
  console.log('ok - after a restart: reconnected, new mentions arrive, old ones are not repeated');
} catch (e) {
  failed = true;
  console.error('FAILED:', e.stack || e);
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(data, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
