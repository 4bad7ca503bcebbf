#pragma once

// Group commit: whoever leads takes every write that queued up while the
// previous group was being written and commits them in one WriteBatch, then
// runs their callbacks in order. The committer's own thread leads by default;
// with `async` durability (no fsync) a submitter that asks to may lead in
// its own thread instead (an agent actor's tick batch on its CAF worker),
// which spares the hand-off to the committer thread and back; on an event
// loop, at the end of what the loop has queued, so that the ticks of other
// actors the loop runs meanwhile join the group.

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
  /// Runs on the leading thread after the group holding the op committed
  /// (or failed), in submission order. Must not block.
  using callback = std::function<void(storage::op_result&)>;

  /// `inline_leaders`: submitters may lead (see submit); for `async`
  /// durability, where a write does not wait for the disk.
  committer(storage::store& store, std::size_t max_group, bool inline_leaders);
  ~committer();

  /// Queues `op`. Returns false (and never calls `done`) once stopped. With
  /// `may_lead` (and inline leaders allowed), when no group is being written
  /// the caller writes it, with whatever else queued up, before returning:
  /// so it must hold no lock a callback could take. On a thread that runs an
  /// event loop (detail::this_thread_loop) it posts that write to the end of
  /// the loop's queue instead, and ops submitted meanwhile join it; the loop
  /// must then run until stop() returns.
  bool submit(storage::write_op op, callback done, bool may_lead = false);

  /// Commits what is queued, then stops the thread; waits for a write posted
  /// to a loop. Idempotent.
  void stop();

private:
  void loop();
  // Writes groups until the queue is empty; called with `lock` held and
  // leading_ set, returns with both.
  void lead(std::unique_lock<std::mutex>& lock);
  // lead() by a submitter (leading_ set by it), then hands back.
  void lead_here(std::unique_lock<std::mutex>& lock);

  storage::store& store_;
  std::size_t max_group_;
  bool inline_leaders_;
  bool leading_ = false;  // a group is being written (by the thread or a submitter)
  std::chrono::microseconds spin_{50};
  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::pair<storage::write_op, callback>> queue_;
  std::atomic<bool> queued_{false};  // set by submit, cleared when the queue is taken
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ticktock::detail
