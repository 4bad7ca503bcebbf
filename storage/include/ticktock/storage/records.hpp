#pragma once

// Plain C++ views of the records ticktock stores. The on-disk encoding is
// Cap'n Proto (storage/schema/records.capnp); these structs keep Cap'n Proto
// and RocksDB out of every public header. See docs/storage-format.md.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/trigger.hpp"

namespace ticktock::storage {

/// BLAKE2b-256 digest.
using hash256 = std::array<std::uint8_t, 32>;

/// BLAKE2b-256 of `bytes` (libsodium crypto_generichash).
hash256 blake2b(std::string_view bytes);
/// Lower-case hex of a digest.
std::string to_hex(const hash256& h);

/// Agent meta: identity, type, config and tick bookkeeping.
struct agent_record {
  std::string id;
  std::string type;
  std::string config;
  time_point created{};
  bool errored = false;
  std::string error;
  std::uint64_t tick_count = 0;
  time_point last_tick{};
  std::uint64_t trajectory_next = 0;
  hash256 trajectory_head{};
  std::uint64_t outbox_next = 1;
  std::uint64_t retry_seq = 0;
  std::uint32_t retry_attempts = 0;
  std::string summary;  ///< agent_base::summary() after the last committed tick
  /// Number of the next direct trigger (see direct_seq).
  std::uint64_t direct_next = 1;
};

/// Seqs of direct triggers (node::run_trigger, HTTP requests on /a/): they
/// are never written to the inbox, so they number in a space of their own,
/// per agent, with bit 63 set.
constexpr std::uint64_t direct_seq_bit = std::uint64_t{1} << 63;
constexpr std::uint64_t direct_seq(std::uint64_t n) noexcept { return direct_seq_bit | n; }
constexpr bool is_direct_seq(std::uint64_t seq) noexcept { return (seq & direct_seq_bit) != 0; }
/// n of a direct trigger's seq.
constexpr std::uint64_t direct_number(std::uint64_t seq) noexcept { return seq & ~direct_seq_bit; }

/// One durable inbox entry (a trigger waiting for its tick).
struct inbox_entry {
  /// From the key, assigned by the store on enqueue; a direct trigger's is
  /// direct_seq(n).
  std::uint64_t seq = 0;
  trigger_kind kind = trigger_kind::message;
  time_point time{};
  std::string from;
  std::string payload;
  std::string alarm;
  std::string idempotency_key;
  /// Envelope of an agent-to-agent message (docs/identity.md): unique id,
  /// the sender's Ed25519 signature, whether the payload is a sealed box for
  /// the recipient, and the sender's public key (for senders of other nodes).
  std::string envelope_id;
  std::string signature;
  bool encrypted = false;
  std::string sender_key;
  /// An envelope posted from outside: the time it was signed with, which the
  /// sender chose; `time` is its arrival here (the tick's ctx.now()). Unset:
  /// `time` is both.
  std::optional<time_point> sent;
  /// The payload is a Nostr event from a relay (docs/nostr.md).
  bool nostr = false;
  /// X-Request-Id of the HTTP request that delivered the trigger; for a
  /// message from another agent, the request id of the sending tick's
  /// trigger; else empty. It ties the tick's log line to the request's. Not
  /// in trigger_digest.
  std::string request_id;
  /// Set by reads when the stored bytes failed to decode; `raw` holds them.
  bool corrupt = false;
  std::string raw;

  /// The trigger on_trigger sees.
  trigger to_trigger(std::uint32_t attempt) const {
    return trigger{kind, time, seq, from, payload, alarm, attempt, encrypted};
  }
};

/// One event an agent emitted to its outbox.
struct outbox_event {
  std::uint64_t seq = 0;
  std::uint64_t tick = 0;
  time_point time{};
  std::string payload;
  /// Empty for ctx.emit(); "nostr" for a signed Nostr event to publish.
  std::string topic;
};

enum class outcome : std::uint8_t { ok = 0, failed = 1, deadlettered = 2 };
std::string_view to_string(outcome o) noexcept;

/// Counts of what a tick staged.
struct effects_summary {
  std::uint64_t state_bytes = 0;
  bool state_changed = false;
  std::uint32_t outbox = 0;
  std::uint32_t messages = 0;
  std::uint32_t alarms_set = 0;
  std::uint32_t alarms_cancelled = 0;
  std::uint32_t goals = 0;
  std::uint32_t memory = 0;
  /// WebSocket frames and closes the tick sent.
  std::uint32_t ws = 0;
};

/// One decision of the policy gate, as the trajectory records it.
struct decision_record {
  std::string action;       ///< compute | container | http | nostr_publish
  std::string job;
  std::string decision;     ///< allow | deny | require_approval
  std::string reason;
  std::uint64_t cost = 0;   ///< micro-USD
  std::string destination;
};

/// One trajectory record: one attempt of one tick. Records form a per-agent
/// hash chain: prev_hash is BLAKE2b-256 of the previous record's stored bytes.
struct trajectory_record {
  std::uint64_t index = 0;
  std::uint64_t tick = 0;
  std::uint32_t attempt = 1;
  trigger_kind kind = trigger_kind::message;
  std::uint64_t trigger_seq = 0;
  hash256 trigger_digest{};
  time_point start{};
  std::uint64_t duration_ns = 0;
  storage::outcome outcome = outcome::ok;
  std::string error;
  effects_summary effects;
  hash256 state_hash{};
  hash256 prev_hash{};
  std::vector<std::string> logs;
  /// Policy-gate decisions of this attempt.
  std::vector<decision_record> decisions;
  /// Limits this attempt hit (ticks_per_minute, tick_wall_time, state_size,
  /// outbox_retention).
  std::vector<std::string> limits;
  /// The HTTP request that delivered the trigger (inbox_entry::request_id).
  std::string request_id;
  /// The alarm's name, for an alarm trigger (inbox_entry::alarm); else empty.
  std::string alarm;
  /// For a ws trigger: its event (open, frame or close) and connection id;
  /// else empty.
  std::string ws_event;
  std::string connection;
  /// The agent's Ed25519 signature of the record (64 bytes; empty if unsigned).
  std::string signature;
  /// Set by reads when the stored bytes failed to decode.
  bool corrupt = false;
};

/// An agent's keys as stored: public halves in the clear, secret halves
/// sealed with the node master key.
struct identity_record {
  std::array<std::uint8_t, 32> ed25519{};
  std::array<std::uint8_t, 32> nostr{};
  std::string sealed;         ///< master_key::seal(agent_keys::secret_bytes()); may be empty
  std::string master_key_id;  ///< which master key sealed it
  time_point created{};
  std::vector<std::array<std::uint8_t, 32>> retired;  ///< earlier Ed25519 public keys
};

/// An agent's budget ledger in micro-USD. Limits of 0 mean none. Day and
/// month totals roll over at UTC boundaries (roll()).
struct ledger_record {
  std::uint64_t limit_total = 0, limit_day = 0, limit_month = 0;
  std::uint64_t spent_total = 0, spent_day = 0, spent_month = 0;
  std::uint64_t reserved = 0;
  std::int64_t day = 0;    ///< days since 1970-01-01 of spent_day
  std::int64_t month = 0;  ///< year * 12 + month - 1 of spent_month
  std::uint64_t history_next = 0;
  std::uint64_t compute_spent = 0, compute_reserved = 0;
  std::uint64_t containers_spent = 0, containers_reserved = 0;
  std::uint64_t http_spent = 0, http_reserved = 0;

  /// Starts new day/month totals when `now` is past the recorded period.
  void roll(time_point now);
  /// Empty when `amount` more can be reserved at `now`; else which limit it
  /// would pass ("total limit of 1000000 micro-USD: 999000 spent, 2000 reserved").
  std::string check(std::uint64_t amount, time_point now) const;
  /// What is left under the tightest limit (UINT64_MAX without limits).
  std::uint64_t available(time_point now) const;
};

/// One line of a ledger's history.
struct ledger_entry {
  std::uint64_t seq = 0;   ///< from the key
  time_point time{};
  std::string kind;        ///< reserve | settle | release | deny | limits
  std::string service;     ///< compute | containers | http, or empty
  std::string job;
  std::uint64_t amount = 0;
  std::string reason;
};

/// A compute job, container session, outbound HTTP fetch or parked publish
/// (see docs/compute.md, docs/http-fetch.md).
struct job_record {
  std::string id;
  std::string agent;
  std::string service;     ///< compute | containers | http | nostr_publish
  std::string status;      ///< awaiting_approval | queued | done | failed | denied | cancelled
  std::string request;     ///< JSON
  std::string result;      ///< JSON once finished
  std::string error;       ///< reason or failure code
  std::string error_message;
  std::uint64_t reserved = 0;
  std::uint64_t cost = 0;
  time_point created{};
  time_point finished{};
  std::string approval;
  std::string destination;
  /// The request id of the trigger whose tick started the job; its result
  /// trigger carries it on (inbox_entry::request_id).
  std::string request_id;

  bool open() const noexcept { return status == "queued" || status == "awaiting_approval"; }
};

/// An action the policy gate parked until an admin decides.
struct approval_record {
  std::string id;
  std::string agent;
  std::string job;
  std::string action;
  std::string destination;
  std::uint64_t cost = 0;
  std::string reason;
  std::string status;      ///< pending | approved | denied | cancelled
  time_point created{};
  time_point decided{};
  std::string note;
};

/// A durable alarm.
struct alarm_record {
  std::string agent;
  std::string name;
  time_point due{};
  duration period{0};  ///< zero for one-shot
};

/// A trigger that failed max_attempts times, overflowed an inbox, or could
/// not be decoded.
struct deadletter_entry {
  std::uint64_t id = 0;   ///< position in the agent's deadletter (from the key)
  std::uint64_t seq = 0;  ///< inbox seq of the trigger, 0 if it never got one
  std::string reason;     ///< tick_failed | inbox_full | corrupt_record | unknown_recipient
  std::string error;
  time_point time{};
  std::uint32_t attempts = 0;
  inbox_entry entry;      ///< the trigger (entry.corrupt if undecodable)
  /// For a trigger refused at the door (seq 0): the digest of what its sender
  /// asked (enqueue_op::request_digest), so that once requeued its
  /// idempotency key still refuses another message.
  std::optional<hash256> request_digest;
};

/// What verify_trajectory found.
struct chain_report {
  bool ok = true;
  std::uint64_t records = 0;
  /// Index of the first bad record when !ok.
  std::optional<std::uint64_t> first_bad;
  std::string reason;
};

/// Policy for alarms that came due while the process was down.
enum class missed_alarm_policy : std::uint8_t {
  fire_once,  ///< one trigger per missed alarm, periodic ones re-armed to the future
  fire_all,   ///< one trigger per missed occurrence (at most 1000 per alarm)
  skip,       ///< no trigger; periodic ones re-armed to the future, one-shots dropped
};

// -- codecs (Cap'n Proto packed) ------------------------------------------

std::string encode(const agent_record& r);
std::string encode(const inbox_entry& e);
std::string encode(const outbox_event& e);
std::string encode(const trajectory_record& r);
std::string encode(const alarm_record& r);
std::string encode(const deadletter_entry& d);
std::string encode(const identity_record& r);
std::string encode(const ledger_record& r);
std::string encode(const ledger_entry& e);
std::string encode(const job_record& j);
std::string encode(const approval_record& a);
/// The stored value of a trajectory entry: record bytes plus signature.
std::string encode_signed_trajectory(std::string_view record_bytes, std::string_view signature);

/// Decoders of untrusted bytes: corrupt_record on anything malformed.
expected<agent_record> decode_agent(std::string_view bytes);
expected<inbox_entry> decode_inbox(std::string_view bytes);
expected<outbox_event> decode_outbox(std::string_view bytes);
expected<trajectory_record> decode_trajectory(std::string_view bytes);
expected<alarm_record> decode_alarm(std::string_view bytes);
expected<deadletter_entry> decode_deadletter(std::string_view bytes);
expected<identity_record> decode_identity(std::string_view bytes);
expected<ledger_record> decode_ledger(std::string_view bytes);
expected<ledger_entry> decode_ledger_entry(std::string_view bytes);
expected<job_record> decode_job(std::string_view bytes);
expected<approval_record> decode_approval(std::string_view bytes);
/// Splits a stored trajectory value into (record bytes, signature).
expected<std::pair<std::string, std::string>> decode_signed_trajectory(std::string_view bytes);

/// BLAKE2b-256 over a trigger's kind, time, sender, alarm and payload.
hash256 trigger_digest(const inbox_entry& e);

}  // namespace ticktock::storage
