#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/trigger.hpp"
#include "ticktock/storage/records.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock {

using storage::durability;
using storage::missed_alarm_policy;

/// Limits applied to every tick. Defaults in brackets.
struct tick_limits {
  /// Attempts of one trigger before it goes to the deadletter [3].
  std::uint32_t max_attempts = 3;
  /// Inbox depth limit; overflow goes to the deadletter (0: none) [10000].
  std::uint64_t inbox_limit = 10'000;
  /// Largest message, outbox event or HTTP body in bytes [1 MiB].
  std::size_t max_message_bytes = std::size_t{1} << 20;
};

/// Configuration of a node. Each option states its default.
struct node_options {
  /// Data directory of the embedded RocksDB [./ticktock-data].
  std::filesystem::path data_dir = "ticktock-data";
  /// sync: fsync per commit group (survives power loss); async: WAL only,
  /// survives a process crash [async].
  storage::durability durability = storage::durability::async;
  /// A resident agent with an empty inbox hibernates after this long [60 s].
  std::chrono::milliseconds idle_timeout{60'000};
  /// Most agents resident at once; least recently used ones hibernate [100000].
  std::size_t max_resident = 100'000;
  /// CAF scheduler threads (0: one per core) [0].
  std::size_t threads = 0;
  /// Backoff before retry n is retry_backoff * 2^(n-1), capped at 30 s [100 ms].
  std::chrono::milliseconds retry_backoff{100};
  /// What happens to alarms that came due while the process was down [fire_once].
  storage::missed_alarm_policy missed_alarms = storage::missed_alarm_policy::fire_once;
  tick_limits limits;
  /// Most operations committed in one WriteBatch [1024].
  std::size_t max_commit_group = 1024;
  /// Wall-clock source; nullptr means the system clock.
  std::shared_ptr<ticktock::clock> clock;
};

/// What the directory knows about an agent.
enum class agent_state : std::uint8_t { active, hibernated, errored, terminated };
std::string_view to_string(agent_state s) noexcept;

struct agent_status {
  std::string id;
  std::string type;
  agent_state state = agent_state::hibernated;
  std::uint64_t last_tick = 0;
  time_point last_tick_time{};
  std::uint64_t queue_depth = 0;
  std::string error;  ///< why the agent is errored
};

/// Options of one inbox write.
struct send_options {
  trigger_kind kind = trigger_kind::message;
  /// Sender id, for messages from another agent.
  std::string from;
  /// A repeated key is accepted once: the second write returns the first seq.
  std::string idempotency_key;
};

/// Acknowledgement of a durable inbox write.
struct send_receipt {
  std::uint64_t seq = 0;
  bool duplicate = false;
};

/// Reported to the tick observer after every committed attempt.
struct tick_event {
  std::string agent;
  std::uint64_t tick = 0;
  std::uint32_t attempt = 1;
  trigger_kind kind = trigger_kind::message;
  std::uint64_t trigger_seq = 0;
  storage::outcome outcome = storage::outcome::ok;
  std::string error;
  std::vector<storage::outbox_event> outbox;
};

}  // namespace ticktock
