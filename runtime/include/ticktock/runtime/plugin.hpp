#pragma once

#include <filesystem>

#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/plugin.h"
#include "ticktock/runtime/registry.hpp"

namespace ticktock {

/// The registry behind the C handle a plugin receives.
inline agent_registry& registry_of(ticktock_registry* r) {
  return *reinterpret_cast<agent_registry*>(r);
}

/// Loads the plugin at `path` (dlopen) and lets it register its agent types
/// into `registry`. The library stays loaded for the life of the process.
/// The plugin's types are added only if none of them is registered already.
/// Errors: invalid_argument naming the path and the reason (cannot open, no
/// entry point, the plugin refused, it registered no type, or a type that is
/// already registered, named).
error load_plugin(const std::filesystem::path& path, agent_registry& registry);

}  // namespace ticktock
