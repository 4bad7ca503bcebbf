#pragma once

// The fixed secrets of the fuzz node, so seed inputs can carry valid tokens.

#include <sodium.h>

#include <cstdint>
#include <string>

namespace ticktock::fuzz {

inline constexpr const char* admin_token = "fuzz-admin-token";
/// Expiry of the seed tokens: 2100-01-01.
inline constexpr std::int64_t token_exp = 4102444800;

/// The node's Ed25519 secret key, from a fixed seed.
inline std::string node_key() {
  unsigned char seed[crypto_sign_SEEDBYTES];
  for (std::size_t i = 0; i < sizeof seed; ++i)
    seed[i] = static_cast<unsigned char>(i * 7 + 1);
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_seed_keypair(pk, sk, seed);
  return std::string(reinterpret_cast<const char*>(sk), sizeof sk);
}

}  // namespace ticktock::fuzz
