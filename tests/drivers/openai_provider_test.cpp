// The OpenAI-compatible provider against a real OpenAI-compatible HTTP(S)
// server on 127.0.0.1 (openai_test_server), scripted to misbehave.

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "../temp_dir.hpp"
#include "openai_test_server.hpp"
#include "ticktock/drivers/openai_provider.hpp"

using namespace ticktock;
using namespace std::chrono_literals;
using compute::failure;
using compute::result;
using drivers::openai_options;
using drivers::openai_provider;
using test::openai_behaviour;
using test::openai_test_server;
using kind = openai_behaviour::kind;
namespace json = boost::json;

namespace {

compute::request chat(std::string text, bool stream = false) {
  compute::request r;
  r.provider = "openai";
  r.model = "gpt-4o-mini";
  r.messages = {{"system", "be brief"}, {"user", std::move(text)}};
  r.max_tokens = 50;
  r.temperature = 0.5;
  r.stream = stream;
  return r;
}

openai_options options_for(const openai_test_server& server) {
  openai_options o;
  o.base_url = server.base_url();
  o.api_key = "sk-test-secret";
  o.timeout = 10s;
  o.max_retries = 3;
  o.backoff = 1ms;
  o.max_backoff = 5ms;
  return o;
}

std::unique_ptr<openai_provider> make(openai_options o) {
  auto p = openai_provider::make(std::move(o));
  INFO((p ? std::string{} : p.error_value().to_string()));
  REQUIRE(p.has_value());
  return std::move(p).value();
}

struct run_result {
  compute::outcome out;
  std::vector<std::string> deltas;
};

run_result run(openai_provider& p, const compute::request& r) {
  std::atomic<bool> cancelled{false};
  run_result rr;
  rr.out = p.run(r, [&](std::string_view d) { rr.deltas.emplace_back(d); }, cancelled);
  return rr;
}

// (By value: callers pass the temporary that run() returns.)
result ok(const run_result& rr) {
  if (auto* f = std::get_if<failure>(&rr.out))
    FAIL("failed: " << f->code << ": " << f->message);
  return std::get<result>(rr.out);
}

failure failed(const run_result& rr) {
  if (std::holds_alternative<result>(rr.out))
    FAIL("succeeded with: " << std::get<result>(rr.out).content);
  return std::get<failure>(rr.out);
}

json::object body_of(const test::recorded_request& r) { return json::parse(r.body).as_object(); }

}  // namespace

// -- the happy paths ---------------------------------------------------------------

TEST_CASE("a chat completion reads content, finish_reason, usage and model", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  auto rr = run(*p, chat("hello there"));
  auto r = ok(rr);
  CHECK(r.content == "Echo: hello there");
  CHECK(r.finish_reason == "stop");
  CHECK(r.model == "gpt-4o-mini");
  // 5 + 2 tokens for "be brief", 5 + 3 for "hello there"; 3 words.
  CHECK(r.used.prompt_tokens == 15);
  CHECK(r.used.completion_tokens == 3);
  CHECK(rr.deltas.empty());
  CHECK(p->name() == "openai");
}

TEST_CASE("a chat completion request has the OpenAI wire format and the bearer key", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  ok(run(*p, chat("hi")));
  auto reqs = server.requests();
  REQUIRE(reqs.size() == 1);
  auto& q = reqs[0];
  CHECK(q.method == "POST");
  CHECK(q.target == "/v1/chat/completions");
  CHECK(q.headers["authorization"] == "Bearer sk-test-secret");
  CHECK(q.headers["content-type"] == "application/json");
  CHECK(q.headers["host"] == "127.0.0.1:" + std::to_string(server.port()));
  auto b = body_of(q);
  CHECK(b.at("model") == "gpt-4o-mini");
  CHECK(b.at("max_tokens") == 50);
  CHECK(b.at("temperature").to_number<double>() == 0.5);
  CHECK(b.at("stream") == false);
  CHECK_FALSE(b.contains("stream_options"));
  auto& msgs = b.at("messages").as_array();
  REQUIRE(msgs.size() == 2);
  CHECK(msgs[0].at("role") == "system");
  CHECK(msgs[1].at("content") == "hi");
}

TEST_CASE("without an api key no Authorization header is sent", "[openai]") {
  openai_test_server server;
  auto o = options_for(server);
  o.api_key.clear();
  auto p = make(o);
  ok(run(*p, chat("hi")));
  CHECK(server.requests().at(0).headers.count("authorization") == 0);
}

TEST_CASE("a base URL with a trailing slash still reaches /v1/chat/completions", "[openai]") {
  openai_test_server server;
  auto o = options_for(server);
  o.base_url += "/";
  auto p = make(o);
  ok(run(*p, chat("hi")));
  CHECK(server.requests().at(0).target == "/v1/chat/completions");
}

TEST_CASE("a streamed chat completion delivers each piece and the final usage", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  auto rr = run(*p, chat("one two three", true));
  auto r = ok(rr);
  CHECK(rr.deltas == std::vector<std::string>{"Echo:", " one", " two", " three"});
  CHECK(r.content == "Echo: one two three");
  CHECK(r.finish_reason == "stop");
  CHECK(r.used.prompt_tokens == 5 + 2 + 5 + 4);
  CHECK(r.used.completion_tokens == 4);
  auto b = body_of(server.requests().at(0));
  CHECK(b.at("stream") == true);
  CHECK(b.at("stream_options").at("include_usage") == true);
  CHECK(server.requests().at(0).headers["accept"] == "text/event-stream");
}

TEST_CASE("embeddings return one vector per input in order, with usage", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  compute::request r;
  r.kind = compute::request_kind::embeddings;
  r.model = "text-embedding-3-small";
  r.input = {"cat", "a longer text", "cat"};
  auto rr = run(*p, r);
  auto res = ok(rr);
  REQUIRE(res.embeddings.size() == 3);
  CHECK(res.embeddings[0].size() == 8);
  CHECK(res.embeddings[0] == res.embeddings[2]);
  CHECK(res.embeddings[0] != res.embeddings[1]);
  CHECK(res.used.prompt_tokens == 1 + 4 + 1);
  auto q = server.requests().at(0);
  CHECK(q.target == "/v1/embeddings");
  auto b = body_of(q);
  CHECK(b.at("input").as_array().size() == 3);
  CHECK(b.at("model") == "text-embedding-3-small");
}

TEST_CASE("embeddings answered out of order are put back in input order", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::respond(
    200, R"({"data":[{"index":1,"embedding":[2.0]},{"index":0,"embedding":[1.0]}],"usage":{"prompt_tokens":2}})"));
  auto p = make(options_for(server));
  compute::request r;
  r.kind = compute::request_kind::embeddings;
  r.model = "e";
  r.input = {"a", "b"};
  auto res = ok(run(*p, r));
  CHECK(res.embeddings == std::vector<std::vector<double>>{{1.0}, {2.0}});
}

// -- HTTPS ---------------------------------------------------------------------------

TEST_CASE("https works with the CA from ca_file, by IP and by host name", "[openai]") {
  test::temp_dir dir;
  test::openai_test_server_options so;
  so.tls = test::make_test_tls({"localhost"}, {"127.0.0.1"});
  openai_test_server server{so};
  auto ca = (dir.path() / "ca.pem").string();
  std::ofstream{ca} << so.tls->ca_cert_pem;

  auto o = options_for(server);
  o.ca_file = ca;
  REQUIRE(o.base_url.rfind("https://", 0) == 0);
  auto by_ip = make(o);
  CHECK(ok(run(*by_ip, chat("secure", true))).content == "Echo: secure");

  o.base_url = server.base_url("localhost");
  auto by_name = make(o);
  CHECK(ok(run(*by_name, chat("named"))).content == "Echo: named");
  CHECK(server.requests().back().headers["authorization"] == "Bearer sk-test-secret");
}

TEST_CASE("https refuses a server whose CA is not trusted", "[openai]") {
  test::openai_test_server_options so;
  so.tls = test::make_test_tls({"localhost"}, {"127.0.0.1"});
  openai_test_server server{so};
  auto o = options_for(server);
  o.max_retries = 0;
  auto p = make(o);
  auto f = failed(run(*p, chat("hi")));
  CHECK(f.code == "network_error");
  CHECK(f.message.find("TLS handshake") != std::string::npos);
  CHECK(server.request_count() == 0);
}

TEST_CASE("https refuses a certificate for another host name", "[openai]") {
  test::temp_dir dir;
  test::openai_test_server_options so;
  so.tls = test::make_test_tls({"other.example"}, {});
  openai_test_server server{so};
  auto ca = (dir.path() / "ca.pem").string();
  std::ofstream{ca} << so.tls->ca_cert_pem;
  auto o = options_for(server);
  o.ca_file = ca;
  o.max_retries = 0;
  auto p = make(o);
  auto f = failed(run(*p, chat("hi")));
  CHECK(f.code == "network_error");
  CHECK(f.message.find("mismatch") != std::string::npos);
  CHECK(server.request_count() == 0);
}

// -- retries -------------------------------------------------------------------------

TEST_CASE("5xx answers and dropped connections are retried with backoff, then the answer is returned", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::openai_error(500, "boom"));
  server.push(openai_behaviour::openai_error(503, "overloaded"));
  server.push(openai_behaviour::of(kind::close));
  auto o = options_for(server);
  o.backoff = 2ms;
  o.max_backoff = 1000ms;
  std::vector<std::chrono::milliseconds> waits;
  o.on_retry_wait = [&](std::chrono::milliseconds d) { waits.push_back(d); };
  auto p = make(o);
  CHECK(ok(run(*p, chat("persist"))).content == "Echo: persist");
  CHECK(server.request_count() == 4);
  // Exponential with jitter between half and all: [1,2], [2,4], [4,8].
  REQUIRE(waits.size() == 3);
  CHECK(waits[0] >= 1ms);
  CHECK(waits[0] <= 2ms);
  CHECK(waits[1] >= 2ms);
  CHECK(waits[1] <= 4ms);
  CHECK(waits[2] >= 4ms);
  CHECK(waits[2] <= 8ms);
}

TEST_CASE("a 429's Retry-After replaces the backoff, capped at max_backoff", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::rate_limited(0));
  server.push(openai_behaviour::rate_limited(3600));
  auto o = options_for(server);
  o.backoff = 30'000ms;
  o.max_backoff = 3ms;
  std::vector<std::chrono::milliseconds> waits;
  o.on_retry_wait = [&](std::chrono::milliseconds d) { waits.push_back(d); };
  auto p = make(o);
  ok(run(*p, chat("x")));
  CHECK(waits == std::vector<std::chrono::milliseconds>{0ms, 3ms});
}

TEST_CASE("retries exhausted report the last failure", "[openai]") {
  openai_test_server server;
  auto o = options_for(server);
  o.max_retries = 2;
  auto p = make(o);

  for (int i = 0; i < 3; ++i)
    server.push(openai_behaviour::openai_error(502, "bad gateway"));
  auto f = failed(run(*p, chat("x")));
  CHECK(f.code == "provider_error");
  CHECK(f.http_status == 502);
  CHECK(f.retryable);
  CHECK(f.message.find("bad gateway") != std::string::npos);
  CHECK(f.message.find("3 attempts") != std::string::npos);
  CHECK(server.request_count() == 3);

  for (int i = 0; i < 3; ++i)
    server.push(openai_behaviour::rate_limited(0));
  auto rl = failed(run(*p, chat("x")));
  CHECK(rl.code == "rate_limited");
  CHECK(rl.http_status == 429);
  CHECK(server.request_count() == 6);
}

TEST_CASE("a refused connection is a network_error after the retries", "[openai]") {
  std::string url;
  {
    openai_test_server gone;
    url = gone.base_url();
  }
  openai_options o;
  o.base_url = url;
  o.max_retries = 1;
  o.backoff = 1ms;
  int waits = 0;
  o.on_retry_wait = [&](std::chrono::milliseconds) { ++waits; };
  auto p = make(o);
  auto f = failed(run(*p, chat("x")));
  CHECK(f.code == "network_error");
  CHECK(f.http_status == 0);
  CHECK(waits == 1);
}

TEST_CASE("other 4xx are bad_request with the provider's message, not retried", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::openai_error(400, "This model's maximum context length is 128000 tokens."));
  server.push(openai_behaviour::openai_error(401, "Incorrect API key provided"));
  server.push(openai_behaviour::respond(404, "plain text, not json"));
  auto p = make(options_for(server));
  auto a = failed(run(*p, chat("x")));
  CHECK(a.code == "bad_request");
  CHECK(a.http_status == 400);
  CHECK_FALSE(a.retryable);
  CHECK(a.message.find("maximum context length is 128000 tokens") != std::string::npos);
  auto b = failed(run(*p, chat("x")));
  CHECK(b.http_status == 401);
  CHECK(b.message.find("Incorrect API key provided") != std::string::npos);
  CHECK(b.message.find("sk-test-secret") == std::string::npos);
  auto c = failed(run(*p, chat("x")));
  CHECK(c.http_status == 404);
  CHECK(c.message.find("plain text, not json") != std::string::npos);
  CHECK(server.request_count() == 3);
}

// -- malformed, truncated and huge answers --------------------------------------------

TEST_CASE("a body that is not JSON is malformed_response, not retried", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::of(kind::malformed_json));
  auto p = make(options_for(server));
  auto f = failed(run(*p, chat("x")));
  CHECK(f.code == "malformed_response");
  CHECK_FALSE(f.retryable);
  CHECK(server.request_count() == 1);
}

TEST_CASE("answers missing their fields are malformed_response", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  std::vector<std::string> bodies = {
    R"([1,2,3])",
    R"({})",
    R"({"choices":[]})",
    R"({"choices":[{"finish_reason":"stop"}]})",
    R"({"choices":[{"message":{"content":7}}],"usage":{"prompt_tokens":1,"completion_tokens":1}})",
    R"({"choices":[{"message":{"content":"x"}}]})",
    R"({"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":-1,"completion_tokens":1}})",
    R"({"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"1","completion_tokens":1}})",
    std::string(100'000, '[') + std::string(100'000, ']'),
  };
  for (auto& body : bodies) {
    server.push(openai_behaviour::respond(200, body));
    auto rr = run(*p, chat("x"));
    INFO(body.substr(0, 200));
    CHECK(failed(rr).code == "malformed_response");
  }

  compute::request e;
  e.kind = compute::request_kind::embeddings;
  e.model = "e";
  e.input = {"a", "b"};
  std::vector<std::string> embed_bodies = {
    R"({"data":[{"embedding":[1]}],"usage":{"prompt_tokens":1}})",
    R"({"data":[{"embedding":[1]},{"embedding":["x"]}],"usage":{"prompt_tokens":1}})",
    R"({"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}],"usage":{"prompt_tokens":1}})",
    R"({"data":[{"index":5,"embedding":[1]},{"index":0,"embedding":[1]}],"usage":{"prompt_tokens":1}})",
    R"({"data":[{"embedding":[1]},{"embedding":[2]}]})",
  };
  for (auto& body : embed_bodies) {
    server.push(openai_behaviour::respond(200, body));
    auto rr = run(*p, e);
    INFO(body);
    CHECK(failed(rr).code == "malformed_response");
  }
}

TEST_CASE("a body cut short of its Content-Length is malformed_response", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::of(kind::truncated));
  auto p = make(options_for(server));
  auto f = failed(run(*p, chat("x")));
  CHECK(f.code == "malformed_response");
  CHECK(f.message.find("cut off") != std::string::npos);
  CHECK(server.request_count() == 1);
}

TEST_CASE("a stream cut before [DONE] is malformed_response after the pieces it delivered", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::of(kind::stream_cut));
  auto p = make(options_for(server));
  auto rr = run(*p, chat("one two three", true));
  auto f = failed(rr);
  CHECK(f.code == "malformed_response");
  CHECK(f.message.find("[DONE]") != std::string::npos);
  CHECK(rr.deltas == std::vector<std::string>{"Echo:"});
  CHECK(server.request_count() == 1);  // not retried: pieces were delivered
}

TEST_CASE("a stream that ends without [DONE] is malformed_response", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::of(kind::stream_no_done));
  auto p = make(options_for(server));
  auto rr = run(*p, chat("a b", true));
  CHECK(failed(rr).code == "malformed_response");
  CHECK(rr.deltas.size() == 3);
}

TEST_CASE("hostile stream events are malformed_response", "[openai]") {
  openai_test_server server;
  auto p = make(options_for(server));
  std::vector<std::string> streams = {
    "data: {not json}\n\n",
    "data: [1]\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":5}}]}\n\n",
    "data: {\"choices\":{}}\n\n",
    "data: {\"choices\":[{\"delta\":\"x\"}]}\n\n",
    "data: {\"usage\":{\"prompt_tokens\":-5}}\n\n",
    "data: {\"error\":{\"message\":\"overloaded mid-stream\"}}\n\n",
  };
  for (auto& s : streams) {
    // [DONE] follows, so only the bad event can make the stream fail.
    server.push(openai_behaviour::respond(200, s + "data: [DONE]\n\n", {{"Content-Type", "text/event-stream"}}));
    auto rr = run(*p, chat("x", true));
    INFO(s);
    CHECK(failed(rr).code == "malformed_response");
  }
}

TEST_CASE("a stream without a usage chunk is billed at the estimates", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::respond(
    200,
    ": a comment\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\r\n\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"efgh\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    {{"Content-Type", "text/event-stream"}}));
  auto p = make(options_for(server));
  auto req = chat("x", true);
  auto rr = run(*p, req);
  auto r = ok(rr);
  CHECK(r.content == "abcdefgh");
  CHECK(r.finish_reason == "stop");
  CHECK(r.used.completion_tokens == 2);
  CHECK(r.used.prompt_tokens == compute::estimate_prompt_tokens(req));
}

TEST_CASE("an answer over max_response_bytes is response_too_large", "[openai]") {
  openai_test_server server;
  auto o = options_for(server);
  o.max_response_bytes = 256 * 1024;
  auto p = make(o);

  server.push(openai_behaviour::of(kind::huge, 4u << 20));
  auto chunked = failed(run(*p, chat("x")));
  CHECK(chunked.code == "response_too_large");

  server.push(openai_behaviour::of(kind::huge_declared, 4u << 20));
  auto declared = failed(run(*p, chat("x")));
  CHECK(declared.code == "response_too_large");

  server.push(openai_behaviour::of(kind::huge, 4u << 20));
  auto streamed = failed(run(*p, chat("x", true)));
  CHECK(streamed.code == "response_too_large");

  server.push(openai_behaviour::openai_error(500, std::string(1u << 20, 'e')));
  auto error_body = failed(run(*p, chat("x")));
  CHECK(error_body.code == "response_too_large");
  CHECK(server.request_count() == 4);
}

// -- timeouts and cancellation -----------------------------------------------------------

TEST_CASE("an answer slower than the timeout is a timeout", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::delayed(60s));
  auto o = options_for(server);
  o.timeout = 100ms;
  o.max_retries = 0;
  auto p = make(o);
  auto f = failed(run(*p, chat("x")));
  CHECK(f.code == "timeout");
  CHECK(f.retryable);
}

TEST_CASE("a timeout is retried and the next attempt's answer returned", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::delayed(60s));
  auto o = options_for(server);
  o.timeout = 200ms;
  o.max_retries = 1;
  auto p = make(o);
  CHECK(ok(run(*p, chat("late"))).content == "Echo: late");
  CHECK(server.request_count() == 2);
}

TEST_CASE("a cancelled job stops waiting and reports cancelled", "[openai]") {
  openai_test_server server;
  server.push(openai_behaviour::delayed(60s));
  auto o = options_for(server);
  o.timeout = 120s;
  auto p = make(o);
  std::atomic<bool> cancelled{false};
  std::thread canceller{[&] {
    // Bounded: at most 30 s for the request to arrive.
    for (int i = 0; i < 3000 && server.request_count() == 0; ++i)
      std::this_thread::sleep_for(10ms);
    cancelled = true;
  }};
  auto out = p->run(chat("x"), {}, cancelled);
  canceller.join();
  REQUIRE(std::holds_alternative<failure>(out));
  CHECK(std::get<failure>(out).code == "cancelled");
  CHECK(server.request_count() == 1);
}

// -- configuration ---------------------------------------------------------------------

TEST_CASE("bad provider options are rejected naming the option", "[openai]") {
  auto rejects = [](openai_options o, const std::string& part) {
    auto p = openai_provider::make(std::move(o));
    REQUIRE_FALSE(p.has_value());
    CHECK(p.code() == errc::invalid_argument);
    INFO(p.error_value().message());
    CHECK(p.error_value().message().find(part) != std::string::npos);
  };
  openai_options o;
  o.base_url = "not a url";
  rejects(o, "base_url");
  o.base_url = "ftp://example.com/v1";
  rejects(o, "http:// or https://");
  o.base_url = "http:///v1";
  rejects(o, "no host");
  o.base_url = "https://api.example.com/v1?x=1";
  rejects(o, "query");
  o.base_url = "http://127.0.0.1:1/v1";
  o.timeout = 0ms;
  rejects(o, "timeout");
  o.timeout = 1s;
  o.api_key = "sk\nInjected: header";
  rejects(o, "api_key");
  o.api_key = "k";
  o.base_url = "https://127.0.0.1:1/v1";
  o.ca_file = "/nonexistent/ca.pem";
  rejects(o, "ca_file");
}

TEST_CASE("from_env reads OPENAI_BASE_URL and OPENAI_API_KEY", "[openai]") {
  ::setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1", 1);
  ::setenv("OPENAI_API_KEY", "sk-from-env", 1);
  auto o = openai_options::from_env();
  CHECK(o.base_url == "http://127.0.0.1:9/v1");
  CHECK(o.api_key == "sk-from-env");
  ::unsetenv("OPENAI_BASE_URL");
  ::unsetenv("OPENAI_API_KEY");
  auto d = openai_options::from_env();
  CHECK(d.base_url == "https://api.openai.com/v1");
  CHECK(d.api_key.empty());
}

TEST_CASE("the test server's special models misbehave without scripting", "[openai]") {
  openai_test_server server;
  auto o = options_for(server);
  o.max_retries = 0;
  auto p = make(o);
  auto r = chat("x");
  r.model = "test-error-500";
  CHECK(failed(run(*p, r)).code == "provider_error");
  r.model = "test-error-400";
  CHECK(failed(run(*p, r)).code == "bad_request");
  r.model = "test-rate-limited";
  CHECK(failed(run(*p, r)).code == "rate_limited");
}
