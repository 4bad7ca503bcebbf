#pragma once

// Checks of JSON text that Boost.JSON's DOM parser does not make, and the
// paths ("limits.ticks_per_minute", "rules[2].match") that name a place in
// it in error messages.

#include <cstddef>
#include <string>
#include <string_view>

namespace ticktock::detail {

/// The path of member `key` under `path`: `path.key`, or `path["odd key"]`
/// when the key is not a plain identifier.
std::string member_path(const std::string& path, std::string_view key);
/// The path of element `i` under `path`: `path[i]`.
std::string index_path(const std::string& path, std::size_t i);
/// `s` as a JSON string, cut after 64 bytes ("..."): safe to put into a
/// message.
std::string quoted(std::string_view s);

struct json_scan {
  /// The path of the first key an object names twice; empty if none.
  /// boost::json::parse keeps the last of such keys silently, which would
  /// hide half of `{"action":"http","action":"compute"}`.
  std::string duplicate;
  /// Why the text is not JSON ("syntax error at byte 7"); empty if it is.
  std::string error;
};

/// Scans JSON text without building it: stops at the first duplicate key or
/// at the first byte that is not JSON.
json_scan scan_json(std::string_view text);

}  // namespace ticktock::detail
