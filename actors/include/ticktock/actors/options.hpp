#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/http.hpp"
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
  /// The 32-byte master key that seals agents' secret keys; created (mode
  /// 0600) when missing. Empty: data_dir / "master.key".
  std::filesystem::path master_key_file;
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
  std::string error;    ///< why the agent is errored
  std::string summary;  ///< the agent's summary() JSON after its last tick
};

/// Options of one inbox write.
struct send_options {
  trigger_kind kind = trigger_kind::message;
  /// Sender id: the message is signed with this local agent's key, as if
  /// the agent had sent it.
  std::string from;
  /// With `from`: encrypt end to end for the recipient.
  bool encrypted = false;
  /// The payload is a Nostr event from a relay: checked (and a gift-wrapped
  /// direct message opened) before the tick.
  bool nostr = false;
  /// A repeated key is accepted once: the second write returns the first seq.
  std::string idempotency_key;
};

/// Acknowledgement of a durable inbox write.
struct send_receipt {
  std::uint64_t seq = 0;
  bool duplicate = false;
};

/// Reported to tick observers after every committed attempt.
struct tick_event {
  std::string agent;
  std::uint64_t tick = 0;
  std::uint32_t attempt = 1;
  trigger_kind kind = trigger_kind::message;
  std::uint64_t trigger_seq = 0;
  storage::outcome outcome = storage::outcome::ok;
  std::string error;
  /// Outbox events the tick emitted have seqs [outbox_next - outbox_count, outbox_next).
  std::uint64_t outbox_next = 0;
  std::uint32_t outbox_count = 0;
  /// The tick's answer to an http trigger.
  std::optional<http_reply> reply;
  /// Frames the tick sends to WebSocket connections.
  std::vector<ws_message> ws;
  /// From the start of the attempt to its commit.
  std::chrono::microseconds latency{0};
  /// Why the trigger was refused before the tick (bad_signature,
  /// undecryptable), else empty.
  std::string refused;
};

/// Counters of a node since it opened (for /metrics).
struct node_metrics {
  std::uint64_t ticks_ok = 0;
  std::uint64_t ticks_failed = 0;   ///< attempts that failed and will be retried
  std::uint64_t deadlettered = 0;   ///< attempts that sent their trigger to the deadletter
  std::uint64_t bad_signatures = 0;     ///< messages refused: missing or bad signature
  std::uint64_t undecryptable = 0;      ///< messages refused: encrypted, not for this agent
  std::uint64_t replayed_envelopes = 0; ///< envelopes delivered twice (refused)
  /// Tick latency histogram: counts of ticks with latency <= bounds[i] (cumulative
  /// as Prometheus expects), the sum in microseconds, and the count.
  static constexpr std::array<std::uint64_t, 12> bounds_us{
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000, 10000000};
  std::array<std::uint64_t, 12> latency_buckets{};
  std::uint64_t latency_sum_us = 0;
  std::uint64_t latency_count = 0;
  std::uint64_t agents = 0;
  std::uint64_t resident = 0;
  std::uint64_t inbox_pending = 0;
};

}  // namespace ticktock
