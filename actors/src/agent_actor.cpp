// The CAF actor hosting one resident agent. It owns the agent's tick engine
// and runs one batch of ticks at a time: take the next trigger (the older of
// the next cached inbox entry and the next direct trigger, which waits in
// memory only), run on_trigger, and as long as the tick left nothing a later
// tick would read from the store (agent_host::chainable) and more triggers
// wait, run the next one on its uncommitted result; hand the batch's writes
// (one signature) to the committer as one op, and only after the commit
// release the effects (tick by tick, in order) and take the next triggers. When the write fails, the
// whole batch is rolled back and retried. Idle agents hibernate through the
// directory's handshake.

#include <caf/all.hpp>

#include <deque>
#include <utility>
#include <vector>

#include "agent_host.hpp"
#include "messages.hpp"
#include "node_core.hpp"

namespace ticktock::detail {

namespace {

// Inbox entries kept in memory per resident agent; the rest stay in RocksDB
// until these are consumed.
constexpr std::size_t max_cached_entries = 256;
// Ticks committed together at most.
constexpr std::size_t max_batch = 64;

// A batch of ticks counted as running (node_core::begin_batch) until it is
// released or the actor goes: node::drain waits for it.
class running_batch {
public:
  running_batch() = default;
  explicit running_batch(node_core* core) : core_{core} {}
  running_batch(running_batch&& o) noexcept : core_{std::exchange(o.core_, nullptr)} {}
  running_batch& operator=(running_batch&& o) noexcept {
    end();
    core_ = std::exchange(o.core_, nullptr);
    return *this;
  }
  ~running_batch() { end(); }
  void end() {
    if (auto* c = std::exchange(core_, nullptr))
      c->end_batch();
  }

private:
  node_core* core_ = nullptr;
};

// FIFO of cached inbox entries or direct triggers. Unlike std::deque, an
// empty one owns no memory, which matters with 100,000 resident agents.
template <class T>
class fifo {
public:
  bool empty() const noexcept { return head_ == items_.size(); }
  std::size_t size() const noexcept { return items_.size() - head_; }
  T& front() { return items_[head_]; }
  T& operator[](std::size_t i) { return items_[head_ + i]; }
  void push_back(T e) { items_.push_back(std::move(e)); }
  void pop_front() {
    ++head_;
    if (head_ == items_.size()) {
      items_ = {};
      head_ = 0;
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

private:
  std::vector<T> items_;
  std::size_t head_ = 0;
};

struct agent_actor_state {
  node_core* core = nullptr;
  std::shared_ptr<residency> res;
  std::unique_ptr<agent_host> host;
  fifo<storage::inbox_entry> pending;
  std::uint64_t highest_seen = 0;  // highest inbox seq read or notified
  // Direct triggers waiting (node::run_trigger), how many came, and the
  // number of the next one's seq.
  fifo<direct_ptr> direct;
  std::uint64_t directs_seen = 0;
  std::uint64_t direct_next = 1;
  // The last attempt failed and is retried first: a direct trigger's (true)
  // or an inbox entry's (false).
  std::optional<bool> retrying_direct;
  bool more_in_store = false;      // entries beyond the cache wait in RocksDB
  bool retry_wait = false;
  bool want_hibernate = false;
  std::uint64_t token = 0;
  // The batch whose write is with the committer (empty owns no memory).
  std::vector<tick_attempt> in_flight;
  // Counts from the batch's start to its release (node::drain).
  running_batch running;
  std::chrono::steady_clock::time_point last_active;
  // Start times of the ticks of the last minute (ticks_per_minute).
  std::deque<std::chrono::steady_clock::time_point> recent;
  bool throttle_wait = false;
  // The last throttle was reported (node_core::limit_hit) and not ended yet.
  bool throttled = false;

  static inline const char* name = "ticktock.agent";
};

using self_ptr = caf::stateful_actor<agent_actor_state>*;

void touch(self_ptr self) {
  auto& st = self->state;
  st.last_active = std::chrono::steady_clock::now();
  if (st.res)
    st.res->last_active_ns = st.last_active.time_since_epoch().count();
}

void refill(self_ptr self) {
  auto& st = self->state;
  if (st.pending.size() >= max_cached_entries) {
    st.more_in_store = true;  // read again once the cache drains
    return;
  }
  auto entries = st.core->store->read_inbox(st.host->id(), st.highest_seen + 1,
                                            max_cached_entries - st.pending.size() + 1);
  st.more_in_store = entries.size() > max_cached_entries - st.pending.size();
  if (st.more_in_store)
    entries.pop_back();
  for (auto& e : entries) {
    st.highest_seen = std::max(st.highest_seen, e.seq);
    st.pending.push_back(std::move(e));
  }
}

bool idle(self_ptr self) {
  auto& st = self->state;
  return st.in_flight.empty() && !st.retry_wait && st.pending.empty() && !st.more_in_store
         && st.direct.empty();
}

// Returns true if the actor quit.
bool try_hibernate(self_ptr self) {
  auto& st = self->state;
  if (!idle(self)
      || !st.core->dir->try_hibernate(st.host->id(), st.highest_seen, st.directs_seen, st.res.get()))
    return false;
  self->quit();
  return true;
}

std::chrono::milliseconds backoff(const node_options& o, std::uint32_t attempt) {
  auto ms = o.retry_backoff.count() << std::min<std::uint32_t>(attempt > 0 ? attempt - 1 : 0, 16);
  return std::chrono::milliseconds{std::min<std::int64_t>(ms, 30'000)};
}

void maybe_tick(self_ptr self) {
  auto& st = self->state;
  if (!st.in_flight.empty() || st.retry_wait || st.throttle_wait)
    return;
  if (st.pending.empty() && st.more_in_store)
    refill(self);
  if (st.pending.empty() && st.direct.empty()) {
    // Idle. The directory's sweeper sends ctl_op::idle after idle_timeout.
    if (st.want_hibernate)
      try_hibernate(self);
    return;
  }
  // Draining (the node is stopping): the triggers wait in the inbox.
  if (!st.core->begin_batch())
    return;
  running_batch running{st.core};
  auto tpm = st.host->limits().ticks_per_minute;
  if (tpm != 0) {
    auto now = std::chrono::steady_clock::now();
    while (!st.recent.empty() && now - st.recent.front() >= std::chrono::minutes{1})
      st.recent.pop_front();
    while (st.recent.size() > tpm)
      st.recent.pop_front();
    if (st.recent.size() == tpm) {
      // Over the limit: the trigger waits (it stays in the durable inbox).
      auto wait = st.recent.front() + std::chrono::minutes{1} - now;
      st.throttle_wait = true;
      st.throttled = true;
      st.host->mark_throttled();
      st.core->limit_hit(st.host->id(), "ticks_per_minute",
                         st.core->clock->now()
                           + std::chrono::duration_cast<duration>(wait));
      self->delayed_send(self, std::chrono::duration_cast<std::chrono::milliseconds>(wait)
                                 + std::chrono::milliseconds{1},
                         ctl_atom::value, ctl_op::throttle_end);
      return;
    }
    st.recent.push_back(now);
  }
  if (st.throttled) {  // ticking again, maybe before the end it reported
    st.throttled = false;
    st.core->throttle_over(st.host->id());
  }
  st.running = std::move(running);
  touch(self);
  // A throttled agent runs one tick per batch, so each is counted above.
  auto most = tpm != 0 ? std::size_t{1} : max_batch;
  storage::tick_batch_op batch;
  bool chain = false;
  // Triggers run oldest first across both queues (a retried one first);
  // release() pops them in the same order.
  std::size_t from_inbox = 0, from_direct = 0;
  do {
    bool has_inbox = from_inbox < st.pending.size();
    bool has_direct = from_direct < st.direct.size();
    if (!has_inbox && !has_direct)
      break;
    bool direct = has_direct
                  && (!has_inbox
                      || (st.in_flight.empty() && st.retrying_direct
                            ? *st.retrying_direct
                            : st.direct[from_direct]->entry.time < st.pending[from_inbox].time));
    auto& entry = direct ? st.direct[from_direct++]->entry : st.pending[from_inbox++];
    st.in_flight.push_back(st.host->run(entry));
    auto& a = st.in_flight.back();
    st.host->advance(a);
    chain = agent_host::chainable(a);
    batch.ticks.push_back(std::move(a.op));
  } while (chain && st.in_flight.size() < most);
  st.host->seal(batch.ticks);  // one signature for the batch
  for (auto& t : batch.ticks)   // none lands once its agent is being deleted
    t.retired = retired_flag(st.res);
  auto token = ++st.token;
  storage::write_op op;
  if (batch.ticks.size() == 1)
    op = std::move(batch.ticks.front());
  else
    op = std::move(batch);
  auto* core = st.core;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  // May write the group here, on this worker (async durability): the actor
  // holds no lock, and its own result arrives as a message all the same.
  bool queued = core->commits->submit(
    std::move(op),
    [core, me, token](storage::op_result& r) {
      // Wake recipients first, then tell this actor.
      if (!r.err)
        core->deliver(r);
      caf::anon_send(me, commit_atom::value, token, r.err ? r.err.to_string() : std::string{});
    },
    true);
  if (!queued) {
    // Shutting down: the entries stay in the inbox.
    st.in_flight = {};
    st.host->rolled_back();
    st.running.end();
  }
}

// Releases the effects of one committed attempt (`first`: the first of its
// write). False if its trigger is to be retried (the attempt failed).
bool release(self_ptr self, tick_attempt& attempt, bool first) {
  auto& st = self->state;
  if (attempt.earliest_alarm && st.core->alarms)
    st.core->alarms->hint(*attempt.earliest_alarm);
  for (auto& j : attempt.jobs)
    if (j.status == "queued" && st.core->services)
      st.core->services->start(j);
  for (auto& l : attempt.limits)
    if (l != "ticks_per_minute")  // counted when the wait began
      st.core->limit_hit(st.host->id(), l);
  tick_event ev;
  ev.agent = st.host->id();
  ev.tick = attempt.tick;
  ev.attempt = attempt.attempt;
  ev.kind = attempt.kind;
  ev.trigger_seq = attempt.trigger_seq;
  ev.request_id = std::move(attempt.request_id);
  ev.outcome = attempt.outcome;
  ev.error = std::move(attempt.error);
  ev.outbox_next = attempt.outbox_next;
  ev.outbox_count = attempt.outbox_count;
  ev.reply = std::move(attempt.reply);
  ev.ws = std::move(attempt.ws);
  ev.refused = std::move(attempt.refused);
  ev.reply_deferred = attempt.reply_deferred;
  ev.late_replies = std::move(attempt.late_replies);
  ev.jobs = std::move(attempt.jobs);
  ev.limits = std::move(attempt.limits);
  ev.latency = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - attempt.started);
  // Observers run before the entry counts as consumed, so whoever returns
  // from wait_idle sees their effects (metrics, logs).
  st.core->notify(ev, first);
  bool direct = storage::is_direct_seq(attempt.trigger_seq);
  if (attempt.outcome == storage::outcome::failed) {
    st.retry_wait = true;
    st.retrying_direct = direct;
    self->delayed_send(self, backoff(st.core->options, attempt.attempt), ctl_atom::value,
                      ctl_op::retry);
    return false;
  }
  st.retrying_direct.reset();
  if (direct) {
    auto d = std::move(st.direct.front());
    st.direct.pop_front();
    d->finish(std::move(ev));
  } else {
    st.pending.pop_front();
    st.core->consumed(1);
  }
  return true;
}

void on_commit(self_ptr self, std::uint64_t token, const std::string& err) {
  auto& st = self->state;
  if (st.in_flight.empty() || token != st.token)
    return;
  auto batch = std::move(st.in_flight);
  st.in_flight = {};
  if (!err.empty() && st.res && st.res->retired.load(std::memory_order_acquire)) {
    // Its agent is being deleted: no retry; the terminate stops this actor.
    st.host->rolled_back();
    st.retry_wait = true;
    st.running.end();
    return;
  }
  if (!err.empty()) {
    // The write failed: nothing of the batch was committed. Retry it.
    st.host->rolled_back();
    st.retry_wait = true;
    st.running.end();
    self->delayed_send(self, backoff(st.core->options, batch.front().attempt), ctl_atom::value,
                      ctl_op::retry);
    return;
  }
  st.host->committed();
  for (std::size_t i = 0; i < batch.size(); ++i)
    if (!release(self, batch[i], i == 0))
      break;  // only the last attempt of a batch can have failed
  st.running.end();
  maybe_tick(self);
}

// The ticks_per_minute window counts every tick of the last minute, whenever
// the limit was set: an agent loaded by a restarted node (or woken from
// hibernation), or whose limits change, counts the ticks its trajectory
// records in the last minute (at most the last 10,000), so that neither a
// restart nor a new limit resets it. Ticks whose write is still in flight are
// not read back: they count from when they started.
void seed_tick_window(self_ptr self) {
  auto& st = self->state;
  st.recent.clear();
  auto tpm = st.host->limits().ticks_per_minute;
  if (tpm == 0)
    return;
  const auto& meta = st.host->meta();
  auto committed = meta.trajectory_next - st.in_flight.size();
  auto now = st.core->clock->now();
  auto steady = std::chrono::steady_clock::now();
  // Nothing to count when the last record (an attempt that failed too, which
  // meta.last_tick does not see) is older than a minute.
  auto recent = [&] {
    auto last = st.core->store->read_trajectory(meta.id, committed - 1, 1);
    return !last.empty() && now - last.front().start < std::chrono::minutes{1};
  };
  if (committed != 0 && recent()) {
    auto n = std::min<std::uint64_t>({tpm, committed, 10000});
    for (auto& r : st.core->store->read_trajectory(meta.id, committed - n, n)) {
      auto age = now - r.start;
      if (age >= duration::zero() && age < std::chrono::minutes{1})
        st.recent.push_back(steady - std::chrono::duration_cast<std::chrono::steady_clock::duration>(age));
    }
  }
  for (auto& a : st.in_flight)
    st.recent.push_back(a.started);
}

// LOAD: meta, state and pending inbox. False if the agent cannot run (it is
// then marked errored).
bool load(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto& store = *st.core->store;
  auto meta = store.get_agent(id);
  std::string problem;
  bool stored_bad = false;  // what is stored, not the type's code or a passing failure
  if (!meta) {
    problem = meta.error_value().to_string();
    stored_bad = meta.error_value().code() == errc::corrupt_record;
  } else if (meta->errored) {
    problem = meta->error;
    stored_bad = true;
  }
  // (An errored mark in the meta column family is known to the directory,
  // which never activates such an agent.)
  if (problem.empty()) {
    auto host = load_agent(st.core->registry, store, *st.core->keys, *st.core->clock,
                           std::move(*meta), st.core->options.limits, st.core->gate.get());
    if (host) {
      st.host = std::move(*host);
    } else {
      problem = host.error_value().to_string();
      stored_bad = host.error_value().code() == errc::corrupt_record;
    }
  }
  if (!problem.empty()) {
    st.host.reset();
    // An agent deleted meanwhile is not errored, it is gone: a mark would
    // land on a later agent of the same id.
    bool retired = st.res && st.res->retired.load(std::memory_order_acquire);
    // Only records that do not decode are marked in the store. A type whose
    // factory or load_state throws, a storage failure or a master key that
    // does not open the agent's keys is errored until the node stops: with
    // the cause fixed (the plugin rebuilt, the disk or key back), the agent
    // loads again after a restart.
    if (!retired && (meta || meta.error_value().code() != errc::not_found))
      st.core->mark_errored(id, problem, retired_flag(st.res), stored_bad);
    return false;
  }
  st.direct_next = st.host->meta().direct_next;
  seed_tick_window(self);
  refill(self);
  return true;
}

void on_ctl(self_ptr self, ctl_op op) {
  auto& st = self->state;
  switch (op) {
    case ctl_op::wake:
      break;
    case ctl_op::retry:
      st.retry_wait = false;
      break;
    case ctl_op::throttle_end:
      st.throttle_wait = false;
      break;
    case ctl_op::limits_changed:
      st.throttle_wait = false;
      seed_tick_window(self);
      break;
    case ctl_op::idle:
      if (std::chrono::steady_clock::now() - st.last_active >= st.core->options.idle_timeout)
        try_hibernate(self);
      return;
    case ctl_op::hibernate:
      st.want_hibernate = true;
      break;
  }
  maybe_tick(self);
}

caf::behavior agent_actor(self_ptr self, node_core* core, std::string id,
                          std::shared_ptr<residency> res) {
  auto& st = self->state;
  st.core = core;
  st.res = std::move(res);
  touch(self);
  if (!load(self, id)) {
    core->dir->actor_down(id, st.res.get());
    self->quit();
    return {};
  }
  self->send(self, ctl_atom::value, ctl_op::wake);
  return {
    [=](notify_atom, std::uint64_t seq, const entry_ptr& entry) {
      auto& st = self->state;
      if (seq <= st.highest_seen)
        return;
      if (seq == st.highest_seen + 1 && entry && !st.more_in_store
          && st.pending.size() < max_cached_entries) {
        st.pending.push_back(*entry);
        st.highest_seen = seq;
      } else {
        refill(self);
      }
      maybe_tick(self);
    },
    [=](direct_atom, const direct_ptr& msg) {
      auto d = msg;
      auto& st = self->state;
      ++st.directs_seen;
      auto limit = st.host->limits().inbox_limit;
      if (limit != 0 && st.direct.size() >= limit) {
        st.core->limit_hit(st.host->id(), "inbox_limit");  // refused, as at a full inbox
        d->finish(error{errc::inbox_full, "agent '" + st.host->id() + "' has "
                                            + std::to_string(st.direct.size())
                                            + (st.direct.size() == 1 ? " direct trigger"
                                                                     : " direct triggers")
                                            + " waiting (limit "
                                            + std::to_string(limit) + ")"});
        return;
      }
      d->entry.seq = storage::direct_seq(st.direct_next++);
      st.direct.push_back(std::move(d));
      maybe_tick(self);
    },
    [=](commit_atom, std::uint64_t token, const std::string& err) { on_commit(self, token, err); },
    [=](ctl_atom, ctl_op op) { on_ctl(self, op); },
  };
}

}  // namespace

caf::actor spawn_agent_actor(node_core& core, const std::string& id,
                             std::shared_ptr<residency> res) {
  return core.system->spawn(agent_actor, &core, id, std::move(res));
}

}  // namespace ticktock::detail
