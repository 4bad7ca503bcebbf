#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/runtime/policy.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/runtime/serializer.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock {

namespace storage {
class store;
}
namespace detail {
struct node_core;
}

/// A signed agent-to-agent message as it travels between nodes. `payload` is
/// ciphertext when `encrypted`; `signature` is the sender's Ed25519
/// signature over identity::envelope_signing_bytes. See docs/identity.md.
struct envelope {
  std::string id;  ///< 16 to 64 bytes, unique per message
  std::string from;
  std::string to;
  time_point time{};
  bool encrypted = false;
  std::string payload;
  identity::signature signature{};
  identity::public_key sender_key{};  ///< for recipients that do not know the sender
};

/// A ticktock node: hosts agents as CAF actors on one RocksDB data
/// directory. Every method is thread-safe. Methods that acknowledge a
/// trigger (send, tick, create) return only after it is durable.
class node {
public:
  /// Opens the data directory, loads the agent directory, fires alarms that
  /// were missed while the process was down (per options.missed_alarms) and
  /// resumes agents with pending inbox entries.
  static expected<std::unique_ptr<node>> open(node_options options, agent_registry registry);

  /// Calls shutdown().
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // -- lifecycle -------------------------------------------------------------

  /// Creates agent `id` of registered `type`; its first tick gets an `init`
  /// trigger whose payload is `config` (and `request_id`, as
  /// send_options::request_id). Errors: invalid_id, unknown_type,
  /// already_exists, message_too_large, storage_failure.
  error create(const std::string& id, const std::string& type, std::string config = {},
               std::string request_id = {});

  /// Deletes every record of the agent and stops its actor. Later calls on
  /// the id answer not_found (status answers `terminated` in this process).
  error terminate(const std::string& id);

  /// Hibernates the agent once it is idle (asynchronous). not_found if unknown.
  error hibernate(const std::string& id);
  /// Activates the agent's actor if it is hibernated (asynchronous: status()
  /// shows it active a moment later).
  error wake(const std::string& id);

  // -- triggers --------------------------------------------------------------

  /// Appends a message to the agent's durable inbox and returns its seq once
  /// it is durable. Errors: invalid_id, not_found, message_too_large,
  /// inbox_full (the message went to the deadletter), storage_failure,
  /// shutting_down.
  expected<send_receipt> send(const std::string& id, std::string payload,
                              const send_options& opts = {});

  /// As send, but returns at once; `done` runs on an internal thread once the
  /// message is durable (or failed) and must not block.
  void send_async(const std::string& id, std::string payload, const send_options& opts,
                  std::function<void(expected<send_receipt>)> done);

  /// Hands a trigger to the agent without an inbox write (a direct trigger,
  /// as for HTTP requests on /a/): it becomes durable in the write of its
  /// own tick, and `done` gets that tick's event once it committed (or the
  /// event of the attempt that deadlettered it; failed attempts are retried
  /// from memory). Until then it lives in memory only: a crash loses it, so
  /// the event is the acknowledgement. Its seq is storage::direct_seq(n), n
  /// counting per agent. At most `inbox_limit` wait per agent. `done` runs
  /// once, on an internal thread, and must not block. Errors: those of send
  /// (idempotency keys are refused: nothing stored deduplicates), and
  /// shutting_down if the agent stops (terminate, shutdown) first.
  void run_trigger(const std::string& id, std::string payload, const send_options& opts,
                   std::function<void(expected<tick_event>)> done);

  /// Enqueues a `ctl` trigger: a manual tick. `request_id`: as
  /// send_options::request_id.
  expected<send_receipt> tick(const std::string& id, std::string request_id = {});

  /// Sets (value) or erases (nullopt) a goal from outside: enqueues a
  /// `goal_changed` trigger; the tick that handles it applies the edit.
  expected<send_receipt> change_goal(const std::string& id, const std::string& key,
                                     std::optional<std::string> value,
                                     std::string request_id = {});

  /// Moves deadletter entries back to the inbox: those named by `ids` (each
  /// must exist, else `invalid_argument` and none moves), or all for nullopt.
  /// Returns how many were requeued.
  expected<std::size_t> requeue(const std::string& id,
                                std::optional<std::vector<std::uint64_t>> ids = std::nullopt);

  /// Signs an envelope from local agent `from` to agent `to`, encrypting the
  /// payload when asked: for `recipient_key` (`to`'s key, `to` being on
  /// another node), or else for local `to`.
  expected<envelope> make_envelope(const std::string& from, const std::string& to,
                                   std::string payload, bool encrypted = false,
                                   std::optional<identity::public_key> recipient_key = std::nullopt) const;
  /// Enqueues an envelope for its recipient (durable on return). The
  /// signature is checked before the recipient's tick: a bad one sends the
  /// message to the deadletter as `bad_signature`. Errors: as send, plus
  /// replayed when an envelope with this id was delivered before, and
  /// invalid_argument for a malformed envelope. `request_id` (that of the
  /// HTTP request delivering it, say) goes with the message into its tick.
  expected<send_receipt> deliver(const envelope& env, std::string request_id = {});

  // -- identity (secret keys never leave the node) ---------------------------

  expected<identity::public_keys> public_keys(const std::string& id) const;
  /// Signs `bytes` with the agent's Ed25519 key.
  expected<identity::signature> sign(const std::string& id, std::string_view bytes) const;
  /// `note` as a Nostr event signed with the agent's BIP-340 key (NIP-01 JSON).
  expected<std::string> nostr_sign(const std::string& id, const nostr_note& note) const;
  /// Encrypts `plaintext` for agent `id` (a sealed box only it can open).
  expected<std::string> encrypt_for(const std::string& id, std::string_view plaintext) const;
  /// Decrypts what was encrypted for agent `id`.
  expected<std::string> decrypt(const std::string& id, std::string_view ciphertext) const;

  /// Re-seals every agent's secret keys with a freshly generated master key
  /// at `options.master_key_file` (default data_dir/master.key), in one
  /// batch, then replaces the key file. Run it with no node open on the
  /// directory. Returns how many agents were re-sealed.
  static expected<std::size_t> rotate_master_key(const node_options& options);

  // -- moving agents -----------------------------------------------------------

  /// Every record of the agent as one bundle (a consistent snapshot). The
  /// secret keys are left out unless `include_secrets` (then they are in the
  /// clear: guard the file) so that another node can re-seal them.
  /// The bundle is checked as import_bundle checks it (its trajectory must
  /// verify, its state match): one that would not import answers
  /// corrupt_record, unless `allow_broken` (to inspect a damaged agent).
  expected<std::string> export_bundle(const std::string& id, bool include_secrets = false,
                                      bool allow_broken = false) const;
  /// Creates the agent of a bundle from export_bundle (possibly from another
  /// node) and returns its id. With secrets in the bundle the agent keeps its
  /// keys (re-sealed with this node's master key); without, it gets new ones
  /// and its old public key is kept to verify its older trajectory records.
  /// The bundle is checked before anything is stored: its trajectory must
  /// verify and its state must be the one the last record hashes.
  /// Errors: invalid_argument (not a bundle, records of another agent, keys
  /// that do not match, a trajectory that does not verify, a state that does
  /// not match it), unknown_type (a type this node has not registered),
  /// already_exists, storage_failure.
  expected<std::string> import_bundle(std::string bundle);

  // -- budgets, services, policy (docs/compute.md, docs/policy.md) ----------

  /// The agent's budget ledger in micro-USD.
  expected<storage::ledger_record> wallet(const std::string& id) const;
  expected<std::vector<storage::ledger_entry>> wallet_history(const std::string& id,
                                                              std::uint64_t from = 0,
                                                              std::size_t limit = 1000) const;
  /// Sets the agent's budget limits given (0: none), durably; one not given
  /// stays as it is (merged in the write, so concurrent changes of different
  /// limits all hold).
  error set_budget(const std::string& id, std::optional<std::uint64_t> total,
                   std::optional<std::uint64_t> day, std::optional<std::uint64_t> month);

  /// Submits a job for the agent from outside (compute/new, containers/new):
  /// a tick of the agent stages it through the policy gate and the budget;
  /// returns the job as that tick left it (queued, awaiting_approval or
  /// denied). `service` is compute, containers or http. `request_id`: as
  /// send_options::request_id; the job and its result trigger carry it.
  expected<storage::job_record> submit_job(const std::string& id, const std::string& service,
                                           std::string request, std::string request_id = {},
                                           std::chrono::milliseconds timeout = std::chrono::seconds{30});
  expected<std::optional<storage::job_record>> job(const std::string& id,
                                                   const std::string& job_id) const;
  expected<std::vector<storage::job_record>> jobs(const std::string& id,
                                                  const std::string& service = {}) const;
  /// Cancels a running job of the agent; false if it is not running.
  expected<bool> cancel_job(const std::string& id, const std::string& job_id);
  /// Output of a job from chunk `from` (stream deltas, container output);
  /// `done` says whether it ended.
  expected<std::vector<std::string>> job_output(const std::string& id, const std::string& job_id,
                                                std::size_t from, bool& done) const;
  /// Names of the compute providers.
  std::vector<std::string> compute_providers() const;

  /// Approvals with `status` (pending, approved, denied, cancelled; all when
  /// empty), oldest first, after `after` and at most `limit`: see
  /// storage::store::list_approvals.
  std::vector<storage::approval_record> approvals(
    const std::string& status = {},
    const std::optional<std::pair<time_point, std::string>>& after = std::nullopt,
    std::size_t limit = 1000) const;
  expected<storage::approval_record> approval(const std::string& approval_id) const;
  /// Decides a pending approval; the agent gets an `approval_decision`
  /// trigger, whose tick starts (or refuses) the parked job. Errors:
  /// not_found, conflict when it was decided before. `request_id`: the
  /// deciding request's, carried by the trigger into the tick's record.
  expected<storage::approval_record> decide(const std::string& approval_id, bool approve,
                                            std::string note = {}, std::string request_id = {});

  /// The kill switch: engaged, every effect that leaves the runtime is
  /// denied and running jobs are cancelled, at once. Durable.
  error set_kill_switch(bool engaged);
  bool kill_switch() const;
  /// The policy gate's verdict on `agent` publishing to `relays` right now
  /// (the kill switch, then the global policy, as a tick's publish is
  /// judged). For publishes that do not come from a tick. Thread-safe.
  policy::verdict assess_publish(const std::string& agent,
                                 const std::vector<std::string>& relays) const;

  /// A node setting: "policy" (global), "policy/<agent>/compute",
  /// "policy/<agent>/containers", "prices", "limits/<agent>". Malformed
  /// values are refused (invalid_argument) and the old value stays.
  expected<std::string> setting(const std::string& key) const;
  error set_setting(const std::string& key, std::string_view value);
  /// The limits in force for an agent.
  expected<tick_limits> limits(const std::string& id) const;

  // -- inspection ------------------------------------------------------------

  expected<agent_status> status(const std::string& id) const;
  /// Agents in id order after `after`, at most `limit`.
  std::vector<agent_status> list(std::string_view after = {}, std::size_t limit = 100) const;

  /// The committed state bytes (empty before the first tick).
  expected<std::string> state_bytes(const std::string& id) const;
  /// The committed state decoded as State.
  template <class State>
  expected<State> state(const std::string& id) const {
    auto bytes = state_bytes(id);
    if (!bytes)
      return bytes.error_value();
    State s{};
    if (!bytes->empty() && !from_bytes(*bytes, s))
      return error{errc::corrupt_record, "state of '" + id + "' does not decode"};
    return s;
  }

  expected<std::vector<storage::trajectory_record>> trajectory(const std::string& id,
                                                               std::uint64_t from = 0,
                                                               std::size_t limit = 1000) const;
  /// Verifies the agent's trajectory hash chain.
  expected<storage::chain_report> verify(const std::string& id) const;
  expected<std::vector<storage::outbox_event>> outbox(const std::string& id,
                                                      std::uint64_t from_seq = 0,
                                                      std::size_t limit = 1000) const;
  /// The agent's deadletter entries from id `from_id` on, at most `limit`.
  expected<std::vector<storage::deadletter_entry>> deadletter(const std::string& id,
                                                              std::size_t limit = 1000,
                                                              std::uint64_t from_id = 0) const;
  expected<std::vector<storage::alarm_record>> alarms(const std::string& id) const;
  expected<std::vector<std::pair<std::string, std::string>>> goals(const std::string& id) const;
  expected<std::vector<std::pair<std::string, std::string>>> memory(const std::string& id,
                                                                    const std::string& space) const;

  /// Agents known to the node, and how many are resident.
  std::size_t agent_count() const;
  std::size_t resident_count() const;

  /// Blocks until every inbox write accepted so far (including send_async
  /// calls not yet durable) has been consumed by a tick of a runnable agent
  /// and every run_trigger call has been answered, or `timeout` passes.
  /// Returns false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout) const;

  /// The first step of a clean stop: no agent starts a tick from here on,
  /// and this blocks until the ticks already running have committed (or
  /// failed to) and been released, or `timeout` passes. Triggers not yet
  /// ticked stay in their durable inboxes for the next start; a throttled
  /// agent or one waiting to retry holds nothing up. There is no undoing
  /// it: shutdown() follows. Returns false on timeout.
  bool drain(std::chrono::milliseconds timeout);

  /// Called after every committed tick attempt, on a CAF worker thread; must
  /// not block. Replaces the observer set by an earlier call (observers added
  /// with add_tick_observer stay). Once this returns, the replaced observer is
  /// not running and is never called again, so what it captured may be
  /// destroyed; clear it (nullptr) before destroying what it captured.
  void set_tick_observer(std::function<void(const tick_event&)> f);
  /// Adds an observer; returns an id for remove_tick_observer. Observers run
  /// under a shared lock: they must not add or remove observers.
  std::uint64_t add_tick_observer(std::function<void(const tick_event&)> f);
  void remove_tick_observer(std::uint64_t id);

  /// Counters since the node opened.
  node_metrics metrics() const;

  const node_options& options() const noexcept;
  /// The underlying store, for tools and tests.
  storage::store& store() noexcept;

  /// Stops the scheduler and the agent actors, commits what is queued and
  /// closes the store. Idempotent.
  void shutdown();

  /// Internals, for ticktock's own CAF glue (caf_handle.hpp).
  detail::node_core& core() noexcept { return *core_; }

private:
  explicit node(std::unique_ptr<detail::node_core> core);
  expected<std::string> checked(const std::string& id) const;
  /// Checks a trigger from outside and builds its inbox entry (seq unset).
  expected<storage::inbox_entry> make_entry(const std::string& id, std::string payload,
                                            const send_options& opts) const;
  /// The agent's keys, unsealed (for calls that sign or decrypt as it).
  expected<identity::agent_keys> unsealed_keys(const std::string& id) const;

  std::unique_ptr<detail::node_core> core_;
};

}  // namespace ticktock
