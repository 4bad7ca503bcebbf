// The http service inside a node: what a tick's ctx.fetch becomes (gate,
// budget, job, http_result trigger, settlement) with an executor that answers
// from memory, and without any executor. The real Beast executor against a
// real server is in tests/drivers/http_fetch_test.cpp and http-fetch-e2e.

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <mutex>

#include "../temp_dir.hpp"
#include "../test_agents.hpp"
#include "../tick_log.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

struct fetch_state {
  std::uint64_t results = 0;
  std::string last;
};

// Each message is a fetch request, passed to ctx.fetch unchecked; each
// http_result is kept.
struct fetch_agent : agent<fetch_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::message)
      ctx.fetch(t.payload);
    if (t.kind == trigger_kind::http_result) {
      ++state().results;
      state().last = t.payload;
    }
  }
};

// Answers every request with 200 and what it asked for, from memory.
struct memory_executor : fetch::executor {
  std::mutex mtx;
  std::vector<fetch::request> seen;
  fetch::outcome run(const fetch::request& r, const std::atomic<bool>&) override {
    std::lock_guard<std::mutex> g{mtx};
    seen.push_back(r);
    fetch::response out;
    out.status = 200;
    out.headers = {{"content-type", "text/plain"}};
    out.body = r.method + " " + r.parts.target;
    return out;
  }
};

agent_registry registry() {
  auto r = test::test_registry();
  r.add<fetch_agent>("fetch");
  return r;
}

node_options options_for(const test::temp_dir& dir) {
  node_options o;
  o.data_dir = dir.path();
  o.threads = 2;
  o.retry_backoff = 1ms;
  o.limits.max_attempts = 2;
  o.services.http_price_per_request = 7;
  return o;
}

}  // namespace

TEST_CASE("a tick's fetch runs after the commit and its response comes back as http_result") {
  test::temp_dir dir;
  auto opts = options_for(dir);
  auto ex = std::make_shared<memory_executor>();
  opts.services.http_executor = ex;
  auto n = node::open(opts, registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("a", "fetch"));
  REQUIRE(nd.wait_idle(10s));
  test::tick_log log{nd};
  send_options traced;
  traced.request_id = "req-f";
  REQUIRE(nd.send("a", R"({"method":"POST","url":"https://Api.Example.com/v1/x?q=1","body":"hi"})",
                  traced));
  REQUIRE(nd.wait_idle(10s));
  // The result's tick carries the request id of the tick that started the fetch.
  std::vector<std::string> ticks;
  for (auto& ev : log.events())
    ticks.push_back(std::string{to_string(ev.kind)} + ":" + ev.request_id);
  CHECK(ticks == std::vector<std::string>{"message:req-f", "http_result:req-f"});

  auto st = nd.state<fetch_state>("a");
  REQUIRE(st);
  REQUIRE(st->results == 1);
  auto p = json::parse(st->last).as_object();
  CHECK(p.at("service") == "http");
  CHECK(p.at("status") == "done");
  CHECK(p.at("cost_micro_usd") == 7);
  CHECK(p.at("result").at("status") == 200);
  CHECK(p.at("result").at("body") == "POST /v1/x?q=1");
  CHECK(p.at("result").at("headers").at("content-type") == "text/plain");
  REQUIRE(ex->seen.size() == 1);
  CHECK(ex->seen[0].body == "hi");

  auto jobs = nd.jobs("a", "http");
  REQUIRE(jobs);
  REQUIRE(jobs->size() == 1);
  CHECK((*jobs)[0].destination == "api.example.com");
  CHECK((*jobs)[0].status == "done");
  CHECK((*jobs)[0].request_id == "req-f");
  auto w = nd.wallet("a");
  REQUIRE(w);
  CHECK(w->spent_total == 7);
  CHECK(w->http_spent == 7);
  CHECK(w->compute_spent == 0);
  CHECK(w->reserved == 0);
  CHECK(w->http_reserved == 0);
}

TEST_CASE("a tick whose fetch request is malformed fails with a clear error and stages nothing") {
  test::temp_dir dir;
  auto opts = options_for(dir);
  opts.services.http_executor = std::make_shared<memory_executor>();
  auto n = node::open(opts, registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("a", "fetch"));
  REQUIRE(nd.send("a", R"({"url":"ftp://example.com/file"})"));
  REQUIRE(nd.send("a", "not json"));
  REQUIRE(nd.wait_idle(10s));
  auto dl = nd.deadletter("a");
  REQUIRE(dl);
  REQUIRE(dl->size() == 2);
  CHECK((*dl)[0].error.find("invalid effect: http request: url: the scheme is 'ftp'; only http and "
                            "https are fetched") != std::string::npos);
  CHECK((*dl)[1].error.find("not valid JSON") != std::string::npos);
  CHECK(nd.jobs("a", "http")->empty());
  CHECK(nd.wallet("a")->spent_total == 0);
  CHECK(nd.state<fetch_state>("a")->results == 0);
}

TEST_CASE("a node without an executor still gates fetches and ends them as unavailable, unbilled") {
  test::temp_dir dir;
  auto n = node::open(options_for(dir), registry());
  REQUIRE(n);
  auto& nd = **n;
  REQUIRE_FALSE(nd.create("a", "fetch"));
  REQUIRE(nd.send("a", R"({"url":"http://127.0.0.1:9/"})"));
  REQUIRE(nd.wait_idle(10s));
  auto st = nd.state<fetch_state>("a");
  REQUIRE(st->results == 1);
  auto p = json::parse(st->last).as_object();
  CHECK(p.at("status") == "failed");
  CHECK(p.at("reason") == "unavailable");
  CHECK(p.at("cost_micro_usd") == 0);
  CHECK(nd.wallet("a")->reserved == 0);
  CHECK(nd.wallet("a")->spent_total == 0);
}
