// The CAF actor hosting one resident agent. It owns the agent's tick engine
// and runs one tick at a time: take the next inbox entry, run on_trigger,
// hand the write to the committer, and only after the commit release the
// effects and take the next entry. Idle agents hibernate through the
// directory's handshake.

#include <caf/all.hpp>

#include <deque>

#include "agent_host.hpp"
#include "messages.hpp"
#include "node_core.hpp"

namespace ticktock::detail {

namespace {

// Inbox entries kept in memory per resident agent; the rest stay in RocksDB
// until these are consumed.
constexpr std::size_t max_cached_entries = 256;

struct agent_actor_state {
  node_core* core = nullptr;
  std::string id;
  std::shared_ptr<residency> res;
  std::unique_ptr<agent_host> host;
  std::deque<storage::inbox_entry> pending;
  std::uint64_t highest_seen = 0;  // highest inbox seq read or notified
  bool more_in_store = false;      // entries beyond the cache wait in RocksDB
  std::optional<tick_attempt> in_flight;
  std::uint64_t token = 0;
  bool retry_wait = false;
  bool idle_timer = false;
  bool want_hibernate = false;
  std::chrono::steady_clock::time_point last_active;

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
  auto entries = st.core->store->read_inbox(st.id, st.highest_seen + 1,
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
  return !st.in_flight && !st.retry_wait && st.pending.empty() && !st.more_in_store;
}

// Returns true if the actor quit.
bool try_hibernate(self_ptr self) {
  auto& st = self->state;
  if (!idle(self) || !st.core->dir->try_hibernate(st.id, st.highest_seen))
    return false;
  self->quit();
  return true;
}

void arm_idle_timer(self_ptr self) {
  auto& st = self->state;
  if (st.idle_timer)
    return;
  st.idle_timer = true;
  self->delayed_send(self, st.core->options.idle_timeout, idle_atom::value);
}

std::chrono::milliseconds backoff(const node_options& o, std::uint32_t attempt) {
  auto ms = o.retry_backoff.count() << std::min<std::uint32_t>(attempt > 0 ? attempt - 1 : 0, 16);
  return std::chrono::milliseconds{std::min<std::int64_t>(ms, 30'000)};
}

void maybe_tick(self_ptr self) {
  auto& st = self->state;
  if (st.in_flight || st.retry_wait)
    return;
  if (st.pending.empty() && st.more_in_store)
    refill(self);
  if (st.pending.empty()) {
    if (st.want_hibernate)
      try_hibernate(self);
    else
      arm_idle_timer(self);
    return;
  }
  touch(self);
  st.in_flight = st.host->run(st.pending.front());
  auto token = ++st.token;
  auto op = std::move(st.in_flight->op);
  auto* core = st.core;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  bool queued = core->commits->submit(std::move(op), [core, me, token](storage::op_result& r) {
    // Committer thread: wake recipients first, then tell this actor.
    if (!r.err)
      core->deliver(r);
    caf::anon_send(me, commit_atom::value, token, r.err ? r.err.to_string() : std::string{});
  });
  if (!queued)
    st.in_flight.reset();  // shutting down; the entry stays in the inbox
}

void on_commit(self_ptr self, std::uint64_t token, const std::string& err) {
  auto& st = self->state;
  if (!st.in_flight || token != st.token)
    return;
  auto attempt = std::move(*st.in_flight);
  st.in_flight.reset();
  if (!err.empty()) {
    // The write failed: nothing was committed. Retry the same trigger.
    st.host->rolled_back();
    st.retry_wait = true;
    self->delayed_send(self, backoff(st.core->options, attempt.attempt), retry_atom::value);
    return;
  }
  st.host->committed(attempt);
  if (attempt.earliest_alarm && st.core->alarms)
    st.core->alarms->hint(*attempt.earliest_alarm);
  tick_event ev{st.id,
                st.host->meta().tick_count,
                attempt.attempt,
                attempt.kind,
                attempt.trigger_seq,
                attempt.outcome,
                attempt.error,
                {}};
  if (attempt.outcome == storage::outcome::failed) {
    st.retry_wait = true;
    self->delayed_send(self, backoff(st.core->options, attempt.attempt), retry_atom::value);
  } else {
    st.pending.pop_front();
    st.core->consumed(1);
  }
  st.core->notify(ev);
  maybe_tick(self);
}

// LOAD: meta, errored mark, state and pending inbox. False if the agent
// cannot run (it is then marked errored).
bool load(self_ptr self) {
  auto& st = self->state;
  auto& store = *st.core->store;
  auto meta = store.get_agent(st.id);
  std::string problem;
  if (!meta)
    problem = meta.error_value().to_string();
  else if (meta->errored)
    problem = meta->error;
  else if (auto mark = store.errored_mark(st.id))
    problem = *mark;
  if (problem.empty()) {
    auto agent = st.core->registry.make(meta->type);
    if (!agent) {
      problem = st.core->registry.check(meta->type).to_string();
    } else {
      st.host = std::make_unique<agent_host>(store, *st.core->clock, std::move(*meta),
                                             std::move(agent), st.core->options.limits);
      if (auto err = st.host->load())
        problem = err.to_string();
    }
  }
  if (!problem.empty()) {
    st.core->mark_errored(st.id, problem);
    return false;
  }
  refill(self);
  return true;
}

caf::behavior agent_actor(self_ptr self, node_core* core, std::string id,
                          std::shared_ptr<residency> res) {
  auto& st = self->state;
  st.core = core;
  st.id = std::move(id);
  st.res = std::move(res);
  touch(self);
  if (!load(self)) {
    core->dir->actor_down(st.id);
    self->quit();
    return {};
  }
  self->send(self, wake_atom::value);
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
    [=](commit_atom, std::uint64_t token, const std::string& err) { on_commit(self, token, err); },
    [=](retry_atom) {
      self->state.retry_wait = false;
      maybe_tick(self);
    },
    [=](wake_atom) { maybe_tick(self); },
    [=](idle_atom) {
      auto& st = self->state;
      st.idle_timer = false;
      if (!idle(self))
        return;
      auto quiet = std::chrono::steady_clock::now() - st.last_active;
      if (quiet >= st.core->options.idle_timeout && try_hibernate(self))
        return;
      arm_idle_timer(self);
    },
    [=](hibernate_atom) {
      self->state.want_hibernate = true;
      try_hibernate(self);
    },
  };
}

}  // namespace

caf::actor spawn_agent_actor(node_core& core, const std::string& id,
                             std::shared_ptr<residency> res) {
  return core.system->spawn(agent_actor, &core, id, std::move(res));
}

}  // namespace ticktock::detail
