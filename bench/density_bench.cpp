// density: resident memory per agent and disk bytes per hibernated agent,
// against bare CAF actors (memory) and raw RocksDB keys holding only the
// agent id (disk).

#include <caf/all.hpp>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <thread>

#include "scenarios.hpp"

namespace ticktock::bench {

namespace {

using namespace std::chrono_literals;

struct density_run {
  double creates_per_s = 0;
  double resident_bytes = 0;    // RSS per resident agent
  double hibernated_disk = 0;   // disk bytes per hibernated agent
  double hibernated_rss = 0;    // RSS per agent left after hibernation
};

double per_agent(std::uint64_t before, std::uint64_t after, std::size_t n) {
  return (static_cast<double>(after) - static_cast<double>(before)) / static_cast<double>(n);
}

void compact(node& n) {
  if (auto err = n.store().compact())
    throw bench_error{"store::compact: " + err.to_string()};
}

density_run run_ours(const config& cfg) {
  auto agents = cfg.agents;
  temp_dir dir{cfg.dir};
  auto n = open_node(dir.path() / "data", durability::async, 2 * agents + 1000);
  compact(*n);
  auto rss_before = trimmed_rss_bytes();
  auto disk_before = n->store().disk_bytes();

  auto start = steady::now();
  create_agents(*n, agents, cfg);
  auto end = steady::now();
  poll_until([&] { return n->resident_count() == agents; }, 60s, "agents becoming resident");
  compact(*n);
  auto rss_resident = trimmed_rss_bytes();

  for (std::size_t i = 0; i < agents; ++i)
    if (auto err = n->hibernate(agent_name(i)))
      throw bench_error{"hibernate " + agent_name(i) + ": " + err.to_string()};
  poll_until([&] { return n->resident_count() == 0; },
             std::chrono::milliseconds{60'000 + agents}, "agents hibernating");
  compact(*n);
  auto rss_hibernated = trimmed_rss_bytes();
  auto disk_after = n->store().disk_bytes();
  n->shutdown();

  density_run r;
  r.creates_per_s = static_cast<double>(agents) / seconds_between(start, end);
  r.resident_bytes = per_agent(rss_before, rss_resident, agents);
  r.hibernated_disk = per_agent(disk_before, disk_after, agents);
  r.hibernated_rss = per_agent(rss_before, rss_hibernated, agents);
  return r;
}

// -- baselines -------------------------------------------------------------------

using ping_atom = caf::atom_constant<caf::atom("ping")>;

// A bare actor: bumps `started` once initialized and answers pings.
caf::behavior bare_actor(caf::event_based_actor*, latch_counter* started) {
  started->bump();
  return {
    [](ping_atom) {},
  };
}

double bare_caf_bytes(const config& cfg) {
  latch_counter started;
  caf::actor_system_config caf_cfg;
  caf_cfg.set("scheduler.max-threads", std::max(1u, std::thread::hardware_concurrency()));
  caf::actor_system sys{caf_cfg};
  std::vector<caf::actor> actors;
  actors.reserve(cfg.agents);
  started.reset(cfg.agents);
  auto rss_before = trimmed_rss_bytes();
  for (std::size_t i = 0; i < cfg.agents; ++i)
    actors.push_back(sys.spawn(bare_actor, &started));
  started.wait(std::chrono::milliseconds{60'000 + cfg.agents}, "bare CAF actors starting");
  auto rss_after = trimmed_rss_bytes();
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  actors.clear();
  return per_agent(rss_before, rss_after, cfg.agents);
}

double raw_id_key_bytes(const config& cfg) {
  temp_dir dir{cfg.dir};
  raw_db db{dir.path() / "raw", {"agents"}, false};
  db.compact();
  auto before = db.disk_bytes();
  rocksdb::WriteBatch batch;
  auto flush_batch = [&] {
    auto st = db.db().Write(rocksdb::WriteOptions{}, &batch);
    if (!st.ok())
      throw bench_error{"raw RocksDB write: " + st.ToString()};
    batch.Clear();
  };
  for (std::size_t i = 0; i < cfg.agents; ++i) {
    batch.Put(db.cf(0), agent_name(i), rocksdb::Slice{});
    if (batch.Count() == 1000)
      flush_batch();
  }
  flush_batch();
  db.compact();
  return per_agent(before, db.disk_bytes(), cfg.agents);
}

}  // namespace

std::vector<row> run_density(const config& cfg) {
  std::vector<double> creates, resident, disk, hib_rss, base_rss, base_disk;
  for (std::size_t run = 0; run < cfg.runs; ++run) {
    auto o = run_ours(cfg);
    creates.push_back(o.creates_per_s);
    resident.push_back(o.resident_bytes);
    disk.push_back(o.hibernated_disk);
    hib_rss.push_back(o.hibernated_rss);
    base_rss.push_back(bare_caf_bytes(cfg));
    base_disk.push_back(raw_id_key_bytes(cfg));
    progress(cfg, "density run " + std::to_string(run + 1) + ": " + std::to_string(o.resident_bytes)
                    + " B resident (bare CAF " + std::to_string(base_rss.back()) + "), "
                    + std::to_string(o.hibernated_disk) + " B on disk (raw key "
                    + std::to_string(base_disk.back()) + ")");
  }
  row r;
  r.scenario = "density";
  r.baseline = "bare-caf+raw-rocksdb-id-key";
  r.baseline_what = "memory: RSS per bare CAF 0.17 event-based actor (" + std::to_string(cfg.agents)
                    + " spawned and started); disk: live SST bytes per RocksDB key holding only "
                      "the agent id (empty value), flushed and compacted the same way";
  r.ops_per_s = summarize(creates);
  r.runs = cfg.runs;
  r.extra["bytes_per_resident_agent"] = summarize(resident);
  r.extra["bytes_per_hibernated_agent"] = summarize(disk);
  r.extra["rss_bytes_per_hibernated_agent"] = summarize(hib_rss);
  r.extra["baseline_bytes_per_resident_agent"] = summarize(base_rss);
  r.extra["baseline_bytes_per_hibernated_agent"] = summarize(base_disk);
  r.ratio = r.extra["bytes_per_resident_agent"].median
            / r.extra["baseline_bytes_per_resident_agent"].median;
  r.ratio_kind = "ours/baseline bytes per resident agent (overhead multiple, lower is better); "
                 "disk_ratio_vs_baseline likewise for hibernated bytes on disk";
  r.extra["disk_ratio_vs_baseline"] =
    summarize({r.extra["bytes_per_hibernated_agent"].median
               / r.extra["baseline_bytes_per_hibernated_agent"].median});
  r.notes["workload"] = std::to_string(cfg.agents)
                        + " no-op agents created one by one (ops_per_s is creates/s including "
                          "their init ticks), all resident, then all hibernated; RSS deltas "
                          "after store().compact() and malloc_trim(0); disk is "
                          "store().disk_bytes() delta (live SST + WAL) after compaction; the "
                          "no-op agent's user state is 0 bytes on disk";
  return {r};
}

}  // namespace ticktock::bench
