#pragma once

// Messages of the agent actor (atoms are at most 10 characters in CAF 0.17).

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <cstdint>
#include <memory>

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
};

using entry_ptr = std::shared_ptr<const storage::inbox_entry>;

}  // namespace ticktock::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ticktock::detail::entry_ptr)
