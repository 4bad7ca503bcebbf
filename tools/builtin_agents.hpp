#pragma once

// Agent types built into ticktockd.

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <stdexcept>

#include <ticktock/ticktock.hpp>
#include <ticktock/runtime/text.hpp>

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

/// A config that is a whole number from `min` to `max` (digits only), else
/// invalid_argument naming `what`: the init tick fails, to the deadletter.
inline std::int64_t config_number(const std::string& config, std::int64_t min, std::int64_t max,
                                  const char* what) {
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(config.data(), config.data() + config.size(), n);
  if (config.empty() || ec != std::errc{} || end != config.data() + config.size() || n < min
      || n > max)
    throw std::invalid_argument(std::string{what} + ": " + std::to_string(min) + " to "
                                + std::to_string(max) + ", got '" + config + "'");
  return n;
}

/// `heartbeat`: a periodic alarm every N seconds (config 1 to a year, default 10).
struct heartbeat_agent : agent<heartbeat_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init) {
      auto secs = ctx.config().empty() ? 10 : config_number(ctx.config(), 1, 31'536'000, "heartbeat config (seconds)");
      ctx.set_periodic_alarm("beat", ctx.now() + std::chrono::seconds{secs},
                             std::chrono::seconds{secs});
    } else if (t.kind == trigger_kind::alarm) {
      ++state().beats;
      ctx.emit("{\"beat\":" + std::to_string(state().beats) + "}");
    }
  }
  std::string summary() const override {
    return "{\"beats\":" + std::to_string(state().beats) + "}";
  }
};

struct timer_state {
  std::uint64_t set = 0;
  std::uint64_t fired = 0;
};

/// `timer`: a message {"alarm":"NAME","in_ms":N} sets a one-shot alarm NAME
/// due N ms after the message arrived (0 <= N <= 86400000); config N (ms, 1
/// to a year, optional) adds a periodic alarm "every" firing every N ms from the init
/// tick. Each firing is emitted to the outbox as {"alarm":"NAME","due_us":T}
/// (T: the occurrence's due time, microseconds since the epoch) and logged in
/// the trajectory. scripts/crash_campaign.py checks these across crashes.
struct timer_agent : agent<timer_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init) {
      if (ctx.config().empty())
        return;
      auto ms = config_number(ctx.config(), 1, 31'536'000'000, "timer config (ms)");
      ctx.set_periodic_alarm("every", ctx.now() + std::chrono::milliseconds{ms},
                             std::chrono::milliseconds{ms});
    } else if (t.kind == trigger_kind::message) {
      // The type's own message for every bad shape, not Boost.JSON's.
      auto bad = [] {
        return std::invalid_argument("timer: expected {\"alarm\":NAME,\"in_ms\":0..86400000}");
      };
      boost::system::error_code ec;
      auto v = boost::json::parse(t.payload, ec);
      auto* o = ec ? nullptr : v.if_object();
      auto* alarm = o ? o->if_contains("alarm") : nullptr;
      auto* in_ms = o ? o->if_contains("in_ms") : nullptr;
      if (!alarm || !alarm->is_string() || !in_ms || !(in_ms->is_int64() || in_ms->is_uint64()))
        throw bad();
      auto name = std::string{alarm->get_string()};
      auto ms = in_ms->is_int64() ? in_ms->get_int64() : std::int64_t{-1};
      if (name.empty() || name == "every" || ms < 0 || ms > 86'400'000)
        throw bad();
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

/// `player`: returns a ball to its sender (another agent) up to N times
/// (config 0 to 10^9, default 10; 0 never returns it; checked by every tick).
struct player_agent : agent<player_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto rally = ctx.config().empty()
                   ? std::int64_t{10}
                   : config_number(ctx.config(), 0, 1'000'000'000, "player config (returns)");
    if (t.kind != trigger_kind::message)
      return;
    if (state().hits >= static_cast<std::uint64_t>(rally) || t.from.empty())
      return;
    ++state().hits;
    ctx.send(t.from, "ball");
  }
  std::string summary() const override {
    return "{\"hits\":" + std::to_string(state().hits) + "}";
  }
};

// -- llm-chat -----------------------------------------------------------------

/// The configuration of an `llm-chat` agent (its config JSON; every field
/// optional): {"system": "You are ...", "provider": "local", "model":
/// "local-chat", "max_tokens": 256, "history": 40}. `history` is the most
/// earlier messages (user and assistant) kept per conversation and sent with
/// each question (2..200).
struct llm_chat_config {
  std::string system;
  std::string provider = "local";
  std::string model = "local-chat";
  std::uint32_t max_tokens = 256;
  std::size_t history = 40;

  /// Parses the config; throws std::invalid_argument naming the bad field
  /// (the tick fails, and its trigger ends in the deadletter).
  static llm_chat_config parse(const std::string& text) {
    llm_chat_config c;
    if (text.empty())
      return c;
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object())
      throw std::invalid_argument("llm-chat config: a JSON object {\"system\",\"provider\","
                                  "\"model\",\"max_tokens\",\"history\"}");
    for (auto& kv : v.as_object()) {
      // (Not a structured binding: clang 14 cannot capture one in a lambda.)
      auto k = kv.key();
      auto& x = kv.value();
      auto bad = [&](const char* what) {
        return std::invalid_argument("llm-chat config: " + std::string{k} + ": " + what);
      };
      if (k == "system" || k == "provider" || k == "model") {
        if (!x.is_string())
          throw bad("a string");
        (k == "system" ? c.system : k == "provider" ? c.provider : c.model) =
          std::string{x.as_string()};
      } else if (k == "max_tokens" || k == "history") {
        auto n = x.is_int64() ? x.as_int64() : x.is_uint64() ? 0 : -1;
        auto lo = k == "history" ? 2 : 1, hi = k == "history" ? 200 : 32768;
        if (n < lo || n > hi)
          throw bad(k == "history" ? "an integer 2..200" : "an integer 1..32768");
        if (k == "history")
          c.history = static_cast<std::size_t>(n);
        else
          c.max_tokens = static_cast<std::uint32_t>(n);
      } else {
        throw bad("unknown field (system, provider, model, max_tokens, history)");
      }
    }
    // The compute service's own check, so a bad provider or model name
    // fails the init tick instead of every question.
    auto probe = compute::parse_request(c.request({{"user", "probe"}}));
    if (!probe)
      throw std::invalid_argument("llm-chat config: " + probe.error_value().message());
    return c;
  }

  /// The compute/new body for a conversation (system prompt first).
  std::string request(const std::vector<std::pair<std::string, std::string>>& turns) const {
    boost::json::array messages;
    if (!system.empty())
      messages.push_back(boost::json::object{{"role", "system"}, {"content", system}});
    for (auto& [role, content] : turns)
      messages.push_back(boost::json::object{{"role", role}, {"content", content}});
    return boost::json::serialize(boost::json::object{{"kind", "chat"},
                                                      {"provider", provider},
                                                      {"model", model},
                                                      {"messages", std::move(messages)},
                                                      {"max_tokens", max_tokens}});
  }
};

/// A question waiting for its compute job.
struct llm_chat_turn {
  std::string conversation;
  std::string text;
  std::uint64_t reply_seq = 0;  ///< the deferred http trigger, 0 for a message
};

struct llm_chat_state {
  std::map<std::string, llm_chat_turn> pending;  ///< by compute job id
  std::uint64_t answered = 0;
  std::uint64_t refused = 0;  ///< denied: budget, policy or kill switch
  std::uint64_t failed = 0;   ///< the job ran and failed
};

/// `llm-chat`: answers questions through the compute service, within its
/// budget. A question is a message (a JSON string, {"text","conversation"?},
/// or any other payload taken as the text) or an HTTP POST to
/// /a/{id}/[conversation] (the body). Each one becomes a chat compute job
/// with the system prompt and the conversation so far (memory namespace
/// `conversations`, one key per conversation: messages from another agent go
/// to the conversation named by the sender's id, others to "default"). When
/// the job's compute_result arrives the answer is stored in the conversation,
/// emitted to the outbox as {"conversation","job","status","reply"} and, for
/// HTTP, sent as the deferred reply (text/plain). A job the gate refuses is
/// never retried: over budget the reply is "budget exhausted: ..." (HTTP
/// 402), denied by policy, an admin or the kill switch "denied by ...
/// (reason)" (403), a failed job "compute failed: ..." (502); the refusal is
/// not stored in the conversation. A question over 512 KiB (with the system
/// prompt) is refused (413), as is one while 1000 wait for answers (429).
/// GET /a/{id}/[conversation] answers the conversation as JSON.
struct llm_chat_agent : agent<llm_chat_state> {
  static constexpr std::string_view space = "conversations";
  static constexpr std::size_t max_pending = 1000;
  static constexpr std::size_t max_history_bytes = 256u << 10;
  static constexpr std::size_t max_question_bytes = compute::max_text_bytes / 2;

  void on_trigger(context& ctx, const trigger& t) override {
    auto cfg = llm_chat_config::parse(ctx.config());
    if (auto req = http_request::from(t)) {
      on_http(ctx, t, cfg, *req);
    } else if (t.kind == trigger_kind::message) {
      std::string text = t.payload, conversation = t.from.empty() ? "default" : t.from;
      boost::system::error_code ec;
      auto v = boost::json::parse(t.payload, ec);
      if (!ec && v.is_string()) {
        text = v.as_string();
      } else if (!ec && v.is_object()) {
        auto& o = v.as_object();
        if (auto* x = o.if_contains("text"); x && x->is_string())
          text = x->as_string();
        if (auto* x = o.if_contains("conversation"); x && x->is_string())
          conversation = x->as_string();
      }
      if (!valid_conversation(conversation) || text.empty()) {
        ctx.emit(event(conversation, "", "bad_request",
                       "a message is the question's text, or {\"text\",\"conversation\"?}"));
        return;
      }
      if (auto why = refuse_question(cfg, text); !why.empty()) {
        ctx.emit(event(conversation, "", "bad_request", why));
        return;
      }
      ask(ctx, cfg, std::move(conversation), std::move(text), 0);
    } else if (t.kind == trigger_kind::compute_result) {
      on_result(ctx, cfg, t.payload);
    }
  }

  std::string summary() const override {
    return "{\"answered\":" + std::to_string(state().answered)
           + ",\"refused\":" + std::to_string(state().refused)
           + ",\"failed\":" + std::to_string(state().failed)
           + ",\"pending\":" + std::to_string(state().pending.size()) + "}";
  }

private:
  static bool valid_conversation(const std::string& c) {
    return !c.empty() && c.size() <= 128
           && std::all_of(c.begin(), c.end(), [](char ch) {
                return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                       || ch == '.' || ch == '_' || ch == '-';
              });
  }

  static std::string event(const std::string& conversation, const std::string& job,
                           const std::string& status, const std::string& reply) {
    return boost::json::serialize(boost::json::object{
      {"conversation", conversation}, {"job", job}, {"status", status}, {"reply", reply}});
  }

  // The conversation so far: [{"role","content"}...], oldest first.
  static boost::json::array history(const context& ctx, const std::string& conversation) {
    auto stored = ctx.memory(space, conversation);
    if (!stored)
      return {};
    boost::system::error_code ec;
    auto v = boost::json::parse(*stored, ec);
    return !ec && v.is_array() ? v.as_array() : boost::json::array{};
  }

  void on_http(context& ctx, const trigger& t, const llm_chat_config& cfg, const http_request& req) {
    auto conversation = req.path.size() > 1 ? req.path.substr(1) : std::string{"default"};
    if (!conversation.empty() && conversation.back() == '/')
      conversation.pop_back();
    if (!valid_conversation(conversation)) {
      ctx.reply(404, "a conversation name is 1 to 128 of A-Z a-z 0-9 . _ -\n",
                {{"Content-Type", "text/plain; charset=utf-8"}});
      return;
    }
    if (req.method == "GET") {
      ctx.reply(200,
                boost::json::serialize(boost::json::object{
                  {"conversation", conversation}, {"messages", history(ctx, conversation)}}),
                {{"Content-Type", "application/json"}});
      return;
    }
    if (req.method != "POST") {
      ctx.reply(405, "GET reads a conversation, POST asks a question\n",
                {{"Content-Type", "text/plain; charset=utf-8"}, {"Allow", "GET, POST"}});
      return;
    }
    if (req.body.empty()) {
      ctx.reply(400, "the body is the question\n", {{"Content-Type", "text/plain; charset=utf-8"}});
      return;
    }
    if (auto why = refuse_question(cfg, req.body); !why.empty()) {
      ctx.reply(state().pending.size() >= max_pending      ? 429
                : !ticktock::is_valid_utf8(req.body)      ? 400
                                                           : 413,
                why + "\n",
                {{"Content-Type", "text/plain; charset=utf-8"}});
      return;
    }
    ctx.defer_reply();
    ask(ctx, cfg, std::move(conversation), req.body, t.seq);
  }

  // Why a question cannot be asked now (empty: it can).
  std::string refuse_question(const llm_chat_config& cfg, const std::string& text) const {
    if (state().pending.size() >= max_pending)
      return "too many questions waiting for an answer";
    if (!ticktock::is_valid_utf8(text))  // it goes into the compute request's JSON
      return "the question is not UTF-8 text";
    if (cfg.system.size() + text.size() > max_question_bytes)
      return "the question is too long (at most " + std::to_string(max_question_bytes)
             + " bytes with the system prompt)";
    return {};
  }

  // Starts the compute job for one question; its answer comes in on_result.
  void ask(context& ctx, const llm_chat_config& cfg, std::string conversation, std::string text,
           std::uint64_t reply_seq) {
    std::vector<std::pair<std::string, std::string>> turns;
    for (auto& m : history(ctx, conversation)) {
      auto* o = m.if_object();
      auto* role = o ? o->if_contains("role") : nullptr;
      auto* content = o ? o->if_contains("content") : nullptr;
      if (role && role->is_string() && content && content->is_string())
        turns.emplace_back(std::string{role->as_string()}, std::string{content->as_string()});
    }
    // The oldest turns go first when the request would be too long for the
    // compute service.
    auto bytes = cfg.system.size() + text.size();
    for (auto& [role, content] : turns)
      bytes += content.size();
    std::size_t drop = 0;
    while (drop < turns.size() && bytes > compute::max_text_bytes)
      bytes -= turns[drop++].second.size();
    turns.erase(turns.begin(), turns.begin() + static_cast<std::ptrdiff_t>(drop));
    turns.emplace_back("user", text);
    auto job = ctx.compute(cfg.request(turns));
    ctx.log("llm-chat: asked " + cfg.provider + "/" + cfg.model + " in conversation " + conversation
            + " (job " + job + ")");
    state().pending[job] = llm_chat_turn{std::move(conversation), std::move(text), reply_seq};
  }

  void on_result(context& ctx, const llm_chat_config& cfg, const std::string& payload) {
    boost::system::error_code ec;
    auto v = boost::json::parse(payload, ec);
    auto* o = !ec ? v.if_object() : nullptr;
    auto* job_v = o ? o->if_contains("job") : nullptr;
    if (!job_v || !job_v->is_string())
      return;
    auto job = std::string{job_v->as_string()};
    auto it = state().pending.find(job);
    if (it == state().pending.end())
      return;  // a job someone else started (compute/new), or answered already
    auto turn = std::move(it->second);
    state().pending.erase(it);
    auto str = [&](const boost::json::object* from, const char* key) {
      auto* x = from ? from->if_contains(key) : nullptr;
      return x && x->is_string() ? std::string{x->as_string()} : std::string{};
    };
    auto status = str(o, "status"), reason = str(o, "reason"), message = str(o, "message");
    // What the job cost: only a job that ran is charged (a refused one
    // reports what it would have reserved).
    auto cost = o->if_contains("cost_micro_usd");
    auto cost_text = status == "done" && cost && cost->is_number() ? boost::json::serialize(*cost)
                                                                   : std::string{"0"};
    std::uint16_t code = 200;
    std::string reply, outcome;
    if (status == "done") {
      auto* result = o->if_contains("result");
      reply = str(result ? result->if_object() : nullptr, "content");
      outcome = "ok";
      ++state().answered;
      auto conv = history(ctx, turn.conversation);
      conv.push_back(boost::json::object{{"role", "user"}, {"content", turn.text}});
      conv.push_back(boost::json::object{{"role", "assistant"}, {"content", reply}});
      auto bytes = [&] {
        std::size_t n = 0;
        for (auto& m : conv)
          n += boost::json::serialize(m).size();
        return n;
      };
      while (conv.size() > cfg.history || (conv.size() > 2 && bytes() > max_history_bytes))
        conv.erase(conv.begin());
      ctx.put_memory(std::string{space}, turn.conversation, boost::json::serialize(conv));
    } else if (status == "denied" && reason == "budget_exceeded") {
      // Not retried: the budget stays exhausted until an admin raises a limit.
      constexpr std::string_view prefix = "budget exceeded: ";
      if (message.starts_with(prefix))
        message.erase(0, prefix.size());
      reply = "budget exhausted: " + (message.empty() ? reason : message)
              + "; this question was not sent to the model";
      outcome = "budget_exhausted";
      code = 402;
      ++state().refused;
    } else if (status == "denied") {
      auto who = reason == "kill_switch"       ? "the kill switch"
                 : reason == "denied_by_admin" ? "an admin"
                                               : "policy";
      reply = "denied by " + std::string{who} + " (" + reason
              + "); this question was not sent to the model";
      outcome = "denied";
      code = 403;
      ++state().refused;
    } else if (status == "cancelled" && reason == "kill_switch") {
      reply = "denied by the kill switch (kill_switch); this question was not answered";
      outcome = "denied";
      code = 403;
      ++state().refused;
    } else if (status == "cancelled" && reason == "shutting_down") {
      reply = "the server is shutting down (shutting_down); ask again";
      outcome = "failed";
      code = 503;
      ++state().failed;
    } else if (status == "cancelled") {
      // Withdrawn (compute/jobs/{job}/cancel), not a failure of the provider.
      reply = "cancelled (" + (reason.empty() ? status : reason)
              + "); this question was not answered";
      outcome = "cancelled";
      code = 409;
      ++state().refused;
    } else {
      reply = "compute failed: " + (reason.empty() ? status : reason)
              + (message.empty() ? "" : ": " + message);
      outcome = "failed";
      code = 502;
      ++state().failed;
    }
    ctx.emit(event(turn.conversation, job, outcome, reply));
    if (turn.reply_seq != 0)
      ctx.reply_to(turn.reply_seq, code, reply,
                   {{"Content-Type", "text/plain; charset=utf-8"},
                    {"X-Job", job},
                    {"X-Cost-Micro-USD", cost_text}});
  }
};

struct fetcher_state {
  std::uint64_t asked = 0;
  std::uint64_t answered = 0;
};

/// `fetcher`: outbound HTTP through the http service. A message is a fetch
/// request ({"url","method"?,"headers"?,"body"?,"timeout_ms"?,
/// "max_response_bytes"?}, docs/http-fetch.md): a valid one is staged with
/// ctx.fetch and {"job"} emitted; a malformed one emits {"error"} instead
/// (the tick does not fail). Each http_result trigger's payload is emitted
/// as it came.
struct fetcher_agent : agent<fetcher_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::http_result) {
      ++state().answered;
      ctx.emit(t.payload);
      return;
    }
    if (t.kind != trigger_kind::message)
      return;
    if (auto req = fetch::parse_request(t.payload); !req) {
      ctx.emit(boost::json::serialize(boost::json::object{{"error", req.error_value().message()}}));
      return;
    }
    ++state().asked;
    auto job = ctx.fetch(t.payload);
    ctx.emit(ticktock::json_text(boost::json::object{{"job", job}}));
  }
  std::string summary() const override {
    return "{\"asked\":" + std::to_string(state().asked) + ",\"answered\":"
           + std::to_string(state().answered) + "}";
  }
};

inline agent_registry registry() {
  agent_registry r;
  r.add<counter_agent>("counter");
  r.add<echo_agent>("echo");
  r.add<fetcher_agent>("fetcher");
  r.add<heartbeat_agent>("heartbeat");
  r.add<llm_chat_agent>("llm-chat");
  r.add<player_agent>("player");
  r.add<timer_agent>("timer");
  return r;
}

}  // namespace ticktock::builtin
