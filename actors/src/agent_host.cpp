#include "agent_host.hpp"

#include <boost/json.hpp>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/nostr.hpp"
#include "ticktock/runtime/nostr_agent.hpp"
#include "ticktock/runtime/text.hpp"

namespace ticktock::detail {

namespace {

constexpr std::size_t max_name_bytes = 256;

namespace json = boost::json;

/// The payload of a compute_result / container_result / http_result trigger
/// that reports a job's end or refusal (docs/compute.md, docs/http-fetch.md).
std::string result_payload(const storage::job_record& j) {
  json::object o{{"job", j.id}, {"service", j.service}, {"status", j.status}};
  if (!j.error.empty())
    o["reason"] = j.error;
  if (!j.error_message.empty())
    o["message"] = j.error_message;
  if (!j.result.empty()) {
    boost::system::error_code ec;
    auto r = json::parse(j.result, ec);
    o["result"] = ec ? json::value(j.result) : std::move(r);
  }
  o["cost_micro_usd"] = j.cost;
  return json_text(o);
}

// Unique to this point of this agent's history (the hash of its last
// trajectory record): job ids start again for a new agent of the same id,
// and an admin's decision must not reach a request other than the one
// listed.
std::string approval_id(const std::string& agent, const storage::hash256& head,
                        const std::string& job) {
  auto in = agent + '\0';
  in.append(reinterpret_cast<const char*>(head.data()), head.size());
  auto h = storage::blake2b(in + '\0' + job);
  return "ap-" + storage::to_hex(h).substr(0, 20);
}

}  // namespace

storage::enqueue_op result_trigger(const storage::job_record& j, time_point now) {
  storage::inbox_entry e;
  e.kind = j.service == "containers" ? trigger_kind::container_result
           : j.service == "http"      ? trigger_kind::http_result
                                      : trigger_kind::compute_result;
  e.time = now;
  e.payload = result_payload(j);
  e.idempotency_key = "job:" + j.id + ":" + j.status;
  e.request_id = j.request_id;
  return {j.agent, std::move(e), 0};
}

agent_host::agent_host(storage::store& store, const keyring& keys, const ticktock::clock& clock,
                       storage::agent_record meta, std::unique_ptr<agent_base> agent,
                       const tick_limits& limits, const gate* gate)
  : store_(store), keyring_(keys), clock_(clock), meta_(std::move(meta)),
    agent_(std::move(agent)), gate_(gate), limits_(limits) {}

const tick_limits& agent_host::limits() const noexcept {
  if (gate_ && gate_->version() != limits_version_) {
    limits_version_ = gate_->version();
    limits_ = gate_->limits_for(meta_.id);
  }
  return limits_;
}

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

std::string agent_host::stage_services(effects& fx, std::vector<std::string>& notes,
                                       const trigger& trig, storage::trajectory_record& rec,
                                       tick_attempt& a) const {
  auto& op = a.op;
  auto now = trig.time;
  std::optional<storage::ledger_record> ledger;
  std::uint64_t pending = 0;  // reserved by this tick so far
  auto get_ledger = [&]() -> std::string {
    if (ledger)
      return {};
    auto l = store_.get_ledger(meta_.id);
    if (!l)
      return l.error_value().message();
    ledger = *l;
    return {};
  };
  auto refuse = [&](storage::job_record& j, std::string reason, std::string message) {
    j.status = "denied";
    j.error = std::move(reason);
    j.error_message = std::move(message);
    j.finished = now;
    op.ledger.push_back({meta_.id, storage::ledger_change::kind::deny, j.service, j.id,
                         j.reserved ? j.reserved : j.cost, 0, j.error, now});
    if (j.service != "nostr_publish")
      op.messages.push_back(result_trigger(j, now));
  };
  // Admits an allowed job: reserves its cost, or refuses it over budget.
  auto admit = [&](storage::job_record& j, std::uint64_t cost,
                   storage::decision_record& d) -> std::string {
    if (j.service == "nostr_publish") {
      j.status = "done";
      j.finished = now;
      notes.push_back(j.request);
      return {};
    }
    if (auto err = get_ledger(); !err.empty())
      return err;
    auto over = ledger->check(cost > UINT64_MAX - pending ? UINT64_MAX : pending + cost, now);
    if (!over.empty()) {
      d.decision = "deny";
      d.reason = "budget_exceeded";
      j.cost = cost;
      refuse(j, "budget_exceeded", "budget exceeded: " + over);
      return {};
    }
    pending += cost;
    j.status = "queued";
    j.reserved = cost;
    op.ledger.push_back({meta_.id, storage::ledger_change::kind::reserve, j.service, j.id, cost, 0,
                         {}, now});
    return {};
  };
  auto decide = [&](storage::job_record& j, std::uint64_t cost, const policy::verdict& v,
                    const std::string& action) -> std::string {
    storage::decision_record d{action, j.id, std::string{policy::to_string(v.what)}, v.reason, cost,
                               j.destination};
    std::string err;
    if (v.what == policy::decision::deny) {
      j.cost = cost;
      auto by = v.reason == "kill_switch"       ? "the kill switch"
                : v.reason == "denied_by_admin" ? "an admin"
                                                : "policy";
      refuse(j, v.reason, "denied by " + std::string{by} + " (" + v.reason + ")");
    } else if (v.what == policy::decision::require_approval) {
      j.status = "awaiting_approval";
      j.cost = cost;
      j.approval = approval_id(meta_.id, meta_.trajectory_head, j.id);
      op.approvals.push_back({j.approval, meta_.id, j.id, action, j.destination, cost, v.reason,
                              "pending", now, {}, {}});
    } else {
      err = admit(j, cost, d);
    }
    rec.decisions.push_back(std::move(d));
    return err;
  };

  if (!fx.jobs.empty() && !gate_)
    return "services are not available on this host";
  for (auto& jr : fx.jobs) {
    auto as = gate_->assess(meta_.id, jr);
    if (!as.error.empty())
      return "invalid effect: " + as.error;
    storage::job_record j;
    j.id = jr.id;
    j.agent = meta_.id;
    j.service = jr.service;
    j.request = std::move(as.request);
    j.destination = std::move(as.destination);
    j.created = now;
    j.request_id = rec.request_id;
    if (auto err = decide(j, as.cost, as.verdict, as.action); !err.empty())
      return err;
    a.jobs.push_back(j);
    op.jobs.push_back(std::move(j));
  }

  // Nostr notes leave the runtime: the gate sees each publish.
  if (!notes.empty() && gate_) {
    auto verdict = gate_->assess_publish(meta_.id, nostr::relays_in_config(meta_.config));
    if (verdict.what != policy::decision::allow) {
      auto signed_notes = std::move(notes);
      notes.clear();
      for (std::size_t i = 0; i < signed_notes.size(); ++i) {
        storage::job_record j;
        j.id = "n" + std::to_string(rec.index) + "-" + std::to_string(i);
        j.agent = meta_.id;
        j.service = "nostr_publish";
        j.request = std::move(signed_notes[i]);
        j.destination = "relays";
        j.created = now;
        j.request_id = rec.request_id;
        if (auto err = decide(j, 0, verdict, "nostr_publish"); !err.empty())
          return err;
        a.jobs.push_back(j);
        op.jobs.push_back(std::move(j));
      }
    } else {
      for (std::size_t i = 0; i < notes.size(); ++i)
        rec.decisions.push_back({"nostr_publish", {}, "allow", verdict.reason, 0, "relays"});
    }
  }

  // An admin decided a parked job: apply it in this tick.
  if (trig.kind == trigger_kind::approval_decision) {
    boost::system::error_code ec;
    auto v = json::parse(trig.payload, ec);
    auto* o = !ec && v.is_object() ? &v.as_object() : nullptr;
    auto* job_id = o ? o->if_contains("job") : nullptr;
    auto* decision = o ? o->if_contains("decision") : nullptr;
    if (job_id && job_id->is_string() && decision && decision->is_string()) {
      auto stored = store_.get_job(meta_.id, job_id->as_string());
      if (!stored)
        return stored.error_value().message();
      if (*stored && (*stored)->status == "awaiting_approval") {
        auto j = std::move(**stored);
        auto approved = decision->as_string() == "approved";
        // The kill switch also stops what an admin approved before it.
        policy::verdict verdict{approved ? policy::decision::allow : policy::decision::deny,
                                approved ? "approved" : "denied_by_admin", -1};
        if (approved && gate_ && gate_->killed())
          verdict = {policy::decision::deny, "kill_switch", -1};
        auto action = j.service == "containers" ? "container" : j.service;
        if (auto err = decide(j, j.cost, verdict, action); !err.empty())
          return err;
        a.jobs.push_back(j);
        op.jobs.push_back(std::move(j));
      }
    }
  }
  return {};
}

std::string agent_host::validate(const effects& fx, time_point now) const {
  for (auto& m : fx.messages) {
    if (auto err = check_agent_id(m.to))
      return "send: " + err.message();
    if (m.payload.size() > limits().max_message_bytes)
      return "send: message of " + std::to_string(m.payload.size()) + " bytes exceeds the limit of "
             + std::to_string(limits().max_message_bytes);
  }
  for (auto& e : fx.outbox)
    if (e.size() > limits().max_message_bytes)
      return "emit: event of " + std::to_string(e.size()) + " bytes exceeds the limit of "
             + std::to_string(limits().max_message_bytes);
  for (auto& a : fx.alarms) {
    if (a.name.empty() || a.name.size() > max_name_bytes)
      return "alarm names are 1 to 256 bytes";
    if (!a.cancel && (a.period.count() < 0 || (a.periodic && a.period.count() == 0)))
      return "alarm '" + a.name + "' has a period of "
             + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(a.period).count())
             + " us: a periodic alarm's is positive";
    if (!a.cancel && a.due < now - std::chrono::hours{24 * 365 * 100})
      return "alarm '" + a.name + "' is due before the epoch range";
  }
  for (auto* edits : {&fx.goals, &fx.memory})
    for (auto& kv : *edits)
      if (kv.key.empty() || kv.key.size() > max_name_bytes
          || kv.space.find('\0') != std::string::npos || kv.space.size() > max_name_bytes)
        return "goal and memory keys and namespaces are 1 to 256 bytes without NUL";
  // fs/memory/export is the agent's bundle: a namespace of that name could
  // never be read there.
  for (auto& kv : fx.memory)
    if (kv.space == "export")
      return "the memory namespace 'export' is reserved (fs/memory/export is the agent's bundle)";
  return {};
}

std::string agent_host::stamp_messages(std::vector<outgoing_message>& messages,
                                       std::uint64_t index, const std::string& request_id,
                                       storage::tick_op& op) const {
  auto sent_at = clock_.now();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    storage::inbox_entry e;
    e.kind = trigger_kind::message;
    e.time = sent_at;
    e.from = meta_.id;
    e.payload = std::move(m.payload);
    // The request that set this chain of messages off: the recipient's tick
    // logs and records it too, as Orleans' RequestContext flows across calls.
    e.request_id = request_id;
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
    op.messages.push_back({std::move(m.to), std::move(e), limits().inbox_limit});
  }
  return {};
}

tick_attempt agent_host::run(const storage::inbox_entry& entry) {
  tick_attempt a;
  a.trigger_seq = entry.seq;
  a.request_id = entry.request_id;
  a.kind = entry.kind;
  a.attempt = meta_.retry_seq == entry.seq ? meta_.retry_attempts + 1 : 1;
  auto start_wall = clock_.now();
  auto start = clock_.elapsed();
  a.started = std::chrono::steady_clock::now();

  storage::trajectory_record rec;
  rec.index = meta_.trajectory_next;
  rec.tick = meta_.tick_count + 1;
  a.tick = rec.tick;  // a failed attempt too: the tick it tried to be
  rec.attempt = a.attempt;
  rec.kind = entry.kind;
  rec.trigger_seq = entry.seq;
  rec.request_id = entry.request_id;
  rec.alarm = entry.alarm;
  if (entry.kind == trigger_kind::ws)
    if (auto ev = ws_event::head(entry.payload)) {
      static constexpr std::string_view names[] = {"open", "frame", "close"};
      rec.ws_event = names[static_cast<std::size_t>(ev->event)];
      rec.connection = std::move(ev->connection);
    }
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
  bool final_attempt = false;  // no retry: straight to the deadletter on failure
  if (entry.corrupt) {
    failure = "inbox record " + std::to_string(entry.seq) + " is corrupt: " + entry.payload;
    final_attempt = true;  // no point retrying bytes that do not decode
  } else if (refusal) {
    failure = refusal->error;
    a.refused = refusal->reason;
    final_attempt = true;  // a bad envelope does not get better
  } else {
    auto trig = (opened ? *opened : entry).to_trigger(a.attempt);
    context ctx{meta_.id, meta_.config, trig, *agent_, this};
    ctx.set_job_prefix("j" + std::to_string(rec.index));
    if (trig.kind == trigger_kind::ctl && trig.payload.starts_with("{\"submit\"")) {
      // A job written to compute/new, containers/new or http/new from outside: staged
      // here, so the gate's decision is in this tick's trajectory record.
      boost::system::error_code ec;
      auto v = json::parse(trig.payload, ec);
      auto* sub = !ec && v.is_object() ? v.as_object().if_contains("submit") : nullptr;
      auto* svc = sub && sub->is_object() ? sub->as_object().if_contains("service") : nullptr;
      auto* req = sub && sub->is_object() ? sub->as_object().if_contains("request") : nullptr;
      if (svc && svc->is_string() && req && req->is_string()) {
        if (svc->as_string() == "compute")
          ctx.compute(std::string{req->as_string()});
        else if (svc->as_string() == "containers")
          ctx.run_container(std::string{req->as_string()});
        else if (svc->as_string() == "http")
          ctx.fetch(std::string{req->as_string()});
      }
    }
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
      auto err = stamp_messages(fx.messages, rec.index, rec.request_id, a.op);
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
    if (!failure) {
      auto err = stage_services(fx, signed_notes, trig, rec, a);
      if (!err.empty())
        failure = err;
    }
  }
  if (throttled_) {
    rec.limits.push_back("ticks_per_minute");
    throttled_ = false;
  }
  auto& lim = limits();

  auto next = meta_;
  next.trajectory_next = meta_.trajectory_next + 1;
  // A direct trigger is not in the inbox: nothing to consume, but its number
  // must not be given out again after a restart.
  bool direct = storage::is_direct_seq(entry.seq);
  if (direct)
    next.direct_next = std::max(next.direct_next, storage::direct_number(entry.seq) + 1);
  auto& op = a.op;
  op.trajectory_index = rec.index;
  rec.logs = std::move(fx.logs);

  std::string bytes, summary;
  if (!failure) {
    try {
      bytes = agent_->save_state();
      summary = agent_->summary();
    } catch (const std::exception& e) {
      failure = std::string{"exception in save_state or summary: "} + e.what();
    } catch (...) {
      failure = "exception of unknown type in save_state or summary";
    }
  }
  if (!failure) {
    if (lim.max_state_bytes != 0 && bytes.size() > lim.max_state_bytes) {
      failure = "state of " + std::to_string(bytes.size()) + " bytes exceeds the limit of "
                + std::to_string(lim.max_state_bytes) + " (max_state_bytes)";
      rec.limits.push_back("state_size");
    }
  }
  if (!failure) {
    rec.effects.state_bytes = bytes.size();
    rec.effects.state_changed = bytes != committed_state_;
    rec.state_hash = rec.effects.state_changed ? storage::blake2b(bytes) : committed_hash_;
    if (rec.effects.state_changed) {
      op.state = bytes;
      a.state_after = std::move(bytes);
    }
    next.tick_count = meta_.tick_count + 1;
    next.last_tick = start_wall;  // when it ran (its trigger may be older)
    next.retry_seq = 0;
    next.retry_attempts = 0;
    next.summary = std::move(summary);
    a.reply = std::move(fx.reply);
    a.ws = std::move(fx.ws);
    a.reply_deferred = fx.reply_deferred;
    a.late_replies = std::move(fx.late_replies);
    if (!direct)
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
    if (lim.outbox_retention != 0 && !op.outbox.empty()
        && next.outbox_next - 1 > lim.outbox_retention) {
      op.outbox_trim_below = next.outbox_next - lim.outbox_retention;
      rec.limits.push_back("outbox_retention");
    }
    rec.effects.outbox = static_cast<std::uint32_t>(op.outbox.size());
    a.outbox_count = rec.effects.outbox;
    rec.effects.messages = static_cast<std::uint32_t>(op.messages.size());
    rec.effects.goals = static_cast<std::uint32_t>(fx.goals.size());
    rec.effects.memory = static_cast<std::uint32_t>(fx.memory.size());
    rec.effects.ws = static_cast<std::uint32_t>(a.ws.size());
    op.alarms = std::move(fx.alarms);
    op.goals = std::move(fx.goals);
    op.memory = std::move(fx.memory);
  } else {
    // Nothing the tick staged is committed; the state goes back to the last
    // committed bytes.
    op.messages.clear();
    op.jobs.clear();
    op.ledger.clear();
    op.approvals.clear();
    a.jobs.clear();
    rec.decisions.clear();
    restore_committed();
    rec.state_hash = committed_hash_;
    rec.error = *failure;
    a.error = *failure;
    if (final_attempt || a.attempt >= limits().max_attempts) {
      a.outcome = storage::outcome::deadlettered;
      next.retry_seq = 0;
      next.retry_attempts = 0;
      if (!direct)
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
    std::max(clock_.elapsed() - start, std::chrono::nanoseconds{0}).count());
  if (lim.tick_wall_time.count() > 0
      && rec.duration_ns > static_cast<std::uint64_t>(
           std::chrono::duration_cast<std::chrono::nanoseconds>(lim.tick_wall_time).count()))
    rec.limits.push_back("tick_wall_time");
  a.limits = rec.limits;
  auto record_bytes = storage::encode(rec);
  next.trajectory_head = storage::blake2b(record_bytes);
  op.trajectory_bytes = std::move(record_bytes);  // sealed by seal()
  a.state_hash = rec.state_hash;
  a.meta_after = next;
  op.meta = std::move(next);
  return a;
}

void agent_host::seal(std::span<storage::tick_op> ops) const {
  for (std::size_t i = 0; i < ops.size(); ++i) {
    auto& bytes = ops[i].trajectory_bytes;
    std::string signature;
    if (i + 1 == ops.size()) {
      auto sig = identity::sign(*keys_, identity::trajectory_signing_bytes(meta_.id, bytes));
      signature.assign(reinterpret_cast<const char*>(sig.data()), sig.size());
    }
    bytes = storage::encode_signed_trajectory(bytes, signature);
  }
}

void agent_host::advance(tick_attempt& a) {
  a.outbox_next = a.meta_after.outbox_next;
  if (!base_)
    base_.emplace(batch_base{std::move(meta_), std::nullopt, committed_hash_});
  meta_ = std::move(a.meta_after);
  if (a.state_after) {
    if (!base_->state)
      base_->state = std::move(committed_state_);
    committed_state_ = std::move(*a.state_after);
    committed_hash_ = a.state_hash;
  }
}

bool agent_host::chainable(const tick_attempt& a) noexcept {
  auto& op = a.op;
  return a.outcome == storage::outcome::ok && op.goals.empty() && op.memory.empty()
         && op.jobs.empty() && op.ledger.empty() && op.approvals.empty();
}

void agent_host::rolled_back() {
  if (base_) {
    meta_ = std::move(base_->meta);
    if (base_->state) {
      committed_state_ = std::move(*base_->state);
      committed_hash_ = base_->hash;
    }
    base_.reset();
  }
  restore_committed();
}

expected<std::unique_ptr<agent_host>> load_agent(const agent_registry& registry,
                                                 storage::store& store, const keyring& keys,
                                                 const ticktock::clock& clock,
                                                 storage::agent_record meta,
                                                 const tick_limits& limits, const gate* gate) {
  auto type = meta.type;
  try {
    auto agent = registry.make(type);
    if (!agent) {
      if (auto err = registry.check(type))
        return err;
      return error{errc::agent_errored, "the factory of agent type '" + type + "' made no agent"};
    }
    auto host = std::make_unique<agent_host>(store, keys, clock, std::move(meta), std::move(agent),
                                             limits, gate);
    if (auto err = host->load())
      return err;
    return host;
  } catch (const std::exception& e) {
    return error{errc::agent_errored, "loading an agent of type '" + type + "' threw: " + e.what()};
  } catch (...) {
    return error{errc::agent_errored,
                 "loading an agent of type '" + type + "' threw an exception of unknown type"};
  }
}

void agent_host::restore_committed() {
  // The agent's own code: a state it cannot load back (or a load that
  // throws) leaves it at its initial state, as a fresh agent; one whose
  // reset throws too is left as it is (its next tick most likely fails
  // again, and ends in the deadletter), but never stops the actor.
  try {
    if (agent_->load_state(committed_state_))
      return;
  } catch (...) {
  }
  try {
    agent_->reset_state();
  } catch (...) {
  }
}

}  // namespace ticktock::detail
