// Example: an agent type in a plugin, loaded by `ticktockd --plugin`.
//
// Teaches: the C entry point ticktock_plugin_register. Build it as a shared
// library against the same ticktock headers as the server:
//   add_library(greeter MODULE greeter_plugin.cpp)
//   target_link_libraries(greeter PRIVATE ticktock::runtime)

#include <ticktock/runtime/agent.hpp>
#include <ticktock/runtime/context.hpp>
#include <ticktock/runtime/http.hpp>
#include <ticktock/runtime/plugin.hpp>
#include <ticktock/runtime/trigger.hpp>

namespace {

struct greeter_state {
  std::uint64_t greeted = 0;
};

// Greets whoever writes to it, by message or HTTP.
struct greeter : ticktock::agent<greeter_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    auto req = ticktock::http_request::from(t);
    if (t.kind != ticktock::trigger_kind::message && !req)
      return;
    ++state().greeted;
    auto name = req ? req->body : t.payload;
    auto greeting = "hello, " + (name.empty() ? std::string{"stranger"} : name);
    ctx.emit(greeting);
    if (req)
      ctx.reply(200, greeting);
  }
  std::string summary() const override {
    return "{\"greeted\":" + std::to_string(state().greeted) + "}";
  }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) int
ticktock_plugin_register(ticktock_registry* registry, int abi_version) {
  if (abi_version != TICKTOCK_PLUGIN_ABI_VERSION)
    return 1;
  return ticktock::registry_of(registry).add<greeter>("greeter") ? 2 : 0;
}
