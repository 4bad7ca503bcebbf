// wake: latency from send_async to the end of the message tick of a
// hibernated agent, one agent at a time (closed loop), against spawning a bare
// CAF actor that reads one RocksDB key and signals.

#include <caf/all.hpp>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <thread>

#include "scenarios.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::bench {

namespace {

using namespace std::chrono_literals;

constexpr auto one_wake_timeout = 5s;

/// One completion at a time: the measuring thread arms it for a key, a
/// worker thread completes it with its own timestamp.
class completion {
public:
  void arm(std::string key) {
    std::lock_guard<std::mutex> guard{mtx_};
    key_ = std::move(key);
    done_ = false;
  }

  /// Called on a worker thread; timestamps before taking the lock.
  void complete(const std::string& key) {
    auto now = steady::now();
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (done_ || key != key_)
        return;
      at_ = now;
      done_ = true;
    }
    cv_.notify_one();
  }

  steady::time_point wait(const std::string& what) {
    std::unique_lock<std::mutex> lock{mtx_};
    if (!cv_.wait_for(lock, one_wake_timeout, [&] { return done_; }))
      throw bench_error{what + " " + key_ + ": no completion within 5 s"};
    return at_;
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::string key_;
  bool done_ = false;
  steady::time_point at_{};
};

struct latencies {
  double p50_us = 0;
  double p99_us = 0;
  /// Ours only: send until send_async's callback ran (the inbox entry is
  /// durable and the agent's actor was spawned), the first leg of a wake.
  double ack_p50_us = 0;
  double ack_p99_us = 0;
};

latencies summarize_latencies(const std::vector<double>& us) {
  return {percentile(us, 0.50), percentile(us, 0.99)};
}

// -- ours ------------------------------------------------------------------------

latencies run_ours(const config& cfg, std::size_t agents) {
  completion done;
  std::atomic<std::uint64_t> send_errors{0};
  temp_dir dir{cfg.dir};
  auto n = open_node(dir.path() / "data", durability::async, 2 * agents + 1000);
  create_agents(*n, agents, cfg);
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < agents; ++i) {
    ids.push_back(agent_name(i));
    if (auto err = n->hibernate(ids.back()))
      throw bench_error{"hibernate " + ids.back() + ": " + err.to_string()};
  }
  poll_until([&] { return n->resident_count() == 0; }, 60s, "agents hibernating");
  progress(cfg, "wake: " + std::to_string(agents) + " agents hibernated");

  n->set_tick_observer([&done](const tick_event& ev) {
    if (ev.kind == trigger_kind::message)
      done.complete(ev.agent);
  });
  std::atomic<steady::rep> acked_at{0};
  auto on_sent = [&send_errors, &acked_at](expected<send_receipt> r) {
    acked_at = steady::now().time_since_epoch().count();
    if (!r)
      ++send_errors;
  };
  send_options opts;
  std::vector<double> us, ack_us;
  us.reserve(agents);
  ack_us.reserve(agents);
  for (auto& id : ids) {
    done.arm(id);
    acked_at = 0;
    auto start = steady::now();
    n->send_async(id, "wake", opts, on_sent);
    auto end = done.wait("waking");
    us.push_back(micros_between(start, end));
    // The callback runs while its group's writer still leads the committer,
    // so the tick cannot commit before it has run: it has run by now.
    ack_us.push_back(micros_between(start, steady::time_point{steady::duration{acked_at.load()}}));
  }
  n->set_tick_observer(nullptr);
  if (send_errors)
    throw bench_error{std::to_string(send_errors.load()) + " wake messages failed"};
  if (n->resident_count() != agents)
    throw bench_error{"after the wakes " + std::to_string(n->resident_count()) + " of "
                      + std::to_string(agents) + " agents are resident"};
  n->shutdown();
  auto r = summarize_latencies(us);
  r.ack_p50_us = percentile(ack_us, 0.50);
  r.ack_p99_us = percentile(ack_us, 0.99);
  return r;
}

// -- baseline: spawn a CAF actor that reads one RocksDB key --------------------

using read_atom = caf::atom_constant<caf::atom("read")>;

// On its one message: reads `key`, signals the completion (as our tick
// observer does), and quits.
caf::behavior probe_actor(caf::event_based_actor* self, rocksdb::DB* db, completion* done) {
  return {
    [=](read_atom, const std::string& key) {
      std::string value;
      auto st = db->Get(rocksdb::ReadOptions{}, key, &value);
      if (st.ok() && !value.empty())
        done->complete(key);
      self->quit();
    },
  };
}

latencies run_baseline(const config& cfg, std::size_t agents) {
  completion done;
  temp_dir dir{cfg.dir};
  raw_db db{dir.path() / "raw", {}, false};
  // Values the size of an agent record, written earlier.
  storage::agent_record meta;
  meta.type = "noop";
  meta.tick_count = 1;
  meta.trajectory_next = 1;
  meta.trajectory_head.fill(7);
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < agents; ++i) {
    ids.push_back(agent_name(i));
    meta.id = ids.back();
    auto st = db.db().Put(rocksdb::WriteOptions{}, ids.back(), storage::encode(meta));
    if (!st.ok())
      throw bench_error{"raw RocksDB put: " + st.ToString()};
  }
  caf::actor_system_config caf_cfg;
  caf_cfg.set("scheduler.max-threads", std::max(1u, std::thread::hardware_concurrency()));
  caf::actor_system sys{caf_cfg};
  std::vector<double> us;
  us.reserve(agents);
  for (auto& id : ids) {
    done.arm(id);
    auto start = steady::now();
    auto probe = sys.spawn(probe_actor, &db.db(), &done);
    caf::anon_send(probe, read_atom::value, id);
    auto end = done.wait("baseline probe");
    us.push_back(micros_between(start, end));
  }
  return summarize_latencies(us);
}

}  // namespace

std::vector<row> run_wake(const config& cfg) {
  auto agents = std::min(cfg.wake_agents, cfg.agents);
  std::vector<double> p50, p99, base_p50, base_p99, ack_p50, ack_p99;
  for (std::size_t run = 0; run < cfg.runs; ++run) {
    auto o = run_ours(cfg, agents);
    auto b = run_baseline(cfg, agents);
    p50.push_back(o.p50_us);
    p99.push_back(o.p99_us);
    ack_p50.push_back(o.ack_p50_us);
    ack_p99.push_back(o.ack_p99_us);
    base_p50.push_back(b.p50_us);
    base_p99.push_back(b.p99_us);
    progress(cfg, "wake run " + std::to_string(run + 1) + ": p50/p99 " + std::to_string(o.p50_us)
                    + "/" + std::to_string(o.p99_us) + " us vs " + std::to_string(b.p50_us) + "/"
                    + std::to_string(b.p99_us) + " us");
  }
  row r;
  r.scenario = "wake";
  r.baseline = "caf-spawn+rocksdb-get";
  r.baseline_what = "per key, one at a time: spawn a bare CAF event-based actor, send it the key, "
                    "it does one RocksDB Get of a record-sized value written earlier and signals "
                    "completion the way our tick observer does";
  r.p50_us = summarize(p50);
  r.p99_us = summarize(p99);
  r.baseline_p50_us = summarize(base_p50);
  r.baseline_p99_us = summarize(base_p99);
  r.ratio = r.baseline_p99_us->median / r.p99_us->median;
  r.ratio_kind = "baseline_p99/ours_p99 (higher is better; 1 would mean no overhead)";
  r.runs = cfg.runs;
  r.extra["send_ack_p50_us"] = summarize(ack_p50);
  r.extra["send_ack_p99_us"] = summarize(ack_p99);
  r.notes["send_ack"] = "send_ack_*: from the send until send_async's callback ran on the "
                        "thread that wrote the inbox entry's group (inbox write committed, "
                        "agent actor spawned); the rest of the wake is LOAD, the tick and its "
                        "commit";
  r.notes["workload"] = std::to_string(agents)
                        + " hibernated no-op agents (async durability), each woken once by "
                          "send_async; latency from the send to the tick observer seeing its "
                          "committed message tick (includes the inbox write, the activation "
                          "with its RocksDB reads, the tick and its commit)";
  return {r};
}

}  // namespace ticktock::bench
