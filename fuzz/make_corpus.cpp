// Writes the seed corpora of the fuzzers into <dir>/<fuzzer>/ from the real
// code paths: records a node stored, envelopes it signed, tokens it issued,
// requests the router answers; plus a few hostile inputs each.
//   build-fuzz/fuzz/make_corpus fuzz/corpus

#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <map>

#include "bundle.hpp"
#include "fuzz_node.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/storage/records.hpp"

using namespace ticktock;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

fs::path root;
std::map<std::string, int> counts;

void seed(const std::string& fuzzer, const std::string& name, std::string_view bytes) {
  auto dir = root / fuzzer;
  fs::create_directories(dir);
  std::ofstream out(dir / ("seed-" + name), std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ++counts[fuzzer];
}

std::string request(std::string_view method, std::string_view target, std::string_view token,
                    std::string_view body = {}, std::string_view extra_headers = {}) {
  std::string r{method};
  r += " ";
  r += target;
  r += "\n";
  if (!token.empty())
    r += "Authorization: Bearer " + std::string{token} + "\n";
  r += extra_headers;
  r += "\n";
  r += body;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus <corpus dir>\n");
    return 2;
  }
  root = argv[1];
  fuzz::fuzz_env env;
  auto& n = *env.n;
  for (auto p : {"emit", "alarm", "fail", "hello", "\xff\xfe binary"})
    (void)n.send("a1", p);
  n.wait_idle(std::chrono::seconds{30});

  // -- token: issued tokens (mode 0) and claims to sign (mode 1) ------------
  drivers::token_authority authority{fuzz::node_key()};
  drivers::token_claims all{"a1", {}, fuzz::token_exp};
  for (auto& s : drivers::known_scopes)
    all.scopes.insert(s);
  auto agent_token = authority.issue(all);
  seed("token", "issued-all-scopes", "\0" + agent_token);
  seed("token", "issued-read", "\0" + authority.issue({"a2", {"read"}, fuzz::token_exp}));
  seed("token", "issued-expired", "\0" + authority.issue({"a2", {"read"}, 1000}));
  seed("token", "claims", R"(_{"agent":"a1","scopes":["read","http"],"exp":4102444800})");
  seed("token", "claims-odd-types", R"(_{"agent":1,"scopes":[1,null,"read"],"exp":1e99})");
  seed("token", "claims-deep", "_" + std::string(300, '[') + std::string(300, ']'));
  seed("token", "bad-base64", std::string{"\0tt1.%%%%.&&&&", 14});
  seed("token", "no-dot", std::string{"\0tt1.abcdef", 11});

  // -- fs_path ---------------------------------------------------------------
  for (auto [name, p] : std::initializer_list<std::pair<const char*, const char*>>{
         {"root", "/"}, {"status", "/status"}, {"goal", "/goals/target"},
         {"memory", "/memory/kv/some%20key"}, {"identity", "/identity/envelope"},
         {"escaped-slash", "/memory/a%2Fb"}, {"dotdot", "/memory/%2e%2e"},
         {"nul", "/memory/a%00b"}, {"bad-escape", "/memory/%g1"}, {"trailing-percent", "/x%4"},
         {"empty-segment", "/goals//x"}, {"plus", "/memory/kv/a+b"}})
    seed("fs_path", name, p);

  // -- router ----------------------------------------------------------------
  const std::string admin = fuzz::admin_token;
  auto json_type = std::string_view{"Content-Type: application/json\n"};
  seed("router", "healthz", request("GET", "/healthz", {}));
  seed("router", "metrics", request("GET", "/metrics", {}));
  seed("router", "list", request("GET", "/v1/agents?limit=2", admin));
  seed("router", "create", request("POST", "/v1/agents", admin,
                                   R"({"id":"c9","type":"fuzz","config":{"x":1}})", json_type));
  seed("router", "status", request("GET", "/v1/agents/a1", admin));
  seed("router", "send", request("POST", "/v1/agents/a1/inbox", admin, R"({"n":1})",
                                 "Idempotency-Key: k1\n"));
  seed("router", "send-agent-token", request("POST", "/v1/agents/a1/inbox", agent_token, "emit"));
  seed("router", "fs-root", request("GET", "/v1/agents/a1/fs/", agent_token));
  seed("router", "fs-status", request("GET", "/v1/agents/a1/fs/status", admin));
  seed("router", "fs-outbox", request("GET", "/v1/agents/a1/fs/outbox?from_seq=1&limit=5", admin));
  seed("router", "fs-trace-sse", request("GET", "/v1/agents/a1/fs/logs/trace", admin, {},
                                         "Accept: text/event-stream\nLast-Event-ID: 2\n"));
  seed("router", "fs-goal-put", request("PUT", "/v1/agents/a1/fs/goals/g1", admin, R"("win")"));
  seed("router", "fs-memory", request("GET", "/v1/agents/a1/fs/memory/kv", admin));
  seed("router", "fs-deadletter", request("GET", "/v1/agents/a1/fs/deadletter", admin));
  seed("router", "fs-ctl", request("POST", "/v1/agents/a1/fs/ctl", admin, "tick"));
  seed("router", "identity", request("GET", "/v1/agents/a1/fs/identity/public", admin));
  seed("router", "identity-sign", request("POST", "/v1/agents/a1/fs/identity/sign", admin,
                                          R"({"data":"hello"})"));
  seed("router", "identity-envelope", request("POST", "/v1/agents/a1/fs/identity/envelope", admin,
                                              R"({"to":"a2","payload":"hi","encrypted":true})"));
  seed("router", "tokens", request("POST", "/v1/tokens", admin,
                                   R"({"agent":"a1","scopes":["read"],"expires_in":60})"));
  seed("router", "agent-http", request("POST", "/a/a1/hello?x=1", agent_token, "body"));
  seed("router", "delete", request("DELETE", "/v1/agents/a2", admin));
  seed("router", "bad-json", request("POST", "/v1/agents", admin, "{\"id\":"));
  seed("router", "traversal", request("GET", "/v1/agents/a1/fs/memory/%2e%2e/x", admin));
  seed("router", "dot-segment", request("GET", "/v1/agents/../agents", admin));
  seed("router", "bad-token", request("GET", "/v1/agents/a1", "tt1.AAAA.BBBB"));
  seed("router", "bad-id", request("GET", "/v1/agents/%ff%00", admin));
  seed("router", "bad-query", request("GET", "/v1/agents?limit=%zz", admin));
  seed("router", "deep-json", request("POST", "/v1/agents/a1/inbox", admin,
                                      std::string(5000, '[') + std::string(5000, ']')));
  if (auto b = n.export_bundle("a1"))
    seed("router", "import", request("POST", "/v1/agents/import", admin, *b));

  // -- envelope: raw bodies (mode 0) and payloads to sign (mode 1) ----------
  drivers::request er;
  er.method = "POST";
  er.target = "/v1/agents/a1/fs/identity/envelope";
  er.headers["authorization"] = "Bearer " + admin;
  er.body = R"({"to":"a2","payload":"hello","encrypted":false})";
  auto plain = env.api->handle(er).body;
  er.body = R"({"to":"a2","payload":"hello","encrypted":true})";
  auto sealed = env.api->handle(er).body;
  seed("envelope", "raw-plain", "\0" + plain);
  seed("envelope", "raw-encrypted", "\0" + sealed);
  seed("envelope", "raw-not-object", std::string{"\0[1,2]", 6});
  seed("envelope", "raw-short-id", std::string{"\0", 1}
                                     + R"({"id":"00","from":"a1","time_us":1,"payload":"x",)"
                                       R"("signature":"00","sender_key":"00"})");
  seed("envelope", "raw-stranger", std::string{"\0", 1}
                                     + R"({"id":"000102030405060708090a0b0c0d0e0f","from":"zz",)"
                                       R"("time_us":-9223372036854775808,"payload_base64":"AA==",)"
                                       R"("signature":")" + std::string(128, 'a')
                                     + R"(","sender_key":")" + std::string(64, 'b') + R"("})");
  const char* tampers[] = {"none", "signature", "payload", "time", "from"};
  for (int t = 0; t < 5; ++t)
    for (int enc = 0; enc < 2; ++enc) {
      std::string in{"\x01"};
      in.push_back(static_cast<char>(enc | (t << 1)));
      in.push_back(static_cast<char>(7 * t + 3));
      in += t == 2 ? "payload to flip" : "hello \xe2\x9c\x93";
      seed("envelope", std::string{"signed-"} + tampers[t] + (enc ? "-encrypted" : ""), in);
    }
  seed("envelope", "signed-binary", std::string{"\x01\x00\x00\xff\xfe\x00", 6});
  seed("envelope", "signed-empty", std::string{"\x01\x01\x00", 3});

  // -- codec: every record a1 has, from its bundle ----------------------------
  auto bundle_bytes = n.export_bundle("a1", true);
  if (!bundle_bytes) {
    std::fprintf(stderr, "export: %s\n", bundle_bytes.error_value().message().c_str());
    return 1;
  }
  seed("codec", "bundle", "\x08" + *bundle_bytes);
  auto b = storage::decode_bundle(*bundle_bytes);
  if (!b) {
    std::fprintf(stderr, "decode_bundle failed\n");
    return 1;
  }
  std::map<std::string, char> selector = {{"agents", 0},  {"inbox", 1},      {"outbox", 2},
                                          {"trajectory", 4}, {"deadletter", 5}, {"alarms", 6},
                                          {"identity", 7}};
  std::map<std::string, int> per_column;
  for (auto& e : b->entries) {
    auto s = selector.find(e.column);
    if (s == selector.end() || e.value.empty() || per_column[e.column]++ >= 3)
      continue;
    auto name = e.column + "-" + std::to_string(per_column[e.column]);
    seed("codec", name, std::string(1, s->second) + e.value);
    if (e.column == "trajectory")
      if (auto st = storage::decode_signed_trajectory(e.value))
        seed("codec", "trajectory-record-" + std::to_string(per_column[e.column]),
             "\x03" + st->first);
  }
  storage::inbox_entry ie;
  ie.kind = trigger_kind::http;
  ie.payload = "GET /";
  ie.from = "a2";
  seed("codec", "inbox-http", "\x01" + storage::encode(ie));
  storage::deadletter_entry de;
  de.reason = "corrupt_record";
  de.entry.corrupt = true;
  de.entry.raw = "\x01\x02";
  seed("codec", "deadletter-corrupt", "\x05" + storage::encode(de));
  seed("codec", "truncated", std::string{"\x00\x10\x00\x00\x00", 5});
  seed("codec", "huge-segment-count", std::string{"\x01\xff\xff\xff\x7f\x00\x00\x00\x00", 9});
  seed("codec", "far-pointer", std::string{"\x03\x00\x00\x00\x00\x02\x00\x00\x00\xfa\xff\xff\xff\x00\x00\x00\x00", 17});

  for (auto& [f, c] : counts)
    std::printf("%s: %d seeds\n", f.c_str(), c);
  return 0;
}
