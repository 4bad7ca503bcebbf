#pragma once

// Event-loop threads shared by CAF's actors and the HTTP driver.
//
// By default a node runs its actors on CAF's work-stealing scheduler and the
// HTTP driver its connections on threads of its own, so every request to an
// agent crosses threads twice (the connection's thread hands the trigger to a
// CAF worker, the worker hands the reply back), each hand-off a wake-up. With
// io_loops installed, each thread runs one Asio event loop that serves both
// its connections and the actors they send to: an actor that a connection's
// thread makes ready runs on that thread, after the handler that sent to it,
// and its reply is posted back to the same loop; the ticks a loop runs in one
// turn are written as one group at the end of it. A message sent from any
// other thread (alarms, the committer, other drivers) goes to the loops in
// turn. Pinned (`create(n, true)`), each loop's thread stays on a CPU of its
// own, so two busy loops never queue on one CPU while another idles.
//
// The node owns the threads (they start with its actor system and stop with
// it); an http_server given the same io_loops places its connections on them
// and must be stopped before the node closes, as always, and not from one of
// the loops' threads.

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace caf {
class actor_system_config;
}

namespace ticktock::drivers {

class io_loops {
public:
  /// `threads` event loops (0: one per CPU the calling thread may use, as
  /// node_options::threads).
  /// `pin`: loop i's thread runs only on the i-th CPU of those the process
  /// may use (its affinity when the node opens), if there are at least as
  /// many CPUs as loops; otherwise, or without `pin`, the kernel places them.
  static std::shared_ptr<io_loops> create(std::size_t threads, bool pin = false);
  /// The CPUs that `loops` pinned loops run on, loop i on element i: the
  /// first `loops` CPUs the calling thread may use, or none if it may use
  /// fewer.
  static std::vector<int> cpus_for(std::size_t loops);
  ~io_loops();

  std::size_t size() const noexcept;
  /// True while they are the scheduler of an open node (their threads run).
  bool running() const noexcept;
  /// The hook for node_options::configure_caf: makes these loops the actor
  /// system's scheduler. One node at a time: node::open fails for a second
  /// one while the first is open.
  std::function<void(caf::actor_system_config&)> scheduler();
  /// Loop i; its thread runs while the node that uses it is open.
  boost::asio::io_context& context(std::size_t i) noexcept;

  struct impl;

private:
  explicit io_loops(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;  // shared with the node's scheduler
};

}  // namespace ticktock::drivers
