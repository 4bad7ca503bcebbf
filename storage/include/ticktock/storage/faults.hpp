#pragma once

// Fault injection for the store, after LevelDB's Env: every file RocksDB
// writes goes through a file system that asks a fault_injector, when one is
// set in store_options, whether to fail. Tests use it to prove what the store
// and the node do when the disk misbehaves (see docs/operations.md).

#include <atomic>
#include <cstdint>

namespace ticktock::storage {

/// A kind of injected failure.
enum class fault : std::uint8_t {
  none,
  /// Appends to a file (WAL, SST, MANIFEST) fail with an IOError.
  write,
  /// Sync/Fsync of a file fails with an IOError (what `durability::sync`
  /// commits wait for).
  sync,
  /// Appends fail with an IOError whose subcode is NoSpace (disk full).
  disk_full,
};

/// Switches that make the store's file writes fail, and counters of the
/// failures injected. Every member is thread-safe (atomics): a test flips
/// switches while RocksDB's writer and background threads consult them.
///
/// A switch stays on until cleared; `fail_next` fails only a count of
/// operations. Share one injector (std::shared_ptr) between the test and
/// store_options::faults; it must outlive the store.
class fault_injector {
public:
  // -- switches ---------------------------------------------------------------

  /// Every append fails with an IOError until fail_writes(false) or clear().
  void fail_writes(bool on = true) noexcept { writes_.store(on); }
  /// Every Sync/Fsync fails with an IOError until fail_syncs(false) or clear().
  void fail_syncs(bool on = true) noexcept { syncs_.store(on); }
  /// Every append fails with NoSpace until disk_full(false) or clear().
  void disk_full(bool on = true) noexcept { full_.store(on); }
  /// The next `n` operations that `f` applies to fail (appends for write and
  /// disk_full, syncs for sync), then they succeed again. Replaces an earlier
  /// count for the same kind of operation.
  void fail_next(fault f, std::uint64_t n) noexcept {
    if (f == fault::sync)
      next_syncs_.store(n);
    else if (f != fault::none) {
      next_appends_.store(n);
      next_append_kind_.store(f);
    }
  }
  /// Turns every switch off and drops pending counts; the counters stay.
  void clear() noexcept {
    writes_.store(false);
    syncs_.store(false);
    full_.store(false);
    next_syncs_.store(0);
    next_appends_.store(0);
  }
  /// True while any switch is on or any count is pending.
  bool active() const noexcept {
    return writes_.load() || syncs_.load() || full_.load() || next_syncs_.load() > 0
           || next_appends_.load() > 0;
  }

  // -- counters ---------------------------------------------------------------

  /// How many failures of kind `f` were injected so far (none: all kinds).
  std::uint64_t injected(fault f = fault::none) const noexcept {
    switch (f) {
      case fault::write: return injected_writes_.load();
      case fault::sync: return injected_syncs_.load();
      case fault::disk_full: return injected_full_.load();
      case fault::none: break;
    }
    return injected_writes_.load() + injected_syncs_.load() + injected_full_.load();
  }

  // -- asked by the store's file system -----------------------------------------

  /// Called before each append: the failure to return instead, or none.
  fault on_append() noexcept {
    fault f = fault::none;
    if (full_.load())
      f = fault::disk_full;
    else if (writes_.load())
      f = fault::write;
    else if (take(next_appends_))
      f = next_append_kind_.load();
    count(f);
    return f;
  }
  /// Called before each Sync/Fsync: sync to fail it, or none.
  fault on_sync() noexcept {
    fault f = syncs_.load() || take(next_syncs_) ? fault::sync : fault::none;
    count(f);
    return f;
  }

private:
  // Takes one from a pending count; false if none is left.
  static bool take(std::atomic<std::uint64_t>& n) noexcept {
    auto v = n.load();
    while (v > 0 && !n.compare_exchange_weak(v, v - 1)) {
    }
    return v > 0;
  }
  void count(fault f) noexcept {
    switch (f) {
      case fault::write: ++injected_writes_; break;
      case fault::sync: ++injected_syncs_; break;
      case fault::disk_full: ++injected_full_; break;
      case fault::none: break;
    }
  }

  std::atomic<bool> writes_{false};
  std::atomic<bool> syncs_{false};
  std::atomic<bool> full_{false};
  std::atomic<std::uint64_t> next_appends_{0};
  std::atomic<fault> next_append_kind_{fault::write};
  std::atomic<std::uint64_t> next_syncs_{0};
  std::atomic<std::uint64_t> injected_writes_{0};
  std::atomic<std::uint64_t> injected_syncs_{0};
  std::atomic<std::uint64_t> injected_full_{0};
};

}  // namespace ticktock::storage
