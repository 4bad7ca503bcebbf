// soak: mixed load for a while, RSS and latency over time. An in-process node
// with the HTTP server on 127.0.0.1 (so RSS is this process: node, server and
// the small client threads), `soak` agents that count messages and HTTP POSTs
// and set a one-shot alarm 100-300 ms ahead on every message, and a node
// small enough to churn: max_resident is a tenth of the agents and idle
// agents hibernate after 200 ms, so messages, alarms and requests keep waking
// hibernated agents. Client threads, each on one keep-alive connection, send
// closed loop: inbox messages (POST /v1/agents/{id}/inbox) and HTTP triggers
// (POST /a/{id}/) to random agents. Every interval (a tenth of the run) the
// main thread reads RSS (/proc/self/statm) and the latencies of the requests
// completed in it.
//
// Verdict: memory is flat when RSS grew over the second half of the run (from
// the end of interval 5 to the end) by at most max(5 % of the RSS at half
// time, 16 MiB).

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <random>
#include <thread>

#include <ticktock/drivers/http_server.hpp>

#include "scenarios.hpp"

namespace ticktock::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

const std::string soak_token = "ticktock-bench-soak-token";
constexpr std::size_t intervals = 10;

struct soak_state {
  std::uint64_t count = 0;
  std::uint64_t fired = 0;
};

/// Counts messages and HTTP POSTs (answering the count); every message sets
/// the one-shot alarm "a" 100-300 ms ahead (replacing a pending one).
struct soak_agent : agent<soak_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::message) {
      ++state().count;
      ctx.emit("{\"count\":" + std::to_string(state().count) + "}");
      ctx.set_alarm("a", ctx.now() + std::chrono::milliseconds{100 + (t.seq * 37) % 200});
    } else if (t.kind == trigger_kind::alarm) {
      ++state().fired;
    } else if (auto req = http_request::from(t)) {
      if (req->method == "POST")
        ++state().count;
      ctx.reply(200, "{\"count\":" + std::to_string(state().count) + "}",
                {{"Content-Type", "application/json"}});
    }
  }
};

struct interval_stats {
  double t_s = 0;
  std::uint64_t rss = 0;
  std::uint64_t requests = 0;
  double p50_us = 0, p99_us = 0;
  std::uint64_t ticks = 0, alarms = 0;
  std::size_t resident = 0;
};

/// One client thread: a keep-alive connection, closed loop until `end`.
/// Latencies land in lat[interval].
struct client {
  std::vector<std::vector<double>> lat = std::vector<std::vector<double>>(intervals);
  std::uint64_t errors = 0;
  std::string first_error;
  std::mutex mtx;

  void note_error(std::string what) {
    std::lock_guard<std::mutex> guard{mtx};
    if (errors++ == 0)
      first_error = std::move(what);
  }

  void run(std::uint16_t port, std::size_t agents, std::uint64_t seed, steady::time_point start,
           steady::duration interval, steady::time_point end) {
    std::mt19937_64 rng{seed};
    asio::io_context io;
    tcp::socket sock{io};
    auto connect = [&] {
      boost::system::error_code ec;
      sock.close(ec);
      sock.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
      if (!ec)
        sock.set_option(tcp::no_delay(true), ec);
      return !ec;
    };
    if (!connect()) {
      note_error("cannot connect");
      return;
    }
    beast::flat_buffer buffer;
    std::uint64_t i = 0;
    while (steady::now() < end) {
      auto id = agent_name(rng() % agents);
      bool message = rng() % 3 != 0;  // two messages for one HTTP trigger
      http::request<http::string_body> req{
        http::verb::post, message ? "/v1/agents/" + id + "/inbox" : "/a/" + id + "/", 11};
      req.set(http::field::host, "127.0.0.1");
      req.set(http::field::authorization, "Bearer " + soak_token);
      req.set(http::field::content_type, "application/json");
      req.body() = "{\"n\":" + std::to_string(i++) + "}";
      req.prepare_payload();
      auto sent = steady::now();
      boost::system::error_code ec;
      http::write(sock, req, ec);
      http::response<http::string_body> res;
      if (!ec)
        http::read(sock, buffer, res, ec);
      auto done = steady::now();
      if (ec) {
        note_error(ec.message());
        buffer.clear();
        if (!connect())
          return;
        continue;
      }
      auto status = res.result_int();
      if (status != (message ? 202u : 200u)) {
        note_error("status " + std::to_string(status) + ": " + res.body().substr(0, 200));
        if (status == 429 || status == 503)
          std::this_thread::sleep_for(10ms);
      } else {
        auto k = static_cast<std::size_t>((done - start) / interval);
        if (k < intervals)
          lat[k].push_back(micros_between(sent, done));
      }
      if (!res.keep_alive() && !connect())
        return;
    }
  }
};

double mib(std::uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

}  // namespace

int run_soak(const config& cfg, bool json) {
  auto agents = std::max<std::size_t>(10, std::min<std::size_t>(cfg.agents, cfg.soak_agents));
  auto max_resident = std::max<std::size_t>(1, agents / 10);
  auto threads = std::max<std::size_t>(1, std::min<std::size_t>(cfg.connections, 8));
  auto idle = 200ms;

  temp_dir dir{cfg.dir};
  node_options opts;
  opts.data_dir = dir.path() / "data";
  opts.durability = durability::async;
  opts.idle_timeout = idle;
  opts.max_resident = max_resident;
  auto registry = bench_registry();
  if (auto err = registry.add<soak_agent>("soak"))
    throw bench_error{"registering the soak agent: " + err.to_string()};
  auto opened = node::open(opts, std::move(registry));
  if (!opened)
    throw bench_error{"node::open: " + opened.error_value().to_string()};
  auto& n = **opened;
  for (std::size_t i = 0; i < agents; ++i)
    if (auto err = n.create(agent_name(i), "soak"))
      throw bench_error{"create " + agent_name(i) + ": " + err.to_string()};
  if (!n.wait_idle(60s + std::chrono::milliseconds{agents}))
    throw bench_error{"soak: init ticks did not finish"};
  std::atomic<std::uint64_t> alarm_ticks{0};
  n.set_tick_observer([&](const tick_event& ev) {
    if (ev.kind == trigger_kind::alarm)
      alarm_ticks.fetch_add(1, std::memory_order_relaxed);
  });

  drivers::http_options hopts;
  hopts.port = 0;
  hopts.admin_token = soak_token;
  auto server = drivers::http_server::start(n, hopts);
  if (!server)
    throw bench_error{"soak: http_server::start: " + server.error_value().to_string()};
  auto port = (*server)->port();

  auto interval = std::chrono::duration_cast<steady::duration>(
    std::chrono::duration<double>(cfg.seconds / intervals));
  auto start = steady::now();
  auto end = start + interval * intervals;
  std::vector<std::unique_ptr<client>> clients;
  std::vector<std::thread> workers;
  for (std::size_t i = 0; i < threads; ++i) {
    auto& c = *clients.emplace_back(std::make_unique<client>());
    workers.emplace_back([&c, port, agents, i, start, interval, end] {
      c.run(port, agents, 1234 + i, start, interval, end);
    });
  }

  if (!json)
    std::cout << std::left << std::setw(8) << "t s" << std::setw(10) << "RSS MiB" << std::setw(10)
              << "req/s" << std::setw(10) << "p50 us" << std::setw(10) << "p99 us"
              << std::setw(10) << "ticks/s" << std::setw(10) << "alarms/s" << "resident\n"
              << std::string(76, '-') << std::endl;
  std::vector<interval_stats> stats;
  auto ticks_before = n.metrics().ticks_ok;
  auto alarms_before = alarm_ticks.load();
  for (std::size_t k = 0; k < intervals; ++k) {
    std::this_thread::sleep_until(start + interval * (k + 1));
    interval_stats s;
    s.t_s = seconds_between(start, steady::now());
    s.rss = rss_bytes();
    auto ticks = n.metrics().ticks_ok;
    auto alarms = alarm_ticks.load();
    s.ticks = ticks - ticks_before;
    s.alarms = alarms - alarms_before;
    ticks_before = ticks;
    alarms_before = alarms;
    s.resident = n.resident_count();
    stats.push_back(s);
  }
  for (auto& w : workers)
    w.join();
  (*server)->stop();
  n.set_tick_observer(nullptr);

  // Latencies per interval, now that the clients are done with them.
  std::uint64_t errors = 0;
  std::string first_error;
  std::vector<double> all;
  auto secs = std::chrono::duration<double>(interval).count();
  for (std::size_t k = 0; k < intervals; ++k) {
    std::vector<double> lat;
    for (auto& c : clients)
      lat.insert(lat.end(), c->lat[k].begin(), c->lat[k].end());
    stats[k].requests = lat.size();
    if (!lat.empty()) {
      stats[k].p50_us = percentile(lat, 0.50);
      stats[k].p99_us = percentile(lat, 0.99);
    }
    all.insert(all.end(), lat.begin(), lat.end());
  }
  for (auto& c : clients) {
    if (c->errors && first_error.empty())
      first_error = c->first_error;
    errors += c->errors;
  }
  if (all.empty())
    throw bench_error{"soak: no request completed" + (first_error.empty() ? "" : ": " + first_error)};

  auto half = stats[intervals / 2 - 1].rss;
  auto last = stats.back().rss;
  auto growth = static_cast<double>(last) - static_cast<double>(half);
  auto bound = std::max(0.05 * static_cast<double>(half), 16.0 * 1024 * 1024);
  bool flat = growth <= bound;

  auto node_what = std::to_string(agents) + " soak agents, max_resident " + std::to_string(max_resident)
                   + ", idle_timeout " + std::to_string(idle.count()) + " ms, async durability; "
                   + std::to_string(threads) + " closed-loop client connection(s): 2/3 inbox "
                     "messages (each setting a one-shot alarm 100-300 ms ahead), 1/3 POST /a/{id}/";
  auto verdict = std::string{flat ? "flat" : "GREW"} + ": RSS " + std::to_string(std::llround(mib(half)))
                 + " MiB at half time, " + std::to_string(std::llround(mib(last)))
                 + " MiB at the end (growth " + std::to_string(std::llround(growth / 1024))
                 + " KiB, bound max(5% of the half-time RSS, 16 MiB) = "
                 + std::to_string(std::llround(bound / 1024)) + " KiB)";
  if (json) {
    boost::json::array rows;
    for (auto& s : stats)
      rows.push_back(boost::json::object{
        {"t_s", std::round(s.t_s * 1000) / 1000},
        {"rss_bytes", s.rss},
        {"requests", s.requests},
        {"req_per_s", std::llround(static_cast<double>(s.requests) / secs)},
        {"p50_us", std::llround(s.p50_us)},
        {"p99_us", std::llround(s.p99_us)},
        {"ticks_per_s", std::llround(static_cast<double>(s.ticks) / secs)},
        {"alarms_per_s", std::llround(static_cast<double>(s.alarms) / secs)},
        {"resident", s.resident}});
    boost::json::object o{
      {"scenario", "soak"},
      {"seconds", cfg.seconds},
      {"interval_s", std::round(secs * 1000) / 1000},
      {"agents", agents},
      {"max_resident", max_resident},
      {"idle_timeout_ms", idle.count()},
      {"connections", threads},
      {"requests", all.size()},
      {"errors", errors},
      {"p50_us", std::llround(percentile(all, 0.50))},
      {"p99_us", std::llround(percentile(all, 0.99))},
      {"intervals", std::move(rows)},
      {"rss_half_bytes", half},
      {"rss_end_bytes", last},
      {"rss_growth_second_half_bytes", std::llround(growth)},
      {"rss_growth_bound_bytes", std::llround(bound)},
      {"memory_flat", flat},
      {"verdict", verdict},
      {"workload", node_what}};
    if (errors)
      o["first_error"] = first_error;
    std::cout << boost::json::serialize(o) << std::endl;
  } else {
    for (auto& s : stats)
      std::cout << std::left << std::fixed << std::setprecision(1) << std::setw(8) << s.t_s
                << std::setw(10) << mib(s.rss) << std::setprecision(0) << std::setw(10)
                << static_cast<double>(s.requests) / secs << std::setw(10) << s.p50_us
                << std::setw(10) << s.p99_us << std::setw(10) << static_cast<double>(s.ticks) / secs
                << std::setw(10) << static_cast<double>(s.alarms) / secs << s.resident << "\n";
    std::cout << "\nsoak: " << node_what << "\n"
              << "overall: " << all.size() << " requests, p50 " << std::llround(percentile(all, 0.5))
              << " us, p99 " << std::llround(percentile(all, 0.99)) << " us, " << errors
              << " error(s)" << (errors ? " (first: " + first_error + ")" : "") << "\n"
              << "memory: " << verdict << std::endl;
  }
  return 0;
}

}  // namespace ticktock::bench
