#include "bench_util.hpp"

#include <malloc.h>
#include <unistd.h>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace ticktock::bench {

summary summarize(std::vector<double> values) {
  if (values.empty())
    throw bench_error{"summarize: no values"};
  std::sort(values.begin(), values.end());
  auto n = values.size();
  summary s;
  s.median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  s.min = values.front();
  s.max = values.back();
  return s;
}

double percentile(std::vector<double> values, double q) {
  if (values.empty())
    throw bench_error{"percentile: no values"};
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

std::uint64_t rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident))
    throw bench_error{"cannot read /proc/self/statm"};
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

std::uint64_t trimmed_rss_bytes() {
  malloc_trim(0);
  return rss_bytes();
}

std::optional<write_counters> foreground_writes() {
  std::error_code ec;
  write_counters total;
  bool any = false;
  for (auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::string comm;
    {
      std::ifstream in{task.path() / "comm"};
      std::getline(in, comm);
    }
    if (comm.rfind("rocksdb:", 0) == 0)
      continue;
    std::ifstream io{task.path() / "io"};
    std::string key;
    std::uint64_t value = 0;
    while (io >> key >> value)
      if (key == "syscw:") {
        total.calls += value;
        any = true;
      } else if (key == "wchar:") {
        total.bytes += value;
      }
  }
  if (ec || !any)
    return std::nullopt;
  return total;
}

temp_dir::temp_dir(const std::filesystem::path& parent) {
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  auto tmpl = (parent / "ticktock-bench-XXXXXX").string();
  if (!mkdtemp(tmpl.data()))
    throw bench_error{"cannot create a directory under " + parent.string()};
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                const std::string& what) {
  auto deadline = steady::now() + timeout;
  while (!done()) {
    if (steady::now() >= deadline)
      throw bench_error{what + ": timed out after " + std::to_string(timeout.count()) + " ms"};
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

raw_db::raw_db(const std::filesystem::path& dir, const std::vector<std::string>& column_families,
               bool sync)
  : dir_(dir), sync_(sync) {
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  db_opts.db_write_buffer_size = std::size_t{64} << 20;
  db_opts.max_background_jobs = 2;
  db_opts.keep_log_file_num = 4;
  db_opts.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  auto cache = rocksdb::NewLRUCache(std::size_t{64} << 20);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  std::vector<std::string> names{"default"};
  names.insert(names.end(), column_families.begin(), column_families.end());
  for (auto& name : names) {
    rocksdb::ColumnFamilyOptions cf_opts;
    cf_opts.write_buffer_size = (std::size_t{64} << 20) / 4;
    cf_opts.compression = rocksdb::kLZ4Compression;
    cf_opts.bottommost_compression = rocksdb::kZSTD;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    cf_opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    cfs.emplace_back(name, cf_opts);
  }
  rocksdb::DB* db = nullptr;
  auto st = rocksdb::DB::Open(db_opts, dir.string(), cfs, &handles_, &db);
  if (!st.ok())
    throw bench_error{"raw RocksDB open: " + st.ToString()};
  db_.reset(db);
}

raw_db::~raw_db() {
  for (auto* h : handles_)
    db_->DestroyColumnFamilyHandle(h);
  db_->Close();
}

void raw_db::compact() {
  for (auto* h : handles_) {
    auto st = db_->Flush(rocksdb::FlushOptions{}, h);
    if (st.ok())
      st = db_->CompactRange(rocksdb::CompactRangeOptions{}, h, nullptr, nullptr);
    if (!st.ok())
      throw bench_error{"raw RocksDB compact: " + st.ToString()};
  }
}

std::uint64_t raw_db::disk_bytes() const {
  std::uint64_t total = 0;
  for (auto* h : handles_) {
    std::uint64_t v = 0;
    if (db_->GetIntProperty(h, "rocksdb.live-sst-files-size", &v))
      total += v;
  }
  std::error_code ec;
  for (auto& f : std::filesystem::directory_iterator(dir_, ec))
    if (f.path().extension() == ".log")
      total += f.file_size(ec);
  return total;
}

std::string agent_name(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "a%06zu", i);
  return buf;
}

}  // namespace ticktock::bench
