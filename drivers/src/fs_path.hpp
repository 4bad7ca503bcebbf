#pragma once

// The agent filesystem path parser of the router (internal; fuzzed by
// fuzz/fs_path_fuzz.cpp).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ticktock::drivers {

/// Splits the part of /v1/agents/{id}/fs/{path} after "fs" into its
/// percent-decoded segments ("" and "/" give none). nullopt when a segment
/// is empty, "." or "..", a bad escape, or decodes to one holding '/' or NUL
/// or to bytes that are not valid UTF-8.
std::optional<std::vector<std::string>> split_fs_path(std::string_view path);

}  // namespace ticktock::drivers
