#pragma once

#include <string_view>

#include "ticktock/runtime/error.hpp"

namespace ticktock {

/// Longest valid agent id, in bytes.
inline constexpr std::size_t max_agent_id_length = 128;

/// True when `id` matches [a-z0-9][a-z0-9._-]{0,127}.
bool is_valid_agent_id(std::string_view id) noexcept;

/// Returns an `invalid_id` error naming the rule when `id` is invalid, else no
/// error.
error check_agent_id(std::string_view id);

}  // namespace ticktock
