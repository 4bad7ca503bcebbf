// The real HTTP server (in-process, 127.0.0.1) over a store with injected
// disk faults: 503 STORAGE_FAILURE with Retry-After while the disk fails,
// 202 again once it recovers, with no restart and nothing lost; /healthz and
// the ticktock_storage_failing gauge follow the fault, and the node recovers
// without a write to trigger it.

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <boost/json.hpp>

#include "../temp_dir.hpp"
#include "../test_agents.hpp"
#include "ticktock/drivers/http_server.hpp"
#include "ticktock/storage/faults.hpp"
#include "ticktock/ticktock.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace ticktock;
using namespace std::chrono_literals;
using storage::fault;
using storage::fault_injector;

namespace {

http::response<http::string_body> call(std::uint16_t port, http::verb verb, std::string target,
                                       std::string body = {}) {
  asio::io_context io;
  beast::tcp_stream s{io};
  s.expires_after(30s);
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::authorization, "Bearer secret");
  req.set(http::field::content_type, "application/json");
  req.body() = std::move(body);
  req.prepare_payload();
  http::write(s, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  return res;
}

std::string error_code(const http::response<http::string_body>& r) {
  auto v = boost::json::parse(r.body());
  return std::string{v.at("error").at("code").as_string()};
}

// The value of the ticktock_storage_failing gauge in GET /metrics.
std::string storage_failing(std::uint16_t port) {
  auto body = call(port, http::verb::get, "/metrics").body();
  const std::string name = "\nticktock_storage_failing ";
  auto at = body.find(name);
  if (at == std::string::npos)
    return "missing";
  at += name.size();
  return body.substr(at, body.find('\n', at) - at);
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

TEST_CASE("the HTTP server answers 503 STORAGE_FAILURE with Retry-After during a disk fault "
          "and 202 after it, without a restart") {
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
      auto n = node::open(o, test::test_registry());
      REQUIRE(n);
      auto& nd = **n;
      drivers::http_options h;
      h.port = 0;
      h.admin_token = "secret";
      auto server = drivers::http_server::start(nd, h);
      REQUIRE(server);
      auto port = (*server)->port();

      REQUIRE(call(port, http::verb::post, "/v1/agents", R"({"id":"c1","type":"counter"})")
                .result_int() == 201);
      // Inbox bodies are JSON: each message is a JSON string.
      for (auto p : {R"("m1")", R"("m2")", R"("m3")"})
        REQUIRE(call(port, http::verb::post, "/v1/agents/c1/inbox", p).result_int() == 202);
      REQUIRE(nd.wait_idle(10s));
      CHECK(call(port, http::verb::get, "/healthz").result_int() == 200);
      CHECK(storage_failing(port) == "0");

      switch (c.kind) {
        case fault::write: faults->fail_writes(); break;
        case fault::sync: faults->fail_syncs(); break;
        case fault::disk_full: faults->disk_full(); break;
        case fault::none: break;
      }
      for (int i = 0; i < 3; ++i) {
        auto r = call(port, http::verb::post, "/v1/agents/c1/inbox", R"("refused")");
        CHECK(r.result_int() == 503);
        CHECK(error_code(r) == "STORAGE_FAILURE");
        CHECK(r[http::field::retry_after] == "1");
      }
      auto created = call(port, http::verb::post, "/v1/agents", R"({"id":"c2","type":"counter"})");
      CHECK(created.result_int() == 503);
      CHECK(error_code(created) == "STORAGE_FAILURE");
      // Reads keep working during the fault.
      CHECK(call(port, http::verb::get, "/v1/agents/c1").result_int() == 200);
      // A health check sees the fault, and so does Prometheus.
      auto health = call(port, http::verb::get, "/healthz");
      CHECK(health.result_int() == 503);
      CHECK(error_code(health) == "STORAGE_FAILURE");
      CHECK(health[http::field::retry_after] == "1");
      CHECK(storage_failing(port) == "1");

      // Once the disk takes writes again the node recovers on its own, with
      // no write to trigger it: /healthz (which writes nothing) turns ok.
      faults->clear();
      unsigned healthy = 0;
      auto health_deadline = std::chrono::steady_clock::now() + 30s;
      for (int i = 0; i < 3000 && std::chrono::steady_clock::now() < health_deadline; ++i) {
        healthy = call(port, http::verb::get, "/healthz").result_int();
        if (healthy == 200)
          break;
        std::this_thread::sleep_for(10ms);
      }
      CHECK(healthy == 200);
      CHECK(storage_failing(port) == "0");
      unsigned status = 0;
      auto deadline = std::chrono::steady_clock::now() + 30s;
      for (int i = 0; i < 3000 && std::chrono::steady_clock::now() < deadline; ++i) {
        status = call(port, http::verb::post, "/v1/agents/c1/inbox", R"("m4")").result_int();
        if (status != 503)
          break;
        std::this_thread::sleep_for(5ms);
      }
      CHECK(status == 202);
      CHECK(call(port, http::verb::post, "/v1/agents", R"({"id":"c2","type":"counter"})")
              .result_int() == 201);
      REQUIRE(nd.wait_idle(10s));
      auto s = nd.state<test::counter_state>("c1");
      REQUIRE(s);
      CHECK(s->seen == std::vector<std::string>{R"("m1")", R"("m2")", R"("m3")", R"("m4")"});
      auto chain = nd.verify("c1");
      REQUIRE(chain);
      CHECK(chain->ok);
      (*server)->stop();
    }
  }
}
