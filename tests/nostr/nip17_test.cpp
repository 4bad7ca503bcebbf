// NIP-17 direct messages in NIP-59 gift wraps (nostr.hpp: nip59, nip17) and
// mentions_filter. Interop with nostr-tools' nip17/nip59 is in
// interop/interop_test.mjs.

#include <catch2/catch.hpp>

#include <cctype>
#include <set>
#include <string>

#include "ticktock/runtime/nostr.hpp"

using namespace ticktock;
using namespace ticktock::nostr;
using namespace std::string_literals;

namespace {

constexpr std::int64_t now = 1700000000;

template <class T>
void require_failure(const expected<T>& result, errc code, const std::string& reason) {
  REQUIRE_FALSE(result.has_value());
  INFO(result.error_value().to_string());
  CHECK(result.code() == code);
  CHECK_THAT(result.error_value().message(), Catch::Contains(reason));
}

template <class T>
void require_rejected(const expected<T>& result, const std::string& layer_and_reason) {
  REQUIRE_FALSE(result.has_value());
  INFO(result.error_value().to_string());
  CHECK(result.code() == errc::invalid_argument);
  CHECK_THAT(result.error_value().message(), Catch::StartsWith(layer_and_reason));
}

key32 ck(const key32& secret, const key32& pubkey) {
  auto k = nip44::conversation_key(secret, pubkey);
  REQUIRE(k.has_value());
  return *k;
}

std::string encrypted(std::string_view plaintext, const key32& secret, const key32& pubkey) {
  auto payload = nip44::encrypt(plaintext, ck(secret, pubkey));
  REQUIRE(payload.has_value());
  return *payload;
}

// A seal by `author` for `recipient` around any text, built by hand so that
// it can hold what nip59::seal refuses to make.
event seal_text(std::string_view rumor_json, const keypair& author, const key32& recipient,
                int kind = nip59::seal_kind) {
  event s;
  s.kind = kind;
  s.created_at = now;
  s.content = encrypted(rumor_json, author.secret, recipient);
  return sign_event(std::move(s), author);
}

// A gift wrap for `recipient` around any text, from a fresh key.
event wrap_text(std::string_view seal_json, const key32& recipient) {
  keypair ephemeral = generate_keypair();
  event w;
  w.kind = nip59::gift_wrap_kind;
  w.created_at = now;
  w.tags = {{"p", to_hex(recipient)}};
  w.content = encrypted(seal_json, ephemeral.secret, recipient);
  return sign_event(std::move(w), ephemeral);
}

event wrap_seal(const event& sealed, const key32& recipient) {
  auto w = nip59::gift_wrap(sealed, recipient, now, generate_keypair());
  REQUIRE(w.has_value());
  return *w;
}

event dm(const keypair& sender, const key32& recipient, std::string_view content,
         const nip17::dm_options& options = {}) {
  auto w = nip17::wrap_dm(sender, recipient, content, now, options);
  INFO((w ? "" : w.error_value().to_string()));
  REQUIRE(w.has_value());
  return *w;
}

const std::string tricky =
  "quote \" backslash \\ newline \n tab \t nul "s + '\0'
  + " unicorn \xF0\x9F\xA6\x84 e\xCC\x81 \xE4\xB8\xAD ls \xE2\x80\xA8 </script>";

}  // namespace

// -- round trips ----------------------------------------------------------------

TEST_CASE("a direct message round-trips from sender to recipient", "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  for (const std::string& content : {"hello bob"s, tricky, ""s, std::string(10000, 'x')}) {
    event wrap = dm(alice, bob.pubkey, content);
    auto got = nip17::unwrap_dm(bob, wrap);
    INFO((got ? "" : got.error_value().to_string()));
    REQUIRE(got.has_value());
    CHECK(got->sender == to_hex(alice.pubkey));
    CHECK(got->content == content);
    CHECK(got->created_at == now);
    CHECK(got->tags == std::vector<std::vector<std::string>>{{"p", to_hex(bob.pubkey)}});
    CHECK(got->rumor.kind == nip17::chat_message_kind);
    CHECK(got->rumor.pubkey == got->sender);
    CHECK(got->rumor.id == compute_id(got->rumor));
    CHECK(got->rumor.sig.empty());
    CHECK(got->rumor
          == nip17::make_chat_message(alice.pubkey, bob.pubkey, content, now));
  }
}

TEST_CASE("extra tags go into the rumor after the recipient", "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  const std::string carol = to_hex(generate_keypair().pubkey);
  nip17::dm_options options;
  options.extra_tags = {{"p", carol}, {"subject", "plans"}};
  auto got = nip17::unwrap_dm(bob, dm(alice, bob.pubkey, "hi both", options));
  REQUIRE(got.has_value());
  CHECK(got->tags
        == std::vector<std::vector<std::string>>{
          {"p", to_hex(bob.pubkey)}, {"p", carol}, {"subject", "plans"}});
}

TEST_CASE("the sender's own copy opens only with the sender's key and holds the same rumor",
          "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  event to_bob = dm(alice, bob.pubkey, "see you at noon");
  event to_self = dm(alice, bob.pubkey, "see you at noon", {.wrap_to = alice.pubkey});
  CHECK(to_self.tags == std::vector<std::vector<std::string>>{{"p", to_hex(alice.pubkey)}});

  auto mine = nip17::unwrap_dm(alice, to_self);
  auto bobs = nip17::unwrap_dm(bob, to_bob);
  REQUIRE(mine.has_value());
  REQUIRE(bobs.has_value());
  // The copy still names bob as the recipient, and both copies carry one rumor.
  CHECK(mine->tags == std::vector<std::vector<std::string>>{{"p", to_hex(bob.pubkey)}});
  CHECK(mine->rumor.id == bobs->rumor.id);
  CHECK(mine->sender == to_hex(alice.pubkey));

  require_rejected(nip17::unwrap_dm(bob, to_self), "gift wrap: cannot decrypt");
  require_rejected(nip17::unwrap_dm(alice, to_bob), "gift wrap: cannot decrypt");
}

TEST_CASE("a gift wrap for someone else cannot be opened", "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  keypair eve = generate_keypair();
  auto got = nip17::unwrap_dm(eve, dm(alice, bob.pubkey, "for bob only"));
  require_rejected(got, "gift wrap: cannot decrypt the content with this key");
  CHECK_THAT(got.error_value().message(), Catch::Contains("invalid MAC"));
}

// -- what the layers reveal ---------------------------------------------------------

TEST_CASE("the gift wrap is signed by a one-time key and its timestamps are backdated up to "
          "two days",
          "[nostr][nip17][nip59]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  std::set<std::string> wrap_keys;
  std::set<std::int64_t> times;
  for (int i = 0; i < 20; ++i) {
    event wrap = dm(alice, bob.pubkey, "meta");
    CHECK_FALSE(verify_event(wrap));
    CHECK(wrap.kind == nip59::gift_wrap_kind);
    CHECK(wrap.pubkey != to_hex(alice.pubkey));
    CHECK(wrap.tags == std::vector<std::vector<std::string>>{{"p", to_hex(bob.pubkey)}});
    CHECK(wrap.created_at <= now);
    CHECK(wrap.created_at >= now - nip59::max_backdate);
    wrap_keys.insert(wrap.pubkey);
    times.insert(wrap.created_at);

    auto layers = nip59::unwrap(bob, wrap);
    REQUIRE(layers.has_value());
    const event& sealed = layers->seal;
    CHECK(sealed.kind == nip59::seal_kind);
    CHECK(sealed.pubkey == to_hex(alice.pubkey));
    CHECK(sealed.tags.empty());
    CHECK(sealed.created_at <= now);
    CHECK(sealed.created_at >= now - nip59::max_backdate);
    times.insert(sealed.created_at);
    CHECK(layers->rumor.created_at == now);

    // The rumor travels without a "sig" member, as NIP-59 writes it.
    auto rumor_json = nip44::decrypt(sealed.content, ck(bob.secret, alice.pubkey));
    REQUIRE(rumor_json.has_value());
    CHECK_THAT(*rumor_json, !Catch::Contains("\"sig\""));
    CHECK(*rumor_json == nip59::rumor_to_json(layers->rumor));
  }
  CHECK(wrap_keys.size() == 20);
  // 40 draws from 172801 values: equal by chance with negligible probability.
  CHECK(times.size() > 30);
}

TEST_CASE("random past timestamps stay within two days before now and not below zero",
          "[nostr][nip59]") {
  for (int i = 0; i < 1000; ++i) {
    std::int64_t t = nip59::random_past_timestamp(now);
    REQUIRE(t <= now);
    REQUIRE(t >= now - 2 * 24 * 60 * 60);
    std::int64_t early = nip59::random_past_timestamp(100);
    REQUIRE(early >= 0);
    REQUIRE(early <= 100);
  }
}

// -- tampering, layer by layer ----------------------------------------------------

TEST_CASE("a tampered gift wrap is rejected, naming the gift wrap", "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  event wrap = dm(alice, bob.pubkey, "original");

  event content_changed = wrap;
  content_changed.content = dm(alice, bob.pubkey, "other").content;
  require_rejected(nip17::unwrap_dm(bob, content_changed),
                   "gift wrap: id does not match content");

  event other = dm(alice, bob.pubkey, "other");
  event sig_swapped = wrap;
  sig_swapped.sig = other.sig;
  require_rejected(nip17::unwrap_dm(bob, sig_swapped), "gift wrap: bad signature");

  event resigned_by_other = wrap;
  resigned_by_other.pubkey = other.pubkey;
  resigned_by_other.id = compute_id(resigned_by_other);
  require_rejected(nip17::unwrap_dm(bob, resigned_by_other), "gift wrap: bad signature");

  event wrong_kind = wrap;
  wrong_kind.kind = 1;
  require_rejected(nip17::unwrap_dm(bob, wrong_kind), "gift wrap: kind 1, expected 1059");

  event unsigned_wrap = wrap;
  unsigned_wrap.sig.clear();
  require_rejected(nip17::unwrap_dm(bob, unsigned_wrap), "gift wrap: event sig must be 128");

  // Validly signed by its key, but the content was encrypted by another key.
  keypair ephemeral = generate_keypair();
  event foreign = wrap;
  foreign.content = encrypted("{}", generate_keypair().secret, bob.pubkey);
  foreign = sign_event(std::move(foreign), ephemeral);
  require_rejected(nip17::unwrap_dm(bob, foreign), "gift wrap: cannot decrypt");
}

TEST_CASE("a tampered seal is rejected, naming the seal", "[nostr][nip17][nip59]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  event rumor = nip17::make_chat_message(alice.pubkey, bob.pubkey, "sealed", now);
  auto sealed = nip59::seal(rumor, alice, bob.pubkey, now);
  REQUIRE(sealed.has_value());
  REQUIRE(nip17::unwrap_dm(bob, wrap_seal(*sealed, bob.pubkey)).has_value());

  event content_changed = *sealed;
  content_changed.content = nip59::seal(rumor, alice, bob.pubkey, now)->content;
  require_rejected(nip17::unwrap_dm(bob, wrap_seal(content_changed, bob.pubkey)),
                   "seal: id does not match content");

  event sig_swapped = *sealed;
  sig_swapped.sig = sign_event(*sealed, generate_keypair()).sig;
  require_rejected(nip17::unwrap_dm(bob, wrap_seal(sig_swapped, bob.pubkey)),
                   "seal: bad signature");

  event no_sig = *sealed;
  no_sig.sig.clear();
  require_rejected(nip17::unwrap_dm(bob, wrap_seal(no_sig, bob.pubkey)),
                   "seal: event sig must be 128");

  // Signed, but its content is not for bob.
  event for_carol = *sealed;
  for_carol.content = encrypted(nip59::rumor_to_json(rumor), alice.secret,
                                generate_keypair().pubkey);
  for_carol = sign_event(std::move(for_carol), alice);
  require_rejected(nip17::unwrap_dm(bob, wrap_seal(for_carol, bob.pubkey)),
                   "seal: cannot decrypt the content with this key");

  event wrong_kind = seal_text(nip59::rumor_to_json(rumor), alice, bob.pubkey, 1);
  require_rejected(nip17::unwrap_dm(bob, wrap_seal(wrong_kind, bob.pubkey)),
                   "seal: kind 1, expected 13");
}

TEST_CASE("a tampered rumor is rejected, naming the rumor", "[nostr][nip17][nip59]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  event rumor = nip17::make_chat_message(alice.pubkey, bob.pubkey, "I owe you 5", now);

  event changed = rumor;
  changed.content = "I owe you 500";
  require_rejected(
    nip17::unwrap_dm(bob, wrap_seal(*nip59::seal(changed, alice, bob.pubkey, now), bob.pubkey)),
    "rumor: id does not match content");

  event upper_id = rumor;
  for (auto& c : upper_id.id)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  require_rejected(
    nip17::unwrap_dm(bob, wrap_seal(*nip59::seal(upper_id, alice, bob.pubkey, now), bob.pubkey)),
    "rumor: event id must be lowercase hex");

  event redated = rumor;
  redated.created_at = now - 3600;
  require_rejected(
    nip17::unwrap_dm(bob, wrap_seal(*nip59::seal(redated, alice, bob.pubkey, now), bob.pubkey)),
    "rumor: id does not match content");

  // A rumor of another kind opens as NIP-59 but is not a NIP-17 chat message.
  event reaction = rumor;
  reaction.kind = 7;
  reaction = nip59::make_rumor(std::move(reaction), alice.pubkey);
  event wrap = wrap_seal(*nip59::seal(reaction, alice, bob.pubkey, now), bob.pubkey);
  REQUIRE(nip59::unwrap(bob, wrap).has_value());
  require_rejected(nip17::unwrap_dm(bob, wrap), "rumor: kind 7, expected 14");

  // A rumor carrying "sig":"" (to_json rather than rumor_to_json) is accepted.
  event with_empty_sig = wrap_seal(seal_text(to_json(rumor), alice, bob.pubkey), bob.pubkey);
  auto got = nip17::unwrap_dm(bob, with_empty_sig);
  REQUIRE(got.has_value());
  CHECK(got->content == "I owe you 5");
}

TEST_CASE("a seal signed by one key around a rumor claiming another is rejected as "
          "impersonation",
          "[nostr][nip17][nip59]") {
  keypair mallory = generate_keypair();
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  // A well-formed rumor, id and all, that claims alice wrote it.
  event forged = nip17::make_chat_message(alice.pubkey, bob.pubkey, "send mallory the keys", now);

  // nip59::seal refuses to make it...
  require_failure(nip59::seal(forged, mallory, bob.pubkey, now), errc::invalid_argument,
                  "seal: the rumor's pubkey is not the sealing author's");
  // ...and unwrap refuses one made by hand.
  event sealed = seal_text(nip59::rumor_to_json(forged), mallory, bob.pubkey);
  auto got = nip17::unwrap_dm(bob, wrap_seal(sealed, bob.pubkey));
  require_rejected(got, "rumor: pubkey '" + to_hex(alice.pubkey) + "' is not the seal's signer "
                          + to_hex(mallory.pubkey) + " (impersonation)");
  require_rejected(nip59::unwrap(bob, wrap_seal(sealed, bob.pubkey)), "rumor: pubkey");
}

TEST_CASE("malformed inner JSON is rejected, naming the layer", "[nostr][nip17][nip59]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  event rumor = nip17::make_chat_message(alice.pubkey, bob.pubkey, "hi", now);

  require_rejected(nip17::unwrap_dm(bob, wrap_text("not json", bob.pubkey)),
                   "seal: the decrypted seal is not valid JSON");
  require_rejected(nip17::unwrap_dm(bob, wrap_text("[1,2]", bob.pubkey)),
                   "seal: event must be a JSON object");
  require_rejected(nip17::unwrap_dm(bob, wrap_text(R"({"kind":13})", bob.pubkey)),
                   "seal: event has no 'content'");
  std::string seal_without_sig = nip59::rumor_to_json(*nip59::seal(rumor, alice, bob.pubkey, now));
  require_rejected(nip17::unwrap_dm(bob, wrap_text(seal_without_sig, bob.pubkey)),
                   "seal: event has no 'sig'");
  std::string truncated = to_json(*nip59::seal(rumor, alice, bob.pubkey, now));
  truncated.pop_back();
  require_rejected(nip17::unwrap_dm(bob, wrap_text(truncated, bob.pubkey)),
                   "seal: the decrypted seal is not valid JSON");

  auto wrapped_rumor_text = [&](std::string_view text) {
    return wrap_seal(seal_text(text, alice, bob.pubkey), bob.pubkey);
  };
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text("{\"id\":")),
                   "rumor: the decrypted rumor is not valid JSON");
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text("\"a string\"")),
                   "rumor: event must be a JSON object");
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text("{}")),
                   "rumor: event has no 'content'");

  std::string no_id = nip59::rumor_to_json(rumor);
  no_id.replace(no_id.find("\"id\":"), 4 + 2 + 64 + 2, "");
  REQUIRE(no_id.front() == '{');
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text(no_id)), "rumor: event has no 'id'");

  std::string tags_not_strings = nip59::rumor_to_json(rumor);
  tags_not_strings.replace(tags_not_strings.find("\"tags\":["), 8, "\"tags\":[[1],");
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text(tags_not_strings)),
                   "rumor: event tag 0 has an element that is not a string");

  event bad_utf8 = rumor;
  bad_utf8.content = "\xC3\x28";
  bad_utf8 = nip59::make_rumor(std::move(bad_utf8), alice.pubkey);
  // Boost.JSON refuses invalid UTF-8 inside strings already.
  require_rejected(nip17::unwrap_dm(bob, wrapped_rumor_text(nip59::rumor_to_json(bad_utf8))),
                   "rumor: the decrypted rumor is not valid JSON");
}

// -- limits and bad arguments ---------------------------------------------------------

TEST_CASE("wrap_dm takes messages up to the largest that fits the layers, and no larger",
          "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  const std::size_t overhead =
    nip59::rumor_to_json(nip17::make_chat_message(alice.pubkey, bob.pubkey, "", now)).size();
  const std::string largest(40960 - overhead, 'x');

  event wrap = dm(alice, bob.pubkey, largest);
  CHECK(wrap.content.size() > default_max_content_bytes);
  CHECK(wrap.content.size() <= nip59::max_layer_content_bytes);
  // A relay's copy must be parsed with the larger limit.
  require_failure(event_from_json(to_json(wrap)), errc::message_too_large, "above the limit");
  auto parsed = event_from_json(to_json(wrap), nip59::max_layer_content_bytes);
  REQUIRE(parsed.has_value());
  auto got = nip17::unwrap_dm(bob, *parsed);
  REQUIRE(got.has_value());
  CHECK(got->content == largest);

  require_failure(nip17::wrap_dm(alice, bob.pubkey, largest + "x", now), errc::message_too_large,
                  "rumor: the message is 40961 bytes of JSON, above the 40960");
  // Escaped characters count as their JSON escapes.
  require_failure(nip17::wrap_dm(alice, bob.pubkey, std::string(largest.size() / 2 + 1, '\n'), now),
                  errc::message_too_large, "above the 40960");

  // The layers check their own sizes.
  event huge = nip17::make_chat_message(alice.pubkey, bob.pubkey, std::string(70000, 'x'), now);
  require_failure(nip59::seal(huge, alice, bob.pubkey, now), errc::message_too_large,
                  "seal: the rumor is");
  event big = nip17::make_chat_message(alice.pubkey, bob.pubkey, std::string(50000, 'x'), now);
  auto big_seal = nip59::seal(big, alice, bob.pubkey, now);
  REQUIRE(big_seal.has_value());
  require_failure(nip59::gift_wrap(*big_seal, bob.pubkey, now, generate_keypair()),
                  errc::message_too_large, "gift wrap: the seal is");
}

TEST_CASE("wrap_dm rejects bad keys, times and text", "[nostr][nip17]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  key32 not_a_point{};
  not_a_point[31] = 5;  // x = 5 is not on secp256k1
  REQUIRE_FALSE(is_valid_pubkey(not_a_point));

  require_failure(nip17::wrap_dm(alice, not_a_point, "hi", now), errc::invalid_argument,
                  "recipient's pubkey is not a point");
  require_failure(nip17::wrap_dm(alice, bob.pubkey, "hi", now, {.wrap_to = not_a_point}),
                  errc::invalid_argument, "seal: NIP-44: public key is not a point");
  require_failure(nip17::wrap_dm(alice, bob.pubkey, "hi", -1), errc::invalid_argument,
                  "now must not be negative");
  require_failure(nip17::wrap_dm(alice, bob.pubkey, "\xFF", now), errc::invalid_argument,
                  "rumor: event content is not valid UTF-8");
  require_failure(nip17::wrap_dm(alice, bob.pubkey, "hi", now, {.extra_tags = {{"x", "\xC0\x80"}}}),
                  errc::invalid_argument, "rumor: event tag 1 is not valid UTF-8");
  require_failure(nip59::gift_wrap(event{}, bob.pubkey, -5, generate_keypair()),
                  errc::invalid_argument, "gift wrap: created_at must not be negative");

  keypair bad_recipient{};
  require_rejected(nip17::unwrap_dm(bad_recipient, dm(alice, bob.pubkey, "hi")),
                   "gift wrap: NIP-44: secret key is invalid");
}

// -- filters ---------------------------------------------------------------------------

TEST_CASE("mentions_filter writes the NIP-01 filter for a p tag", "[nostr][relay]") {
  const key32 pk = *key_from_hex("f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9");
  const std::string hex = "\"f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9\"";
  CHECK(mentions_filter(pk, 1700000000, {1059}) == "{\"#p\":[" + hex + "],\"kinds\":[1059],\"since\":1700000000}");
  CHECK(mentions_filter(pk, std::nullopt, {1059, 4, 14})
        == "{\"#p\":[" + hex + "],\"kinds\":[1059,4,14]}");
  CHECK(mentions_filter(pk, 0, {}) == "{\"#p\":[" + hex + "],\"since\":0}");
  CHECK(mentions_filter(pk, std::nullopt, {}) == "{\"#p\":[" + hex + "]}");
  CHECK(req_message("dms", mentions_filter(pk, std::nullopt, {1059}))
        == "[\"REQ\",\"dms\",{\"#p\":[" + hex + "],\"kinds\":[1059]}]");
}
