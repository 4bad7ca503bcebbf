#pragma once

// Helpers shared by the ticktock-bench scenarios: statistics, clocks, process
// memory and per-thread I/O counters, temporary directories, bounded waits
// and a raw RocksDB handle for the baselines.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace ticktock::bench {

using steady = std::chrono::steady_clock;

/// A scenario could not run (a wait timed out, a call failed). Caught by
/// main, which prints it and exits with status 1.
struct bench_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Seconds between two instants.
inline double seconds_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Microseconds between two instants.
inline double micros_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// -- statistics ---------------------------------------------------------------

/// Median and spread of one metric over the runs of a scenario.
struct summary {
  double median = 0;
  double min = 0;
  double max = 0;
};

/// Median (mean of the middle two for an even count), min and max of
/// `values`, which must not be empty.
summary summarize(std::vector<double> values);

/// The q-quantile (0..1, nearest rank) of `values`, which must not be empty.
double percentile(std::vector<double> values, double q);

// -- process and thread counters ---------------------------------------------

/// Resident set size of this process in bytes (/proc/self/statm).
std::uint64_t rss_bytes();

/// Releases free heap pages (malloc_trim(0)), then returns rss_bytes().
std::uint64_t trimmed_rss_bytes();

/// Write system calls and bytes of the foreground threads.
struct write_counters {
  std::uint64_t calls = 0;  ///< syscw
  std::uint64_t bytes = 0;  ///< wchar
};

/// Write system calls (syscw of /proc/self/task/<tid>/io) and bytes written
/// (wchar) summed over the threads of this process that are not RocksDB
/// background threads ("rocksdb:*"). While a node runs in process, only the
/// threads that write groups write: the committer, and with async durability
/// the CAF workers whose agents write their own tick batches; each group
/// commit appends its WriteBatch to the WAL with one write(2). The delta over a measured region therefore estimates
/// the number of group commits and the WAL bytes. Returns nullopt if
/// per-thread I/O accounting is missing.
std::optional<write_counters> foreground_writes();

// -- directories ----------------------------------------------------------------

/// A fresh directory `<parent>/ticktock-bench-XXXXXX` removed with its content
/// on destruction.
class temp_dir {
public:
  explicit temp_dir(const std::filesystem::path& parent);
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

private:
  std::filesystem::path path_;
};

// -- waiting --------------------------------------------------------------------

/// A counter that one thread waits on while others bump it; every wait is
/// bounded.
class latch_counter {
public:
  /// Adds one; records the instant the count reaches `target` and wakes the
  /// waiter. Cheap and non-blocking enough for CAF workers and observers.
  void bump() {
    auto n = count_.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (n == target_.load(std::memory_order_acquire)) {
      {
        std::lock_guard<std::mutex> guard{mtx_};
        reached_at_ = steady::now();
        reached_ = true;
      }
      cv_.notify_all();
    }
  }

  /// Resets the count and sets the value bump() must reach.
  void reset(std::uint64_t target) {
    std::lock_guard<std::mutex> guard{mtx_};
    reached_ = false;
    count_ = 0;
    target_ = target;
  }

  /// Waits until the target is reached and returns the instant it was;
  /// throws bench_error naming `what` after `timeout`.
  steady::time_point wait(std::chrono::milliseconds timeout, const std::string& what) {
    std::unique_lock<std::mutex> lock{mtx_};
    if (!cv_.wait_for(lock, timeout, [&] { return reached_; }))
      throw bench_error{what + ": timed out after " + std::to_string(timeout.count()) + " ms ("
                        + std::to_string(count_.load()) + " of "
                        + std::to_string(target_.load()) + ")"};
    return reached_at_;
  }

  std::uint64_t count() const noexcept { return count_.load(); }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> target_{0};
  bool reached_ = false;
  steady::time_point reached_at_{};
};

/// Polls `done` every millisecond until it returns true; throws bench_error
/// naming `what` after `timeout`.
void poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                const std::string& what);

// -- raw RocksDB (baselines) ------------------------------------------------------

/// A RocksDB opened with the options ticktock's store uses (64 MiB total
/// write buffer, 16 MiB per column family, LZ4 with ZSTD at the bottom, two
/// background jobs) and the given column families, for the baselines.
class raw_db {
public:
  raw_db(const std::filesystem::path& dir, const std::vector<std::string>& column_families,
         bool sync);
  ~raw_db();
  raw_db(const raw_db&) = delete;
  raw_db& operator=(const raw_db&) = delete;

  rocksdb::DB& db() noexcept { return *db_; }
  /// The handle of column family `i` in the order given to the constructor.
  rocksdb::ColumnFamilyHandle* cf(std::size_t i) const { return handles_.at(i + 1); }
  bool sync() const noexcept { return sync_; }

  /// Flushes and compacts every column family; throws bench_error on failure.
  void compact();
  /// Live SST plus WAL bytes, computed as store::disk_bytes does.
  std::uint64_t disk_bytes() const;

private:
  std::filesystem::path dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // [0] is "default"
  bool sync_ = false;
};

/// Agent ids used by every scenario: "a000000", "a000001", ...
std::string agent_name(std::size_t i);

}  // namespace ticktock::bench
