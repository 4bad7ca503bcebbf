#pragma once

// The file system the store opens RocksDB on: the default one, wrapped so
// that (1) a fault_injector, when set, can fail appends and syncs, and (2)
// the store knows which WAL files hold writes that failed. A write whose WAL
// append or sync failed was reported as failed, yet its bytes may sit in the
// WAL (an fsync that fails after write() succeeded); reopening the database
// would replay it and commit what the caller was told had not committed.
// take_torn_wals() names those files and the length of their acknowledged
// part, so the store cuts them back before it reopens.

#include <rocksdb/file_system.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ticktock/storage/faults.hpp"

namespace ticktock::storage::detail {

class guarded_fs final : public rocksdb::FileSystemWrapper {
public:
  /// `sync_commits`: every commit syncs the WAL (durability::sync), so only
  /// synced bytes count as acknowledged; otherwise every appended byte does.
  guarded_fs(const std::shared_ptr<rocksdb::FileSystem>& base,
             std::shared_ptr<fault_injector> faults, bool sync_commits);

  const char* Name() const override { return "ticktock.guarded_fs"; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* out,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* out,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& name, const std::string& old_name,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* out,
                                      rocksdb::IODebugContext* dbg) override;

  /// WAL files with a failed append or sync, each with the length of its
  /// acknowledged part; forgets them.
  std::vector<std::pair<std::string, std::uint64_t>> take_torn_wals();

  /// Writes and syncs a small file in `dir`, then deletes it: whether the
  /// disk takes writes again (injected faults apply to it too).
  rocksdb::IOStatus probe(const std::string& dir);

  // -- called by the files ----------------------------------------------------

  fault_injector* faults() const noexcept { return faults_.get(); }
  bool sync_commits() const noexcept { return sync_commits_; }
  /// Remembers that `name` failed; the first good length reported wins.
  void torn(const std::string& name, std::uint64_t good);

private:
  rocksdb::IOStatus wrap(const std::string& name, rocksdb::IOStatus st,
                         std::unique_ptr<rocksdb::FSWritableFile>* out);

  std::shared_ptr<fault_injector> faults_;
  bool sync_commits_;
  std::mutex mtx_;
  std::unordered_map<std::string, std::uint64_t> torn_;
};

}  // namespace ticktock::storage::detail
