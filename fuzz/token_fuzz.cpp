// Fuzzes the capability token parser (drivers/src/tokens.cpp). The first
// byte picks a mode: even, the rest is a token as received; odd, the rest is
// a claims document that gets a valid signature of the node key, so the
// claims parser behind the signature check is reached too. Whatever verifies
// must re-issue to a token that verifies to the same claims.

#include <sodium.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_keys.hpp"
#include "tokens.hpp"

using namespace ticktock;
using namespace ticktock::drivers;

namespace {

token_authority* authority = nullptr;
std::string secret;

std::string b64url(const unsigned char* p, std::size_t n) {
  std::string out(sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

/// "tt1." claims "." signature, signed like token_authority::issue does.
std::string sign(std::string_view claims) {
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(claims.data()),
                       claims.size(), reinterpret_cast<const unsigned char*>(secret.data()));
  return "tt1." + b64url(reinterpret_cast<const unsigned char*>(claims.data()), claims.size())
         + "." + b64url(sig, sizeof sig);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (sodium_init() < 0)
    std::abort();
  secret = fuzz::node_key();
  authority = new token_authority(secret);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 8192)
    return 0;
  std::string_view rest{reinterpret_cast<const char*>(data) + 1, size - 1};
  auto token = data[0] % 2 == 0 ? std::string{rest} : sign(rest);
  const std::int64_t now = 1'800'000'000;
  auto claims = authority->verify(token, now);
  if (!claims)
    return 0;
  if (claims->exp <= now) {
    std::fprintf(stderr, "token: an expired token verified\n");
    std::abort();
  }
  auto again = authority->verify(authority->issue(*claims), now);
  if (!again || again->agent != claims->agent || again->scopes != claims->scopes
      || again->exp != claims->exp) {
    std::fprintf(stderr, "token: re-issued claims do not verify to the same\n");
    std::abort();
  }
  return 0;
}
