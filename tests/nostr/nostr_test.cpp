#include <catch2/catch.hpp>

#include <cctype>
#include <set>
#include <atomic>
#include <string>
#include <thread>
#include <variant>

#include "ticktock/runtime/nostr.hpp"

using namespace ticktock;
using namespace ticktock::nostr;
using namespace std::string_literals;

namespace {

key32 key(std::string_view hex) {
  auto k = key_from_hex(hex);
  REQUIRE(k.has_value());
  return *k;
}

key32 small_key(std::uint8_t last) {
  key32 k{};
  k[31] = last;
  return k;
}

template <class T>
void require_failure(const expected<T>& result, errc code, const std::string& reason) {
  REQUIRE_FALSE(result.has_value());
  INFO(result.error_value().to_string());
  CHECK(result.code() == code);
  CHECK_THAT(result.error_value().message(), Catch::Contains(reason));
}

void require_failure(const error& err, const std::string& reason) {
  REQUIRE(err);
  INFO(err.to_string());
  CHECK(err.code() == errc::invalid_argument);
  CHECK_THAT(err.message(), Catch::Contains(reason));
}

// The x-only public key of secret key 3 (BIP-340 test vector 0).
const std::string pubkey3 = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";

// Every character class NIP-01 treats specially, plus UTF-8 of 1 to 4 bytes, a
// combining accent, DEL, U+2028/U+2029 and an embedded NUL.
const std::string tricky_content =
  "quote \" backslash \\ newline \n cr \r tab \t bs \b ff \f nul "s + '\0'
  + " ctl \x01 \x1f del \x7f unicorn \xF0\x9F\xA6\x84 e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 ls "
    "\xE2\x80\xA8 ps \xE2\x80\xA9 </script> /";

event tricky_event() {
  event e;
  e.pubkey = pubkey3;
  e.created_at = 1700000000;
  e.kind = 1;
  e.tags = {{"e", "a\"b\\c\n"}, {"p", pubkey3, "\xF0\x9F\x98\x80"}, {}};
  e.content = tricky_content;
  return e;
}

event signed_note(const keypair& k, std::string content = "hello nostr") {
  event e;
  e.created_at = 1700000000;
  e.kind = 1;
  e.tags = {{"t", "ticktock"}};
  e.content = std::move(content);
  return sign_event(std::move(e), k);
}

}  // namespace

// -- hex --------------------------------------------------------------------

TEST_CASE("hex round-trips bytes and decodes either case", "[nostr][hex]") {
  const std::vector<std::uint8_t> bytes = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
  CHECK(to_hex(bytes) == "00017f80abff");
  auto back = from_hex("00017F80ABff");
  REQUIRE(back.has_value());
  CHECK(*back == bytes);
  auto empty = from_hex("");
  REQUIRE(empty.has_value());
  CHECK(empty->empty());
}

TEST_CASE("malformed hex is rejected with the reason", "[nostr][hex]") {
  require_failure(from_hex("abc"), errc::invalid_argument, "odd length");
  require_failure(from_hex("0g"), errc::invalid_argument, "'g' at position 1");
  require_failure(from_hex("zz"), errc::invalid_argument, "'z' at position 0");
  require_failure(key_from_hex(std::string(63, 'a')), errc::invalid_argument,
                  "64 hex characters, got 63");
  require_failure(key_from_hex(std::string(66, 'a')), errc::invalid_argument,
                  "64 hex characters, got 66");
  require_failure(key_from_hex(std::string(63, 'a') + "x"), errc::invalid_argument,
                  "'x' at position 63");
}

// -- keys and BIP-340 -------------------------------------------------------

TEST_CASE("a secret key yields its BIP-340 x-only public key", "[nostr][keys]") {
  auto kp = keypair_from_secret(small_key(3));
  REQUIRE(kp.has_value());
  CHECK(to_hex(kp->pubkey) == pubkey3);
  CHECK(kp->secret == small_key(3));
}

TEST_CASE("invalid secret keys are rejected", "[nostr][keys]") {
  const key32 zero{};
  require_failure(keypair_from_secret(zero), errc::invalid_argument, "secret key is invalid");
  // The curve order n and anything above it.
  const auto n = key("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
  require_failure(keypair_from_secret(n), errc::invalid_argument, "secret key is invalid");
  key32 all_ff;
  all_ff.fill(0xff);
  require_failure(keypair_from_secret(all_ff), errc::invalid_argument, "secret key is invalid");
  CHECK_FALSE(is_valid_secret(zero));
  CHECK(is_valid_secret(small_key(1)));
}

TEST_CASE("generated key pairs are valid, consistent and distinct", "[nostr][keys]") {
  std::set<key32> secrets;
  for (int i = 0; i < 16; ++i) {
    keypair kp = generate_keypair();
    CHECK(is_valid_secret(kp.secret));
    CHECK(is_valid_pubkey(kp.pubkey));
    auto again = keypair_from_secret(kp.secret);
    REQUIRE(again.has_value());
    CHECK(again->pubkey == kp.pubkey);
    secrets.insert(kp.secret);
  }
  CHECK(secrets.size() == 16);
}

TEST_CASE("BIP-340 test vector 0 reproduces exactly", "[nostr][bip340]") {
  const key32 zero{};
  signature64 sig = schnorr_sign_with_aux(small_key(3), zero, zero);
  CHECK(to_hex(sig)
        == "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca8215"
           "25f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0");
  CHECK(schnorr_verify(key(pubkey3), zero, sig));
}

TEST_CASE("BIP-340 test vector 1 reproduces exactly", "[nostr][bip340]") {
  const auto secret = key("b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef");
  const auto msg = key("243f6a8885a308d313198a2e03707344a4093822299f31d0082efa98ec4e6c89");
  auto kp = keypair_from_secret(secret);
  REQUIRE(kp.has_value());
  CHECK(to_hex(kp->pubkey) == "dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659");
  signature64 sig = schnorr_sign_with_aux(secret, msg, small_key(1));
  CHECK(to_hex(sig)
        == "6896bd60eeae296db48a229ff71dfe071bde413e6d43f917dc8dcf8c78de3341"
           "8906d11ac976abccb20b091292bff4ea897efcb639ea871cfa95f6de339e4b0a");
  CHECK(schnorr_verify(kp->pubkey, msg, sig));
}

TEST_CASE("schnorr signatures verify only for their key and message", "[nostr][bip340]") {
  keypair a = generate_keypair();
  keypair b = generate_keypair();
  const auto msg = key("243f6a8885a308d313198a2e03707344a4093822299f31d0082efa98ec4e6c89");
  signature64 sig = schnorr_sign(a.secret, msg);
  CHECK(schnorr_verify(a.pubkey, msg, sig));
  CHECK_FALSE(schnorr_verify(b.pubkey, msg, sig));
  key32 other = msg;
  other[0] ^= 1;
  CHECK_FALSE(schnorr_verify(a.pubkey, other, sig));
  signature64 flipped = sig;
  flipped[63] ^= 0x80;
  CHECK_FALSE(schnorr_verify(a.pubkey, msg, flipped));
  // Fresh auxiliary randomness: two signatures of one message differ.
  CHECK(schnorr_sign(a.secret, msg) != sig);
  // A public key that is not on the curve never verifies.
  const key32 not_on_curve{};
  CHECK_FALSE(is_valid_pubkey(not_on_curve));
  CHECK_FALSE(schnorr_verify(not_on_curve, msg, sig));
  // An invalid secret signs nothing: the all-zero result never verifies.
  signature64 none = schnorr_sign(key32{}, msg);
  CHECK(none == signature64{});
}

TEST_CASE("keys and signatures work from many threads at once", "[nostr][keys]") {
  // The first use of the shared secp256k1 context may happen here, from
  // several threads: its initialisation and all later uses must be safe.
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&good] {
      for (int i = 0; i < 50; ++i) {
        keypair k = generate_keypair();
        event e = signed_note(k, "thread note " + std::to_string(i));
        if (!verify_event(e))
          ++good;
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(good == 200);
}

// -- NIP-01 events ----------------------------------------------------------

TEST_CASE("the id serialization matches nostr-tools for tricky content", "[nostr][event]") {
  // Expected strings and ids were produced by nostr-tools 2.25.2
  // (serializeEvent, getEventHash) for the same event.
  const std::string expected =
    "[0,\"" + pubkey3 + "\",1700000000,1,[[\"e\",\"a\\\"b\\\\c\\n\"],[\"p\",\"" + pubkey3
    + "\",\"\xF0\x9F\x98\x80\"],[]],\"quote \\\" backslash \\\\ newline \\n cr \\r tab \\t bs \\b "
      "ff \\f nul \\u0000 ctl \\u0001 \\u001f del \x7f unicorn \xF0\x9F\xA6\x84 e\xCC\x81 "
      "\xE4\xB8\xAD\xE6\x96\x87 ls \xE2\x80\xA8 ps \xE2\x80\xA9 </script> /\"]";
  event e = tricky_event();
  CHECK(serialize_for_id(e) == expected);
  CHECK(compute_id(e) == "e0c3f744b87339cf3998276d29e27989df898736ad98e6ac60cf433344730de7");
}

TEST_CASE("an empty event serializes as NIP-01 shows", "[nostr][event]") {
  event e;
  e.pubkey = pubkey3;
  e.created_at = 0;
  e.kind = 0;
  CHECK(serialize_for_id(e) == "[0,\"" + pubkey3 + "\",0,0,[],\"\"]");
  CHECK(compute_id(e) == "e37d3d8a5cd27629fd198d21819aedd901a0a84297c9d9259543e162891c72aa");
}

TEST_CASE("a signed event verifies and carries the signer's key", "[nostr][event]") {
  keypair k = generate_keypair();
  event e = sign_event(tricky_event(), k);
  CHECK(e.pubkey == to_hex(k.pubkey));
  CHECK(e.id == compute_id(e));
  CHECK(e.sig.size() == 128);
  CHECK(e.content == tricky_content);
  CHECK_FALSE(verify_event(e));
}

TEST_CASE("verify_event names malformed fields", "[nostr][event]") {
  const event good = signed_note(generate_keypair());
  REQUIRE_FALSE(verify_event(good));

  event e = good;
  e.id.pop_back();
  require_failure(verify_event(e), "event id must be 64 lowercase hex characters, got 63");

  e = good;
  e.id[0] = 'A';
  require_failure(verify_event(e), "event id must be lowercase hex: 'A' at position 0");

  e = good;
  e.pubkey += "00";
  require_failure(verify_event(e), "event pubkey must be 64 lowercase hex characters, got 66");

  e = good;
  e.pubkey[10] = 'g';
  require_failure(verify_event(e), "event pubkey must be lowercase hex: 'g' at position 10");

  e = good;
  e.sig = e.sig.substr(0, 64);
  require_failure(verify_event(e), "event sig must be 128 lowercase hex characters, got 64");

  e = good;
  e.sig[127] = 'Z';
  require_failure(verify_event(e), "event sig must be lowercase hex");

  e = good;
  e.kind = 65536;
  require_failure(verify_event(e), "kind 65536 is out of range");

  e = good;
  e.created_at = -1;
  require_failure(verify_event(e), "created_at must not be negative");

  e = good;
  e.content = "bad \xC3\x28 utf-8";
  require_failure(verify_event(e), "content is not valid UTF-8");

  e = good;
  e.tags.push_back({"t", "\xED\xA0\x80"});  // an encoded surrogate
  require_failure(verify_event(e), "tag 1 is not valid UTF-8");
}

TEST_CASE("verify_event rejects an id that does not match the content", "[nostr][event]") {
  event e = signed_note(generate_keypair());
  e.content += "!";
  require_failure(verify_event(e), "id does not match content");

  e = signed_note(generate_keypair());
  e.tags.clear();
  require_failure(verify_event(e), "id does not match content");

  e = signed_note(generate_keypair());
  e.created_at += 1;
  require_failure(verify_event(e), "id does not match content");
}

TEST_CASE("verify_event rejects a bad signature", "[nostr][event]") {
  keypair a = generate_keypair();
  keypair b = generate_keypair();
  // b's signature over the same content, presented under a's key.
  event e = signed_note(a);
  event forged = signed_note(b);
  e.sig = forged.sig;
  require_failure(verify_event(e), "bad signature");

  // Another author's key with a recomputed id: the signature is a's.
  e = signed_note(a);
  e.pubkey = to_hex(b.pubkey);
  e.id = compute_id(e);
  require_failure(verify_event(e), "bad signature");

  e = signed_note(a);
  e.sig[0] = e.sig[0] == '0' ? '1' : '0';
  require_failure(verify_event(e), "bad signature");

  // A pubkey that is no curve point, with a matching id.
  e = signed_note(a);
  e.pubkey = std::string(64, '0');
  e.id = compute_id(e);
  require_failure(verify_event(e), "pubkey is not a point on secp256k1");
}

TEST_CASE("events round-trip through JSON", "[nostr][event][json]") {
  event e = sign_event(tricky_event(), generate_keypair());
  std::string json = to_json(e);
  CHECK(json.find("{\"id\":\"" + e.id + "\",\"pubkey\":\"" + e.pubkey
                  + "\",\"created_at\":1700000000,\"kind\":1,\"tags\":[[")
        == 0);
  auto back = event_from_json(json);
  REQUIRE(back.has_value());
  CHECK(*back == e);
  CHECK_FALSE(verify_event(*back));
}

TEST_CASE("event_from_json accepts any member order and ignores unknown members",
          "[nostr][event][json]") {
  event e = signed_note(generate_keypair());
  std::string json = "{\"sig\":\"" + e.sig + "\",\"content\":\"hello nostr\",\"extra\":[1,2],"
                     "\"tags\":[[\"t\",\"ticktock\"]],\"kind\":1,\"created_at\":1700000000,"
                     "\"pubkey\":\"" + e.pubkey + "\",\"id\":\"" + e.id + "\"}";
  auto back = event_from_json(json);
  REQUIRE(back.has_value());
  CHECK(*back == e);
  // JSON escapes such as \u00e9 and surrogate pairs decode to UTF-8.
  auto escaped = event_from_json(
    "{\"id\":\"\",\"pubkey\":\"\",\"sig\":\"\",\"created_at\":1,\"kind\":1,\"tags\":[],"
    "\"content\":\"\\u00e9\\ud83e\\udd84\\/\"}");
  REQUIRE(escaped.has_value());
  CHECK(escaped->content == "\xC3\xA9\xF0\x9F\xA6\x84/");
}

TEST_CASE("event_from_json rejects malformed events with the reason", "[nostr][event][json]") {
  const std::string ok_tail = "\"created_at\":1,\"kind\":1,\"tags\":[],\"content\":\"x\"";
  const std::string ids = "\"id\":\"a\",\"pubkey\":\"b\",\"sig\":\"c\",";
  auto with = [&](const std::string& body) { return event_from_json("{" + body + "}"); };
  REQUIRE(with(ids + ok_tail).has_value());

  require_failure(event_from_json("not json"), errc::invalid_argument, "not valid JSON");
  require_failure(event_from_json("{\"id\":"), errc::invalid_argument, "not valid JSON");
  require_failure(event_from_json("[1,2]"), errc::invalid_argument, "must be a JSON object");
  require_failure(with("\"pubkey\":\"b\",\"sig\":\"c\"," + ok_tail), errc::invalid_argument,
                  "event has no 'id'");
  require_failure(with("\"id\":\"a\",\"sig\":\"c\"," + ok_tail), errc::invalid_argument,
                  "event has no 'pubkey'");
  require_failure(with("\"id\":\"a\",\"pubkey\":\"b\"," + ok_tail), errc::invalid_argument,
                  "event has no 'sig'");
  require_failure(with("\"id\":1,\"pubkey\":\"b\",\"sig\":\"c\"," + ok_tail),
                  errc::invalid_argument, "'id' must be a string");
  require_failure(with(ids + "\"kind\":1,\"tags\":[],\"content\":\"x\""), errc::invalid_argument,
                  "event has no 'created_at'");
  require_failure(with(ids + "\"created_at\":\"1\",\"kind\":1,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'created_at' must be an integer");
  require_failure(with(ids + "\"created_at\":1.5,\"kind\":1,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'created_at' must be an integer");
  require_failure(with(ids + "\"created_at\":-5,\"kind\":1,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'created_at' must not be negative");
  require_failure(
    with(ids + "\"created_at\":18446744073709551615,\"kind\":1,\"tags\":[],\"content\":\"x\""),
    errc::invalid_argument, "'created_at' is out of range");
  require_failure(with(ids + "\"created_at\":1,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "event has no 'kind'");
  require_failure(with(ids + "\"created_at\":1,\"kind\":65536,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'kind' 65536 is out of range 0..65535");
  require_failure(with(ids + "\"created_at\":1,\"kind\":-1,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'kind' -1 is out of range");
  require_failure(with(ids + "\"created_at\":1,\"kind\":true,\"tags\":[],\"content\":\"x\""),
                  errc::invalid_argument, "'kind' must be an integer");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"content\":\"x\""),
                  errc::invalid_argument, "event has no 'tags'");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":{},\"content\":\"x\""),
                  errc::invalid_argument, "'tags' must be an array of arrays of strings");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[[\"e\"],\"p\"],\"content\":\"x\""),
                  errc::invalid_argument, "tag 1 is not an array of strings");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[[\"e\",5]],\"content\":\"x\""),
                  errc::invalid_argument, "tag 0 has an element that is not a string");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[[null]],\"content\":\"x\""),
                  errc::invalid_argument, "tag 0 has an element that is not a string");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[]"), errc::invalid_argument,
                  "event has no 'content'");
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[],\"content\":null"),
                  errc::invalid_argument, "'content' must be a string");
  // Invalid UTF-8 inside a string is not JSON.
  require_failure(with(ids + "\"created_at\":1,\"kind\":1,\"tags\":[],\"content\":\"\xff\""),
                  errc::invalid_argument, "not valid JSON");
}

TEST_CASE("event_from_json enforces the content size limit", "[nostr][event][json]") {
  auto make = [](std::size_t n) {
    return "{\"id\":\"\",\"pubkey\":\"\",\"sig\":\"\",\"created_at\":1,\"kind\":1,\"tags\":[],"
           "\"content\":\""
           + std::string(n, 'x') + "\"}";
  };
  REQUIRE(event_from_json(make(default_max_content_bytes)).has_value());
  require_failure(event_from_json(make(default_max_content_bytes + 1)), errc::message_too_large,
                  "content is 65537 bytes, above the limit of 65536");
  REQUIRE(event_from_json(make(10), 10).has_value());
  require_failure(event_from_json(make(11), 10), errc::message_too_large,
                  "above the limit of 10");
}

// -- relay messages ---------------------------------------------------------

TEST_CASE("client messages are built exactly", "[nostr][relay]") {
  CHECK(req_message("sub\"1", "{\"kinds\":[1],\"limit\":10}")
        == "[\"REQ\",\"sub\\\"1\",{\"kinds\":[1],\"limit\":10}]");
  CHECK(close_message("sub-1") == "[\"CLOSE\",\"sub-1\"]");
  event e = signed_note(generate_keypair());
  CHECK(event_message(e) == "[\"EVENT\"," + to_json(e) + "]");
}

TEST_CASE("relay messages of every type parse", "[nostr][relay]") {
  event e = signed_note(generate_keypair(), "line\nbreak");
  auto ev = parse_relay_message("[\"EVENT\",\"sub-1\"," + to_json(e) + "]");
  REQUIRE(ev.has_value());
  REQUIRE(std::holds_alternative<relay_event>(*ev));
  CHECK(std::get<relay_event>(*ev).subscription_id == "sub-1");
  CHECK(std::get<relay_event>(*ev).event == e);

  auto ok = parse_relay_message("[\"OK\",\"" + e.id + "\",false,\"blocked: spam\"]");
  REQUIRE(ok.has_value());
  REQUIRE(std::holds_alternative<relay_ok>(*ok));
  CHECK(std::get<relay_ok>(*ok).event_id == e.id);
  CHECK_FALSE(std::get<relay_ok>(*ok).accepted);
  CHECK(std::get<relay_ok>(*ok).message == "blocked: spam");

  auto ok_short = parse_relay_message("[\"OK\",\"" + e.id + "\",true]");
  REQUIRE(ok_short.has_value());
  CHECK(std::get<relay_ok>(*ok_short).accepted);
  CHECK(std::get<relay_ok>(*ok_short).message.empty());

  auto eose = parse_relay_message(" [ \"EOSE\" , \"sub-1\" ] ");
  REQUIRE(eose.has_value());
  CHECK(std::get<relay_eose>(*eose).subscription_id == "sub-1");

  auto notice = parse_relay_message("[\"NOTICE\",\"rate limited\"]");
  REQUIRE(notice.has_value());
  CHECK(std::get<relay_notice>(*notice).message == "rate limited");

  auto closed = parse_relay_message("[\"CLOSED\",\"sub-1\",\"error: shutting down\"]");
  REQUIRE(closed.has_value());
  CHECK(std::get<relay_closed>(*closed).subscription_id == "sub-1");
  CHECK(std::get<relay_closed>(*closed).message == "error: shutting down");

  auto auth = parse_relay_message("[\"AUTH\",\"challenge-123\"]");
  REQUIRE(auth.has_value());
  CHECK(std::get<relay_auth>(*auth).challenge == "challenge-123");
}

TEST_CASE("malformed relay messages are rejected with the reason", "[nostr][relay]") {
  const std::string id(64, 'a');
  require_failure(parse_relay_message(""), errc::invalid_argument, "not valid JSON");
  require_failure(parse_relay_message("[\"EOSE\",\"x\""), errc::invalid_argument,
                  "not valid JSON");
  require_failure(parse_relay_message("{\"type\":\"EOSE\"}"), errc::invalid_argument,
                  "must be a JSON array");
  require_failure(parse_relay_message("[]"), errc::invalid_argument, "empty array");
  require_failure(parse_relay_message("[1,\"x\"]"), errc::invalid_argument,
                  "type must be a string");
  require_failure(parse_relay_message("[\"HELLO\",\"x\"]"), errc::invalid_argument,
                  "unknown relay message type 'HELLO'");
  require_failure(parse_relay_message("[\"EVENT\"]"), errc::invalid_argument,
                  "EVENT message has no subscription id");
  require_failure(parse_relay_message("[\"EVENT\",7,{}]"), errc::invalid_argument,
                  "EVENT message subscription id must be a string");
  require_failure(parse_relay_message("[\"EVENT\",\"s\"]"), errc::invalid_argument,
                  "EVENT message has no event");
  require_failure(parse_relay_message("[\"EVENT\",\"s\",\"event\"]"), errc::invalid_argument,
                  "event must be a JSON object");
  require_failure(parse_relay_message("[\"EVENT\",\"s\",{\"id\":\"a\"}]"), errc::invalid_argument,
                  "event has no");
  require_failure(parse_relay_message("[\"OK\"]"), errc::invalid_argument,
                  "OK message has no event id");
  require_failure(parse_relay_message("[\"OK\",\"abc\",true,\"\"]"), errc::invalid_argument,
                  "OK message event id must be 64 lowercase hex characters, got 3");
  require_failure(parse_relay_message("[\"OK\",\"" + id + "\"]"), errc::invalid_argument,
                  "OK message has no accepted flag");
  require_failure(parse_relay_message("[\"OK\",\"" + id + "\",\"true\",\"\"]"),
                  errc::invalid_argument, "accepted flag must be true or false");
  require_failure(parse_relay_message("[\"OK\",\"" + id + "\",true,5]"), errc::invalid_argument,
                  "OK message message must be a string");
  require_failure(parse_relay_message("[\"EOSE\"]"), errc::invalid_argument,
                  "EOSE message has no subscription id");
  require_failure(parse_relay_message("[\"NOTICE\",null]"), errc::invalid_argument,
                  "NOTICE message message must be a string");
  require_failure(parse_relay_message("[\"CLOSED\",\"s\",[]]"), errc::invalid_argument,
                  "CLOSED message message must be a string");
  require_failure(parse_relay_message("[\"AUTH\"]"), errc::invalid_argument,
                  "AUTH message has no challenge");

  event big = signed_note(generate_keypair(), std::string(200, 'x'));
  require_failure(parse_relay_message("[\"EVENT\",\"s\"," + to_json(big) + "]", 100),
                  errc::message_too_large, "content is 200 bytes");
}

// -- NIP-19 -----------------------------------------------------------------

TEST_CASE("npub and nsec match the NIP-19 examples", "[nostr][nip19]") {
  const auto pub = key("7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e");
  const std::string npub_text = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg";
  CHECK(npub(pub) == npub_text);
  auto decoded = decode_npub(npub_text);
  REQUIRE(decoded.has_value());
  CHECK(*decoded == pub);

  const auto sec = key("67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa");
  const std::string nsec_text = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5";
  CHECK(nsec(sec) == nsec_text);
  auto decoded_sec = decode_nsec(nsec_text);
  REQUIRE(decoded_sec.has_value());
  CHECK(*decoded_sec == sec);

  // Values nostr-tools 2.25.2 gives for secret key 3.
  CHECK(npub(key(pubkey3)) == "npub1lycg5qvjtrp3qjf5f7zl382j9x6nrjz9sdhenvyxq8c3808qxmus6gq266");
  CHECK(nsec(small_key(3)) == "nsec1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqps52s3re");
}

TEST_CASE("npub and nsec round-trip generated keys, upper case included", "[nostr][nip19]") {
  for (int i = 0; i < 8; ++i) {
    keypair k = generate_keypair();
    std::string p = npub(k.pubkey);
    CHECK(p.size() == 63);
    CHECK(*decode_npub(p) == k.pubkey);
    CHECK(*decode_nsec(nsec(k.secret)) == k.secret);
    for (auto& c : p)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto upper = decode_npub(p);
    REQUIRE(upper.has_value());
    CHECK(*upper == k.pubkey);
  }
}

TEST_CASE("malformed npub and nsec strings are rejected with the reason", "[nostr][nip19]") {
  const std::string good = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg";
  std::string typo = good;
  typo[20] = typo[20] == 'q' ? 'p' : 'q';
  require_failure(decode_npub(typo), errc::invalid_argument, "bad bech32 checksum");
  std::string mixed = good;
  mixed[6] = 'E';  // "npub10elf..." with one upper-case letter
  require_failure(decode_npub(mixed), errc::invalid_argument, "mixes upper and lower case");
  std::string not_charset = good;
  not_charset[10] = 'b';
  require_failure(decode_npub(not_charset), errc::invalid_argument,
                  "'b' at position 10 is not a bech32 character");
  require_failure(decode_npub("nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"),
                  errc::invalid_argument, "expected a 'npub1...' string, got prefix 'nsec'");
  require_failure(decode_nsec(good), errc::invalid_argument, "expected a 'nsec1...' string");
  require_failure(decode_npub("npub"), errc::invalid_argument, "not a bech32 string");
  require_failure(decode_npub("npub1qqq"), errc::invalid_argument, "too short");
  require_failure(decode_npub("npub1 qqqqqqq"), errc::invalid_argument, "contains ' '");
  require_failure(decode_npub(good + std::string(40, 'q')), errc::invalid_argument,
                  "more than 90");
  // Valid bech32 (made with nostr-tools' encodeBytes) of 31 and 33 bytes.
  require_failure(decode_npub("npub1qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8quckmx97"),
                  errc::invalid_argument, "payload is 31 bytes, a key is 32");
  require_failure(decode_npub("npub1qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8qurswpc8qursw4mkcx8"),
                  errc::invalid_argument, "payload is 33 bytes, a key is 32");
}

// -- NIP-44 (beyond the official vectors in nip44_vectors_test.cpp) ---------

TEST_CASE("NIP-44 round-trips between two parties", "[nostr][nip44]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  auto ab = nip44::conversation_key(alice.secret, bob.pubkey);
  auto ba = nip44::conversation_key(bob.secret, alice.pubkey);
  REQUIRE(ab.has_value());
  REQUIRE(ba.has_value());
  CHECK(*ab == *ba);

  for (std::size_t size : {std::size_t{1}, std::size_t{32}, std::size_t{33}, std::size_t{1000},
                           nip44::max_plaintext_size}) {
    std::string plaintext(size, 'a');
    plaintext[0] = '\0';
    auto payload = nip44::encrypt(plaintext, *ab);
    REQUIRE(payload.has_value());
    auto back = nip44::decrypt(*payload, *ba);
    REQUIRE(back.has_value());
    CHECK(*back == plaintext);
  }
  // A random nonce per message: the same plaintext encrypts differently.
  CHECK(*nip44::encrypt("same", *ab) != *nip44::encrypt("same", *ab));
}

TEST_CASE("NIP-44 rejects bad plaintext lengths, keys and payloads", "[nostr][nip44]") {
  keypair alice = generate_keypair();
  keypair bob = generate_keypair();
  key32 ck = *nip44::conversation_key(alice.secret, bob.pubkey);

  require_failure(nip44::encrypt("", ck), errc::invalid_argument,
                  "plaintext must be 1..65535 bytes, got 0");
  require_failure(nip44::encrypt(std::string(65536, 'x'), ck), errc::invalid_argument,
                  "got 65536");
  require_failure(nip44::conversation_key(key32{}, bob.pubkey), errc::invalid_argument,
                  "secret key is invalid");
  require_failure(nip44::conversation_key(alice.secret, key32{}), errc::invalid_argument,
                  "public key is not a point on secp256k1");

  std::string payload = *nip44::encrypt("attack at dawn", ck);
  // Another conversation's key.
  key32 other = *nip44::conversation_key(alice.secret, generate_keypair().pubkey);
  require_failure(nip44::decrypt(payload, other), errc::invalid_argument, "invalid MAC");
  // One flipped ciphertext bit (base64 character in the middle).
  std::string tampered = payload;
  tampered[60] = tampered[60] == 'A' ? 'B' : 'A';
  require_failure(nip44::decrypt(tampered, ck), errc::invalid_argument, "invalid MAC");
  require_failure(nip44::decrypt("#" + payload.substr(1), ck), errc::invalid_argument,
                  "unknown version");
  require_failure(nip44::decrypt(payload.substr(0, 100), ck), errc::invalid_argument,
                  "outside 132..87472");
  require_failure(nip44::decrypt("", ck), errc::invalid_argument, "outside 132..87472");
  require_failure(nip44::decrypt(std::string(87476, 'A'), ck), errc::invalid_argument,
                  "outside 132..87472");
  std::string bad_char = payload;
  bad_char[40] = '*';
  require_failure(nip44::decrypt(bad_char, ck), errc::invalid_argument, "invalid base64");
  // Version byte 1: 'A' 'Q' encodes 0x01 followed by nonce bits.
  std::string version1 = payload;
  version1[0] = 'A';
  version1[1] = 'Q';
  require_failure(nip44::decrypt(version1, ck), errc::invalid_argument, "unknown version 1");
}

TEST_CASE("NIP-44 padded lengths follow the power-of-two chunks", "[nostr][nip44]") {
  CHECK(nip44::calc_padded_len(0) == 32);
  CHECK(nip44::calc_padded_len(1) == 32);
  CHECK(nip44::calc_padded_len(32) == 32);
  CHECK(nip44::calc_padded_len(33) == 64);
  CHECK(nip44::calc_padded_len(257) == 320);
  CHECK(nip44::calc_padded_len(65535) == 65536);
}
