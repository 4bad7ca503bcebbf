// Fuzzes envelope verification: the application/ticktock-envelope+json body
// of POST /v1/agents/{id}/inbox (router parsing, node::deliver) and the
// signature check and decryption before the recipient's tick
// (keyring::open). The first byte picks a mode:
//  - even: the rest is the body as received;
//  - odd: the rest is a payload that agent a1 signs for a2 through
//    POST /v1/agents/a1/fs/identity/envelope (byte 1: bit 0 encrypted,
//    bits 1-3 which field to tamper with, byte 2 where). An untouched
//    envelope must reach a2's tick exactly once; a tampered one never.

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>

#include "fuzz_node.hpp"
#include "ticktock/runtime/identity.hpp"

using namespace ticktock;
namespace json = boost::json;

namespace {

fuzz::fuzz_env* env = nullptr;

drivers::response call(std::string method, std::string target, std::string body,
                       std::string content_type = "application/json") {
  drivers::request r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  r.headers["authorization"] = std::string{"Bearer "} + fuzz::admin_token;
  r.headers["content-type"] = std::move(content_type);
  return env->api->handle(r);
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "envelope: %s\n", what.c_str());
  std::abort();
}

constexpr const char* envelope_type = "application/ticktock-envelope+json";

// Flips one hex digit of the string field `name`.
void flip_hex(json::object& o, const char* name, std::uint8_t where) {
  std::string s{o.at(name).as_string()};
  auto& c = s[where % s.size()];
  c = c == '0' ? '1' : '0';
  o[name] = s;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  env = new fuzz::fuzz_env();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  if (data[0] % 2 == 0) {
    auto r = call("POST", "/v1/agents/a2/inbox",
                  std::string{reinterpret_cast<const char*>(data) + 1, size - 1}, envelope_type);
    if (r.status != 202 && r.status != 400 && r.status != 409 && r.status != 413)
      fail("raw envelope answered " + std::to_string(r.status) + ": " + r.body);
    if (r.status == 202 && !env->n->wait_idle(std::chrono::seconds{10}))
      fail("not idle after a delivered envelope");
    return 0;
  }
  if (size < 3)
    return 0;
  bool encrypted = data[1] & 1;
  int tamper = (data[1] >> 1) % 5;  // none, signature, payload, time, from
  std::uint8_t where = data[2];
  std::string payload{reinterpret_cast<const char*>(data) + 3, size - 3};
  json::object req{{"to", "a2"}, {"payload_base64", identity::to_base64(payload)},
                   {"encrypted", encrypted}};
  auto made = call("POST", "/v1/agents/a1/fs/identity/envelope", json::serialize(req));
  if (made.status != 200)
    fail("identity/envelope answered " + std::to_string(made.status) + ": " + made.body);
  boost::system::error_code ec;
  auto v = json::parse(made.body, ec);
  if (ec || !v.is_object())
    fail("identity/envelope gave no JSON object: " + made.body);
  auto& o = v.as_object();
  switch (tamper) {
    case 1: flip_hex(o, "signature", where); break;
    case 2: {
      std::string bytes = payload;
      if (auto* b = o.if_contains("payload_base64"))
        bytes = *identity::from_base64(b->as_string());
      if (bytes.empty())
        bytes = "x";
      else
        bytes[where % bytes.size()] ^= static_cast<char>(1 + (where >> 4));
      o.erase("payload");
      o["payload_base64"] = identity::to_base64(bytes);
      break;
    }
    case 3: o["time_us"] = o.at("time_us").as_int64() + 1 + where; break;
    case 4: o["from"] = where % 2 ? "a2" : "stranger"; break;
    default: break;
  }
  auto before = fuzz::messages_seen.load();
  auto r = call("POST", "/v1/agents/a2/inbox", json::serialize(o), envelope_type);
  if (r.status != 202)
    fail("a " + std::string{tamper ? "tampered" : "genuine"} + " envelope answered "
         + std::to_string(r.status) + ": " + r.body);
  if (!env->n->wait_idle(std::chrono::seconds{10}))
    fail("not idle after a delivered envelope");
  auto seen = fuzz::messages_seen.load() - before;
  if (tamper == 0 && seen != (payload == "fail" ? 0u : 1u))
    fail("a genuine envelope reached the tick " + std::to_string(seen) + " times");
  if (tamper != 0 && seen != 0)
    fail("a tampered envelope (field " + std::to_string(tamper) + ") reached the tick");
  return 0;
}
