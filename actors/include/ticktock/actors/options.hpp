#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/compute.hpp"
#include "ticktock/runtime/fetch.hpp"
#include "ticktock/runtime/sandbox.hpp"
#include "ticktock/runtime/http.hpp"
#include "ticktock/runtime/trigger.hpp"
#include "ticktock/storage/records.hpp"
#include "ticktock/storage/store.hpp"

namespace caf {
class actor_system_config;
}

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
  /// Ticks per minute: at most this many in any minute, counting those that
  /// ran before the limit was set or the node restarted; further triggers
  /// wait (the agent's status says throttled) (0: no limit) [0].
  std::uint32_t ticks_per_minute = 0;
  /// A tick running longer is flagged in its trajectory record and the
  /// metrics, like a stall detector (0: never) [1000 ms].
  std::chrono::milliseconds tick_wall_time{1000};
  /// Largest state; a tick that grows the state past it fails and commits
  /// nothing (0: no limit) [16 MiB].
  std::uint64_t max_state_bytes = std::uint64_t{16} << 20;
  /// Outbox events kept per agent; older ones are deleted by the tick that
  /// passes the count (0: keep all) [0].
  std::uint64_t outbox_retention = 0;

  /// The largest values an agent's override (fs/limits) and ticktockd's
  /// defaults take.
  static constexpr std::uint32_t most_attempts = 1000;
  static constexpr std::uint32_t most_ticks_per_minute = 1'000'000'000;
  static constexpr std::chrono::milliseconds longest_tick_wall_time{86'400'000};  // a day
};

/// The compute, containers and outbound HTTP services (docs/compute.md,
/// docs/containers.md, docs/http-fetch.md).
struct service_options {
  /// Compute providers by name; "local" (the deterministic local provider)
  /// is added when missing.
  std::map<std::string, std::shared_ptr<compute::provider>> providers;
  /// Threads running compute jobs and outbound HTTP fetches [4].
  std::size_t compute_workers = 4;
  /// Container sessions running at once; more wait in a queue [2].
  std::size_t container_concurrency = 2;
  /// Limits a session gets when its request names none, and the most it may ask for.
  sandbox::limits container_defaults{};
  sandbox::limits container_maxima{std::chrono::milliseconds{600'000}, 600, std::uint64_t{4} << 30,
                                    std::uint64_t{1} << 30, 256, std::size_t{16} << 20};
  sandbox::isolation isolation = sandbox::isolation::automatic;
  /// When set and the server runs as root, the session in slot k runs as uid
  /// and gid container_uid_base + k (k < container_concurrency), so that
  /// concurrent sessions cannot signal each other; else every session runs as
  /// nobody (sandbox::pool::options::uid_base) [unset].
  std::optional<std::uint32_t> container_uid_base;
  /// Price of a container session per CPU second, in micro-USD [100].
  std::uint64_t container_price_per_cpu_second = 100;
  /// Where sessions get their working directories [data_dir / "containers"].
  std::filesystem::path containers_dir;
  /// Does outbound HTTP fetches (ctx.fetch, http/new); ticktockd plugs in
  /// drivers::make_http_fetch(). Without one, admitted fetches end as failed
  /// (`unavailable`) [nullptr].
  std::shared_ptr<fetch::executor> http_executor;
  /// What a fetch reserves and costs, in micro-USD per request [0].
  std::uint64_t http_price_per_request = 0;
  /// Timeouts and sizes fetch requests may ask for.
  fetch::limits http_limits{};
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
  /// CAF scheduler threads (0: one per CPU this process may use, see
  /// `taskset`) [0].
  std::size_t threads = 0;
  /// Called on the actor system's configuration before the system starts,
  /// for example to install another scheduler (drivers::io_loops, which
  /// ignores `threads`) [nullptr].
  std::function<void(caf::actor_system_config&)> configure_caf;
  /// Backoff before retry n is retry_backoff * 2^(n-1), capped at 30 s [100 ms].
  std::chrono::milliseconds retry_backoff{100};
  /// What happens to alarms that came due while the process was down [fire_once].
  storage::missed_alarm_policy missed_alarms = storage::missed_alarm_policy::fire_once;
  tick_limits limits;
  /// How long a client's Idempotency-Key (send_options::idempotency_key) is
  /// remembered after the write that first carried it; a write with it after
  /// that is a new trigger. The node's own keys stay (0: clients' too) [24 h].
  std::chrono::seconds idempotency_ttl{std::chrono::hours{24}};
  /// Most operations committed in one WriteBatch [1024].
  std::size_t max_commit_group = 1024;
  /// Wall-clock source; nullptr means the system clock.
  std::shared_ptr<ticktock::clock> clock;
  /// Compute and containers services.
  service_options services;
  /// Where container sessions get their working directories:
  /// services.containers_dir, else data_dir / "containers".
  std::filesystem::path containers_root() const {
    return services.containers_dir.empty() ? data_dir / "containers" : services.containers_dir;
  }
  /// The 32-byte master key that seals agents' secret keys; created (mode
  /// 0600) when missing. Empty: data_dir / "master.key".
  std::filesystem::path master_key_file;
  /// Fault injection for tests: the store's disk writes ask it whether to
  /// fail (see ticktock/storage/faults.hpp, docs/operations.md) [nullptr].
  std::shared_ptr<storage::fault_injector> faults;
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
  /// Triggers wait for the ticks_per_minute limit until this time (else epoch).
  time_point throttled_until{};
  /// Limits hit in this process: name -> count.
  std::map<std::string, std::uint64_t> limits_hit;
  /// Trajectory records committed (every attempt's); the last has index
  /// trajectory_records - 1.
  std::uint64_t trajectory_records = 0;
  /// The seq the agent's next outbox event will get (seqs start at 1).
  std::uint64_t outbox_next = 1;
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
  /// The HTTP request that delivers the trigger (its X-Request-Id), if any:
  /// stored with it and reported in the tick_event of its tick.
  std::string request_id;
  /// Queued even when the inbox is at its depth limit (which would move it
  /// to the deadletter): for a trigger the agent must not miss, such as the
  /// close of a WebSocket connection whose open it was given.
  bool ignore_depth_limit = false;
  /// At the depth limit the trigger is refused (inbox_full) and not kept in
  /// the deadletter, from which a requeue could deliver it later: for the
  /// open of a WebSocket connection, which the client is told was refused.
  bool refuse_when_full = false;
  /// The bytes that count against `max_message_bytes` when the payload
  /// wraps the message (an HTTP request's body, a goal's value, a WebSocket
  /// frame); by default, the whole payload.
  std::optional<std::size_t> message_bytes;
};

/// Acknowledgement of a durable inbox write.
struct send_receipt {
  std::uint64_t seq = 0;
  bool duplicate = false;
};

/// Reported to tick observers after every committed attempt.
struct tick_event {
  std::string agent;
  std::uint64_t tick = 0;  ///< a failed attempt's is the tick it tried to be, as in its record
  std::uint32_t attempt = 1;
  trigger_kind kind = trigger_kind::message;
  std::uint64_t trigger_seq = 0;
  /// The trigger's request id: send_options::request_id, or for a message
  /// from another agent that of the sending tick's trigger; else empty.
  std::string request_id;
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
  /// The tick left its http request open (ctx.defer_reply).
  bool reply_deferred = false;
  /// Answers to earlier deferred http requests, by inbox seq.
  std::vector<std::pair<std::uint64_t, http_reply>> late_replies;
  /// Jobs the tick created or decided: id, status, reason.
  std::vector<storage::job_record> jobs;
  /// Limits the tick hit.
  std::vector<std::string> limits;
};

/// Counters of a node since it opened (for /metrics).
struct node_metrics {
  std::uint64_t ticks_ok = 0;
  std::uint64_t ticks_failed = 0;   ///< attempts that failed and will be retried
  std::uint64_t deadlettered = 0;   ///< attempts that sent their trigger to the deadletter
  /// Writes that committed tick attempts: an agent with several triggers
  /// waiting runs them as one batch, committed in one write, so the mean
  /// batch is (ticks_ok + ticks_failed + deadlettered) / tick_writes.
  std::uint64_t tick_writes = 0;
  std::uint64_t bad_signatures = 0;     ///< messages refused: missing or bad signature
  std::uint64_t undecryptable = 0;      ///< messages refused: encrypted, not for this agent
  std::uint64_t replayed_envelopes = 0; ///< envelopes delivered twice (refused)
  std::uint64_t throttled = 0;          ///< triggers delayed by ticks_per_minute
  std::uint64_t inbox_overflows = 0;    ///< triggers a full inbox sent to the deadletter or refused
  std::uint64_t slow_ticks = 0;         ///< ticks over tick_wall_time
  std::uint64_t state_too_large = 0;    ///< ticks failed by max_state_bytes
  std::uint64_t outbox_trimmed = 0;     ///< ticks that deleted old outbox events
  std::uint64_t decisions_allow = 0, decisions_deny = 0, decisions_approval = 0;
  std::uint64_t jobs_done = 0, jobs_failed = 0;
  /// Tick latency histogram: counts of ticks with latency <= bounds[i] (cumulative
  /// as Prometheus expects), the sum in microseconds, and the count.
  static constexpr std::array<std::uint64_t, 12> bounds_us{
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000, 10000000};
  std::array<std::uint64_t, 12> latency_buckets{};
  std::uint64_t latency_sum_us = 0;
  std::uint64_t latency_count = 0;
  std::uint64_t agents = 0;
  std::uint64_t resident = 0;
  std::uint64_t errored = 0;  ///< of `agents`: errored, neither resident nor hibernated
  std::uint64_t inbox_pending = 0;
};

}  // namespace ticktock
