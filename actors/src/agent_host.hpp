#pragma once

// The tick engine of one agent, free of CAF: LOAD, PERCEIVE (given an inbox
// entry), THINK, ACT and the building of the REMEMBER write. The CAF agent
// actor and the test harness both drive it.

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/agent.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/storage/store.hpp"
#include "gate.hpp"
#include "keyring.hpp"
#include "ticktock/runtime/nostr.hpp"

namespace ticktock::detail {

/// One attempt of a tick, ready to commit.
struct tick_attempt {
  storage::tick_op op;
  storage::outcome outcome = storage::outcome::ok;
  std::string error;
  std::uint32_t attempt = 1;
  std::uint64_t trigger_seq = 0;
  std::string request_id;
  trigger_kind kind = trigger_kind::message;
  /// Earliest due time among alarms the tick set, for the scheduler.
  std::optional<time_point> earliest_alarm;
  /// The agent's meta once the write commits.
  storage::agent_record meta_after;
  /// New state bytes and their hash when the tick changed the state.
  std::optional<std::string> state_after;
  storage::hash256 state_hash{};
  /// The reply to an http trigger, sent after the commit.
  std::optional<http_reply> reply;
  /// Frames for WebSocket connections, sent after the commit.
  std::vector<ws_message> ws;
  std::chrono::steady_clock::time_point started;
  std::uint32_t outbox_count = 0;
  /// The agent's tick count and next outbox seq after this attempt.
  std::uint64_t tick = 0;
  std::uint64_t outbox_next = 0;
  /// Why the trigger was refused before the tick (bad_signature,
  /// undecryptable); empty otherwise.
  std::string refused;
  bool reply_deferred = false;
  std::vector<std::pair<std::uint64_t, http_reply>> late_replies;
  /// Jobs the tick created or decided (their records as committed).
  std::vector<storage::job_record> jobs;
  /// Limits the attempt hit.
  std::vector<std::string> limits;
};

/// The compute_result / container_result / http_result trigger that tells an agent how
/// its job ended (or that it was refused).
storage::enqueue_op result_trigger(const storage::job_record& j, time_point now);

class agent_host final : public record_reader {
public:
  /// `gate` may be null (no services: staging a job fails the tick).
  agent_host(storage::store& store, const keyring& keys, const ticktock::clock& clock,
             storage::agent_record meta, std::unique_ptr<agent_base> agent,
             const tick_limits& limits, const gate* gate = nullptr);
  ~agent_host() override;

  /// LOAD: reads the agent's state and unseals its keys. corrupt_record if
  /// the state does not decode; the keyring's error if the keys do not open.
  error load();

  /// Runs one attempt of `entry` and returns the write that commits it. The
  /// agent's in-memory state is left as the tick made it (on success) or as
  /// last committed (on failure). The trajectory record in `op` is unsealed
  /// until seal() is called.
  tick_attempt run(const storage::inbox_entry& entry);

  /// Seals the trajectory records of ticks written together (in order), all
  /// unsealed from run(): the last one is signed with the agent's key, and
  /// its signature covers the others through the hash chain, so a batch
  /// costs one signature.
  void seal(std::span<storage::tick_op> ops) const;

  /// Makes the attempt's meta and state the base of the next run, before
  /// its write commits (a batch of ticks is committed together). Moves
  /// `a.meta_after` and `a.state_after` out; `a.tick` and `a.outbox_next`
  /// keep what the event needs.
  void advance(tick_attempt& a);
  /// True if the next attempt may run on this one's uncommitted result: it
  /// succeeded and changed nothing a tick reads from the store (goals,
  /// memory, jobs, the ledger, approvals).
  static bool chainable(const tick_attempt& a) noexcept;
  /// The writes of the attempts advanced since the last call committed.
  void committed() noexcept { base_.reset(); }
  /// Those writes failed: back to the meta and state last committed.
  void rolled_back();

  const storage::agent_record& meta() const noexcept { return meta_; }
  /// The limits in force for this agent (its own over the node's).
  const tick_limits& limits() const noexcept;
  /// The next attempt waited for the ticks_per_minute limit.
  void mark_throttled() noexcept { throttled_ = true; }
  const std::string& id() const noexcept { return meta_.id; }

  // record_reader
  std::optional<std::string> read_goal(std::string_view key) const override;
  std::optional<std::string> read_memory(std::string_view space,
                                         std::string_view key) const override;
  const identity::agent_keys* keys() const override { return keys_ ? &*keys_ : nullptr; }
  std::optional<identity::public_keys> public_keys_of(std::string_view agent) const override {
    return keyring_.public_keys_of(agent);
  }

private:
  /// Puts the agent back at its committed state (its initial state if that
  /// does not load).
  void restore_committed();
  std::string validate(const effects& fx, time_point now) const;
  /// Signs (and encrypts where asked) the tick's messages into `op`. They
  /// carry `request_id`, the request id of the tick's trigger.
  std::string stamp_messages(std::vector<outgoing_message>& messages, std::uint64_t index,
                             const std::string& request_id, storage::tick_op& op) const;
  /// The policy gate and the budget for the tick's jobs, Nostr notes and an
  /// approval decision; stages jobs, ledger changes, approvals and result
  /// triggers into `a.op`. Returns a failure, or empty.
  std::string stage_services(effects& fx, std::vector<std::string>& notes, const trigger& trig,
                             storage::trajectory_record& rec, tick_attempt& a) const;

  storage::store& store_;
  const keyring& keyring_;
  std::optional<identity::agent_keys> keys_;
  nostr::keypair nostr_keys_{};
  const ticktock::clock& clock_;
  storage::agent_record meta_;
  std::unique_ptr<agent_base> agent_;
  const gate* gate_;
  mutable tick_limits limits_;
  mutable std::uint64_t limits_version_ = ~std::uint64_t{0};
  bool throttled_ = false;
  // The base of the next run: the last committed state, or the result of
  // the last attempt advanced past it.
  std::string committed_state_;
  storage::hash256 committed_hash_{};
  // What was committed before the first uncommitted advance.
  struct batch_base {
    storage::agent_record meta;
    std::optional<std::string> state;  // set once an advance changed the state
    storage::hash256 hash{};
  };
  std::optional<batch_base> base_;
};

/// Makes the agent of `meta`'s type and loads it (agent_host::load): the
/// host, or why the agent cannot run. The type's factory and its state
/// loading are the agent's own code: what they throw is a reason here, not
/// a crash of the caller (an actor would stop, its agent looking active).
expected<std::unique_ptr<agent_host>> load_agent(const agent_registry& registry,
                                                 storage::store& store, const keyring& keys,
                                                 const ticktock::clock& clock,
                                                 storage::agent_record meta,
                                                 const tick_limits& limits,
                                                 const gate* gate = nullptr);

}  // namespace ticktock::detail
