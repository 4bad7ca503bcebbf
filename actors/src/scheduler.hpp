#pragma once

// The durable alarm scheduler: sleeps until the earliest alarm in RocksDB is
// due, then moves due alarms into their agents' inboxes (one write that also
// re-arms periodic alarms), so an alarm fires exactly once per occurrence.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

class scheduler {
public:
  /// Commits a fire_alarms_op and returns its result (blocking).
  using fire_fn = std::function<storage::op_result(const storage::fire_alarms_op&)>;

  scheduler(const ticktock::clock& clock, storage::store& store, fire_fn fire,
            storage::fire_alarms_op base);
  ~scheduler();

  /// Starts the thread; separate from construction so that the owner can
  /// publish the pointer before the first alarm fires.
  void start();

  /// An alarm due at `due` was set; wakes the thread if it is earlier than
  /// what it waits for.
  void hint(time_point due);
  void stop();

private:
  void loop();

  const ticktock::clock& clock_;
  storage::store& store_;
  fire_fn fire_;
  storage::fire_alarms_op base_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::optional<time_point> next_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ticktock::detail
