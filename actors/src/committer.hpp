#pragma once

// Group commit: one thread takes every write that queued up while the
// previous group was being written and commits them in one WriteBatch.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

class committer {
public:
  /// Runs on the committer thread after the group holding the op committed
  /// (or failed). Must not block.
  using callback = std::function<void(storage::op_result&)>;

  committer(storage::store& store, std::size_t max_group);
  ~committer();

  /// Queues `op`. Returns false (and never calls `done`) once stopped.
  bool submit(storage::write_op op, callback done);

  /// Commits what is queued, then stops the thread. Idempotent.
  void stop();

private:
  void loop();

  storage::store& store_;
  std::size_t max_group_;
  std::chrono::microseconds spin_{50};
  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::pair<storage::write_op, callback>> queue_;
  std::atomic<bool> queued_{false};  // set by submit, cleared when the queue is taken
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ticktock::detail
