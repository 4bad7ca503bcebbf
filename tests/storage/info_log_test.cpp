// RocksDB's log as ticktock writes it: a failed write costs its line, never
// the process (Debian's librocksdb asserted on a log write after a full disk).

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include "../temp_dir.hpp"
#include "info_log.hpp"

using ticktock::storage::detail::info_log;
namespace test = ticktock::test;

namespace {
std::string read_all(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("the info log writes lines at its level and above, and starts again past its size") {
  test::temp_dir dir;
  auto path = dir.path() / "LOG";
  info_log log{path, 200, rocksdb::InfoLogLevel::WARN_LEVEL};
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, &log, "not %s", "kept");
  rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, &log, "disk %s at %d", "full", 7);
  auto text = read_all(path);
  CHECK(text.find("disk full at 7\n") != std::string::npos);
  CHECK(text.find("not kept") == std::string::npos);
  CHECK(log.GetLogFileSize() == text.size());
  for (int i = 0; i < 10; ++i)
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, &log, "line %d of some length to fill it", i);
  CHECK(std::filesystem::exists(dir.path() / "LOG.old"));
  CHECK(std::filesystem::file_size(path) <= 200);
  CHECK(read_all(path).find("line 9 of") != std::string::npos);
}

TEST_CASE("an info log whose writes fail drops its lines and goes on") {
  // /dev/full fails every write with ENOSPC, as a full disk does.
  info_log full{"/dev/full", 1 << 20, rocksdb::InfoLogLevel::WARN_LEVEL};
  for (int i = 0; i < 100; ++i)
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, &full, "no space %d", i);
  CHECK(full.GetLogFileSize() == 0);
  // A directory that is not there: nothing opens, nothing is written.
  test::temp_dir dir;
  info_log nowhere{dir.path() / "gone" / "LOG", 1 << 20, rocksdb::InfoLogLevel::WARN_LEVEL};
  rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, &nowhere, "lost");
  CHECK(nowhere.GetLogFileSize() == 0);
}
