#pragma once

#include <cstdint>
#include <filesystem>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/storage/faults.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::storage {

/// `sync` fsyncs the WAL on every commit group; `async` writes the WAL
/// without fsync (survives a process crash, not a power loss).
enum class durability : std::uint8_t { sync, async };

struct store_options {
  std::filesystem::path dir;
  storage::durability durability = durability::async;
  /// Total memtable budget across column families.
  std::size_t write_buffer_bytes = std::size_t{64} << 20;
  /// Shared block cache.
  std::size_t block_cache_bytes = std::size_t{64} << 20;
  /// Fault injection for tests: RocksDB's file writes ask it whether to fail
  /// (see faults.hpp and docs/operations.md) [nullptr: none].
  std::shared_ptr<fault_injector> faults;
  /// Called after a write that sent triggers to an agent's deadletter because
  /// its inbox was at its depth limit, once per trigger, on the writer's
  /// thread [nullptr: none].
  std::function<void(const std::string& agent)> on_inbox_overflow;
  /// How long a client's idempotency key is remembered after the write that
  /// first carried it; a write with it after that is a new trigger, and
  /// compactions drop the key (a key stored without its time, before
  /// 2026-12-06, gets the time of the first compaction that sees it). The
  /// node's own keys (is_node_idempotency_key) stay for the agent's life
  /// [0: clients' keys too; at most a century].
  std::chrono::seconds idempotency_ttl{0};
  /// The time keys are stamped with and expire by [nullptr: the system clock].
  std::shared_ptr<const ticktock::clock> clock;
};

/// Whether an idempotency key is one the node writes for its own triggers
/// (prefixes job:, approval:, envelope:, nostr:), which clients may not use.
bool is_node_idempotency_key(std::string_view key) noexcept;

// -- write operations ------------------------------------------------------
// All writes go through store::apply, which commits a group of operations in
// one RocksDB WriteBatch. Inbox sequence numbers, idempotency keys and depth
// limits are decided inside apply, so apply must be called from one thread
// at a time (the node's committer or the test harness).

/// Appends a trigger to an agent's inbox. The store assigns entry.seq.
struct enqueue_op {
  std::string agent;
  inbox_entry entry;               ///< entry.idempotency_key dedups if non-empty
  std::uint64_t depth_limit = 0;   ///< 0: unlimited; else overflow goes to deadletter
  /// Overflow is refused (inbox_full) without a deadletter entry: for a
  /// trigger that means nothing once refused (a WebSocket connection's open).
  bool refuse_overflow = false;
  /// The WebSocket connection this trigger opens (marked open once queued,
  /// see store::open_ws_connections) or closes (the mark goes); else empty.
  std::string ws_opens, ws_closes;
  /// With an idempotency key: a digest of what was asked (before any
  /// encryption). Stored with the key; the key coming back with another
  /// digest fails with idempotency_key_reused instead of counting as a retry.
  std::optional<hash256> request_digest;
  /// Another key under which the same trigger counts as seen (checked, never
  /// written): an older form of entry.idempotency_key.
  std::string seen_as;
  /// The key counts as seen for as long as its row is stored, expired or
  /// not: for a requeued trigger, which must not be delivered beside a retry
  /// of it that got in meanwhile.
  bool ignore_expiry = false;
};

/// A change to an agent's budget ledger, applied in the write batch in
/// order with the other changes of the group (see ledger_record).
struct ledger_change {
  enum class kind : std::uint8_t {
    reserve,  ///< hold `amount` for job `job`
    settle,   ///< job `job` cost `actual` of its `amount` reservation; the rest is released
    release,  ///< give back a reservation of `amount`
    deny,     ///< history only: a reservation of `amount` was refused for `reason`
    limits,   ///< set the limits given (total, day, month; 0: none), keep the others
  };
  std::string agent;
  kind what = kind::reserve;
  std::string service;  ///< compute | containers | http
  std::string job;
  std::uint64_t amount = 0;
  std::uint64_t actual = 0;
  std::string reason;
  time_point time{};
  std::optional<std::uint64_t> limit_total, limit_day, limit_month;
};

/// Everything one tick attempt commits.
struct tick_op {
  agent_record meta;                         ///< the agent's meta after the tick
  /// Set (by whoever deletes the agent) once the writer of this op must not
  /// write any more: the op is then refused as not_found, so that a stale
  /// writer's tick never lands on a later agent of the same id [none].
  std::shared_ptr<const std::atomic<bool>> retired;
  std::optional<std::string> state;          ///< new state bytes, if changed
  std::optional<std::uint64_t> consume_seq;  ///< inbox entry the tick consumed
  std::vector<outbox_event> outbox;
  std::uint64_t trajectory_index = 0;
  std::string trajectory_bytes;              ///< encode(trajectory_record)
  std::vector<alarm_change> alarms;
  std::vector<enqueue_op> messages;          ///< to local agents
  std::vector<kv_change> goals;
  std::vector<kv_change> memory;
  std::optional<deadletter_entry> deadletter;
  std::vector<job_record> jobs;              ///< jobs created or changed by the tick
  std::vector<ledger_change> ledger;         ///< its reservations and denials
  std::vector<approval_record> approvals;    ///< approvals it asked for
  /// Outbox events to delete (retention): seqs below this one.
  std::uint64_t outbox_trim_below = 0;
};

/// Consecutive ticks of one agent, each run on the uncommitted result of
/// the one before (the agent's batch): committed together or not at all.
struct tick_batch_op {
  std::vector<tick_op> ticks;
};

/// Work of the services outside ticks (a job finished, an admin decided an
/// approval or set a limit, restart reconciliation), committed atomically
/// with the triggers that tell the agents.
struct service_op {
  std::vector<job_record> jobs;
  std::vector<ledger_change> ledger;
  std::vector<approval_record> approvals;
  std::vector<enqueue_op> triggers;
  /// Node-wide settings in the meta column family (kill switch, policies,
  /// prices, limits): key, value (nullopt erases).
  std::vector<std::pair<std::string, std::optional<std::string>>> settings;
};

/// Creates an agent: its meta, its keys and its `init` trigger.
struct create_op {
  agent_record meta;
  inbox_entry init;
  std::optional<identity_record> identity;
};

/// Replaces agents' identity records in one batch (master key rotation).
struct identity_op {
  std::vector<std::pair<std::string, identity_record>> records;
};

/// Deletes every record of an agent.
struct terminate_op {
  std::string agent;
};

/// Marks an agent errored (meta may be unreadable, so the mark is its own key).
struct mark_errored_op {
  std::string agent;
  std::string reason;
  std::shared_ptr<const std::atomic<bool>> retired;  ///< as tick_op::retired: then skipped
};

/// Moves due alarms into their agents' inboxes and re-arms periodic ones.
struct fire_alarms_op {
  time_point now{};
  /// Alarms due before this instant were missed while the process was down.
  time_point missed_before{};
  missed_alarm_policy policy = missed_alarm_policy::fire_once;
  /// The inbox limit of the agent whose alarm fires (0: none); an occurrence
  /// over it goes to the deadletter. Unset: no limit.
  std::function<std::uint64_t(const std::string& agent)> depth_limit;
  std::size_t limit = 4096;  ///< alarms handled by one op
};

/// Creates an agent from a bundle written by store::export_agent.
struct import_op {
  std::string bundle;
  /// The agent's identity on this node; replaces the bundle's identity entries.
  std::optional<identity_record> identity;
};

/// Names of an agent's own settings (meta column family, see
/// docs/storage-format.md): its policy for `service` (compute, containers or
/// http), and its limits.
inline std::string agent_policy_setting(std::string_view agent, std::string_view service) {
  return "policy/" + std::string{agent} + "/" + std::string{service};
}
inline std::string agent_limits_setting(std::string_view agent) {
  return "limits/" + std::string{agent};
}
/// All the settings that belong to agent `id`: deleted with the agent,
/// carried in its bundle.
std::vector<std::string> agent_setting_names(std::string_view id);

/// What a bundle says about its agent's keys (see node::import_bundle).
struct bundle_identity {
  std::string agent;
  std::string type;                         ///< the agent's type
  std::optional<identity_record> identity;  ///< the public keys, sealed secrets stripped
  std::optional<std::string> secret;        ///< plaintext secret keys, if exported with them
};
/// Reads the identity entries of a bundle written by store::export_agent, and
/// checks the bundle: its trajectory must verify (hash chain, signatures by
/// the bundle's keys, the agent record's chain head) and its state must be
/// the one the last record hashes. Errors: invalid_argument naming the first
/// problem.
expected<bundle_identity> read_bundle_identity(std::string_view bundle);

/// Moves deadletter entries back into the inbox, oldest first, as many as the
/// inbox has room for under depth_limit (0: no limit); the rest stay in the
/// deadletter. Fails with inbox_full when entries were wanted and none fit.
struct requeue_op {
  std::string agent;
  /// The deadletter ids to move, all of which must exist (else
  /// invalid_argument, and none moves); nullopt moves all.
  std::optional<std::vector<std::uint64_t>> ids;
  std::uint64_t depth_limit = 0;
};

using write_op = std::variant<enqueue_op, tick_op, tick_batch_op, create_op, terminate_op,
                              mark_errored_op, fire_alarms_op, requeue_op, import_op, identity_op,
                              service_op>;

/// True for operations that store::apply must see in a group of their own.
bool is_exclusive(const write_op& op) noexcept;

/// An inbox entry a write produced, for waking its agent after the commit.
struct delivery {
  std::string agent;
  inbox_entry entry;
};

/// The outcome of one operation of a group.
struct op_result {
  ticktock::error err;
  std::uint64_t seq = 0;          ///< enqueue: the entry's seq (existing one if duplicate)
  bool duplicate = false;         ///< enqueue: the idempotency key was seen before
  std::vector<delivery> delivered;
  std::string agent;              ///< import: the imported agent's id
  std::size_t alarms_fired = 0;   ///< fire_alarms: how many alarms were due
  bool more_alarms = false;       ///< fire_alarms: stopped at the limit
};

/// The RocksDB store of one node. Reads are thread-safe; apply is not (one
/// writer thread). Every call returns storage_failure when RocksDB fails and
/// corrupt_record for undecodable framework records.
class store {
public:
  ~store();

  /// Opens (creating if missing) the store at options.dir.
  static expected<std::unique_ptr<store>> open(const store_options& options);

  /// Commits `ops` in one WriteBatch and returns one result per op. An op
  /// that is rejected (e.g. inbox_full, not_found) gets its error and the
  /// others still commit; if the write itself fails, every op gets
  /// storage_failure and nothing is committed (not even after a restart:
  /// the failed write's bytes are cut from the WAL). After a failed write,
  /// the next apply first recovers (checks that the disk takes writes, then
  /// DB::Resume() or a reopen of RocksDB, with backoff between attempts) and
  /// answers storage_failure without writing while that does not succeed.
  /// Reads go on during the fault.
  std::vector<op_result> apply(std::vector<write_op>& ops);

  /// After a failed write: tries to recover now (at most once per backoff
  /// step, like apply) without writing anything, so that a store with no
  /// writes coming recovers too. Writer thread only. True when the store
  /// takes writes (nothing had failed, or the recovery succeeded).
  bool recover_now();

  /// Why the last write failed, while the store has not recovered from it;
  /// empty when it takes writes. Any thread.
  std::optional<std::string> write_failure() const;

  // -- agents --------------------------------------------------------------

  expected<agent_record> get_agent(std::string_view id) const;
  /// The agent's record and its inbox depth as of one moment: a tick that
  /// commits meanwhile (consuming an entry, counting a tick) shows in both
  /// or in neither.
  expected<std::pair<agent_record, std::uint64_t>> get_agent_and_depth(std::string_view id) const;
  bool agent_exists(std::string_view id) const;
  /// The errored mark set by mark_errored_op, if any.
  std::optional<std::string> errored_mark(std::string_view id) const;
  /// Latest state bytes; empty optional before the first committed tick.
  expected<std::optional<std::string>> get_state(std::string_view id) const;

  struct agent_summary {
    std::string id;
    std::string type;  ///< empty if the record is corrupt
    bool errored = false;
  };
  /// Calls `f` for every agent in id order from `after` (exclusive) until it
  /// returns false.
  void for_each_agent(const std::function<bool(const agent_summary&)>& f,
                      std::string_view after = {}) const;

  /// The agent's identity record; empty optional if it has none.
  expected<std::optional<identity_record>> get_identity(std::string_view id) const;
  /// Calls `f(agent id, record or error)` for every identity record.
  void for_each_identity(
    const std::function<void(const std::string&, expected<identity_record>)>& f) const;

  // -- inbox, outbox, deadletter -------------------------------------------

  std::vector<inbox_entry> read_inbox(std::string_view id, std::uint64_t from_seq,
                                      std::size_t limit) const;
  std::uint64_t inbox_depth(std::string_view id) const;
  /// Ids of agents with a non-empty inbox, and the total number of entries.
  std::vector<std::string> agents_with_inbox(std::uint64_t* total = nullptr) const;
  /// (agent, connection) of every WebSocket connection whose open trigger
  /// was queued and whose close was not (enqueue_op::ws_opens, ws_closes).
  std::vector<std::pair<std::string, std::string>> open_ws_connections() const;

  std::vector<outbox_event> read_outbox(std::string_view id, std::uint64_t from_seq,
                                        std::size_t limit) const;
  std::vector<deadletter_entry> read_deadletter(std::string_view id, std::uint64_t from_id,
                                                std::size_t limit) const;

  // -- trajectory ----------------------------------------------------------

  std::vector<trajectory_record> read_trajectory(std::string_view id, std::uint64_t from_index,
                                                 std::size_t limit) const;
  /// Re-hashes the whole chain, compares it with the agent's head, and checks
  /// every record's signature against the agent's current or retired keys,
  /// all as of one moment. not_found if there is no agent `id`;
  /// storage_failure if the store cannot be read.
  expected<chain_report> verify_trajectory(std::string_view id) const;

  // -- goals, memory, alarms -----------------------------------------------

  std::optional<std::string> get_goal(std::string_view id, std::string_view key) const;
  std::vector<std::pair<std::string, std::string>> list_goals(std::string_view id) const;
  std::optional<std::string> get_memory(std::string_view id, std::string_view space,
                                        std::string_view key) const;
  std::vector<std::pair<std::string, std::string>> list_memory(std::string_view id,
                                                                std::string_view space) const;
  std::vector<alarm_record> list_alarms(std::string_view id) const;
  /// Due time of the earliest alarm of any agent.
  std::optional<time_point> next_alarm_due() const;

  // -- budgets, jobs, approvals, settings ----------------------------------

  /// The agent's ledger (all zero before its first entry).
  expected<ledger_record> get_ledger(std::string_view id) const;
  std::vector<ledger_entry> read_ledger_history(std::string_view id, std::uint64_t from_seq,
                                                std::size_t limit) const;
  expected<std::optional<job_record>> get_job(std::string_view agent, std::string_view job) const;
  /// The agent's jobs of `service` (all when empty), oldest first.
  std::vector<job_record> list_jobs(std::string_view agent, std::string_view service = {}) const;
  /// Every job of every agent whose status is queued (for restart reconciliation).
  std::vector<job_record> open_jobs() const;
  expected<std::optional<approval_record>> get_approval(std::string_view id) const;
  /// Approvals with `status` (all when empty), oldest first (by created time,
  /// then id), those after `after` only (a page's last: created time and id),
  /// at most `limit`.
  std::vector<approval_record> list_approvals(
    std::string_view status = {},
    const std::optional<std::pair<time_point, std::string>>& after = std::nullopt,
    std::size_t limit = 1000) const;
  /// A node-wide setting written by a service_op.
  std::optional<std::string> get_setting(std::string_view key) const;

  // -- bundles -------------------------------------------------------------

  /// Every record of agent `id`, read from one snapshot, as a Cap'n Proto
  /// Bundle (see records.capnp). not_found if there is no such agent. The
  /// sealed secret keys are stripped; `secret` (plaintext secret keys, on an
  /// admin's explicit request) is added as an `identity-secret` entry.
  expected<std::string> export_agent(std::string_view id,
                                     const std::optional<std::string>& secret = {}) const;

  // -- maintenance ---------------------------------------------------------

  /// Flushes memtables and compacts every column family (bench, tools).
  ticktock::error compact();
  /// Live SST plus WAL bytes on disk.
  std::uint64_t disk_bytes() const;

  /// Raw access to a column family by name, for tools and corruption tests.
  ticktock::error raw_put(std::string_view column, std::string_view key, std::string_view value);
  std::optional<std::string> raw_get(std::string_view column, std::string_view key) const;

  const store_options& options() const noexcept;

  struct impl;

private:
  explicit store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Key helpers (big-endian, so iteration is ordered). See docs/storage-format.md.
namespace keys {
std::string agent(std::string_view id);                          // agents, state
std::string seq_key(std::string_view id, std::uint64_t seq);     // inbox, outbox, trajectory, deadletter
}  // namespace keys

}  // namespace ticktock::storage
