// Cap'n Proto encoding of the framework records. Decoding of stored (hence
// untrusted) bytes happens in decode_message, the one place that catches
// kj::Exception.

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <capnp/serialize.h>
#include <kj/io.h>
#include <sodium.h>

#include <array>
#include <chrono>
#include <algorithm>
#include <bit>
#include <optional>
#include <cstring>

#include "bundle.hpp"
#include "records.capnp.h"
#include "ticktock/storage/records.hpp"

namespace ticktock::storage {

namespace s = schema;

namespace {

std::int64_t to_us(time_point t) { return t.time_since_epoch().count(); }
time_point from_us(std::int64_t us) { return time_point{duration{us}}; }

capnp::Data::Reader as_data(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}
capnp::Data::Reader as_data(const hash256& h) { return {h.data(), h.size()}; }
std::string to_string(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}
std::string to_string(capnp::Text::Reader t) { return {t.begin(), t.size()}; }
// Text of all of `s`: a std::string converts to Text through c_str(), which
// would cut it at its first NUL (found by fuzz-codec).
capnp::Text::Reader as_text(const std::string& s) { return {s.c_str(), s.size()}; }
bool to_hash(capnp::Data::Reader d, hash256& out) {
  if (d.size() == 0) {
    out = {};
    return true;
  }
  if (d.size() != out.size())
    return false;
  std::memcpy(out.data(), d.begin(), out.size());
  return true;
}

std::string finish(capnp::MessageBuilder& msg) {
  kj::VectorOutputStream out;
  capnp::writePackedMessage(out, msg);
  auto a = out.getArray();
  return {reinterpret_cast<const char*>(a.begin()), a.size()};
}

error corrupt(std::string_view what, std::string_view detail) {
  return error{errc::corrupt_record,
               std::string{what} + " record failed to decode: " + std::string{detail}};
}

// How many words a Cap'n Proto packed stream unpacks to, if it is well
// formed: each word is a tag byte and the bytes its bits select; a zero tag
// is followed by a count of further zero words, a 0xff tag (after its eight
// bytes) by a count of raw words.
std::optional<std::size_t> packed_words(std::string_view p) {
  std::size_t words = 0, i = 0;
  while (i < p.size()) {
    auto tag = static_cast<unsigned char>(p[i++]);
    i += static_cast<std::size_t>(std::popcount(tag));
    ++words;
    if (tag == 0 || tag == 0xff) {
      if (i >= p.size())
        return std::nullopt;
      auto run = static_cast<unsigned char>(p[i++]);
      words += run;
      if (tag == 0xff)
        i += std::size_t{run} * 8;
    }
    if (i > p.size())
      return std::nullopt;
  }
  return words;
}

// Decodes one packed message and hands its root to `f`. Every failure of
// Cap'n Proto (truncation, bad pointers, traversal limits) becomes a
// corrupt_record error.
template <class Root, class F>
auto decode_message(std::string_view what, std::string_view bytes, F&& f)
  -> expected<decltype(f(std::declval<typename Root::Reader>()))> {
  using result = decltype(f(std::declval<typename Root::Reader>()));
  if (bytes.empty())
    return corrupt(what, "empty value");
  try {
    // Unpack everything, then read the message from the flat words, so
    // that bytes after the message are seen (PackedMessageReader stops
    // inside the packed stream and cannot tell). The scan sizes the output:
    // PackedInputStream needs room for a whole zero or raw run per call.
    constexpr std::size_t max_words = 8 * 1024 * 1024;
    auto unpacked = packed_words(bytes);
    if (!unpacked)
      return corrupt(what, "malformed packing");
    if (*unpacked > max_words)
      return corrupt(what, "unpacks to more than 64 MiB");
    kj::ArrayInputStream in{kj::ArrayPtr<const kj::byte>(
      reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size())};
    capnp::_::PackedInputStream packed{in};
    auto words = kj::heapArray<capnp::word>(*unpacked);
    packed.read(words.begin(), words.size() * sizeof(capnp::word));
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = max_words;
    capnp::FlatArrayMessageReader reader{words.asPtr(), opts};
    if (reader.getEnd() != words.end())
      return corrupt(what, "trailing bytes");
    return expected<result>{f(reader.getRoot<Root>())};
  } catch (const kj::Exception& e) {
    return corrupt(what, e.getDescription().cStr());
  } catch (const std::exception& e) {
    return corrupt(what, e.what());
  }
}

}  // namespace

hash256 blake2b(std::string_view bytes) {
  hash256 h;
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                     bytes.size(), nullptr, 0);
  return h;
}

std::string to_hex(const hash256& h) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (auto b : h) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

std::string_view to_string(outcome o) noexcept {
  switch (o) {
    case outcome::ok: return "ok";
    case outcome::failed: return "failed";
    case outcome::deadlettered: return "deadlettered";
  }
  return "unknown";
}

hash256 trigger_digest(const inbox_entry& e) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  auto add = [&](const void* p, std::size_t n) {
    crypto_generichash_update(&st, static_cast<const unsigned char*>(p), n);
  };
  // Integers little-endian, whatever the machine's order (as first written,
  // on x86-64), so that records verify on any machine.
  auto add_le64 = [&](std::uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i)
      b[i] = static_cast<unsigned char>(v >> (8 * i));
    add(b, sizeof b);
  };
  auto add_str = [&](std::string_view s) {
    add_le64(s.size());
    add(s.data(), s.size());
  };
  auto kind = static_cast<std::uint8_t>(e.kind);
  add(&kind, 1);
  add_le64(static_cast<std::uint64_t>(to_us(e.time)));
  add_str(e.from);
  add_str(e.alarm);
  add_str(e.payload);
  hash256 h;
  crypto_generichash_final(&st, h.data(), h.size());
  return h;
}

// -- agent ------------------------------------------------------------------

std::string encode(const agent_record& r) {
  capnp::MallocMessageBuilder msg{64};
  auto b = msg.initRoot<s::AgentRecord>();
  b.setId(as_text(r.id));
  b.setType(as_text(r.type));
  b.setConfig(as_data(r.config));
  b.setCreatedUs(to_us(r.created));
  b.setStatus(r.errored ? s::AgentStatus::ERRORED : s::AgentStatus::ACTIVE);
  b.setError(as_text(r.error));
  b.setTickCount(r.tick_count);
  b.setLastTickUs(to_us(r.last_tick));
  b.setTrajectoryNext(r.trajectory_next);
  if (r.trajectory_next > 0)
    b.setTrajectoryHead(as_data(r.trajectory_head));
  b.setOutboxNext(r.outbox_next);
  b.setRetrySeq(r.retry_seq);
  b.setRetryAttempts(r.retry_attempts);
  b.setDirectNext(r.direct_next);
  if (!r.summary.empty())
    b.setSummary(as_text(r.summary));
  return finish(msg);
}

expected<agent_record> decode_agent(std::string_view bytes) {
  auto r = decode_message<s::AgentRecord>("agent", bytes, [](s::AgentRecord::Reader m) {
    agent_record r;
    r.id = to_string(m.getId());
    r.type = to_string(m.getType());
    r.config = to_string(m.getConfig());
    r.created = from_us(m.getCreatedUs());
    r.errored = m.getStatus() == s::AgentStatus::ERRORED;
    r.error = to_string(m.getError());
    r.tick_count = m.getTickCount();
    r.last_tick = from_us(m.getLastTickUs());
    r.trajectory_next = m.getTrajectoryNext();
    r.outbox_next = m.getOutboxNext();
    r.retry_seq = m.getRetrySeq();
    r.retry_attempts = m.getRetryAttempts();
    r.direct_next = std::max<std::uint64_t>(m.getDirectNext(), 1);
    r.summary = to_string(m.getSummary());
    bool ok = to_hash(m.getTrajectoryHead(), r.trajectory_head);
    return std::make_pair(ok, std::move(r));
  });
  if (!r)
    return r.error_value();
  if (!r->first || r->second.id.empty() || r->second.type.empty())
    return corrupt("agent", "missing id or type, or bad head hash");
  return std::move(r->second);
}

// -- inbox ------------------------------------------------------------------

std::string encode(const inbox_entry& e) {
  capnp::MallocMessageBuilder msg{static_cast<capnp::uint>(32 + e.payload.size() / 8)};
  auto b = msg.initRoot<s::InboxEntry>();
  b.setKind(static_cast<std::uint8_t>(e.kind));
  b.setTimeUs(to_us(e.time));
  if (!e.from.empty())
    b.setFrom(as_text(e.from));
  b.setPayload(as_data(e.payload));
  if (!e.alarm.empty())
    b.setAlarm(as_text(e.alarm));
  if (!e.idempotency_key.empty())
    b.setIdempotencyKey(as_text(e.idempotency_key));
  if (!e.envelope_id.empty())
    b.setEnvelopeId(as_data(e.envelope_id));
  if (!e.signature.empty())
    b.setSignature(as_data(e.signature));
  if (e.encrypted)
    b.setEncrypted(true);
  if (!e.sender_key.empty())
    b.setSenderKey(as_data(e.sender_key));
  if (e.nostr)
    b.setNostr(true);
  if (!e.request_id.empty())
    b.setRequestId(as_text(e.request_id));
  if (e.sent)
    b.setSentUs(to_us(*e.sent));
  return finish(msg);
}

expected<inbox_entry> decode_inbox(std::string_view bytes) {
  auto r = decode_message<s::InboxEntry>("inbox", bytes, [](s::InboxEntry::Reader m) {
    inbox_entry e;
    e.kind = static_cast<trigger_kind>(m.getKind());
    e.time = from_us(m.getTimeUs());
    e.from = to_string(m.getFrom());
    e.payload = to_string(m.getPayload());
    e.alarm = to_string(m.getAlarm());
    e.idempotency_key = to_string(m.getIdempotencyKey());
    e.envelope_id = to_string(m.getEnvelopeId());
    e.signature = to_string(m.getSignature());
    e.encrypted = m.getEncrypted();
    e.sender_key = to_string(m.getSenderKey());
    e.nostr = m.getNostr();
    e.request_id = to_string(m.getRequestId());
    if (m.getSentUs() != 0)
      e.sent = from_us(m.getSentUs());
    return e;
  });
  if (r && static_cast<std::uint8_t>(r->kind) > static_cast<std::uint8_t>(trigger_kind::http_result))
    return corrupt("inbox", "unknown trigger kind");
  return r;
}

// -- outbox -----------------------------------------------------------------

std::string encode(const outbox_event& e) {
  capnp::MallocMessageBuilder msg{static_cast<capnp::uint>(16 + e.payload.size() / 8)};
  auto b = msg.initRoot<s::OutboxEvent>();
  b.setTick(e.tick);
  b.setTimeUs(to_us(e.time));
  b.setPayload(as_data(e.payload));
  if (!e.topic.empty())
    b.setTopic(as_text(e.topic));
  return finish(msg);
}

expected<outbox_event> decode_outbox(std::string_view bytes) {
  return decode_message<s::OutboxEvent>("outbox", bytes, [](s::OutboxEvent::Reader m) {
    outbox_event e;
    e.tick = m.getTick();
    e.time = from_us(m.getTimeUs());
    e.payload = to_string(m.getPayload());
    e.topic = to_string(m.getTopic());
    return e;
  });
}

// -- trajectory -------------------------------------------------------------

std::string encode(const trajectory_record& r) {
  capnp::MallocMessageBuilder msg{96};
  auto b = msg.initRoot<s::TrajectoryRecord>();
  b.setIndex(r.index);
  b.setTick(r.tick);
  b.setAttempt(r.attempt);
  b.setTriggerKind(static_cast<std::uint8_t>(r.kind));
  b.setTriggerSeq(r.trigger_seq);
  b.setTriggerDigest(as_data(r.trigger_digest));
  b.setStartUs(to_us(r.start));
  b.setDurationNs(r.duration_ns);
  b.setOutcome(static_cast<s::Outcome>(r.outcome));
  if (!r.error.empty())
    b.setError(as_text(r.error));
  auto fx = b.initEffects();
  fx.setStateBytes(r.effects.state_bytes);
  fx.setStateChanged(r.effects.state_changed);
  fx.setOutbox(r.effects.outbox);
  fx.setMessages(r.effects.messages);
  fx.setAlarmsSet(r.effects.alarms_set);
  fx.setAlarmsCancelled(r.effects.alarms_cancelled);
  fx.setGoals(r.effects.goals);
  fx.setMemory(r.effects.memory);
  fx.setWs(r.effects.ws);
  b.setStateHash(as_data(r.state_hash));
  if (r.index > 0)
    b.setPrevHash(as_data(r.prev_hash));
  if (!r.logs.empty()) {
    auto logs = b.initLogs(static_cast<unsigned>(r.logs.size()));
    for (unsigned i = 0; i < r.logs.size(); ++i)
      logs.set(i, as_text(r.logs[i]));
  }
  if (!r.decisions.empty()) {
    auto list = b.initDecisions(static_cast<unsigned>(r.decisions.size()));
    for (unsigned i = 0; i < r.decisions.size(); ++i) {
      auto& d = r.decisions[i];
      list[i].setAction(as_text(d.action));
      list[i].setJob(as_text(d.job));
      list[i].setDecision(as_text(d.decision));
      list[i].setReason(as_text(d.reason));
      list[i].setCost(d.cost);
      if (!d.destination.empty())
        list[i].setDestination(as_text(d.destination));
    }
  }
  if (!r.limits.empty()) {
    auto list = b.initLimits(static_cast<unsigned>(r.limits.size()));
    for (unsigned i = 0; i < r.limits.size(); ++i)
      list.set(i, as_text(r.limits[i]));
  }
  if (!r.request_id.empty())
    b.setRequestId(as_text(r.request_id));
  if (!r.alarm.empty())
    b.setAlarm(as_text(r.alarm));
  if (!r.ws_event.empty())
    b.setWsEvent(as_text(r.ws_event));
  if (!r.connection.empty())
    b.setConnection(as_text(r.connection));
  return finish(msg);
}

expected<trajectory_record> decode_trajectory(std::string_view bytes) {
  auto r = decode_message<s::TrajectoryRecord>("trajectory", bytes, [](s::TrajectoryRecord::Reader m) {
    trajectory_record r;
    r.index = m.getIndex();
    r.tick = m.getTick();
    r.attempt = m.getAttempt();
    r.kind = static_cast<trigger_kind>(m.getTriggerKind());
    r.trigger_seq = m.getTriggerSeq();
    r.start = from_us(m.getStartUs());
    r.duration_ns = m.getDurationNs();
    r.outcome = static_cast<outcome>(m.getOutcome());
    r.error = to_string(m.getError());
    auto fx = m.getEffects();
    r.effects = {fx.getStateBytes(), fx.getStateChanged(),    fx.getOutbox(),
                 fx.getMessages(),   fx.getAlarmsSet(),       fx.getAlarmsCancelled(),
                 fx.getGoals(),      fx.getMemory(),          fx.getWs()};
    for (auto l : m.getLogs())
      r.logs.push_back(to_string(l));
    for (auto d : m.getDecisions())
      r.decisions.push_back({to_string(d.getAction()), to_string(d.getJob()),
                             to_string(d.getDecision()), to_string(d.getReason()), d.getCost(),
                             to_string(d.getDestination())});
    for (auto l : m.getLimits())
      r.limits.push_back(to_string(l));
    r.request_id = to_string(m.getRequestId());
    r.alarm = to_string(m.getAlarm());
    r.ws_event = to_string(m.getWsEvent());
    r.connection = to_string(m.getConnection());
    bool ok = to_hash(m.getTriggerDigest(), r.trigger_digest)
              && to_hash(m.getStateHash(), r.state_hash) && to_hash(m.getPrevHash(), r.prev_hash)
              && static_cast<std::uint16_t>(m.getOutcome()) <= 2;
    return std::make_pair(ok, std::move(r));
  });
  if (!r)
    return r.error_value();
  if (!r->first)
    return corrupt("trajectory", "bad hash length or outcome");
  return std::move(r->second);
}

std::string encode_signed_trajectory(std::string_view record_bytes, std::string_view signature) {
  capnp::MallocMessageBuilder msg{static_cast<capnp::uint>(32 + record_bytes.size() / 8)};
  auto b = msg.initRoot<s::SignedTrajectory>();
  b.setRecord(as_data(record_bytes));
  if (!signature.empty())
    b.setSignature(as_data(signature));
  return finish(msg);
}

expected<std::pair<std::string, std::string>> decode_signed_trajectory(std::string_view bytes) {
  return decode_message<s::SignedTrajectory>(
    "trajectory", bytes, [](s::SignedTrajectory::Reader m) {
      return std::make_pair(to_string(m.getRecord()), to_string(m.getSignature()));
    });
}

// -- identity ---------------------------------------------------------------

std::string encode(const identity_record& r) {
  capnp::MallocMessageBuilder msg{64};
  auto b = msg.initRoot<s::IdentityRecord>();
  b.setVersion(1);
  b.setEd25519Public(as_data(r.ed25519));
  b.setNostrPublic(as_data(r.nostr));
  if (!r.sealed.empty())
    b.setSealedSecrets(as_data(r.sealed));
  b.setMasterKeyId(as_text(r.master_key_id));
  b.setCreatedUs(to_us(r.created));
  if (!r.retired.empty()) {
    auto list = b.initRetiredEd25519(static_cast<unsigned>(r.retired.size()));
    for (unsigned i = 0; i < r.retired.size(); ++i)
      list.set(i, as_data(r.retired[i]));
  }
  return finish(msg);
}

expected<identity_record> decode_identity(std::string_view bytes) {
  auto r = decode_message<s::IdentityRecord>("identity", bytes, [](s::IdentityRecord::Reader m) {
    identity_record r;
    bool ok = m.getVersion() == 1 && m.getEd25519Public().size() == 32
              && m.getNostrPublic().size() == 32;
    if (ok) {
      std::memcpy(r.ed25519.data(), m.getEd25519Public().begin(), 32);
      std::memcpy(r.nostr.data(), m.getNostrPublic().begin(), 32);
    }
    r.sealed = to_string(m.getSealedSecrets());
    r.master_key_id = to_string(m.getMasterKeyId());
    r.created = from_us(m.getCreatedUs());
    for (auto k : m.getRetiredEd25519()) {
      if (k.size() != 32) {
        ok = false;
        break;
      }
      auto& key = r.retired.emplace_back();
      std::memcpy(key.data(), k.begin(), 32);
    }
    return std::make_pair(ok, std::move(r));
  });
  if (!r)
    return r.error_value();
  if (!r->first)
    return corrupt("identity", "unknown version or bad key length");
  return std::move(r->second);
}

// -- alarms -----------------------------------------------------------------

std::string encode(const alarm_record& a) {
  capnp::MallocMessageBuilder msg{32};
  auto b = msg.initRoot<s::AlarmRecord>();
  b.setAgent(as_text(a.agent));
  b.setName(as_text(a.name));
  b.setDueUs(to_us(a.due));
  b.setPeriodUs(a.period.count());
  return finish(msg);
}

expected<alarm_record> decode_alarm(std::string_view bytes) {
  return decode_message<s::AlarmRecord>("alarm", bytes, [](s::AlarmRecord::Reader m) {
    return alarm_record{to_string(m.getAgent()), to_string(m.getName()), from_us(m.getDueUs()),
                        duration{m.getPeriodUs()}};
  });
}

// -- deadletter -------------------------------------------------------------

std::string encode(const deadletter_entry& d) {
  capnp::MallocMessageBuilder msg{32};
  auto b = msg.initRoot<s::DeadLetter>();
  b.setSeq(d.seq);
  b.setReason(as_text(d.reason));
  b.setError(as_text(d.error));
  b.setTimeUs(to_us(d.time));
  b.setAttempts(d.attempts);
  b.setEntry(as_data(d.entry.corrupt ? d.entry.raw : encode(d.entry)));
  if (d.request_digest)
    b.setRequestDigest(as_data(*d.request_digest));
  return finish(msg);
}

expected<deadletter_entry> decode_deadletter(std::string_view bytes) {
  auto r = decode_message<s::DeadLetter>("deadletter", bytes, [](s::DeadLetter::Reader m) {
    deadletter_entry d;
    d.seq = m.getSeq();
    d.reason = to_string(m.getReason());
    d.error = to_string(m.getError());
    d.time = from_us(m.getTimeUs());
    d.attempts = m.getAttempts();
    d.entry.raw = to_string(m.getEntry());
    if (hash256 h; m.getRequestDigest().size() != 0 && to_hash(m.getRequestDigest(), h))
      d.request_digest = h;
    return d;
  });
  if (!r)
    return r;
  auto e = decode_inbox(r->entry.raw);
  if (e) {
    r->entry = std::move(*e);
  } else {
    r->entry.corrupt = true;
  }
  r->entry.seq = r->seq;
  return r;
}

// -- budgets, jobs, approvals -------------------------------------------------

namespace {

// Days since the epoch and year*12+month-1 of a UTC instant.
std::int64_t utc_day(time_point t) {
  auto us = t.time_since_epoch().count();
  auto d = us / 86'400'000'000LL;
  return us < 0 && us % 86'400'000'000LL ? d - 1 : d;
}
std::int64_t utc_month(time_point t) {
  std::chrono::sys_days days{std::chrono::days{utc_day(t)}};
  std::chrono::year_month_day ymd{days};
  return static_cast<int>(ymd.year()) * 12LL + static_cast<unsigned>(ymd.month()) - 1;
}

}  // namespace

void ledger_record::roll(time_point now) {
  auto d = utc_day(now);
  if (d != day) {
    day = d;
    spent_day = 0;
  }
  auto m = utc_month(now);
  if (m != month) {
    month = m;
    spent_month = 0;
  }
}

std::string ledger_record::check(std::uint64_t amount, time_point now) const {
  auto copy = *this;
  copy.roll(now);
  // Without limits too, what is spent and reserved must fit the counters
  // (budget::limit::capacity): past it, `reserved` saturated and under-reported.
  std::uint64_t held = copy.spent_total + copy.reserved;
  if (held < copy.spent_total || amount > UINT64_MAX - held)
    return "capacity of the 64-bit counters: " + std::to_string(copy.spent_total) + " spent, "
           + std::to_string(copy.reserved) + " reserved, " + std::to_string(amount) + " asked";
  auto over = [&](const char* name, std::uint64_t limit, std::uint64_t spent) -> std::string {
    if (limit == 0)
      return {};
    // spent + reserved + amount > limit, without overflow
    std::uint64_t used = spent + copy.reserved;
    if (used < spent || used > limit || amount > limit - used)
      return std::string{name} + " limit of " + std::to_string(limit) + " micro-USD: "
             + std::to_string(spent) + " spent, " + std::to_string(copy.reserved) + " reserved, "
             + std::to_string(amount) + " asked";
    return {};
  };
  for (auto r : {over("total", copy.limit_total, copy.spent_total),
                 over("monthly", copy.limit_month, copy.spent_month),
                 over("daily", copy.limit_day, copy.spent_day)})
    if (!r.empty())
      return r;
  return {};
}

std::uint64_t ledger_record::available(time_point now) const {
  auto copy = *this;
  copy.roll(now);
  std::uint64_t best = UINT64_MAX;
  auto left = [&](std::uint64_t limit, std::uint64_t spent) {
    if (limit == 0)
      return;
    std::uint64_t used = spent + copy.reserved;
    best = std::min(best, used < spent || used >= limit ? 0 : limit - used);
  };
  left(copy.limit_total, copy.spent_total);
  left(copy.limit_month, copy.spent_month);
  left(copy.limit_day, copy.spent_day);
  return best;
}

std::string encode(const ledger_record& r) {
  capnp::MallocMessageBuilder msg{32};
  auto b = msg.initRoot<s::Ledger>();
  b.setLimitTotal(r.limit_total);
  b.setLimitDay(r.limit_day);
  b.setLimitMonth(r.limit_month);
  b.setSpentTotal(r.spent_total);
  b.setSpentDay(r.spent_day);
  b.setSpentMonth(r.spent_month);
  b.setReserved(r.reserved);
  b.setDay(r.day);
  b.setMonth(r.month);
  b.setHistoryNext(r.history_next);
  b.setComputeSpent(r.compute_spent);
  b.setComputeReserved(r.compute_reserved);
  b.setContainersSpent(r.containers_spent);
  b.setContainersReserved(r.containers_reserved);
  b.setHttpSpent(r.http_spent);
  b.setHttpReserved(r.http_reserved);
  return finish(msg);
}

expected<ledger_record> decode_ledger(std::string_view bytes) {
  return decode_message<s::Ledger>("ledger", bytes, [](s::Ledger::Reader m) {
    ledger_record r;
    r.limit_total = m.getLimitTotal();
    r.limit_day = m.getLimitDay();
    r.limit_month = m.getLimitMonth();
    r.spent_total = m.getSpentTotal();
    r.spent_day = m.getSpentDay();
    r.spent_month = m.getSpentMonth();
    r.reserved = m.getReserved();
    r.day = m.getDay();
    r.month = m.getMonth();
    r.history_next = m.getHistoryNext();
    r.compute_spent = m.getComputeSpent();
    r.compute_reserved = m.getComputeReserved();
    r.containers_spent = m.getContainersSpent();
    r.containers_reserved = m.getContainersReserved();
    r.http_spent = m.getHttpSpent();
    r.http_reserved = m.getHttpReserved();
    return r;
  });
}

std::string encode(const ledger_entry& e) {
  capnp::MallocMessageBuilder msg{32};
  auto b = msg.initRoot<s::LedgerEntry>();
  b.setTimeUs(to_us(e.time));
  b.setKind(as_text(e.kind));
  b.setService(as_text(e.service));
  b.setJob(as_text(e.job));
  b.setAmount(e.amount);
  b.setReason(as_text(e.reason));
  return finish(msg);
}

expected<ledger_entry> decode_ledger_entry(std::string_view bytes) {
  return decode_message<s::LedgerEntry>("ledger entry", bytes, [](s::LedgerEntry::Reader m) {
    ledger_entry e;
    e.time = from_us(m.getTimeUs());
    e.kind = to_string(m.getKind());
    e.service = to_string(m.getService());
    e.job = to_string(m.getJob());
    e.amount = m.getAmount();
    e.reason = to_string(m.getReason());
    return e;
  });
}

std::string encode(const job_record& j) {
  capnp::MallocMessageBuilder msg{static_cast<capnp::uint>(32 + (j.request.size() + j.result.size()) / 8)};
  auto b = msg.initRoot<s::Job>();
  b.setId(as_text(j.id));
  b.setAgent(as_text(j.agent));
  b.setService(as_text(j.service));
  b.setStatus(as_text(j.status));
  b.setRequest(as_text(j.request));
  if (!j.result.empty())
    b.setResult(as_text(j.result));
  if (!j.error.empty())
    b.setError(as_text(j.error));
  if (!j.error_message.empty())
    b.setErrorMessage(as_text(j.error_message));
  b.setReserved(j.reserved);
  b.setCost(j.cost);
  b.setCreatedUs(to_us(j.created));
  b.setFinishedUs(to_us(j.finished));
  if (!j.approval.empty())
    b.setApproval(as_text(j.approval));
  if (!j.destination.empty())
    b.setDestination(as_text(j.destination));
  if (!j.request_id.empty())
    b.setRequestId(as_text(j.request_id));
  return finish(msg);
}

expected<job_record> decode_job(std::string_view bytes) {
  auto r = decode_message<s::Job>("job", bytes, [](s::Job::Reader m) {
    job_record j;
    j.id = to_string(m.getId());
    j.agent = to_string(m.getAgent());
    j.service = to_string(m.getService());
    j.status = to_string(m.getStatus());
    j.request = to_string(m.getRequest());
    j.result = to_string(m.getResult());
    j.error = to_string(m.getError());
    j.error_message = to_string(m.getErrorMessage());
    j.reserved = m.getReserved();
    j.cost = m.getCost();
    j.created = from_us(m.getCreatedUs());
    j.finished = from_us(m.getFinishedUs());
    j.approval = to_string(m.getApproval());
    j.destination = to_string(m.getDestination());
    j.request_id = to_string(m.getRequestId());
    return j;
  });
  if (r && (r->id.empty() || r->agent.empty()))
    return corrupt("job", "missing id or agent");
  return r;
}

std::string encode(const approval_record& a) {
  capnp::MallocMessageBuilder msg{32};
  auto b = msg.initRoot<s::Approval>();
  b.setId(as_text(a.id));
  b.setAgent(as_text(a.agent));
  b.setJob(as_text(a.job));
  b.setAction(as_text(a.action));
  b.setDestination(as_text(a.destination));
  b.setCost(a.cost);
  b.setReason(as_text(a.reason));
  b.setStatus(as_text(a.status));
  b.setCreatedUs(to_us(a.created));
  b.setDecidedUs(to_us(a.decided));
  if (!a.note.empty())
    b.setNote(as_text(a.note));
  return finish(msg);
}

expected<approval_record> decode_approval(std::string_view bytes) {
  auto r = decode_message<s::Approval>("approval", bytes, [](s::Approval::Reader m) {
    approval_record a;
    a.id = to_string(m.getId());
    a.agent = to_string(m.getAgent());
    a.job = to_string(m.getJob());
    a.action = to_string(m.getAction());
    a.destination = to_string(m.getDestination());
    a.cost = m.getCost();
    a.reason = to_string(m.getReason());
    a.status = to_string(m.getStatus());
    a.created = from_us(m.getCreatedUs());
    a.decided = from_us(m.getDecidedUs());
    a.note = to_string(m.getNote());
    return a;
  });
  if (r && (r->id.empty() || r->agent.empty()))
    return corrupt("approval", "missing id or agent");
  return r;
}

// -- bundles ----------------------------------------------------------------

namespace {

// The digest of a version 2 bundle (records.capnp, Bundle.digest): it covers
// every byte of every entry, so a bundle changed on its way is refused even
// where no signature reaches (outbox, goals, memory, ledger, counters).
std::string bundle_digest(const bundle& b) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, crypto_generichash_BYTES);
  auto field = [&](std::string_view f) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(f.size()) >> (56 - 8 * i));
    crypto_generichash_update(&st, len, sizeof len);
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(f.data()), f.size());
  };
  field(b.agent);
  for (auto& e : b.entries) {
    field(e.column);
    field(e.key);
    field(e.value);
  }
  std::string out(crypto_generichash_BYTES, '\0');
  crypto_generichash_final(&st, reinterpret_cast<unsigned char*>(out.data()), out.size());
  return out;
}

}  // namespace

std::string encode_bundle(const bundle& b) {
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<s::Bundle>();
  root.setVersion(2);
  root.setAgent(as_text(b.agent));
  auto list = root.initEntries(static_cast<unsigned>(b.entries.size()));
  for (unsigned i = 0; i < b.entries.size(); ++i) {
    list[i].setColumn(as_text(b.entries[i].column));
    list[i].setKey(as_data(b.entries[i].key));
    list[i].setValue(as_data(b.entries[i].value));
  }
  root.setDigest(as_data(bundle_digest(b)));
  return finish(msg);
}

expected<bundle> decode_bundle(std::string_view bytes) {
  struct decoded {
    std::uint32_t version;
    bundle b;
    std::string digest;
  };
  auto r = decode_message<s::Bundle>("bundle", bytes, [](s::Bundle::Reader m) {
    decoded d{m.getVersion(), {}, to_string(m.getDigest())};
    d.b.agent = to_string(m.getAgent());
    for (auto e : m.getEntries())
      d.b.entries.push_back({to_string(e.getColumn()), to_string(e.getKey()), to_string(e.getValue())});
    return d;
  });
  if (!r)
    return r.error_value();
  if (r->version != 1 && r->version != 2)
    return corrupt("bundle", "unsupported version " + std::to_string(r->version));
  // Version 1 bundles (written before the digest) are read as they are.
  if (r->version == 2 && r->digest != bundle_digest(r->b))
    return corrupt("bundle", "its digest does not match its contents");
  return std::move(r->b);
}

}  // namespace ticktock::storage
