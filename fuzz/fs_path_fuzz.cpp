// Fuzzes the agent filesystem path parser (/v1/agents/{id}/fs/{path}) and
// the percent-decoder under it. Checks what the router relies on: accepted
// segments are non-empty, never "." or "..", hold no '/' or NUL; and
// percent-encoding the segments back gives a path that parses to the same.

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fs_path.hpp"
#include "router.hpp"

using ticktock::drivers::router;
using ticktock::drivers::split_fs_path;

namespace {

[[noreturn]] void fail(const char* what, std::string_view in) {
  std::fprintf(stderr, "fs_path: %s (input of %zu bytes)\n", what, in.size());
  std::abort();
}

std::string encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};

  auto dec = router::url_decode(in);
  if (dec && dec->size() > in.size())
    fail("url_decode grew its input", in);

  auto parts = split_fs_path(in);
  if (!parts)
    return 0;
  std::string again;
  for (auto& p : *parts) {
    if (p.empty() || p == "." || p == ".." || p.find('/') != std::string::npos
        || p.find('\0') != std::string::npos)
      fail("accepted a bad segment", in);
    again += "/" + encode(p);
  }
  auto reparsed = split_fs_path(again);
  if (!reparsed || *reparsed != *parts)
    fail("encoded segments do not parse back to themselves", in);
  return 0;
}
