#pragma once

// What the router and envelope fuzzers share: a node opened once on a temp
// directory with two agents ("a1" sends, "a2" receives), a router in front of
// it with a fixed admin token and a fixed node key (so the seed corpus can
// carry a valid capability token), and an agent type that counts what reaches
// its ticks.

#include <sodium.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz_keys.hpp"
#include "router.hpp"
#include "ticktock/ticktock.hpp"

namespace ticktock::fuzz {

/// Messages and HTTP requests that reached an agent's tick.
inline std::atomic<std::uint64_t> messages_seen{0};
inline std::atomic<std::uint64_t> http_seen{0};

struct fuzz_state {
  std::uint64_t n = 0;
};

/// Counts messages ("emit", "alarm" and "fail" ones also emit, set an alarm
/// an hour ahead, or fail); answers HTTP triggers with 200 and the length of
/// the request.
struct fuzz_agent : agent<fuzz_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::message) {
      if (t.payload == "fail") {
        ctx.fail("asked to fail");
        return;
      }
      ++messages_seen;  // once per message: only failed attempts are retried
      ++state().n;
      if (t.payload == "emit")
        ctx.emit("n=" + std::to_string(state().n));
      if (t.payload == "alarm")
        ctx.set_alarm("later", ctx.now() + std::chrono::hours{1});
    } else if (t.kind == trigger_kind::http) {
      ++http_seen;
      ctx.reply(200, std::to_string(t.payload.size()));
    }
  }
};

struct fuzz_env {
  std::filesystem::path dir;
  std::unique_ptr<node> n;
  drivers::request_metrics metrics;
  std::unique_ptr<drivers::router> api;

  fuzz_env() {
    if (sodium_init() < 0)
      std::abort();
    char tmpl[] = "/tmp/ticktock-fuzz-XXXXXX";
    if (!mkdtemp(tmpl))
      std::abort();
    dir = tmpl;
    // The fuzzers end with exit(): remove the directory then.
    static std::filesystem::path at_exit;
    at_exit = dir;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(at_exit, ec);
    });
    node_options o;
    o.data_dir = dir;
    o.threads = 2;
    o.retry_backoff = std::chrono::milliseconds{1};
    agent_registry reg;
    reg.add<fuzz_agent>("fuzz");
    auto opened = node::open(o, std::move(reg));
    if (!opened) {
      std::fprintf(stderr, "fuzz: node::open: %s\n", opened.error_value().message().c_str());
      std::abort();
    }
    n = std::move(*opened);
    for (auto id : {"a1", "a2"})
      if (auto err = n->create(id, "fuzz", "{}")) {
        std::fprintf(stderr, "fuzz: create %s: %s\n", id, err.message().c_str());
        std::abort();
      }
    drivers::router_options ro;
    ro.admin_token = admin_token;
    ro.node_key = node_key();
    ro.reply_timeout = std::chrono::milliseconds{2000};
    ro.max_body_bytes = std::size_t{1} << 16;
    api = std::make_unique<drivers::router>(*n, ro, metrics);
    n->wait_idle(std::chrono::seconds{10});
  }

  ~fuzz_env() {
    api.reset();
    n.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace ticktock::fuzz
