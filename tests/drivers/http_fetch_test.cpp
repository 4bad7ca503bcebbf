// The http service's executor (drivers::make_http_fetch) against a real
// HTTP(S) server on 127.0.0.1 (openai_test_server, scripted per request):
// what goes on the wire, what comes back, and every limit; and the refusal
// of private addresses when allow_private is off (the default).

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "../temp_dir.hpp"
#include "address_filter.hpp"
#include "openai_test_server.hpp"
#include "ticktock/drivers/http_fetch.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
using test::openai_behaviour;
using test::openai_test_server;
using kind = openai_behaviour::kind;

namespace {

std::string base(const openai_test_server& s, const std::string& host = "127.0.0.1") {
  auto u = s.base_url(host);  // ".../v1"
  return u.substr(0, u.size() - 3);
}

fetch::request req(const std::string& json) {
  auto r = fetch::parse_request(json);
  INFO((r ? std::string{} : r.error_value().message()));
  REQUIRE(r.has_value());
  return *r;
}

// The test server is on 127.0.0.1: these executors allow private addresses.
std::shared_ptr<fetch::executor> executor(drivers::http_fetch_options o = {}) {
  o.allow_private = true;
  auto e = drivers::make_http_fetch(std::move(o));
  INFO((e ? std::string{} : e.error_value().message()));
  REQUIRE(e.has_value());
  return *e;
}

fetch::outcome run(fetch::executor& e, const fetch::request& r) {
  std::atomic<bool> cancelled{false};
  return e.run(r, cancelled);
}

fetch::response ok(const fetch::outcome& o) {
  if (auto* f = std::get_if<fetch::failure>(&o))
    FAIL("failed: " << f->code << ": " << f->message);
  return std::get<fetch::response>(o);
}

fetch::failure failed(const fetch::outcome& o) {
  if (auto* r = std::get_if<fetch::response>(&o))
    FAIL("answered " << r->status << ": " << r->body.substr(0, 200));
  return std::get<fetch::failure>(o);
}

std::string header(const fetch::response& r, const std::string& name) {
  for (auto& [k, v] : r.headers)
    if (k == name)
      return v;
  return "(none)";
}

}  // namespace

TEST_CASE("a fetch sends the method, target, headers and body and returns status, headers and body", "[fetch]") {
  openai_test_server server;
  auto e = executor();
  server.push(openai_behaviour::respond(201, "created!", {{"X-Reply", "yes"}}));
  auto r = ok(run(*e, req(R"({"method":"POST","url":")" + base(server) + R"(/things?a=1#frag",)"
                          R"("headers":{"X-Token":"t1","Content-Type":"text/plain"},"body":"hello"})")));
  CHECK(r.status == 201);
  CHECK(r.body == "created!");
  CHECK(header(r, "x-reply") == "yes");
  auto got = server.requests().back();
  CHECK(got.method == "POST");
  CHECK(got.target == "/things?a=1");
  CHECK(got.headers["x-token"] == "t1");
  CHECK(got.headers["content-type"] == "text/plain");
  CHECK(got.headers["user-agent"] == "ticktock");
  CHECK(got.headers["content-length"] == "5");
  CHECK(got.headers["host"] == "127.0.0.1:" + std::to_string(server.port()));
  CHECK(got.body == "hello");
}

TEST_CASE("a fetch reports 4xx, 5xx and redirects as responses and never follows a redirect", "[fetch]") {
  openai_test_server server;
  auto e = executor();
  server.push(openai_behaviour::respond(302, "", {{"Location", base(server) + "/elsewhere"}}));
  auto r = ok(run(*e, req(R"({"url":")" + base(server) + R"(/start"})")));
  CHECK(r.status == 302);
  CHECK(header(r, "location") == base(server) + "/elsewhere");
  CHECK(server.request_count() == 1);  // not followed

  server.push(openai_behaviour::respond(404, "nope"));
  CHECK(ok(run(*e, req(R"({"url":")" + base(server) + R"(/x"})"))).status == 404);
  server.push(openai_behaviour::respond(503, "busy"));
  auto busy = ok(run(*e, req(R"({"url":")" + base(server) + R"(/x"})")));
  CHECK(busy.status == 503);
  CHECK(busy.body == "busy");
  CHECK(server.request_count() == 3);  // no retries either

  server.push(openai_behaviour::respond(200, "a body HEAD must not read"));
  auto head = ok(run(*e, req(R"({"method":"HEAD","url":")" + base(server) + R"(/x"})")));
  CHECK(head.status == 200);
  CHECK(head.body.empty());
}

TEST_CASE("a fetch slower than its timeout fails with timeout", "[fetch]") {
  openai_test_server server;
  auto e = executor();
  server.push(openai_behaviour::delayed(60s));
  auto start = std::chrono::steady_clock::now();
  auto f = failed(run(*e, req(R"({"url":")" + base(server) + R"(/slow","timeout_ms":200})")));
  CHECK(f.code == "timeout");
  CHECK(f.message.find("200 ms") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("an answer over max_response_bytes fails with response_too_large", "[fetch]") {
  openai_test_server server;
  auto e = executor();
  auto url = base(server) + "/big";
  server.push(openai_behaviour::of(kind::huge, 1u << 20));  // chunked, no length
  auto chunked = failed(run(*e, req(R"({"url":")" + url + R"(","max_response_bytes":65536})")));
  CHECK(chunked.code == "response_too_large");
  CHECK(chunked.message.find("65536") != std::string::npos);
  server.push(openai_behaviour::of(kind::huge_declared, 1u << 20));
  auto declared = failed(run(*e, req(R"({"url":")" + url + R"(","max_response_bytes":65536})")));
  CHECK(declared.code == "response_too_large");
  // Exactly at the limit is fine.
  server.push(openai_behaviour::respond(200, std::string(1000, 'x')));
  CHECK(ok(run(*e, req(R"({"url":")" + url + R"(","max_response_bytes":1000})"))).body.size() == 1000);
}

TEST_CASE("a fetch to a closed port or a server that hangs up is a network error", "[fetch]") {
  auto e = executor();
  std::uint16_t port = 0;
  {
    openai_test_server gone;
    port = gone.port();
  }
  auto f = failed(run(*e, req(R"({"url":"http://127.0.0.1:)" + std::to_string(port) + R"(/"})")));
  CHECK(f.code == "network_error");

  openai_test_server server;
  server.push(openai_behaviour::of(kind::close));
  CHECK(failed(run(*e, req(R"({"url":")" + base(server) + R"(/"})"))).code == "network_error");
  server.push(openai_behaviour::of(kind::truncated));
  auto cut = failed(run(*e, req(R"({"url":")" + base(server) + R"(/"})")));
  CHECK(cut.code == "malformed_response");
  CHECK(cut.message.find("cut off") != std::string::npos);
}

TEST_CASE("a cancelled fetch stops waiting and reports cancelled", "[fetch]") {
  openai_test_server server;
  server.push(openai_behaviour::delayed(60s));
  auto e = executor();
  std::atomic<bool> cancelled{false};
  std::thread canceller{[&] {
    for (int i = 0; i < 3000 && server.request_count() == 0; ++i)
      std::this_thread::sleep_for(10ms);
    cancelled = true;
  }};
  auto out = e->run(req(R"({"url":")" + base(server) + R"(/","timeout_ms":30000})"), cancelled);
  canceller.join();
  CHECK(failed(out).code == "cancelled");
}

TEST_CASE("https fetches verify the server against the CA file", "[fetch]") {
  test::temp_dir dir;
  test::openai_test_server_options so;
  so.tls = test::make_test_tls({"localhost"}, {"127.0.0.1"});
  openai_test_server server{so};
  auto ca = (dir.path() / "ca.pem").string();
  std::ofstream{ca} << so.tls->ca_cert_pem;
  REQUIRE(base(server).rfind("https://", 0) == 0);

  auto untrusting = executor();
  auto f = failed(run(*untrusting, req(R"({"url":")" + base(server) + R"(/"})")));
  CHECK(f.code == "network_error");
  CHECK(f.message.find("TLS handshake") != std::string::npos);
  CHECK(server.request_count() == 0);

  drivers::http_fetch_options o;
  o.ca_file = ca;
  auto trusting = executor(o);
  server.push(openai_behaviour::respond(200, "secret stuff"));
  CHECK(ok(run(*trusting, req(R"({"url":")" + base(server, "localhost") + R"(/s"})"))).body
        == "secret stuff");

  o.ca_file = (dir.path() / "missing.pem").string();
  auto bad = drivers::make_http_fetch(o);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error_value().message().find("ca_file") != std::string::npos);
}

TEST_CASE("by default a fetch of a loopback address fails with address_not_allowed and connects nowhere", "[fetch]") {
  openai_test_server server;
  server.push(openai_behaviour::respond(200, "admin secrets"));
  auto strict = drivers::make_http_fetch({});
  REQUIRE(strict.has_value());
  for (std::string host : {"127.0.0.1", "localhost"}) {
    INFO(host);
    auto f = failed(run(**strict, req(R"({"url":")" + base(server, host) + R"(/v1/agents"})")));
    CHECK(f.code == "address_not_allowed");
    CHECK(f.message.find(host) != std::string::npos);
    CHECK(f.message.find("--http-fetch-private") != std::string::npos);
    CHECK(f.message.find('\n') == std::string::npos);
  }
  CHECK(server.accepted_connections() == 0);
  CHECK(server.request_count() == 0);
  // localhost names the address it resolved to.
  auto named = failed(run(**strict, req(R"({"url":")" + base(server, "localhost") + R"(/"})")));
  CHECK((named.message.find("127.0.0.1") != std::string::npos
         || named.message.find("::1") != std::string::npos));
  // The same server, allowed: the opt-in reaches it.
  CHECK(ok(run(*executor(), req(R"({"url":")" + base(server) + R"(/"})"))).body == "admin secrets");
  CHECK(server.accepted_connections() == 1);
}

TEST_CASE("by default metadata, private, IPv6 loopback and v4-mapped loopback literals are refused at once", "[fetch]") {
  auto strict = drivers::make_http_fetch({});
  REQUIRE(strict.has_value());
  for (std::string url : {"http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                          "http://192.168.1.1:8080/", "http://172.16.0.1/", "http://100.64.0.1/",
                          "http://0.0.0.0/", "http://255.255.255.255/", "http://[::1]:7070/",
                          "http://[::ffff:127.0.0.1]:7070/", "http://[::ffff:169.254.169.254]/",
                          "http://[fe80::1]/", "http://[fd00::1]/", "https://127.0.0.2/"}) {
    INFO(url);
    auto start = std::chrono::steady_clock::now();
    auto f = failed(run(**strict, req(R"({"url":")" + url + R"(","timeout_ms":60000})")));
    CHECK(f.code == "address_not_allowed");
    CHECK(f.message.find("not a public address") != std::string::npos);
    // Refused before any connection attempt: no waiting on the network.
    CHECK(std::chrono::steady_clock::now() - start < 2s);
  }
}

TEST_CASE("a public address literal passes the filter", "[fetch]") {
  auto strict = drivers::make_http_fetch({});
  REQUIRE(strict.has_value());
  // No internet needed: whatever happens within 1 ms (timeout, network
  // error, even an answer), it is not a refusal by the filter.
  auto out = run(**strict, req(R"({"url":"http://93.184.216.34/","timeout_ms":1})"));
  if (auto* f = std::get_if<fetch::failure>(&out))
    CHECK(f->code != "address_not_allowed");
}

TEST_CASE("is_public_address refuses every non-public range and keeps public ones", "[fetch]") {
  auto pub = [](const char* s) {
    return drivers::detail::is_public_address(boost::asio::ip::make_address(s));
  };
  for (auto* s : {"0.0.0.0", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.0",
                  "100.127.255.255", "127.0.0.1", "127.255.255.254", "169.254.169.254",
                  "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.168.0.1", "198.18.0.1",
                  "198.19.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
                  "255.255.255.255", "::", "::1", "fc00::1", "fd12:3456::1", "fe80::1",
                  "febf:ffff::1", "fec0::1", "ff02::1", "ff0e::1", "::ffff:127.0.0.1",
                  "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::127.0.0.1", "::10.0.0.1",
                  "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "192.0.2.1", "198.51.100.7",
                  "203.0.113.255", "64:ff9b:1::808:808", "100::1", "2001:db8::1",
                  "2001:db8:ffff::1", "3fff::1", "3fff:fff::1", "2002:7f00:1::1",
                  "2002:a9fe:a9fe::1", "2002:a00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",
                  "2001:0:a00:1:8000:63bf:3fff:fdd2"}) {
    INFO(s);
    CHECK_FALSE(pub(s));
  }
  for (auto* s : {"93.184.216.34", "1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0",
                  "100.63.255.255", "100.128.0.0", "126.255.255.255", "128.0.0.0",
                  "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0",
                  "192.0.1.0", "192.167.255.255", "192.169.0.0", "198.17.255.255",
                  "198.20.0.0", "223.255.255.255", "2606:2800:220:1:248:1893:25c8:1946",
                  "2001:4860:4860::8888", "::ffff:93.184.216.34", "64:ff9b::808:808",
                  "fbff::1", "fe00::1", "192.0.1.255", "192.0.3.0", "198.51.99.255",
                  "198.51.101.0", "203.0.112.255", "203.0.114.0", "101::1", "100:0:0:1::1",
                  "2001:db9::1", "3fff:1000::1", "2002:808:808::1",
                  "2001:0:4136:e378:8000:63bf:f7f7:f7f7", "2001:4::1"}) {
    INFO(s);
    CHECK(pub(s));
  }
}

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

TEST_CASE("interim 1xx answers are skipped for the final one", "[fetch]") {
  // Bug: a 100 Continue was returned as the answer, and the real one lost.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(lfd, 1) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  std::thread server([lfd] {
    int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0)
      return;
    char buf[4096];
    (void)::read(c, buf, sizeof buf);  // the request (small: one read)
    std::string answer = "HTTP/1.1 100 Continue\r\n\r\n"
                         "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok";
    (void)::write(c, answer.data(), answer.size());
    ::close(c);
  });
  auto e = executor();
  auto r = ok(run(*e, req(R"({"url":"http://127.0.0.1:)" + std::to_string(ntohs(addr.sin_port))
                          + R"(/"})")));
  server.join();
  ::close(lfd);
  CHECK(r.status == 200);
  CHECK(r.body == "ok");
  CHECK(header(r, "x-final") == "yes");
}
