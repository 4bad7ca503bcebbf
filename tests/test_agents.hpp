#pragma once

// Agent types shared by the test suites.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ticktock/ticktock.hpp"

namespace ticktock::test {

struct counter_state {
  std::uint64_t count = 0;
  std::vector<std::string> seen;  // payloads, in order
};

/// Adds one per message; "fail" payloads call ctx.fail, "throw" ones throw.
struct counter_agent : agent<counter_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init)
      return;
    if (t.payload == "fail")
      ctx.fail("asked to fail");
    if (t.payload == "throw")
      throw std::runtime_error("asked to throw");
    ++state().count;
    state().seen.push_back(t.payload);
    ctx.emit("count=" + std::to_string(state().count));
    ctx.log("counted " + t.payload);
  }
};

inline agent_registry test_registry() {
  agent_registry r;
  r.add<counter_agent>("counter");
  return r;
}

}  // namespace ticktock::test
