#include "ticktock/runtime/plugin.hpp"

#include <dlfcn.h>

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
  auto before = registry.names().size();
  int rc = entry(reinterpret_cast<ticktock_registry*>(&registry), TICKTOCK_PLUGIN_ABI_VERSION);
  if (rc != 0)
    return fail("refused to register (returned " + std::to_string(rc) + ")");
  if (registry.names().size() == before)
    return fail("registered no agent type");
  return {};
}

}  // namespace ticktock
