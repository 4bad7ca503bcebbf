#pragma once

// The policy gate and the node-wide settings it reads: the kill switch, the
// global policy, each agent's compute, containers and http policies, the price
// table, and per-agent tick limits. Settings live in the meta column family
// (storage::service_op::settings) and are cached here; every write goes
// through the committer first and is installed here after it is durable.
// Thread-safe. See docs/policy.md and docs/compute.md.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/compute.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/fetch.hpp"
#include "ticktock/runtime/policy.hpp"
#include "ticktock/runtime/sandbox.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

/// Setting keys (meta column family, see docs/storage-format.md).
namespace setting {
inline constexpr std::string_view kill_switch = "killswitch";
inline constexpr std::string_view prices = "prices";
inline constexpr std::string_view global_policy = "policy";
inline std::string agent_policy(std::string_view agent, std::string_view service) {
  return storage::agent_policy_setting(agent, service);
}
inline std::string agent_limits(std::string_view agent) { return storage::agent_limits_setting(agent); }
}  // namespace setting

/// The gate's view of one job an agent asked for.
struct assessment {
  std::string error;        ///< the request is malformed (the tick fails)
  std::string action;       ///< compute | container | http | nostr_publish
  std::string destination;  ///< provider/model, program, the URL's host, relays
  std::uint64_t cost = 0;   ///< what it would reserve, micro-USD
  policy::verdict verdict;
  std::string request;      ///< the request, normalized
};

class gate {
public:
  gate(storage::store& store, const node_options& options);

  /// Kill switch, then the global policy and the agent's service policy (the
  /// more restrictive wins), for a job the agent staged.
  assessment assess(const std::string& agent, const job_request& job) const;
  /// The same for a Nostr publish to `relays`.
  policy::verdict assess_publish(const std::string& agent,
                                 const std::vector<std::string>& relays) const;

  bool killed() const noexcept { return killed_.load(std::memory_order_acquire); }

  /// The price of a compute request or the cost of a finished one.
  std::shared_ptr<const compute::price_table> prices() const;
  /// The limits of agent `id`: its own over the node's defaults.
  tick_limits limits_for(const std::string& id) const;
  /// The agent's override as JSON ("{}" when none).
  std::string limits_json(const std::string& id) const;

  /// Validates a new value for `key` (a setting above). On success returns
  /// the canonical bytes to store; the caller commits them, then install()s.
  expected<std::string> validate(const std::string& key, std::string_view value) const;
  /// The setting is durable: use it from now on (nullopt: back to default).
  void install(const std::string& key, const std::optional<std::string>& value);
  /// The stored (canonical) value of a setting, if set.
  std::optional<std::string> get(const std::string& key) const;

  /// A setting's version; it changes on every install (agent hosts re-read
  /// their limits when it moves).
  std::uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }

  const service_options& services() const noexcept { return options_.services; }

  /// Tests only (set before the gate is shared): runs when a lookup of a
  /// policy or of limits has read the store and not yet cached what it read.
  std::function<void()> after_read_for_test;

private:
  policy::verdict decide(const policy::action& a, const std::string& service_key) const;
  std::shared_ptr<const policy::rules> rules_for(const std::string& key) const;

  storage::store& store_;
  const node_options& options_;
  std::atomic<bool> killed_{false};
  std::atomic<std::uint64_t> version_{0};
  mutable std::shared_mutex mtx_;
  std::shared_ptr<const compute::price_table> prices_;
  // Parsed policies by setting key; nullptr = none (allow).
  mutable std::unordered_map<std::string, std::shared_ptr<const policy::rules>> policies_;
  mutable std::unordered_map<std::string, std::optional<tick_limits>> limits_;
};

/// Parses a limits override {"ticks_per_minute","tick_wall_ms","max_state_bytes",
/// "outbox_retention","max_attempts","inbox_limit"} over `base`.
expected<tick_limits> parse_limits(std::string_view json, tick_limits base);
std::string limits_to_json(const tick_limits& l);

}  // namespace ticktock::detail
