#include "agent_host.hpp"

#include <sodium.h>

#include <chrono>
#include <exception>

#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/nostr_agent.hpp"

namespace ticktock::detail {

namespace {

constexpr std::size_t max_name_bytes = 256;

}  // namespace

agent_host::agent_host(storage::store& store, const keyring& keys, const ticktock::clock& clock,
                       storage::agent_record meta, std::unique_ptr<agent_base> agent,
                       const tick_limits& limits)
  : store_(store), keyring_(keys), clock_(clock), meta_(std::move(meta)),
    agent_(std::move(agent)), limits_(limits) {}

agent_host::~agent_host() { sodium_memzero(nostr_keys_.secret.data(), nostr_keys_.secret.size()); }

error agent_host::load() {
  auto keys = keyring_.load(meta_.id);
  if (!keys)
    return keys.error_value();
  keys_ = std::move(*keys);
  nostr_keys_ = {keys_->nostr_secret, keys_->pub.nostr};
  auto bytes = store_.get_state(meta_.id);
  if (!bytes)
    return bytes.error_value();
  if (*bytes) {
    if (!agent_->load_state(**bytes))
      return error{errc::corrupt_record,
                   "state of '" + meta_.id + "' does not decode as its state type"};
    committed_state_ = std::move(**bytes);
  } else {
    agent_->reset_state();
    committed_state_ = agent_->save_state();
  }
  committed_hash_ = storage::blake2b(committed_state_);
  return {};
}

std::optional<std::string> agent_host::read_goal(std::string_view key) const {
  return store_.get_goal(meta_.id, key);
}

std::optional<std::string> agent_host::read_memory(std::string_view space,
                                                   std::string_view key) const {
  return store_.get_memory(meta_.id, space, key);
}

std::string agent_host::validate(const effects& fx, time_point now) const {
  for (auto& m : fx.messages) {
    if (auto err = check_agent_id(m.to))
      return "send: " + err.message();
    if (m.payload.size() > limits_.max_message_bytes)
      return "send: message of " + std::to_string(m.payload.size()) + " bytes exceeds the limit of "
             + std::to_string(limits_.max_message_bytes);
  }
  for (auto& e : fx.outbox)
    if (e.size() > limits_.max_message_bytes)
      return "emit: event of " + std::to_string(e.size()) + " bytes exceeds the limit of "
             + std::to_string(limits_.max_message_bytes);
  for (auto& a : fx.alarms) {
    if (a.name.empty() || a.name.size() > max_name_bytes)
      return "alarm names are 1 to 256 bytes";
    if (!a.cancel && a.period.count() < 0)
      return "alarm '" + a.name + "' has a negative period";
    if (!a.cancel && a.due < now - std::chrono::hours{24 * 365 * 100})
      return "alarm '" + a.name + "' is due before the epoch range";
  }
  for (auto* edits : {&fx.goals, &fx.memory})
    for (auto& kv : *edits)
      if (kv.key.empty() || kv.key.size() > max_name_bytes
          || kv.space.find('\0') != std::string::npos || kv.space.size() > max_name_bytes)
        return "goal and memory keys and namespaces are 1 to 256 bytes without NUL";
  return {};
}

std::string agent_host::stamp_messages(std::vector<outgoing_message>& messages,
                                       std::uint64_t index, storage::tick_op& op) const {
  auto sent_at = clock_.now();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    storage::inbox_entry e;
    e.kind = trigger_kind::message;
    e.time = sent_at;
    e.from = meta_.id;
    e.payload = std::move(m.payload);
    std::optional<identity::public_key> recipient;
    if (m.encrypted) {
      auto pub = keyring_.public_keys_of(m.to);
      if (!pub)
        return "send: cannot encrypt for '" + m.to + "': no such agent here";
      recipient = pub->ed25519;
    }
    // Unique per message: sender, trajectory position, position in the tick.
    std::string seed = meta_.id;
    seed.push_back('\0');
    for (auto v : {index, static_cast<std::uint64_t>(i)})
      for (int b = 7; b >= 0; --b)
        seed.push_back(static_cast<char>((v >> (b * 8)) & 0xff));
    auto h = storage::blake2b(seed);
    if (auto err = keyring::stamp(e, m.to, *keys_, std::string(h.begin(), h.begin() + 16),
                                  recipient ? &*recipient : nullptr))
      return "send: " + err.message();
    op.messages.push_back({std::move(m.to), std::move(e), limits_.inbox_limit});
  }
  return {};
}

tick_attempt agent_host::run(const storage::inbox_entry& entry) {
  tick_attempt a;
  a.trigger_seq = entry.seq;
  a.kind = entry.kind;
  a.attempt = meta_.retry_seq == entry.seq ? meta_.retry_attempts + 1 : 1;
  auto start_wall = clock_.now();
  auto start = std::chrono::steady_clock::now();
  a.started = start;

  storage::trajectory_record rec;
  rec.index = meta_.trajectory_next;
  rec.tick = meta_.tick_count + 1;
  rec.attempt = a.attempt;
  rec.kind = entry.kind;
  rec.trigger_seq = entry.seq;
  rec.trigger_digest = entry.corrupt ? storage::blake2b(entry.raw) : storage::trigger_digest(entry);
  rec.start = start_wall;
  rec.prev_hash = meta_.trajectory_head;

  std::optional<std::string> failure;
  effects fx;
  // The envelope is checked (and decrypted) before the tick; the stored
  // entry keeps the ciphertext, and so do the trajectory and deadletter.
  std::optional<storage::inbox_entry> opened;
  std::optional<keyring::refusal> refusal;
  if (!entry.corrupt && !(entry.from.empty() && entry.signature.empty() && !entry.encrypted)) {
    opened = entry;
    refusal = keyring_.open(*opened, meta_.id, keys_ ? &*keys_ : nullptr);
  }
  if (!entry.corrupt && !refusal && entry.nostr) {
    // An event from a relay: checked, and a direct message opened, for this tick only.
    auto in = nostr::open_inbound(nostr_keys_, entry.payload);
    if (in.refused) {
      refusal = keyring::refusal{in.refused->reason, in.refused->error};
    } else {
      opened = entry;
      opened->payload = std::move(in.payload);
    }
  }
  std::vector<std::string> signed_notes;
  if (entry.corrupt) {
    failure = "inbox record " + std::to_string(entry.seq) + " is corrupt: " + entry.payload;
    a.attempt = limits_.max_attempts;  // no point retrying bytes that do not decode
  } else if (refusal) {
    failure = refusal->error;
    a.refused = refusal->reason;
    a.attempt = limits_.max_attempts;  // a bad envelope does not get better
  } else {
    auto trig = (opened ? *opened : entry).to_trigger(a.attempt);
    context ctx{meta_.id, meta_.config, trig, *agent_, this};
    if (auto g = goal_change::from(trig)) {
      // Goals change only in ticks: apply the outside edit in this one.
      if (g->value)
        ctx.set_goal(g->key, *g->value);
      else
        ctx.erase_goal(g->key);
    }
    try {
      agent_->on_trigger(ctx, trig);
      if (ctx.staged().failure)
        failure = *ctx.staged().failure;
    } catch (const std::exception& e) {
      failure = std::string{"exception: "} + e.what();
    } catch (...) {
      failure = "exception of unknown type";
    }
    fx = std::move(ctx.staged());
    if (!failure) {
      auto invalid = validate(fx, trig.time);
      if (!invalid.empty())
        failure = "invalid effect: " + invalid;
    }
    if (!failure) {
      auto err = stamp_messages(fx.messages, rec.index, a.op);
      if (!err.empty())
        failure = err;
    }
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(trig.time.time_since_epoch()).count();
    for (std::size_t i = 0; !failure && i < fx.nostr.size(); ++i) {
      auto note = nostr::sign_note(nostr_keys_, fx.nostr[i], secs);
      if (note)
        signed_notes.push_back(std::move(*note));
      else
        failure = note.error_value().message();
    }
  }

  auto next = meta_;
  next.trajectory_next = meta_.trajectory_next + 1;
  auto& op = a.op;
  op.trajectory_index = rec.index;
  rec.logs = std::move(fx.logs);

  if (!failure) {
    auto bytes = agent_->save_state();
    rec.effects.state_bytes = bytes.size();
    rec.effects.state_changed = bytes != committed_state_;
    rec.state_hash = rec.effects.state_changed ? storage::blake2b(bytes) : committed_hash_;
    if (rec.effects.state_changed) {
      op.state = bytes;
      a.state_after = std::move(bytes);
    }
    next.tick_count = meta_.tick_count + 1;
    next.last_tick = entry.time;
    next.retry_seq = 0;
    next.retry_attempts = 0;
    next.summary = agent_->summary();
    a.reply = std::move(fx.reply);
    a.ws = std::move(fx.ws);
    op.consume_seq = entry.seq;
    for (auto& ev : fx.outbox)
      op.outbox.push_back({next.outbox_next++, next.tick_count, entry.time, std::move(ev), {}});
    for (auto& ev : signed_notes)
      op.outbox.push_back({next.outbox_next++, next.tick_count, entry.time, std::move(ev), "nostr"});
    for (auto& al : fx.alarms) {
      if (al.cancel)
        ++rec.effects.alarms_cancelled;
      else {
        ++rec.effects.alarms_set;
        if (!a.earliest_alarm || al.due < *a.earliest_alarm)
          a.earliest_alarm = al.due;
      }
    }
    rec.effects.outbox = static_cast<std::uint32_t>(op.outbox.size());
    a.outbox_count = rec.effects.outbox;
    rec.effects.messages = static_cast<std::uint32_t>(op.messages.size());
    rec.effects.goals = static_cast<std::uint32_t>(fx.goals.size());
    rec.effects.memory = static_cast<std::uint32_t>(fx.memory.size());
    op.alarms = std::move(fx.alarms);
    op.goals = std::move(fx.goals);
    op.memory = std::move(fx.memory);
  } else {
    // Nothing the tick staged is committed; the state goes back to the last
    // committed bytes.
    op.messages.clear();
    if (!agent_->load_state(committed_state_))
      agent_->reset_state();
    rec.state_hash = committed_hash_;
    rec.error = *failure;
    a.error = *failure;
    if (a.attempt >= limits_.max_attempts) {
      a.outcome = storage::outcome::deadlettered;
      next.retry_seq = 0;
      next.retry_attempts = 0;
      op.consume_seq = entry.seq;
      storage::deadletter_entry d;
      d.seq = entry.seq;
      d.reason = entry.corrupt ? "corrupt_record" : !a.refused.empty() ? a.refused : "tick_failed";
      d.error = *failure;
      d.time = start_wall;
      d.attempts = a.attempt;
      d.entry = entry;
      op.deadletter = std::move(d);
    } else {
      a.outcome = storage::outcome::failed;
      next.retry_seq = entry.seq;
      next.retry_attempts = a.attempt;
    }
  }
  rec.outcome = a.outcome;
  rec.duration_ns = static_cast<std::uint64_t>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
      .count());
  auto record_bytes = storage::encode(rec);
  next.trajectory_head = storage::blake2b(record_bytes);
  auto sig = identity::sign(*keys_, identity::trajectory_signing_bytes(meta_.id, record_bytes));
  op.trajectory_bytes = storage::encode_signed_trajectory(
    record_bytes, std::string_view{reinterpret_cast<const char*>(sig.data()), sig.size()});
  a.state_hash = rec.state_hash;
  a.meta_after = next;
  op.meta = std::move(next);
  return a;
}

void agent_host::committed(tick_attempt& a) {
  meta_ = std::move(a.meta_after);
  if (a.state_after) {
    committed_state_ = std::move(*a.state_after);
    committed_hash_ = a.state_hash;
  }
}

void agent_host::rolled_back() {
  if (!agent_->load_state(committed_state_))
    agent_->reset_state();
}

}  // namespace ticktock::detail
