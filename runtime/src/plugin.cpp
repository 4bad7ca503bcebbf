#include "ticktock/runtime/plugin.hpp"

#include <dlfcn.h>

#include <exception>
#include <memory>
#include <string>

namespace ticktock {

error load_plugin(const std::filesystem::path& path, agent_registry& registry) {
  auto fail = [&](const std::string& why) {
    return error{errc::invalid_argument, "plugin " + path.string() + ": " + why};
  };
  // A file, as any path: dlopen would look a name without a slash up in the
  // system's library path instead (and could find another file of that name).
  std::error_code ec;
  auto file = std::filesystem::absolute(path, ec);
  if (ec)
    return fail(ec.message());
  // RTLD_LOCAL: plugins do not see each other's symbols; RTLD_NOW: a missing
  // symbol fails here rather than at the first tick.
  void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    std::string text = why ? why : "cannot be loaded";
    // dlerror begins with the file's name, which the message has already.
    if (auto prefix = file.string() + ": "; text.starts_with(prefix))
      text.erase(0, prefix.size());
    return fail(text);
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
  int rc = 0;
  try {
    rc = entry(reinterpret_cast<ticktock_registry*>(own.get()), TICKTOCK_PLUGIN_ABI_VERSION);
  } catch (const std::exception& e) {
    return fail(std::string{"threw while registering: "} + e.what());
  } catch (...) {
    return fail("threw while registering");
  }
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
