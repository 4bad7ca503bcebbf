// Links the installed ticktock, runs a tick through the test harness.
#include <ticktock/ticktock.hpp>

struct tally_state {
  int n = 0;
};
struct tally : ticktock::agent<tally_state> {
  void on_trigger(ticktock::context&, const ticktock::trigger& t) override {
    if (t.kind == ticktock::trigger_kind::message)
      ++state().n;
  }
};

int main() {
  ticktock::agent_registry types;
  types.add<tally>("tally");
  ticktock::testing::harness h{std::move(types)};
  h.create("t", "tally");
  h.send("t", "x");
  h.run();
  return h.state<tally_state>("t").n == 1 && h.verify("t").ok ? 0 : 1;
}
