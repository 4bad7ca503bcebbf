// Interop between ticktock::nostr (through nostr_interop_tool) and nostr-tools.
// Usage: node interop_test.mjs /path/to/nostr_interop_tool
// Prints one line per check and a closing "N passed, M failed" line; exits 1 on
// any failure.

import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  finalizeEvent,
  generateSecretKey,
  getEventHash,
  getPublicKey,
  serializeEvent,
  verifyEvent,
} from 'nostr-tools/pure';
import * as nip17 from 'nostr-tools/nip17';
import * as nip19 from 'nostr-tools/nip19';
import * as nip44 from 'nostr-tools/nip44';
import * as nip59 from 'nostr-tools/nip59';

const tool = process.argv[2];
if (!tool) {
  console.error('usage: node interop_test.mjs /path/to/nostr_interop_tool');
  process.exit(2);
}

// Runs the tool; returns { status, stdout, stderr }.
function run(args, input = '') {
  const r = spawnSync(tool, args, { input, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw new Error(`cannot run ${tool}: ${r.error.message}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const bytesToHex = (bytes) => Buffer.from(bytes).toString('hex');

function runOk(args, input = '') {
  const r = run(args, input);
  assert.equal(r.status, 0, `nostr_interop_tool ${args.join(' ')} failed: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

let passed = 0;
let failed = 0;
function check(name, fn) {
  try {
    fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAILED - ${name}\n    ${String(e.stack || e).split('\n').join('\n    ')}`);
  }
}

// Content and tags that exercise every escaping rule, built on the JS side.
const trickyContent =
  'a "quoted" word, a back\\slash, a\nnewline, \r\n, \ttab, \b\f, NUL \u0000, ' +
  'controls \u0001\u001f\u007f, caf\u00e9, e\u0301, \u4e2d\u6587, \u{1F984}\u{1F44D}\u{1F3FD}, ' +
  '\u2028\u2029, </script>, {"json":[1,2]}, \\u0041 literally';
const trickyTags = [
  ['e', 'x'.repeat(64), 'wss://relay.example/\u00e9'],
  ['t', 'quote"back\\slash\nnl'],
  ['emoji', '\u{1F600}'],
  [],
];

// -- NIP-01: C++ signs, nostr-tools verifies --------------------------------

check('an event signed by ticktock verifies with nostr-tools verifyEvent', () => {
  const [json, serialization] = runOk(['sign-tricky']).split('\n');
  const ev = JSON.parse(json);
  assert.ok(ev.content.includes('\u0000') && ev.content.includes('\u{1F984}'));
  assert.equal(verifyEvent(ev), true);
  assert.equal(getEventHash(ev), ev.id);
  // The bytes hashed are the same on both sides.
  assert.equal(serialization, serializeEvent(ev));
});

check('ticktock JSON parses in JS to the same strings ticktock signed', () => {
  const [json] = runOk(['sign-tricky']).split('\n');
  const ev = JSON.parse(json);
  assert.deepEqual(Object.keys(ev).sort(),
                   ['content', 'created_at', 'id', 'kind', 'pubkey', 'sig', 'tags']);
  assert.equal(ev.tags[0][1], 'quote"back\\slash');
  assert.equal(ev.tags[1][1], 'new\nline');
  assert.equal(ev.tags[1][2], '\u{1F600}');
  assert.deepEqual(ev.tags[2], []);
  // And verifies again after nostr-tools re-serializes it.
  assert.equal(runOk(['verify'], JSON.stringify(ev)).trim(), 'valid');
});

// -- NIP-01: nostr-tools signs, C++ verifies --------------------------------

check('an event signed by nostr-tools finalizeEvent verifies in ticktock', () => {
  const sk = generateSecretKey();
  const ev = finalizeEvent(
    { kind: 1, created_at: Math.floor(Date.now() / 1000), tags: trickyTags, content: trickyContent },
    sk,
  );
  assert.equal(runOk(['verify'], JSON.stringify(ev)).trim(), 'valid');
  const [id, serialization] = runOk(['id'], JSON.stringify(ev)).split('\n');
  assert.equal(id, ev.id);
  assert.equal(serialization, serializeEvent(ev));
});

check('ticktock computes the nostr-tools id for many kinds of content', () => {
  const sk = generateSecretKey();
  const contents = ['', ' ', '\\', '"', '\n\n', '\u0000\u0000', '\u{10FFFF}', '\u00ff\u0100',
                    '\u001f\u0020', 'x'.repeat(5000), '\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}'];
  for (const [i, content] of contents.entries()) {
    const ev = finalizeEvent({ kind: i, created_at: 1700000000 + i, tags: [['i', String(i)]], content }, sk);
    const [id] = runOk(['id'], JSON.stringify(ev)).split('\n');
    assert.equal(id, getEventHash(ev), `content #${i}`);
    assert.equal(runOk(['verify'], JSON.stringify(ev)).trim(), 'valid', `content #${i}`);
  }
});

check('ticktock rejects a nostr-tools event whose content was changed', () => {
  const ev = finalizeEvent({ kind: 1, created_at: 1700000000, tags: [], content: 'original' },
                           generateSecretKey());
  const r = run(['verify'], JSON.stringify({ ...ev, content: 'changed' }));
  assert.equal(r.status, 1);
  assert.equal(r.stdout.trim(), 'id does not match content');
});

check('ticktock rejects a nostr-tools event with another key\'s signature', () => {
  const a = finalizeEvent({ kind: 1, created_at: 1700000000, tags: [], content: 'same' },
                          generateSecretKey());
  const b = finalizeEvent({ kind: 1, created_at: 1700000000, tags: [], content: 'same' },
                          generateSecretKey());
  const r = run(['verify'], JSON.stringify({ ...a, sig: b.sig }));
  assert.equal(r.status, 1);
  assert.equal(r.stdout.trim(), 'bad signature');
});

// -- NIP-44 in both directions ----------------------------------------------

const messages = [
  'a',
  trickyContent,
  '\u{1F984}'.repeat(16383),
  'x'.repeat(65535),
  'short\u0000with\u0000nuls',
];

check('ticktock NIP-44 payloads decrypt with nostr-tools', () => {
  const sk = generateSecretKey();
  const pk = getPublicKey(sk);
  for (const msg of messages) {
    const [senderPub, payload] = runOk(['encrypt', pk], msg).split('\n');
    const ck = nip44.getConversationKey(sk, senderPub);
    assert.equal(nip44.decrypt(payload, ck), msg);
  }
});

check('nostr-tools NIP-44 payloads decrypt with ticktock', () => {
  const senderSk = generateSecretKey();
  const recipientSk = generateSecretKey();
  const ck = nip44.getConversationKey(senderSk, getPublicKey(recipientSk));
  for (const msg of messages) {
    const payload = nip44.encrypt(msg, ck);
    const out = runOk(['decrypt', bytesToHex(recipientSk), getPublicKey(senderSk)], payload);
    assert.equal(out, msg);
  }
});

check('ticktock rejects a nostr-tools NIP-44 payload for another recipient', () => {
  const senderSk = generateSecretKey();
  const ck = nip44.getConversationKey(senderSk, getPublicKey(generateSecretKey()));
  const payload = nip44.encrypt('not for you', ck);
  const r = run(['decrypt', bytesToHex(generateSecretKey()), getPublicKey(senderSk)], payload);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /invalid MAC/);
});

// -- NIP-19 ------------------------------------------------------------------

check('npub and nsec agree with nostr-tools nip19', () => {
  for (let i = 0; i < 20; i++) {
    const sk = generateSecretKey();
    const pk = getPublicKey(sk);
    const skHex = bytesToHex(sk);
    assert.equal(runOk(['npub', pk]).trim(), nip19.npubEncode(pk));
    assert.equal(runOk(['nsec', skHex]).trim(), nip19.nsecEncode(sk));
    assert.equal(runOk(['decode-npub', nip19.npubEncode(pk)]).trim(), pk);
    assert.equal(runOk(['decode-nsec', nip19.nsecEncode(sk)]).trim(), skHex);
    const decoded = nip19.decode(runOk(['npub', pk]).trim());
    assert.equal(decoded.type, 'npub');
    assert.equal(decoded.data, pk);
  }
});

// -- NIP-17 direct messages (NIP-59 gift wraps) in both directions ----------

const dmMessages = [
  'hello',
  trickyContent,
  '\u{1F984}'.repeat(5000),
  // Near the largest that fits: the rumor's JSON may be at most 40960 bytes.
  'x'.repeat(40000),
];
const TWO_DAYS = 2 * 24 * 60 * 60;
const unixNow = () => Math.floor(Date.now() / 1000);

check('a DM gift-wrapped by ticktock opens with nostr-tools nip17.unwrapEvent', () => {
  const senderSk = generateSecretKey();
  const senderPk = getPublicKey(senderSk);
  const recipientSk = generateSecretKey();
  const recipientPk = getPublicKey(recipientSk);
  for (const [i, msg] of dmMessages.entries()) {
    const before = unixNow();
    const wrap = JSON.parse(runOk(['wrap-dm', bytesToHex(senderSk), recipientPk], msg));
    const after = unixNow();
    assert.equal(verifyEvent(wrap), true, `message #${i}`);
    assert.equal(wrap.kind, 1059);
    assert.notEqual(wrap.pubkey, senderPk);
    assert.deepEqual(wrap.tags, [['p', recipientPk]]);
    assert.ok(wrap.created_at <= after && wrap.created_at >= before - TWO_DAYS, `message #${i}`);

    const rumor = nip17.unwrapEvent(wrap, recipientSk);
    assert.equal(rumor.content, msg, `message #${i}`);
    assert.equal(rumor.pubkey, senderPk);
    assert.equal(rumor.kind, 14);
    assert.deepEqual(rumor.tags, [['p', recipientPk]]);
    assert.equal(getEventHash(rumor), rumor.id);
    assert.equal('sig' in rumor, false);
    assert.ok(rumor.created_at >= before && rumor.created_at <= after);
  }
});

check('the copy ticktock wraps for the sender opens with the sender\'s key only', () => {
  const senderSk = generateSecretKey();
  const senderPk = getPublicKey(senderSk);
  const recipientSk = generateSecretKey();
  const recipientPk = getPublicKey(recipientSk);
  const wrap = JSON.parse(runOk(['wrap-dm', bytesToHex(senderSk), recipientPk, senderPk], 'a copy'));
  assert.deepEqual(wrap.tags, [['p', senderPk]]);
  const rumor = nip17.unwrapEvent(wrap, senderSk);
  assert.equal(rumor.content, 'a copy');
  assert.equal(rumor.pubkey, senderPk);
  assert.deepEqual(rumor.tags, [['p', recipientPk]]);
  assert.throws(() => nip17.unwrapEvent(wrap, recipientSk));
});

check('a DM gift-wrapped by nostr-tools nip17.wrapEvent opens in ticktock', () => {
  const senderSk = generateSecretKey();
  const senderPk = getPublicKey(senderSk);
  const recipientSk = generateSecretKey();
  const recipientPk = getPublicKey(recipientSk);
  for (const [i, msg] of dmMessages.entries()) {
    const wrap = nip17.wrapEvent(senderSk, { publicKey: recipientPk }, msg);
    const [sender, rumorJson] = runOk(['unwrap-dm', bytesToHex(recipientSk)], JSON.stringify(wrap))
      .split('\n');
    assert.equal(sender, senderPk, `message #${i}`);
    const rumor = JSON.parse(rumorJson);
    assert.equal(rumor.content, msg, `message #${i}`);
    assert.equal(rumor.pubkey, senderPk);
    assert.equal(rumor.id, getEventHash(rumor));
    // The same rumor nostr-tools itself finds inside.
    assert.deepEqual(rumor, { ...nip17.unwrapEvent(wrap, recipientSk) });
  }
});

check('ticktock reads the relay, reply and subject tags of a nostr-tools DM', () => {
  const senderSk = generateSecretKey();
  const recipientSk = generateSecretKey();
  const recipientPk = getPublicKey(recipientSk);
  const replyId = 'ab'.repeat(32);
  const wrap = nip17.wrapEvent(senderSk, { publicKey: recipientPk, relayUrl: 'wss://relay.example' },
                               'in reply', 'our plans', { eventId: replyId });
  const [, rumorJson] = runOk(['unwrap-dm', bytesToHex(recipientSk)], JSON.stringify(wrap))
    .split('\n');
  assert.deepEqual(JSON.parse(rumorJson).tags, [
    ['p', recipientPk, 'wss://relay.example'],
    ['e', replyId, '', 'reply'],
    ['subject', 'our plans'],
  ]);
});

check('ticktock opens every wrap of nostr-tools nip17.wrapManyEvents meant for it', () => {
  const senderSk = generateSecretKey();
  const senderPk = getPublicKey(senderSk);
  const bobSk = generateSecretKey();
  const carolSk = generateSecretKey();
  const wraps = nip17.wrapManyEvents(
    senderSk, [{ publicKey: getPublicKey(bobSk) }, { publicKey: getPublicKey(carolSk) }], 'to all');
  // The sender's own copy comes first, then one per recipient.
  for (const [wrap, sk] of [[wraps[0], senderSk], [wraps[1], bobSk], [wraps[2], carolSk]]) {
    const [sender, rumorJson] = runOk(['unwrap-dm', bytesToHex(sk)], JSON.stringify(wrap))
      .split('\n');
    assert.equal(sender, senderPk);
    assert.equal(JSON.parse(rumorJson).content, 'to all');
  }
  const r = run(['unwrap-dm', bytesToHex(carolSk)], JSON.stringify(wraps[1]));
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^gift wrap: cannot decrypt/);
});

check('ticktock rejects a nostr-tools seal whose rumor claims another author', () => {
  const aliceSk = generateSecretKey();
  const mallorySk = generateSecretKey();
  const bobSk = generateSecretKey();
  const bobPk = getPublicKey(bobSk);
  // createSeal does not check that the rumor is the sealer's own.
  const forged = nip59.createRumor({ kind: 14, content: 'pay mallory', tags: [['p', bobPk]] }, aliceSk);
  const wrap = nip59.createWrap(nip59.createSeal(forged, mallorySk, bobPk), bobPk);
  assert.throws(() => nip17.unwrapEvent(wrap, bobSk), /does not match seal pubkey/);
  const r = run(['unwrap-dm', bytesToHex(bobSk)], JSON.stringify(wrap));
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^rumor: pubkey '[0-9a-f]{64}' is not the seal's signer [0-9a-f]{64} \(impersonation\)/);
});

check('ticktock rejects a nostr-tools gift wrap whose content was changed', () => {
  const bobSk = generateSecretKey();
  const wrap = nip17.wrapEvent(generateSecretKey(), { publicKey: getPublicKey(bobSk) }, 'hi');
  const other = nip17.wrapEvent(generateSecretKey(), { publicKey: getPublicKey(bobSk) }, 'ho');
  const r = run(['unwrap-dm', bytesToHex(bobSk)], JSON.stringify({ ...wrap, content: other.content }));
  assert.equal(r.status, 1);
  assert.equal(r.stdout.trim(), 'gift wrap: id does not match content');
});

// -- A real agent: what its tick publishes, and a DM into its tick ----------
// agent-publish / agent-receive-dm run a ticktock node on a temp directory with
// one agent ("interop"); the agent keeps its keys between the calls.

function withAgentDir(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ticktock-interop-'));
  try {
    return fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Returns { pubkey, npub, event } of one ctx.nostr_publish in a tick.
function agentPublish(dir, text) {
  const [pubkey, npub, json, rest] = runOk(['agent-publish', dir], text).split('\n');
  assert.equal(rest, '');
  return { pubkey, npub, event: JSON.parse(json) };
}

check('an event a ticktock agent published from its tick verifies with nostr-tools', () => {
  withAgentDir((dir) => {
    const before = unixNow();
    const { pubkey, npub, event } = agentPublish(dir, trickyContent);
    assert.equal(verifyEvent(event), true);
    assert.equal(getEventHash(event), event.id);
    assert.equal(event.pubkey, pubkey);
    assert.match(pubkey, /^[0-9a-f]{64}$/);
    assert.equal(nip19.npubEncode(pubkey), npub);
    assert.deepEqual(nip19.decode(npub), { type: 'npub', data: pubkey });
    assert.equal(event.kind, 1);
    assert.equal(event.content, trickyContent);
    assert.deepEqual(event.tags, [['t', 'ticktock']]);
    assert.ok(event.created_at >= before - 1 && event.created_at <= unixNow() + 1);
    // The next tick signs with the same key; a changed copy does not verify.
    const second = agentPublish(dir, 'again');
    assert.equal(second.pubkey, pubkey);
    assert.equal(second.event.pubkey, pubkey);
    assert.equal(verifyEvent(second.event), true);
    assert.notEqual(second.event.id, event.id);
    // (Through JSON: verifyEvent caches its answer in a symbol that a spread would copy.)
    assert.equal(verifyEvent(JSON.parse(JSON.stringify({ ...second.event, content: 'again!' }))), false);
  });
});

check('a DM nostr-tools nip17.wrapEvent sends to an agent reaches its tick opened', () => {
  withAgentDir((dir) => {
    const { pubkey } = agentPublish(dir, 'here I am');
    const senderSk = generateSecretKey();
    const senderPk = getPublicKey(senderSk);
    for (const [i, msg] of ['hello agent', trickyContent].entries()) {
      const wrap = nip17.wrapEvent(senderSk, { publicKey: pubkey }, msg, 'a subject');
      assert.deepEqual(wrap.tags, [['p', pubkey]]);
      const out = runOk(['agent-receive-dm', dir], JSON.stringify(wrap));
      const seen = JSON.parse(out).nostr;
      assert.equal(seen.dm, true, `message #${i}`);
      assert.equal(seen.kind, 14);
      assert.equal(seen.content, msg, `message #${i}`);
      assert.equal(seen.from, senderPk);
      assert.equal(seen.npub, nip19.npubEncode(senderPk));
      assert.deepEqual(seen.tags, [['p', pubkey], ['subject', 'a subject']]);
      assert.match(seen.id, /^[0-9a-f]{64}$/);
      assert.notEqual(seen.id, wrap.id);
      // The rumor's id and time, recomputed by nostr-tools from what the tick saw.
      const rumor = { pubkey: seen.from, created_at: seen.created_at, kind: seen.kind,
                      tags: seen.tags, content: seen.content };
      assert.equal(getEventHash(rumor), seen.id);
      assert.ok(Math.abs(seen.created_at - unixNow()) <= 60);
      // The same wrap again (as from a second relay) does not tick again.
      const again = run(['agent-receive-dm', dir], JSON.stringify(wrap));
      assert.equal(again.status, 1);
      assert.equal(again.stdout, 'duplicate\n');
    }
  });
});

check('an agent refuses a nostr-tools DM it cannot open or a changed one', () => {
  withAgentDir((dir) => {
    const { pubkey } = agentPublish(dir, 'here I am');
    // Sealed for someone else, but p-tagging the agent (re-signed by a fresh key).
    const other = nip17.wrapEvent(generateSecretKey(), { publicKey: getPublicKey(generateSecretKey()) }, 'nope');
    const retagged = finalizeEvent({ kind: 1059, created_at: other.created_at, tags: [['p', pubkey]],
                                     content: other.content }, generateSecretKey());
    let r = run(['agent-receive-dm', dir], JSON.stringify(retagged));
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^undecryptable: gift wrap: cannot decrypt/);
    assert.doesNotMatch(r.stdout, /nope/);
    // A gift wrap changed after signing.
    const wrap = nip17.wrapEvent(generateSecretKey(), { publicKey: pubkey }, 'hi');
    r = run(['agent-receive-dm', dir], JSON.stringify({ ...wrap, created_at: wrap.created_at - 1 }));
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^bad_signature: id does not match content/);
  });
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
