@0xfd7f4e52e8310652;
# Framework records stored in RocksDB by ticktock. See docs/storage-format.md.
# Values are Cap'n Proto packed messages. Never renumber a field.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("ticktock::storage::schema");

enum AgentStatus {
  active @0;      # runnable (resident or hibernated; residency is not stored)
  errored @1;     # read as errored; never written (the errored mark is meta key "e" + id)
}

struct AgentRecord {
  id @0 :Text;
  type @1 :Text;
  config @2 :Data;
  createdUs @3 :Int64;
  status @4 :AgentStatus;      # written as active, never changed
  error @5 :Text;              # written empty, never changed
  tickCount @6 :UInt64;        # committed ticks
  lastTickUs @7 :Int64;        # when the last committed tick started (wall clock; before 2026-12-05: its trigger's time)
  trajectoryNext @8 :UInt64;   # index of the next trajectory record
  trajectoryHead @9 :Data;     # BLAKE2b-256 of the last trajectory record's bytes
  outboxNext @10 :UInt64;      # seq of the next outbox event
  retrySeq @11 :UInt64;        # inbox seq whose failed attempts are counted below
  retryAttempts @12 :UInt32;   # failed attempts of retrySeq so far
  summary @13 :Text;           # the agent's summary() after its last tick (JSON)
  directNext @14 :UInt64;      # number n of the next direct trigger (seq 2^63 + n); 0 = 1
}

struct InboxEntry {
  kind @0 :UInt8;              # ticktock::trigger_kind
  timeUs @1 :Int64;
  from @2 :Text;
  payload @3 :Data;
  alarm @4 :Text;
  idempotencyKey @5 :Text;
  # Agent-to-agent envelope (see docs/identity.md); empty for outside triggers.
  envelopeId @6 :Data;         # 16 random-looking bytes, unique per message
  signature @7 :Data;          # Ed25519 by the sender over identity::envelope_signing_bytes
  encrypted @8 :Bool;          # payload is a sealed box for the recipient
  senderKey @9 :Data;          # sender's Ed25519 public key: as the envelope carried it, or for a
                               # message sent within the node the sender's own (empty in messages
                               # written before 2026-12-06); used only for a sender that is not
                               # an agent here
  nostr @10 :Bool;             # payload is a Nostr event (NIP-01 JSON) from a relay: checked,
                               # and a gift-wrapped DM unwrapped, before the tick
  requestId @11 :Text;         # X-Request-Id of the HTTP request that delivered it (for a
                               # message from an agent, that of the sending tick's trigger),
                               # else empty; not part of the trigger digest
  sentUs @12 :Int64;           # an envelope posted from outside: the time it was signed with
                               # (its time_us), while timeUs is its arrival; 0: timeUs (a
                               # message within the node, or written before 2026-12-06)
}

struct OutboxEvent {
  tick @0 :UInt64;
  timeUs @1 :Int64;
  payload @2 :Data;
  topic @3 :Text;              # empty for ctx.emit; "nostr" for signed Nostr events to publish
}

enum Outcome {
  ok @0;
  failed @1;         # attempt failed, will be retried
  deadlettered @2;   # attempt failed, trigger moved to the deadletter
}

struct Effects {
  stateBytes @0 :UInt64;
  stateChanged @1 :Bool;
  outbox @2 :UInt32;
  messages @3 :UInt32;
  alarmsSet @4 :UInt32;
  alarmsCancelled @5 :UInt32;
  goals @6 :UInt32;
  memory @7 :UInt32;
  ws @8 :UInt32;               # WebSocket frames and closes the tick sent (ctx.ws_send, ws_close)
}

struct TrajectoryRecord {
  index @0 :UInt64;            # position in the agent's chain, from 0
  tick @1 :UInt64;             # tick number this attempt belongs to, from 1
  attempt @2 :UInt32;
  triggerKind @3 :UInt8;
  triggerSeq @4 :UInt64;
  triggerDigest @5 :Data;      # BLAKE2b-256 of the trigger
  startUs @6 :Int64;           # wall clock when the attempt began
  durationNs @7 :UInt64;
  outcome @8 :Outcome;
  error @9 :Text;
  effects @10 :Effects;
  stateHash @11 :Data;         # BLAKE2b-256 of the state bytes after the tick
  prevHash @12 :Data;          # BLAKE2b-256 of the previous record's bytes
  logs @13 :List(Text);
  decisions @14 :List(Decision);  # policy-gate decisions the tick made (docs/policy.md)
  limits @15 :List(Text);         # limits the tick hit: ticks_per_minute, tick_wall_time,
                                  # state_size, outbox_retention
  requestId @16 :Text;            # X-Request-Id of the HTTP request that delivered the trigger
                                  # (InboxEntry.requestId), else empty
  alarm @17 :Text;                # the alarm's name, for an alarm trigger (InboxEntry.alarm)
  wsEvent @18 :Text;              # open | frame | close, for a ws trigger; else empty
  connection @19 :Text;           # the WebSocket connection's id, for a ws trigger; else empty
}

# One decision of the policy gate about an effect that leaves the runtime.
struct Decision {
  action @0 :Text;             # compute | container | http | nostr_publish
  job @1 :Text;                # the job (or session) id
  decision @2 :Text;           # allow | deny | require_approval
  reason @3 :Text;             # a reason code, e.g. budget_exceeded, kill_switch
  cost @4 :UInt64;             # micro-USD reserved (allow) or asked for
  destination @5 :Text;
}

# The stored value of a trajectory entry (one per tick attempt; key: agent id,
# NUL, be64 index): the record's bytes and the agent's
# Ed25519 signature over identity::trajectory_signing_bytes(agent, record).
# The hash chain (prevHash, the agent's trajectoryHead) covers `record`.
struct SignedTrajectory {
  record @0 :Data;             # a packed TrajectoryRecord
  signature @1 :Data;          # 64 bytes
}

# An agent's keys (column family `identity`, key: the agent id + NUL).
struct IdentityRecord {
  version @0 :UInt32;          # 1
  ed25519Public @1 :Data;      # 32 bytes
  nostrPublic @2 :Data;        # 32 bytes, BIP-340 x-only secp256k1
  sealedSecrets @3 :Data;      # secretbox(master key; Ed25519 secret (64) || secp256k1 secret (32));
                               # empty in a bundle exported without secrets
  masterKeyId @4 :Text;        # id of the master key that sealed them (16 hex digits)
  createdUs @5 :Int64;
  retiredEd25519 @6 :List(Data);  # earlier Ed25519 public keys, for older trajectory records
}

struct AlarmRecord {
  agent @0 :Text;
  name @1 :Text;
  dueUs @2 :Int64;
  periodUs @3 :Int64;          # 0 for one-shot
}

struct DeadLetter {
  seq @0 :UInt64;              # inbox seq of the trigger (0 if never enqueued)
  reason @1 :Text;             # e.g. tick_failed, inbox_full, corrupt_record
  error @2 :Text;
  timeUs @3 :Int64;
  attempts @4 :UInt32;
  entry @5 :Data;              # the InboxEntry bytes as they were stored
  requestDigest @6 :Data;      # refused at the door (inbox_full): the digest of what was
                               # asked, recorded with its idempotency key when requeued
                               # (meta `k` rows); empty otherwise and before 2026-12-06
}

# Every record of one agent, for moving it to another node (export/import).
struct Bundle {
  version @0 :UInt32;          # 2 (1: the same without digest, still read)
  agent @1 :Text;
  entries @2 :List(BundleEntry);
  digest @3 :Data;             # version 2: BLAKE2b-256 of agent and entries, each field
                               # prefixed by its length (8 bytes, big-endian)
}

struct BundleEntry {
  column @0 :Text;             # column family name
  key @1 :Data;
  value @2 :Data;
}

# An agent's budget ledger in micro-USD (column family `ledger`, key: id + NUL + "b").
struct Ledger {
  limitTotal @0 :UInt64;       # 0: no limit
  limitDay @1 :UInt64;
  limitMonth @2 :UInt64;
  spentTotal @3 :UInt64;
  spentDay @4 :UInt64;         # spent in UTC day `day`
  spentMonth @5 :UInt64;       # spent in UTC month `month`
  reserved @6 :UInt64;         # held by open reservations
  day @7 :Int64;               # days since 1970-01-01
  month @8 :Int64;             # year * 12 + month - 1
  historyNext @9 :UInt64;      # seq of the next LedgerEntry
  computeSpent @10 :UInt64;
  computeReserved @11 :UInt64;
  containersSpent @12 :UInt64;
  containersReserved @13 :UInt64;
  httpSpent @14 :UInt64;       # outbound HTTP fetches
  httpReserved @15 :UInt64;
}

# One line of an agent's ledger history (key: id + NUL + "h" + be64 seq).
struct LedgerEntry {
  timeUs @0 :Int64;
  kind @1 :Text;               # reserve | settle | release | deny | limits
  service @2 :Text;            # compute | containers | http, or empty
  job @3 :Text;
  amount @4 :UInt64;           # micro-USD
  reason @5 :Text;
}

# A compute job, container session, outbound HTTP fetch or parked publish
# (column family `ledger`, key: agent id + NUL + "j" + job id).
struct Job {
  id @0 :Text;
  agent @1 :Text;
  service @2 :Text;            # compute | containers | http | nostr_publish
  status @3 :Text;             # awaiting_approval | queued | done | failed | denied | cancelled
  request @4 :Text;            # JSON
  result @5 :Text;             # JSON, once finished
  error @6 :Text;              # a reason or failure code
  errorMessage @7 :Text;
  reserved @8 :UInt64;         # micro-USD held while it runs
  cost @9 :UInt64;             # micro-USD settled
  createdUs @10 :Int64;
  finishedUs @11 :Int64;
  approval @12 :Text;          # the approval id, if one was asked for
  destination @13 :Text;       # provider/model, program, relays
  requestId @14 :Text;         # the request id of the trigger whose tick started it; its
                               # result trigger carries it on (InboxEntry.requestId)
}

# An action parked by the policy gate (column family `approvals`, key: agent id + NUL +
# approval id; meta "a" + approval id holds the agent id).
struct Approval {
  id @0 :Text;
  agent @1 :Text;
  job @2 :Text;
  action @3 :Text;
  destination @4 :Text;
  cost @5 :UInt64;
  reason @6 :Text;
  status @7 :Text;             # pending | approved | denied | cancelled (its job was cancelled while waiting)
  createdUs @8 :Int64;
  decidedUs @9 :Int64;
  note @10 :Text;
}
