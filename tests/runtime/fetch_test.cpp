// The http service's pure layer: fetch requests as agents write them, the
// URL parts the policy gate sees, and the result JSON.

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "ticktock/runtime/fetch.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

fetch::request parsed(std::string_view text, const fetch::limits& lim = {}) {
  auto r = fetch::parse_request(text, lim);
  INFO(text);
  INFO((r ? std::string{} : r.error_value().message()));
  REQUIRE(r.has_value());
  return *r;
}

std::string refusal(std::string_view text, const fetch::limits& lim = {}) {
  auto r = fetch::parse_request(text, lim);
  INFO(text);
  REQUIRE_FALSE(r.has_value());
  return r.error_value().message();
}

}  // namespace

TEST_CASE("a fetch request reads every field and defaults the rest", "[fetch]") {
  auto r = parsed(R"({"url":"http://Example.COM:8080/a/b?x=1&y=2#frag"})");
  CHECK(r.method == "GET");
  CHECK(r.url == "http://Example.COM:8080/a/b?x=1&y=2");
  CHECK(r.parts.host == "example.com");  // what policies match, case folded
  CHECK(r.parts.port == "8080");
  CHECK(r.parts.host_header == "Example.COM:8080");
  CHECK(r.parts.target == "/a/b?x=1&y=2");
  CHECK_FALSE(r.parts.tls);
  CHECK(r.timeout == 10s);
  CHECK(r.max_response_bytes == 1u << 20);
  // An IPv6 literal in one spelling, an IPv4-mapped one as its IPv4 address.
  CHECK(parsed(R"({"url":"http://[0:0:0:0:0:0:0:1]:8080/"})").parts.host == "::1");
  CHECK(parsed(R"({"url":"http://[::FFFF:127.0.0.1]/"})").parts.host == "127.0.0.1");
  CHECK(parsed(R"({"url":"http://[::ffff:7f00:1]/"})").parts.host == "127.0.0.1");
  CHECK(parsed(R"({"url":"http://10.1.2.3:65535/"})").parts.host == "10.1.2.3");

  auto p = parsed(R"({"method":"POST","url":"https://api.example.com","headers":{"X-Key":"v 1",)"
                  R"("Content-Type":"application/json"},"body":"{\"a\":1}","timeout_ms":250,)"
                  R"("max_response_bytes":4096})");
  CHECK(p.method == "POST");
  CHECK(p.parts.tls);
  CHECK(p.parts.port == "443");
  CHECK(p.parts.target == "/");
  CHECK(p.headers == std::vector<std::pair<std::string, std::string>>{
                       {"X-Key", "v 1"}, {"Content-Type", "application/json"}});
  CHECK(p.body == R"({"a":1})");
  CHECK(p.timeout == 250ms);
  CHECK(p.max_response_bytes == 4096);

  // to_json reads back the same.
  auto again = parsed(fetch::to_json(p));
  CHECK(again.method == p.method);
  CHECK(again.url == p.url);
  CHECK(again.headers == p.headers);
  CHECK(again.body == p.body);
  CHECK(again.timeout == p.timeout);
  CHECK(again.max_response_bytes == p.max_response_bytes);

  auto ip6 = parsed(R"({"url":"http://[::1]:9/x"})");
  CHECK(ip6.parts.host == "::1");
  CHECK(ip6.parts.host_header == "[::1]:9");

  auto bin = parsed(R"({"method":"PUT","url":"http://h/","body_base64":"AP8="})");
  CHECK(bin.body == std::string{"\x00\xff", 2});
  CHECK(json::parse(fetch::to_json(bin)).as_object().at("body_base64") == "AP8=");
}

TEST_CASE("bad fetch requests are refused naming what is wrong", "[fetch]") {
  CHECK(refusal("not json").find("not valid JSON") != std::string::npos);
  CHECK(refusal("[1]").find("JSON object") != std::string::npos);
  CHECK(refusal("{}").find("url: missing") != std::string::npos);
  CHECK(refusal(R"({"url":"ftp://example.com/x"})").find("only http and https") != std::string::npos);
  CHECK(refusal(R"({"url":"file:///etc/passwd"})").find("only http and https") != std::string::npos);
  CHECK(refusal(R"({"url":"/relative"})").find("not an absolute URL") != std::string::npos);
  CHECK(refusal(R"({"url":"http:///nohost"})").find("no host") != std::string::npos);
  CHECK(refusal(R"({"url":"http://user:pw@example.com/"})").find("user info") != std::string::npos);
  CHECK(refusal(R"({"url":"http://example.com:0/"})").find("port") != std::string::npos);
  CHECK(refusal(R"({"url":"http://ex%41mple.com/"})").find("host") != std::string::npos);
  CHECK(refusal(R"({"url":7})").find("url: a string") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","method":"CONNECT"})").find("method") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","method":"get"})").find("method") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","headers":[]})").find("headers") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","headers":{"Bad Name":"x"}})").find("header name") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","headers":{"X":"a\r\nInjected: 1"}})").find("control") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","headers":{"X":1}})").find("a string") != std::string::npos);
  for (auto h : {"Host", "content-length", "Transfer-Encoding", "Connection", "Proxy-Authorization"})
    CHECK(refusal(std::string{R"({"url":"http://h/","headers":{")"} + h + R"(":"x"}})")
            .find("set by the executor") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","body":"a","body_base64":"YQ=="})").find("not both") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","body_base64":"***"})").find("base64") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","timeout_ms":0})").find("timeout_ms") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","timeout_ms":60001})").find("timeout_ms") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","timeout_ms":"5"})").find("timeout_ms") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","max_response_bytes":-1})").find("max_response_bytes") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","follow_redirects":true})").find("unknown field") != std::string::npos);
  // Bugs: a port over 65535 wrapped (84046 reached 18510); an IPv4 address
  // in another spelling slipped past a policy's destination globs.
  for (auto port : {"65536", "84046", "99999999999"})
    CHECK(refusal(std::string{R"({"url":"http://h:)"} + port + R"(/"})").find("1 to 65535") != std::string::npos);
  for (auto host : {"2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0"})
    CHECK(refusal(std::string{R"({"url":"http://)"} + host + R"(:8080/"})").find("not written as a.b.c.d")
          != std::string::npos);
  CHECK(refusal(R"({"url":"http://a/","url":"http://b/"})").find("names 'url' twice") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","headers":{"X":"1","X":"2"}})").find("twice") != std::string::npos);

  fetch::limits small;
  small.max_body_bytes = 4;
  small.max_response_bytes = 100;
  small.max_timeout = 1000ms;
  CHECK(refusal(R"({"url":"http://h/","body":"12345"})", small).find("more than the 4 allowed") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","max_response_bytes":101})", small).find("1 to 100") != std::string::npos);
  CHECK(refusal(R"({"url":"http://h/","timeout_ms":1001})", small).find("1 to 1000") != std::string::npos);
  CHECK(parsed(R"({"url":"http://h/","body":"1234"})", small).body == "1234");
}

TEST_CASE("a response's JSON has its status, headers and body, binary bodies in base64", "[fetch]") {
  fetch::response r;
  r.status = 302;
  r.headers = {{"location", "/next"}, {"set-cookie", "a=1"}, {"set-cookie", "b=2"}};
  r.body = "moved";
  auto o = json::parse(fetch::to_json(r)).as_object();
  CHECK(o.at("status") == 302);
  CHECK(o.at("headers").at("location") == "/next");
  CHECK(o.at("headers").at("set-cookie") == "a=1, b=2");
  CHECK(o.at("body") == "moved");

  r.body = std::string{"\x89PNG\x00\xff", 6};
  o = json::parse(fetch::to_json(r)).as_object();
  CHECK_FALSE(o.contains("body"));
  CHECK(o.at("body_base64") == "iVBORwD/");

  auto f = json::parse(fetch::to_json(fetch::failure{"timeout", "no answer"})).as_object();
  CHECK(f.at("code") == "timeout");
  CHECK(f.at("message") == "no answer");
}
