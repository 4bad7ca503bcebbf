#pragma once

// Messages of the agent actor (atoms are at most 10 characters in CAF 0.17).

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <memory>

#include "ticktock/storage/records.hpp"

namespace ticktock::detail {

/// (notify_atom, seq, entry): inbox entry `seq` is durable.
using notify_atom = caf::atom_constant<caf::atom("notify")>;
/// (commit_atom, token, error message): the write of attempt `token` finished;
/// an empty message means it committed.
using commit_atom = caf::atom_constant<caf::atom("commit")>;
/// (retry_atom): the backoff after a failed attempt is over.
using retry_atom = caf::atom_constant<caf::atom("retry")>;
/// (idle_atom): check whether the idle timeout passed.
using idle_atom = caf::atom_constant<caf::atom("idle")>;
/// (hibernate_atom): hibernate as soon as idle.
using hibernate_atom = caf::atom_constant<caf::atom("hibernate")>;
/// (wake_atom): no-op that activates the agent.
using wake_atom = caf::atom_constant<caf::atom("wake")>;

using entry_ptr = std::shared_ptr<const storage::inbox_entry>;

}  // namespace ticktock::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(ticktock::detail::entry_ptr)
