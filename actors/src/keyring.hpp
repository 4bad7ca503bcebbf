#pragma once

// Agents' keys on a node: sealing new keys with the master key, unsealing
// them for an agent's host, a cache of public keys, and the signing and
// checking of agent-to-agent envelopes. See docs/identity.md.

#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ticktock/runtime/identity.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

class keyring {
public:
  keyring(storage::store& store, identity::master_key key)
    : store_(store), master_(std::move(key)) {}

  /// The identity record of `keys`, secrets sealed with the master key.
  storage::identity_record seal(const identity::agent_keys& keys, time_point created,
                                std::vector<identity::public_key> retired = {}) const;

  /// The agent's keys, unsealed. not_found if it has no identity record,
  /// invalid_argument if it was sealed with another master key.
  expected<identity::agent_keys> load(std::string_view id) const;

  /// The agent's public keys (cached); nullopt for an agent without keys.
  std::optional<identity::public_keys> public_keys_of(std::string_view id) const;
  /// Drops a cached entry (terminate, import).
  void forget(std::string_view id);

  const identity::master_key& master() const noexcept { return master_; }

  /// Signs (and, when `encrypt_for` is set, first encrypts for that key)
  /// the agent-to-agent message `e` from `sender` to agent `to`. `e.from`,
  /// `e.time` and `e.payload` must be set; `envelope_id` is unique per message.
  static error stamp(storage::inbox_entry& e, std::string_view to,
                     const identity::agent_keys& sender, std::string envelope_id,
                     const identity::public_key* encrypt_for = nullptr);

  /// Why an envelope was refused.
  struct refusal {
    std::string reason;  ///< bad_signature | undecryptable
    std::string error;
  };
  /// Checks the envelope of message `e` addressed to agent `self`, and
  /// decrypts its payload in place with `self_keys` when it is encrypted.
  /// Outside messages (no sender, no signature) pass unchanged.
  std::optional<refusal> open(storage::inbox_entry& e, std::string_view self,
                              const identity::agent_keys* self_keys) const;
  /// The signature check of open() alone: nullopt if `e`'s signature holds,
  /// and then `*verified_with` (when given) is the key it holds under.
  std::optional<refusal> check_signature(const storage::inbox_entry& e, std::string_view self,
                                         identity::public_key* verified_with = nullptr) const;

private:
  storage::store& store_;
  identity::master_key master_;
  mutable std::shared_mutex mtx_;
  mutable std::unordered_map<std::string, identity::public_keys> cache_;
  /// Counts forget() calls: a lookup that read the store before one does not
  /// cache what it read (it may be a deleted agent's keys).
  std::uint64_t forgotten_ = 0;
};

/// Loads (creating when missing) the master key at `path`. Finishes a
/// rotation that committed its re-sealed records but stopped before
/// renaming `path`.new into place, and drops one that never committed.
expected<identity::master_key> open_master_key(const storage::store& store,
                                               const std::filesystem::path& path);

/// Re-seals every agent's keys with a new master key: writes it to
/// `path`.new, commits every re-sealed record in one batch, then renames it
/// to `path`. Returns how many agents were re-sealed.
expected<std::size_t> rotate_master_key(storage::store& store, const std::filesystem::path& path);

/// Signs `e` (a message to `to`) as local agent `from`, and encrypts it for
/// `to` when asked: what a message `from` sent would carry. `recipient_key`:
/// encrypt for this key (a recipient on another node) instead of `to`'s.
error sign_as(const keyring& keys, const std::string& from, const std::string& to, bool encrypted,
              storage::inbox_entry& e, const identity::public_key* recipient_key = nullptr);

}  // namespace ticktock::detail
