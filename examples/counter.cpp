// Example: a counter agent.
//
// Teaches: an agent class with typed state, registering it by name, creating
// an agent on a node, sending it messages, and reading its committed state
// and trajectory. Run: ./build/examples/example_counter [data-dir]

#include <cstdio>
#include <filesystem>

#include <ticktock/ticktock.hpp>

// The state is a plain struct: the default serializer stores it.
struct counter_state {
  std::uint64_t count = 0;
  std::string last;
};

struct counter : ticktock::agent<counter_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    if (t.kind != ticktock::trigger_kind::message)
      return;  // init and other triggers leave the count alone
    ++state().count;
    state().last = t.payload;
    ctx.emit("count is " + std::to_string(state().count));
    ctx.log("added one for '" + t.payload + "'");
  }
};

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  std::filesystem::path dir = argc > 1 ? argv[1] : "counter-example-data";
  std::filesystem::remove_all(dir);

  ticktock::agent_registry types;
  types.add<counter>("counter");

  ticktock::node_options options;
  options.data_dir = dir;
  auto node = ticktock::node::open(options, std::move(types));
  if (!node) {
    std::fprintf(stderr, "open: %s\n", node.error_value().to_string().c_str());
    return 1;
  }
  auto& n = **node;

  if (auto err = n.create("visits", "counter")) {
    std::fprintf(stderr, "create: %s\n", err.to_string().c_str());
    return 1;
  }
  // Each send returns once the message is durable in the agent's inbox.
  for (auto page : {"/", "/about", "/pricing"})
    if (auto r = n.send("visits", page); !r)
      return 1;
  n.wait_idle(10s);

  auto state = n.state<counter_state>("visits");
  auto status = n.status("visits");
  std::printf("count=%llu last=%s ticks=%llu\n", static_cast<unsigned long long>(state->count),
              state->last.c_str(), static_cast<unsigned long long>(status->last_tick));
  for (auto& ev : *n.outbox("visits"))
    std::printf("outbox #%llu: %s\n", static_cast<unsigned long long>(ev.seq), ev.payload.c_str());
  auto chain = n.verify("visits");
  std::printf("trajectory: %llu records, chain %s\n",
              static_cast<unsigned long long>(chain->records), chain->ok ? "verifies" : "BROKEN");

  n.shutdown();
  std::filesystem::remove_all(dir);
  return state->count == 3 && chain->ok ? 0 : 1;
}
