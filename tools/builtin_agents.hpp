#pragma once

// Agent types built into ticktockd.

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
      ctx.reply(200, req->body,
                {{"Content-Type", type ? std::string{*type} : "application/octet-stream"}});
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
  return r;
}

}  // namespace ticktock::builtin
