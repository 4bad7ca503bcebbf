#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ticktock/runtime/clock.hpp"

namespace ticktock {

/// Why a tick runs. The numeric values are stored on disk; never renumber.
enum class trigger_kind : std::uint8_t {
  init = 0,              ///< The agent's first tick; payload is its config.
  message = 1,           ///< From another agent (`from` set) or from outside.
  http = 2,              ///< An HTTP request that expects a response.
  ws = 3,                ///< Open/frame/close on an agent WebSocket.
  alarm = 4,             ///< A scheduled alarm; `alarm` names it.
  ctl = 5,               ///< A manual tick or wake.
  compute_result = 6,
  container_result = 7,
  approval_decision = 8,
  goal_changed = 9,
  http_result = 10,      ///< An outbound HTTP fetch (ctx.fetch, http/new) ended.
};

/// Lower-case name of a kind ("message"); the inverse is parse_trigger_kind.
std::string_view to_string(trigger_kind kind) noexcept;
std::optional<trigger_kind> parse_trigger_kind(std::string_view name) noexcept;

/// One trigger, as the agent sees it in on_trigger.
struct trigger {
  trigger_kind kind = trigger_kind::message;
  /// Arrival time (for alarms: the due time). ctx.now() returns this.
  time_point time{};
  /// Inbox sequence number of this trigger.
  std::uint64_t seq = 0;
  /// Sender agent id for agent-to-agent messages, else empty.
  std::string from;
  /// The message body, HTTP body, alarm payload or config.
  std::string payload;
  /// Alarm name for alarm triggers, else empty.
  std::string alarm;
  /// 1 on the first attempt, incremented on each retry.
  std::uint32_t attempt = 1;
  /// True when the message was end-to-end encrypted for this agent: the
  /// stored inbox record holds ciphertext; `payload` here is the plaintext.
  bool encrypted = false;
};

}  // namespace ticktock
