#pragma once

// Agent identity: every agent owns an Ed25519 keypair (signing, and through
// its X25519 form, encryption) and a secp256k1 keypair for BIP-340 Schnorr
// (Nostr). Secret keys are sealed at rest with the node's master key and
// never leave the process. See docs/identity.md.

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "ticktock/runtime/error.hpp"

namespace ticktock::identity {

using public_key = std::array<std::uint8_t, 32>;  ///< Ed25519
using nostr_key = std::array<std::uint8_t, 32>;   ///< BIP-340 x-only secp256k1
using signature = std::array<std::uint8_t, 64>;   ///< Ed25519

/// An agent's public keys.
struct public_keys {
  public_key ed25519{};
  nostr_key nostr{};
};

/// An agent's keys, secret halves included. Wiped on destruction.
struct agent_keys {
  public_keys pub;
  std::array<std::uint8_t, 64> ed25519_secret{};  ///< libsodium's seed || public key
  std::array<std::uint8_t, 32> nostr_secret{};

  agent_keys() = default;
  agent_keys(const agent_keys&) = default;
  agent_keys& operator=(const agent_keys&) = default;
  ~agent_keys();

  /// Fresh random keys.
  static agent_keys generate();
  /// Keys derived from `seed` alone (the same seed, the same keys): for
  /// tests that want the same signatures on every run.
  static agent_keys from_seed(std::span<const std::uint8_t, 32> seed);
  /// The 96 secret bytes (Ed25519 secret || secp256k1 secret), for sealing.
  std::string secret_bytes() const;
  /// Rebuilds the keys from secret_bytes(); invalid_argument if malformed.
  static expected<agent_keys> from_secret_bytes(std::string_view bytes);
};

/// Initializes libsodium once (thread-safe); every function here calls it.
void init();

/// Ed25519 signature of `message`.
signature sign(const agent_keys& keys, std::string_view message);
/// True for bytes in ticktock's own signing domain (they start with
/// "ticktock/", as envelope_signing_bytes and trajectory_signing_bytes do):
/// signing them on request would forge envelopes and trajectory records.
bool reserved_signing_domain(std::string_view message);
/// True if `sig` is `key`'s signature of `message`.
bool verify(const public_key& key, std::string_view message, std::span<const std::uint8_t> sig);

/// Encrypts `plaintext` so that only the holder of `recipient`'s secret key
/// can read it (libsodium sealed box to the X25519 form of the Ed25519 key).
expected<std::string> encrypt_to(const public_key& recipient, std::string_view plaintext);
/// Opens what encrypt_to sealed for `keys`. invalid_argument if it was not
/// sealed for these keys or was altered.
expected<std::string> decrypt(const agent_keys& keys, std::string_view ciphertext);

/// Lower-case hex, and its inverse (invalid_argument on bad input).
std::string to_hex(std::span<const std::uint8_t> bytes);
expected<std::string> from_hex(std::string_view hex);
/// Parses a 64-hex-digit key.
expected<public_key> key_from_hex(std::string_view hex);
/// Standard base64 with padding, and its inverse.
std::string to_base64(std::string_view bytes);
expected<std::string> from_base64(std::string_view text);

/// The node master key: seals agents' secret keys at rest (XSalsa20-Poly1305,
/// libsodium secretbox). Its id (the first 8 bytes of its BLAKE2b hash) is
/// stored next to every sealed record so a wrong key is named, not guessed.
class master_key {
public:
  /// A fresh random key.
  static master_key generate();
  /// Reads the 32-byte key file at `path`, creating it (mode 0600) when it
  /// is missing and `create` is true. invalid_argument for a file of the
  /// wrong size; storage_failure when it cannot be read or written.
  static expected<master_key> load(const std::filesystem::path& path, bool create);
  /// Writes the key to `path` with mode 0600 (fails if the file exists).
  error save(const std::filesystem::path& path) const;

  /// nonce || secretbox(plaintext).
  std::string seal(std::string_view plaintext) const;
  /// Opens what seal() produced. invalid_argument if altered or sealed with
  /// another key.
  expected<std::string> open(std::string_view sealed) const;

  /// The key's id, 16 hex digits.
  const std::string& id() const noexcept { return id_; }

  master_key(const master_key&) = default;
  master_key& operator=(const master_key&) = default;
  ~master_key();

private:
  master_key() = default;
  void derive_id();
  std::array<std::uint8_t, 32> key_{};
  std::string id_;
};

// -- what is signed ---------------------------------------------------------

/// The bytes an agent-to-agent envelope signature covers: a domain tag, the
/// envelope id, sender, recipient, time, the encryption flag and the payload
/// as stored (ciphertext when encrypted).
std::string envelope_signing_bytes(std::string_view envelope_id, std::string_view from,
                                   std::string_view to, std::int64_t time_us, bool encrypted,
                                   std::string_view payload);

/// The bytes a trajectory record signature covers: a domain tag, the agent id
/// and the record's stored bytes.
std::string trajectory_signing_bytes(std::string_view agent, std::string_view record_bytes);

}  // namespace ticktock::identity
