#pragma once

// Messages of the agent actor (atoms are at most 10 characters in CAF 0.17).

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::detail {

/// (notify_atom, seq, entry): inbox entry `seq` is durable.
using notify_atom = caf::atom_constant<caf::atom("notify")>;
/// (commit_atom, token, error message): the write of attempt `token` finished;
/// an empty message means it committed.
using commit_atom = caf::atom_constant<caf::atom("commit")>;
/// (ctl_atom, ctl_op): control of the agent's lifecycle. One message type
/// with an operand keeps the behavior (allocated per resident agent) small.
using ctl_atom = caf::atom_constant<caf::atom("ctl")>;
enum class ctl_op : std::uint8_t {
  wake = 0,       ///< no-op that activates the agent and looks for work
  retry = 1,      ///< the backoff after a failed attempt is over
  idle = 2,       ///< from the idle sweeper: hibernate if idle for idle_timeout
  hibernate = 3,  ///< hibernate as soon as idle (LRU eviction, ctl)
  throttle_end = 4,  ///< the ticks_per_minute wait is over
  limits_changed = 5,  ///< count the last minute's ticks against the new limits
};

using entry_ptr = std::shared_ptr<const storage::inbox_entry>;

/// (direct_atom, direct_ptr): a direct trigger (node::run_trigger).
using direct_atom = caf::atom_constant<caf::atom("direct")>;

struct node_core;

/// A trigger handed to an agent in memory, with whom to tell how it ended.
/// Answered exactly once: by finish(), or else when the last reference goes
/// (the agent stopped first), with shutting_down. Counted as outstanding in
/// `core` (node::wait_idle) until then.
class direct_trigger {
public:
  using done_fn = std::function<void(expected<tick_event>)>;
  direct_trigger(node_core& core, std::string agent, storage::inbox_entry e, done_fn done)
    : entry(std::move(e)), core_(core), agent_(std::move(agent)), done_(std::move(done)) {}
  direct_trigger(const direct_trigger&) = delete;
  direct_trigger& operator=(const direct_trigger&) = delete;
  ~direct_trigger();

  void finish(expected<tick_event> r);

  storage::inbox_entry entry;  ///< its seq is assigned by the agent's actor
  /// The retired flag of the actor it was handed to (directory.hpp): set,
  /// its agent was deleted, whatever agent of the id there is now.
  std::shared_ptr<const std::atomic<bool>> actor_retired;

private:
  node_core& core_;
  std::string agent_;
  done_fn done_;
};

using direct_ptr = std::shared_ptr<direct_trigger>;

}  // namespace ticktock::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ticktock::detail::entry_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ticktock::detail::direct_ptr)
