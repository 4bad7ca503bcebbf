// tick and durable-tick: throughput of no-op ticks across resident agents,
// against bare CAF actors (tick) and raw RocksDB WriteBatches of the same
// bytes (durable-tick).

#include <caf/all.hpp>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <thread>

#include "scenarios.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::bench {

namespace {

using namespace std::chrono_literals;

const std::string payload = "tick-payload-16b";

std::chrono::milliseconds tick_timeout(std::size_t messages) {
  return std::chrono::milliseconds{60'000 + 2 * messages};
}

// -- ours ------------------------------------------------------------------------

struct tick_run {
  double ops_per_s = 0;
  /// Group commits of the measured region and the bytes they wrote (see
  /// foreground_writes).
  std::optional<std::uint64_t> groups;
  std::optional<double> wal_bytes_per_tick;
};

tick_run run_ours(const config& cfg, durability d) {
  auto agents = std::min(cfg.tick_agents, cfg.agents);
  latch_counter ticks;
  std::atomic<std::uint64_t> bad_ticks{0};
  std::atomic<std::uint64_t> send_errors{0};
  temp_dir dir{cfg.dir};
  auto n = open_node(dir.path() / "data", d, 2 * agents + 1000);
  create_agents(*n, agents, cfg);
  poll_until([&] { return n->resident_count() == agents; }, 30s, "agents becoming resident");

  std::vector<std::string> ids;
  for (std::size_t i = 0; i < agents; ++i)
    ids.push_back(agent_name(i));
  ticks.reset(cfg.messages);
  n->set_tick_observer([&](const tick_event& ev) {
    if (ev.kind != trigger_kind::message)
      return;
    if (ev.outcome != storage::outcome::ok)
      ++bad_ticks;
    ticks.bump();
  });
  auto on_sent = [&send_errors](expected<send_receipt> r) {
    if (!r)
      ++send_errors;
  };
  send_options opts;

  auto writes_before = foreground_writes();
  auto start = steady::now();
  for (std::size_t i = 0; i < cfg.messages; ++i)
    n->send_async(ids[i % agents], payload, opts, on_sent);
  auto end = ticks.wait(tick_timeout(cfg.messages), "waiting for the message ticks");
  auto writes_after = foreground_writes();

  if (!n->wait_idle(30s))
    throw bench_error{"the node did not become idle after the last tick"};
  n->set_tick_observer(nullptr);
  if (send_errors || bad_ticks)
    throw bench_error{std::to_string(send_errors.load()) + " sends and "
                      + std::to_string(bad_ticks.load()) + " ticks failed"};
  n->shutdown();

  tick_run r;
  r.ops_per_s = static_cast<double>(cfg.messages) / seconds_between(start, end);
  if (writes_before && writes_after && writes_after->calls > writes_before->calls) {
    r.groups = writes_after->calls - writes_before->calls;
    r.wal_bytes_per_tick = static_cast<double>(writes_after->bytes - writes_before->bytes)
                           / static_cast<double>(cfg.messages);
  }
  return r;
}

// -- bare CAF --------------------------------------------------------------------

using msg_atom = caf::atom_constant<caf::atom("msg")>;

struct counter_state {
  std::uint64_t handled = 0;
  std::uint64_t bytes = 0;
  static inline const char* name = "bench.counter";
};

// Counts its messages; bumps `done` when it handled its share `quota`.
caf::behavior counter_actor(caf::stateful_actor<counter_state>* self, std::uint64_t quota,
                            latch_counter* done) {
  return {
    [=](msg_atom, const std::string& p) {
      auto& st = self->state;
      st.bytes += p.size();
      if (++st.handled == quota)
        done->bump();
    },
  };
}

double run_bare_caf(const config& cfg) {
  auto agents = std::min(cfg.tick_agents, cfg.agents);
  latch_counter done;
  caf::actor_system_config caf_cfg;
  caf_cfg.set("scheduler.max-threads", std::max(1u, std::thread::hardware_concurrency()));
  caf::actor_system sys{caf_cfg};
  std::vector<caf::actor> actors;
  std::size_t busy = 0;  // actors that get at least one message
  for (std::size_t i = 0; i < agents; ++i) {
    auto quota = cfg.messages / agents + (i < cfg.messages % agents ? 1 : 0);
    busy += quota > 0;
    actors.push_back(sys.spawn(counter_actor, quota, &done));
  }
  done.reset(busy);
  auto start = steady::now();
  for (std::size_t i = 0; i < cfg.messages; ++i)
    caf::anon_send(actors[i % agents], msg_atom::value, payload);
  auto end = done.wait(tick_timeout(cfg.messages), "bare CAF actors handling their messages");
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  actors.clear();
  return static_cast<double>(cfg.messages) / seconds_between(start, end);
}

// -- raw RocksDB -----------------------------------------------------------------

// The bytes one no-op tick writes, encoded by ticktock's own codecs.
struct tick_bytes {
  std::string inbox;       // the inbox entry of the message
  std::string meta;        // the agent record after the tick
  std::string trajectory;  // the tick's trajectory record (unsigned)
  std::size_t signed_trajectory_size = 0;  // as stored, with its signature
};

storage::hash256 some_hash(std::uint8_t seed) {
  storage::hash256 h{};
  for (std::size_t i = 0; i < h.size(); ++i)
    h[i] = static_cast<std::uint8_t>(seed * 31 + i * 17 + 1);
  return h;
}

tick_bytes representative_tick(std::uint64_t ticks_so_far) {
  auto now = time_point{std::chrono::duration_cast<duration>(
    std::chrono::system_clock::now().time_since_epoch())};
  tick_bytes b;
  storage::inbox_entry e;
  e.kind = trigger_kind::message;
  e.time = now;
  e.payload = payload;
  b.inbox = storage::encode(e);

  storage::agent_record meta;
  meta.id = agent_name(123);
  meta.type = "noop";
  meta.created = now - std::chrono::seconds{5};
  meta.tick_count = ticks_so_far + 1;
  meta.last_tick = now;
  meta.trajectory_next = ticks_so_far + 1;
  meta.trajectory_head = some_hash(1);
  b.meta = storage::encode(meta);

  storage::trajectory_record rec;
  rec.index = ticks_so_far;
  rec.tick = ticks_so_far + 1;
  rec.kind = trigger_kind::message;
  rec.trigger_seq = ticks_so_far + 1;
  rec.trigger_digest = some_hash(2);
  rec.start = now;
  rec.duration_ns = 4'321;
  rec.effects.state_bytes = 1;
  rec.state_hash = some_hash(3);
  rec.prev_hash = some_hash(4);
  b.trajectory = storage::encode(rec);
  b.signed_trajectory_size = storage::encode_signed_trajectory(b.trajectory, std::string(64, '\x5a')).size();
  return b;
}

std::string seq_key(const std::string& id, std::uint64_t seq) {
  std::string k = id;
  k.push_back('\0');
  for (int i = 7; i >= 0; --i)
    k.push_back(static_cast<char>((seq >> (i * 8)) & 0xff));
  return k;
}

struct raw_run {
  double ops_per_s = 0;
  std::optional<std::uint64_t> write_syscalls;
  std::optional<double> wal_bytes_per_tick;
};

// The writes of `messages` ticks round-robin over the agents, in rounds of one
// message per agent: first the round's inbox puts (plus each agent's counters
// put, once per batch, as the store does), then its ticks (agent record put,
// trajectory put, inbox delete). The 2 * messages operations are cut into
// `groups` WriteBatches of equal size, written one after the other.
raw_run run_raw_rocksdb(const config& cfg, bool sync, std::uint64_t groups, const tick_bytes& b) {
  auto agents = std::min(cfg.tick_agents, cfg.agents);
  enum cf_index : std::size_t { cf_agents, cf_inbox, cf_trajectory, cf_meta };
  temp_dir dir{cfg.dir};
  raw_db db{dir.path() / "raw", {"agents", "inbox", "trajectory", "meta"}, sync};

  struct op {
    std::uint32_t agent;
    std::uint32_t seq;  // 1-based per agent
    bool tick;
  };
  std::vector<op> ops;
  ops.reserve(2 * cfg.messages);
  for (std::size_t round = 0; round * agents < cfg.messages; ++round) {
    auto first = round * agents;
    auto last = std::min(cfg.messages, first + agents);
    for (bool tick : {false, true})
      for (auto i = first; i < last; ++i)
        ops.push_back({static_cast<std::uint32_t>(i % agents),
                       static_cast<std::uint32_t>(round + 1), tick});
  }
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < agents; ++i)
    ids.push_back(agent_name(i));
  std::string counters(16, '\x01');
  groups = std::clamp<std::uint64_t>(groups, 1, ops.size());
  // Trajectory records are signed (docs/identity.md): the bare work of a
  // signed durable tick includes one Ed25519 signature per record.
  auto keys = identity::agent_keys::generate();

  rocksdb::WriteOptions wo;
  wo.sync = sync;
  std::vector<std::uint32_t> dirty_in_batch(agents, 0);
  auto writes_before = foreground_writes();
  auto start = steady::now();
  std::size_t next = 0;
  for (std::uint64_t g = 0; g < groups; ++g) {
    auto end = static_cast<std::size_t>((g + 1) * ops.size() / groups);
    rocksdb::WriteBatch batch;
    std::vector<std::uint32_t> dirty;
    for (; next < end; ++next) {
      auto& o = ops[next];
      auto& id = ids[o.agent];
      if (!o.tick) {
        batch.Put(db.cf(cf_inbox), seq_key(id, o.seq), b.inbox);
        if (dirty_in_batch[o.agent] != g + 1) {
          dirty_in_batch[o.agent] = static_cast<std::uint32_t>(g + 1);
          dirty.push_back(o.agent);
        }
      } else {
        batch.Put(db.cf(cf_agents), id, b.meta);
        batch.Delete(db.cf(cf_inbox), seq_key(id, o.seq));
        auto sig = identity::sign(keys, identity::trajectory_signing_bytes(id, b.trajectory));
        batch.Put(db.cf(cf_trajectory), seq_key(id, o.seq),
                  storage::encode_signed_trajectory(
                    b.trajectory, {reinterpret_cast<const char*>(sig.data()), sig.size()}));
      }
    }
    for (auto a : dirty)
      batch.Put(db.cf(cf_meta), "c" + ids[a], counters);
    auto st = db.db().Write(wo, &batch);
    if (!st.ok())
      throw bench_error{"raw RocksDB write: " + st.ToString()};
  }
  auto end = steady::now();
  auto writes_after = foreground_writes();
  raw_run r;
  r.ops_per_s = static_cast<double>(cfg.messages) / seconds_between(start, end);
  if (writes_before && writes_after) {
    r.write_syscalls = writes_after->calls - writes_before->calls;
    r.wal_bytes_per_tick = static_cast<double>(writes_after->bytes - writes_before->bytes)
                           / static_cast<double>(cfg.messages);
  }
  return r;
}

}  // namespace

// -- scenarios -------------------------------------------------------------------

std::vector<row> run_tick(const config& cfg) {
  auto agents = std::min(cfg.tick_agents, cfg.agents);
  std::vector<double> ours, base;
  for (std::size_t run = 0; run < cfg.runs; ++run) {
    ours.push_back(run_ours(cfg, durability::async).ops_per_s);
    base.push_back(run_bare_caf(cfg));
    progress(cfg, "tick run " + std::to_string(run + 1) + ": " + std::to_string(ours.back())
                    + " vs " + std::to_string(base.back()) + " msgs/s");
  }
  row r;
  r.scenario = "tick";
  r.baseline = "bare-caf";
  r.baseline_what = std::to_string(cfg.messages) + " messages (a 16-byte string) sent round-robin "
                    "with caf::anon_send from one thread to " + std::to_string(agents)
                    + " bare CAF 0.17 event-based actors that count them; timed until the last "
                      "actor has its share";
  r.ops_per_s = summarize(ours);
  r.baseline_ops_per_s = summarize(base);
  r.ratio = r.ops_per_s->median / r.baseline_ops_per_s->median;
  r.ratio_kind = "ours/baseline ops_per_s (higher is better)";
  r.runs = cfg.runs;
  r.notes["workload"] = std::to_string(cfg.messages) + " no-op message ticks over "
                        + std::to_string(agents)
                        + " resident agents, async durability, send_async from one thread; "
                          "timed from the first send to the last tick observed";
  return {r};
}

std::vector<row> run_durable_tick(const config& cfg) {
  auto agents = std::min(cfg.tick_agents, cfg.agents);
  std::vector<row> rows;
  for (auto d : {durability::sync, durability::async}) {
    bool sync = d == durability::sync;
    std::vector<double> ours, base, groups, base_writes, wal, base_wal;
    auto bytes = representative_tick(cfg.messages / agents / 2);
    for (std::size_t run = 0; run < cfg.runs; ++run) {
      auto o = run_ours(cfg, d);
      ours.push_back(o.ops_per_s);
      if (o.wal_bytes_per_tick)
        wal.push_back(*o.wal_bytes_per_tick);
      // Without a group count, one batch per tick (and per enqueue).
      auto g = o.groups.value_or(2 * cfg.messages);
      groups.push_back(static_cast<double>(g));
      auto b = run_raw_rocksdb(cfg, sync, g, bytes);
      base.push_back(b.ops_per_s);
      if (b.write_syscalls)
        base_writes.push_back(static_cast<double>(*b.write_syscalls));
      if (b.wal_bytes_per_tick)
        base_wal.push_back(*b.wal_bytes_per_tick);
      progress(cfg, std::string{"durable-tick-"} + (sync ? "sync" : "async") + " run "
                      + std::to_string(run + 1) + ": " + std::to_string(o.ops_per_s) + " vs "
                      + std::to_string(b.ops_per_s) + " ticks/s, " + std::to_string(g)
                      + " groups");
    }
    row r;
    r.scenario = sync ? "durable-tick-sync" : "durable-tick-async";
    r.baseline = "raw-rocksdb";
    r.baseline_what = "one thread writes the records of the same ticks (inbox put + counters "
                      "put, then agent record put + Ed25519-signed trajectory put + inbox delete; "
                      + std::to_string(bytes.inbox.size()) + "+16+"
                      + std::to_string(bytes.meta.size()) + "+"
                      + std::to_string(bytes.signed_trajectory_size)
                      + " value bytes) as raw RocksDB WriteBatches, as many batches as our "
                        "committer made group commits in the same run, sync="
                      + (sync ? std::string{"true"} : std::string{"false"});
    r.ops_per_s = summarize(ours);
    r.baseline_ops_per_s = summarize(base);
    r.ratio = r.ops_per_s->median / r.baseline_ops_per_s->median;
    r.ratio_kind = "ours/baseline ops_per_s (higher is better)";
    r.runs = cfg.runs;
    r.extra["group_commits"] = summarize(groups);
    std::vector<double> per_group;
    for (auto g : groups)
      per_group.push_back(static_cast<double>(cfg.messages) / g);
    r.extra["ticks_per_group"] = summarize(per_group);
    if (!base_writes.empty())
      r.extra["baseline_write_syscalls"] = summarize(base_writes);
    if (!wal.empty())
      r.extra["wal_bytes_per_tick"] = summarize(wal);
    if (!base_wal.empty())
      r.extra["baseline_wal_bytes_per_tick"] = summarize(base_wal);
    r.extra["baseline_value_bytes_per_tick"] = summarize(
      {static_cast<double>(bytes.inbox.size() + 16 + bytes.meta.size() + bytes.signed_trajectory_size)});
    r.notes["workload"] = std::to_string(cfg.messages) + " no-op message ticks over "
                          + std::to_string(agents) + " resident agents, "
                          + (sync ? "sync" : "async") + " durability";
    r.notes["group_commits_from"] =
      "write(2) calls of the threads that write groups during the run (the committer and, "
      "with async durability, CAF workers; one WAL append per group commit); "
      "baseline_write_syscalls checks the same count on the baseline, and "
      "wal_bytes_per_tick vs baseline_wal_bytes_per_tick that both write the same bytes";
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace ticktock::bench
