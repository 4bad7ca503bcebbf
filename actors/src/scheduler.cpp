#include "scheduler.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"

namespace ticktock::detail {

scheduler::scheduler(const ticktock::clock& clock, storage::store& store, fire_fn fire,
                     storage::fire_alarms_op base)
  : clock_(clock), store_(store), fire_(std::move(fire)), base_(base) {
  next_ = store_.next_alarm_due();
}

void scheduler::start() { thread_ = std::thread([this] { loop(); }); }

scheduler::~scheduler() { stop(); }

void scheduler::hint(time_point due) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (next_ && *next_ <= due)
      return;
    next_ = due;
  }
  cv_.notify_one();
}

void scheduler::stop() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable())
    thread_.join();
}

void scheduler::loop() {
  detail::name_this_thread("tt-alarms");
  // Re-read the clock at least this often, so an injected clock that jumps
  // (or a wall clock that is adjusted) is noticed.
  constexpr auto max_sleep = std::chrono::milliseconds{200};
  std::unique_lock<std::mutex> lock{mtx_};
  while (!stopping_) {
    auto now = clock_.now();
    if (!next_ || *next_ > now) {
      auto wait = next_ ? std::min<std::chrono::microseconds>(*next_ - now, max_sleep) : max_sleep;
      cv_.wait_for(lock, wait);
      continue;
    }
    next_.reset();
    lock.unlock();
    auto op = base_;
    op.now = now;
    auto result = fire_(op);
    lock.lock();
    if (result.err) {
      next_ = now + std::chrono::milliseconds{100};  // storage failure: try again soon
      continue;
    }
    if (result.more_alarms) {
      next_ = now;
      continue;
    }
    auto due = store_.next_alarm_due();
    if (due && (!next_ || *due < *next_))
      next_ = due;
  }
}

}  // namespace ticktock::detail
