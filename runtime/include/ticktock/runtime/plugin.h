/* The C entry point of a ticktock agent plugin.
 *
 * A plugin is a shared library that exports
 *
 *     int ticktock_plugin_register(ticktock_registry* registry, int abi_version);
 *
 * ticktockd (--plugin lib.so) and ticktock::load_plugin call it once after
 * dlopen. It registers agent types and returns 0, or returns non-zero to
 * refuse (e.g. when abi_version != TICKTOCK_PLUGIN_ABI_VERSION). From C++,
 * ticktock::registry_of(registry), declared in <ticktock/runtime/plugin.hpp>
 * (which includes this file), gives the ticktock::agent_registry; agent
 * classes are C++, so a plugin must be built with the same compiler and
 * ticktock headers as the server. The name is C so that it is stable. */
#ifndef TICKTOCK_RUNTIME_PLUGIN_H
#define TICKTOCK_RUNTIME_PLUGIN_H

#define TICKTOCK_PLUGIN_ABI_VERSION 1
#define TICKTOCK_PLUGIN_ENTRY "ticktock_plugin_register"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ticktock_registry ticktock_registry;

typedef int (*ticktock_plugin_register_fn)(ticktock_registry* registry, int abi_version);

#ifdef __cplusplus
}
#endif

#endif
