#pragma once

// RocksDB's own log (DATA/LOG), written by ticktock rather than through
// RocksDB's file writer. That writer, once a write has failed (a full disk),
// asserts on the next one in builds with assertions, as Debian's librocksdb
// is: RocksDB's no-space recovery logs "cleared the error" through it and the
// process aborted. Here a failed write costs that line and nothing else.

#include <rocksdb/env.h>

#include <cstdarg>
#include <cstdint>
#include <filesystem>
#include <mutex>

namespace ticktock::storage::detail {

class info_log final : public rocksdb::Logger {
public:
  /// Appends to `path`; past `max_bytes` it is renamed to `path`.old and
  /// started again. Logs `level` and above.
  info_log(std::filesystem::path path, std::uint64_t max_bytes, rocksdb::InfoLogLevel level);
  ~info_log() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  size_t GetLogFileSize() const override;

private:
  void open_locked();

  mutable std::mutex mtx_;
  std::filesystem::path path_;
  std::uint64_t max_bytes_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace ticktock::storage::detail
