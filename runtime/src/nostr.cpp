#include "ticktock/runtime/nostr.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/runtime/text.hpp"

#include <algorithm>
#include <cctype>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <utility>

#include <boost/json.hpp>
#include <secp256k1.h>
#include <secp256k1_ecdh.h>
#include <secp256k1_extrakeys.h>
#include <secp256k1_schnorrsig.h>
#include <sodium.h>

#include <arpa/inet.h>

namespace ticktock::nostr {

namespace {

// -- process-wide crypto state ------------------------------------------------

[[noreturn]] void crypto_init_failed(const char* what) {
  std::fprintf(stderr, "ticktock::nostr: %s\n", what);
  std::abort();
}

// One secp256k1 context for the process, created and randomized on first use
// (a function-local static, so the initialisation is thread-safe) and only read
// afterwards, which libsecp256k1 allows from any number of threads. It also
// initialises libsodium before anything here draws random bytes.
const secp256k1_context* ctx() {
  static secp256k1_context* const context = [] {
    if (sodium_init() < 0)
      crypto_init_failed("sodium_init failed");
    secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (c == nullptr)
      crypto_init_failed("secp256k1_context_create failed");
    unsigned char seed[32];
    randombytes_buf(seed, sizeof seed);
    if (secp256k1_context_randomize(c, seed) != 1)
      crypto_init_failed("secp256k1_context_randomize failed");
    sodium_memzero(seed, sizeof seed);
    return c;
  }();
  return context;
}

// Wipes a secret-bearing object when it goes out of scope.
template <class T>
struct wipe_on_exit {
  T& value;
  ~wipe_on_exit() { sodium_memzero(&value, sizeof value); }
};

// -- text helpers -------------------------------------------------------------

constexpr char hex_digits[] = "0123456789abcdef";

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// A printable rendering of one byte for error messages.
std::string shown_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f)
    return std::string{'\''} + c + '\'';
  std::string out = "byte 0x";
  out += hex_digits[u >> 4];
  out += hex_digits[u & 15];
  return out;
}

// Up to 40 bytes of untrusted text, with anything unprintable replaced, for
// error messages.
std::string shown_text(std::string_view s) {
  std::string out{s.substr(0, 40)};
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
      c = '?';
  if (s.size() > 40)
    out += "...";
  return out;
}

error invalid(std::string message) {
  return error{errc::invalid_argument, std::move(message)};
}

// Checks that `s` is exactly `length` lowercase hex characters.
error check_lower_hex(std::string_view field, std::string_view s, std::size_t length) {
  if (s.size() != length)
    return invalid(std::string{field} + " must be " + std::to_string(length)
                   + " lowercase hex characters, got " + std::to_string(s.size()));
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return invalid(std::string{field} + " must be lowercase hex: " + shown_char(c)
                     + " at position " + std::to_string(i));
  }
  return {};
}

// Appends `s` as a JSON string with the NIP-01 escaping rules, which are those
// of JSON.stringify: `"` and `\`, \n \r \t \b \f by name, the other control
// characters below 0x20 as \u00xx (lowercase hex), every other byte verbatim.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        auto u = static_cast<unsigned char>(ch);
        if (u < 0x20) {
          out += "\\u00";
          out += hex_digits[u >> 4];
          out += hex_digits[u & 15];
        } else {
          out += ch;
        }
      }
    }
  }
  out += '"';
}

void append_tags(std::string& out, const std::vector<std::vector<std::string>>& tags) {
  out += '[';
  for (std::size_t i = 0; i < tags.size(); ++i) {
    if (i != 0)
      out += ',';
    out += '[';
    for (std::size_t j = 0; j < tags[i].size(); ++j) {
      if (j != 0)
        out += ',';
      append_json_string(out, tags[i][j]);
    }
    out += ']';
  }
  out += ']';
}

// -- hashing ------------------------------------------------------------------

key32 sha256(std::string_view data) {
  ctx();  // sodium_init
  key32 out;
  crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return out;
}

// HMAC-SHA256 over the concatenation of `parts`.
key32 hmac_sha256(std::span<const std::uint8_t> key,
                  std::initializer_list<std::span<const std::uint8_t>> parts) {
  crypto_auth_hmacsha256_state state;
  wipe_on_exit<crypto_auth_hmacsha256_state> wipe{state};
  crypto_auth_hmacsha256_init(&state, key.data(), key.size());
  for (auto part : parts)
    crypto_auth_hmacsha256_update(&state, part.data(), part.size());
  key32 out;
  crypto_auth_hmacsha256_final(&state, out.data());
  return out;
}

// -- JSON (Boost.JSON) to events ------------------------------------------------

namespace json = boost::json;

// A non-negative integer member, as int64; nullopt-like error otherwise.
expected<std::int64_t> integer_member(const json::object& obj, std::string_view name) {
  const json::value* v = obj.if_contains(name);
  if (v == nullptr)
    return invalid("event has no '" + std::string{name} + "'");
  if (v->is_int64())
    return v->get_int64();
  if (v->is_uint64())
    return invalid("event '" + std::string{name} + "' is out of range");
  return invalid("event '" + std::string{name} + "' must be an integer");
}

expected<std::string> string_member(const json::object& obj, std::string_view name) {
  const json::value* v = obj.if_contains(name);
  if (v == nullptr)
    return invalid("event has no '" + std::string{name} + "'");
  if (!v->is_string())
    return invalid("event '" + std::string{name} + "' must be a string");
  const auto& s = v->get_string();
  return std::string{s.data(), s.size()};
}

// Whether an event object must have a "sig" member: rumors (NIP-59) have none.
enum class sig_member { required, optional };

expected<event> event_from_value(const json::value& v, std::size_t max_content_bytes,
                                 sig_member sig = sig_member::required) {
  if (!v.is_object())
    return invalid("event must be a JSON object");
  const auto& obj = v.get_object();
  event e;

  // Content first, so that an oversized event is reported as such.
  const json::value* content = obj.if_contains("content");
  if (content == nullptr)
    return invalid("event has no 'content'");
  if (!content->is_string())
    return invalid("event 'content' must be a string");
  if (content->get_string().size() > max_content_bytes)
    return error{errc::message_too_large,
                 "event content is " + std::to_string(content->get_string().size())
                   + " bytes, above the limit of " + std::to_string(max_content_bytes)};
  e.content.assign(content->get_string().data(), content->get_string().size());

  for (auto [name, field] : {std::pair{"id", &e.id}, std::pair{"pubkey", &e.pubkey},
                             std::pair{"sig", &e.sig}}) {
    if (sig == sig_member::optional && field == &e.sig && !obj.contains("sig"))
      continue;
    auto s = string_member(obj, name);
    if (!s)
      return s.error_value();
    *field = std::move(*s);
  }

  auto created_at = integer_member(obj, "created_at");
  if (!created_at)
    return created_at.error_value();
  if (*created_at < 0)
    return invalid("event 'created_at' must not be negative");
  e.created_at = *created_at;

  auto kind = integer_member(obj, "kind");
  if (!kind)
    return kind.error_value();
  if (*kind < 0 || *kind > max_kind)
    return invalid("event 'kind' " + std::to_string(*kind) + " is out of range 0..65535");
  e.kind = static_cast<int>(*kind);

  const json::value* tags = obj.if_contains("tags");
  if (tags == nullptr)
    return invalid("event has no 'tags'");
  if (!tags->is_array())
    return invalid("event 'tags' must be an array of arrays of strings");
  e.tags.reserve(tags->get_array().size());
  std::size_t i = 0;
  for (const auto& tag : tags->get_array()) {
    if (!tag.is_array())
      return invalid("event tag " + std::to_string(i) + " is not an array of strings");
    std::vector<std::string> fields;
    fields.reserve(tag.get_array().size());
    for (const auto& f : tag.get_array()) {
      if (!f.is_string())
        return invalid("event tag " + std::to_string(i) + " has an element that is not a string");
      fields.emplace_back(f.get_string().data(), f.get_string().size());
    }
    e.tags.push_back(std::move(fields));
    ++i;
  }
  return e;
}

expected<json::value> parse_json(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view{text.data(), text.size()}, ec);
  if (ec)
    return invalid(std::string{what} + " is not valid JSON: " + ec.message());
  return v;
}

// -- bech32 (BIP-173) -----------------------------------------------------------

constexpr char bech32_charset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

std::uint32_t bech32_polymod(std::span<const std::uint8_t> values) {
  constexpr std::uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
  std::uint32_t chk = 1;
  for (std::uint8_t v : values) {
    std::uint32_t top = chk >> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (int i = 0; i < 5; ++i)
      if ((top >> i) & 1)
        chk ^= gen[i];
  }
  return chk;
}

std::vector<std::uint8_t> bech32_hrp_expand(std::string_view hrp) {
  std::vector<std::uint8_t> out;
  out.reserve(hrp.size() * 2 + 1);
  for (char c : hrp)
    out.push_back(static_cast<std::uint8_t>(static_cast<unsigned char>(c) >> 5));
  out.push_back(0);
  for (char c : hrp)
    out.push_back(static_cast<std::uint8_t>(static_cast<unsigned char>(c) & 31));
  return out;
}

std::string bech32_encode_bytes(std::string_view hrp, std::span<const std::uint8_t> bytes) {
  // 8-bit bytes to 5-bit groups, zero-padded at the end.
  std::vector<std::uint8_t> data;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      data.push_back(static_cast<std::uint8_t>((acc >> bits) & 31));
    }
  }
  if (bits > 0)
    data.push_back(static_cast<std::uint8_t>((acc << (5 - bits)) & 31));

  std::vector<std::uint8_t> values = bech32_hrp_expand(hrp);
  values.insert(values.end(), data.begin(), data.end());
  values.insert(values.end(), 6, 0);
  std::uint32_t mod = bech32_polymod(values) ^ 1;

  std::string out{hrp};
  out += '1';
  for (std::uint8_t d : data)
    out += bech32_charset[d];
  for (int i = 0; i < 6; ++i)
    out += bech32_charset[(mod >> (5 * (5 - i))) & 31];
  return out;
}

expected<key32> bech32_decode_key(std::string_view text, std::string_view expected_hrp) {
  const std::string what{expected_hrp};
  if (text.size() > 90)
    return invalid(what + ": bech32 string is " + std::to_string(text.size())
                   + " characters, more than 90");
  bool has_lower = false;
  bool has_upper = false;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126)
      return invalid(what + ": bech32 string contains " + shown_char(c));
    has_lower |= (c >= 'a' && c <= 'z');
    has_upper |= (c >= 'A' && c <= 'Z');
  }
  if (has_lower && has_upper)
    return invalid(what + ": bech32 string mixes upper and lower case");
  std::string s{text};
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');

  auto sep = s.rfind('1');
  if (sep == std::string::npos || sep == 0)
    return invalid(what + ": not a bech32 string (no human-readable part before '1')");
  if (s.size() - sep - 1 < 6)
    return invalid(what + ": bech32 string is too short for its checksum");
  std::string_view hrp{s.data(), sep};
  if (hrp != expected_hrp)
    return invalid("expected a '" + what + "1...' string, got prefix '" + shown_text(hrp) + "'");

  std::vector<std::uint8_t> data;
  for (std::size_t i = sep + 1; i < s.size(); ++i) {
    const char* p = std::strchr(bech32_charset, s[i]);
    if (p == nullptr || *p == '\0')
      return invalid(what + ": " + shown_char(s[i]) + " at position " + std::to_string(i)
                     + " is not a bech32 character");
    data.push_back(static_cast<std::uint8_t>(p - bech32_charset));
  }
  std::vector<std::uint8_t> values = bech32_hrp_expand(hrp);
  values.insert(values.end(), data.begin(), data.end());
  if (bech32_polymod(values) != 1)
    return invalid(what + ": bad bech32 checksum");
  data.resize(data.size() - 6);

  // 5-bit groups back to bytes; at most 4 bits of zero padding may remain.
  std::vector<std::uint8_t> bytes;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::uint8_t d : data) {
    acc = (acc << 5) | d;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
    }
  }
  if (bits >= 5 || ((acc << (8 - bits)) & 0xff) != 0)
    return invalid(what + ": invalid bech32 padding");
  if (bytes.size() != 32)
    return invalid(what + ": payload is " + std::to_string(bytes.size())
                   + " bytes, a key is 32");
  key32 out;
  std::copy(bytes.begin(), bytes.end(), out.begin());
  sodium_memzero(bytes.data(), bytes.size());
  return out;
}

// -- NIP-44 helpers -----------------------------------------------------------

// ECDH "hash" that returns the shared point's x coordinate unhashed, as
// NIP-44 requires.
int ecdh_copy_x(unsigned char* output, const unsigned char* x32, const unsigned char*, void*) {
  std::memcpy(output, x32, 32);
  return 1;
}

constexpr std::uint8_t nip44_version = 2;
constexpr std::size_t nip44_min_payload = 132;
constexpr std::size_t nip44_max_payload = 87472;
constexpr std::size_t nip44_min_data = 99;
constexpr std::size_t nip44_max_data = 65603;

}  // namespace

// -- hex ------------------------------------------------------------------------

std::string to_hex(std::span<const std::uint8_t> bytes) { return identity::to_hex(bytes); }

expected<std::vector<std::uint8_t>> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0)
    return invalid("hex string has an odd length (" + std::to_string(hex.size()) + ")");
  std::vector<std::uint8_t> out(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_value(hex[i]);
    int lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      std::size_t bad = hi < 0 ? i : i + 1;
      return invalid("not hex: " + shown_char(hex[bad]) + " at position " + std::to_string(bad));
    }
    out[i / 2] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

expected<key32> key_from_hex(std::string_view hex) {
  if (hex.size() != 64)
    return invalid("a 32-byte key is 64 hex characters, got " + std::to_string(hex.size()));
  auto bytes = from_hex(hex);
  if (!bytes)
    return bytes.error_value();
  key32 out;
  std::copy(bytes->begin(), bytes->end(), out.begin());
  sodium_memzero(bytes->data(), bytes->size());
  return out;
}

// -- keys and signatures ----------------------------------------------------------

bool is_valid_secret(const key32& secret) noexcept {
  return secp256k1_ec_seckey_verify(ctx(), secret.data()) == 1;
}

bool is_valid_pubkey(const key32& pubkey) noexcept {
  secp256k1_xonly_pubkey pk;
  return secp256k1_xonly_pubkey_parse(ctx(), &pk, pubkey.data()) == 1;
}

expected<keypair> keypair_from_secret(const key32& secret) {
  secp256k1_keypair kp;
  wipe_on_exit<secp256k1_keypair> wipe{kp};
  if (secp256k1_keypair_create(ctx(), &kp, secret.data()) != 1)
    return invalid("secret key is invalid: it must be non-zero and below the secp256k1 order");
  secp256k1_xonly_pubkey xonly;
  keypair out;
  out.secret = secret;
  if (secp256k1_keypair_xonly_pub(ctx(), &xonly, nullptr, &kp) != 1
      || secp256k1_xonly_pubkey_serialize(ctx(), out.pubkey.data(), &xonly) != 1)
    return invalid("could not derive the public key");
  return out;
}

keypair generate_keypair() {
  ctx();  // sodium_init
  key32 secret;
  wipe_on_exit<key32> wipe{secret};
  for (;;) {
    randombytes_buf(secret.data(), secret.size());
    auto kp = keypair_from_secret(secret);
    if (kp)
      return *kp;
  }
}

signature64 schnorr_sign_with_aux(const key32& secret, const key32& msg32, const key32& aux32) {
  signature64 sig{};
  secp256k1_keypair kp;
  wipe_on_exit<secp256k1_keypair> wipe{kp};
  if (secp256k1_keypair_create(ctx(), &kp, secret.data()) != 1)
    return sig;
  if (secp256k1_schnorrsig_sign32(ctx(), sig.data(), msg32.data(), &kp, aux32.data()) != 1)
    sig.fill(0);
  return sig;
}

signature64 schnorr_sign(const key32& secret, const key32& msg32) {
  ctx();  // sodium_init
  key32 aux;
  randombytes_buf(aux.data(), aux.size());
  return schnorr_sign_with_aux(secret, msg32, aux);
}

bool schnorr_verify(const key32& pubkey, const key32& msg32, std::span<const std::uint8_t, 64> sig) {
  secp256k1_xonly_pubkey pk;
  if (secp256k1_xonly_pubkey_parse(ctx(), &pk, pubkey.data()) != 1)
    return false;
  return secp256k1_schnorrsig_verify(ctx(), sig.data(), msg32.data(), msg32.size(), &pk) == 1;
}

// -- events -----------------------------------------------------------------------

std::string serialize_for_id(const event& e) {
  std::string out;
  out.reserve(e.content.size() + e.pubkey.size() + 64);
  out += "[0,";
  append_json_string(out, e.pubkey);
  out += ',';
  out += std::to_string(e.created_at);
  out += ',';
  out += std::to_string(e.kind);
  out += ',';
  append_tags(out, e.tags);
  out += ',';
  append_json_string(out, e.content);
  out += ']';
  return out;
}

std::string compute_id(const event& e) {
  return to_hex(sha256(serialize_for_id(e)));
}

event sign_event(event e, const keypair& k) {
  e.pubkey = to_hex(k.pubkey);
  key32 id = sha256(serialize_for_id(e));
  e.id = to_hex(id);
  e.sig = to_hex(schnorr_sign(k.secret, id));
  return e;
}

namespace {

// The checks of verify_event up to and including the id, without the
// signature's (a rumor has none): the signature's format only when `sig` is
// required.
error check_fields_and_id(const event& e, sig_member sig) {
  if (auto err = check_lower_hex("event id", e.id, 64))
    return err;
  if (auto err = check_lower_hex("event pubkey", e.pubkey, 64))
    return err;
  if (sig == sig_member::required)
    if (auto err = check_lower_hex("event sig", e.sig, 128))
      return err;
  if (e.kind < 0 || e.kind > max_kind)
    return invalid("event kind " + std::to_string(e.kind) + " is out of range 0..65535");
  if (e.created_at < 0)
    return invalid("event created_at must not be negative");
  if (!is_valid_utf8(e.content))
    return invalid("event content is not valid UTF-8");
  for (std::size_t i = 0; i < e.tags.size(); ++i)
    for (const auto& f : e.tags[i])
      if (!is_valid_utf8(f))
        return invalid("event tag " + std::to_string(i) + " is not valid UTF-8");

  if (compute_id(e) != e.id)
    return invalid("id does not match content");
  return {};
}

}  // namespace

error verify_event(const event& e) {
  if (auto err = check_fields_and_id(e, sig_member::required))
    return err;
  key32 id = *key_from_hex(e.id);
  key32 pubkey = *key_from_hex(e.pubkey);
  if (!is_valid_pubkey(pubkey))
    return invalid("event pubkey is not a point on secp256k1");
  auto sig = from_hex(e.sig);
  if (!schnorr_verify(pubkey, id, std::span<const std::uint8_t, 64>{sig->data(), 64}))
    return invalid("bad signature");
  return {};
}

namespace {

// The event as a JSON object; without "sig" for a rumor.
std::string event_json(const event& e, sig_member sig) {
  std::string out;
  out.reserve(e.content.size() + 256);
  out += "{\"id\":";
  append_json_string(out, e.id);
  out += ",\"pubkey\":";
  append_json_string(out, e.pubkey);
  out += ",\"created_at\":";
  out += std::to_string(e.created_at);
  out += ",\"kind\":";
  out += std::to_string(e.kind);
  out += ",\"tags\":";
  append_tags(out, e.tags);
  out += ",\"content\":";
  append_json_string(out, e.content);
  if (sig == sig_member::required) {
    out += ",\"sig\":";
    append_json_string(out, e.sig);
  }
  out += '}';
  return out;
}

}  // namespace

std::string to_json(const event& e) {
  return event_json(e, sig_member::required);
}

expected<event> event_from_json(std::string_view text, std::size_t max_content_bytes) {
  try {
    auto v = parse_json(text, "event");
    if (!v)
      return v.error_value();
    return event_from_value(*v, max_content_bytes);
  } catch (const std::exception& ex) {
    return invalid(std::string{"event could not be parsed: "} + ex.what());
  }
}

// -- relay messages -----------------------------------------------------------------

std::string req_message(std::string_view sub_id, std::string_view filter_json) {
  std::string out = "[\"REQ\",";
  append_json_string(out, sub_id);
  out += ',';
  out += filter_json;
  out += ']';
  return out;
}

std::string event_message(const event& e) {
  return "[\"EVENT\"," + to_json(e) + "]";
}

std::string close_message(std::string_view sub_id) {
  std::string out = "[\"CLOSE\",";
  append_json_string(out, sub_id);
  out += ']';
  return out;
}

expected<relay_message> parse_relay_message(std::string_view text, std::size_t max_content_bytes) {
  try {
    auto parsed = parse_json(text, "relay message");
    if (!parsed)
      return parsed.error_value();
    if (!parsed->is_array())
      return invalid("relay message must be a JSON array");
    const auto& arr = parsed->get_array();
    if (arr.empty())
      return invalid("relay message is an empty array");
    if (!arr[0].is_string())
      return invalid("relay message type must be a string");
    const std::string type{arr[0].get_string().data(), arr[0].get_string().size()};

    // The string at `index`, or an error naming the message type and field.
    auto str = [&](std::size_t index, std::string_view field) -> expected<std::string> {
      if (index >= arr.size())
        return invalid(type + " message has no " + std::string{field});
      if (!arr[index].is_string())
        return invalid(type + " message " + std::string{field} + " must be a string");
      return std::string{arr[index].get_string().data(), arr[index].get_string().size()};
    };
    // Like str, but a missing trailing element reads as "" (older relays
    // omit the message of OK and CLOSED).
    auto optional_str = [&](std::size_t index, std::string_view field) -> expected<std::string> {
      if (index >= arr.size())
        return std::string{};
      return str(index, field);
    };

    if (type == "EVENT") {
      auto sub = str(1, "subscription id");
      if (!sub)
        return sub.error_value();
      if (arr.size() < 3)
        return invalid("EVENT message has no event");
      auto ev = event_from_value(arr[2], max_content_bytes);
      if (!ev)
        return ev.error_value();
      return relay_message{relay_event{std::move(*sub), std::move(*ev)}};
    }
    if (type == "OK") {
      auto id = str(1, "event id");
      if (!id)
        return id.error_value();
      if (auto err = check_lower_hex("OK message event id", *id, 64))
        return err;
      if (arr.size() < 3)
        return invalid("OK message has no accepted flag");
      if (!arr[2].is_bool())
        return invalid("OK message accepted flag must be true or false");
      auto msg = optional_str(3, "message");
      if (!msg)
        return msg.error_value();
      return relay_message{relay_ok{std::move(*id), arr[2].get_bool(), std::move(*msg)}};
    }
    if (type == "EOSE") {
      auto sub = str(1, "subscription id");
      if (!sub)
        return sub.error_value();
      return relay_message{relay_eose{std::move(*sub)}};
    }
    if (type == "NOTICE") {
      auto msg = str(1, "message");
      if (!msg)
        return msg.error_value();
      return relay_message{relay_notice{std::move(*msg)}};
    }
    if (type == "CLOSED") {
      auto sub = str(1, "subscription id");
      if (!sub)
        return sub.error_value();
      auto msg = optional_str(2, "message");
      if (!msg)
        return msg.error_value();
      return relay_message{relay_closed{std::move(*sub), std::move(*msg)}};
    }
    if (type == "AUTH") {
      auto challenge = str(1, "challenge");
      if (!challenge)
        return challenge.error_value();
      return relay_message{relay_auth{std::move(*challenge)}};
    }
    return invalid("unknown relay message type '" + shown_text(type) + "'");
  } catch (const std::exception& ex) {
    return invalid(std::string{"relay message could not be parsed: "} + ex.what());
  }
}

std::string mentions_filter(const key32& pubkey, std::optional<std::int64_t> since,
                            const std::vector<int>& kinds) {
  std::string out = "{\"#p\":[\"" + to_hex(pubkey) + "\"]";
  if (!kinds.empty()) {
    out += ",\"kinds\":[";
    for (std::size_t i = 0; i < kinds.size(); ++i) {
      if (i != 0)
        out += ',';
      out += std::to_string(kinds[i]);
    }
    out += ']';
  }
  if (since) {
    out += ",\"since\":";
    out += std::to_string(*since);
  }
  out += '}';
  return out;
}

// -- NIP-19 -------------------------------------------------------------------------

std::string npub(const key32& pubkey) {
  return bech32_encode_bytes("npub", pubkey);
}

std::string nsec(const key32& secret) {
  return bech32_encode_bytes("nsec", secret);
}

expected<key32> decode_npub(std::string_view text) {
  return bech32_decode_key(text, "npub");
}

expected<key32> decode_nsec(std::string_view text) {
  return bech32_decode_key(text, "nsec");
}

// -- NIP-44 v2 ----------------------------------------------------------------------

namespace nip44 {

expected<key32> conversation_key(const key32& secret_a, const key32& pubkey_b) {
  if (!is_valid_secret(secret_a))
    return invalid("NIP-44: secret key is invalid: it must be non-zero and below the secp256k1 order");
  // The x-only key names the point with even y: parse it as compressed 0x02||x.
  std::array<std::uint8_t, 33> compressed;
  compressed[0] = 0x02;
  std::copy(pubkey_b.begin(), pubkey_b.end(), compressed.begin() + 1);
  secp256k1_pubkey point;
  if (secp256k1_ec_pubkey_parse(ctx(), &point, compressed.data(), compressed.size()) != 1)
    return invalid("NIP-44: public key is not a point on secp256k1");
  key32 shared_x;
  wipe_on_exit<key32> wipe{shared_x};
  if (secp256k1_ecdh(ctx(), shared_x.data(), &point, secret_a.data(), ecdh_copy_x, nullptr) != 1)
    return invalid("NIP-44: ECDH failed");
  // HKDF-extract(salt, ikm) = HMAC-SHA256(key = salt, message = ikm).
  static constexpr std::string_view salt = "nip44-v2";
  return hmac_sha256(
    std::span{reinterpret_cast<const std::uint8_t*>(salt.data()), salt.size()}, {shared_x});
}

message_keys get_message_keys(const key32& conversation_key, const key32& nonce) {
  // HKDF-expand(prk, info = nonce, L = 76): T(i) = HMAC(prk, T(i-1) || info || i).
  std::array<std::uint8_t, 96> okm;
  wipe_on_exit<std::array<std::uint8_t, 96>> wipe{okm};
  std::span<const std::uint8_t> previous;
  for (std::uint8_t i = 1; i <= 3; ++i) {
    const std::uint8_t counter[1] = {i};
    key32 t = hmac_sha256(conversation_key, {previous, nonce, counter});
    std::copy(t.begin(), t.end(), okm.begin() + (i - 1) * 32);
    sodium_memzero(t.data(), t.size());
    previous = std::span<const std::uint8_t>{okm.data() + (i - 1) * 32, 32};
  }
  message_keys keys;
  std::copy_n(okm.begin(), 32, keys.chacha_key.begin());
  std::copy_n(okm.begin() + 32, 12, keys.chacha_nonce.begin());
  std::copy_n(okm.begin() + 44, 32, keys.hmac_key.begin());
  return keys;
}

std::size_t calc_padded_len(std::size_t unpadded_len) {
  if (unpadded_len <= 32)
    return 32;
  const std::size_t next_power = std::size_t{1} << std::bit_width(unpadded_len - 1);
  const std::size_t chunk = next_power <= 256 ? 32 : next_power / 8;
  return chunk * ((unpadded_len - 1) / chunk + 1);
}

expected<std::string> encrypt(std::string_view plaintext, const key32& conversation_key,
                              std::optional<key32> nonce) {
  if (plaintext.size() < min_plaintext_size || plaintext.size() > max_plaintext_size)
    return invalid("NIP-44: plaintext must be 1..65535 bytes, got "
                   + std::to_string(plaintext.size()));
  ctx();  // sodium_init
  key32 n;
  if (nonce) {
    n = *nonce;
  } else {
    randombytes_buf(n.data(), n.size());
  }
  message_keys keys = get_message_keys(conversation_key, n);
  wipe_on_exit<message_keys> wipe{keys};

  // 2-byte big-endian length, the plaintext, zeros up to calc_padded_len.
  std::vector<std::uint8_t> padded(2 + calc_padded_len(plaintext.size()), 0);
  padded[0] = static_cast<std::uint8_t>(plaintext.size() >> 8);
  padded[1] = static_cast<std::uint8_t>(plaintext.size() & 0xff);
  std::memcpy(padded.data() + 2, plaintext.data(), plaintext.size());

  // version || nonce || ciphertext || mac
  std::vector<std::uint8_t> raw(1 + 32 + padded.size() + 32);
  raw[0] = nip44_version;
  std::copy(n.begin(), n.end(), raw.begin() + 1);
  std::uint8_t* ciphertext = raw.data() + 33;
  crypto_stream_chacha20_ietf_xor_ic(ciphertext, padded.data(), padded.size(),
                                     keys.chacha_nonce.data(), 0, keys.chacha_key.data());
  sodium_memzero(padded.data(), padded.size());
  key32 mac = hmac_sha256(keys.hmac_key,
                          {n, std::span<const std::uint8_t>{ciphertext, raw.size() - 65}});
  std::copy(mac.begin(), mac.end(), raw.end() - 32);

  std::string out(sodium_base64_ENCODED_LEN(raw.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), raw.data(), raw.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

expected<std::string> decrypt(std::string_view payload, const key32& conversation_key) {
  ctx();  // sodium_init
  if (!payload.empty() && payload[0] == '#')
    return invalid("NIP-44: unknown version (payload starts with '#')");
  if (payload.size() < nip44_min_payload || payload.size() > nip44_max_payload)
    return invalid("NIP-44: payload is " + std::to_string(payload.size())
                   + " characters, outside 132..87472");

  std::vector<std::uint8_t> raw(payload.size() / 4 * 3);
  std::size_t raw_len = 0;
  if (sodium_base642bin(raw.data(), raw.size(), payload.data(), payload.size(), nullptr, &raw_len,
                        nullptr, sodium_base64_VARIANT_ORIGINAL)
      != 0)
    return invalid("NIP-44: invalid base64");
  raw.resize(raw_len);
  if (raw.size() < nip44_min_data || raw.size() > nip44_max_data)
    return invalid("NIP-44: decoded payload is " + std::to_string(raw.size())
                   + " bytes, outside 99..65603");
  if (raw[0] != nip44_version)
    return invalid("NIP-44: unknown version " + std::to_string(raw[0]));

  key32 nonce;
  std::copy_n(raw.begin() + 1, 32, nonce.begin());
  std::span<const std::uint8_t> ciphertext{raw.data() + 33, raw.size() - 65};
  std::span<const std::uint8_t> mac{raw.data() + raw.size() - 32, 32};

  message_keys keys = get_message_keys(conversation_key, nonce);
  wipe_on_exit<message_keys> wipe{keys};
  key32 expected_mac = hmac_sha256(keys.hmac_key, {nonce, ciphertext});
  if (crypto_verify_32(expected_mac.data(), mac.data()) != 0)
    return invalid("NIP-44: invalid MAC");

  std::vector<std::uint8_t> padded(ciphertext.size());
  crypto_stream_chacha20_ietf_xor_ic(padded.data(), ciphertext.data(), ciphertext.size(),
                                     keys.chacha_nonce.data(), 0, keys.chacha_key.data());
  const std::size_t unpadded_len = (std::size_t{padded[0]} << 8) | padded[1];
  if (unpadded_len < min_plaintext_size || padded.size() != 2 + calc_padded_len(unpadded_len)) {
    sodium_memzero(padded.data(), padded.size());
    return invalid("NIP-44: invalid padding");
  }
  std::string out(reinterpret_cast<const char*>(padded.data() + 2), unpadded_len);
  sodium_memzero(padded.data(), padded.size());
  return out;
}

}  // namespace nip44

// -- NIP-59 gift wrap ---------------------------------------------------------------

namespace nip59 {

namespace {

// NIP-44-encrypts `json`, the JSON of the layer inside `layer`, from `secret`
// to `recipient`. Errors start with `layer`.
expected<std::string> encrypt_layer(const std::string& layer, std::string_view inner,
                                    const std::string& json, const key32& secret,
                                    const key32& recipient) {
  if (json.size() > nip44::max_plaintext_size)
    return error{errc::message_too_large,
                 layer + ": the " + std::string{inner} + " is " + std::to_string(json.size())
                   + " bytes of JSON, above the 65535 NIP-44 encrypts"};
  auto ck = nip44::conversation_key(secret, recipient);
  if (!ck)
    return invalid(layer + ": " + ck.error_value().message());
  wipe_on_exit<key32> wipe{*ck};
  auto payload = nip44::encrypt(json, *ck);
  if (!payload)
    return invalid(layer + ": " + payload.error_value().message());
  return payload;
}

// Decrypts the content of `outer`, a verified seal or gift wrap, with the
// conversation key of `secret` and the outer layer's signer.
expected<std::string> decrypt_layer(const std::string& layer, const event& outer,
                                    const key32& secret) {
  auto signer = key_from_hex(outer.pubkey);
  if (!signer)
    return invalid(layer + ": " + signer.error_value().message());
  auto ck = nip44::conversation_key(secret, *signer);
  if (!ck)
    return invalid(layer + ": " + ck.error_value().message());
  wipe_on_exit<key32> wipe{*ck};
  auto plaintext = nip44::decrypt(outer.content, *ck);
  if (!plaintext)
    return invalid(layer + ": cannot decrypt the content with this key (addressed to another?): "
                   + plaintext.error_value().message());
  return plaintext;
}

// Parses the decrypted JSON of an inner layer. It is at most 65535 bytes (the
// NIP-44 limit), so the default content limit never binds.
expected<event> parse_layer(const std::string& layer, std::string_view json, sig_member sig) {
  auto v = parse_json(json, "the decrypted " + layer);
  if (!v)
    return invalid(layer + ": " + v.error_value().message());
  auto e = event_from_value(*v, default_max_content_bytes, sig);
  if (!e)
    return invalid(layer + ": " + e.error_value().message());
  return e;
}

}  // namespace

std::int64_t random_past_timestamp(std::int64_t now) {
  ctx();  // sodium_init
  const auto back =
    static_cast<std::int64_t>(randombytes_uniform(static_cast<std::uint32_t>(max_backdate) + 1));
  return std::max<std::int64_t>(0, now - back);
}

event make_rumor(event e, const key32& author) {
  e.pubkey = to_hex(author);
  e.sig.clear();
  e.id = compute_id(e);
  return e;
}

std::string rumor_to_json(const event& rumor) {
  return event_json(rumor, sig_member::optional);
}

expected<event> seal(const event& rumor, const keypair& author, const key32& recipient,
                     std::int64_t created_at) {
  if (rumor.pubkey != to_hex(author.pubkey))
    return invalid("seal: the rumor's pubkey is not the sealing author's: a seal vouches for "
                   "the author of its rumor");
  if (created_at < 0)
    return invalid("seal: created_at must not be negative");
  auto content = encrypt_layer("seal", "rumor", rumor_to_json(rumor), author.secret, recipient);
  if (!content)
    return content.error_value();
  event sealed;
  sealed.kind = seal_kind;
  sealed.created_at = created_at;
  sealed.content = std::move(*content);
  return sign_event(std::move(sealed), author);
}

expected<event> gift_wrap(const event& sealed, const key32& recipient, std::int64_t created_at,
                          const keypair& ephemeral,
                          const std::vector<std::vector<std::string>>& extra_tags) {
  if (created_at < 0)
    return invalid("gift wrap: created_at must not be negative");
  auto content = encrypt_layer("gift wrap", "seal", to_json(sealed), ephemeral.secret, recipient);
  if (!content)
    return content.error_value();
  event wrap;
  wrap.kind = gift_wrap_kind;
  wrap.created_at = created_at;
  wrap.tags.push_back({"p", to_hex(recipient)});
  wrap.tags.insert(wrap.tags.end(), extra_tags.begin(), extra_tags.end());
  wrap.content = std::move(*content);
  return sign_event(std::move(wrap), ephemeral);
}

expected<unwrapped> unwrap(const keypair& recipient, const event& wrap) {
  try {
    if (wrap.kind != gift_wrap_kind)
      return invalid("gift wrap: kind " + std::to_string(wrap.kind) + ", expected 1059");
    if (auto err = verify_event(wrap))
      return invalid("gift wrap: " + err.message());
    auto seal_json = decrypt_layer("gift wrap", wrap, recipient.secret);
    if (!seal_json)
      return seal_json.error_value();

    auto sealed = parse_layer("seal", *seal_json, sig_member::required);
    if (!sealed)
      return sealed.error_value();
    if (sealed->kind != seal_kind)
      return invalid("seal: kind " + std::to_string(sealed->kind) + ", expected 13");
    if (auto err = verify_event(*sealed))
      return invalid("seal: " + err.message());
    auto rumor_json = decrypt_layer("seal", *sealed, recipient.secret);
    if (!rumor_json)
      return rumor_json.error_value();

    auto rumor = parse_layer("rumor", *rumor_json, sig_member::optional);
    if (!rumor)
      return rumor.error_value();
    // The seal's signature is the only proof of authorship: a rumor claiming
    // another author is an impersonation attempt by the sealer.
    if (rumor->pubkey != sealed->pubkey)
      return invalid("rumor: pubkey '"
                     + (check_lower_hex("", rumor->pubkey, 64) ? shown_text(rumor->pubkey)
                                                               : rumor->pubkey)
                     + "' is not the seal's signer " + sealed->pubkey + " (impersonation)");
    if (auto err = check_fields_and_id(*rumor, sig_member::optional))
      return invalid("rumor: " + err.message());
    return unwrapped{std::move(*sealed), std::move(*rumor)};
  } catch (const std::exception& ex) {
    return invalid(std::string{"gift wrap could not be opened: "} + ex.what());
  }
}

}  // namespace nip59

// -- NIP-17 private direct messages -------------------------------------------------

namespace nip17 {

namespace {

// The longest rumor JSON that still fits once sealed and wrapped. The seal's
// JSON carries the rumor as a NIP-44 payload, which must itself be at most
// 65535 bytes once the seal is gift-wrapped: a padded length of 40960
// (5 * 8192) gives 54704 base64 characters plus about 350 of seal fields;
// the next padded length, 49152, gives 65628 characters alone.
constexpr std::size_t max_rumor_json_bytes = 40960;

}  // namespace

event make_chat_message(const key32& sender, const key32& recipient, std::string_view content,
                        std::int64_t created_at,
                        const std::vector<std::vector<std::string>>& extra_tags) {
  event e;
  e.kind = chat_message_kind;
  e.created_at = created_at;
  e.tags.push_back({"p", to_hex(recipient)});
  e.tags.insert(e.tags.end(), extra_tags.begin(), extra_tags.end());
  e.content = std::string{content};
  return nip59::make_rumor(std::move(e), sender);
}

expected<event> wrap_dm(const keypair& sender, const key32& recipient, std::string_view content,
                        std::int64_t now, const dm_options& options) {
  try {
    if (now < 0)
      return invalid("wrap_dm: now must not be negative");
    if (!is_valid_pubkey(recipient))
      return invalid("wrap_dm: the recipient's pubkey is not a point on secp256k1");
    const key32 wrap_to = options.wrap_to.value_or(recipient);
    event rumor = make_chat_message(sender.pubkey, recipient, content, now, options.extra_tags);
    // What unwrap_dm will check, so that nothing is sent that cannot be read.
    if (auto err = check_fields_and_id(rumor, sig_member::optional))
      return invalid("rumor: " + err.message());
    const std::string rumor_json = nip59::rumor_to_json(rumor);
    if (rumor_json.size() > max_rumor_json_bytes)
      return error{errc::message_too_large,
                   "rumor: the message is " + std::to_string(rumor_json.size())
                     + " bytes of JSON, above the 40960 that fit in a seal and gift wrap"};

    auto sealed = nip59::seal(rumor, sender, wrap_to, nip59::random_past_timestamp(now));
    if (!sealed)
      return sealed.error_value();
    keypair ephemeral = generate_keypair();
    wipe_on_exit<keypair> wipe{ephemeral};
    return nip59::gift_wrap(*sealed, wrap_to, nip59::random_past_timestamp(now), ephemeral);
  } catch (const std::exception& ex) {
    return invalid(std::string{"wrap_dm failed: "} + ex.what());
  }
}

expected<received_dm> unwrap_dm(const keypair& recipient, const event& gift_wrap) {
  auto layers = nip59::unwrap(recipient, gift_wrap);
  if (!layers)
    return layers.error_value();
  event& rumor = layers->rumor;
  if (rumor.kind != chat_message_kind)
    return invalid("rumor: kind " + std::to_string(rumor.kind)
                   + ", expected 14 (a NIP-17 chat message)");
  received_dm dm;
  dm.sender = rumor.pubkey;
  dm.content = rumor.content;
  dm.created_at = rumor.created_at;
  dm.tags = rumor.tags;
  dm.rumor = std::move(rumor);
  return dm;
}

}  // namespace nip17

// -- relay URLs ----------------------------------------------------------------

namespace {

std::string ascii_lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string relay_url::to_string() const {
  std::string out = tls ? "wss://" : "ws://";
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80))
    out += ":" + std::to_string(port);
  out += target.empty() ? std::string{"/"} : target;
  return out;
}

expected<relay_url> parse_relay_url(std::string_view url) {
  auto shown = std::string{url.substr(0, 200)};
  auto bad = [&](const std::string& why) {
    return error{errc::invalid_argument, "invalid relay URL '" + shown + "': " + why};
  };
  for (char c : url)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return bad("spaces and control characters are not allowed");
  auto sep = url.find("://");
  if (sep == std::string_view::npos)
    return bad("expected ws://host or wss://host");
  relay_url out;
  auto scheme = ascii_lower(url.substr(0, sep));
  if (scheme == "ws")
    out.tls = false;
  else if (scheme == "wss")
    out.tls = true;
  else
    return bad("the scheme must be ws or wss, not '" + scheme + "'");
  auto rest = url.substr(sep + 3);
  if (rest.find('#') != std::string_view::npos)
    return bad("fragments are not allowed");
  auto end = rest.find_first_of("/?");
  auto authority = rest.substr(0, end);
  out.target = end == std::string_view::npos ? std::string{"/"} : std::string{rest.substr(end)};
  if (out.target.front() == '?')
    out.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos)
    return bad("user info is not allowed");
  if (authority.empty())
    return bad("the host is missing");
  std::string_view port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return bad("unterminated IPv6 address");
    out.host = ascii_lower(authority.substr(1, close - 1));
    // A zone ("fe80::1%25eth0") names the interface of a link-local address.
    auto zone = out.host.find('%');
    in6_addr addr;
    if (inet_pton(AF_INET6, out.host.substr(0, zone).c_str(), &addr) != 1
        || (zone != std::string::npos && zone + 1 == out.host.size()))
      return bad("'" + out.host + "' is not an IPv6 address");
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return bad("unexpected characters after the IPv6 address");
      has_port = true;
      port_text = after.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    out.host = ascii_lower(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = authority.substr(colon + 1);
    }
    if (out.host.empty())
      return bad("the host is missing");
    bool has_alnum = false;
    for (char c : out.host) {
      if (std::isalnum(static_cast<unsigned char>(c)))
        has_alnum = true;
      else if (c != '.' && c != '-' && c != '_')
        return bad(std::string{"the host contains '"} + c + "'");
    }
    if (!has_alnum || out.host.front() == '.' || out.host.front() == '-'
        || out.host.find("..") != std::string::npos)
      return bad("'" + out.host + "' is not a host name");
  }
  out.port = out.tls ? 443 : 80;
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5
        || !std::all_of(port_text.begin(), port_text.end(),
                        [](char c) { return c >= '0' && c <= '9'; }))
      return bad("the port must be a number from 1 to 65535");
    auto port = std::stoul(std::string{port_text});
    if (port < 1 || port > 65535)
      return bad("the port must be a number from 1 to 65535");
    out.port = static_cast<std::uint16_t>(port);
  }
  return out;
}

std::vector<std::string> relays_in_config(std::string_view config) {
  std::vector<std::string> out;
  boost::system::error_code ec;
  auto v = json::parse(json::string_view{config.data(), config.size()}, ec);
  if (ec || !v.is_object())
    return out;
  auto* n = v.as_object().if_contains("nostr");
  auto* r = n && n->is_object() ? n->as_object().if_contains("relays") : nullptr;
  if (!r || !r->is_array())
    return out;
  for (auto& u : r->as_array()) {
    if (!u.is_string())
      continue;
    auto url = parse_relay_url(std::string_view{u.as_string()});
    if (!url)
      continue;
    auto key = url->to_string();
    if (std::find(out.begin(), out.end(), key) == out.end())
      out.push_back(std::move(key));
  }
  return out;
}

std::string relay_policy_name(std::string_view normalized) {
  auto scheme_end = normalized.find("://");
  auto path = scheme_end == std::string_view::npos ? std::string_view::npos
                                                   : normalized.find('/', scheme_end + 3);
  if (path != std::string_view::npos && path + 1 == normalized.size())
    normalized.remove_suffix(1);
  return std::string{normalized};
}

}  // namespace ticktock::nostr
