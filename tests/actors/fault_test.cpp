// The node under injected disk faults (write failure, fsync failure, disk
// full): sends fail with storage_failure, ticks do not commit, and once the
// disk takes writes again every acknowledged message is applied exactly once,
// with no restart, nothing deadlettered and a trajectory chain that verifies.

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "../temp_dir.hpp"
#include "../test_agents.hpp"
#include "ticktock/actors/test_harness.hpp"
#include "ticktock/storage/faults.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
using storage::fault;
using storage::fault_injector;
using test::counter_state;

namespace {

// A gate a tick can wait at, so a test can inject a fault while a tick is
// running and messages wait in the inbox behind it.
struct tick_gate {
  std::mutex mtx;
  std::condition_variable cv;
  bool open = false;
  bool entered = false;
};
tick_gate gate;

// A counter whose "hold" message waits at the gate (at most 10 s).
struct holding_counter : test::counter_agent {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::message && t.payload == "hold") {
      std::unique_lock<std::mutex> lock{gate.mtx};
      gate.entered = true;
      gate.cv.notify_all();
      gate.cv.wait_for(lock, 10s, [] { return gate.open; });
    }
    test::counter_agent::on_trigger(ctx, t);
  }
};

template <class Pred>
bool eventually(Pred pred, std::chrono::seconds timeout = 30s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int i = 0; i < 10'000; ++i) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

void switch_on(fault_injector& f, fault kind) {
  switch (kind) {
    case fault::write: f.fail_writes(); break;
    case fault::sync: f.fail_syncs(); break;
    case fault::disk_full: f.disk_full(); break;
    case fault::none: break;
  }
}

struct fault_case {
  const char* name;
  fault kind;
  durability mode;
};

const fault_case cases[] = {
  {"write failure", fault::write, durability::async},
  {"fsync failure", fault::sync, durability::sync},
  {"disk full", fault::disk_full, durability::async},
};

}  // namespace

TEST_CASE("a node under a disk fault refuses sends, commits no tick, and applies every "
          "acknowledged message exactly once after the fault, without a restart") {
  for (auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      test::temp_dir dir;
      auto faults = std::make_shared<fault_injector>();
      node_options o;
      o.data_dir = dir.path();
      o.threads = 2;
      o.retry_backoff = 5ms;
      o.durability = c.mode;
      o.faults = faults;
      auto registry = test::test_registry();
      registry.add<holding_counter>("holder");
      auto n = node::open(o, std::move(registry));
      REQUIRE(n);
      auto& nd = **n;
      {
        std::lock_guard<std::mutex> g{gate.mtx};
        gate.open = false;
        gate.entered = false;
      }
      REQUIRE_FALSE(nd.create("c1", "holder"));
      std::vector<std::string> expected;
      for (int i = 0; i < 5; ++i) {
        expected.push_back("m" + std::to_string(i));
        REQUIRE(nd.send("c1", expected.back()));
      }
      REQUIRE(nd.wait_idle(10s));

      // A tick is running and five acknowledged messages wait behind it.
      REQUIRE(nd.send("c1", "hold"));
      expected.push_back("hold");
      {
        std::unique_lock<std::mutex> lock{gate.mtx};
        REQUIRE(gate.cv.wait_for(lock, 10s, [] { return gate.entered; }));
      }
      for (int i = 5; i < 10; ++i) {
        expected.push_back("m" + std::to_string(i));
        REQUIRE(nd.send("c1", expected.back()));
      }

      switch_on(*faults, c.kind);
      {
        std::lock_guard<std::mutex> g{gate.mtx};
        gate.open = true;
      }
      gate.cv.notify_all();

      // The held tick's commit fails, and so do its retries; sends fail.
      CHECK(eventually([&] { return faults->injected(c.kind) >= 3; }));
      auto refused = nd.send("c1", "refused");
      REQUIRE_FALSE(refused);
      CHECK(refused.error_value().code() == errc::storage_failure);
      auto during = nd.state<counter_state>("c1");
      REQUIRE(during);
      CHECK(during->count == 5);
      auto st = nd.status("c1");
      REQUIRE(st);
      CHECK(st->state == agent_state::active);  // not errored by the fault

      faults->clear();
      // Sends succeed again once the store has recovered (no restart).
      CHECK(eventually([&] { return bool(nd.send("c1", "after")); }));
      expected.push_back("after");
      REQUIRE(nd.wait_idle(30s));

      auto s = nd.state<counter_state>("c1");
      REQUIRE(s);
      CHECK(s->seen == expected);
      CHECK(s->count == expected.size());
      auto chain = nd.verify("c1");
      REQUIRE(chain);
      CHECK(chain->ok);
      CHECK(chain->records == expected.size() + 1);  // + the init tick
      auto dead = nd.deadletter("c1");
      REQUIRE(dead);
      CHECK(dead->empty());
      CHECK(nd.metrics().deadlettered == 0);
      CHECK(nd.metrics().ticks_failed == 0);
      st = nd.status("c1");
      REQUIRE(st);
      CHECK(st->queue_depth == 0);
    }
  }
}

TEST_CASE("a node's state is the same after a restart that follows a disk fault") {
  test::temp_dir dir;
  auto faults = std::make_shared<fault_injector>();
  node_options o;
  o.data_dir = dir.path();
  o.threads = 2;
  o.retry_backoff = 5ms;
  o.durability = durability::sync;
  std::vector<std::string> seen;
  {
    auto with_faults = o;
    with_faults.faults = faults;
    auto n = node::open(with_faults, test::test_registry());
    REQUIRE(n);
    REQUIRE_FALSE((*n)->create("c1", "counter"));
    REQUIRE((*n)->send("c1", "a"));
    REQUIRE((*n)->wait_idle(10s));
    faults->fail_next(fault::sync, 1);
    CHECK_FALSE((*n)->send("c1", "failed"));
    CHECK(eventually([&] { return bool((*n)->send("c1", "b")); }));
    REQUIRE((*n)->wait_idle(10s));
    auto s = (*n)->state<counter_state>("c1");
    REQUIRE(s);
    seen = s->seen;
    CHECK(seen == std::vector<std::string>{"a", "b"});
  }
  auto n = node::open(o, test::test_registry());
  REQUIRE(n);
  REQUIRE((*n)->wait_idle(10s));
  auto s = (*n)->state<counter_state>("c1");
  REQUIRE(s);
  CHECK(s->seen == seen);
  auto chain = (*n)->verify("c1");
  REQUIRE(chain);
  CHECK(chain->ok);
}

TEST_CASE("the test harness reports a failed commit and applies the trigger once after the fault") {
  auto faults = std::make_shared<fault_injector>();
  testing::harness_options ho;
  ho.faults = faults;
  testing::harness h{test::test_registry(), ho};
  REQUIRE_FALSE(h.create("c1", "counter"));
  REQUIRE(h.send("c1", "one"));
  h.run();
  faults->fail_writes();
  CHECK_FALSE(h.send("c1", "refused"));
  faults->clear();
  REQUIRE(eventually([&] { return bool(h.send("c1", "two")); }));
  faults->fail_writes();
  CHECK_THROWS_WITH(h.run(), Catch::Contains("STORAGE_FAILURE"));
  faults->clear();
  CHECK(eventually([&] {
    try {
      h.run();
      return true;
    } catch (const std::runtime_error&) {
      return false;  // still recovering
    }
  }));
  CHECK(h.state<counter_state>("c1").seen == std::vector<std::string>{"one", "two"});
  CHECK(h.verify("c1").ok);
}
