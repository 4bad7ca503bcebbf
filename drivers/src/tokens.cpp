#include "tokens.hpp"

#include <boost/json.hpp>
#include <sodium.h>

#include <cstring>

namespace ticktock::drivers {

namespace {

std::string b64url(const unsigned char* p, std::size_t n) {
  std::string out(sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

bool unb64url(std::string_view s, std::string& out) {
  out.resize(s.size());
  std::size_t n = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), s.data(), s.size(),
                        nullptr, &n, nullptr, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
      != 0)
    return false;
  out.resize(n);
  return true;
}

error bad(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

}  // namespace

token_authority::token_authority(std::string secret_key) {
  if (secret_key.size() == sk_.size()) {
    std::memcpy(sk_.data(), secret_key.data(), sk_.size());
    crypto_sign_ed25519_sk_to_pk(pk_.data(), sk_.data());
  } else {
    crypto_sign_keypair(pk_.data(), sk_.data());
  }
}

std::string token_authority::issue(const token_claims& c) const {
  boost::json::array scopes;
  for (auto& s : c.scopes)
    scopes.emplace_back(s);
  auto claims = boost::json::serialize(
    boost::json::object{{"agent", c.agent}, {"scopes", std::move(scopes)}, {"exp", c.exp}});
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(claims.data()),
                       claims.size(), sk_.data());
  return "tt1." + b64url(reinterpret_cast<const unsigned char*>(claims.data()), claims.size()) + "."
         + b64url(sig, sizeof sig);
}

expected<token_claims> token_authority::verify(std::string_view token, std::int64_t now) const {
  if (token.size() > 4096 || token.substr(0, 4) != "tt1.")
    return bad("not a ticktock token");
  token.remove_prefix(4);
  auto dot = token.find('.');
  if (dot == std::string_view::npos)
    return bad("malformed token");
  std::string claims, sig;
  if (!unb64url(token.substr(0, dot), claims) || !unb64url(token.substr(dot + 1), sig)
      || sig.size() != crypto_sign_BYTES)
    return bad("malformed token");
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig.data()),
                                  reinterpret_cast<const unsigned char*>(claims.data()),
                                  claims.size(), pk_.data())
      != 0)
    return bad("token signature does not verify");
  boost::system::error_code ec;
  auto v = boost::json::parse(claims, ec);
  if (ec || !v.is_object())
    return bad("malformed token claims");
  auto& o = v.as_object();
  auto* agent = o.if_contains("agent");
  auto* scopes = o.if_contains("scopes");
  auto* exp = o.if_contains("exp");
  if (!agent || !agent->is_string() || !scopes || !scopes->is_array() || !exp || !exp->is_int64())
    return bad("malformed token claims");
  token_claims c;
  c.agent = std::string{agent->as_string()};
  c.exp = exp->as_int64();
  for (auto& s : scopes->as_array())
    if (s.is_string())
      c.scopes.insert(std::string{s.as_string()});
  if (c.exp <= now)
    return bad("token expired");
  return c;
}

}  // namespace ticktock::drivers
