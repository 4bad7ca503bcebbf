#include "guarded_fs.hpp"

#include <sys/stat.h>

#include <string_view>

namespace ticktock::storage::detail {

namespace {

bool is_wal(std::string_view name) {
  return name.size() > 4 && name.substr(name.size() - 4) == ".log";
}

rocksdb::IOStatus injected(fault f) {
  switch (f) {
    case fault::disk_full: return rocksdb::IOStatus::NoSpace("injected disk full (fault_injector)");
    case fault::sync: return rocksdb::IOStatus::IOError("injected fsync failure (fault_injector)");
    case fault::write: return rocksdb::IOStatus::IOError("injected write failure (fault_injector)");
    case fault::none: break;
  }
  return rocksdb::IOStatus::OK();
}

// One file RocksDB writes. Counts the bytes appended and the acknowledged
// boundary (see guarded_fs), and asks the injector before each append and sync.
class guarded_file final : public rocksdb::FSWritableFileOwnerWrapper {
public:
  guarded_file(std::unique_ptr<rocksdb::FSWritableFile> f, guarded_fs& fs, std::string name,
               std::uint64_t size)
    : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs), name_(std::move(name)),
      wal_(is_wal(name_)), appended_(size), good_(size) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& opts,
                           rocksdb::IODebugContext* dbg) override {
    if (auto st = before_append(); !st.ok())
      return st;
    return after_append(data.size(), FSWritableFileOwnerWrapper::Append(data, opts, dbg));
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& opts,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (auto st = before_append(); !st.ok())
      return st;
    return after_append(data.size(), FSWritableFileOwnerWrapper::Append(data, opts, info, dbg));
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                     const rocksdb::IOOptions& opts,
                                     rocksdb::IODebugContext* dbg) override {
    if (auto st = before_append(); !st.ok())
      return st;
    return after_append(data.size(),
                        FSWritableFileOwnerWrapper::PositionedAppend(data, offset, opts, dbg));
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                     const rocksdb::IOOptions& opts,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    if (auto st = before_append(); !st.ok())
      return st;
    return after_append(
      data.size(), FSWritableFileOwnerWrapper::PositionedAppend(data, offset, opts, info, dbg));
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    if (auto st = before_sync(); !st.ok())
      return st;
    return after_sync(FSWritableFileOwnerWrapper::Sync(opts, dbg));
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    if (auto st = before_sync(); !st.ok())
      return st;
    return after_sync(FSWritableFileOwnerWrapper::Fsync(opts, dbg));
  }

private:
  rocksdb::IOStatus before_append() {
    if (auto* f = fs_.faults(); f)
      if (auto k = f->on_append(); k != fault::none)
        return failed(injected(k));
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus after_append(std::size_t n, rocksdb::IOStatus st) {
    if (!st.ok())
      return failed(std::move(st));
    appended_ += n;
    if (!fs_.sync_commits())
      good_ = appended_;
    return st;
  }
  rocksdb::IOStatus before_sync() {
    if (auto* f = fs_.faults(); f)
      if (auto k = f->on_sync(); k != fault::none)
        return failed(injected(k));
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus after_sync(rocksdb::IOStatus st) {
    if (!st.ok())
      return failed(std::move(st));
    good_ = appended_;
    return st;
  }
  rocksdb::IOStatus failed(rocksdb::IOStatus st) {
    if (wal_)
      fs_.torn(name_, good_);
    return st;
  }

  guarded_fs& fs_;
  std::string name_;
  bool wal_;
  std::uint64_t appended_;  // bytes appended successfully
  std::uint64_t good_;      // bytes whose writes may have been acknowledged
};

}  // namespace

guarded_fs::guarded_fs(const std::shared_ptr<rocksdb::FileSystem>& base,
                       std::shared_ptr<fault_injector> faults, bool sync_commits)
  : FileSystemWrapper(base), faults_(std::move(faults)), sync_commits_(sync_commits) {}

rocksdb::IOStatus guarded_fs::wrap(const std::string& name, rocksdb::IOStatus st,
                                   std::unique_ptr<rocksdb::FSWritableFile>* out) {
  if (!st.ok())
    return st;
  // The store's files are its own (agents' messages and state): RocksDB
  // creates them 0644, readable by every user of the machine, a container
  // session's uid included.
  (void)::chmod(name.c_str(), 0600);
  auto size = (*out)->GetFileSize(rocksdb::IOOptions{}, nullptr);
  *out = std::make_unique<guarded_file>(std::move(*out), *this, name, size);
  return st;
}

rocksdb::IOStatus guarded_fs::NewWritableFile(const std::string& name,
                                              const rocksdb::FileOptions& opts,
                                              std::unique_ptr<rocksdb::FSWritableFile>* out,
                                              rocksdb::IODebugContext* dbg) {
  return wrap(name, target()->NewWritableFile(name, opts, out, dbg), out);
}

rocksdb::IOStatus guarded_fs::ReopenWritableFile(const std::string& name,
                                                 const rocksdb::FileOptions& opts,
                                                 std::unique_ptr<rocksdb::FSWritableFile>* out,
                                                 rocksdb::IODebugContext* dbg) {
  return wrap(name, target()->ReopenWritableFile(name, opts, out, dbg), out);
}

rocksdb::IOStatus guarded_fs::ReuseWritableFile(const std::string& name,
                                                const std::string& old_name,
                                                const rocksdb::FileOptions& opts,
                                                std::unique_ptr<rocksdb::FSWritableFile>* out,
                                                rocksdb::IODebugContext* dbg) {
  // A recycled file's old bytes are not ours: count from zero.
  auto st = target()->ReuseWritableFile(name, old_name, opts, out, dbg);
  if (st.ok()) {
    (void)::chmod(name.c_str(), 0600);
    *out = std::make_unique<guarded_file>(std::move(*out), *this, name, 0);
  }
  return st;
}

void guarded_fs::torn(const std::string& name, std::uint64_t good) {
  std::lock_guard<std::mutex> guard{mtx_};
  torn_.emplace(name, good);
}

std::vector<std::pair<std::string, std::uint64_t>> guarded_fs::take_torn_wals() {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::pair<std::string, std::uint64_t>> out(torn_.begin(), torn_.end());
  torn_.clear();
  return out;
}

rocksdb::IOStatus guarded_fs::probe(const std::string& dir) {
  auto path = dir + "/RECOVERY-PROBE";
  rocksdb::IOOptions io;
  std::unique_ptr<rocksdb::FSWritableFile> f;
  auto st = NewWritableFile(path, rocksdb::FileOptions{}, &f, nullptr);
  if (st.ok()) {
    std::string block(4096, '\0');
    st = f->Append(block, io, nullptr);
    if (st.ok())
      st = f->Sync(io, nullptr);
    auto closed = f->Close(io, nullptr);
    if (st.ok())
      st = closed;
  }
  target()->DeleteFile(path, io, nullptr);
  return st;
}

}  // namespace ticktock::storage::detail
