#include "ticktock/runtime/identity.hpp"

#include <secp256k1.h>
#include <secp256k1_extrakeys.h>
#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <stdexcept>
#include <unistd.h>

namespace ticktock::identity {

namespace {

const secp256k1_context* secp() {
  static const secp256k1_context* ctx = [] {
    auto* c = secp256k1_context_create(SECP256K1_CONTEXT_SIGN | SECP256K1_CONTEXT_VERIFY);
    std::array<std::uint8_t, 32> seed{};
    randombytes_buf(seed.data(), seed.size());
    if (!secp256k1_context_randomize(c, seed.data()))
      throw std::runtime_error("secp256k1 context randomization failed");
    return c;
  }();
  return ctx;
}

// The x-only public key of a secp256k1 secret key, or false if it is invalid.
bool nostr_public(const std::array<std::uint8_t, 32>& secret, nostr_key& out) {
  secp256k1_keypair kp;
  if (!secp256k1_keypair_create(secp(), &kp, secret.data()))
    return false;
  secp256k1_xonly_pubkey xonly;
  if (!secp256k1_keypair_xonly_pub(secp(), &xonly, nullptr, &kp))
    return false;
  secp256k1_xonly_pubkey_serialize(secp(), out.data(), &xonly);
  sodium_memzero(&kp, sizeof kp);
  return true;
}

void put_be64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}

void put_field(std::string& out, std::string_view v) {
  put_be64(out, v.size());
  out.append(v);
}

}  // namespace

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0)
      throw std::runtime_error("libsodium failed to initialize");
  });
}

// -- keys -------------------------------------------------------------------

agent_keys::~agent_keys() {
  sodium_memzero(ed25519_secret.data(), ed25519_secret.size());
  sodium_memzero(nostr_secret.data(), nostr_secret.size());
}

agent_keys agent_keys::generate() {
  init();
  agent_keys k;
  crypto_sign_keypair(k.pub.ed25519.data(), k.ed25519_secret.data());
  // Almost every 32 random bytes are a valid secp256k1 key; retry otherwise.
  do
    randombytes_buf(k.nostr_secret.data(), k.nostr_secret.size());
  while (!nostr_public(k.nostr_secret, k.pub.nostr));
  return k;
}

agent_keys agent_keys::from_seed(std::span<const std::uint8_t, 32> seed) {
  init();
  agent_keys k;
  crypto_sign_seed_keypair(k.pub.ed25519.data(), k.ed25519_secret.data(), seed.data());
  // The secp256k1 key: BLAKE2b-256 of the seed under a counter, the first
  // that is a valid key (almost always the first).
  constexpr std::string_view tag = "ticktock/nostr-key/";
  std::array<std::uint8_t, tag.size() + 33> in{};
  std::memcpy(in.data(), tag.data(), tag.size());
  std::memcpy(in.data() + tag.size(), seed.data(), 32);
  for (;; ++in.back()) {
    crypto_generichash(k.nostr_secret.data(), k.nostr_secret.size(), in.data(), in.size(),
                       nullptr, 0);
    if (nostr_public(k.nostr_secret, k.pub.nostr)) {
      sodium_memzero(in.data(), in.size());
      return k;
    }
  }
}

std::string agent_keys::secret_bytes() const {
  std::string out;
  out.reserve(96);
  out.append(reinterpret_cast<const char*>(ed25519_secret.data()), ed25519_secret.size());
  out.append(reinterpret_cast<const char*>(nostr_secret.data()), nostr_secret.size());
  return out;
}

expected<agent_keys> agent_keys::from_secret_bytes(std::string_view bytes) {
  init();
  if (bytes.size() != 96)
    return error{errc::invalid_argument, "secret keys are 96 bytes, got "
                                           + std::to_string(bytes.size())};
  agent_keys k;
  std::memcpy(k.ed25519_secret.data(), bytes.data(), 64);
  std::memcpy(k.nostr_secret.data(), bytes.data() + 64, 32);
  // The Ed25519 secret is seed || public key: check they belong together.
  std::array<std::uint8_t, 32> pk{};
  std::array<std::uint8_t, 64> sk{};
  crypto_sign_seed_keypair(pk.data(), sk.data(), k.ed25519_secret.data());
  bool same = sodium_memcmp(sk.data(), k.ed25519_secret.data(), 64) == 0;
  sodium_memzero(sk.data(), sk.size());
  if (!same)
    return error{errc::invalid_argument, "the Ed25519 secret key is inconsistent"};
  k.pub.ed25519 = pk;
  if (!nostr_public(k.nostr_secret, k.pub.nostr))
    return error{errc::invalid_argument, "the secp256k1 secret key is invalid"};
  return k;
}

signature sign(const agent_keys& keys, std::string_view message) {
  init();
  signature sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), keys.ed25519_secret.data());
  return sig;
}

bool verify(const public_key& key, std::string_view message, std::span<const std::uint8_t> sig) {
  init();
  if (sig.size() != crypto_sign_BYTES)
    return false;
  return crypto_sign_verify_detached(sig.data(),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), key.data())
         == 0;
}

expected<std::string> encrypt_to(const public_key& recipient, std::string_view plaintext) {
  init();
  std::array<std::uint8_t, crypto_box_PUBLICKEYBYTES> x{};
  if (crypto_sign_ed25519_pk_to_curve25519(x.data(), recipient.data()) != 0)
    return error{errc::invalid_argument, "the recipient key is not a valid Ed25519 public key"};
  std::string out(plaintext.size() + crypto_box_SEALBYTES, '\0');
  crypto_box_seal(reinterpret_cast<unsigned char*>(out.data()),
                  reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                  x.data());
  return out;
}

expected<std::string> decrypt(const agent_keys& keys, std::string_view ciphertext) {
  init();
  if (ciphertext.size() < crypto_box_SEALBYTES)
    return error{errc::invalid_argument, "ciphertext of " + std::to_string(ciphertext.size())
                                           + " bytes is shorter than a sealed box"};
  std::array<std::uint8_t, crypto_box_PUBLICKEYBYTES> xpk{};
  std::array<std::uint8_t, crypto_box_SECRETKEYBYTES> xsk{};
  if (crypto_sign_ed25519_pk_to_curve25519(xpk.data(), keys.pub.ed25519.data()) != 0)
    return error{errc::invalid_argument, "the agent's Ed25519 public key is invalid"};
  crypto_sign_ed25519_sk_to_curve25519(xsk.data(), keys.ed25519_secret.data());
  std::string out(ciphertext.size() - crypto_box_SEALBYTES, '\0');
  int rc = crypto_box_seal_open(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(ciphertext.data()),
                                ciphertext.size(), xpk.data(), xsk.data());
  sodium_memzero(xsk.data(), xsk.size());
  if (rc != 0)
    return error{errc::invalid_argument,
                 "the ciphertext was not encrypted for this agent or was altered"};
  return out;
}

// -- encodings --------------------------------------------------------------

std::string to_hex(std::span<const std::uint8_t> bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

expected<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0)
    return error{errc::invalid_argument, "hex of odd length " + std::to_string(hex.size())};
  std::string out(hex.size() / 2, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), hex.data(),
                     hex.size(), nullptr, &len, &end)
        != 0
      || len != out.size())
    return error{errc::invalid_argument, "not hex: '" + std::string{hex.substr(0, 80)} + "'"};
  return out;
}

expected<public_key> key_from_hex(std::string_view hex) {
  if (hex.size() != 64)
    return error{errc::invalid_argument,
                 "keys are 64 hex digits, got " + std::to_string(hex.size()) + " characters"};
  auto bytes = from_hex(hex);
  if (!bytes)
    return bytes.error_value();
  public_key k{};
  std::memcpy(k.data(), bytes->data(), k.size());
  return k;
}

std::string to_base64(std::string_view bytes) {
  init();
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();
  return out;
}

expected<std::string> from_base64(std::string_view text) {
  init();
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL)
        != 0
      || end != text.data() + text.size())
    return error{errc::invalid_argument, "not base64"};
  out.resize(len);
  return out;
}

// -- master key -------------------------------------------------------------

master_key::~master_key() { sodium_memzero(key_.data(), key_.size()); }

void master_key::derive_id() {
  std::array<std::uint8_t, 32> h{};
  crypto_generichash(h.data(), h.size(), key_.data(), key_.size(), nullptr, 0);
  id_ = to_hex(std::span{h.data(), 8});
}

master_key master_key::generate() {
  init();
  master_key k;
  crypto_secretbox_keygen(k.key_.data());
  k.derive_id();
  return k;
}

expected<master_key> master_key::load(const std::filesystem::path& path, bool create) {
  init();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && create) {
    auto k = generate();
    if (auto err = k.save(path); err && err.code() != errc::already_exists)
      return err;
    return load(path, false);  // whoever created it first wins
  }
  if (fd < 0)
    return error{errc::storage_failure,
                 "cannot read master key " + path.string() + ": " + std::strerror(errno)};
  master_key k;
  std::array<std::uint8_t, 33> buf{};
  ssize_t n = ::read(fd, buf.data(), buf.size());
  ::close(fd);
  if (n != 32) {
    sodium_memzero(buf.data(), buf.size());
    return error{errc::invalid_argument, "master key " + path.string()
                                           + " must hold exactly 32 bytes, it holds "
                                           + (n < 0 ? std::string{"unreadable data"}
                                                    : std::to_string(n) + (n == 33 ? "+" : ""))};
  }
  std::memcpy(k.key_.data(), buf.data(), 32);
  sodium_memzero(buf.data(), buf.size());
  k.derive_id();
  return k;
}

error master_key::save(const std::filesystem::path& path) const {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return error{errno == EEXIST ? errc::already_exists : errc::storage_failure,
                 "cannot create master key " + path.string() + ": " + std::strerror(errno)};
  bool ok = ::write(fd, key_.data(), key_.size()) == static_cast<ssize_t>(key_.size())
            && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    std::filesystem::remove(path);
    return error{errc::storage_failure, "cannot write master key " + path.string()};
  }
  return {};
}

std::string master_key::seal(std::string_view plaintext) const {
  std::string out(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(), '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        nonce, key_.data());
  return out;
}

expected<std::string> master_key::open(std::string_view sealed) const {
  constexpr auto overhead = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
  if (sealed.size() < overhead)
    return error{errc::invalid_argument, "sealed data is too short"};
  std::string out(sealed.size() - overhead, '\0');
  auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(out.data()),
                                 nonce + crypto_secretbox_NONCEBYTES,
                                 sealed.size() - crypto_secretbox_NONCEBYTES, nonce, key_.data())
      != 0)
    return error{errc::invalid_argument,
                 "sealed data does not open with master key " + id_ + " (altered, or another key)"};
  return out;
}

// -- signed bytes -------------------------------------------------------------

bool reserved_signing_domain(std::string_view message) { return message.starts_with("ticktock/"); }

std::string envelope_signing_bytes(std::string_view envelope_id, std::string_view from,
                                   std::string_view to, std::int64_t time_us, bool encrypted,
                                   std::string_view payload) {
  std::string out = "ticktock/envelope/v1";
  out.push_back('\0');
  put_field(out, envelope_id);
  put_field(out, from);
  put_field(out, to);
  put_be64(out, static_cast<std::uint64_t>(time_us));
  out.push_back(encrypted ? 1 : 0);
  put_field(out, payload);
  return out;
}

std::string trajectory_signing_bytes(std::string_view agent, std::string_view record_bytes) {
  std::string out = "ticktock/trajectory/v1";
  out.push_back('\0');
  put_field(out, agent);
  put_field(out, record_bytes);
  return out;
}

}  // namespace ticktock::identity
