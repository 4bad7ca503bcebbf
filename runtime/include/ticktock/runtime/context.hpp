#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/http.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/runtime/text.hpp"
#include "ticktock/runtime/trigger.hpp"

namespace ticktock {

class agent_base;

/// A message to another agent, staged by ctx.send().
struct outgoing_message {
  std::string to;
  std::string payload;
  /// Encrypt end to end for the recipient: only its tick sees the plaintext.
  bool encrypted = false;
};

/// A Nostr event a tick publishes (kind 1 text note, or any kind). The
/// runtime signs it with the agent's BIP-340 key and writes it to the outbox
/// (topic "nostr") in the tick's batch; the Nostr driver publishes it to the
/// agent's relays after the commit.
struct nostr_note {
  int kind = 1;
  std::string content;
  std::vector<std::vector<std::string>> tags;
};

/// A job for a service (compute, containers, http) staged by the tick. The
/// policy gate and the budget decide when the tick commits; the result comes
/// back as a compute_result, container_result or http_result trigger
/// (docs/compute.md, docs/http-fetch.md).
struct job_request {
  std::string id;       ///< unique per agent, assigned by the context
  std::string service;  ///< compute | containers | http
  std::string request;  ///< JSON (compute::parse_request / a session request / fetch::parse_request)
};

/// Options of ctx.send().
struct message_options {
  bool encrypted = false;
};

/// An alarm set or cancelled by the tick. A set alarm with a zero period is
/// one-shot; otherwise it re-arms every `period` after it fires.
struct alarm_change {
  std::string name;
  bool cancel = false;
  time_point due{};
  duration period{0};
  bool periodic = false;  ///< set by set_periodic_alarm: its period must be positive
};

/// A key-value edit of goals or memory; `value` empty means erase.
struct kv_change {
  std::string space;  ///< memory namespace; empty for goals
  std::string key;
  std::optional<std::string> value;
};

/// The payload of a `goal_changed` trigger: a goal set (value) or erased
/// (no value) from outside. The runtime applies it in the tick that handles
/// the trigger, before on_trigger runs.
struct goal_change {
  std::string key;
  std::optional<std::string> value;

  std::string encode() const;
  static std::optional<goal_change> from(const trigger& t);
};

/// Everything a tick staged. Nothing here takes effect unless the tick
/// succeeds and REMEMBER commits it.
struct effects {
  std::vector<std::string> outbox;
  std::vector<outgoing_message> messages;
  std::vector<alarm_change> alarms;
  std::vector<kv_change> goals;
  std::vector<kv_change> memory;
  std::vector<std::string> logs;
  std::optional<std::string> failure;  ///< set by ctx.fail()
  std::optional<http_reply> reply;     ///< set by ctx.reply()
  std::vector<ws_message> ws;          ///< set by ctx.ws_send / ws_close
  std::vector<nostr_note> nostr;       ///< set by ctx.nostr_publish
  std::vector<job_request> jobs;       ///< set by ctx.compute / ctx.run_container / ctx.fetch
  bool reply_deferred = false;         ///< set by ctx.defer_reply
  /// Answers to earlier deferred http triggers, by their inbox seq.
  std::vector<std::pair<std::uint64_t, http_reply>> late_replies;

  bool empty() const {
    return outbox.empty() && messages.empty() && alarms.empty() && goals.empty()
           && memory.empty() && logs.empty() && jobs.empty() && !failure;
  }
};

/// Read access to the agent's committed goals and memory, provided by the
/// host (the node or the test harness).
class record_reader {
public:
  virtual ~record_reader();
  virtual std::optional<std::string> read_goal(std::string_view key) const = 0;
  virtual std::optional<std::string> read_memory(std::string_view space,
                                                 std::string_view key) const = 0;
  /// The agent's own keys; nullptr where the host has none.
  virtual const identity::agent_keys* keys() const { return nullptr; }
  /// Another agent's public keys, if the host knows it.
  virtual std::optional<identity::public_keys> public_keys_of(std::string_view) const {
    return std::nullopt;
  }
};

/// What on_trigger sees of the world during one tick. Every mutating call
/// only stages an effect; the host commits all of them atomically after
/// on_trigger returns, or none if it throws or calls fail(). Not thread-safe:
/// a context lives on the stack of one tick.
class context {
public:
  context(std::string_view self, const std::string& config, const trigger& trig,
          agent_base& agent, const record_reader* reader)
    : self_(self), config_(config), trigger_(trig), agent_(agent), reader_(reader) {}

  context(const context&) = delete;
  context& operator=(const context&) = delete;

  // -- identity and time --------------------------------------------------

  /// The trigger's time. Ticks read time only through this, so a tick is
  /// replayable.
  time_point now() const noexcept { return trigger_.time; }
  const std::string& self() const noexcept { return self_; }
  /// The config the agent was created with.
  const std::string& config() const noexcept { return config_; }
  const trigger& current_trigger() const noexcept { return trigger_; }

  // -- state --------------------------------------------------------------

  /// The agent's typed state. Throws std::logic_error if State is not the
  /// agent's state type.
  template <class State>
  State& state();

  // -- effects ------------------------------------------------------------

  /// Sends `payload` to agent `to` after this tick commits (exactly once for
  /// local agents: the message is written in the same batch).
  void send(std::string to, std::string payload, message_options opts = {}) {
    effects_.messages.push_back({std::move(to), std::move(payload), opts.encrypted});
  }

  /// Appends an event to this agent's outbox.
  void emit(std::string event) { effects_.outbox.push_back(std::move(event)); }

  /// Sets (or replaces) a one-shot alarm called `name` due at `due`.
  void set_alarm(std::string name, time_point due) {
    effects_.alarms.push_back({std::move(name), false, due, duration{0}});
  }

  /// Sets (or replaces) a periodic alarm first due at `first`, then every
  /// `period`. A non-positive period is rejected when the tick commits.
  void set_periodic_alarm(std::string name, time_point first, duration period) {
    effects_.alarms.push_back({std::move(name), false, first, period, true});
  }

  /// Cancels the alarm called `name`; a no-op if there is none.
  void cancel_alarm(std::string name) {
    effects_.alarms.push_back({std::move(name), true, time_point{}, duration{0}});
  }

  /// Sets or erases (value empty) a goal.
  void set_goal(std::string key, std::string value) {
    effects_.goals.push_back({{}, std::move(key), std::move(value)});
  }
  void erase_goal(std::string key) { effects_.goals.push_back({{}, std::move(key), std::nullopt}); }
  /// Reads a goal, seeing this tick's own staged edits first.
  std::optional<std::string> goal(std::string_view key) const;

  /// Memory key-value in namespace `space` (e.g. "kv", "patterns").
  void put_memory(std::string space, std::string key, std::string value) {
    effects_.memory.push_back({std::move(space), std::move(key), std::move(value)});
  }
  void erase_memory(std::string space, std::string key) {
    effects_.memory.push_back({std::move(space), std::move(key), std::nullopt});
  }
  std::optional<std::string> memory(std::string_view space, std::string_view key) const;

  /// Answers the HTTP request of an `http` trigger; sent after the commit.
  /// Without a reply the request gets 204. The last call wins. A status
  /// outside 200..599, or a header check_reply refuses, throws
  /// std::invalid_argument (the tick fails). A 204 or 304 is sent without
  /// its body.
  void reply(std::uint16_t status, std::string body, http_headers headers = {}) {
    check_reply(status, headers);
    effects_.reply = http_reply{status, std::move(headers), std::move(body)};
  }

  /// Sends a frame to WebSocket connection `connection` (from a ws trigger)
  /// after the commit. Frames to a connection that closed are dropped. A
  /// text frame must be UTF-8 (RFC 6455, 8.1): other bytes throw
  /// std::invalid_argument (the tick fails); send them as binary.
  void ws_send(std::string connection, std::string data, bool binary = false) {
    if (!binary && !is_valid_utf8(data))
      throw std::invalid_argument("ws_send: a text frame must be UTF-8; send these bytes as binary");
    effects_.ws.push_back({std::move(connection), std::move(data), binary, false});
  }
  /// Closes a WebSocket connection after the commit.
  void ws_close(std::string connection) {
    effects_.ws.push_back({std::move(connection), {}, false, true});
  }

  /// Leaves the HTTP request of this `http` trigger open: a later tick
  /// answers it with reply_to(seq, ...) (seq: current_trigger().seq). The
  /// client waits up to the server's reply timeout.
  void defer_reply() { effects_.reply_deferred = true; }
  /// Answers a deferred HTTP request, after this tick commits; checked as
  /// reply() is.
  void reply_to(std::uint64_t seq, std::uint16_t status, std::string body,
                http_headers headers = {}) {
    check_reply(status, headers);
    effects_.late_replies.emplace_back(seq, http_reply{status, std::move(headers), std::move(body)});
  }

  // -- services (their results come back as triggers) ----------------------

  /// Starts a compute job once the tick commits, if the policy gate and the
  /// budget allow it; returns its id. `request_json` is what compute/new
  /// takes (docs/compute.md). The result, a failure or a denial arrives as
  /// a `compute_result` trigger: {"job","status","result"|"error"|"reason",...}.
  std::string compute(std::string request_json) { return stage_job("compute", std::move(request_json)); }
  /// Starts a sandboxed container session the same way (docs/containers.md);
  /// its end arrives as a `container_result` trigger.
  std::string run_container(std::string request_json) {
    return stage_job("containers", std::move(request_json));
  }
  /// Makes an outbound HTTP request once the tick commits, if the policy
  /// gate (action `http`, destination the URL's host) and the budget allow
  /// it; returns its job id. `request_json` is what http/new takes:
  /// {"method","url","headers","body","timeout_ms","max_response_bytes"}
  /// (docs/http-fetch.md). The response (any status: redirects are not
  /// followed), a failure or a denial arrives as an `http_result` trigger:
  /// {"job","service":"http","status","result"|"reason",...}. A malformed
  /// request fails the tick when it commits.
  std::string fetch(std::string request_json) { return stage_job("http", std::move(request_json)); }
  /// Set by the host: what makes this tick's job ids unique for the agent.
  void set_job_prefix(std::string prefix) { job_prefix_ = std::move(prefix); }

  // -- identity (the secret keys never leave the runtime) ----------------

  /// This agent's public keys. Throws std::logic_error where the host gives
  /// the agent no keys.
  const identity::public_keys& public_keys() const;
  /// Another agent's public keys, if known here.
  std::optional<identity::public_keys> public_keys_of(std::string_view agent) const;
  /// Signs `bytes` with this agent's Ed25519 key. Bytes in ticktock's own
  /// signing domain (identity::reserved_signing_domain) throw
  /// std::invalid_argument: the tick fails.
  identity::signature sign(std::string_view bytes) const;
  /// Checks an Ed25519 signature by any key.
  static bool verify(const identity::public_key& key, std::string_view bytes,
                     std::span<const std::uint8_t> sig) {
    return identity::verify(key, bytes, sig);
  }
  /// Encrypts `plaintext` for the holder of `recipient`.
  static expected<std::string> encrypt_to(const identity::public_key& recipient,
                                          std::string_view plaintext) {
    return identity::encrypt_to(recipient, plaintext);
  }
  /// Decrypts what was encrypted for this agent.
  expected<std::string> decrypt(std::string_view ciphertext) const;

  /// Publishes a Nostr event signed with this agent's BIP-340 key to its
  /// relays, once the tick commits.
  void nostr_publish(int kind, std::string content,
                     std::vector<std::vector<std::string>> tags = {}) {
    effects_.nostr.push_back({kind, std::move(content), std::move(tags)});
  }

  /// Adds a line to this tick's trajectory record.
  void log(std::string line) { effects_.logs.push_back(std::move(line)); }

  /// Fails the tick: nothing staged is committed and the trigger is retried
  /// (up to max_attempts, then deadlettered with `reason`).
  void fail(std::string reason) { effects_.failure = std::move(reason); }

  /// The staged effects (for hosts and the test harness).
  const effects& staged() const noexcept { return effects_; }
  effects& staged() noexcept { return effects_; }

private:
  void* state_ptr(const std::type_info& type);
  std::string stage_job(const char* service, std::string request) {
    auto id = job_prefix_ + "-" + std::to_string(effects_.jobs.size());
    effects_.jobs.push_back({id, service, std::move(request)});
    return id;
  }

  std::string self_;
  const std::string& config_;
  const trigger& trigger_;
  agent_base& agent_;
  const record_reader* reader_;
  effects effects_;
  std::string job_prefix_ = "job";
};

}  // namespace ticktock

#include "ticktock/runtime/agent.hpp"

namespace ticktock {

template <class State>
State& context::state() {
  return *static_cast<State*>(state_ptr(typeid(State)));
}

}  // namespace ticktock
