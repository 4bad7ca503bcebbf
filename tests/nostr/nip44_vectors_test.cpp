// NIP-44 v2 against the official test vectors (tests/nostr/data/nip44.vectors.json,
// see data/README.md). Every valid and every invalid vector runs; a missing,
// altered or empty vector file fails the tests.

#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <string>

#include <boost/json.hpp>
#include <sodium.h>

#include "ticktock/runtime/nostr.hpp"

using namespace ticktock;
using namespace ticktock::nostr;
namespace json = boost::json;

namespace {

// The checksum NIP-44 publishes for the vector file.
constexpr std::string_view vectors_sha256 =
  "269ed0f69e4c192512cc779e78c555090cebc7c785b609e338a62afc3ce25040";

std::string sha256_hex(std::string_view data) {
  REQUIRE(sodium_init() >= 0);
  key32 digest;
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size());
  return to_hex(digest);
}

// The "v2" object of the vector file, read and checked once.
const json::object& v2() {
  static const json::value root = [] {
    std::ifstream in{NIP44_VECTORS, std::ios::binary};
    if (!in)
      FAIL("cannot open the NIP-44 vector file " NIP44_VECTORS);
    std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
    if (sha256_hex(text) != vectors_sha256)
      FAIL("the NIP-44 vector file's sha256 is not the one NIP-44 publishes");
    return json::parse(text);
  }();
  return root.at("v2").as_object();
}

const json::value& at(const json::object& obj, std::string_view path1, std::string_view path2) {
  return obj.at(path1).as_object().at(path2);
}

std::string str(const json::value& v, std::string_view name) {
  const auto& s = v.as_object().at(name).as_string();
  return std::string{s.data(), s.size()};
}

key32 key(const json::value& v, std::string_view name) {
  auto k = key_from_hex(str(v, name));
  REQUIRE(k.has_value());
  return *k;
}

key32 pubkey_of(const key32& secret) {
  auto kp = keypair_from_secret(secret);
  REQUIRE(kp.has_value());
  return kp->pubkey;
}

std::string note(const json::value& v) {
  const auto* n = v.as_object().if_contains("note");
  return n != nullptr && n->is_string() ? std::string{n->as_string().c_str()} : std::string{};
}

}  // namespace

TEST_CASE("the NIP-44 vector file is the published one and holds every group",
          "[nostr][nip44][vectors]") {
  const auto& valid = v2().at("valid").as_object();
  const auto& invalid = v2().at("invalid").as_object();
  CHECK(valid.at("get_conversation_key").as_array().size() > 0);
  CHECK(valid.at("get_message_keys").as_object().at("keys").as_array().size() > 0);
  CHECK(valid.at("calc_padded_len").as_array().size() > 0);
  CHECK(valid.at("encrypt_decrypt").as_array().size() > 0);
  CHECK(valid.at("encrypt_decrypt_long_msg").as_array().size() > 0);
  CHECK(invalid.at("encrypt_msg_lengths").as_array().size() > 0);
  CHECK(invalid.at("get_conversation_key").as_array().size() > 0);
  CHECK(invalid.at("decrypt").as_array().size() > 0);
}

TEST_CASE("NIP-44 valid get_conversation_key vectors", "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "valid", "get_conversation_key").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    INFO("sec1 " << str(v, "sec1") << " pub2 " << str(v, "pub2") << " " << note(v));
    auto ck = nip44::conversation_key(key(v, "sec1"), key(v, "pub2"));
    REQUIRE(ck.has_value());
    CHECK(to_hex(*ck) == str(v, "conversation_key"));
  }
}

TEST_CASE("NIP-44 valid get_message_keys vectors", "[nostr][nip44][vectors]") {
  const auto& group = at(v2(), "valid", "get_message_keys");
  const key32 ck = key(group, "conversation_key");
  const auto& keys = group.as_object().at("keys").as_array();
  REQUIRE(keys.size() > 0);
  for (const auto& v : keys) {
    INFO("nonce " << str(v, "nonce"));
    auto mk = nip44::get_message_keys(ck, key(v, "nonce"));
    CHECK(to_hex(mk.chacha_key) == str(v, "chacha_key"));
    CHECK(to_hex(mk.chacha_nonce) == str(v, "chacha_nonce"));
    CHECK(to_hex(mk.hmac_key) == str(v, "hmac_key"));
  }
}

TEST_CASE("NIP-44 valid calc_padded_len vectors", "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "valid", "calc_padded_len").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    const auto& pair = v.as_array();
    const auto len = static_cast<std::size_t>(pair.at(0).to_number<std::int64_t>());
    const auto padded = static_cast<std::size_t>(pair.at(1).to_number<std::int64_t>());
    INFO("unpadded length " << len);
    CHECK(nip44::calc_padded_len(len) == padded);
  }
}

TEST_CASE("NIP-44 valid encrypt_decrypt vectors", "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "valid", "encrypt_decrypt").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    INFO("nonce " << str(v, "nonce") << " plaintext " << str(v, "plaintext"));
    const key32 sec1 = key(v, "sec1");
    const key32 sec2 = key(v, "sec2");
    auto ck = nip44::conversation_key(sec1, pubkey_of(sec2));
    REQUIRE(ck.has_value());
    CHECK(to_hex(*ck) == str(v, "conversation_key"));
    // The other side derives the same key.
    auto ck_other = nip44::conversation_key(sec2, pubkey_of(sec1));
    REQUIRE(ck_other.has_value());
    CHECK(*ck_other == *ck);

    auto payload = nip44::encrypt(str(v, "plaintext"), *ck, key(v, "nonce"));
    REQUIRE(payload.has_value());
    CHECK(*payload == str(v, "payload"));
    auto plaintext = nip44::decrypt(str(v, "payload"), *ck_other);
    REQUIRE(plaintext.has_value());
    CHECK(*plaintext == str(v, "plaintext"));
  }
}

TEST_CASE("NIP-44 valid encrypt_decrypt_long_msg vectors", "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "valid", "encrypt_decrypt_long_msg").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    const std::string pattern = str(v, "pattern");
    const auto repeat = v.as_object().at("repeat").to_number<std::int64_t>();
    std::string plaintext;
    for (std::int64_t i = 0; i < repeat; ++i)
      plaintext += pattern;
    INFO("pattern " << pattern << " x " << repeat);
    CHECK(sha256_hex(plaintext) == str(v, "plaintext_sha256"));
    const key32 ck = key(v, "conversation_key");
    auto payload = nip44::encrypt(plaintext, ck, key(v, "nonce"));
    REQUIRE(payload.has_value());
    CHECK(sha256_hex(*payload) == str(v, "payload_sha256"));
    auto back = nip44::decrypt(*payload, ck);
    REQUIRE(back.has_value());
    CHECK(*back == plaintext);
  }
}

TEST_CASE("NIP-44 invalid encrypt_msg_lengths vectors are refused", "[nostr][nip44][vectors]") {
  const auto& lengths = at(v2(), "invalid", "encrypt_msg_lengths").as_array();
  REQUIRE(lengths.size() > 0);
  key32 ck{};
  ck[0] = 1;
  for (const auto& l : lengths) {
    const auto len = static_cast<std::size_t>(l.to_number<std::int64_t>());
    INFO("plaintext length " << len);
    auto payload = nip44::encrypt(std::string(len, 'a'), ck);
    REQUIRE_FALSE(payload.has_value());
    CHECK(payload.code() == errc::invalid_argument);
    CHECK_THAT(payload.error_value().message(), Catch::Contains("plaintext must be 1..65535 bytes"));
  }
}

TEST_CASE("NIP-44 invalid get_conversation_key vectors are refused", "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "invalid", "get_conversation_key").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    INFO(note(v));
    auto ck = nip44::conversation_key(key(v, "sec1"), key(v, "pub2"));
    REQUIRE_FALSE(ck.has_value());
    CHECK(ck.code() == errc::invalid_argument);
    const std::string n = note(v);
    const bool secret_problem = n.find("sec1") == 0;
    CHECK_THAT(ck.error_value().message(),
               Catch::Contains(secret_problem ? "secret key is invalid"
                                              : "public key is not a point on secp256k1"));
  }
}

TEST_CASE("NIP-44 invalid decrypt vectors are refused for the stated reason",
          "[nostr][nip44][vectors]") {
  const auto& vectors = at(v2(), "invalid", "decrypt").as_array();
  REQUIRE(vectors.size() > 0);
  for (const auto& v : vectors) {
    const std::string n = note(v);
    INFO(n << ": " << str(v, "payload"));
    auto plaintext = nip44::decrypt(str(v, "payload"), key(v, "conversation_key"));
    REQUIRE_FALSE(plaintext.has_value());
    CHECK(plaintext.code() == errc::invalid_argument);
    std::string reason;
    if (n.rfind("unknown encryption version", 0) == 0)
      reason = "unknown version";
    else if (n.rfind("invalid base64", 0) == 0)
      reason = "invalid base64";
    else if (n.rfind("invalid MAC", 0) == 0)
      reason = "invalid MAC";
    else if (n.rfind("invalid padding", 0) == 0)
      reason = "invalid padding";
    else if (n.rfind("invalid payload length", 0) == 0)
      reason = "outside 132..87472";
    else
      FAIL("vector with an unexpected note: " << n);
    CHECK_THAT(plaintext.error_value().message(), Catch::Contains(reason));
  }
}
