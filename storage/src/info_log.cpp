#include "info_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace ticktock::storage::detail {

info_log::info_log(std::filesystem::path path, std::uint64_t max_bytes, rocksdb::InfoLogLevel level)
  : rocksdb::Logger(level), path_(std::move(path)), max_bytes_(max_bytes) {
  std::lock_guard<std::mutex> guard{mtx_};
  open_locked();
}

info_log::~info_log() {
  if (fd_ >= 0)
    ::close(fd_);
}

void info_log::open_locked() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  struct stat st {};
  size_ = fd_ >= 0 && ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

void info_log::Logv(const char* format, va_list ap) {
  // "2026/12/05-20:30:00.123456 " as RocksDB's own lines start.
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char stamp[96];  // room for any int in each field, as the compiler counts
  std::snprintf(stamp, sizeof stamp, "%04d/%02d/%02d-%02d:%02d:%02d.%06lld ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(us % 1'000'000));
  std::string line = stamp;
  va_list copy;
  va_copy(copy, ap);
  auto n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n > 0) {
    auto at = line.size();
    line.resize(at + static_cast<std::size_t>(n) + 1);
    std::vsnprintf(line.data() + at, static_cast<std::size_t>(n) + 1, format, ap);
    line.resize(at + static_cast<std::size_t>(n));
  }
  if (line.back() != '\n')
    line += '\n';

  std::lock_guard<std::mutex> guard{mtx_};
  if (fd_ >= 0 && size_ + line.size() > max_bytes_) {
    ::close(fd_);
    std::error_code ec;
    auto old = path_;
    old += ".old";
    std::filesystem::rename(path_, old, ec);
    open_locked();
  }
  if (fd_ < 0)
    open_locked();  // a log that could not be opened is tried again, line by line
  if (fd_ < 0)
    return;
  // One write per line (O_APPEND); a short or failed one is dropped.
  auto w = ::write(fd_, line.data(), line.size());
  if (w > 0)
    size_ += static_cast<std::uint64_t>(w);
}

size_t info_log::GetLogFileSize() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return static_cast<size_t>(size_);
}

}  // namespace ticktock::storage::detail
