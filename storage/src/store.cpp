#include "ticktock/storage/store.hpp"

#include <cstring>

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <unordered_map>

#include "bundle.hpp"
#include "guarded_fs.hpp"
#include "info_log.hpp"
#include "keys.hpp"
#include "ticktock/runtime/identity.hpp"

// TSan builds, by gcc or clang (see store::impl::publish_order).
#if defined(__SANITIZE_THREAD__)
#define TICKTOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TICKTOCK_TSAN 1
#endif
#endif

namespace ticktock::storage {

namespace {

// Column families, in the order they are opened. Never reorder: cf() indexes.
enum cf_id : std::size_t {
  cf_default,
  cf_agents,
  cf_state,
  cf_inbox,
  cf_outbox,
  cf_alarms,
  cf_trajectory,
  cf_memory,
  cf_goals,
  cf_ledger,
  cf_deadletter,
  cf_identity,
  cf_approvals,
  cf_meta,
  cf_count,
};

constexpr std::array<const char*, cf_count> cf_names = {
  "default", "agents", "state",      "inbox",    "outbox",    "alarms", "trajectory",
  "memory",  "goals",  "ledger",     "deadletter", "identity", "approvals", "meta",
};

error from_status(const rocksdb::Status& st, std::string_view what) {
  return error{errc::storage_failure, std::string{what} + ": " + st.ToString()};
}

bool starts_with(const rocksdb::Slice& s, std::string_view p) {
  return s.size() >= p.size() && std::memcmp(s.data(), p.data(), p.size()) == 0;
}

std::string_view view(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// In-memory bookkeeping of one agent's inbox, owned by the writer.
struct counters {
  std::uint64_t inbox_next = 1;
  std::uint64_t dead_next = 1;
  std::uint64_t depth = 0;
  bool erased = false;
};

std::string encode_counters(const counters& c) {
  std::string v;
  keys::put_be64(v, c.inbox_next);
  keys::put_be64(v, c.dead_next);
  return v;
}

// Alarm times are agent-controlled, so the periodic arithmetic is done in 128
// bits: in 64 bits `due + period * k` can overflow (undefined behaviour), and a
// wrapped due time lies in the past and fires the alarm on every pass, forever.

/// `due + period * n`, or nullopt if it lies beyond the range of time_point.
std::optional<time_point> occurrence(time_point due, duration period, __int128 n) {
  using limits = std::numeric_limits<std::int64_t>;
  __int128 us = static_cast<__int128>(due.time_since_epoch().count()) + n * period.count();
  if (us > limits::max() || us < limits::min())
    return std::nullopt;
  return time_point{duration{static_cast<std::int64_t>(us)}};
}

/// Whole periods from `due` to `now` (due <= now, period > 0).
__int128 periods_between(time_point due, time_point now, duration period) {
  return (static_cast<__int128>(now.time_since_epoch().count()) - due.time_since_epoch().count())
         / period.count();
}

}  // namespace

bool is_exclusive(const write_op& op) noexcept {
  return !std::holds_alternative<enqueue_op>(op) && !std::holds_alternative<tick_op>(op)
         && !std::holds_alternative<tick_batch_op>(op) && !std::holds_alternative<service_op>(op);
}

// Version of the record layout; see docs/storage-format.md. 2: signed
// trajectory (SignedTrajectory values) and per-agent identity records.
constexpr std::string_view format_version = "2";
constexpr std::string_view format_key = "format";

namespace {

// "inbox of 'a' holds 1 entry (limit 1)": why a trigger or a requeue is refused.
std::string inbox_full_message(const std::string& agent, std::uint64_t depth,
                               std::uint64_t limit) {
  return "inbox of '" + agent + "' holds " + std::to_string(depth)
         + (depth == 1 ? " entry" : " entries") + " (limit " + std::to_string(limit) + ")";
}

// The store whose db_mtx this thread holds shared, so nested reads of the
// same store do not lock twice.
thread_local const void* read_locked = nullptr;

// Holds a store's db_mtx shared while a read uses its RocksDB instance, which
// recovery may close and reopen (see store::impl::reopen).
class read_guard {
public:
  read_guard(std::shared_mutex& m, const void* owner) : prev_(read_locked) {
    if (prev_ != owner) {
      m.lock_shared();
      mtx_ = &m;
      read_locked = owner;
    }
  }
  read_guard(read_guard&& o) noexcept : mtx_(std::exchange(o.mtx_, nullptr)), prev_(o.prev_) {}
  read_guard(const read_guard&) = delete;
  read_guard& operator=(const read_guard&) = delete;
  read_guard& operator=(read_guard&&) = delete;
  ~read_guard() {
    if (mtx_) {
      read_locked = prev_;
      mtx_->unlock_shared();
    }
  }

private:
  std::shared_mutex* mtx_ = nullptr;
  const void* prev_;
};

// An iterator and the read lock it needs (the lock is released last).
struct locked_iterator {
  read_guard guard;
  std::unique_ptr<rocksdb::Iterator> it;
  rocksdb::Iterator* operator->() const { return it.get(); }
};

// Backoff between recovery attempts after a failed write.
constexpr std::chrono::milliseconds min_recovery_backoff{10};
constexpr std::chrono::milliseconds max_recovery_backoff{1000};

// -- idempotency keys: meta "k<agent>\0<key>" --------------------------------
// The value: the seq the key was first accepted with (be64); then the digest
// of what was asked, when its sender gave one (32 bytes); then, for a
// client's key, when it was accepted (be64 microseconds since the epoch, as
// keys::bias), by which it expires. So 8, 40, 16 or 48 bytes.

constexpr std::size_t seq_bytes = 8, digest_bytes = std::tuple_size_v<hash256>, time_bytes = 8;

std::string_view idempotency_digest(std::string_view v) {
  return v.size() >= seq_bytes + digest_bytes ? v.substr(seq_bytes, digest_bytes) : std::string_view{};
}

bool idempotency_timed(std::string_view v) {
  return v.size() == seq_bytes + time_bytes || v.size() == seq_bytes + digest_bytes + time_bytes;
}

bool idempotency_expired(std::string_view v, time_point now, std::chrono::seconds ttl) {
  if (ttl.count() <= 0 || !idempotency_timed(v))
    return false;
  auto accepted = keys::unbias(keys::get_be64(v.substr(v.size() - time_bytes)));
  // In 128 bits: a time from an imported bundle may be anything.
  __int128 age = __int128{now.time_since_epoch().count()} - accepted.time_since_epoch().count();
  return age >= __int128{std::chrono::duration_cast<duration>(ttl).count()};
}

// The idempotency key of a meta key "k<agent>\0<key>".
std::string_view idempotency_key_of(std::string_view meta_key) {
  auto nul = meta_key.find('\0');
  return nul == std::string_view::npos ? std::string_view{} : meta_key.substr(nul + 1);
}

// Drops clients' idempotency keys once they expired: without it, an agent
// would keep every key it was ever sent. A key read before a compaction
// reached it is checked by time as well (group_writer::handle(enqueue_op)).
// A client's key stored without a time (before 2026-12-06) gets the time of
// the compaction that first sees it, and so expires a ttl later.
class idempotency_expiry final : public rocksdb::CompactionFilter {
public:
  idempotency_expiry(std::shared_ptr<const ticktock::clock> clock, std::chrono::seconds ttl)
    : clock_(std::move(clock)), ttl_(ttl) {}
  const char* Name() const override { return "ticktock.idempotency_expiry"; }
  bool Filter(int, const rocksdb::Slice& key, const rocksdb::Slice& value, std::string* new_value,
              bool* value_changed) const override {
    if (key.empty() || key[0] != 'k')
      return false;
    std::string_view v{value.data(), value.size()};
    if (idempotency_timed(v))
      return idempotency_expired(v, clock_->now(), ttl_);
    if ((v.size() == seq_bytes || v.size() == seq_bytes + digest_bytes)
        && !is_node_idempotency_key(idempotency_key_of({key.data(), key.size()}))) {
      *new_value = std::string{v};
      keys::put_be64(*new_value, keys::bias(clock_->now()));
      *value_changed = true;
    }
    return false;
  }

private:
  std::shared_ptr<const ticktock::clock> clock_;
  std::chrono::seconds ttl_;
};

}  // namespace

bool is_node_idempotency_key(std::string_view key) noexcept {
  for (std::string_view own : {"job:", "approval:", "envelope:", "nostr:"})
    if (key.starts_with(own))
      return true;
  return false;
}

struct store::impl {
  store_options options;
  // options.clock, or the system clock.
  std::shared_ptr<const ticktock::clock> clock;
  // Set on cf_meta; declared before db so it outlives it.
  std::unique_ptr<rocksdb::CompactionFilter> meta_filter;
  // The file system RocksDB writes through (fault injection, failed WAL
  // tails) and the Env built on it; declared before db so they outlive it.
  std::shared_ptr<detail::guarded_fs> fs;
  std::unique_ptr<rocksdb::Env> env;
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> cf_descriptors;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::WriteOptions write_options;
  rocksdb::ReadOptions read_options;
  // Writer-owned (apply is single-threaded): counters of agents seen so far.
  std::unordered_map<std::string, counters> counters_;
  // Where the due-ordered alarm keys ("d"...) start: no live one sorts
  // before it. Fired alarms are deleted in key order, so their tombstones
  // pile up at the front of cf_alarms until compaction; seeking from the
  // floor instead of "d" keeps next_alarm_due and fire_alarms from stepping
  // over every one of them. The writer lowers it before a batch that puts
  // an earlier alarm, and raises it after a committed batch that fired
  // alarms; readers take it under the mutex.
  mutable std::mutex alarm_floor_mtx;
  std::string alarm_floor_ = "d";
  std::string alarm_floor() const {
    std::lock_guard<std::mutex> g{alarm_floor_mtx};
    return alarm_floor_;
  }
  // Readers hold db_mtx shared while they use db; recovery holds it
  // exclusively while it closes and reopens db.
  mutable std::shared_mutex db_mtx;
  // Writer-owned: why the last write failed (until a write succeeds again),
  // and when recovery may next be tried.
  error failure;
  std::chrono::steady_clock::time_point next_recovery{};
  std::chrono::milliseconds recovery_backoff{0};
  // What readers see of `failure` (health checks, metrics): the flag is
  // read without a lock on every /healthz; the message under its mutex.
  std::atomic<bool> failing{false};
  mutable std::mutex failing_mtx;
  std::string failing_message;

  ~impl() {
    for (auto* h : handles)
      if (h && db)
        db->DestroyColumnFamilyHandle(h);
    if (db)
      db->Close();
  }

  rocksdb::ColumnFamilyHandle* cf(cf_id i) const { return handles[i]; }

  read_guard lock() const { return read_guard{db_mtx, this}; }

  // RocksDB hands a write to later readers through its own atomics: the
  // writer publishes the last sequence number after inserting into the
  // memtable, and every new iterator or Get loads it. Iterators' keys and
  // values, and values a Get pins, point into the memtable, so our code
  // reads the bytes RocksDB's writer thread copied there. Debian builds
  // RocksDB without TSan, which so sees that copy and our read but not the
  // edge between them, and reports a race (often with the writer's stack
  // lost, so no suppression can match it). Under TSan only, the writer holds
  // this lock exclusively around each write and readers hold it shared while
  // they take their view (new_iterator, get): a view that holds a write was
  // taken after that write's unlock, which is the edge RocksDB really has.
  // Elsewhere its guards are empty.
  struct publish_order {
#ifdef TICKTOCK_TSAN
    mutable std::shared_mutex m;
    std::unique_lock<std::shared_mutex> writing() const { return std::unique_lock{m}; }
    std::shared_lock<std::shared_mutex> reading() const { return std::shared_lock{m}; }
#else
    struct none {};
    none writing() const { return {}; }
    none reading() const { return {}; }
#endif
  } order;

  /// A new iterator over `c`, as of now (or ro.snapshot).
  std::unique_ptr<rocksdb::Iterator> new_iterator(const rocksdb::ReadOptions& ro, cf_id c) const {
    [[maybe_unused]] auto g = order.reading();
    return std::unique_ptr<rocksdb::Iterator>{db->NewIterator(ro, cf(c))};
  }

  /// db->Get into `value`, ordered as new_iterator.
  rocksdb::Status get_into(const rocksdb::ReadOptions& ro, cf_id c, std::string_view key,
                           std::string* value) const {
    [[maybe_unused]] auto g = order.reading();
    return db->Get(ro, cf(c), rocksdb::Slice{key.data(), key.size()}, value);
  }

  /// A write failed with `err`: later writes first try to recover.
  void write_failed(const error& err) {
    failure = err;
    recovery_backoff = std::chrono::milliseconds{0};
    next_recovery = {};
    std::lock_guard<std::mutex> g{failing_mtx};
    failing_message = err.message();
    failing.store(true, std::memory_order_release);
  }
  void recovered() {
    failure = {};
    std::lock_guard<std::mutex> g{failing_mtx};
    failing_message.clear();
    failing.store(false, std::memory_order_release);
  }
  error recover();
  error reopen(const std::vector<std::pair<std::string, std::uint64_t>>& torn);

  // A new directory gets the current format; one written by another format
  // is refused with a clear error rather than misread.
  error check_format() {
    error err;
    auto v = get(cf_meta, format_key, &err);
    if (err)
      return err;
    if (v) {
      if (*v == format_version)
        return {};
      return error{errc::storage_failure, "data directory " + options.dir.string()
                                            + " has record format " + *v + "; this build reads format "
                                            + std::string{format_version}};
    }
    auto it = iter(cf_agents);
    it->SeekToFirst();
    if (it->Valid())
      return error{errc::storage_failure,
                   "data directory " + options.dir.string()
                     + " was written by an earlier ticktock (record format 1, unsigned trajectories); "
                       "this build reads format "
                     + std::string{format_version} + ": start with an empty data directory"};
    auto st = db->Put(write_options, cf(cf_meta), rocksdb::Slice{format_key.data(), format_key.size()},
                      rocksdb::Slice{format_version.data(), format_version.size()});
    return st.ok() ? error{} : from_status(st, "write format version");
  }

  /// The value of `key`, as of `snap` if given.
  std::optional<std::string> get(cf_id c, std::string_view key, error* err = nullptr,
                                 const rocksdb::Snapshot* snap = nullptr) const {
    auto guard = lock();
    if (!db) {
      if (err)
        *err = closed();
      return std::nullopt;
    }
    std::string value;
    rocksdb::ReadOptions at;
    if (snap) {
      at = read_options;
      at.snapshot = snap;
    }
    auto st = get_into(snap ? at : read_options, c, key, &value);
    if (st.ok())
      return value;
    if (!st.IsNotFound() && err)
      *err = from_status(st, "read");
    return std::nullopt;
  }

  locked_iterator iter(cf_id c) const {
    locked_iterator out{lock(), nullptr};
    out.it.reset(db ? new_iterator(read_options, c).release()
                    : rocksdb::NewErrorIterator(rocksdb::Status::IOError(closed().message())));
    return out;
  }

  static error closed() {
    return error{errc::storage_failure, "the store is closed: reopening RocksDB after a failed "
                                        "write failed; the next write tries again"};
  }

  // Calls f(key, value) for every key with `prefix`, from `from` on, until
  // f returns false. The upper bound keeps RocksDB from stepping over the
  // deleted keys of the next prefixes (consumed inbox entries, for one).
  // As of `snap` if given; a read that failed sets `err` if given.
  template <class F>
  void scan(cf_id c, std::string_view prefix, std::string_view from, F&& f,
            const rocksdb::Snapshot* snap = nullptr, error* err = nullptr) const {
    auto guard = lock();
    if (!db)
      return;
    std::string upper{prefix};
    while (!upper.empty() && static_cast<unsigned char>(upper.back()) == 0xff)
      upper.pop_back();
    rocksdb::Slice upper_slice;
    rocksdb::ReadOptions ro = read_options;
    ro.snapshot = snap;
    if (!upper.empty()) {
      upper.back() = static_cast<char>(static_cast<unsigned char>(upper.back()) + 1);
      upper_slice = rocksdb::Slice{upper};
      ro.iterate_upper_bound = &upper_slice;
    }
    auto it = new_iterator(ro, c);
    it->Seek(rocksdb::Slice{from.data(), from.size()});
    for (; it->Valid() && starts_with(it->key(), prefix); it->Next())
      if (!f(view(it->key()), view(it->value())))
        return;
    if (err && !it->status().ok())
      *err = from_status(it->status(), "read");
  }

  std::uint64_t count_prefix(cf_id c, std::string_view prefix,
                             const rocksdb::Snapshot* snap = nullptr) const {
    std::uint64_t n = 0;
    scan(
      c, prefix, prefix,
      [&](auto, auto) {
        ++n;
        return true;
      },
      snap);
    return n;
  }
};

// -- the writer: one group of operations ------------------------------------

namespace {

class group_writer {
public:
  explicit group_writer(store::impl& s) : s_(s) {}

  std::vector<op_result> run(std::vector<write_op>& ops) {
    std::vector<op_result> results(ops.size());
    for (std::size_t i = 0; i < ops.size(); ++i)
      std::visit([&](auto& op) { handle(op, results[i]); }, ops[i]);
    for (auto& [id, c] : scratch_)
      if (c.erased)
        batch_.Delete(s_.cf(cf_meta), keys::counters(id));
      else if (dirty_.count(id))
        batch_.Put(s_.cf(cf_meta), keys::counters(id), encode_counters(c));
    if (batch_.Count() > 0) {
      rocksdb::Status st;
      {
        [[maybe_unused]] auto g = s_.order.writing();
        st = s_.db->Write(s_.write_options, &batch_);
      }
      if (!st.ok()) {
        auto err = from_status(st, "commit of " + std::to_string(ops.size()) + " operation"
                                     + (ops.size() == 1 ? "" : "s") + " failed");
        s_.write_failed(err);
        for (auto& r : results)
          r = op_result{err};
        return results;
      }
    }
    for (auto& [id, c] : scratch_)
      if (c.erased)
        s_.counters_.erase(id);
      else
        s_.counters_[id] = c;
    if (s_.options.on_inbox_overflow)
      for (auto& agent : overflowed_)
        s_.options.on_inbox_overflow(agent);
    if (last_alarm_fired_) {
      // Every due key up to the last one fired is gone now, but for those
      // this batch put (re-armed or set earlier): the floor rises to there.
      auto floor = *last_alarm_fired_;
      if (lowest_alarm_put_ && *lowest_alarm_put_ < floor)
        floor = *lowest_alarm_put_;
      std::lock_guard<std::mutex> g{s_.alarm_floor_mtx};
      if (floor > s_.alarm_floor_)
        s_.alarm_floor_ = std::move(floor);
    }
    return results;
  }

private:
  // Counters of `id`, or nullptr if the agent does not exist. Loads them on
  // first use; copies into the group's scratch so a failed write leaves the
  // committed counters untouched.
  counters* ctr(const std::string& id) {
    if (auto i = scratch_.find(id); i != scratch_.end())
      return i->second.erased ? nullptr : &i->second;
    if (auto i = s_.counters_.find(id); i != s_.counters_.end())
      return &(scratch_[id] = i->second);
    error err;
    if (!s_.get(cf_agents, id, &err))
      return nullptr;
    counters c;
    if (auto v = s_.get(cf_meta, keys::counters(id)); v && v->size() == 16) {
      c.inbox_next = keys::get_be64(*v);
      c.dead_next = keys::get_be64(std::string_view{*v}.substr(8));
    }
    c.depth = s_.count_prefix(cf_inbox, keys::prefix(id));
    return &(scratch_[id] = c);
  }

  void put(cf_id c, std::string_view k, std::string_view v) {
    if (c == cf_alarms && !k.empty() && k.front() == 'd') {
      // Lowered before the write: a reader meanwhile only seeks from earlier.
      std::lock_guard<std::mutex> g{s_.alarm_floor_mtx};
      if (k < s_.alarm_floor_)
        s_.alarm_floor_ = std::string{k};
      lowest_alarm_put_ = std::min(lowest_alarm_put_.value_or(std::string{k}), std::string{k});
    }
    batch_.Put(s_.cf(c), rocksdb::Slice{k.data(), k.size()}, rocksdb::Slice{v.data(), v.size()});
  }
  void del(cf_id c, std::string_view k) {
    batch_.Delete(s_.cf(c), rocksdb::Slice{k.data(), k.size()});
  }
  void del_prefix(cf_id c, std::string_view id) {
    batch_.DeleteRange(s_.cf(c), keys::prefix(id), keys::prefix_end(id));
  }

  void deadletter(const std::string& agent, counters& c, deadletter_entry d) {
    auto id = c.dead_next++;
    dirty_.insert(agent);
    if (d.reason == "inbox_full")
      overflowed_.push_back(agent);
    d.id = id;
    put(cf_deadletter, keys::seq(agent, id), encode(d));
  }

  // -- enqueue --------------------------------------------------------------

  void handle(enqueue_op& op, op_result& r) {
    auto* c = ctr(op.agent);
    if (!c) {
      r.err = error{errc::not_found, "no agent '" + op.agent + "'"};
      return;
    }
    auto& e = op.entry;
    std::string idem_key;
    if (!e.idempotency_key.empty()) {
      idem_key = keys::idempotency(op.agent, e.idempotency_key);
      // The value: the seq the key was accepted with, then the digest of
      // that request when its sender gave one.
      auto lookup = [&](const std::string& key) -> std::optional<std::string> {
        if (auto i = pending_idem_.find(key); i != pending_idem_.end())
          return i->second;
        return s_.get(cf_meta, key);
      };
      auto seen = lookup(idem_key);
      if (!seen && !op.seen_as.empty())
        seen = lookup(keys::idempotency(op.agent, op.seen_as));
      if (seen && !op.ignore_expiry
          && idempotency_expired(*seen, s_.clock->now(), s_.options.idempotency_ttl))
        seen.reset();  // a new trigger; its value replaces the expired one
      if (seen) {
        r.seq = keys::get_be64(*seen);
        auto digest = idempotency_digest(*seen);
        if (op.request_digest && !digest.empty()
            && std::memcmp(digest.data(), op.request_digest->data(), digest_bytes) != 0) {
          r.err = error{errc::idempotency_key_reused,
                        "idempotency key '" + e.idempotency_key + "' was accepted for another "
                        "message (seq " + std::to_string(r.seq) + "); a retry sends the same one"};
          return;
        }
        r.duplicate = true;
        return;
      }
    }
    if (op.depth_limit != 0 && c->depth >= op.depth_limit) {
      r.err = error{errc::inbox_full, inbox_full_message(op.agent, c->depth, op.depth_limit)};
      if (op.refuse_overflow)
        overflowed_.push_back(op.agent);
      else
        deadletter(op.agent, *c, {0, 0, "inbox_full", r.err.message(), e.time, 0, e,
                                  op.request_digest});
      return;
    }
    e.seq = c->inbox_next++;
    ++c->depth;
    dirty_.insert(op.agent);
    put(cf_inbox, keys::seq(op.agent, e.seq), encode(e));
    if (!idem_key.empty()) {
      std::string v;
      keys::put_be64(v, e.seq);
      if (op.request_digest)
        v.append(reinterpret_cast<const char*>(op.request_digest->data()), op.request_digest->size());
      if (!is_node_idempotency_key(e.idempotency_key))
        keys::put_be64(v, keys::bias(s_.clock->now()));
      put(cf_meta, idem_key, v);
      pending_idem_[idem_key] = std::move(v);
    }
    if (!op.ws_opens.empty())
      put(cf_meta, keys::ws_open(op.agent, op.ws_opens), {});
    if (!op.ws_closes.empty())
      del(cf_meta, keys::ws_open(op.agent, op.ws_closes));
    r.seq = e.seq;
    r.delivered.push_back({op.agent, e});
  }

  // -- tick -------------------------------------------------------------------

  void handle(tick_op& op, op_result& r) {
    const auto& id = op.meta.id;
    if (op.retired && op.retired->load(std::memory_order_acquire)) {
      r.err = error{errc::not_found, "agent '" + id + "' was deleted"};
      return;
    }
    auto* c = ctr(id);
    if (!c) {
      r.err = error{errc::not_found, "no agent '" + id + "'"};
      return;
    }
    put(cf_agents, id, encode(op.meta));
    if (op.state)
      put(cf_state, id, *op.state);
    if (op.consume_seq) {
      del(cf_inbox, keys::seq(id, *op.consume_seq));
      if (c->depth > 0)
        --c->depth;
    }
    for (auto& ev : op.outbox)
      put(cf_outbox, keys::seq(id, ev.seq), encode(ev));
    put(cf_trajectory, keys::seq(id, op.trajectory_index), op.trajectory_bytes);
    for (auto& a : op.alarms)
      change_alarm(id, a);
    for (auto& kv : op.goals)
      kv.value ? put(cf_goals, keys::goal(id, kv.key), *kv.value)
               : del(cf_goals, keys::goal(id, kv.key));
    for (auto& kv : op.memory)
      kv.value ? put(cf_memory, keys::memory(id, kv.space, kv.key), *kv.value)
               : del(cf_memory, keys::memory(id, kv.space, kv.key));
    if (op.deadletter)
      deadletter(id, *c, std::move(*op.deadletter));
    for (auto& m : op.messages) {
      op_result sub;
      handle(m, sub);
      if (sub.err.code() == errc::not_found) {
        // Re-fetch: handle() may have rehashed scratch_.
        deadletter(id, *ctr(id),
                   {0, 0, "unknown_recipient", sub.err.message(), m.entry.time, 0, m.entry});
      }
      for (auto& d : sub.delivered)
        r.delivered.push_back(std::move(d));
    }
    if (op.outbox_trim_below > 0)
      batch_.DeleteRange(s_.cf(cf_outbox), keys::seq(id, 0), keys::seq(id, op.outbox_trim_below));
    services(op.jobs, op.ledger, op.approvals);
  }

  void handle(tick_batch_op& op, op_result& r) {
    for (auto& t : op.ticks) {
      handle(t, r);
      if (r.err)
        return;  // one agent's ticks: a missing agent fails the first, before any write
    }
  }

  // -- services: jobs, ledgers, approvals, settings -------------------------

  void services(std::vector<job_record>& jobs, std::vector<ledger_change>& ledger,
                std::vector<approval_record>& approvals) {
    for (auto& j : jobs)
      put(cf_ledger, keys::job(j.agent, j.id), encode(j));
    for (auto& c : ledger)
      change_ledger(c);
    for (auto& a : approvals) {
      put(cf_approvals, keys::approval(a.agent, a.id), encode(a));
      put(cf_meta, keys::approval_index(a.id), a.agent);
    }
  }

  void handle(service_op& op, op_result& r) {
    for (auto* agents : {&op.jobs})
      for (auto& j : *agents)
        if (!ctr(j.agent)) {
          r.err = error{errc::not_found, "no agent '" + j.agent + "'"};
          return;
        }
    services(op.jobs, op.ledger, op.approvals);
    for (auto& [k, v] : op.settings)
      v ? put(cf_meta, keys::setting(k), *v) : del(cf_meta, keys::setting(k));
    for (auto& t : op.triggers) {
      op_result sub;
      handle(t, sub);
      for (auto& d : sub.delivered)
        r.delivered.push_back(std::move(d));
    }
  }

  void change_ledger(const ledger_change& c) {
    if (!ctr(c.agent))
      return;  // the agent is gone; so is its ledger
    auto i = ledgers_.find(c.agent);
    if (i == ledgers_.end()) {
      ledger_record l;
      if (auto v = s_.get(cf_ledger, keys::ledger(c.agent)))
        if (auto d = decode_ledger(*v))
          l = *d;
      i = ledgers_.emplace(c.agent, l).first;
    }
    auto& l = i->second;
    l.roll(c.time);
    auto compute = c.service == "compute", http = c.service == "http";
    auto& svc_reserved = compute ? l.compute_reserved : http ? l.http_reserved : l.containers_reserved;
    auto& svc_spent = compute ? l.compute_spent : http ? l.http_spent : l.containers_spent;
    auto sat_sub = [](std::uint64_t& v, std::uint64_t x) { v = x > v ? 0 : v - x; };
    auto sat_add = [](std::uint64_t& v, std::uint64_t x) { v = v + x < v ? UINT64_MAX : v + x; };
    auto history = [&](const char* kind, std::uint64_t amount, const std::string* reason = nullptr) {
      ledger_entry e{0, c.time, kind, c.service, c.job, amount, reason ? *reason : c.reason};
      put(cf_ledger, keys::ledger_history(c.agent, l.history_next++), encode(e));
    };
    using k = ledger_change::kind;
    switch (c.what) {
      case k::reserve:
        sat_add(l.reserved, c.amount);
        sat_add(svc_reserved, c.amount);
        history("reserve", c.amount);
        break;
      case k::settle: {
        auto actual = std::min(c.actual, c.amount);  // never above the reservation
        sat_sub(l.reserved, c.amount);
        sat_sub(svc_reserved, c.amount);
        for (auto* v : {&l.spent_total, &l.spent_day, &l.spent_month, &svc_spent})
          sat_add(*v, actual);
        history("settle", actual);
        if (c.amount > actual)
          history("release", c.amount - actual);
        break;
      }
      case k::release:
        sat_sub(l.reserved, c.amount);
        sat_sub(svc_reserved, c.amount);
        history("release", c.amount);
        break;
      case k::deny:
        history("deny", c.amount);
        break;
      case k::limits: {
        // Merged here, in the write: two changes of different limits at
        // once both hold.
        l.limit_total = c.limit_total.value_or(l.limit_total);
        l.limit_day = c.limit_day.value_or(l.limit_day);
        l.limit_month = c.limit_month.value_or(l.limit_month);
        auto now_in_force = "total=" + std::to_string(l.limit_total) + " day="
                            + std::to_string(l.limit_day) + " month=" + std::to_string(l.limit_month);
        history("limits", 0, &now_in_force);
        break;
      }
    }
    put(cf_ledger, keys::ledger(c.agent), encode(l));
  }

  void change_alarm(const std::string& id, const alarm_change& a) {
    auto index_key = keys::alarm_index(id, a.name);
    std::optional<std::string> old;
    if (auto i = alarm_overlay_.find(index_key); i != alarm_overlay_.end())
      old = i->second;
    else
      old = s_.get(cf_alarms, index_key);
    if (old)
      del(cf_alarms, keys::alarm_due(keys::unbias(keys::get_be64(*old)), id, a.name));
    if (a.cancel || (a.period.count() < 0)) {
      if (old)
        del(cf_alarms, index_key);
      alarm_overlay_[index_key] = std::nullopt;
      return;
    }
    alarm_record rec{id, a.name, a.due, a.period};
    put(cf_alarms, keys::alarm_due(a.due, id, a.name), encode(rec));
    std::string v;
    keys::put_be64(v, keys::bias(a.due));
    put(cf_alarms, index_key, v);
    alarm_overlay_[index_key] = v;
  }

  // -- lifecycle ------------------------------------------------------------

  void handle(create_op& op, op_result& r) {
    const auto& id = op.meta.id;
    if (ctr(id)) {
      r.err = error{errc::already_exists, "agent '" + id + "' already exists"};
      return;
    }
    put(cf_agents, id, encode(op.meta));
    if (op.identity)
      put(cf_identity, keys::prefix(id), encode(*op.identity));
    scratch_[id] = counters{};
    dirty_.insert(id);
    enqueue_op init{id, std::move(op.init), 0};
    handle(init, r);
  }

  void handle(terminate_op& op, op_result& r) {
    const auto& id = op.agent;
    if (!ctr(id)) {
      r.err = error{errc::not_found, "no agent '" + id + "'"};
      return;
    }
    del(cf_agents, id);
    del(cf_state, id);
    for (auto c : {cf_inbox, cf_outbox, cf_trajectory, cf_memory, cf_goals, cf_deadletter,
                   cf_ledger, cf_identity})
      del_prefix(c, id);
    auto index_prefix = keys::alarm_index_prefix(id);
    s_.scan(cf_alarms, index_prefix, index_prefix, [&](std::string_view k, std::string_view v) {
      auto name = k.substr(index_prefix.size());
      del(cf_alarms, keys::alarm_due(keys::unbias(keys::get_be64(v)), id, name));
      del(cf_alarms, k);
      return true;
    });
    del(cf_meta, keys::errored(id));
    for (auto& name : agent_setting_names(id))
      del(cf_meta, keys::setting(name));
    s_.scan(cf_approvals, keys::prefix(id), keys::prefix(id), [&](std::string_view k, std::string_view) {
      del(cf_meta, keys::approval_index(k.substr(id.size() + 1)));
      return true;
    });
    del_prefix(cf_approvals, id);
    batch_.DeleteRange(s_.cf(cf_meta), keys::idempotency_prefix(id),
                       keys::idempotency_prefix_end(id));
    batch_.DeleteRange(s_.cf(cf_meta), keys::ws_open_prefix(id), keys::ws_open_prefix_end(id));
    scratch_[id].erased = true;
  }

  void handle(identity_op& op, op_result& r) {
    for (auto& [id, rec] : op.records) {
      if (!ctr(id)) {
        r.err = error{errc::not_found, "no agent '" + id + "'"};
        batch_.Clear();  // all or nothing
        return;
      }
      put(cf_identity, keys::prefix(id), encode(rec));
    }
    r.seq = op.records.size();
  }

  void handle(mark_errored_op& op, op_result&) {
    if (!op.retired || !op.retired->load(std::memory_order_acquire))
      put(cf_meta, keys::errored(op.agent), op.reason);
  }

  // -- alarms ---------------------------------------------------------------

  void handle(fire_alarms_op& op, op_result& r) {
    auto now = keys::bias(op.now);
    auto it = s_.iter(cf_alarms);
    for (it->Seek(s_.alarm_floor()); it->Valid() && starts_with(it->key(), "d") && it->key().size() > 9;
         it->Next()) {
      if (keys::get_be64(view(it->key()).substr(1)) > now)
        break;
      if (r.alarms_fired >= op.limit) {
        r.more_alarms = true;
        break;
      }
      ++r.alarms_fired;
      last_alarm_fired_ = it->key().ToString();
      del(cf_alarms, view(it->key()));
      auto a = decode_alarm(view(it->value()));
      if (!a)
        continue;  // an undecodable alarm is dropped; its index entry goes stale
      fire(op, *a, r);
    }
  }

  void fire(const fire_alarms_op& op, const alarm_record& a, op_result& r) {
    auto index_key = keys::alarm_index(a.agent, a.name);
    bool missed = a.due < op.missed_before;
    std::uint64_t occurrences = 1;
    if (missed && op.policy == missed_alarm_policy::skip)
      occurrences = 0;
    else if (missed && op.policy == missed_alarm_policy::fire_all && a.period.count() > 0)
      occurrences = static_cast<std::uint64_t>(
        std::min<__int128>(1000, periods_between(a.due, op.now, a.period) + 1));
    auto limit = occurrences != 0 && op.depth_limit ? op.depth_limit(a.agent) : 0;
    for (std::uint64_t i = 0; i < occurrences; ++i) {
      auto time = occurrence(a.due, a.period, i);
      if (!time)
        break;
      inbox_entry e;
      e.kind = trigger_kind::alarm;
      e.time = *time;
      e.alarm = a.name;
      enqueue_op enq{a.agent, std::move(e), limit};
      op_result sub;
      handle(enq, sub);
      for (auto& d : sub.delivered)
        r.delivered.push_back(std::move(d));
    }
    // The next occurrence after now. None if it lies beyond the range of
    // time_point: the alarm then ends, like a one-shot one.
    std::optional<time_point> next_due;
    if (a.period.count() > 0)
      next_due = occurrence(a.due, a.period, periods_between(a.due, op.now, a.period) + 1);
    if (next_due && ctr(a.agent)) {
      alarm_record next = a;
      next.due = *next_due;
      put(cf_alarms, keys::alarm_due(next.due, a.agent, a.name), encode(next));
      std::string v;
      keys::put_be64(v, keys::bias(next.due));
      put(cf_alarms, index_key, v);
    } else {
      del(cf_alarms, index_key);
    }
  }

  // -- bundles ----------------------------------------------------------------

  void handle(import_op& op, op_result& r) {
    auto b = decode_bundle(op.bundle);
    if (!b) {
      r.err = error{errc::invalid_argument, "not an agent bundle: " + b.error_value().message()};
      return;
    }
    const auto& id = b->agent;
    if (!is_valid_id(id)) {
      r.err = error{errc::invalid_id, "the bundle's agent id is invalid"};
      return;
    }
    if (ctr(id)) {
      r.err = error{errc::already_exists, "agent '" + id + "' already exists"};
      return;
    }
    bool has_meta = false;
    counters c;
    for (auto& e : b->entries) {
      if (op.identity && (e.column == "identity" || e.column == "identity-secret"))
        continue;  // replaced by op.identity below
      auto cf = cf_by_name(e.column);
      if (!cf || !owned_by(*cf, e.key, id)) {
        r.err = error{errc::invalid_argument, "bundle entry in '" + e.column
                                                + "' does not belong to agent '" + id + "'"};
        batch_.Clear();  // nothing of a rejected bundle may commit
        return;
      }
      has_meta = has_meta || *cf == cf_agents;
      if (*cf == cf_inbox)
        ++c.depth;
      if (*cf == cf_meta && e.key == keys::counters(id) && e.value.size() == 16) {
        c.inbox_next = keys::get_be64(e.value);
        c.dead_next = keys::get_be64(std::string_view{e.value}.substr(8));
      }
      put(*cf, e.key, e.value);
    }
    if (!has_meta || !agent_record_ok(b->entries, id)) {
      r.err = error{errc::invalid_argument, "the bundle has no valid agent record"};
      batch_.Clear();
      return;
    }
    if (op.identity)
      put(cf_identity, keys::prefix(id), encode(*op.identity));
    scratch_[id] = c;
    dirty_.insert(id);
    r.agent = id;
    r.seq = c.depth;
  }

  static bool agent_record_ok(const std::vector<bundle_entry>& entries, std::string_view id) {
    for (auto& e : entries)
      if (e.column == "agents" && e.key == id) {
        auto a = decode_agent(e.value);
        return a && a->id == id;
      }
    return false;
  }

  static bool is_valid_id(std::string_view id) {
    if (id.empty() || id.size() > 128)
      return false;
    for (char ch : id)
      if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_'
            || ch == '-'))
        return false;
    return id.front() != '.' && id.front() != '_' && id.front() != '-';
  }

  static std::optional<cf_id> cf_by_name(std::string_view name) {
    for (std::size_t i = 1; i < cf_count; ++i)
      if (name == cf_names[i])
        return static_cast<cf_id>(i);
    return std::nullopt;
  }

  // Whether `key` of column family `cf` is a record of agent `id`.
  static bool owned_by(cf_id cf, std::string_view key, std::string_view id) {
    auto prefixed = [&](std::string_view k) { return k.substr(0, id.size() + 1) == keys::prefix(id); };
    switch (cf) {
      case cf_agents:
      case cf_state: return key == id;
      case cf_alarms:
        if (!key.empty() && key.front() == 'i')
          return prefixed(key.substr(1));
        return key.size() > 9 && key.front() == 'd' && prefixed(key.substr(9));
      case cf_meta:
        if (key.empty())
          return false;
        if (key.front() == 'c' || key.front() == 'e')
          return key.substr(1) == id;
        if (key.front() == 's') {
          auto names = agent_setting_names(id);
          return std::find(names.begin(), names.end(), key.substr(1)) != names.end();
        }
        return key.front() == 'k' && prefixed(key.substr(1));
      case cf_approvals:  // not carried: they stay with the node that exported
      case cf_default:
      case cf_count: return false;
      default: return prefixed(key);
    }
  }

  // -- deadletter -------------------------------------------------------------

  void handle(requeue_op& op, op_result& r) {
    auto* c = ctr(op.agent);
    if (!c) {
      r.err = error{errc::not_found, "no agent '" + op.agent + "'"};
      return;
    }
    std::set<std::uint64_t> wanted;
    if (op.ids)
      wanted.insert(op.ids->begin(), op.ids->end());
    auto prefix = keys::prefix(op.agent);
    std::vector<std::pair<std::string, deadletter_entry>> moves;
    // A message the agent sent to an agent that did not exist is not a
    // trigger of its own: in its inbox it would fail as bad_signature (it is
    // signed for its recipient). Named, it is refused; otherwise it stays.
    std::string sent;
    s_.scan(cf_deadletter, prefix, prefix, [&](std::string_view k, std::string_view v) {
      auto id = keys::get_be64(k.substr(prefix.size()));
      if (op.ids && !wanted.erase(id))
        return true;
      auto d = decode_deadletter(v);
      if (d && d->reason == "unknown_recipient") {
        if (op.ids)
          sent += (sent.empty() ? "" : ", ") + std::to_string(id);
      } else if (d && !d->entry.corrupt) {
        moves.emplace_back(std::string{k}, std::move(*d));
      }
      return true;
    });
    if (!sent.empty()) {
      r.err = error{errc::invalid_argument,
                    "deadletter entry " + sent + " of '" + op.agent + "' is a message it sent to "
                      "an agent that did not exist, not a trigger of its own: send it again "
                      "instead; nothing was requeued"};
      return;
    }
    if (!wanted.empty()) {  // named, but not there: move none of them
      std::string missing;
      for (auto id : wanted)
        missing += (missing.empty() ? "" : ", ") + std::to_string(id);
      r.err = error{errc::invalid_argument, "agent '" + op.agent + "' has no deadletter entry "
                                       + missing + "; nothing was requeued"};
      return;
    }
    auto full = [&] { return op.depth_limit != 0 && c->depth >= op.depth_limit; };
    if (!moves.empty() && full()) {
      r.err = error{errc::inbox_full, inbox_full_message(op.agent, c->depth, op.depth_limit)
                                        + "; nothing was requeued"};
      return;
    }
    std::size_t requeued = 0;
    for (auto& [k, d] : moves) {
      if (full())
        break;
      // A trigger that got into the inbox once (it has a seq) had its
      // idempotency key recorded then: requeued, it is not a retry of itself.
      // One refused at the door (inbox_full) never had its key recorded: it
      // keeps it, so a client's retries of it (refused too, or accepted
      // later) are delivered once, not once per attempt.
      if (d.seq != 0)
        d.entry.idempotency_key.clear();
      enqueue_op enq{op.agent, std::move(d.entry), 0};
      enq.request_digest = d.request_digest;  // the key refuses another message, as at the door
      enq.ignore_expiry = true;  // a retry that got in, however long ago, was this trigger
      op_result sub;
      handle(enq, sub);
      // Its key taken since by another message (idempotency_key_reused): it
      // stays in the deadletter, not requeued.
      if (sub.err)
        continue;
      del(cf_deadletter, k);
      if (!sub.duplicate)
        ++requeued;
      for (auto& e : sub.delivered)
        r.delivered.push_back(std::move(e));
    }
    r.seq = requeued;
  }

  store::impl& s_;
  rocksdb::WriteBatch batch_;
  std::vector<std::string> overflowed_;  // agents whose full inbox refused a trigger
  std::unordered_map<std::string, counters> scratch_;
  // The alarm floor's inputs (store::impl::alarm_floor_): the last due key a
  // fire_alarms op of this group deleted, the earliest due key it put.
  std::optional<std::string> last_alarm_fired_;
  std::optional<std::string> lowest_alarm_put_;
  std::set<std::string> dirty_;
  std::unordered_map<std::string, std::string> pending_idem_;  // key -> its value
  std::unordered_map<std::string, std::optional<std::string>> alarm_overlay_;
  std::unordered_map<std::string, ledger_record> ledgers_;
};

}  // namespace

// -- store ------------------------------------------------------------------

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
store::~store() = default;

expected<std::unique_ptr<store>> store::open(const store_options& options) {
  if (sodium_init() < 0)
    return error{errc::storage_failure, "libsodium failed to initialize"};
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec)
    return error{errc::storage_failure,
                 "cannot create data directory " + options.dir.string() + ": " + ec.message()};
  auto p = std::make_unique<impl>();
  p->options = options;
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  db_opts.db_write_buffer_size = options.write_buffer_bytes;
  db_opts.max_background_jobs = 2;
  db_opts.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_opts.info_log = std::make_shared<detail::info_log>(options.dir / "LOG", 8 << 20,
                                                        db_opts.info_log_level);
  p->fs = std::make_shared<detail::guarded_fs>(rocksdb::FileSystem::Default(), options.faults,
                                               options.durability == durability::sync);
  p->env = rocksdb::NewCompositeEnv(p->fs);
  // Compactions at nice 19: they run beside ticks, not on their path, but
  // for milliseconds at a time, and an event loop pinned to the same CPU
  // would wait behind them (a request's latency). The flush pool keeps the
  // default priority: a starved flush would stall writes. This lowers the
  // process-wide default Env's compaction pool, every store's.
  p->env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW, rocksdb::CpuPriority::kLow);
  db_opts.env = p->env.get();
  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  p->clock = options.clock;
  if (!p->clock)
    p->clock = std::make_shared<ticktock::system_clock>();
  if (options.idempotency_ttl > std::chrono::hours{24 * 366 * 100})
    return error{errc::invalid_argument, "idempotency_ttl is at most a century"};
  if (options.idempotency_ttl.count() > 0)
    p->meta_filter = std::make_unique<idempotency_expiry>(p->clock, options.idempotency_ttl);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (auto* name : cf_names) {
    rocksdb::ColumnFamilyOptions cf_opts;
    cf_opts.write_buffer_size = options.write_buffer_bytes / 4;
    cf_opts.compression = rocksdb::kLZ4Compression;
    cf_opts.bottommost_compression = rocksdb::kZSTD;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    cf_opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    if (std::string_view{name} == "meta")
      cf_opts.compaction_filter = p->meta_filter.get();  // null without a ttl
    // Inbox entries and fired alarms are deleted soon after they are
    // written; compact files full of tombstones so scans stay short.
    if (std::string_view{name} == "inbox" || std::string_view{name} == "alarms")
      cf_opts.table_properties_collector_factories.push_back(
        rocksdb::NewCompactOnDeletionCollectorFactory(128, 64));
    cfs.emplace_back(name, cf_opts);
  }
  rocksdb::DB* db = nullptr;
  p->db_options = db_opts;
  p->cf_descriptors = cfs;
  auto st = rocksdb::DB::Open(db_opts, options.dir.string(), cfs, &p->handles, &db);
  if (!st.ok())
    return from_status(st, "cannot open RocksDB at " + options.dir.string());
  // Files written before the store made its new ones private (guarded_fs)
  // are made private too: every other user of the machine could read them.
  // Not through a link (symbolic or hard): what it points at, or shares its
  // inode with, is not the store's.
  for (auto& entry : std::filesystem::directory_iterator(options.dir, ec))
    if (!entry.is_symlink(ec) && entry.is_regular_file(ec) && entry.hard_link_count(ec) == 1)
      std::filesystem::permissions(entry.path(), std::filesystem::perms::owner_read
                                                   | std::filesystem::perms::owner_write, ec);
  p->db.reset(db);
  p->write_options.sync = options.durability == durability::sync;
  if (auto err = p->check_format())
    return err;
  return std::unique_ptr<store>(new store(std::move(p)));
}

std::vector<op_result> store::apply(std::vector<write_op>& ops) {
  if (impl_->failure)
    if (auto err = impl_->recover())
      return std::vector<op_result>(ops.size(), op_result{err});
  group_writer w{*impl_};
  return w.run(ops);
}

bool store::recover_now() {
  if (!impl_->failure)
    return true;
  return !impl_->recover();
}

std::optional<std::string> store::write_failure() const {
  if (!impl_->failing.load(std::memory_order_acquire))
    return std::nullopt;
  std::lock_guard<std::mutex> g{impl_->failing_mtx};
  if (!impl_->failing.load(std::memory_order_relaxed))
    return std::nullopt;
  return impl_->failing_message;
}

// -- recovery after a failed write -------------------------------------------
//
// A failed WAL append or sync leaves RocksDB in a background-error state in
// which every write fails (a fatal one for WAL errors: DB::Resume() cannot
// clear it). The writer recovers before its next write: it checks that the
// disk takes writes again, tries Resume(), and otherwise closes RocksDB, cuts
// the WAL back to what was acknowledged (the failed write may have reached
// the file) and reopens it. Between attempts it backs off, so a dead disk
// costs one probe per backoff, not one per write.

error store::impl::recover() {
  auto now = std::chrono::steady_clock::now();
  auto still = [&](const std::string& why) {
    return error{errc::storage_failure,
                 "storage is recovering from a failed write (" + failure.message() + "): " + why};
  };
  if (now < next_recovery)
    return still("waiting before the next attempt");
  recovery_backoff = std::clamp(recovery_backoff * 2, min_recovery_backoff, max_recovery_backoff);
  next_recovery = now + recovery_backoff;
  if (auto st = fs->probe(options.dir.string()); !st.ok())
    return still("the disk still refuses writes: " + st.ToString());
  auto torn = fs->take_torn_wals();
  if (torn.empty() && db && db->Resume().ok()) {
    recovered();
    return {};
  }
  if (auto err = reopen(torn))
    return still(err.message());
  recovered();
  return {};
}

error store::impl::reopen(const std::vector<std::pair<std::string, std::uint64_t>>& torn) {
  std::unique_lock<std::shared_mutex> guard{db_mtx};
  if (db) {
    for (auto* h : handles)
      if (h)
        db->DestroyColumnFamilyHandle(h);
    db->Close();  // reports the background error it closes with
    db.reset();
  }
  handles.clear();
  // Bytes past the acknowledged length belong to writes that were reported
  // as failed: replaying them would commit them behind their callers' backs.
  for (auto& [file, good] : torn) {
    std::error_code ec;
    auto size = std::filesystem::file_size(file, ec);
    if (!ec && size > good)
      std::filesystem::resize_file(file, good, ec);
    if (ec)
      return error{errc::storage_failure,
                   "cannot cut back the WAL " + file + " after a failed write: " + ec.message()};
  }
  // Recounted from the reopened database.
  counters_.clear();
  rocksdb::DB* raw = nullptr;
  auto st = rocksdb::DB::Open(db_options, options.dir.string(), cf_descriptors, &handles, &raw);
  if (st.ok()) {
    db.reset(raw);
    return {};
  }
  handles.clear();
  // Keep reads working: a read-only instance writes nothing.
  auto ro = rocksdb::DB::OpenForReadOnly(db_options, options.dir.string(), cf_descriptors,
                                         &handles, &raw);
  if (ro.ok())
    db.reset(raw);
  else
    handles.clear();
  return from_status(st, "reopening RocksDB at " + options.dir.string());
}

const store_options& store::options() const noexcept { return impl_->options; }

// -- agents ------------------------------------------------------------------

namespace {

expected<agent_record> agent_at(const store::impl& s, std::string_view id,
                                const rocksdb::Snapshot* snap) {
  error err;
  auto v = s.get(cf_agents, id, &err, snap);
  if (err)
    return err;
  if (!v)
    return error{errc::not_found, "no agent '" + std::string{id} + "'"};
  return decode_agent(*v);
}

expected<std::optional<identity_record>> identity_at(const store::impl& s, std::string_view id,
                                                      const rocksdb::Snapshot* snap) {
  error err;
  auto v = s.get(cf_identity, keys::prefix(id), &err, snap);
  if (err)
    return err;
  if (!v)
    return std::optional<identity_record>{};
  auto r = decode_identity(*v);
  if (!r)
    return r.error_value();
  return std::optional<identity_record>{std::move(*r)};
}

}  // namespace

expected<agent_record> store::get_agent(std::string_view id) const {
  return agent_at(*impl_, id, nullptr);
}

expected<std::pair<agent_record, std::uint64_t>>
store::get_agent_and_depth(std::string_view id) const {
  auto guard = impl_->lock();
  if (!impl_->db)
    return impl::closed();
  rocksdb::ManagedSnapshot snap{impl_->db.get()};
  auto meta = agent_at(*impl_, id, snap.snapshot());
  if (!meta)
    return meta.error_value();
  return std::pair{std::move(*meta), impl_->count_prefix(cf_inbox, keys::prefix(id), snap.snapshot())};
}

bool store::agent_exists(std::string_view id) const {
  return impl_->get(cf_agents, id).has_value();
}

std::optional<std::string> store::errored_mark(std::string_view id) const {
  return impl_->get(cf_meta, keys::errored(id));
}

expected<std::optional<std::string>> store::get_state(std::string_view id) const {
  error err;
  auto v = impl_->get(cf_state, id, &err);
  if (err)
    return err;
  return v;
}

void store::for_each_agent(const std::function<bool(const agent_summary&)>& f,
                           std::string_view after) const {
  auto it = impl_->iter(cf_agents);
  if (after.empty())
    it->SeekToFirst();
  else {
    it->Seek(rocksdb::Slice{after.data(), after.size()});
    if (it->Valid() && view(it->key()) == after)
      it->Next();
  }
  for (; it->Valid(); it->Next()) {
    agent_summary s;
    s.id = it->key().ToString();
    if (auto r = decode_agent(view(it->value()))) {
      s.type = r->type;
      s.errored = r->errored;
    } else {
      s.errored = true;
    }
    if (!s.errored && errored_mark(s.id))
      s.errored = true;
    if (!f(s))
      break;
  }
}

// -- identity ----------------------------------------------------------------

expected<std::optional<identity_record>> store::get_identity(std::string_view id) const {
  return identity_at(*impl_, id, nullptr);
}

void store::for_each_identity(
  const std::function<void(const std::string&, expected<identity_record>)>& f) const {
  auto it = impl_->iter(cf_identity);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto k = view(it->key());
    if (k.empty() || k.back() != '\0')
      continue;
    f(std::string{k.substr(0, k.size() - 1)}, decode_identity(view(it->value())));
  }
}

namespace {

// Walks an agent's trajectory records in index order and checks them: no
// gaps, each record hashes to the next one's prev_hash, every signature is by
// one of `signers`, every record is covered by a signature, and the chain
// ends at the agent record's head. verify_trajectory runs it over the store,
// read_bundle_identity over a bundle.
class chain_walk {
public:
  chain_walk(std::string_view id, std::vector<identity::public_key> signers)
    : id_(id), signers_(std::move(signers)) {}

  /// Takes the next record (its key's index and stored bytes); false once
  /// the chain is broken.
  bool next(std::uint64_t index, std::string_view stored) {
    ++rep.records;
    if (index != expected_index_) {
      fail(expected_index_, "record " + std::to_string(expected_index_) + " is missing");
      return false;
    }
    auto signed_rec = decode_signed_trajectory(stored);
    if (!signed_rec) {
      fail(index, signed_rec.error_value().message());
      return false;
    }
    const auto& [v, sig] = *signed_rec;
    if (sig.empty()) {
      if (uncovered_ == covered)
        uncovered_ = index;
    } else {
      auto signing = identity::trajectory_signing_bytes(id_, v);
      auto sig_bytes = std::span{reinterpret_cast<const std::uint8_t*>(sig.data()), sig.size()};
      if (std::none_of(signers_.begin(), signers_.end(),
                       [&](auto& key) { return identity::verify(key, signing, sig_bytes); })) {
        fail(index, "record " + std::to_string(index) + " has a bad signature");
        return false;
      }
      uncovered_ = covered;
    }
    auto rec = decode_trajectory(v);
    if (!rec) {
      fail(index, rec.error_value().message());
      return false;
    }
    if (rec->index != index) {
      fail(index, "record " + std::to_string(index) + " claims index " + std::to_string(rec->index));
      return false;
    }
    if (index > 0 && rec->prev_hash != prev_) {
      fail(index - 1, "record " + std::to_string(index - 1)
                        + " does not hash to the prev_hash of record " + std::to_string(index));
      return false;
    }
    prev_ = blake2b(v);
    last_state_hash = rec->state_hash;
    state_written = state_written || rec->effects.state_changed;
    ++expected_index_;
    return true;
  }

  /// After the last record: checks the end of the chain against the agent.
  void finish(const agent_record& meta) {
    if (!rep.ok)
      return;
    if (uncovered_ != covered)
      fail(uncovered_, "record " + std::to_string(uncovered_)
                         + " is not signed, and no signed record after it covers it");
    else if (expected_index_ != meta.trajectory_next)
      fail(expected_index_, "chain has " + std::to_string(expected_index_)
                              + " records, agent expects " + std::to_string(meta.trajectory_next));
    else if (expected_index_ > 0 && prev_ != meta.trajectory_head)
      fail(expected_index_ - 1, "record " + std::to_string(expected_index_ - 1)
                                  + " does not hash to the agent's chain head");
  }

  void fail(std::uint64_t index, std::string reason) {
    if (rep.ok) {
      rep.ok = false;
      rep.first_bad = index;
      rep.reason = std::move(reason);
    }
  }

  chain_report rep;
  /// The state hash of the last record taken (the agent's state after it).
  std::optional<hash256> last_state_hash;
  /// Whether a record taken changed the state (so that it is stored).
  bool state_written = false;

private:
  // Ticks committed together carry one signature, on the last record: the
  // unsigned ones before it are covered through the hash chain.
  static constexpr auto covered = std::numeric_limits<std::uint64_t>::max();
  std::string_view id_;
  std::vector<identity::public_key> signers_;
  hash256 prev_{};
  std::uint64_t expected_index_ = 0;
  std::uint64_t uncovered_ = covered;  // first unsigned record since the last signed one
};

std::vector<identity::public_key> signers_of(const identity_record& ident) {
  std::vector<identity::public_key> signers{ident.ed25519};
  signers.insert(signers.end(), ident.retired.begin(), ident.retired.end());
  return signers;
}

}  // namespace

expected<bundle_identity> read_bundle_identity(std::string_view bytes) {
  auto b = decode_bundle(bytes);
  if (!b)
    return error{errc::invalid_argument, "not an agent bundle: " + b.error_value().message()};
  bundle_identity out;
  out.agent = b->agent;
  auto prefix = keys::prefix(b->agent);
  std::optional<agent_record> meta;
  const std::string* state = nullptr;
  std::vector<std::pair<std::uint64_t, const std::string*>> trajectory;
  for (auto& e : b->entries) {
    if (e.column == "agents" && e.key == b->agent) {
      auto m = decode_agent(e.value);
      if (!m || m->id != b->agent)
        return error{errc::invalid_argument, "the bundle has no valid agent record"};
      meta = std::move(*m);
    } else if (e.column == "state" && e.key == b->agent) {
      state = &e.value;
    } else if (e.column == "trajectory") {
      if (e.key.size() != prefix.size() + 8 || e.key.compare(0, prefix.size(), prefix) != 0)
        return error{errc::invalid_argument, "bundle entry in 'trajectory' does not belong to agent '"
                                               + b->agent + "'"};
      trajectory.emplace_back(keys::get_be64(std::string_view{e.key}.substr(prefix.size())), &e.value);
    }
    if (e.key != prefix)
      continue;
    if (e.column == "identity") {
      auto r = decode_identity(e.value);
      if (!r)
        return error{errc::invalid_argument, "the bundle's identity record is corrupt: "
                                               + r.error_value().message()};
      out.identity = std::move(*r);
    } else if (e.column == "identity-secret") {
      out.secret = e.value;
    }
  }
  if (!meta)
    return error{errc::invalid_argument, "the bundle has no valid agent record"};
  out.type = meta->type;
  // The trajectory must verify as it would on the exporting node, and the
  // state must be the one its last record hashes: a bundle changed on its way
  // is refused before anything of it is stored.
  if (!trajectory.empty() && !out.identity)
    return error{errc::invalid_argument,
                 "the bundle has trajectory records but no identity record to verify them"};
  std::sort(trajectory.begin(), trajectory.end());
  chain_walk walk{b->agent, out.identity ? signers_of(*out.identity)
                                         : std::vector<identity::public_key>{}};
  for (auto& [index, value] : trajectory)
    if (!walk.next(index, *value))
      break;
  walk.finish(*meta);
  if (!walk.rep.ok)
    return error{errc::invalid_argument, "the bundle's trajectory does not verify: " + walk.rep.reason};
  // An agent whose ticks never changed its state has no state entry (it
  // loads its type's default); one whose ticks did must have it.
  if (state && walk.last_state_hash && blake2b(*state) != *walk.last_state_hash)
    return error{errc::invalid_argument,
                 "the bundle's state is not the state its last trajectory record hashes"};
  if (!state && walk.state_written)
    return error{errc::invalid_argument,
                 "the bundle has no state, though its trajectory records changed it"};
  return out;
}

// -- inbox, outbox, deadletter ------------------------------------------------

std::vector<inbox_entry> store::read_inbox(std::string_view id, std::uint64_t from_seq,
                                           std::size_t limit) const {
  std::vector<inbox_entry> out;
  auto prefix = keys::prefix(id);
  impl_->scan(cf_inbox, prefix, keys::seq(id, from_seq), [&](auto k, auto v) {
    auto seq = keys::get_be64(k.substr(prefix.size()));
    if (auto e = decode_inbox(v)) {
      e->seq = seq;
      out.push_back(std::move(*e));
    } else {
      inbox_entry bad;
      bad.seq = seq;
      bad.corrupt = true;
      bad.raw = std::string{v};
      bad.payload = e.error_value().message();
      out.push_back(std::move(bad));
    }
    return out.size() < limit;
  });
  return out;
}

std::uint64_t store::inbox_depth(std::string_view id) const {
  return impl_->count_prefix(cf_inbox, keys::prefix(id));
}

std::vector<std::string> store::agents_with_inbox(std::uint64_t* total) const {
  std::vector<std::string> ids;
  std::uint64_t n = 0;
  auto it = impl_->iter(cf_inbox);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ++n;
    auto k = view(it->key());
    auto id = k.substr(0, k.find('\0'));
    if (ids.empty() || ids.back() != id)
      ids.emplace_back(id);
  }
  if (total)
    *total = n;
  return ids;
}

std::vector<std::pair<std::string, std::string>> store::open_ws_connections() const {
  std::vector<std::pair<std::string, std::string>> out;
  impl_->scan(cf_meta, "w", "w", [&](std::string_view k, std::string_view) {
    auto rest = k.substr(1);
    auto nul = rest.find('\0');
    if (nul != std::string_view::npos)
      out.emplace_back(std::string{rest.substr(0, nul)}, std::string{rest.substr(nul + 1)});
    return true;
  });
  return out;
}

std::vector<outbox_event> store::read_outbox(std::string_view id, std::uint64_t from_seq,
                                             std::size_t limit) const {
  std::vector<outbox_event> out;
  auto prefix = keys::prefix(id);
  impl_->scan(cf_outbox, prefix, keys::seq(id, from_seq), [&](auto k, auto v) {
    auto ev = decode_outbox(v);
    outbox_event e = ev ? std::move(*ev) : outbox_event{};
    e.seq = keys::get_be64(k.substr(prefix.size()));
    out.push_back(std::move(e));
    return out.size() < limit;
  });
  return out;
}

std::vector<deadletter_entry> store::read_deadletter(std::string_view id, std::uint64_t from_id,
                                                     std::size_t limit) const {
  std::vector<deadletter_entry> out;
  auto prefix = keys::prefix(id);
  impl_->scan(cf_deadletter, prefix, keys::seq(id, from_id), [&](auto k, auto v) {
    auto d = decode_deadletter(v);
    deadletter_entry e;
    if (d)
      e = std::move(*d);
    else {
      e.reason = "corrupt_record";
      e.error = d.error_value().message();
      e.entry.corrupt = true;
    }
    e.id = keys::get_be64(k.substr(prefix.size()));
    out.push_back(std::move(e));
    return out.size() < limit;
  });
  return out;
}

// -- budgets, jobs, approvals, settings -------------------------------------------

expected<ledger_record> store::get_ledger(std::string_view id) const {
  error err;
  auto v = impl_->get(cf_ledger, keys::ledger(id), &err);
  if (err)
    return err;
  if (!v)
    return ledger_record{};
  return decode_ledger(*v);
}

std::vector<ledger_entry> store::read_ledger_history(std::string_view id, std::uint64_t from_seq,
                                                     std::size_t limit) const {
  std::vector<ledger_entry> out;
  auto prefix = keys::ledger_history_prefix(id);
  impl_->scan(cf_ledger, prefix, keys::ledger_history(id, from_seq), [&](auto k, auto v) {
    auto d = decode_ledger_entry(v);
    ledger_entry e = d ? std::move(*d) : ledger_entry{};
    if (!d)
      e.kind = "corrupt_record";
    e.seq = keys::get_be64(k.substr(prefix.size()));
    out.push_back(std::move(e));
    return out.size() < limit;
  });
  return out;
}

expected<std::optional<job_record>> store::get_job(std::string_view agent,
                                                   std::string_view job) const {
  error err;
  auto v = impl_->get(cf_ledger, keys::job(agent, job), &err);
  if (err)
    return err;
  if (!v)
    return std::optional<job_record>{};
  auto j = decode_job(*v);
  if (!j)
    return j.error_value();
  return std::optional<job_record>{std::move(*j)};
}

std::vector<job_record> store::list_jobs(std::string_view agent, std::string_view service) const {
  std::vector<job_record> out;
  auto prefix = keys::job_prefix(agent);
  impl_->scan(cf_ledger, prefix, prefix, [&](auto, auto v) {
    if (auto j = decode_job(v); j && (service.empty() || j->service == service))
      out.push_back(std::move(*j));
    return out.size() < 100'000;
  });
  // Ids sort as text (j11 before j3): listed in the order they were made.
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.created < b.created; });
  return out;
}

std::vector<job_record> store::open_jobs() const {
  std::vector<job_record> out;
  auto it = impl_->iter(cf_ledger);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto k = view(it->key());
    auto nul = k.find('\0');
    if (nul == std::string_view::npos || nul + 1 >= k.size() || k[nul + 1] != 'j')
      continue;
    if (auto j = decode_job(view(it->value())); j && j->status == "queued")
      out.push_back(std::move(*j));
  }
  return out;
}

expected<std::optional<approval_record>> store::get_approval(std::string_view id) const {
  error err;
  auto agent = impl_->get(cf_meta, keys::approval_index(id), &err);
  if (err)
    return err;
  if (!agent)
    return std::optional<approval_record>{};
  auto v = impl_->get(cf_approvals, keys::approval(*agent, id), &err);
  if (err)
    return err;
  if (!v)
    return std::optional<approval_record>{};
  auto a = decode_approval(*v);
  if (!a)
    return a.error_value();
  return std::optional<approval_record>{std::move(*a)};
}

std::vector<approval_record> store::list_approvals(
  std::string_view status, const std::optional<std::pair<time_point, std::string>>& after,
  std::size_t limit) const {
  // Keyed by agent and approval id (a digest), not by time: every approval
  // is read and sorted.
  std::vector<approval_record> out;
  auto it = impl_->iter(cf_approvals);
  for (it->SeekToFirst(); it->Valid(); it->Next())
    if (auto a = decode_approval(view(it->value()));
        a && (status.empty() || a->status == status)
        && (!after || std::tie(a->created, a->id) > std::tie(after->first, after->second)))
      out.push_back(std::move(*a));
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return std::tie(a.created, a.id) < std::tie(b.created, b.id); });
  if (out.size() > limit)
    out.resize(limit);
  return out;
}

std::optional<std::string> store::get_setting(std::string_view key) const {
  return impl_->get(cf_meta, keys::setting(key));
}

// -- trajectory ---------------------------------------------------------------

std::vector<trajectory_record> store::read_trajectory(std::string_view id, std::uint64_t from_index,
                                                      std::size_t limit) const {
  std::vector<trajectory_record> out;
  auto prefix = keys::prefix(id);
  impl_->scan(cf_trajectory, prefix, keys::seq(id, from_index), [&](auto k, auto v) {
    auto sr = decode_signed_trajectory(v);
    auto r = sr ? decode_trajectory(sr->first) : expected<trajectory_record>{sr.error_value()};
    trajectory_record rec;
    if (r) {
      rec = std::move(*r);
      rec.signature = std::move(sr->second);
    } else {
      rec.corrupt = true;
      rec.error = r.error_value().message();
    }
    rec.index = keys::get_be64(k.substr(prefix.size()));
    out.push_back(std::move(rec));
    return out.size() < limit;
  });
  return out;
}

expected<chain_report> store::verify_trajectory(std::string_view id) const {
  auto guard = impl_->lock();
  if (!impl_->db)
    return impl_->closed();
  // One snapshot for the agent record, its keys and its chain: a tick that
  // commits while the records are read moves the record's head with them.
  rocksdb::ManagedSnapshot snap{impl_->db.get()};
  // An agent that is gone (deleted meanwhile) or a read that failed is an
  // error; a record that does not decode is a finding.
  auto unreadable = [](const error& e) {
    return e.code() == errc::not_found || e.code() == errc::storage_failure;
  };
  auto meta = agent_at(*impl_, id, snap.snapshot());
  if (!meta && unreadable(meta.error_value()))
    return meta.error_value();
  auto ident = meta ? identity_at(*impl_, id, snap.snapshot()) : std::optional<identity_record>{};
  if (!ident && unreadable(ident.error_value()))
    return ident.error_value();
  if (!meta || !ident || !*ident) {
    chain_walk walk{id, {}};
    walk.fail(0, !meta    ? meta.error_value().to_string()
                 : !ident ? ident.error_value().to_string()
                          : "agent '" + std::string{id} + "' has no identity record to verify signatures");
    return walk.rep;
  }
  chain_walk walk{id, signers_of(**ident)};
  auto prefix = keys::prefix(id);
  error read_failed;
  impl_->scan(
    cf_trajectory, prefix, prefix,
    [&](auto k, auto stored) { return walk.next(keys::get_be64(k.substr(prefix.size())), stored); },
    snap.snapshot(), &read_failed);
  if (read_failed)
    return read_failed;
  walk.finish(*meta);
  return walk.rep;
}

// -- goals, memory, alarms ----------------------------------------------------

std::optional<std::string> store::get_goal(std::string_view id, std::string_view key) const {
  return impl_->get(cf_goals, keys::goal(id, key));
}

std::vector<std::pair<std::string, std::string>> store::list_goals(std::string_view id) const {
  std::vector<std::pair<std::string, std::string>> out;
  auto prefix = keys::prefix(id);
  impl_->scan(cf_goals, prefix, prefix, [&](auto k, auto v) {
    out.emplace_back(std::string{k.substr(prefix.size())}, std::string{v});
    return true;
  });
  return out;
}

std::optional<std::string> store::get_memory(std::string_view id, std::string_view space,
                                             std::string_view key) const {
  return impl_->get(cf_memory, keys::memory(id, space, key));
}

std::vector<std::pair<std::string, std::string>> store::list_memory(std::string_view id,
                                                                     std::string_view space) const {
  std::vector<std::pair<std::string, std::string>> out;
  auto prefix = keys::memory(id, space, {});
  impl_->scan(cf_memory, prefix, prefix, [&](auto k, auto v) {
    out.emplace_back(std::string{k.substr(prefix.size())}, std::string{v});
    return true;
  });
  return out;
}

std::vector<alarm_record> store::list_alarms(std::string_view id) const {
  std::vector<alarm_record> out;
  auto guard = impl_->lock();
  if (!impl_->db)
    return out;
  // One snapshot for the index and the records it points to: a firing or a
  // tick committing in between moves both.
  rocksdb::ManagedSnapshot snap{impl_->db.get()};
  rocksdb::ReadOptions ro = impl_->read_options;
  ro.snapshot = snap.snapshot();
  auto prefix = keys::alarm_index_prefix(id);
  auto it = impl_->new_iterator(ro, cf_alarms);
  for (it->Seek(prefix); it->Valid() && starts_with(it->key(), prefix); it->Next()) {
    auto name = view(it->key()).substr(prefix.size());
    std::string rec;
    auto due = keys::alarm_due(keys::unbias(keys::get_be64(view(it->value()))), id, name);
    if (impl_->get_into(ro, cf_alarms, due, &rec).ok())
      if (auto a = decode_alarm(rec))
        out.push_back(std::move(*a));
  }
  return out;
}

std::optional<time_point> store::next_alarm_due() const {
  auto it = impl_->iter(cf_alarms);
  it->Seek(impl_->alarm_floor());
  if (!it->Valid() || !starts_with(it->key(), "d") || it->key().size() < 9)
    return std::nullopt;
  return keys::unbias(keys::get_be64(view(it->key()).substr(1)));
}

// -- bundles ------------------------------------------------------------------

std::vector<std::string> agent_setting_names(std::string_view id) {
  return {agent_policy_setting(id, "compute"), agent_policy_setting(id, "containers"),
          agent_policy_setting(id, "http"), agent_limits_setting(id)};
}

expected<std::string> store::export_agent(std::string_view id,
                                          const std::optional<std::string>& secret) const {
  auto guard = impl_->lock();
  if (!impl_->db)
    return impl_->closed();
  if (!agent_exists(id))
    return error{errc::not_found, "no agent '" + std::string{id} + "'"};
  // One snapshot, so the bundle is a consistent cut even while ticks commit.
  const rocksdb::Snapshot* snap = impl_->db->GetSnapshot();
  rocksdb::ReadOptions ro = impl_->read_options;
  ro.snapshot = snap;
  bundle b;
  b.agent = std::string{id};
  auto add_prefix = [&](cf_id c, const std::string& prefix) {
    auto it = impl_->new_iterator(ro, c);
    for (it->Seek(prefix); it->Valid() && starts_with(it->key(), prefix); it->Next())
      b.entries.push_back({cf_names[c], it->key().ToString(), it->value().ToString()});
  };
  auto add_key = [&](cf_id c, const std::string& key) {
    std::string v;
    if (impl_->get_into(ro, c, key, &v).ok())
      b.entries.push_back({cf_names[c], key, std::move(v)});
  };
  add_key(cf_agents, std::string{id});
  add_key(cf_state, std::string{id});
  for (auto c : {cf_inbox, cf_outbox, cf_trajectory, cf_memory, cf_goals, cf_deadletter, cf_ledger})
    add_prefix(c, keys::prefix(id));
  {
    // Public keys only: sealed secrets are useless on another node, and
    // secrets leave only on explicit request (in the clear, for re-sealing).
    std::string v;
    if (impl_->get_into(ro, cf_identity, keys::prefix(id), &v).ok()) {
      if (auto rec = decode_identity(v)) {
        rec->sealed.clear();
        rec->master_key_id.clear();
        v = encode(*rec);
      }
      b.entries.push_back({cf_names[cf_identity], keys::prefix(id), std::move(v)});
    }
    if (secret)
      b.entries.push_back({"identity-secret", keys::prefix(id), *secret});
  }
  {
    auto index_prefix = keys::alarm_index_prefix(id);
    auto it = impl_->new_iterator(ro, cf_alarms);
    for (it->Seek(index_prefix); it->Valid() && starts_with(it->key(), index_prefix); it->Next()) {
      auto name = view(it->key()).substr(index_prefix.size());
      b.entries.push_back({cf_names[cf_alarms], it->key().ToString(), it->value().ToString()});
      add_key(cf_alarms, keys::alarm_due(keys::unbias(keys::get_be64(view(it->value()))), id, name));
    }
  }
  add_key(cf_meta, keys::counters(id));
  add_key(cf_meta, keys::errored(id));
  add_prefix(cf_meta, keys::idempotency_prefix(id));
  for (auto& name : agent_setting_names(id))  // its policies and limits move with it
    add_key(cf_meta, keys::setting(name));
  impl_->db->ReleaseSnapshot(snap);
  return encode_bundle(b);
}

// -- maintenance --------------------------------------------------------------

error store::compact() {
  auto guard = impl_->lock();
  if (!impl_->db)
    return impl_->closed();
  rocksdb::FlushOptions fo;
  for (auto* h : impl_->handles) {
    auto st = impl_->db->Flush(fo, h);
    if (!st.ok())
      return from_status(st, "flush");
    st = impl_->db->CompactRange(rocksdb::CompactRangeOptions{}, h, nullptr, nullptr);
    if (!st.ok())
      return from_status(st, "compact");
  }
  return {};
}

std::uint64_t store::disk_bytes() const {
  auto guard = impl_->lock();
  std::uint64_t total = 0;
  if (!impl_->db)
    return total;
  for (auto* h : impl_->handles) {
    std::uint64_t v = 0;
    if (impl_->db->GetIntProperty(h, "rocksdb.live-sst-files-size", &v))
      total += v;
  }
  std::error_code ec;
  for (auto& f : std::filesystem::directory_iterator(impl_->options.dir, ec))
    if (f.path().extension() == ".log")
      total += f.file_size(ec);
  return total;
}

error store::raw_put(std::string_view column, std::string_view key, std::string_view value) {
  auto guard = impl_->lock();
  if (!impl_->db)
    return impl_->closed();
  for (std::size_t i = 0; i < cf_count; ++i)
    if (column == cf_names[i]) {
      if (i == cf_alarms && !key.empty() && key.front() == 'd') {
        std::lock_guard<std::mutex> g{impl_->alarm_floor_mtx};
        impl_->alarm_floor_ = std::min(impl_->alarm_floor_, std::string{key});
      }
      [[maybe_unused]] auto g = impl_->order.writing();
      auto st = impl_->db->Put(impl_->write_options, impl_->handles[i],
                               rocksdb::Slice{key.data(), key.size()},
                               rocksdb::Slice{value.data(), value.size()});
      return st.ok() ? error{} : from_status(st, "raw put");
    }
  return error{errc::invalid_argument, "no column family '" + std::string{column} + "'"};
}

std::optional<std::string> store::raw_get(std::string_view column, std::string_view key) const {
  for (std::size_t i = 0; i < cf_count; ++i)
    if (column == cf_names[i])
      return impl_->get(static_cast<cf_id>(i), key);
  return std::nullopt;
}

namespace keys {
std::string agent(std::string_view id) { return std::string{id}; }
std::string seq_key(std::string_view id, std::uint64_t seq) {
  return storage::keys::seq(id, seq);
}
}  // namespace keys

}  // namespace ticktock::storage
