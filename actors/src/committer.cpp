#include "committer.hpp"
#include "ticktock/runtime/detail/event_loop.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"

namespace ticktock::detail {

namespace {
// How often an idle committer retries a failed store.
constexpr std::chrono::milliseconds recovery_poll{100};
}  // namespace

committer::committer(storage::store& store, std::size_t max_group, bool inline_leaders)
  : store_(store), max_group_(max_group == 0 ? 1 : max_group), inline_leaders_(inline_leaders),
    thread_([this] { loop(); }) {}

committer::~committer() { stop(); }

bool committer::submit(storage::write_op op, callback done, bool may_lead) {
  std::unique_lock<std::mutex> lock{mtx_};
  if (stopping_)
    return false;
  queue_.emplace_back(std::move(op), std::move(done));
  if (leading_)
    return true;  // the leader takes it with its next group
  if (may_lead && inline_leaders_) {
    leading_ = true;  // taken by this submitter, now or from its loop
    if (auto* loop = detail::this_thread_loop()) {
      // On an event loop: write at the end of what it has queued, so that
      // the ticks of the actors made ready meanwhile join this group. The
      // committer outlives the post, since stop() waits for the leader.
      lock.unlock();
      loop->post([this] {
        std::unique_lock<std::mutex> relock{mtx_};
        lead_here(relock);
      });
      return true;
    }
    lead_here(lock);
    return true;
  }
  queued_.store(true, std::memory_order_release);
  lock.unlock();
  cv_.notify_one();
  return true;
}

void committer::stop() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stopping_ && !thread_.joinable())
      return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable())
    thread_.join();
}

void committer::lead_here(std::unique_lock<std::mutex>& lock) {
  lead(lock);
  leading_ = false;
  // stop() waits for the last leader; after a failed write the thread takes
  // over the recovery.
  if (stopping_ || store_.write_failure())
    cv_.notify_one();
}

void committer::lead(std::unique_lock<std::mutex>& lock) {
  std::vector<storage::write_op> ops;
  std::vector<callback> callbacks;
  while (!queue_.empty()) {
    queued_.store(false, std::memory_order_relaxed);
    // Exclusive ops (create, terminate, alarms, ...) form a group of their
    // own; ticks and enqueues batch up to max_group_.
    bool exclusive = storage::is_exclusive(queue_.front().first);
    while (!queue_.empty() && ops.size() < max_group_
           && (ops.empty() || (!exclusive && !storage::is_exclusive(queue_.front().first)))) {
      ops.push_back(std::move(queue_.front().first));
      callbacks.push_back(std::move(queue_.front().second));
      queue_.pop_front();
      if (exclusive)
        break;
    }
    lock.unlock();
    auto results = store_.apply(ops);
    for (std::size_t i = 0; i < callbacks.size(); ++i)
      if (callbacks[i])
        callbacks[i](results[i]);
    ops.clear();
    callbacks.clear();
    lock.lock();
  }
}

void committer::loop() {
  detail::name_this_thread("tt-commit");
  for (;;) {
    std::unique_lock<std::mutex> lock{mtx_};
    if (queue_.empty() && !stopping_) {
      // A tick's commit often follows its inbox write within tens of
      // microseconds; poll briefly before paying for a futex wake-up.
      lock.unlock();
      auto until = std::chrono::steady_clock::now() + spin_;
      // Polls a flag, not the mutex, so that submitters never contend.
      while (!queued_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      lock.lock();
    }
    // A submitter leading meanwhile drains the queue itself.
    auto ready = [&] { return !leading_ && (stopping_ || !queue_.empty()); };
    // After a failed write the store is recovered from here too, not only
    // by the next write: one that no write comes to recovers all the same
    // (and /healthz says so). recover_now keeps the store's backoff.
    while (!ready()) {
      if (!store_.write_failure()) {
        cv_.wait(lock, [&] { return ready() || store_.write_failure(); });
        continue;
      }
      if (cv_.wait_for(lock, recovery_poll, ready) || leading_)
        continue;
      leading_ = true;
      lock.unlock();
      store_.recover_now();
      lock.lock();
      leading_ = false;
    }
    if (queue_.empty())
      return;  // stopping, drained, and no submitter leads
    leading_ = true;
    lead(lock);
    leading_ = false;
  }
}

}  // namespace ticktock::detail
