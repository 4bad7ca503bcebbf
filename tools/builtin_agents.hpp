#pragma once

// Agent types built into ticktockd.

#include <boost/json.hpp>

#include <stdexcept>

#include <ticktock/ticktock.hpp>

namespace ticktock::builtin {

struct counter_state {
  std::uint64_t count = 0;
};

/// `counter`: every message and every HTTP POST adds one; HTTP answers the count.
struct counter_agent : agent<counter_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto req = http_request::from(t);
    bool add = t.kind == trigger_kind::message || (req && req->method == "POST");
    if (add) {
      ++state().count;
      ctx.emit("{\"count\":" + std::to_string(state().count) + "}");
    }
    if (req)
      ctx.reply(200, summary(), {{"Content-Type", "application/json"}});
  }
  std::string summary() const override {
    return "{\"count\":" + std::to_string(state().count) + "}";
  }
};

struct echo_state {
  std::uint64_t echoed = 0;
};

/// `echo`: emits every message to its outbox, answers HTTP with the body and
/// WebSocket frames with the same frame.
struct echo_agent : agent<echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (auto ev = ws_event::from(t)) {
      if (ev->event == ws_event::kind::frame) {
        ++state().echoed;
        ctx.ws_send(ev->connection, ev->data, ev->binary);
      }
      return;
    }
    if (auto req = http_request::from(t)) {
      ++state().echoed;
      auto type = req->header("content-type");
      // The path and query it saw come back too, as X-Echo-Path and X-Echo-Query.
      ctx.reply(200, req->body,
                {{"Content-Type", type ? std::string{*type} : "application/octet-stream"},
                 {"X-Echo-Path", req->path},
                 {"X-Echo-Query", req->query}});
      return;
    }
    if (t.kind != trigger_kind::message)
      return;
    ++state().echoed;
    ctx.emit(t.payload);
  }
  std::string summary() const override {
    return "{\"echoed\":" + std::to_string(state().echoed) + "}";
  }
};

struct heartbeat_state {
  std::uint64_t beats = 0;
};

/// `heartbeat`: a periodic alarm every N seconds (config, default 10).
struct heartbeat_agent : agent<heartbeat_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init) {
      auto secs = ctx.config().empty() ? 10 : std::stoi(ctx.config());
      ctx.set_periodic_alarm("beat", ctx.now() + std::chrono::seconds{secs},
                             std::chrono::seconds{secs});
    } else if (t.kind == trigger_kind::alarm) {
      ++state().beats;
      ctx.emit("{\"beat\":" + std::to_string(state().beats) + "}");
    }
  }
};

struct timer_state {
  std::uint64_t set = 0;
  std::uint64_t fired = 0;
};

/// `timer`: a message {"alarm":"NAME","in_ms":N} sets a one-shot alarm NAME
/// due N ms after the message arrived (0 <= N <= 86400000); config N (ms,
/// optional) adds a periodic alarm "every" firing every N ms from the init
/// tick. Each firing is emitted to the outbox as {"alarm":"NAME","due_us":T}
/// (T: the occurrence's due time, microseconds since the epoch) and logged in
/// the trajectory. scripts/crash_campaign.py checks these across crashes.
struct timer_agent : agent<timer_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init) {
      if (ctx.config().empty())
        return;
      auto ms = std::stoll(ctx.config());
      if (ms <= 0)
        throw std::invalid_argument("timer config: a period in ms > 0");
      ctx.set_periodic_alarm("every", ctx.now() + std::chrono::milliseconds{ms},
                             std::chrono::milliseconds{ms});
    } else if (t.kind == trigger_kind::message) {
      auto v = boost::json::parse(t.payload);
      auto& o = v.as_object();
      auto name = std::string{o.at("alarm").as_string()};
      auto ms = o.at("in_ms").to_number<std::int64_t>();
      if (name.empty() || name == "every" || ms < 0 || ms > 86'400'000)
        throw std::invalid_argument("timer: expected {\"alarm\":NAME,\"in_ms\":0..86400000}");
      ++state().set;
      ctx.set_alarm(std::move(name), ctx.now() + std::chrono::milliseconds{ms});
    } else if (t.kind == trigger_kind::alarm) {
      ++state().fired;
      auto due = std::to_string(t.time.time_since_epoch().count());
      ctx.emit("{\"alarm\":" + boost::json::serialize(boost::json::value(t.alarm))
               + ",\"due_us\":" + due + "}");
      ctx.log("alarm " + t.alarm + " due_us=" + due);
    }
  }
  std::string summary() const override {
    return "{\"set\":" + std::to_string(state().set) + ",\"fired\":" + std::to_string(state().fired)
           + "}";
  }
};

struct player_state {
  std::uint64_t hits = 0;
};

/// `player`: returns a ball to its sender up to N times (config, default 10).
struct player_agent : agent<player_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind != trigger_kind::message)
      return;
    auto rally = ctx.config().empty() ? 10ull : std::stoull(ctx.config());
    if (state().hits >= rally || t.from.empty())
      return;
    ++state().hits;
    ctx.send(t.from, "ball");
  }
};

inline agent_registry registry() {
  agent_registry r;
  r.add<counter_agent>("counter");
  r.add<echo_agent>("echo");
  r.add<heartbeat_agent>("heartbeat");
  r.add<player_agent>("player");
  r.add<timer_agent>("timer");
  return r;
}

}  // namespace ticktock::builtin
