// Direct triggers (node::run_trigger, the path of HTTP requests on /a/): no
// inbox write, durable with their tick's commit, retried from memory,
// bounded per agent, and always answered. Waits are bounded, never sleeps.

#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "../temp_dir.hpp"
#include "../test_agents.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
using test::counter_state;

namespace {

// Throws on the first attempt of every trigger, succeeds on the second.
struct flaky : test::counter_agent {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind != trigger_kind::init && t.attempt == 1)
      throw std::runtime_error("first attempts fail");
    test::counter_agent::on_trigger(ctx, t);
  }
};

agent_registry registry() {
  auto r = test::test_registry();
  r.add<flaky>("flaky");
  return r;
}

node_options options_for(const test::temp_dir& dir) {
  node_options o;
  o.data_dir = dir.path();
  o.threads = 2;
  o.retry_backoff = 1ms;
  return o;
}

// run_trigger, waiting (bounded) for its answer.
expected<tick_event> run(node& n, const std::string& id, std::string payload,
                         const send_options& opts = {}) {
  auto p = std::make_shared<std::promise<expected<tick_event>>>();
  auto f = p->get_future();
  n.run_trigger(id, std::move(payload), opts, [p](expected<tick_event> r) { p->set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready)
    return error{errc::timeout, "no answer in 10 s"};
  return f.get();
}

}  // namespace

TEST_CASE("a direct trigger runs without an inbox write and its commit acknowledges it") {
  test::temp_dir dir;
  auto opts = options_for(dir);
  {
    auto n = node::open(opts, registry());
    REQUIRE(n);
    auto& nd = **n;
    REQUIRE_FALSE(nd.create("c", "counter"));
    REQUIRE(nd.wait_idle(10s));

    auto ev = run(nd, "c", "d1");
    REQUIRE(ev);
    CHECK(ev->outcome == storage::outcome::ok);
    CHECK(storage::is_direct_seq(ev->trigger_seq));
    CHECK(storage::direct_number(ev->trigger_seq) == 1);
    CHECK(ev->agent == "c");
    // Answered after the commit: the state and the trajectory have it, the
    // inbox never held it.
    CHECK(nd.state<counter_state>("c")->seen == std::vector<std::string>{"d1"});
    auto recs = nd.trajectory("c");
    REQUIRE(recs);
    REQUIRE(recs->size() == 2);
    CHECK(recs->back().trigger_seq == ev->trigger_seq);
    CHECK(nd.status("c")->queue_depth == 0);

    // Mixed with inbox messages, each trigger is applied once.
    REQUIRE(nd.send("c", "m1"));
    auto d2 = run(nd, "c", "d2");
    REQUIRE(d2);
    CHECK(storage::direct_number(d2->trigger_seq) == 2);
    REQUIRE(nd.wait_idle(10s));
    auto seen = nd.state<counter_state>("c")->seen;
    std::sort(seen.begin(), seen.end());
    CHECK(seen == std::vector<std::string>{"d1", "d2", "m1"});
    CHECK(nd.verify("c")->ok);
  }
  // After a restart the agent is hibernated; a direct trigger wakes it, and
  // its number continues where the committed ones stopped.
  auto n = node::open(opts, registry());
  REQUIRE(n);
  auto& nd = **n;
  CHECK(nd.status("c")->state == agent_state::hibernated);
  auto d3 = run(nd, "c", "d3");
  REQUIRE(d3);
  CHECK(d3->outcome == storage::outcome::ok);
  CHECK(storage::direct_number(d3->trigger_seq) == 3);
  CHECK(nd.state<counter_state>("c")->count == 4);
  CHECK(nd.verify("c")->ok);
}

TEST_CASE("a failing direct trigger is retried from memory, then deadlettered") {
  test::temp_dir dir;
  auto n = node::open(options_for(dir), registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("f", "flaky"));
  REQUIRE_FALSE(nd.create("c", "counter"));
  REQUIRE(nd.wait_idle(10s));

  auto ok = run(nd, "f", "once more");
  REQUIRE(ok);
  CHECK(ok->outcome == storage::outcome::ok);
  CHECK(ok->attempt == 2);
  CHECK(nd.state<counter_state>("f")->seen == std::vector<std::string>{"once more"});

  // counter throws on "throw": three attempts (max_attempts), then the
  // deadletter, which keeps the trigger.
  auto dead = run(nd, "c", "throw");
  REQUIRE(dead);
  CHECK(dead->outcome == storage::outcome::deadlettered);
  CHECK(dead->attempt == 3);
  auto dl = nd.deadletter("c");
  REQUIRE(dl);
  REQUIRE(dl->size() == 1);
  CHECK(dl->front().entry.payload == "throw");
  CHECK(dl->front().seq == dead->trigger_seq);
  auto recs = nd.trajectory("c");
  REQUIRE(recs);
  CHECK(std::count_if(recs->begin(), recs->end(), [&](auto& r) {
          return r.trigger_seq == dead->trigger_seq;
        }) == 3);
  CHECK(nd.state<counter_state>("c")->count == 0);
  // The agent goes on with the next trigger.
  auto next = run(nd, "c", "after");
  REQUIRE(next);
  CHECK(next->outcome == storage::outcome::ok);
  CHECK(nd.verify("c")->ok);
}

TEST_CASE("direct triggers are bounded per agent and answered when the agent stops") {
  test::temp_dir dir;
  auto opts = options_for(dir);
  opts.limits.inbox_limit = 2;
  opts.limits.ticks_per_minute = 1;  // the init tick uses the minute: the rest wait
  auto n = node::open(opts, registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("c", "counter"));
  REQUIRE(nd.wait_idle(10s));

  std::mutex mtx;
  std::condition_variable cv;
  std::vector<error> answers;
  for (int i = 0; i < 5; ++i)
    nd.run_trigger("c", "m" + std::to_string(i), {}, [&](expected<tick_event> r) {
      std::lock_guard<std::mutex> g{mtx};
      answers.push_back(r ? error{} : r.error_value());
      cv.notify_all();
    });
  auto count = [&](errc code) {
    return std::count_if(answers.begin(), answers.end(),
                         [&](const error& e) { return e.code() == code; });
  };
  {
    // Two wait; the other three are refused at once.
    std::unique_lock<std::mutex> lock{mtx};
    REQUIRE(cv.wait_for(lock, 10s, [&] { return answers.size() == 3; }));
    CHECK(count(errc::inbox_full) == 3);
  }
  // Each refusal counts as an inbox_limit hit, as at a full inbox.
  CHECK(nd.status("c")->limits_hit["inbox_limit"] == 3);
  CHECK(nd.metrics().inbox_overflows == 3);
  CHECK_FALSE(nd.wait_idle(50ms));  // the two waiting count as outstanding
  // Terminating the agent answers the waiting ones: it is gone.
  REQUIRE_FALSE(nd.terminate("c"));
  {
    std::unique_lock<std::mutex> lock{mtx};
    REQUIRE(cv.wait_for(lock, 10s, [&] { return answers.size() == 5; }));
    CHECK(count(errc::not_found) == 2);
  }
  CHECK(nd.wait_idle(10s));
}

TEST_CASE("run_trigger refuses what it cannot run") {
  test::temp_dir dir;
  auto n = node::open(options_for(dir), registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("c", "counter"));
  CHECK(run(nd, "nobody", "x").error_value().code() == errc::not_found);
  CHECK(run(nd, "Bad Id", "x").error_value().code() == errc::invalid_id);
  send_options keyed;
  keyed.idempotency_key = "k1";
  CHECK(run(nd, "c", "x", keyed).error_value().code() == errc::invalid_argument);
  CHECK(run(nd, "c", std::string(node_options{}.limits.max_message_bytes + 1, 'x')).error_value().code()
        == errc::message_too_large);
  REQUIRE(nd.wait_idle(10s));
  CHECK(nd.state<counter_state>("c")->count == 0);
}

TEST_CASE("a direct trigger to an agent that cannot load answers agent_errored") {
  test::temp_dir dir;
  {
    auto n = node::open(options_for(dir), registry());
    REQUIRE(n);
    REQUIRE_FALSE((*n)->create("c", "counter"));
    REQUIRE(run(**n, "c", "x"));
  }
  auto n = node::open(options_for(dir), registry());
  REQUIRE(n);
  auto& nd = **n;
  // Not resident after the restart: the trigger wakes it, and its load fails.
  REQUIRE_FALSE(nd.store().raw_put("state", storage::keys::agent("c"), "\x05garbage"));
  auto r = run(nd, "c", "y");
  REQUIRE_FALSE(r);
  CHECK(r.error_value().code() == errc::agent_errored);
  // The next one is refused before it reaches an actor, with the same code.
  CHECK(run(nd, "c", "z").error_value().code() == errc::agent_errored);
  CHECK(nd.wait_idle(10s));
}

TEST_CASE("direct triggers racing an agent's hibernation all run") {
  test::temp_dir dir;
  auto opts = options_for(dir);
  opts.idle_timeout = 1ms;  // the sweeper hibernates them between triggers
  auto n = node::open(opts, registry());
  REQUIRE(n);
  auto& nd = **n;
  for (auto id : {"a", "b", "c", "d"})
    REQUIRE_FALSE(nd.create(id, "counter"));
  // Each thread sends to its agent in bursts, pausing about the idle timeout
  // between them, so that triggers keep arriving while it hibernates.
  std::atomic<int> ok{0};
  std::vector<std::thread> senders;
  for (auto id : {"a", "b", "c", "d"})
    senders.emplace_back([&, id = std::string{id}] {
      for (int i = 0; i < 150; ++i) {
        auto ev = run(nd, id, "m");
        if (ev && ev->outcome == storage::outcome::ok)
          ++ok;
        std::this_thread::sleep_for(std::chrono::microseconds{(i * 397) % 1500});
      }
    });
  for (auto& t : senders)
    t.join();
  CHECK(ok == 600);
  for (auto id : {"a", "b", "c", "d"})
    CHECK(nd.state<counter_state>(id)->count == 150);
}
