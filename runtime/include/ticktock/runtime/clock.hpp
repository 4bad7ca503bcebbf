#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ticktock {

/// Wall-clock instant with microsecond resolution; what `ctx.now()` returns.
using time_point = std::chrono::sys_time<std::chrono::microseconds>;
using duration = std::chrono::microseconds;

/// Source of wall-clock time for a node or a test harness. Implementations
/// must be thread-safe.
class clock {
public:
  virtual ~clock();
  virtual time_point now() const = 0;
  /// A monotonic reading for measuring how long something took (a tick's
  /// `duration_ns`): std::chrono::steady_clock's unless overridden.
  virtual std::chrono::nanoseconds elapsed() const;
};

/// The real wall clock (std::chrono::system_clock).
class system_clock final : public clock {
public:
  time_point now() const override;
};

/// A clock that moves only when told to; for deterministic tests.
class manual_clock final : public clock {
public:
  explicit manual_clock(time_point start = time_point{std::chrono::seconds{1'700'000'000}})
    : us_(start.time_since_epoch().count()) {}

  time_point now() const override { return time_point{duration{us_.load()}}; }
  void advance(duration d) { us_ += d.count(); }
  void set(time_point t) { us_ = t.time_since_epoch().count(); }

private:
  std::atomic<std::int64_t> us_;
};

}  // namespace ticktock
