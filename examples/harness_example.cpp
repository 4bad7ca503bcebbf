// Worked example of the test harness (docs/testing.md shows this file).
// A reminder agent: "remind <seconds> <text>" sets a one-shot alarm; when it
// fires, the agent emits the text to its outbox.
#include <cstdio>
#include <cstdlib>

#include <ticktock/ticktock.hpp>

using namespace std::chrono_literals;

// Like assert, but also checked in release builds.
#define EXPECT(cond) \
  if (!(cond)) { \
    std::fprintf(stderr, "failed: %s (line %d)\n", #cond, __LINE__); \
    std::exit(1); \
  }

struct reminder_state {
  std::uint64_t set = 0;
  std::uint64_t fired = 0;
};

struct reminder : ticktock::agent<reminder_state> {
  void on_trigger(ticktock::context& ctx, const ticktock::trigger& t) override {
    if (t.kind == ticktock::trigger_kind::message) {
      auto sp = t.payload.find(' ', 7);
      if (t.payload.rfind("remind ", 0) != 0 || sp == std::string::npos)
        throw std::invalid_argument("expected: remind <seconds> <text>");
      auto secs = std::stoi(t.payload.substr(7, sp - 7));
      auto name = "r" + std::to_string(++state().set);
      ctx.set_alarm(name, ctx.now() + std::chrono::seconds{secs});
      ctx.put_memory("reminders", name, t.payload.substr(sp + 1));
    } else if (t.kind == ticktock::trigger_kind::alarm) {
      ++state().fired;
      ctx.emit(ctx.memory("reminders", t.alarm).value_or("?"));
      ctx.erase_memory("reminders", t.alarm);
    }
  }
};

int main() {
  ticktock::agent_registry types;
  types.add<reminder>("reminder");

  // A fresh RocksDB in a temporary directory and a manual clock.
  ticktock::testing::harness_options options;
  options.limits.max_attempts = 2;
  ticktock::testing::harness h{std::move(types), options};

  h.create("r", "reminder");
  h.send("r", "remind 60 stretch");
  h.send("r", "remind 10 water");
  h.run();  // init + two messages, synchronously
  EXPECT(h.state<reminder_state>("r").set == 2);
  EXPECT(h.alarms("r").size() == 2);

  h.advance(9s);  // nothing due yet
  EXPECT(h.outbox("r").empty());
  h.advance(1s);  // the 10 s alarm fires at exactly t0 + 10 s
  EXPECT(h.outbox("r").size() == 1 && h.outbox("r")[0].payload == "water");
  h.advance(1min);
  EXPECT(h.outbox("r").size() == 2 && h.outbox("r")[1].payload == "stretch");

  // A bad message fails its tick twice, then lands in the deadletter;
  // nothing it staged was committed.
  h.send("r", "remind me later");
  h.run();
  EXPECT(h.deadletter("r").size() == 1);
  EXPECT(h.state<reminder_state>("r").set == 2);

  // Every attempt is in the hash-chained trajectory.
  auto traj = h.trajectory("r");
  std::printf("%zu trajectory records, chain %s\n", traj.size(),
              h.verify("r").ok ? "verifies" : "is broken");
  return h.verify("r").ok && traj.size() == 7 ? 0 : 1;
}
