#include "ticktock/actors/node.hpp"

#include <caf/all.hpp>

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <thread>

#include "agent_host.hpp"
#include "messages.hpp"
#include "node_core.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"
#include "ticktock/runtime/detail/cpus.hpp"
#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/http.hpp"
#include "ticktock/runtime/nostr_agent.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock {

std::string_view to_string(agent_state s) noexcept {
  switch (s) {
    case agent_state::active: return "active";
    case agent_state::hibernated: return "hibernated";
    case agent_state::errored: return "errored";
    case agent_state::terminated: return "terminated";
  }
  return "unknown";
}

namespace detail {

void node_core::deliver(storage::op_result& r) {
  for (auto& d : r.delivered) {
    {
      std::lock_guard<std::mutex> guard{idle_mtx};
      ++outstanding;
    }
    auto seq = d.entry.seq;
    if (!dir->deliver(d.agent, seq, std::make_shared<const storage::inbox_entry>(std::move(d.entry))))
      consumed(1);
  }
}

// Dropped unanswered: by the agent's actor when it stopped (removed, or it
// could not load), or before it reached one (the node closing). Answers why.
direct_trigger::~direct_trigger() {
  if (!done_)
    return;
  if (core_.closing) {
    finish(error{errc::shutting_down, "the node is shutting down"});
    return;
  }
  auto v = core_.dir->lookup(agent_);
  if ((actor_retired && actor_retired->load(std::memory_order_acquire)) || (v && v->retiring))
    finish(error{errc::not_found, "agent '" + agent_ + "' was deleted before its tick for this "
                                  "request committed"});
  else if (!v)
    finish(error{errc::not_found, "no agent '" + agent_ + "'"});
  else if (v->errored)
    finish(error{errc::agent_errored, "agent '" + agent_ + "' is errored: " + v->error});
  else
    finish(error{errc::shutting_down,
                 "the agent stopped before its tick for this request committed"});
}

void direct_trigger::finish(expected<tick_event> r) {
  if (!done_)
    return;
  auto done = std::move(done_);
  done_ = nullptr;
  done(std::move(r));
  core_.consumed(1);
}

void node_core::consumed(std::int64_t n) {
  bool now_idle = false;
  {
    std::lock_guard<std::mutex> guard{idle_mtx};
    outstanding -= n;
    now_idle = outstanding <= 0;
  }
  if (now_idle)
    idle_cv.notify_all();
}

bool node_core::begin_batch() {
  running.fetch_add(1);
  if (!draining.load())
    return true;
  end_batch();
  return false;
}

void node_core::end_batch() {
  if (running.fetch_sub(1) == 1 && draining.load()) {
    std::lock_guard<std::mutex> guard{idle_mtx};  // drain() is waiting or about to check
    idle_cv.notify_all();
  }
}

void node_core::mark_errored(const std::string& id, const std::string& reason,
                             std::shared_ptr<const std::atomic<bool>> retired, bool durable) {
  dir->set_errored(id, reason);
  if (durable)
    commits->submit(storage::mark_errored_op{id, reason, std::move(retired)}, nullptr);
  consumed(static_cast<std::int64_t>(store->inbox_depth(id)));
}

void node_core::sweep_loop() {
  detail::name_this_thread("tt-sweep");
  auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(options.idle_timeout);
  auto interval = std::clamp<std::chrono::nanoseconds>(timeout / 4, std::chrono::milliseconds{1},
                                                       std::chrono::seconds{1});
  std::unique_lock<std::mutex> lock{sweeper_mtx};
  while (!sweeper_cv.wait_for(lock, interval, [&] { return sweeper_stop; })) {
    auto now = std::chrono::steady_clock::now().time_since_epoch();
    dir->sweep_idle((now - timeout).count());
  }
}

void node_core::limit_hit(const std::string& agent, const std::string& limit,
                          std::optional<time_point> throttled_until) {
  {
    std::lock_guard<std::mutex> guard{limits_mtx};
    auto& st = limit_states[agent];
    ++st.hits[limit];
    if (throttled_until)
      st.throttled_until = *throttled_until;
  }
  std::lock_guard<std::mutex> guard{metrics_mtx};
  if (limit == "ticks_per_minute")
    ++metrics.throttled;
  else if (limit == "inbox_limit")
    ++metrics.inbox_overflows;
}

void node_core::throttle_over(const std::string& agent) {
  std::lock_guard<std::mutex> guard{limits_mtx};
  if (auto i = limit_states.find(agent); i != limit_states.end())
    i->second.throttled_until = time_point{};
}

void node_core::notify(const tick_event& ev, bool first_of_write) {
  {
    std::lock_guard<std::mutex> guard{metrics_mtx};
    auto& m = metrics;
    if (first_of_write)
      ++m.tick_writes;
    switch (ev.outcome) {
      case storage::outcome::ok: ++m.ticks_ok; break;
      case storage::outcome::failed: ++m.ticks_failed; break;
      case storage::outcome::deadlettered: ++m.deadlettered; break;
    }
    for (auto& l : ev.limits) {
      if (l == "tick_wall_time")
        ++m.slow_ticks;
      else if (l == "state_size")
        ++m.state_too_large;
      else if (l == "outbox_retention")
        ++m.outbox_trimmed;
    }
    for (auto& j : ev.jobs) {
      if (j.status == "denied")
        ++m.decisions_deny;
      else if (j.status == "awaiting_approval")
        ++m.decisions_approval;
      else
        ++m.decisions_allow;
    }
    if (ev.refused == "bad_signature")
      ++m.bad_signatures;
    else if (ev.refused == "undecryptable")
      ++m.undecryptable;
    auto us = static_cast<std::uint64_t>(ev.latency.count());
    for (std::size_t i = 0; i < m.bounds_us.size(); ++i)
      if (us <= m.bounds_us[i])
        ++m.latency_buckets[i];
    m.latency_sum_us += us;
    ++m.latency_count;
  }
  std::shared_lock<std::shared_mutex> guard{observer_mtx};
  for (auto& [id, f] : observers)
    f(ev);
}

}  // namespace detail

namespace {

// Submits `op` and waits for its result.
storage::op_result commit_and_wait(detail::node_core& core, storage::write_op op,
                                   std::function<void(storage::op_result&)> on_done = nullptr) {
  std::promise<storage::op_result> done;
  auto f = done.get_future();
  bool queued = core.commits->submit(std::move(op), [&done, on_done](storage::op_result& r) {
    if (on_done)
      on_done(r);
    done.set_value(std::move(r));
  });
  if (!queued)
    return storage::op_result{error{errc::shutting_down, "the node is shutting down"}};
  return f.get();
}

// Commits a service op that queues triggers (an approval's decision, a
// cancelled job's result) and delivers them; they count as outstanding work
// (wait_idle) from before the commit.
error commit_delivering(detail::node_core& core, storage::service_op op) {
  {
    std::lock_guard<std::mutex> idle{core.idle_mtx};
    ++core.outstanding;
  }
  auto r = commit_and_wait(core, std::move(op), [&core](storage::op_result& r) {
    if (!r.err)
      core.deliver(r);
  });
  core.consumed(1);
  return r.err;
}

}  // namespace

node::node(std::unique_ptr<detail::node_core> core) : core_(std::move(core)) {}

node::~node() { shutdown(); }

expected<std::unique_ptr<node>> node::open(node_options options, agent_registry registry) {
  auto core = std::make_unique<detail::node_core>();
  core->options = std::move(options);
  core->registry = std::move(registry);
  auto& opts = core->options;
  core->clock = opts.clock ? opts.clock : std::make_shared<system_clock>();
  if (opts.limits.max_attempts == 0)
    return error{errc::invalid_argument, "max_attempts must be at least 1"};

  storage::store_options so;
  so.dir = opts.data_dir;
  so.durability = opts.durability;
  so.faults = opts.faults;
  so.idempotency_ttl = opts.idempotency_ttl;
  so.clock = core->clock;
  // The core outlives its store (the store is one of its members).
  so.on_inbox_overflow = [c = core.get()](const std::string& agent) { c->limit_hit(agent, "inbox_limit"); };
  auto st = storage::store::open(so);
  if (!st)
    return st.error_value();
  core->store = std::move(*st);
  auto key_file = opts.master_key_file.empty() ? opts.data_dir / "master.key" : opts.master_key_file;
  auto master = detail::open_master_key(*core->store, key_file);
  if (!master)
    return master.error_value();
  core->keys = std::make_unique<detail::keyring>(*core->store, std::move(*master));
  core->gate = std::make_unique<detail::gate>(*core->store, core->options);

  core->caf_config = std::make_unique<caf::actor_system_config>();
  auto threads = opts.threads ? opts.threads : detail::usable_cpus();
  core->caf_config->set("scheduler.max-threads", threads);
  // CAF's default idles a worker in 50 us sleeps for 25 ms before it parks on
  // a condition variable; every hand-off to a napping worker then waits for
  // the nap. Skip the napping phase: spin briefly, then park (an enqueue
  // wakes a parked worker at once).
  core->caf_config->set("work-stealing.moderate-poll-attempts", 0);
  core->caf_config->add_error_category(
    caf::atom("ticktock"), [](std::uint8_t code, caf::atom_value, const caf::message& ctx) {
      auto s = std::string{to_string(static_cast<errc>(code))};
      if (ctx.match_elements<std::string>())
        s += ": " + ctx.get_as<std::string>(0);
      return s;
    });
  if (opts.configure_caf) {
    try {
      opts.configure_caf(*core->caf_config);
    } catch (const std::exception& e) {
      return error{errc::invalid_argument, std::string{"configure_caf: "} + e.what()};
    }
  }
  core->system = std::make_unique<caf::actor_system>(*core->caf_config);
  core->commits = std::make_unique<detail::committer>(
    *core->store, opts.max_commit_group, opts.durability == storage::durability::async);
  auto* raw = core.get();
  core->dir = std::make_unique<detail::directory>(
    [raw](const std::string& id, std::shared_ptr<detail::residency> res) {
      return detail::spawn_agent_actor(*raw, id, std::move(res));
    },
    opts.max_resident);

  std::vector<std::string> errored;
  core->store->for_each_agent([&](const storage::store::agent_summary& a) {
    std::string reason;
    if (a.errored) {
      auto mark = core->store->errored_mark(a.id);
      reason = mark ? *mark : "agent record is corrupt or marked errored";
    } else if (auto unknown = core->registry.check(a.type)) {
      // Errored from the start, so that no send is accepted for it, but not
      // marked in the store: with its type registered again (its plugin
      // loaded) the agent runs as before.
      reason = unknown.to_string();
    }
    if (!reason.empty())
      errored.push_back(a.id);
    core->dir->add(a.id, a.type, !reason.empty(), reason);
    return true;
  });
  std::uint64_t total = 0;
  auto with_inbox = core->store->agents_with_inbox(&total);
  core->outstanding = static_cast<std::int64_t>(total);
  for (auto& id : errored)
    core->outstanding -= static_cast<std::int64_t>(core->store->inbox_depth(id));

  storage::fire_alarms_op base;
  base.missed_before = core->clock->now();
  base.policy = opts.missed_alarms;
  // The agent's own limit (fs/limits), as for a send from outside.
  base.depth_limit = [gate = core->gate.get()](const std::string& agent) {
    return gate->limits_for(agent).inbox_limit;
  };
  core->alarms = std::make_unique<detail::scheduler>(
    *core->clock, *core->store,
    [raw](const storage::fire_alarms_op& op) {
      return commit_and_wait(*raw, op, [raw](storage::op_result& r) {
        if (!r.err)
          raw->deliver(r);
      });
    },
    base);
  core->alarms->start();

  core->services = std::make_unique<detail::service_runner>(*core);
  core->services->reconcile();

  for (auto& id : with_inbox)
    core->dir->wake(id);
  core->sweeper = std::thread([raw] { raw->sweep_loop(); });
  auto n = std::unique_ptr<node>(new node(std::move(core)));
  // No WebSocket connection outlives the process that held it: one whose
  // open an agent was given and whose close was not queued (the process was
  // killed) gets its close now, so that the agent can keep count.
  for (auto& [agent, connection] : n->core_->store->open_ws_connections()) {
    send_options o;
    o.kind = trigger_kind::ws;
    o.ignore_depth_limit = true;
    n->send_async(agent, ws_event{ws_event::kind::close, connection, {}, false}.encode(), o, {});
  }
  return n;
}

void node::shutdown() {
  if (!core_ || core_->closing.exchange(true))
    return;
  core_->alarms->stop();
  {
    std::lock_guard<std::mutex> guard{core_->sweeper_mtx};
    core_->sweeper_stop = true;
  }
  core_->sweeper_cv.notify_all();
  core_->sweeper.join();
  core_->dir->close();
  for (auto& a : core_->dir->resident_actors())
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  if (core_->services)
    core_->services->stop();  // running jobs end as cancelled, reservations released
  core_->commits->stop();
  core_->system.reset();
  core_->caf_config.reset();
  core_->store.reset();
}

expected<std::string> node::checked(const std::string& id) const {
  if (auto err = check_agent_id(id))
    return err;
  if (core_->closing)
    return error{errc::shutting_down, "the node is shutting down"};
  if (!core_->dir->known(id))
    return error{errc::not_found, "no agent '" + id + "'"};
  return id;
}

// -- lifecycle ---------------------------------------------------------------

error node::create(const std::string& id, const std::string& type, std::string config,
                   std::string request_id) {
  if (auto err = check_agent_id(id))
    return err;
  if (auto err = core_->registry.check(type))
    return err;
  if (config.size() > core_->options.limits.max_message_bytes)
    return error{errc::message_too_large, "config of " + std::to_string(config.size())
                                            + " bytes exceeds the limit of "
                                            + std::to_string(core_->options.limits.max_message_bytes)};
  std::lock_guard<std::mutex> lifecycle{core_->lifecycle(id)};
  if (core_->dir->known(id))
    return error{errc::already_exists, "agent '" + id + "' already exists"};
  storage::create_op op;
  op.meta.id = id;
  op.meta.type = type;
  op.meta.config = config;
  op.meta.created = core_->clock->now();
  op.init.kind = trigger_kind::init;
  op.init.time = op.meta.created;
  op.init.payload = std::move(config);
  op.init.request_id = std::move(request_id);
  op.identity = core_->keys->seal(identity::agent_keys::generate(), op.meta.created);
  auto* core = core_.get();
  auto r = commit_and_wait(*core, std::move(op), [core, id, type](storage::op_result& r) {
    if (r.err)
      return;
    core->dir->add(id, type, false);
    {
      std::lock_guard<std::mutex> guard{core->terminated_mtx};
      core->terminated.erase(id);
    }
    core->deliver(r);
  });
  return r.err;
}

error node::terminate(const std::string& id) {
  std::lock_guard<std::mutex> lifecycle{core_->lifecycle(id)};
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto depth = core_->store->inbox_depth(id);
  // From here on its actor writes nothing: a tick of it committing after the
  // terminate would land on the next agent of this id (create, import).
  core_->dir->retire(id);
  auto r = commit_and_wait(*core_, storage::terminate_op{id});
  if (r.err) {
    if (auto actor = core_->dir->unretire(id))
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    return r.err;
  }
  core_->keys->forget(id);
  for (auto& key : storage::agent_setting_names(id))
    core_->gate->install(key, std::nullopt);
  {
    // Its limit hits and throttle are its own: a next agent of the id starts clean.
    std::lock_guard<std::mutex> guard{core_->limits_mtx};
    core_->limit_states.erase(id);
  }
  if (auto actor = core_->dir->remove(id))
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  // Its running jobs have no one to report to, and its container sessions'
  // files go with it (a later agent of the same id starts without them).
  if (core_->services)
    core_->services->cancel_all("agent_terminated", id);
  std::error_code ec;
  std::filesystem::remove_all(core_->options.containers_root() / id, ec);
  core_->consumed(static_cast<std::int64_t>(depth));
  std::lock_guard<std::mutex> guard{core_->terminated_mtx};
  core_->terminated.insert(id);
  return {};
}

error node::hibernate(const std::string& id) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  core_->dir->request_hibernate(id);
  return {};
}

error node::wake(const std::string& id) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  if (!core_->dir->wake(id))
    return error{errc::agent_errored, "agent '" + id + "' is errored and cannot be woken"};
  return {};
}

// -- triggers ----------------------------------------------------------------

expected<storage::inbox_entry> node::make_entry(const std::string& id, std::string payload,
                                                const send_options& opts) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto& limits = core_->options.limits;
  if (auto size = opts.message_bytes.value_or(payload.size()); size > limits.max_message_bytes)
    return error{errc::message_too_large, "message of " + std::to_string(size)
                                            + " bytes exceeds the limit of "
                                            + std::to_string(limits.max_message_bytes)};
  if (opts.idempotency_key.size() > 256)
    return error{errc::invalid_argument, "idempotency keys are at most 256 bytes"};
  // The node's own triggers share the agent's key space: a job's result
  // ("job:", agent_host.cpp), an approval's decision ("approval:"), a
  // delivered envelope ("envelope:") and a relay's event ("nostr:", the
  // Nostr driver). A client's key taken for one of them would have the
  // trigger dropped as its duplicate.
  if (storage::is_node_idempotency_key(opts.idempotency_key)
      && !(opts.nostr && opts.idempotency_key.starts_with("nostr:")))
    return error{errc::invalid_argument,
                 "idempotency keys starting with job:, approval:, envelope: or nostr: are "
                 "the node's own"};
  if (!opts.from.empty() && !is_valid_agent_id(opts.from))
    return check_agent_id(opts.from);
  if (opts.encrypted && opts.from.empty())
    return error{errc::invalid_argument, "encrypted messages need a sender (from)"};
  if (opts.kind == trigger_kind::init)
    return error{errc::invalid_argument, "init triggers are sent by create only"};
  if (auto v = core_->dir->lookup(id); v && v->errored)
    return error{errc::agent_errored, "agent '" + id + "' is errored: " + v->error};
  storage::inbox_entry e;
  e.kind = opts.kind;
  e.time = core_->clock->now();
  e.from = opts.from;
  e.payload = std::move(payload);
  e.idempotency_key = opts.idempotency_key;
  e.request_id = opts.request_id;
  e.nostr = opts.nostr;
  if (!opts.from.empty())
    if (auto err = detail::sign_as(*core_->keys, opts.from, id, opts.encrypted, e))
      return err;
  return e;
}

void node::send_async(const std::string& id, std::string payload, const send_options& opts,
                      std::function<void(expected<send_receipt>)> done) {
  // What a retry under the same key must repeat: taken before make_entry
  // encrypts (a fresh nonce each time). Not for relay events: their key is
  // the event id, which already commits to the content, while relays may
  // serialize the same event differently.
  std::optional<storage::hash256> digest;
  if (!opts.idempotency_key.empty() && !opts.nostr) {
    std::string asked{to_string(opts.kind)};
    asked += '\0';
    asked += opts.from;
    asked += '\0';
    asked += opts.encrypted ? '1' : '0';
    asked += payload;
    digest = storage::blake2b(asked);
  }
  auto entry = make_entry(id, std::move(payload), opts);
  if (!entry) {
    if (done)
      done(entry.error_value());
    return;
  }
  storage::enqueue_op op;
  op.agent = id;
  op.entry = std::move(*entry);
  // The agent's own limit (fs/limits) if it has one, else the node's.
  op.depth_limit = opts.ignore_depth_limit ? 0 : core_->gate->limits_for(id).inbox_limit;
  op.refuse_overflow = opts.refuse_when_full;
  op.request_digest = digest;
  // Open connections are tracked (store::open_ws_connections) so that a
  // restart can close the ones a killed process left open.
  if (opts.kind == trigger_kind::ws)
    if (auto ev = ws_event::head(op.entry.payload)) {
      if (ev->event == ws_event::kind::open)
        op.ws_opens = ev->connection;
      else if (ev->event == ws_event::kind::close)
        op.ws_closes = ev->connection;
    }
  auto* core = core_.get();
  // Count the write as outstanding from now on, so wait_idle does not
  // return between this call and the commit.
  {
    std::lock_guard<std::mutex> guard{core->idle_mtx};
    ++core->outstanding;
  }
  auto cb = [core, done](storage::op_result& r) {
    if (!r.err)
      core->deliver(r);
    core->consumed(1);
    if (!done)
      return;
    if (r.err)
      done(r.err);
    else
      done(send_receipt{r.seq, r.duplicate});
  };
  if (!core_->commits->submit(std::move(op), std::move(cb))) {
    core_->consumed(1);
    if (done)
      done(error{errc::shutting_down, "the node is shutting down"});
  }
}

void node::run_trigger(const std::string& id, std::string payload, const send_options& opts,
                       std::function<void(expected<tick_event>)> done) {
  auto entry = opts.idempotency_key.empty()
                 ? make_entry(id, std::move(payload), opts)
                 : expected<storage::inbox_entry>{error{
                     errc::invalid_argument,
                     "direct triggers are not stored, so idempotency keys cannot apply"}};
  if (!entry) {
    done(entry.error_value());
    return;
  }
  auto* core = core_.get();
  {
    std::lock_guard<std::mutex> guard{core->idle_mtx};
    ++core->outstanding;  // until done runs (wait_idle)
  }
  auto d = std::make_shared<detail::direct_trigger>(*core, id, std::move(*entry), std::move(done));
  // On failure the last reference goes here and d answers why.
  core_->dir->deliver_direct(id, std::move(d));
}

expected<send_receipt> node::send(const std::string& id, std::string payload,
                                  const send_options& opts) {
  std::promise<expected<send_receipt>> p;
  auto f = p.get_future();
  send_async(id, std::move(payload), opts, [&p](expected<send_receipt> r) { p.set_value(std::move(r)); });
  return f.get();
}

expected<send_receipt> node::tick(const std::string& id, std::string request_id) {
  send_options opts;
  opts.kind = trigger_kind::ctl;
  opts.request_id = std::move(request_id);
  return send(id, "tick", opts);
}

expected<send_receipt> node::change_goal(const std::string& id, const std::string& key,
                                         std::optional<std::string> value,
                                         std::string request_id) {
  if (key.empty() || key.size() > 256)
    return error{errc::invalid_argument, "goal keys are 1 to 256 bytes"};
  send_options opts;
  opts.kind = trigger_kind::goal_changed;
  opts.request_id = std::move(request_id);
  opts.message_bytes = value ? value->size() : 0;
  return send(id, goal_change{key, std::move(value)}.encode(), opts);
}

expected<std::size_t> node::requeue(const std::string& id,
                                    std::optional<std::vector<std::uint64_t>> ids) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto* core = core_.get();
  storage::requeue_op op{id, std::move(ids), core_->gate->limits_for(id).inbox_limit};
  auto r = commit_and_wait(*core_, std::move(op), [core](storage::op_result& r) {
    if (!r.err)
      core->deliver(r);
  });
  if (r.err)
    return r.err;
  return static_cast<std::size_t>(r.seq);
}

// -- moving agents -------------------------------------------------------------

expected<std::string> node::export_bundle(const std::string& id, bool include_secrets,
                                          bool allow_broken) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  std::optional<std::string> secret;
  if (include_secrets) {
    auto keys = unsealed_keys(id);
    if (!keys)
      return keys.error_value();
    secret = keys->secret_bytes();
  }
  auto out = core_->store->export_agent(id, secret);
  if (secret)
    sodium_memzero(secret->data(), secret->size());
  if (out && !allow_broken)
    // A bundle that import refuses is no copy of the agent: said now, before
    // anyone deletes the agent trusting it.
    if (auto check = storage::read_bundle_identity(*out); !check)
      return error{errc::corrupt_record, "agent '" + id + "' would not import from its bundle ("
                                           + check.error_value().message()
                                           + "); export it anyway with allow_broken to inspect it"};
  return out;
}

expected<std::string> node::import_bundle(std::string bundle) {
  if (core_->closing)
    return error{errc::shutting_down, "the node is shutting down"};
  auto found = storage::read_bundle_identity(bundle);
  if (!found)
    return found.error_value();
  // An agent this node cannot run is refused, as create refuses it.
  if (auto err = core_->registry.check(found->type))
    return err;
  // Keys travel in the clear only on request; otherwise the agent gets new
  // ones here and keeps its old public key to verify its older records.
  auto now = core_->clock->now();
  storage::identity_record rec;
  if (found->secret) {
    auto keys = identity::agent_keys::from_secret_bytes(*found->secret);
    sodium_memzero(found->secret->data(), found->secret->size());
    if (!keys)
      return error{errc::invalid_argument, "the bundle's secret keys: " + keys.error_value().message()};
    if (found->identity && found->identity->ed25519 != keys->pub.ed25519)
      return error{errc::invalid_argument, "the bundle's secret keys do not match its public keys"};
    rec = core_->keys->seal(*keys, found->identity ? found->identity->created : now,
                            found->identity ? found->identity->retired
                                            : std::vector<identity::public_key>{});
  } else {
    std::vector<identity::public_key> retired;
    if (found->identity) {
      retired = found->identity->retired;
      retired.push_back(found->identity->ed25519);
    }
    rec = core_->keys->seal(identity::agent_keys::generate(), now, std::move(retired));
  }
  std::lock_guard<std::mutex> lifecycle{core_->lifecycle(found->agent)};
  storage::import_op op{std::move(bundle), std::move(rec)};
  auto r = commit_and_wait(*core_, std::move(op));
  if (r.err)
    return r.err;
  core_->keys->forget(r.agent);
  auto meta = core_->store->get_agent(r.agent);
  auto mark = core_->store->errored_mark(r.agent);
  bool errored = !meta || meta->errored || mark;
  core_->dir->add(r.agent, meta ? meta->type : std::string{}, errored,
                  mark ? *mark : (meta ? meta->error : meta.error_value().to_string()));
  {
    std::lock_guard<std::mutex> guard{core_->terminated_mtx};
    core_->terminated.erase(r.agent);
  }
  // Its policies and limits came in the bundle: in force from now on.
  for (auto& key : storage::agent_setting_names(r.agent))
    core_->gate->install(key, core_->store->get_setting(key));
  // Jobs the bundle holds as queued or running ran on the exporting node:
  // ended here as interrupted, their reservations released.
  core_->services->reconcile(r.agent);
  if (auto due = core_->store->next_alarm_due())
    core_->alarms->hint(*due);
  if (r.seq > 0 && !errored) {
    {
      std::lock_guard<std::mutex> guard{core_->idle_mtx};
      core_->outstanding += static_cast<std::int64_t>(r.seq);
    }
    core_->dir->wake(r.agent);
  }
  return r.agent;
}

// -- identity ------------------------------------------------------------------

expected<identity::public_keys> node::public_keys(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto pub = core_->keys->public_keys_of(id);
  if (!pub)
    return error{errc::not_found, "agent '" + id + "' has no keys"};
  return *pub;
}

expected<identity::agent_keys> node::unsealed_keys(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->keys->load(id);
}

expected<identity::signature> node::sign(const std::string& id, std::string_view bytes) const {
  if (identity::reserved_signing_domain(bytes))
    return error{errc::invalid_argument, "bytes starting with \"ticktock/\" are ticktock's own to "
                                         "sign (envelopes, trajectory records)"};
  auto keys = unsealed_keys(id);
  if (!keys)
    return keys.error_value();
  return identity::sign(*keys, bytes);
}

expected<std::string> node::nostr_sign(const std::string& id, const nostr_note& note) const {
  auto keys = unsealed_keys(id);
  if (!keys)
    return keys.error_value();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                core_->clock->now().time_since_epoch()).count();
  return nostr::sign_note({keys->nostr_secret, keys->pub.nostr}, note, secs);
}

expected<std::string> node::encrypt_for(const std::string& id, std::string_view plaintext) const {
  auto pub = public_keys(id);
  if (!pub)
    return pub.error_value();
  return identity::encrypt_to(pub->ed25519, plaintext);
}

expected<std::string> node::decrypt(const std::string& id, std::string_view ciphertext) const {
  auto keys = unsealed_keys(id);
  if (!keys)
    return keys.error_value();
  return identity::decrypt(*keys, ciphertext);
}

expected<std::size_t> node::rotate_master_key(const node_options& options) {
  storage::store_options so;
  so.dir = options.data_dir;
  so.durability = storage::durability::sync;
  auto st = storage::store::open(so);
  if (!st)
    return st.error_value();
  return detail::rotate_master_key(**st, options.master_key_file.empty()
                                           ? options.data_dir / "master.key"
                                           : options.master_key_file);
}

expected<envelope> node::make_envelope(const std::string& from, const std::string& to,
                                       std::string payload, bool encrypted,
                                       std::optional<identity::public_key> recipient_key) const {
  auto ok = checked(from);
  if (!ok)
    return ok.error_value();
  if (auto err = check_agent_id(to))
    return err;
  storage::inbox_entry e;
  e.time = core_->clock->now();
  e.payload = std::move(payload);
  if (auto err = detail::sign_as(*core_->keys, from, to, encrypted, e,
                                 recipient_key ? &*recipient_key : nullptr))
    return err;
  envelope env;
  env.id = std::move(e.envelope_id);
  env.from = from;
  env.to = to;
  env.time = e.time;
  env.encrypted = e.encrypted;
  env.payload = std::move(e.payload);
  std::memcpy(env.signature.data(), e.signature.data(), env.signature.size());
  env.sender_key = core_->keys->public_keys_of(from)->ed25519;
  return env;
}

expected<send_receipt> node::deliver(const envelope& env, std::string request_id) {
  auto ok = checked(env.to);
  if (!ok)
    return ok.error_value();
  if (auto err = check_agent_id(env.from))
    return error{errc::invalid_argument, "envelope sender: " + err.message()};
  if (env.id.size() < 16 || env.id.size() > 64)
    return error{errc::invalid_argument, "envelope ids are 16 to 64 bytes, got "
                                           + std::to_string(env.id.size())};
  if (env.time.time_since_epoch().count() < 1)
    return error{errc::invalid_argument, "envelope times are after the Unix epoch"};
  auto limits = core_->gate->limits_for(env.to);  // its own inbox limit, if it has one
  if (env.payload.size() > limits.max_message_bytes)
    return error{errc::message_too_large, "envelope payload of " + std::to_string(env.payload.size())
                                            + " bytes exceeds the limit of "
                                            + std::to_string(limits.max_message_bytes)};
  auto id_hex = identity::to_hex(
    std::span{reinterpret_cast<const std::uint8_t*>(env.id.data()), env.id.size()});
  storage::enqueue_op op;
  op.agent = env.to;
  op.entry.kind = trigger_kind::message;
  // Its tick runs at its arrival: the sender's time (signed) is not this
  // node's clock, and may be anything.
  op.entry.time = core_->clock->now();
  op.entry.sent = env.time;
  op.entry.from = env.from;
  op.entry.payload = env.payload;
  op.entry.envelope_id = env.id;
  op.entry.request_id = std::move(request_id);
  op.entry.encrypted = env.encrypted;
  op.entry.signature.assign(reinterpret_cast<const char*>(env.signature.data()),
                            env.signature.size());
  op.entry.sender_key.assign(reinterpret_cast<const char*>(env.sender_key.data()),
                             env.sender_key.size());
  // The envelope id is the idempotency key: a second delivery is a replay.
  // Only a genuine envelope claims it: a forged copy (one byte changed)
  // posted first must not make the real one a "replay". The copy still goes
  // in, to the deadletter as bad_signature before the recipient's tick. A
  // sender that is not an agent here is known only by the key its envelope
  // carries, which anyone can make: ids are claimed per key, so that an
  // envelope under the same id and name but another key does not either.
  // Stored with it is the key it verified under, never an unchecked one: a
  // refused envelope must not verify later, once its claimed local sender
  // is gone and the carried key would be used.
  identity::public_key signer{};
  if (!core_->keys->check_signature(op.entry, env.to, &signer)) {
    op.entry.sender_key.assign(reinterpret_cast<const char*>(signer.data()), signer.size());
    op.entry.idempotency_key = "envelope:" + id_hex + ":" + identity::to_hex(signer);
    op.seen_as = "envelope:" + id_hex;  // how ids were recorded before 2026-12-06
  } else {
    op.entry.sender_key.clear();
  }
  op.depth_limit = limits.inbox_limit;
  {
    std::lock_guard<std::mutex> guard{core_->idle_mtx};
    ++core_->outstanding;
  }
  auto* core = core_.get();
  auto r = commit_and_wait(*core, std::move(op), [core](storage::op_result& r) {
    if (!r.err && !r.duplicate)
      core->deliver(r);
  });
  core->consumed(1);
  if (r.err)
    return r.err;
  if (r.duplicate) {
    std::lock_guard<std::mutex> guard{core->metrics_mtx};
    ++core->metrics.replayed_envelopes;
    return error{errc::replayed, "envelope " + id_hex + " was accepted before (seq "
                                   + std::to_string(r.seq) + ")"};
  }
  return send_receipt{r.seq, false};
}

// -- inspection --------------------------------------------------------------

expected<agent_status> node::status(const std::string& id) const {
  if (auto err = check_agent_id(id))
    return err;
  auto v = core_->dir->lookup(id);
  if (!v) {
    std::lock_guard<std::mutex> guard{core_->terminated_mtx};
    if (core_->terminated.count(id))
      return agent_status{id, {}, agent_state::terminated, 0, {}, 0, {}, {}};
    return error{errc::not_found, "no agent '" + id + "'"};
  }
  agent_status s;
  s.id = id;
  s.type = v->type;
  s.state = v->resident ? agent_state::active : agent_state::hibernated;
  s.error = v->error;
  // The record and the inbox depth of one moment: the init tick committing
  // in between read as "not run, nothing queued".
  if (auto meta = core_->store->get_agent_and_depth(id)) {
    s.last_tick = meta->first.tick_count;
    s.last_tick_time = meta->first.last_tick;
    s.trajectory_records = meta->first.trajectory_next;
    s.outbox_next = meta->first.outbox_next;
    s.summary = std::move(meta->first.summary);
    s.queue_depth = meta->second;
  } else if (meta.error_value().code() == errc::not_found) {
    // terminate() deleted its records and has yet to drop it from the directory.
    return error{errc::not_found, "no agent '" + id + "'"};
  } else {
    if (s.error.empty())
      s.error = meta.error_value().to_string();
    s.queue_depth = core_->store->inbox_depth(id);
  }
  if (v->errored || !s.error.empty())
    s.state = agent_state::errored;
  {
    std::lock_guard<std::mutex> guard{core_->limits_mtx};
    if (auto i = core_->limit_states.find(id); i != core_->limit_states.end()) {
      s.throttled_until = i->second.throttled_until;
      s.limits_hit = i->second.hits;
    }
  }
  return s;
}

std::vector<agent_status> node::list(std::string_view after, std::size_t limit) const {
  std::vector<agent_status> out;
  for (auto& id : core_->dir->ids()) {
    if (out.size() >= limit)
      break;
    if (!after.empty() && id <= after)
      continue;
    if (auto s = status(id))
      out.push_back(std::move(*s));
  }
  return out;
}

expected<std::string> node::state_bytes(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto s = core_->store->get_state(id);
  if (!s)
    return s.error_value();
  return s->value_or(std::string{});
}

expected<std::vector<storage::trajectory_record>>
node::trajectory(const std::string& id, std::uint64_t from, std::size_t limit) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->read_trajectory(id, from, limit);
}

expected<storage::chain_report> node::verify(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->verify_trajectory(id);
}

expected<std::vector<storage::outbox_event>> node::outbox(const std::string& id,
                                                          std::uint64_t from_seq,
                                                          std::size_t limit) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->read_outbox(id, from_seq, limit);
}

expected<std::vector<storage::deadletter_entry>> node::deadletter(const std::string& id,
                                                                  std::size_t limit,
                                                                  std::uint64_t from_id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->read_deadletter(id, from_id, limit);
}

expected<std::vector<storage::alarm_record>> node::alarms(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->list_alarms(id);
}

expected<std::vector<std::pair<std::string, std::string>>>
node::goals(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->list_goals(id);
}

expected<std::vector<std::pair<std::string, std::string>>>
node::memory(const std::string& id, const std::string& space) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->list_memory(id, space);
}

std::size_t node::agent_count() const { return core_->dir->size(); }
std::size_t node::resident_count() const { return core_->dir->resident(); }

bool node::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock{core_->idle_mtx};
  return core_->idle_cv.wait_for(lock, timeout, [&] { return core_->outstanding <= 0; });
}

bool node::drain(std::chrono::milliseconds timeout) {
  core_->draining = true;
  std::unique_lock<std::mutex> lock{core_->idle_mtx};
  return core_->idle_cv.wait_for(lock, timeout, [&] { return core_->running.load() <= 0; });
}

void node::set_tick_observer(std::function<void(const tick_event&)> f) {
  std::unique_lock<std::shared_mutex> guard{core_->observer_mtx};
  auto& obs = core_->observers;
  obs.erase(std::remove_if(obs.begin(), obs.end(), [](auto& o) { return o.first == 0; }),
            obs.end());
  if (f)
    obs.emplace_back(0, std::move(f));
}

std::uint64_t node::add_tick_observer(std::function<void(const tick_event&)> f) {
  std::unique_lock<std::shared_mutex> guard{core_->observer_mtx};
  auto id = core_->next_observer++;
  core_->observers.emplace_back(id, std::move(f));
  return id;
}

void node::remove_tick_observer(std::uint64_t id) {
  std::unique_lock<std::shared_mutex> guard{core_->observer_mtx};
  auto& obs = core_->observers;
  obs.erase(std::remove_if(obs.begin(), obs.end(), [id](auto& o) { return o.first == id; }),
            obs.end());
}

// -- budgets, services, policy -------------------------------------------------

expected<storage::ledger_record> node::wallet(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  auto l = core_->store->get_ledger(id);
  if (l)
    l->roll(core_->clock->now());
  return l;
}

expected<std::vector<storage::ledger_entry>> node::wallet_history(const std::string& id,
                                                                  std::uint64_t from,
                                                                  std::size_t limit) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->read_ledger_history(id, from, limit);
}

error node::set_budget(const std::string& id, std::optional<std::uint64_t> total,
                       std::optional<std::uint64_t> day, std::optional<std::uint64_t> month) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  storage::service_op op;
  storage::ledger_change c;
  c.agent = id;
  c.what = storage::ledger_change::kind::limits;
  c.time = core_->clock->now();
  c.limit_total = total;
  c.limit_day = day;
  c.limit_month = month;
  op.ledger.push_back(std::move(c));
  return commit_and_wait(*core_, std::move(op)).err;
}

expected<storage::job_record> node::submit_job(const std::string& id, const std::string& service,
                                               std::string request, std::string request_id,
                                               std::chrono::milliseconds timeout) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  // Malformed requests are refused here, before they reach a tick.
  job_request probe{"probe", service, request};
  auto as = core_->gate->assess(id, probe);
  if (!as.error.empty())
    return error{errc::invalid_argument, as.error};
  // A provider this node lacks is refused before anything is reserved for it
  // (a tick's job fails with unknown_provider instead, which the agent reads).
  if (service == "compute") {
    auto provider = as.destination.substr(0, as.destination.find('/'));
    auto have = core_->services->providers();
    if (std::find(have.begin(), have.end(), provider) == have.end()) {
      std::string names;
      for (auto& p : have)
        names += (names.empty() ? "" : ", ") + p;
      return error{errc::invalid_argument, "compute request: provider: no provider '" + provider
                                             + "' on this node (" + names + ")"};
    }
  }
  struct waiter {
    std::mutex mtx;
    std::condition_variable cv;
    std::map<std::uint64_t, tick_event> events;
  };
  auto w = std::make_shared<waiter>();
  auto obs = add_tick_observer([w, id](const tick_event& ev) {
    if (ev.agent != id || ev.kind != trigger_kind::ctl || ev.outcome == storage::outcome::failed)
      return;
    std::lock_guard<std::mutex> guard{w->mtx};
    if (w->events.size() < 1024)
      w->events.emplace(ev.trigger_seq, ev);
    w->cv.notify_all();
  });
  std::string payload = "{\"submit\":{\"service\":\"" + service + "\",\"request\":\"";
  for (unsigned char ch : request) {
    // a JSON string of the request
    static const char* hex = "0123456789abcdef";
    if (ch == '"' || ch == '\\') {
      payload += '\\';
      payload += static_cast<char>(ch);
    } else if (ch < 0x20) {
      payload += "\\u00";
      payload += hex[ch >> 4];
      payload += hex[ch & 15];
    } else {
      payload += static_cast<char>(ch);
    }
  }
  payload += "\"}}";
  send_options opts;
  opts.kind = trigger_kind::ctl;
  opts.request_id = std::move(request_id);
  auto sent = send(id, std::move(payload), opts);
  if (!sent) {
    remove_tick_observer(obs);
    return sent.error_value();
  }
  std::optional<tick_event> ev;
  {
    std::unique_lock<std::mutex> lock{w->mtx};
    w->cv.wait_for(lock, timeout, [&] { return w->events.count(sent->seq) > 0; });
    if (auto i = w->events.find(sent->seq); i != w->events.end())
      ev = i->second;
  }
  remove_tick_observer(obs);
  if (!ev)
    return error{errc::timeout, "the agent did not take the job within the timeout; it stays in "
                                "its inbox (seq " + std::to_string(sent->seq) + ")"};
  if (ev->outcome == storage::outcome::deadlettered)
    return error{errc::tick_failed, ev->error};
  for (auto& j : ev->jobs)
    if (j.service == service)
      return j;
  return error{errc::tick_failed, "the tick staged no job"};
}

expected<std::optional<storage::job_record>> node::job(const std::string& id,
                                                       const std::string& job_id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->get_job(id, job_id);
}

expected<std::vector<storage::job_record>> node::jobs(const std::string& id,
                                                      const std::string& service) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->store->list_jobs(id, service);
}

namespace {
// One approval decision at a time (an admin's or a cancel's): no double decisions.
std::mutex approval_mtx;
}  // namespace

expected<bool> node::cancel_job(const std::string& id, const std::string& job_id) {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  if (core_->services->cancel(id, job_id))
    return true;
  // Not running: a job parked for approval is withdrawn with its approval,
  // which no one can decide any more; the agent gets its result, cancelled.
  std::lock_guard<std::mutex> guard{approval_mtx};
  auto j = core_->store->get_job(id, job_id);
  if (!j)
    return j.error_value();
  if (!*j || (*j)->status != "awaiting_approval")
    return false;
  auto a = core_->store->get_approval((*j)->approval);
  if (!a)
    return a.error_value();
  if (!*a || (*a)->status != "pending")
    return false;  // decided: the agent's next tick starts or ends the job
  auto now = core_->clock->now();
  auto job = std::move(**j);
  job.status = "cancelled";
  job.error = "cancelled";
  job.error_message = "cancelled while awaiting approval";
  job.finished = now;
  job.cost = 0;  // a parked job holds no reservation
  auto approval = std::move(**a);
  approval.status = "cancelled";
  approval.decided = now;
  storage::service_op op;
  op.triggers.push_back(detail::result_trigger(job, now));
  op.jobs.push_back(std::move(job));
  op.approvals.push_back(std::move(approval));
  if (auto err = commit_delivering(*core_, std::move(op)))
    return err;
  return true;
}

expected<std::vector<std::string>> node::job_output(const std::string& id, const std::string& job_id,
                                                    std::size_t from, bool& done) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  bool known = false;
  auto out = core_->services->output(id, job_id, from, known, done);
  if (known)
    return out;
  auto j = core_->store->get_job(id, job_id);
  if (!j)
    return j.error_value();
  if (!*j)
    return error{errc::not_found, "no job '" + job_id + "' of agent '" + id + "'"};
  done = !(*j)->open();
  return std::vector<std::string>{};
}

std::vector<std::string> node::compute_providers() const { return core_->services->providers(); }

std::vector<storage::approval_record> node::approvals(
  const std::string& status, const std::optional<std::pair<time_point, std::string>>& after,
  std::size_t limit) const {
  return core_->store->list_approvals(status, after, limit);
}

expected<storage::approval_record> node::approval(const std::string& approval_id) const {
  auto a = core_->store->get_approval(approval_id);
  if (!a)
    return a.error_value();
  if (!*a)
    return error{errc::not_found, "no approval '" + approval_id + "'"};
  return std::move(**a);
}

expected<storage::approval_record> node::decide(const std::string& approval_id, bool approve,
                                                std::string note, std::string request_id) {
  std::lock_guard<std::mutex> guard{approval_mtx};
  auto a = approval(approval_id);
  if (!a)
    return a;
  if (a->status != "pending")
    return error{errc::already_exists, "approval '" + approval_id + "' was " + a->status
                                         + " already"};
  auto now = core_->clock->now();
  a->status = approve ? "approved" : "denied";
  a->decided = now;
  a->note = std::move(note);
  storage::service_op op;
  op.approvals.push_back(*a);
  storage::inbox_entry e;
  e.kind = trigger_kind::approval_decision;
  e.time = now;
  std::string esc;
  for (char ch : a->note)
    if (ch == '"' || ch == '\\')
      esc += std::string{"\\"} + ch;
    else if (static_cast<unsigned char>(ch) >= 0x20)
      esc += ch;
  e.payload = "{\"approval\":\"" + a->id + "\",\"job\":\"" + a->job + "\",\"action\":\""
              + a->action + "\",\"decision\":\"" + a->status + "\",\"note\":\"" + esc + "\"}";
  e.idempotency_key = "approval:" + a->id;
  e.request_id = std::move(request_id);
  op.triggers.push_back({a->agent, std::move(e), 0});
  if (auto err = commit_delivering(*core_, std::move(op)))
    return err;
  return *a;
}

error node::set_kill_switch(bool engaged) {
  auto key = std::string{detail::setting::kill_switch};
  storage::service_op op;
  op.settings.emplace_back(key, engaged ? "1" : "0");
  auto r = commit_and_wait(*core_, std::move(op));
  if (r.err)
    return r.err;
  core_->gate->install(key, engaged ? "1" : "0");
  if (engaged)
    core_->services->cancel_all("kill_switch");
  return {};
}

bool node::kill_switch() const { return core_->gate->killed(); }

policy::verdict node::assess_publish(const std::string& agent,
                                     const std::vector<std::string>& relays) const {
  return core_->gate->assess_publish(agent, relays);
}

namespace {

// "policy/<agent>/<service>" or "limits/<agent>": the agent named, if any.
std::optional<std::string> setting_agent(const std::string& key) {
  if (key.starts_with("limits/"))
    return key.substr(7);
  if (key.starts_with("policy/")) {
    auto rest = key.substr(7);
    auto slash = rest.rfind('/');
    if (slash == std::string::npos)
      return rest;
    return rest.substr(0, slash);
  }
  return std::nullopt;
}

}  // namespace

expected<std::string> node::setting(const std::string& key) const {
  if (auto agent = setting_agent(key))
    if (auto ok = checked(*agent); !ok)
      return ok.error_value();
  auto v = core_->gate->get(key);
  if (!v)
    return error{errc::not_found, "'" + key + "' is not set"};
  return *v;
}

error node::set_setting(const std::string& key, std::string_view value) {
  auto agent = setting_agent(key);
  if (agent) {
    if (auto ok = checked(*agent); !ok)
      return ok.error_value();
    if (key.starts_with("policy/") && key != detail::setting::agent_policy(*agent, "compute")
        && key != detail::setting::agent_policy(*agent, "containers")
        && key != detail::setting::agent_policy(*agent, "http"))
      return error{errc::invalid_argument, "policies are per service: compute, containers or http"};
  }
  auto canonical = core_->gate->validate(key, value);
  if (!canonical)
    return canonical.error_value();
  storage::service_op op;
  op.settings.emplace_back(key, *canonical);
  auto r = commit_and_wait(*core_, std::move(op));
  if (r.err)
    return r.err;
  core_->gate->install(key, *canonical);
  // The agent counts its last minute's ticks against the new limits now; one
  // waiting out its ticks_per_minute does not wait for the old wait's end.
  if (agent && key == detail::setting::agent_limits(*agent))
    if (auto v = core_->dir->lookup(*agent); v && v->resident)
      caf::anon_send(core_->dir->actor_of(*agent), detail::ctl_atom::value,
                     detail::ctl_op::limits_changed);
  return {};
}

expected<tick_limits> node::limits(const std::string& id) const {
  auto ok = checked(id);
  if (!ok)
    return ok.error_value();
  return core_->gate->limits_for(id);
}

node_metrics node::metrics() const {
  node_metrics m;
  {
    std::lock_guard<std::mutex> guard{core_->metrics_mtx};
    m = core_->metrics;
  }
  m.agents = core_->dir->size();
  m.resident = core_->dir->resident();
  m.errored = core_->dir->errored();
  {
    std::lock_guard<std::mutex> guard{core_->idle_mtx};
    m.inbox_pending = static_cast<std::uint64_t>(std::max<std::int64_t>(0, core_->outstanding));
  }
  return m;
}

const node_options& node::options() const noexcept { return core_->options; }
storage::store& node::store() noexcept { return *core_->store; }

}  // namespace ticktock
