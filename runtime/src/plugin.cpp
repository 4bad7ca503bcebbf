#include "ticktock/runtime/plugin.hpp"

#include <dlfcn.h>

#include <memory>
#include <string>

namespace ticktock {

error load_plugin(const std::filesystem::path& path, agent_registry& registry) {
  auto fail = [&](const std::string& why) {
    return error{errc::invalid_argument, "plugin " + path.string() + ": " + why};
  };
  // RTLD_LOCAL: plugins do not see each other's symbols; RTLD_NOW: a missing
  // symbol fails here rather than at the first tick.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    return fail(why ? why : "cannot be loaded");
  }
  auto* entry = reinterpret_cast<ticktock_plugin_register_fn>(dlsym(lib, TICKTOCK_PLUGIN_ENTRY));
  if (!entry) {
    dlclose(lib);
    return fail("does not export " TICKTOCK_PLUGIN_ENTRY);
  }
  // The plugin registers into a registry of its own; its types join
  // `registry` only if none of them is taken, so a duplicate is named (a
  // plugin that ignored add's error would otherwise lose its type silently
  // to the one registered first) and nothing of a refused plugin stays.
  auto own = std::make_shared<agent_registry>();
  int rc = entry(reinterpret_cast<ticktock_registry*>(own.get()), TICKTOCK_PLUGIN_ABI_VERSION);
  if (rc != 0)
    return fail("refused to register (returned " + std::to_string(rc) + ")");
  auto names = own->names();
  if (names.empty())
    return fail("registered no agent type");
  for (auto& name : names)
    if (registry.contains(name))
      return fail("registers agent type '" + name
                  + "', which is already registered (built in, or by an earlier plugin)");
  for (auto& name : names)
    registry.add(name, [own, name] { return own->make(name); });
  return {};
}

}  // namespace ticktock
