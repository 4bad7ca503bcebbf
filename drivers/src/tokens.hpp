#pragma once

// Agent-scoped capability tokens, signed with the node's Ed25519 key:
//   "tt1." base64url(claims JSON) "." base64url(signature over the claims)
// claims: {"agent":"<id>","scopes":["read",...],"exp":<unix seconds>}

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "ticktock/runtime/error.hpp"

namespace ticktock::drivers {

/// Scopes an agent token can carry.
inline const std::set<std::string, std::less<>> known_scopes = {
  "read", "write:inbox", "write:ctl", "write:goals", "write:deadletter", "http", "ws", "identity",
  "compute", "containers", "fetch"};

struct token_claims {
  std::string agent;
  std::set<std::string, std::less<>> scopes;
  std::int64_t exp = 0;  ///< unix seconds
};

class token_authority {
public:
  /// `secret_key` is a libsodium Ed25519 secret key (64 bytes); empty makes
  /// a fresh one (tokens then die with the process).
  explicit token_authority(std::string secret_key);

  std::string issue(const token_claims& claims) const;
  /// Checks format, signature and expiry (against `now_unix`).
  expected<token_claims> verify(std::string_view token, std::int64_t now_unix) const;

private:
  std::array<unsigned char, 64> sk_{};
  std::array<unsigned char, 32> pk_{};
};

}  // namespace ticktock::drivers
