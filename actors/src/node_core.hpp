#pragma once

// Internals of a node shared by its agent actors: the store, the committer,
// the directory, the scheduler and the CAF actor system.

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <map>
#include <thread>
#include <unordered_map>

#include "committer.hpp"
#include "directory.hpp"
#include "gate.hpp"
#include "keyring.hpp"
#include "scheduler.hpp"
#include "services.hpp"
#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

struct node_core {
  node_options options;
  agent_registry registry;
  std::shared_ptr<ticktock::clock> clock;
  std::unique_ptr<storage::store> store;
  std::unique_ptr<keyring> keys;
  std::unique_ptr<committer> commits;
  std::unique_ptr<directory> dir;
  std::unique_ptr<scheduler> alarms;
  std::unique_ptr<detail::gate> gate;
  std::unique_ptr<service_runner> services;
  std::unique_ptr<caf::actor_system_config> caf_config;
  std::unique_ptr<caf::actor_system> system;
  std::atomic<bool> closing{false};

  // Inbox entries durable but not yet consumed (for wait_idle).
  std::mutex idle_mtx;
  std::condition_variable idle_cv;
  std::int64_t outstanding = 0;

  // node::drain: once `draining`, no batch of ticks starts; `running` counts
  // the batches started and not yet released. Atomics (both sequentially
  // consistent), so that a batch either is counted before drain looks or
  // sees `draining`; drain waits on idle_cv.
  std::atomic<bool> draining{false};
  std::atomic<std::int64_t> running{0};
  /// A batch of ticks is about to start: false (and nothing counted) when
  /// the node is draining.
  bool begin_batch();
  /// The batch begin_batch counted was released (or dropped).
  void end_batch();

  // Ids terminated in this process, so status can say "terminated".
  std::mutex terminated_mtx;
  std::set<std::string> terminated;

  // Create, terminate and import of one id run one at a time: what each does
  // around its commit (the directory, the terminated set, keys, policies,
  // container files) never interleaves with another's on the same id.
  std::array<std::mutex, 64> lifecycle_mtx;
  std::mutex& lifecycle(const std::string& id) {
    return lifecycle_mtx[std::hash<std::string>{}(id) % lifecycle_mtx.size()];
  }

  // The idle sweeper: hibernates agents idle for options.idle_timeout.
  std::thread sweeper;
  std::mutex sweeper_mtx;
  std::condition_variable sweeper_cv;
  bool sweeper_stop = false;
  void sweep_loop();

  std::shared_mutex observer_mtx;
  std::vector<std::pair<std::uint64_t, std::function<void(const tick_event&)>>> observers;
  std::uint64_t next_observer = 1;

  // Limits agents hit in this process (for status): throttling and counts.
  struct limit_state {
    time_point throttled_until{};
    std::map<std::string, std::uint64_t> hits;
  };
  std::mutex limits_mtx;
  std::unordered_map<std::string, limit_state> limit_states;
  void limit_hit(const std::string& agent, const std::string& limit,
                 std::optional<time_point> throttled_until = std::nullopt);
  /// The agent ticks again before its throttle's end (its limits changed):
  /// its status no longer says throttled.
  void throttle_over(const std::string& agent);

  // Metrics, updated after every committed attempt.
  std::mutex metrics_mtx;
  node_metrics metrics;

  /// Routes entries a commit produced to their agents and counts them.
  void deliver(storage::op_result& r);
  /// `n` entries were consumed (or will never be).
  void consumed(std::int64_t n);
  /// Marks an agent errored in the directory and, when `durable`, the store.
  /// `retired`: the marking actor's flag (directory.hpp), so that no mark
  /// lands once its agent is being deleted.
  void mark_errored(const std::string& id, const std::string& reason,
                    std::shared_ptr<const std::atomic<bool>> retired = nullptr,
                    bool durable = true);
  /// `first_of_write`: the event's tick is the first of its write (counted
  /// in metrics.tick_writes).
  void notify(const tick_event& ev, bool first_of_write);
};

/// Spawns the CAF actor hosting agent `id`.
caf::actor spawn_agent_actor(node_core& core, const std::string& id,
                             std::shared_ptr<residency> res);

}  // namespace ticktock::detail
