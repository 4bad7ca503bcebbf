#pragma once

// How an agent meets Nostr: the events its ticks publish are signed with its
// BIP-340 key, and the events its relays deliver are checked (and gift-wrapped
// direct messages opened) before its tick sees them. See docs/nostr.md.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/nostr.hpp"

namespace ticktock::nostr {

/// The note as a signed event in NIP-01 JSON; invalid_argument for a kind
/// outside 0..65535 or content that is not UTF-8.
expected<std::string> sign_note(const keypair& self, const nostr_note& note,
                                std::int64_t created_at);

/// Why an event from a relay did not reach the tick.
struct inbound_refusal {
  std::string reason;  ///< bad_signature | malformed | undecryptable
  std::string error;
};

/// The payload the tick sees for the Nostr event `event_json` that a relay
/// delivered to agent `self`:
/// `{"nostr":{"id","kind","from","npub","created_at","content","tags"[,"dm":true]}}`.
/// A gift-wrapped direct message (kind 1059, NIP-17) is unwrapped: `from` is
/// then its sender, `kind` 14 and `dm` true. Every signature is checked.
struct inbound_result {
  std::string payload;
  std::optional<inbound_refusal> refused;
};
inbound_result open_inbound(const keypair& self, std::string_view event_json);

}  // namespace ticktock::nostr
