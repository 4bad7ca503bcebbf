#pragma once

// The event loop that runs on the calling thread, if one does (internal).
// drivers::io_loops registers each of its loops on its own thread; the
// committer uses it to defer a tick's group write to the end of what the
// loop has queued, so that the ticks of actors made ready meanwhile (by the
// same read of many connections) join the same write.

#include <functional>

namespace ticktock::detail {

class event_loop {
public:
  /// Runs `fn` on this loop's thread after what the loop has queued now.
  /// Whoever posts must outlive the call, or be sure the loop runs it.
  virtual void post(std::function<void()> fn) = 0;

protected:
  ~event_loop() = default;
};

/// This thread's event loop, or null.
event_loop* this_thread_loop() noexcept;
/// Registers (or, with null, unregisters) the calling thread's event loop.
void set_this_thread_loop(event_loop* loop) noexcept;

}  // namespace ticktock::detail
