// What every scenario shares: the no-op agent type, opening a node and
// creating its agents.

#include <iostream>

#include "scenarios.hpp"

namespace ticktock::bench {

namespace {

struct noop_state {};

/// Does nothing: a tick costs only the runtime's own work.
struct noop_agent : agent<noop_state> {
  void on_trigger(context&, const trigger&) override {}
};

}  // namespace

agent_registry bench_registry() {
  agent_registry r;
  if (auto err = r.add<noop_agent>("noop"))
    throw bench_error{"registering the noop agent: " + err.to_string()};
  return r;
}

std::unique_ptr<node> open_node(const std::filesystem::path& dir, durability d,
                                std::size_t max_resident) {
  node_options opts;
  opts.data_dir = dir;
  opts.durability = d;
  // No agent may hibernate on its own while a scenario runs.
  opts.idle_timeout = std::chrono::hours{1};
  opts.max_resident = max_resident;
  // Inbox depth is not what is measured; never deadletter a bench message.
  opts.limits.inbox_limit = 0;
  auto n = node::open(opts, bench_registry());
  if (!n)
    throw bench_error{"node::open: " + n.error_value().to_string()};
  return std::move(*n);
}

void create_agents(node& n, std::size_t count, const config& cfg) {
  for (std::size_t i = 0; i < count; ++i)
    if (auto err = n.create(agent_name(i), "noop"))
      throw bench_error{"create " + agent_name(i) + ": " + err.to_string()};
  auto timeout = std::chrono::milliseconds{60'000 + count};
  if (!n.wait_idle(timeout))
    throw bench_error{"the init ticks of " + std::to_string(count) + " agents did not finish within "
                      + std::to_string(timeout.count()) + " ms"};
  progress(cfg, "created " + std::to_string(count) + " agents");
}

void progress(const config& cfg, const std::string& line) {
  if (cfg.verbose)
    std::cerr << "ticktock-bench: " << line << std::endl;
}

}  // namespace ticktock::bench
