#pragma once

// The directory: every known agent id, which of them are resident (hosted by
// a live CAF actor), activation on demand, and the hibernation handshake.
// Thread-safe; sharded so that routing does not contend on one lock.

#include <caf/actor.hpp>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "messages.hpp"
#include "ticktock/storage/records.hpp"

namespace ticktock::detail {

/// Shared between the directory and a resident agent's actor.
struct residency {
  std::atomic<std::int64_t> last_active_ns{0};
  /// Its agent is being deleted: the store refuses the actor's writes
  /// (storage::tick_op::retired).
  std::atomic<bool> retired{false};
};

/// `r`'s retired flag, for storage ops: shares ownership of `r`.
inline std::shared_ptr<const std::atomic<bool>> retired_flag(const std::shared_ptr<residency>& r) {
  return r ? std::shared_ptr<const std::atomic<bool>>{r, &r->retired} : nullptr;
}

class directory {
public:
  /// Spawns the actor hosting `id`; called with the shard lock held.
  using spawn_fn = std::function<caf::actor(const std::string& id, std::shared_ptr<residency>)>;

  explicit directory(spawn_fn spawn, std::size_t max_resident);

  /// Registers a known agent (at startup or after create).
  void add(const std::string& id, std::string type, bool errored, std::string error = {});
  /// Forgets an agent (after terminate); returns its actor if it was resident.
  caf::actor remove(const std::string& id);
  /// Before a terminate commits: the agent is not activated any more, and
  /// its resident actor's writes are refused from here on (residency::
  /// retired), so none lands after the terminate, on a later agent of the id.
  void retire(const std::string& id);
  /// The terminate failed: the agent goes on. Returns its retired actor, if
  /// any, which the caller stops (the next trigger starts a fresh one).
  caf::actor unretire(const std::string& id);

  bool known(const std::string& id) const;
  struct view {
    std::string type;
    bool resident = false;
    bool errored = false;
    std::string error;
    bool retiring = false;  ///< being deleted
  };
  std::optional<view> lookup(const std::string& id) const;

  /// Marks an agent errored; it is not activated again in this process.
  void set_errored(const std::string& id, std::string reason);

  /// Tells the agent's actor about inbox entry `seq`, activating it if it is
  /// hibernated. Returns false if the agent is unknown or errored.
  bool deliver(const std::string& id, std::uint64_t seq,
               std::shared_ptr<const storage::inbox_entry> entry);

  /// Hands a direct trigger to the agent's actor, activating it if it is
  /// hibernated. False (and `d` dropped) if the agent is unknown or errored.
  bool deliver_direct(const std::string& id, direct_ptr d);

  /// Activates the agent if hibernated (without a new entry).
  bool wake(const std::string& id);
  /// Asks a resident agent to hibernate once idle.
  bool request_hibernate(const std::string& id);

  /// The hibernation handshake: succeeds (and forgets the actor) only if no
  /// entry newer than `last_seen` and no direct trigger beyond the first
  /// `directs_seen` were routed to it.
  /// `who`: the asking actor's residency; an actor the directory no longer
  /// holds (retired, or replaced) changes nothing.
  bool try_hibernate(const std::string& id, std::uint64_t last_seen, std::uint64_t directs_seen,
                     const residency* who);
  /// The actor of `id` with residency `who` stopped on its own (e.g. LOAD failed).
  void actor_down(const std::string& id, const residency* who);

  /// The resident actor of `id`, activating it if needed.
  caf::actor actor_of(const std::string& id);

  std::size_t resident() const noexcept { return resident_.load(); }
  std::size_t size() const;
  /// How many agents are errored (they are not activated).
  std::size_t errored() const;
  std::vector<std::string> ids() const;
  std::vector<caf::actor> resident_actors() const;

  /// Sends ctl_op::idle to every resident agent last active before `cutoff_ns`
  /// (steady clock).
  void sweep_idle(std::int64_t cutoff_ns);

  /// Stops activations (shutdown).
  void close();

private:
  struct entry {
    std::string type;
    caf::actor actor;
    std::shared_ptr<residency> res;
    std::uint64_t notified = 0;
    std::uint64_t directs = 0;  // direct triggers sent to the current actor
    bool errored = false;
    bool evicting = false;  // asked to hibernate by enforce_max_resident
    bool retiring = false;  // being deleted (retire): never activated again
    std::string error;
  };
  struct shard {
    mutable std::mutex mtx;
    std::unordered_map<std::string, entry> map;
  };

  shard& shard_of(const std::string& id) const;
  // Spawns the actor of `e` if needed; lock of its shard held. False if not
  // allowed (closed or errored).
  bool activate(const std::string& id, entry& e);
  // Calls f(entry) under the shard lock once the agent's actor runs
  // (activating it); false if the agent is unknown or cannot be activated.
  template <class F>
  bool with_active(const std::string& id, F&& f);
  void enforce_max_resident();
  // The actor of `e` is gone; shard lock held.
  void forget_actor(entry& e);

  spawn_fn spawn_;
  std::size_t max_resident_;
  mutable std::array<shard, 32> shards_;
  std::atomic<std::size_t> resident_{0};
  std::atomic<std::size_t> evicting_{0};  // asked to hibernate, not yet gone
  std::mutex evict_mtx_;
  std::atomic<bool> closed_{false};
};

}  // namespace ticktock::detail
