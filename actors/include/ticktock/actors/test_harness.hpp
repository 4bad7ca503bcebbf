#pragma once

// Deterministic test harness for agent authors: runs an agent's ticks
// synchronously on the calling thread, on a real RocksDB store in a
// temporary directory, with a manual clock. No actor system, no threads, no
// sleeping: the same trigger sequence always gives the same states,
// trajectories and hashes (in its own temporary store agent keys derive
// from the agent id; a tick's duration_ns is 0). See docs/testing.md.

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/http.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/runtime/serializer.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::detail {
class keyring;
}
namespace ticktock::storage {
class store;
}

namespace ticktock::testing {

struct harness_options {
  /// Directory for the store; empty: a fresh temporary directory that the
  /// harness deletes when it is destroyed.
  std::filesystem::path dir;
  tick_limits limits;
  storage::missed_alarm_policy missed_alarms = storage::missed_alarm_policy::fire_once;
  /// Initial clock value.
  time_point start{std::chrono::seconds{1'700'000'000}};
  /// As node_options::idempotency_ttl: measured on the harness's clock [24 h].
  std::chrono::seconds idempotency_ttl{std::chrono::hours{24}};
  /// Fault injection for the store (see ticktock/storage/faults.hpp) [nullptr].
  std::shared_ptr<storage::fault_injector> faults;
};

class harness {
public:
  explicit harness(agent_registry registry, harness_options options = {});
  ~harness();
  harness(const harness&) = delete;
  harness& operator=(const harness&) = delete;

  /// The injected clock; every trigger is stamped with its current value.
  manual_clock& clock() noexcept { return *clock_; }

  /// Creates an agent; its init tick runs on the next run().
  error create(const std::string& id, const std::string& type, std::string config = {});
  /// Enqueues a message (durably); it is handled on the next run().
  expected<send_receipt> send(const std::string& id, std::string payload,
                              const send_options& opts = {});
  /// Enqueues a ctl tick.
  expected<send_receipt> tick(const std::string& id);
  error terminate(const std::string& id);

  /// Sends `req` as an http trigger, runs, and returns the agent's reply (204
  /// if the tick committed without one; tick_failed if it was deadlettered;
  /// timeout if the tick deferred it and no tick has answered it yet: then
  /// reply() gives it once one does).
  expected<http_reply> http(const std::string& id, const http_request& req);
  /// Enqueues `req` as an http trigger without running; its reply is
  /// reply(id, receipt.seq) once a tick gives it.
  expected<send_receipt> send_http(const std::string& id, const http_request& req);
  /// The reply to agent `id`'s http trigger `seq`: the tick's own, or one a
  /// later tick gave with ctx.reply_to after ctx.defer_reply. Each is
  /// returned once; nullopt while none has come.
  std::optional<expected<http_reply>> reply(const std::string& id, std::uint64_t seq);

  /// Runs ticks, in agent-id order round-robin, until no runnable agent has
  /// an inbox entry. Failed attempts are retried at once (no backoff wait).
  /// Returns the number of attempts run.
  std::size_t run();
  /// Moves the clock by `d`, fires the alarms now due, and run()s.
  std::size_t advance(duration d);

  /// Simulates a process restart: drops every loaded agent, reopens the store
  /// and fires alarms missed "while down" per the missed-alarm policy.
  void restart();

  template <class State>
  State state(const std::string& id) const {
    State s{};
    auto bytes = state_bytes(id);
    if (!bytes.empty() && !from_bytes(bytes, s))
      throw std::runtime_error("state of '" + id + "' does not decode");
    return s;
  }
  std::string state_bytes(const std::string& id) const;
  std::vector<storage::outbox_event> outbox(const std::string& id) const;
  std::vector<storage::trajectory_record> trajectory(const std::string& id) const;
  storage::chain_report verify(const std::string& id) const;
  std::vector<storage::deadletter_entry> deadletter(const std::string& id) const;
  std::vector<storage::alarm_record> alarms(const std::string& id) const;
  /// Whether the agent was marked errored (e.g. its state is corrupt).
  bool errored(const std::string& id) const;

  storage::store& store() noexcept { return *store_; }
  const std::filesystem::path& dir() const noexcept { return dir_; }

private:
  struct loaded;
  loaded* host(const std::string& id);
  void open_store();
  std::vector<storage::op_result> apply(storage::write_op op);
  void fire_alarms(time_point missed_before);

  agent_registry registry_;
  harness_options options_;
  std::shared_ptr<manual_clock> clock_;
  std::unique_ptr<ticktock::clock> tick_clock_;  // what the agents' ticks read
  std::filesystem::path dir_;
  bool owns_dir_ = false;
  std::unique_ptr<storage::store> store_;
  std::unique_ptr<detail::keyring> keys_;
  std::map<std::string, std::unique_ptr<loaded>> hosts_;
  std::map<std::string, std::string> errored_;
  // Outcome of http triggers by (agent, seq), filled by run().
  std::map<std::pair<std::string, std::uint64_t>, expected<http_reply>> replies_;
  // Http triggers whose tick deferred its reply, not yet answered.
  std::set<std::pair<std::string, std::uint64_t>> deferred_;
};

}  // namespace ticktock::testing
