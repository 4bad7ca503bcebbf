#pragma once

// CAF access to agents, for framework users who write CAF code. This is the
// only public header of ticktock that includes CAF.

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>

#include "ticktock/actors/node.hpp"

namespace caf {
class actor_system;
}

namespace ticktock {

/// (deliver_atom, payload): append a message to the agent's durable inbox.
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;

/// Typed handle of an agent. The reply is the inbox seq once the message is
/// durable; failures are caf::error values of category "ticktock" whose code
/// is a ticktock::errc (use caf_errc to read it).
using agent_handle =
  caf::typed_actor<caf::replies_to<deliver_atom, std::string>::with<std::uint64_t>>;

/// A handle for agent `id` on `n`, valid while the node runs and across the
/// agent's hibernation. Errors: invalid_id, not_found, shutting_down.
expected<agent_handle> caf_handle(node& n, const std::string& id);

/// The node's actor system, for spawning your own actors next to the agents.
caf::actor_system& caf_system(node& n);

/// The ticktock code carried by a caf::error from an agent handle, or
/// errc::ok if the error is of another category.
errc caf_errc(const caf::error& err) noexcept;

}  // namespace ticktock
