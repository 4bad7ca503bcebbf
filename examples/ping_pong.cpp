// Example: two agents playing ping-pong by messages.
//
// Teaches: ctx.send to another agent. A message staged in a tick is written
// into the recipient's inbox in the same RocksDB batch as the sender's state,
// so it is delivered exactly once, and only if the sender's tick commits.
// Run: ./build/examples/example_ping_pong [data-dir]

#include <cstdio>
#include <filesystem>

#include <ticktock/ticktock.hpp>

struct player_state {
  std::uint64_t hits = 0;
};

// Returns the ball until it has hit it `rally` times (from its config).
struct player : ticktock::agent<player_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    if (t.kind != ticktock::trigger_kind::message)
      return;
    auto rally = std::stoull(ctx.config());
    if (state().hits >= rally)
      return;  // the rally is over
    ++state().hits;
    auto opponent = t.from.empty() ? std::string{"pong"} : t.from;
    ctx.log(ctx.self() + " hits #" + std::to_string(state().hits));
    ctx.send(opponent, "ball");
  }
};

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  std::filesystem::path dir = argc > 1 ? argv[1] : "ping-pong-example-data";
  std::filesystem::remove_all(dir);

  ticktock::agent_registry types;
  types.add<player>("player");
  ticktock::node_options options;
  options.data_dir = dir;
  auto node = ticktock::node::open(options, std::move(types));
  if (!node)
    return 1;
  auto& n = **node;

  n.create("ping", "player", "10");
  n.create("pong", "player", "10");
  n.send("ping", "serve");  // from outside: ping hits first, to pong
  n.wait_idle(10s);

  auto ping = n.state<player_state>("ping")->hits;
  auto pong = n.state<player_state>("pong")->hits;
  std::printf("ping hit %llu times, pong hit %llu times\n", static_cast<unsigned long long>(ping),
              static_cast<unsigned long long>(pong));
  for (auto& rec : *n.trajectory("pong"))
    for (auto& line : rec.logs)
      std::printf("  pong tick %llu: %s\n", static_cast<unsigned long long>(rec.tick), line.c_str());

  n.shutdown();
  std::filesystem::remove_all(dir);
  return ping == 10 && pong == 10 ? 0 : 1;
}
