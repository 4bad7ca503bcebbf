#pragma once

// Nostr primitives: keys and BIP-340 signatures, NIP-01 events and relay
// messages, NIP-19 bech32 keys (npub/nsec), NIP-44 v2 encrypted payloads, and
// NIP-17 private direct messages in NIP-59 gift wraps.
// docs/nostr.md describes what is signed and how each format is built.
//
// Every function here is thread-safe: the secp256k1 context is created and
// randomized once per process, on first use, and is then only read. Secret
// keys are plain values; nothing here keeps a copy of them.
//
// Fallible calls return ticktock::error / ticktock::expected with
// errc::invalid_argument (malformed or unauthentic input) or
// errc::message_too_large (input above a size limit), and never throw.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::nostr {

/// 32 bytes: a secret key, an x-only public key, a hash or a nonce.
using key32 = std::array<std::uint8_t, 32>;

/// A BIP-340 Schnorr signature.
using signature64 = std::array<std::uint8_t, 64>;

// -- hex ---------------------------------------------------------------------

/// Lowercase hex of `bytes`, two characters per byte.
std::string to_hex(std::span<const std::uint8_t> bytes);

/// Decodes hex (either case). Fails with invalid_argument on an odd length or a
/// character outside [0-9a-fA-F], naming its position.
expected<std::vector<std::uint8_t>> from_hex(std::string_view hex);

/// Decodes exactly 64 hex characters into 32 bytes. Fails with
/// invalid_argument on any other length or on a non-hex character.
expected<key32> key_from_hex(std::string_view hex);

// -- keys and BIP-340 signatures ---------------------------------------------

/// A secp256k1 key pair; `pubkey` is the BIP-340 x-only public key, the form
/// Nostr uses everywhere (hex in events, bech32 in npub).
struct keypair {
  key32 secret{};
  key32 pubkey{};
};

/// A fresh key pair from libsodium's randombytes_buf (the OS CSPRNG); draws
/// again in the negligible case that 32 random bytes are not a valid secret.
keypair generate_keypair();

/// The key pair of `secret`. Fails with invalid_argument when `secret` is zero
/// or not below the curve order.
expected<keypair> keypair_from_secret(const key32& secret);

/// True when `secret` is a valid secp256k1 secret key (non-zero, below the
/// curve order).
bool is_valid_secret(const key32& secret) noexcept;

/// True when `pubkey` is the x coordinate of a point on secp256k1.
bool is_valid_pubkey(const key32& pubkey) noexcept;

/// BIP-340 signature of the 32-byte message `msg32` (for Nostr: the event id)
/// with 32 bytes of fresh auxiliary randomness. Precondition: `secret` is
/// valid (see is_valid_secret); for an invalid secret the result is 64 zero
/// bytes, which no verifier accepts.
signature64 schnorr_sign(const key32& secret, const key32& msg32);

/// schnorr_sign with caller-chosen auxiliary randomness, for reproducing
/// BIP-340 test vectors. Production code calls schnorr_sign.
signature64 schnorr_sign_with_aux(const key32& secret, const key32& msg32, const key32& aux32);

/// True when `sig` is a valid BIP-340 signature of `msg32` by the x-only key
/// `pubkey`. False for an invalid public key as for a wrong signature.
bool schnorr_verify(const key32& pubkey, const key32& msg32, std::span<const std::uint8_t, 64> sig);

// -- NIP-01 events -----------------------------------------------------------

/// Default limit on an event's content, in bytes (64 KiB).
inline constexpr std::size_t default_max_content_bytes = 64 * 1024;

/// Largest kind NIP-01 allows.
inline constexpr int max_kind = 65535;

/// A Nostr event (NIP-01). `id`, `pubkey` and `sig` are lowercase hex (64, 64
/// and 128 characters); `created_at` is Unix seconds; strings are UTF-8.
struct event {
  std::string id;
  std::string pubkey;
  std::int64_t created_at = 0;
  int kind = 1;
  std::vector<std::vector<std::string>> tags;
  std::string content;
  std::string sig;

  friend bool operator==(const event&, const event&) = default;
};

/// The NIP-01 canonical serialization whose sha256 is the event id:
/// `[0,"<pubkey>",<created_at>,<kind>,<tags>,"<content>"]` with no whitespace.
/// Strings escape `"` `\` and the control characters below 0x20 only (\n \r
/// \t \b \f by name, the others as \u00xx), exactly as JSON.stringify does;
/// every other byte, UTF-8 included, is copied as it is.
std::string serialize_for_id(const event& e);

/// Lowercase hex sha256 of serialize_for_id(e).
std::string compute_id(const event& e);

/// Returns `e` signed by `k`: sets pubkey from `k`, then id, then sig. The
/// other fields are kept as given. Precondition: `k` came from
/// generate_keypair or keypair_from_secret (see schnorr_sign).
event sign_event(event e, const keypair& k);

/// No error when `e` is authentic. Otherwise invalid_argument with the reason:
/// a malformed field (id, pubkey or sig of the wrong length or not lowercase
/// hex, kind outside 0..65535, created_at negative, a string that is not
/// UTF-8), "id does not match content" when the id is not compute_id(e), a
/// pubkey that is not a point on secp256k1, or "bad signature".
error verify_event(const event& e);

/// The event as a compact JSON object with the members id, pubkey,
/// created_at, kind, tags, content, sig (strings escaped as in
/// serialize_for_id).
std::string to_json(const event& e);

/// Parses an event object. Fails with invalid_argument when the text is not
/// JSON, a member is missing or of the wrong type, created_at is negative or
/// not an integer, kind is outside 0..65535, or tags is not an array of
/// arrays of strings; with message_too_large when content is longer than
/// `max_content_bytes`. Unknown members are ignored. Does not check the id or
/// signature: call verify_event for that.
expected<event> event_from_json(std::string_view json,
                                std::size_t max_content_bytes = default_max_content_bytes);

// -- NIP-01 relay messages ---------------------------------------------------

/// `["REQ","<sub_id>",<filter_json>]`. `filter_json` must be a JSON object
/// (e.g. `{"kinds":[1],"limit":10}`); it is inserted as it is.
std::string req_message(std::string_view sub_id, std::string_view filter_json);

/// `["EVENT",<event>]`, for publishing an event to a relay.
std::string event_message(const event& e);

/// `["CLOSE","<sub_id>"]`.
std::string close_message(std::string_view sub_id);

/// A NIP-01 filter for the events that mention `pubkey` in a "p" tag:
/// `{"#p":["<pubkey hex>"],"kinds":[<kinds>],"since":<since>}`, members in
/// that order, "kinds" left out when `kinds` is empty (any kind) and "since"
/// when it is nullopt. Kinds are written as given (NIP-01 allows 0..65535).
/// For gift wraps (kind 1059) pass a `since` at least two days before the
/// last wrap wanted: their created_at is backdated by up to two days (see
/// nip59::max_backdate).
std::string mentions_filter(const key32& pubkey, std::optional<std::int64_t> since,
                            const std::vector<int>& kinds);

/// ["EVENT", sub_id, event]: an event matching a subscription.
struct relay_event {
  std::string subscription_id;
  nostr::event event;
};

/// ["OK", event_id, accepted, message]: the relay's answer to a published
/// event.
struct relay_ok {
  std::string event_id;
  bool accepted = false;
  std::string message;
};

/// ["EOSE", sub_id]: the stored events of a subscription have all been sent.
struct relay_eose {
  std::string subscription_id;
};

/// ["NOTICE", message]: a human-readable message from the relay.
struct relay_notice {
  std::string message;
};

/// ["CLOSED", sub_id, message]: the relay ended a subscription.
struct relay_closed {
  std::string subscription_id;
  std::string message;
};

/// ["AUTH", challenge]: the relay asks the client to authenticate (NIP-42).
struct relay_auth {
  std::string challenge;
};

/// A relay-to-client message.
using relay_message =
  std::variant<relay_event, relay_ok, relay_eose, relay_notice, relay_closed, relay_auth>;

/// Parses a relay-to-client message. Fails with invalid_argument, naming the
/// problem, when the text is not a JSON array, its first element is not one
/// of the types above, an element is missing or of the wrong type, or (for
/// EVENT) the event is malformed as event_from_json defines; with
/// message_too_large when an event's content exceeds `max_content_bytes`.
/// A missing message in OK or CLOSED reads as "" (older relays omit it); an
/// OK's event id must be 64 lowercase hex. Extra trailing elements are ignored. An EVENT's signature is not checked:
/// call verify_event on it.
expected<relay_message> parse_relay_message(std::string_view json,
                                            std::size_t max_content_bytes = default_max_content_bytes);

// -- relay URLs ----------------------------------------------------------------

/// A parsed relay URL: ws://host[:port][/path] or wss://host[:port][/path].
struct relay_url {
  /// True for wss:// (TLS).
  bool tls = false;
  /// Host name or IP address in lower case; IPv6 addresses without brackets.
  std::string host;
  /// TCP port; 80 for ws://, 443 for wss:// when the URL names none.
  std::uint16_t port = 0;
  /// Request target: path plus query, "/" when the URL has none.
  std::string target = "/";

  /// The normalized form used as the relay's key everywhere in the pool:
  /// lower-case scheme and host, default port omitted, target "/" at least.
  /// E.g. "WSS://Relay.Example.com:443" becomes "wss://relay.example.com/".
  std::string to_string() const;
};

/// Parses a relay URL. Fails with errc::invalid_argument, whose message says
/// what is wrong, for other schemes, empty or malformed hosts, user info,
/// ports outside 1..65535, fragments, and spaces or control characters.
expected<relay_url> parse_relay_url(std::string_view url);

/// The relays of an agent's config `{"nostr":{"relays":[...]}}`: each valid
/// relay URL once, normalized (relay_url::to_string), in the config's order.
/// Entries that are not relay URLs are skipped, so that one bad or repeated
/// entry does not leave the agent with none; empty when the config is not
/// JSON or names none. The Nostr driver publishes to these, and the policy
/// gate judges a publish by them.
std::vector<std::string> relays_in_config(std::string_view config);

/// How a policy rule names a relay (`destination` of `nostr_publish`,
/// docs/policy.md): its normalized URL without the "/" of an empty path,
/// e.g. "wss://relay.damus.io" for "WSS://Relay.Damus.io:443/".
std::string relay_policy_name(std::string_view normalized);

// -- NIP-19 bech32 keys ------------------------------------------------------

/// The bech32 (BIP-173) "npub1..." form of an x-only public key.
std::string npub(const key32& pubkey);

/// The bech32 "nsec1..." form of a secret key.
std::string nsec(const key32& secret);

/// Decodes an "npub1..." string (all lower or all upper case). Fails with
/// invalid_argument on a bad checksum, a character outside the bech32
/// alphabet, another prefix, or a payload that is not 32 bytes.
expected<key32> decode_npub(std::string_view npub);

/// Decodes an "nsec1..." string, as decode_npub does for "npub1...".
expected<key32> decode_nsec(std::string_view nsec);

// -- NIP-44 v2 encrypted payloads --------------------------------------------

namespace nip44 {

/// Smallest and largest plaintext NIP-44 v2 encrypts, in bytes.
inline constexpr std::size_t min_plaintext_size = 1;
inline constexpr std::size_t max_plaintext_size = 65535;

/// The per-message keys HKDF-expand derives from a conversation key and a
/// nonce.
struct message_keys {
  key32 chacha_key{};
  std::array<std::uint8_t, 12> chacha_nonce{};
  key32 hmac_key{};
};

/// The conversation key shared by `secret_a` and the owner of `pubkey_b`:
/// HKDF-extract(salt "nip44-v2", ikm = x coordinate of secret_a * P(pubkey_b))
/// with SHA-256. Symmetric: conversation_key(a, B) == conversation_key(b, A).
/// Fails with invalid_argument when the secret is invalid or pubkey_b is not
/// on the curve.
expected<key32> conversation_key(const key32& secret_a, const key32& pubkey_b);

/// HKDF-expand(conversation_key, info = nonce, 76 bytes), split 32/12/32.
message_keys get_message_keys(const key32& conversation_key, const key32& nonce);

/// Length of the padded plaintext (without its 2-byte length prefix) for an
/// unpadded length: at least 32, then powers of two for short messages and
/// eighths of the next power of two above 256 bytes.
std::size_t calc_padded_len(std::size_t unpadded_len);

/// Encrypts `plaintext` (1..65535 bytes) and returns the base64 payload
/// `0x02 || nonce || ciphertext || mac`. The nonce is random unless given
/// (give one only to reproduce test vectors: reusing a nonce with the same
/// conversation key breaks confidentiality). Fails with invalid_argument for
/// an empty or too long plaintext.
expected<std::string> encrypt(std::string_view plaintext, const key32& conversation_key,
                              std::optional<key32> nonce = {});

/// Decrypts a base64 payload. Fails with invalid_argument and one of these
/// reasons: unknown version (also for a payload starting with '#'), payload
/// too short or too long, invalid base64, invalid MAC, invalid padding. The
/// MAC is checked in constant time before anything is decrypted. The result
/// is the plaintext bytes (UTF-8 when the sender followed NIP-44).
expected<std::string> decrypt(std::string_view payload, const key32& conversation_key);

}  // namespace nip44

// -- NIP-59 gift wrap --------------------------------------------------------

/// The three layers of NIP-59: a rumor (an unsigned event: it has an id but
/// no signature, so it proves nothing to third parties), sealed (kind 13,
/// signed by the rumor's author, content NIP-44-encrypted to the recipient)
/// and gift-wrapped (kind 1059, signed by a one-time key, content
/// NIP-44-encrypted to the recipient, tagged ["p", recipient] for relays).
/// docs/nostr.md shows which key signs and encrypts what.
namespace nip59 {

/// Kind of a seal.
inline constexpr int seal_kind = 13;

/// Kind of a gift wrap.
inline constexpr int gift_wrap_kind = 1059;

/// Seals and gift wraps carry a created_at up to this far in the past, so
/// that relays and observers cannot tell when a message was sent.
inline constexpr std::int64_t max_backdate = 2 * 24 * 60 * 60;  // seconds

/// Largest content of a seal or gift wrap: the longest NIP-44 v2 payload, in
/// base64 characters. It is above default_max_content_bytes: parse incoming
/// gift wraps with `event_from_json(json, max_layer_content_bytes)` or
/// larger ones are refused with message_too_large.
inline constexpr std::size_t max_layer_content_bytes = 87472;

/// A uniformly random Unix time in [now - max_backdate, now] (the CSPRNG),
/// never below 0.
std::int64_t random_past_timestamp(std::int64_t now);

/// Returns `e` as a rumor: pubkey set to `author`, sig cleared, id computed
/// as in NIP-01 (compute_id). The other fields are kept as given.
event make_rumor(event e, const key32& author);

/// A rumor as a compact JSON object: to_json without the "sig" member, as
/// NIP-59 and nostr-tools write it.
std::string rumor_to_json(const event& rumor);

/// Seals `rumor` for `recipient`: kind 13, no tags, the given created_at,
/// content = nip44::encrypt(rumor_to_json(rumor), conversation_key(author
/// secret, recipient)), signed by `author`. Fails with invalid_argument when
/// the rumor's pubkey is not `author`'s (a seal vouches for its rumor's
/// author), when `recipient` is not a curve point or created_at is negative;
/// with message_too_large when the rumor JSON exceeds 65535 bytes. The rumor's
/// id is not checked. Precondition on `author` as for sign_event.
expected<event> seal(const event& rumor, const keypair& author, const key32& recipient,
                     std::int64_t created_at);

/// Gift-wraps `sealed` for `recipient`: kind 1059, tags [["p", recipient]]
/// followed by `extra_tags`, the given created_at, content =
/// nip44::encrypt(to_json(sealed), conversation_key(ephemeral secret,
/// recipient)), signed by `ephemeral`, which must be a fresh key used for this
/// one wrap (generate_keypair). `sealed` is wrapped as it is, unchecked. Fails
/// with invalid_argument when `recipient` is not a curve point or created_at
/// is negative; with message_too_large when the seal JSON exceeds 65535 bytes.
expected<event> gift_wrap(const event& sealed, const key32& recipient, std::int64_t created_at,
                          const keypair& ephemeral,
                          const std::vector<std::vector<std::string>>& extra_tags = {});

/// The inner layers of a gift wrap, both checked.
struct unwrapped {
  event seal;   ///< Signature verified; kind 13.
  event rumor;  ///< Id verified, pubkey equal to the seal's; sig as received (normally "").
};

/// Opens a gift wrap addressed to `recipient`: checks the wrap (kind 1059,
/// verify_event), decrypts it with conversation_key(recipient secret, wrap
/// pubkey), parses the seal and checks it (kind 13, verify_event), decrypts it
/// with conversation_key(recipient secret, seal pubkey), parses the rumor
/// (its "sig" member may be missing), and checks that the rumor's pubkey is
/// the seal's (otherwise the sealer impersonates someone) and that its id is
/// compute_id(rumor). Any rumor kind is accepted. Tags of the wrap and seal
/// are not interpreted. Every failure is invalid_argument, its message
/// starting with the layer ("gift wrap: ", "seal: ", "rumor: ") and saying the
/// reason. Never throws. Sizes are bounded by NIP-44 (an inner layer is at
/// most 65535 bytes of JSON).
expected<unwrapped> unwrap(const keypair& recipient, const event& gift_wrap);

}  // namespace nip59

// -- NIP-17 private direct messages ------------------------------------------

namespace nip17 {

/// Kind of a chat message (the rumor inside a NIP-17 gift wrap).
inline constexpr int chat_message_kind = 14;

/// The rumor of a chat message: kind 14, pubkey = `sender`, tags
/// [["p", recipient hex]] followed by `extra_tags` (more recipients,
/// ["e", id, relay, "reply"], ["subject", title]...), `content`, created_at =
/// `created_at`, id computed, no sig.
event make_chat_message(const key32& sender, const key32& recipient, std::string_view content,
                        std::int64_t created_at,
                        const std::vector<std::vector<std::string>>& extra_tags = {});

/// Options of wrap_dm.
struct dm_options {
  /// Whom the seal and gift wrap are encrypted to; the recipient when unset.
  /// Set it to the sender's own pubkey to make the copy NIP-17 recommends
  /// keeping on one's own relays: it holds the same rumor (same id when
  /// `now` and the tags are the same) and only the sender can open it.
  std::optional<key32> wrap_to;

  /// Tags appended to the rumor after ["p", recipient].
  std::vector<std::vector<std::string>> extra_tags;
};

/// A NIP-17 direct message from `sender` to `recipient`, gift-wrapped: the
/// rumor (make_chat_message, created_at = `now`), sealed by `sender`, wrapped
/// with a fresh one-time key; the seal's and the wrap's created_at are drawn
/// independently by nip59::random_past_timestamp(now). Publish the result to
/// the recipient's relays (and the copy for the sender, see dm_options) as it
/// is. Fails with invalid_argument when a key is not a curve point or `now`
/// is negative; with message_too_large when the layers do
/// not fit in NIP-44 (content above roughly 40 KB; the limit is on the
/// rumor's JSON, 40960 bytes, since the seal JSON, which holds it encrypted
/// in base64, must itself be at most 65535 bytes). Thread-safe.
expected<event> wrap_dm(const keypair& sender, const key32& recipient, std::string_view content,
                        std::int64_t now, const dm_options& options = {});

/// A direct message opened by unwrap_dm.
struct received_dm {
  std::string sender;  ///< Lowercase hex pubkey of the author (signer of the seal).
  std::string content;
  std::int64_t created_at = 0;  ///< The rumor's, the time the sender claims.
  std::vector<std::vector<std::string>> tags;  ///< The rumor's: "p" recipients, "e", "subject".
  event rumor;  ///< The whole rumor; its id identifies the message across copies.
};

/// Opens a NIP-17 gift wrap addressed to `recipient`: nip59::unwrap, then
/// checks that the rumor is a chat message (kind 14). Fails with
/// invalid_argument, the message naming the layer ("gift wrap: ", "seal: ",
/// "rumor: ") and the reason, e.g. "gift wrap: cannot decrypt ...: NIP-44:
/// invalid MAC" for a wrap addressed to someone else, "rumor: pubkey ... is
/// not the seal's signer ..." for an impersonation. Never throws.
expected<received_dm> unwrap_dm(const keypair& recipient, const event& gift_wrap);

}  // namespace nip17

}  // namespace ticktock::nostr
