// The compute provider layer's pure parts: compute/new requests, the local
// provider, the price table and its arithmetic.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <thread>

#include "ticktock/runtime/compute.hpp"

using namespace ticktock;
using namespace ticktock::compute;

namespace {

request chat_of(std::string text, std::uint32_t max_tokens = 256, bool stream = false) {
  request r;
  r.model = "local-echo";
  r.messages = {{"system", "be brief"}, {"user", std::move(text)}};
  r.max_tokens = max_tokens;
  r.stream = stream;
  return r;
}

// Checks that parsing fails with invalid_argument and a message containing `part`.
void rejects(const std::string& json, const std::string& part) {
  auto r = parse_request(json);
  INFO(json);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.code() == errc::invalid_argument);
  INFO(r.error_value().message());
  CHECK(r.error_value().message().find(part) != std::string::npos);
}

void table_rejects(const std::string& json, const std::string& part) {
  auto t = price_table::parse(json);
  INFO(json);
  REQUIRE_FALSE(t.has_value());
  CHECK(t.code() == errc::invalid_argument);
  INFO(t.error_value().message());
  CHECK(t.error_value().message().find(part) != std::string::npos);
}

}  // namespace

// -- requests ----------------------------------------------------------------

TEST_CASE("a chat request parses with its defaults", "[compute]") {
  auto r = parse_request(R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]})");
  REQUIRE(r.has_value());
  CHECK(r->kind == request_kind::chat);
  CHECK(r->provider == "local");
  CHECK(r->model == "gpt-4o-mini");
  REQUIRE(r->messages.size() == 1);
  CHECK(r->messages[0].role == "user");
  CHECK(r->messages[0].content == "hi");
  CHECK(r->max_tokens == 256);
  CHECK(r->temperature == 0);
  CHECK_FALSE(r->stream);
}

TEST_CASE("a chat request with every field round-trips through to_json", "[compute]") {
  auto text = R"({"kind":"chat","provider":"openai","model":"m","messages":[{"role":"system","content":"s"},)"
              R"({"role":"user","content":"u \"q\""},{"role":"assistant","content":"a"},{"role":"tool","content":"t"}],)"
              R"("max_tokens":32768,"temperature":1.5,"stream":true})";
  auto r = parse_request(text);
  REQUIRE(r.has_value());
  CHECK(r->provider == "openai");
  CHECK(r->messages.size() == 4);
  CHECK(r->messages[1].content == "u \"q\"");
  CHECK(r->max_tokens == 32768);
  CHECK(r->temperature == 1.5);
  CHECK(r->stream);
  auto again = parse_request(to_json(*r));
  REQUIRE(again.has_value());
  CHECK(to_json(*again) == to_json(*r));
  CHECK(again->messages[3].role == "tool");
}

TEST_CASE("an embeddings request takes a string or an array of strings", "[compute]") {
  auto one = parse_request(R"({"kind":"embeddings","model":"e","input":"hello"})");
  REQUIRE(one.has_value());
  CHECK(one->kind == request_kind::embeddings);
  CHECK(one->input == std::vector<std::string>{"hello"});
  auto many = parse_request(R"({"kind":"embeddings","model":"e","input":["a","b"]})");
  REQUIRE(many.has_value());
  CHECK(many->input.size() == 2);
  auto again = parse_request(to_json(*many));
  REQUIRE(again.has_value());
  CHECK(again->input == many->input);
}

TEST_CASE("malformed compute requests are rejected naming the field", "[compute]") {
  rejects("", "not valid JSON");
  rejects("[1]", "must be a JSON object");
  rejects(R"({"messages":[{"role":"user","content":"x"}]})", "model: missing");
  rejects(R"({"model":"","messages":[{"role":"user","content":"x"}]})", "model: must be 1 to 256");
  rejects(R"({"model":7,"messages":[{"role":"user","content":"x"}]})", "model: must be a string");
  rejects(R"({"model":"m"})", "messages: missing");
  rejects(R"({"model":"m","messages":[]})", "messages: must not be empty");
  rejects(R"({"model":"m","messages":{}})", "messages: must be an array");
  rejects(R"({"model":"m","messages":["hi"]})", "messages[0]: must be an object");
  rejects(R"({"model":"m","messages":[{"role":"king","content":"x"}]})", "messages[0].role: must be system, user");
  rejects(R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content: missing");
  rejects(R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role: missing");
  rejects(R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content: must be a string");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x","name":"n"}]})",
          "messages[0]: unknown field \"name\"");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1})", "unknown field \"top_p\"");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens: must be between 1");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":32769})", "max_tokens: must be between 1");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1})", "max_tokens: must be between 1");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615})",
          "max_tokens: must be between 1");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10.5})", "max_tokens: must be an integer");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"})", "max_tokens: must be an integer");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3})", "temperature: must be between 0 and 2");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "temperature: must be a number");
  rejects(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":1})", "stream: must be a boolean");
  rejects(R"({"kind":"poem","model":"m"})", "kind: must be \"chat\" or \"embeddings\"");
  rejects(R"({"kind":"embeddings","model":"m"})", "input: missing");
  rejects(R"({"kind":"embeddings","model":"m","input":[]})", "input: must not be empty");
  rejects(R"({"kind":"embeddings","model":"m","input":[1]})", "input[0]: must be a string");
  rejects(R"({"kind":"embeddings","model":"m","input":"x","messages":[]})", "messages: not allowed in embeddings");
  rejects(R"({"kind":"embeddings","model":"m","input":"x","stream":true})", "stream: only allowed in chat");
  rejects(R"({"model":"m","input":"x","messages":[{"role":"user","content":"x"}]})", "input: only allowed in embeddings");
  rejects(R"({"provider":"Open AI","model":"m","messages":[{"role":"user","content":"x"}]})", "provider: must be 1 to 64");
  // Boost.JSON would keep the second model: another reader the first.
  rejects(R"({"model":"a","model":"b","messages":[{"role":"user","content":"x"}]})", "names 'model' twice");
}

TEST_CASE("a compute request with too many messages or too much text is rejected", "[compute]") {
  std::string many = R"({"model":"m","messages":[)";
  for (int i = 0; i < 257; ++i)
    many += std::string{i ? "," : ""} + R"({"role":"user","content":"x"})";
  many += "]}";
  rejects(many, "257 messages, more than the limit of 256");

  std::string big(600 * 1024, 'x');
  auto two = R"({"model":"m","messages":[{"role":"user","content":")" + big + R"("},{"role":"user","content":")"
             + big + R"("}]})";
  rejects(two, "bytes of text, more than the limit");
  auto one = R"({"model":"m","messages":[{"role":"user","content":")" + big + R"("}]})";
  CHECK(parse_request(one).has_value());

  auto huge = parse_request(std::string(max_request_bytes + 1, ' '));
  REQUIRE_FALSE(huge.has_value());
  CHECK(huge.code() == errc::message_too_large);
}

TEST_CASE("token estimates are a quarter of the bytes plus per-message overhead", "[compute]") {
  CHECK(estimate_tokens("") == 0);
  CHECK(estimate_tokens("a") == 1);
  CHECK(estimate_tokens("abcd") == 1);
  CHECK(estimate_tokens("abcde") == 2);
  auto r = chat_of("12345678");  // "be brief" is 8 bytes too
  CHECK(estimate_prompt_tokens(r) == (2 + 4) + (2 + 4) + 3);
  request e;
  e.kind = request_kind::embeddings;
  e.input = {"abcd", "abcdefgh"};
  CHECK(estimate_prompt_tokens(e) == 3);
}

// -- results -----------------------------------------------------------------

TEST_CASE("results and failures serialize to JSON", "[compute]") {
  result r;
  r.content = "hi";
  r.model = "m";
  r.finish_reason = "stop";
  r.used = {3, 4};
  CHECK(to_json(r) == R"({"model":"m","content":"hi","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":4}})");
  r.embeddings = {{0.5, -0.5}};
  CHECK(to_json(r).find(R"("embeddings":[[0.5,-0.5]])") != std::string::npos);

  auto f = make_failure(failure_code::rate_limited, "slow down", 429);
  CHECK(f.retryable);
  CHECK(to_json(f) == R"({"code":"rate_limited","message":"slow down","http_status":429,"retryable":true})");
  CHECK_FALSE(make_failure(failure_code::bad_request, "no").retryable);
  CHECK_FALSE(make_failure(failure_code::malformed_response, "no").retryable);
  CHECK(make_failure(failure_code::timeout, "t").retryable);
  CHECK(make_failure(failure_code::provider_error, "t").retryable);
  CHECK(make_failure(failure_code::network_error, "t").retryable);
}

// -- the local provider ------------------------------------------------------

TEST_CASE("the local provider echoes the last user message, the same every time", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  auto r = chat_of("what time is it?");
  r.messages.push_back({"assistant", "noon"});
  r.messages.push_back({"user", "thanks"});
  auto a = p.run(r, {}, cancelled);
  auto b = p.run(r, {}, cancelled);
  REQUIRE(std::holds_alternative<result>(a));
  auto& ra = std::get<result>(a);
  auto& rb = std::get<result>(b);
  CHECK(ra.content == "You said: thanks");
  CHECK(ra.finish_reason == "stop");
  CHECK(ra.model == "local-echo");
  CHECK(ra.used.prompt_tokens == estimate_prompt_tokens(r));
  CHECK(ra.used.completion_tokens == estimate_tokens("You said: thanks"));
  CHECK(to_json(ra) == to_json(rb));
  CHECK(p.name() == "local");

  request none;
  none.model = "m";
  none.messages = {{"system", "only a system prompt"}};
  auto n = p.run(none, {}, cancelled);
  CHECK(std::get<result>(n).content == "You said nothing.");
}

TEST_CASE("the local provider streams word by word and the pieces make the content", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  std::vector<std::string> pieces;
  auto out = p.run(chat_of("one two  three", 256, true), [&](std::string_view d) { pieces.emplace_back(d); },
                   cancelled);
  REQUIRE(std::holds_alternative<result>(out));
  CHECK(pieces == std::vector<std::string>{"You", " said:", " one", " two", "  three"});
  std::string joined;
  for (auto& s : pieces)
    joined += s;
  CHECK(joined == std::get<result>(out).content);

  // Without stream, on_delta is never called.
  pieces.clear();
  p.run(chat_of("one two"), [&](std::string_view d) { pieces.emplace_back(d); }, cancelled);
  CHECK(pieces.empty());
}

TEST_CASE("the local provider cuts the answer at max_tokens without splitting a character", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  // "You said: " is 10 bytes; max_tokens 3 allows 12 bytes; "é" is 2 bytes at 11..12.
  auto out = p.run(chat_of("\xC3\xA9\xC3\xA9\xC3\xA9", 3), {}, cancelled);
  auto& r = std::get<result>(out);
  CHECK(r.content == "You said: \xC3\xA9");
  CHECK(r.finish_reason == "length");
  CHECK(r.used.completion_tokens <= 3);
  auto odd = p.run(chat_of("a\xC3\xA9", 3), {}, cancelled);  // 'a' ends at 11, 'é' would end at 13
  CHECK(std::get<result>(odd).content == "You said: a");
}

TEST_CASE("local embeddings are deterministic unit vectors that differ per input", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  request r;
  r.kind = request_kind::embeddings;
  r.model = "local-embed";
  r.input = {"cat", "dog", "cat"};
  auto out = p.run(r, {}, cancelled);
  REQUIRE(std::holds_alternative<result>(out));
  auto& e = std::get<result>(out).embeddings;
  REQUIRE(e.size() == 3);
  for (auto& v : e) {
    REQUIRE(v.size() == local_provider::embedding_dimensions);
    double norm = 0;
    for (double x : v)
      norm += x * x;
    CHECK(std::abs(norm - 1.0) < 1e-9);
  }
  CHECK(e[0] == e[2]);
  CHECK(e[0] != e[1]);
  CHECK(std::get<result>(out).used.prompt_tokens == 3);
  auto again = p.run(r, {}, cancelled);
  CHECK(std::get<result>(again).embeddings == e);
}

TEST_CASE("the local provider's special models fail the documented way", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  auto r = chat_of("x");
  r.model = "local-error";
  auto err = p.run(r, {}, cancelled);
  REQUIRE(std::holds_alternative<failure>(err));
  CHECK(std::get<failure>(err).code == "provider_error");
  CHECK(std::get<failure>(err).http_status == 500);
  r.model = "local-rate-limited";
  auto rl = p.run(r, {}, cancelled);
  CHECK(std::get<failure>(rl).code == "rate_limited");

  cancelled = true;
  r.model = "local-echo";
  CHECK(std::get<failure>(p.run(r, {}, cancelled)).code == "cancelled");
}

TEST_CASE("the local-wait model returns cancelled once the flag is set", "[compute]") {
  local_provider p;
  std::atomic<bool> cancelled{false};
  auto r = chat_of("x");
  r.model = "local-wait";
  std::thread canceller{[&] { cancelled = true; }};
  auto out = p.run(r, {}, cancelled);
  canceller.join();
  REQUIRE(std::holds_alternative<failure>(out));
  CHECK(std::get<failure>(out).code == "cancelled");
}

// -- prices ------------------------------------------------------------------

TEST_CASE("a price table parses, round-trips and finds prices", "[compute]") {
  auto t = price_table::parse(
    R"({"models":{"gpt-4o-mini":{"input_per_mtok":150000,"output_per_mtok":600000}},)"
    R"("default":{"input_per_mtok":1,"output_per_mtok":2}})");
  REQUIRE(t.has_value());
  CHECK(t->find("gpt-4o-mini")->input_per_mtok == 150000);
  CHECK(t->find("other")->output_per_mtok == 2);
  auto again = price_table::parse(t->to_json());
  REQUIRE(again.has_value());
  CHECK(again->to_json() == t->to_json());

  auto bare = price_table::parse(R"({"models":{}})");
  REQUIRE(bare.has_value());
  CHECK_FALSE(bare->find("x").has_value());
}

TEST_CASE("malformed price tables are rejected naming the place", "[compute]") {
  table_rejects("nope", "not valid JSON");
  table_rejects("[]", "must be a JSON object");
  table_rejects("{}", "models: missing");
  table_rejects(R"({"models":[]})", "models: must be an object");
  table_rejects(R"({"models":{},"extra":1})", "unknown field \"extra\"");
  table_rejects(R"({"models":{"m":5}})", "models[\"m\"]: must be an object");
  table_rejects(R"({"models":{"m":{"input_per_mtok":1}}})", "models[\"m\"].output_per_mtok: missing");
  table_rejects(R"({"models":{"m":{"input_per_mtok":1,"output_per_mtok":2,"cached":3}}})", "unknown field \"cached\"");
  table_rejects(R"({"models":{"m":{"input_per_mtok":-1,"output_per_mtok":2}}})", "input_per_mtok: must not be negative");
  table_rejects(R"({"models":{"m":{"input_per_mtok":1.5,"output_per_mtok":2}}})", "input_per_mtok: must be an integer");
  table_rejects(R"({"models":{"m":{"input_per_mtok":"1","output_per_mtok":2}}})", "input_per_mtok: must be an integer");
  table_rejects(R"({"models":{"m":{"input_per_mtok":1,"output_per_mtok":18446744073709551616}}})",
                "output_per_mtok: too large");
  table_rejects(R"({"models":{"":{"input_per_mtok":1,"output_per_mtok":2}}})", "model name must be 1 to 256");
  table_rejects(R"({"models":{},"default":{"input_per_mtok":1}})", "default.output_per_mtok: missing");
  // The largest 64-bit price is allowed.
  CHECK(price_table::parse(R"({"models":{"m":{"input_per_mtok":18446744073709551615,"output_per_mtok":0}}})")
          .has_value());
}

TEST_CASE("cost is micro-USD per million tokens, rounded up", "[compute]") {
  auto t = *price_table::parse(
    R"({"models":{"gpt-4o-mini":{"input_per_mtok":150000,"output_per_mtok":600000},)"
    R"("free":{"input_per_mtok":0,"output_per_mtok":0}}})");
  // 1000 * 0.15 + 500 * 0.6 = 150 + 300 micro-USD.
  CHECK(*t.cost("gpt-4o-mini", {1000, 500}) == 450);
  // 1 * 0.15 + 1 * 0.6 = 0.75 -> 1.
  CHECK(*t.cost("gpt-4o-mini", {1, 1}) == 1);
  // 3 * 0.15 + 0 = 0.45 -> 1; rounding happens once, on the sum.
  CHECK(*t.cost("gpt-4o-mini", {3, 0}) == 1);
  // 2 * 0.15 + 1 * 0.6 = 0.9 -> 1, where rounding each part up would give 2.
  CHECK(*t.cost("gpt-4o-mini", {2, 1}) == 1);
  CHECK(*t.cost("gpt-4o-mini", {0, 0}) == 0);
  CHECK(*t.cost("free", {1000000, 1000000}) == 0);

  auto unknown = t.cost("gpt-5", {1, 1});
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error_value().message().rfind("unknown_model:", 0) == 0);
}

TEST_CASE("cost arithmetic does not overflow silently", "[compute]") {
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  auto t = *price_table::parse(R"({"models":{"m":{"input_per_mtok":18446744073709551615,)"
                               R"("output_per_mtok":18446744073709551615}}})");
  // max * 1000000 / 10^6 = max exactly.
  CHECK(*t.cost("m", {1'000'000, 0}) == max);
  auto over = t.cost("m", {1'000'001, 0});
  REQUIRE_FALSE(over.has_value());
  CHECK(over.error_value().message().find("overflows") != std::string::npos);
  CHECK_FALSE(t.cost("m", {max, max}).has_value());
  // Each part alone fits but their sum does not.
  CHECK_FALSE(t.cost("m", {600'000, 600'000}).has_value());
  // Large counts at small prices are exact: 2^64-1 tokens at 1 micro-USD per Mtok.
  auto cheap = *price_table::parse(R"({"models":{"c":{"input_per_mtok":1,"output_per_mtok":1}}})");
  CHECK(*cheap.cost("c", {max, 0}) == max / 1'000'000 + 1);
  CHECK(*cheap.cost("c", {max, max}) == (max / 1'000'000) * 2 + 2);  // 2 * 551615 rest -> 2
}

TEST_CASE("max_cost reserves the prompt estimate plus max_tokens of output", "[compute]") {
  auto t = *price_table::parse(R"({"models":{},"default":{"input_per_mtok":1000000,"output_per_mtok":2000000}})");
  auto r = chat_of("12345678", 100);
  // (2+4)+(2+4)+3 = 15 tokens in at 1 USD/Mtok, 100 out at 2 USD/Mtok.
  CHECK(*t.max_cost(r) == 15 + 200);
  request e;
  e.kind = request_kind::embeddings;
  e.model = "emb";
  e.input = {"abcdefgh"};
  CHECK(*t.max_cost(e) == 2);

  // The local provider's real cost never exceeds the reservation.
  local_provider p;
  std::atomic<bool> cancelled{false};
  for (std::uint32_t max_tokens : {1u, 2u, 5u, 256u}) {
    auto req = chat_of(std::string(40, 'z'), max_tokens);
    auto out = p.run(req, {}, cancelled);
    CHECK(*t.cost(req.model, std::get<result>(out).used) <= *t.max_cost(req));
  }

  price_table empty;
  CHECK_FALSE(empty.max_cost(r).has_value());
}

TEST_CASE("the default price table prices known models and has a default", "[compute]") {
  auto t = price_table::defaults();
  CHECK(t.find("gpt-4o-mini")->input_per_mtok == 150000);
  CHECK(t.find("gpt-4o-mini")->output_per_mtok == 600000);
  CHECK(t.find("local-echo").has_value());
  auto again = price_table::parse(t.to_json());
  REQUIRE(again.has_value());
  CHECK(again->to_json() == t.to_json());
}
