#pragma once

// The request ids ticktock takes from a caller (X-Request-Id). Header-only,
// so that the ticktock CLI, which links none of the runtime, checks the same
// rule as the server.

#include <algorithm>
#include <string_view>

namespace ticktock {

/// 1 to 128 letters, digits and - _ . : / + = @: nothing a log line or a
/// header would need quoted.
inline bool valid_request_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || std::string_view{"-_.:/+=@"}.find(c) != std::string_view::npos;
  });
}

}  // namespace ticktock
