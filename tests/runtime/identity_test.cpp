#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>

#include "../temp_dir.hpp"
#include "ticktock/runtime/identity.hpp"

using namespace ticktock;
using namespace ticktock::identity;

namespace {

std::span<const std::uint8_t> bytes(const signature& s) { return {s.data(), s.size()}; }

}  // namespace

TEST_CASE("agent keys sign and verify, and their secret bytes rebuild them") {
  auto k = agent_keys::generate();
  auto other = agent_keys::generate();
  CHECK(k.pub.ed25519 != other.pub.ed25519);
  CHECK(k.pub.nostr != other.pub.nostr);

  auto sig = sign(k, "hello");
  CHECK(verify(k.pub.ed25519, "hello", bytes(sig)));
  CHECK_FALSE(verify(k.pub.ed25519, "hellO", bytes(sig)));
  CHECK_FALSE(verify(other.pub.ed25519, "hello", bytes(sig)));
  CHECK_FALSE(verify(k.pub.ed25519, "hello", std::span{sig.data(), 63}));

  auto again = agent_keys::from_secret_bytes(k.secret_bytes());
  REQUIRE(again);
  CHECK(again->pub.ed25519 == k.pub.ed25519);
  CHECK(again->pub.nostr == k.pub.nostr);

  CHECK(agent_keys::from_secret_bytes("short").code() == errc::invalid_argument);
  auto bad = k.secret_bytes();
  bad[40] ^= 1;  // the public half of the Ed25519 secret no longer matches its seed
  CHECK(agent_keys::from_secret_bytes(bad).code() == errc::invalid_argument);
  auto zero_nostr = k.secret_bytes().substr(0, 64) + std::string(32, '\0');
  CHECK(agent_keys::from_secret_bytes(zero_nostr).code() == errc::invalid_argument);
}

TEST_CASE("only the recipient decrypts, and tampering is detected") {
  auto alice = agent_keys::generate();
  auto bob = agent_keys::generate();
  auto c = encrypt_to(bob.pub.ed25519, "for bob only");
  REQUIRE(c);
  CHECK(c->find("for bob only") == std::string::npos);
  auto p = decrypt(bob, *c);
  REQUIRE(p);
  CHECK(*p == "for bob only");
  CHECK(decrypt(alice, *c).code() == errc::invalid_argument);
  auto t = *c;
  t.back() ^= 1;
  CHECK(decrypt(bob, t).code() == errc::invalid_argument);
  CHECK(decrypt(bob, "tiny").code() == errc::invalid_argument);
}

TEST_CASE("hex and base64 decoding reject malformed input with a reason") {
  CHECK(to_hex(std::span<const std::uint8_t>{}) == "");
  CHECK(*from_hex("00ff") == std::string("\0\xff", 2));
  CHECK(from_hex("0").code() == errc::invalid_argument);
  CHECK(from_hex("zz").code() == errc::invalid_argument);
  CHECK(key_from_hex("00").error_value().message().find("64 hex digits") != std::string::npos);
  CHECK(key_from_hex(std::string(64, 'g')).code() == errc::invalid_argument);
  CHECK(key_from_hex(std::string(64, 'a')));
  CHECK(*from_base64(to_base64(std::string("\0\1\2binary", 9))) == std::string("\0\1\2binary", 9));
  CHECK(from_base64("not base64!").code() == errc::invalid_argument);
}

TEST_CASE("the master key file is created with mode 0600 and seals what only it opens") {
  test::temp_dir dir;
  auto path = dir.path() / "master.key";
  auto k = master_key::load(path, true);
  REQUIRE(k);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(std::filesystem::file_size(path) == 32);
  CHECK(k->id().size() == 16);

  auto again = master_key::load(path, true);
  REQUIRE(again);
  CHECK(again->id() == k->id());
  auto sealed = k->seal("secret");
  CHECK(sealed.find("secret") == std::string::npos);
  CHECK(*again->open(sealed) == "secret");
  auto other = master_key::generate();
  auto wrong = other.open(sealed);
  CHECK(wrong.code() == errc::invalid_argument);
  CHECK(wrong.error_value().message().find(other.id()) != std::string::npos);

  CHECK(master_key::load(dir.path() / "missing.key", false).code() == errc::storage_failure);
  std::ofstream{dir.path() / "short.key"} << "too short";
  auto bad = master_key::load(dir.path() / "short.key", false);
  CHECK(bad.code() == errc::invalid_argument);
  CHECK(bad.error_value().message().find("exactly 32 bytes") != std::string::npos);
}

TEST_CASE("signed bytes are domain-separated and length-prefixed") {
  auto a = envelope_signing_bytes("id", "ab", "c", 1, false, "p");
  auto b = envelope_signing_bytes("id", "a", "bc", 1, false, "p");
  CHECK(a != b);  // field boundaries are unambiguous
  CHECK(a != envelope_signing_bytes("id", "ab", "c", 1, true, "p"));
  CHECK(a != envelope_signing_bytes("id", "ab", "c", 2, false, "p"));
  CHECK(trajectory_signing_bytes("a", "x") != trajectory_signing_bytes("b", "x"));
  CHECK(trajectory_signing_bytes("a", "x").rfind("ticktock/trajectory/v1", 0) == 0);
  CHECK(a.rfind("ticktock/envelope/v1", 0) == 0);
}
