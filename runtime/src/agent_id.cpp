#include "ticktock/runtime/agent_id.hpp"

#include <string>

namespace ticktock {

namespace {

bool is_lower_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

bool is_valid_agent_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > max_agent_id_length || !is_lower_alnum(id.front()))
    return false;
  for (char c : id.substr(1))
    if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
      return false;
  return true;
}

error check_agent_id(std::string_view id) {
  if (is_valid_agent_id(id))
    return {};
  std::string shown{id.substr(0, 64)};
  for (auto& c : shown)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
      c = '?';
  return error{errc::invalid_id,
               "agent id '" + shown + (id.size() > 64 ? "...'" : "'")
                 + " is invalid: ids match [a-z0-9][a-z0-9._-]{0,127}"};
}

}  // namespace ticktock
