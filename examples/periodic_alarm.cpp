// Example: an agent woken by a periodic alarm.
//
// Teaches: ctx.set_periodic_alarm. Alarms live in RocksDB: they survive
// restarts, and between firings the agent hibernates (its actor is stopped)
// and the alarm wakes it.
// Run: ./build/examples/example_periodic_alarm [data-dir]

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include <ticktock/ticktock.hpp>

struct heartbeat_state {
  std::uint64_t beats = 0;
};

struct heartbeat : ticktock::agent<heartbeat_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    using namespace std::chrono_literals;
    if (t.kind == ticktock::trigger_kind::init) {
      // First beat 50 ms from now, then every 50 ms.
      ctx.set_periodic_alarm("beat", ctx.now() + 50ms, 50ms);
      return;
    }
    if (t.kind == ticktock::trigger_kind::alarm && t.alarm == "beat") {
      ++state().beats;
      ctx.emit("beat " + std::to_string(state().beats));
      if (state().beats == 5)
        ctx.cancel_alarm("beat");
    }
  }
};

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  std::filesystem::path dir = argc > 1 ? argv[1] : "alarm-example-data";
  std::filesystem::remove_all(dir);

  ticktock::agent_registry types;
  types.add<heartbeat>("heartbeat");
  ticktock::node_options options;
  options.data_dir = dir;
  options.idle_timeout = 10ms;  // hibernate between beats
  auto node = ticktock::node::open(options, std::move(types));
  if (!node)
    return 1;
  auto& n = **node;

  std::mutex mtx;
  std::condition_variable cv;
  std::uint64_t beats = 0;
  n.set_tick_observer([&](const ticktock::tick_event& ev) {
    if (ev.kind != ticktock::trigger_kind::alarm)
      return;
    std::lock_guard<std::mutex> guard{mtx};
    ++beats;
    cv.notify_all();
  });

  n.create("heart", "heartbeat");
  {
    std::unique_lock<std::mutex> lock{mtx};
    if (!cv.wait_for(lock, 10s, [&] { return beats >= 5; })) {
      std::fprintf(stderr, "only %llu beats in 10 s\n", static_cast<unsigned long long>(beats));
      lock.unlock();
      n.set_tick_observer(nullptr);  // it uses locals that die before the node
      return 1;
    }
  }
  n.wait_idle(10s);
  for (auto& ev : *n.outbox("heart"))
    std::printf("%s\n", ev.payload.c_str());
  auto remaining = n.alarms("heart")->size();
  auto stored = n.state<heartbeat_state>("heart")->beats;
  std::printf("beats: %llu, alarms left: %zu\n", static_cast<unsigned long long>(stored), remaining);

  n.set_tick_observer(nullptr);
  n.shutdown();
  std::filesystem::remove_all(dir);
  return stored == 5 && remaining == 0 ? 0 : 1;
}
