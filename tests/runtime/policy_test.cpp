#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "ticktock/runtime/policy.hpp"

using namespace ticktock;
using namespace ticktock::policy;

namespace {

rules must_parse(std::string_view text) {
  auto r = rules::parse(text);
  INFO(text);
  if (!r)
    FAIL(r.error_value().to_string());
  return std::move(r).value();
}

action act(std::string kind, std::string agent = "alice", std::string destination = "",
           std::uint64_t cost = 0) {
  return action{std::move(kind), std::move(agent), std::move(destination), cost};
}

// The example of the task and of docs/policy.md.
constexpr std::string_view example =
  R"({"rules":[)"
  R"({"when":{"action":"compute","cost_over":50000},"decision":"require_approval","reason":"expensive_compute"},)"
  R"({"when":{"action":"http","destination":["*.example.com","api.github.com"]},"decision":"allow","reason":"allowlisted_host"},)"
  R"({"when":{"action":"http"},"decision":"deny","reason":"host_not_allowlisted"}],)"
  R"("default":"allow"})";

}  // namespace

TEST_CASE("decisions print and parse by their names") {
  for (auto d : {decision::allow, decision::deny, decision::require_approval})
    CHECK(parse_decision(to_string(d)) == d);
  CHECK(to_string(decision::require_approval) == "require_approval");
  CHECK_FALSE(parse_decision("Allow"));
  CHECK_FALSE(parse_decision("approve"));
  CHECK_FALSE(parse_decision(""));
}

TEST_CASE("action kinds and reason codes are checked by their own predicates") {
  CHECK(action_kinds().size() == 5);
  for (auto k : {"compute", "container", "http", "nostr_publish", "payment"})
    CHECK(is_action_kind(k));
  CHECK_FALSE(is_action_kind("nostr"));
  CHECK_FALSE(is_action_kind("HTTP"));
  CHECK(is_reason_code("budget_exceeded"));
  CHECK(is_reason_code(std::string(64, 'a')));
  CHECK_FALSE(is_reason_code(std::string(65, 'a')));
  CHECK_FALSE(is_reason_code(""));
  CHECK_FALSE(is_reason_code("Bad"));
  CHECK_FALSE(is_reason_code("has-dash"));
}

TEST_CASE("globs match stars and question marks") {
  CHECK(glob_match("*", "", false));
  CHECK(glob_match("*", "anything.at/all", false));
  CHECK(glob_match("a?c", "abc", false));
  CHECK_FALSE(glob_match("a?c", "ac", false));
  CHECK_FALSE(glob_match("a?c", "abbc", false));
  CHECK(glob_match("*.example.com", "api.example.com", false));
  CHECK(glob_match("*.example.com", "a.b.example.com", false));
  CHECK_FALSE(glob_match("*.example.com", "example.com", false));
  CHECK_FALSE(glob_match("*.example.com", "evil-example.com", false));
  CHECK_FALSE(glob_match("*.example.com", "api.example.com.evil.net", false));
  CHECK(glob_match("a*b*c", "axxbyybzc", false));
  CHECK_FALSE(glob_match("a*b*c", "axxbyyz", false));
  CHECK(glob_match("**x", "x", false));
  CHECK(glob_match("worker-*", "worker-", false));
  CHECK_FALSE(glob_match("exact", "exactly", false));
  CHECK_FALSE(glob_match("exactly", "exact", false));
  CHECK(glob_match("API.Example.COM", "api.example.com", true));
  CHECK_FALSE(glob_match("API.Example.COM", "api.example.com", false));
}

TEST_CASE("a pathological glob still answers") {
  // Backtracking to the last star only: this would be exponential for a
  // naive recursive matcher.
  std::string glob;
  for (int i = 0; i < 60; ++i)
    glob += "*a";
  glob += "b";
  CHECK_FALSE(glob_match(glob, std::string(4000, 'a'), false));
  CHECK(glob_match(glob, std::string(4000, 'a') + "b", false));
}

TEST_CASE("the first matching rule wins") {
  auto p = must_parse(example);
  auto v = p.evaluate(act("http", "alice", "api.example.com"));
  CHECK(v == verdict{decision::allow, "allowlisted_host", 1});
  v = p.evaluate(act("http", "alice", "evil.com"));
  CHECK(v == verdict{decision::deny, "host_not_allowlisted", 2});
  v = p.evaluate(act("compute", "alice", "openai/gpt-4o", 50001));
  CHECK(v == verdict{decision::require_approval, "expensive_compute", 0});

  // The same two rules in the other order: the catch-all now shadows the
  // allowlist.
  auto q = must_parse(
    R"({"rules":[{"when":{"action":"http"},"decision":"deny"},)"
    R"({"when":{"action":"http","destination":"api.github.com"},"decision":"allow"}]})");
  CHECK(q.evaluate(act("http", "alice", "api.github.com")).rule == 0);
  CHECK(q.evaluate(act("http", "alice", "api.github.com")).what == decision::deny);
}

TEST_CASE("the default decides when no rule matches") {
  auto p = must_parse(example);
  auto v = p.evaluate(act("compute", "alice", "openai/gpt-4o", 50000));
  CHECK(v == verdict{decision::allow, "policy_default_allow", -1});
  CHECK(p.evaluate(act("container", "bob", "/bin/sh")).rule == -1);

  auto deny = must_parse(R"({"rules":[],"default":"deny"})");
  CHECK(deny.evaluate(act("payment")) == verdict{decision::deny, "policy_default_deny", -1});

  auto ask = must_parse(R"({"default":{"decision":"require_approval","reason":"review_all"}})");
  CHECK(ask.evaluate(act("http", "a", "x.org")) ==
        verdict{decision::require_approval, "review_all", -1});
  CHECK(ask.default_decision() == decision::require_approval);
  CHECK(ask.default_reason() == "review_all");
}

TEST_CASE("an empty policy and allow_all allow everything") {
  auto empty = must_parse("{}");
  CHECK(empty == rules::allow_all());
  for (auto k : action_kinds()) {
    auto v = rules::allow_all().evaluate(act(std::string{k}, "a", "d", 1'000'000'000));
    CHECK(v == verdict{decision::allow, "policy_default_allow", -1});
  }
}

TEST_CASE("an action of an unknown kind is denied whatever the rules say") {
  auto v = rules::allow_all().evaluate(act("nostr", "alice", "wss://relay.example"));
  CHECK(v == verdict{decision::deny, "policy_unknown_action", -1});
  auto p = must_parse(R"({"rules":[{"decision":"allow"}]})");
  CHECK(p.evaluate(act("")).what == decision::deny);
  CHECK(p.evaluate(act("http")).what == decision::allow);
}

TEST_CASE("the action condition takes a kind or a list of kinds") {
  auto p = must_parse(R"({"rules":[{"when":{"action":["container","payment"]},"decision":"deny"},)"
                      R"({"when":{"action":"compute"},"decision":"require_approval"}]})");
  CHECK(p.evaluate(act("container")).rule == 0);
  CHECK(p.evaluate(act("payment")).rule == 0);
  CHECK(p.evaluate(act("compute")).rule == 1);
  CHECK(p.evaluate(act("http")).rule == -1);
  CHECK(p.evaluate(act("nostr_publish")).rule == -1);
}

TEST_CASE("the agent condition takes globs, case-sensitively") {
  auto p = must_parse(R"({"rules":[{"when":{"agent":["worker-*","scout?"]},"decision":"deny"}]})");
  CHECK(p.evaluate(act("http", "worker-1")).what == decision::deny);
  CHECK(p.evaluate(act("http", "scout7")).what == decision::deny);
  CHECK(p.evaluate(act("http", "scout")).what == decision::allow);
  CHECK(p.evaluate(act("http", "scout77")).what == decision::allow);
  CHECK(p.evaluate(act("http", "Worker-1")).what == decision::allow);
  CHECK(p.evaluate(act("http", "alice")).what == decision::allow);
}

TEST_CASE("http and relay destinations match case-insensitively, others as written") {
  auto p = must_parse(R"({"rules":[)"
                      R"({"when":{"destination":"api.github.com"},"decision":"allow"},)"
                      R"({"when":{"destination":"wss://relay.damus.io"},"decision":"allow"},)"
                      R"({"when":{"destination":"openai/gpt-4o"},"decision":"allow"}],)"
                      R"("default":"deny"})");
  CHECK(p.evaluate(act("http", "a", "API.GitHub.com")).what == decision::allow);
  CHECK(p.evaluate(act("nostr_publish", "a", "WSS://Relay.Damus.IO")).what == decision::allow);
  CHECK(p.evaluate(act("compute", "a", "openai/gpt-4o")).what == decision::allow);
  CHECK(p.evaluate(act("compute", "a", "OpenAI/GPT-4o")).what == decision::deny);
  CHECK(p.evaluate(act("container", "a", "API.GITHUB.COM")).what == decision::deny);
}

TEST_CASE("a relay without a path matches a rule written with or without its slash") {
  // Bug risk: rules written for the pool's form ("wss://r/") stopped
  // matching once relays were judged as "wss://r", and a deny failed open.
  auto p = must_parse(R"({"rules":[)"
                      R"({"when":{"action":"nostr_publish","destination":"wss://evil.example/"},)"
                      R"("decision":"deny","reason":"evil"},)"
                      R"({"when":{"action":"nostr_publish","destination":"wss://good.example"},)"
                      R"("decision":"allow","reason":"good"}],"default":"require_approval"})");
  CHECK(p.evaluate(act("nostr_publish", "a", "wss://evil.example")).reason == "evil");
  CHECK(p.evaluate(act("nostr_publish", "a", "wss://good.example")).reason == "good");
  // A path is the relay's own: no slash is added to it.
  CHECK(p.evaluate(act("nostr_publish", "a", "wss://evil.example/x")).what
        == decision::require_approval);
  // Nor to other kinds of destination.
  auto h = must_parse(R"({"rules":[{"when":{"destination":"x/"},"decision":"deny"}]})");
  CHECK(h.evaluate(act("compute", "a", "x")).what == decision::allow);
}

TEST_CASE("a host with a trailing dot is the same host") {
  auto p = must_parse(R"({"rules":[{"when":{"action":"http","destination":"evil.com"},)"
                      R"("decision":"deny","reason":"blocked_host"}]})");
  CHECK(p.evaluate(act("http", "a", "evil.com.")).reason == "blocked_host");
  CHECK(p.evaluate(act("http", "a", "EVIL.COM.")).reason == "blocked_host");
  CHECK(p.evaluate(act("http", "a", "evil.com..")).what == decision::allow);
  CHECK(p.evaluate(act("http", "a", "notevil.com")).what == decision::allow);
}

TEST_CASE("cost bounds are exclusive below and inclusive above") {
  auto p = must_parse(R"({"rules":[{"when":{"cost_over":100,"cost_at_most":200},)"
                      R"("decision":"require_approval"}]})");
  CHECK(p.evaluate(act("compute", "a", "", 100)).rule == -1);
  CHECK(p.evaluate(act("compute", "a", "", 101)).rule == 0);
  CHECK(p.evaluate(act("compute", "a", "", 200)).rule == 0);
  CHECK(p.evaluate(act("compute", "a", "", 201)).rule == -1);

  auto zero = must_parse(R"({"rules":[{"when":{"cost_at_most":0},"decision":"allow"}],)"
                         R"("default":"deny"})");
  CHECK(zero.evaluate(act("payment", "a", "", 0)).what == decision::allow);
  CHECK(zero.evaluate(act("payment", "a", "", 1)).what == decision::deny);

  auto huge = must_parse(R"({"rules":[{"when":{"cost_over":18446744073709551614},)"
                         R"("decision":"deny"}]})");
  CHECK(huge.evaluate(act("payment", "a", "", UINT64_MAX)).what == decision::deny);
  CHECK(huge.evaluate(act("payment", "a", "", UINT64_MAX - 1)).what == decision::allow);
}

TEST_CASE("every condition of a rule must hold") {
  auto p = must_parse(
    R"({"rules":[{"when":{"action":"compute","agent":"bob","destination":"openai/*","cost_over":10},)"
    R"("decision":"deny","reason":"bob_openai"}]})");
  CHECK(p.evaluate(act("compute", "bob", "openai/gpt-4o", 11)).reason == "bob_openai");
  CHECK(p.evaluate(act("http", "bob", "openai/gpt-4o", 11)).rule == -1);
  CHECK(p.evaluate(act("compute", "alice", "openai/gpt-4o", 11)).rule == -1);
  CHECK(p.evaluate(act("compute", "bob", "local/echo", 11)).rule == -1);
  CHECK(p.evaluate(act("compute", "bob", "openai/gpt-4o", 10)).rule == -1);
}

TEST_CASE("a rule without conditions matches every action") {
  auto p = must_parse(R"({"rules":[{"when":{},"decision":"deny","reason":"frozen"},)"
                      R"({"decision":"allow"}]})");
  for (auto k : action_kinds())
    CHECK(p.evaluate(act(std::string{k})) == verdict{decision::deny, "frozen", 0});
}

TEST_CASE("reason codes default to policy_ and the decision") {
  auto p = must_parse(R"({"rules":[{"when":{"action":"http"},"decision":"deny"},)"
                      R"({"when":{"action":"compute"},"decision":"require_approval"},)"
                      R"({"when":{"action":"payment"},"decision":"allow"},)"
                      R"({"when":{"action":"container"},"decision":"deny","reason":"no_shell_9"}]})");
  CHECK(p.evaluate(act("http")).reason == "policy_deny");
  CHECK(p.evaluate(act("compute")).reason == "policy_require_approval");
  CHECK(p.evaluate(act("payment")).reason == "policy_allow");
  CHECK(p.evaluate(act("container")).reason == "no_shell_9");
  CHECK(p.evaluate(act("nostr_publish")).reason == "policy_default_allow");
}

TEST_CASE("evaluate_each returns the most restrictive verdict over destinations") {
  auto p = must_parse(R"({"rules":[)"
                      R"({"when":{"action":"nostr_publish","destination":"wss://relay.ours.org"},"decision":"allow"},)"
                      R"({"when":{"action":"nostr_publish","destination":"wss://paid.*"},"decision":"require_approval"},)"
                      R"({"when":{"action":"nostr_publish"},"decision":"deny","reason":"relay_not_allowed"}]})");
  action a = act("nostr_publish", "alice", "relays");
  std::vector<std::string> ok{"wss://relay.ours.org"};
  CHECK(p.evaluate_each(a, ok) == verdict{decision::allow, "policy_allow", 0});
  std::vector<std::string> paid{"wss://relay.ours.org", "wss://paid.relay.net"};
  CHECK(p.evaluate_each(a, paid).what == decision::require_approval);
  CHECK(p.evaluate_each(a, paid).rule == 1);
  std::vector<std::string> bad{"wss://paid.relay.net", "wss://other.net", "wss://relay.ours.org"};
  CHECK(p.evaluate_each(a, bad) == verdict{decision::deny, "relay_not_allowed", 2});
  // No destinations: the action as it is ("relays" matches no named relay).
  CHECK(p.evaluate_each(a, {}).what == decision::deny);
}

TEST_CASE("to_json prints a canonical policy that parses back to the same rules") {
  auto p = must_parse(example);
  CHECK(p.to_json() == example);
  CHECK(must_parse(p.to_json()) == p);

  auto commented = must_parse(
    R"({"default":{"decision":"deny","reason":"closed"},"rules":[)"
    R"({"comment":"bob \"only\"","reason":"r1","decision":"allow","when":{"cost_at_most":5,"agent":["bob"],"action":["http","compute"]}},)"
    R"({"decision":"deny"}]})");
  std::string canonical = commented.to_json();
  CHECK(canonical ==
        R"({"rules":[{"when":{"action":["http","compute"],"agent":"bob","cost_at_most":5},)"
        R"("decision":"allow","reason":"r1","comment":"bob \"only\""},)"
        R"({"when":{},"decision":"deny","reason":"policy_deny"}],)"
        R"("default":{"decision":"deny","reason":"closed"}})");
  auto again = must_parse(canonical);
  CHECK(again == commented);
  CHECK(again.to_json() == canonical);
  CHECK(rules::allow_all().to_json() == R"({"rules":[],"default":"allow"})");
}

TEST_CASE("policies at the size limits parse") {
  std::string big = R"({"rules":[)";
  for (std::size_t i = 0; i < max_rules; ++i)
    big += std::string{i == 0 ? "" : ","} + R"({"decision":"deny"})";
  big += "]}";
  REQUIRE(big.size() <= max_policy_bytes);
  auto p = must_parse(big);
  CHECK(p.list().size() == max_rules);

  std::string padded = R"({"rules":[{"decision":"allow","comment":")" +
                       std::string(max_comment_bytes, 'x') + R"("}]})";
  padded += std::string(max_policy_bytes - padded.size(), ' ');
  REQUIRE(padded.size() == max_policy_bytes);
  CHECK(rules::parse(padded));
}

TEST_CASE("malformed policies are rejected with a message naming the path") {
  struct bad_case {
    std::string json;
    std::string fragment;
  };
  std::string too_many = R"({"rules":[)";
  for (std::size_t i = 0; i <= max_rules; ++i)
    too_many += std::string{i == 0 ? "" : ","} + R"({"decision":"deny"})";
  too_many += "]}";
  REQUIRE(too_many.size() <= max_policy_bytes);  // refused for the count, not the size
  std::vector<bad_case> cases = {
    {"", "policy: not valid JSON"},
    {"{", "policy: not valid JSON"},
    {R"({"rules":[]} x)", "policy: not valid JSON"},
    {"[]", "policy: must be a JSON object, not a list"},
    {"null", "policy: must be a JSON object, not null"},
    {R"({"rule":[]})", "rule: unknown field"},
    {R"({"rules":{}})", "rules: must be a list, not an object"},
    {R"({"rules":[42]})", "rules[0]: must be an object, not a number"},
    {R"({"rules":[{"when":{"action":"http"}}]})", "rules[0].decision: missing"},
    {R"({"rules":[{"decision":"allow"},{"decision":"permit"}]})",
     "rules[1].decision: unknown decision \"permit\""},
    {R"({"rules":[{"decision":true}]})", "rules[0].decision: must be a string, not a boolean"},
    {R"({"rules":[{"decision":"deny","then":"x"}]})", "rules[0].then: unknown field"},
    {R"({"rules":[{"decision":"allow"},{"decision":"deny"},{"when":{"cost_ovr":5},"decision":"deny"}]})",
     "rules[2].when.cost_ovr: unknown field"},
    {R"({"rules":[{"when":"http","decision":"deny"}]})",
     "rules[0].when: must be an object, not a string"},
    {R"({"rules":[{"when":{"action":"ftp"},"decision":"deny"}]})",
     "rules[0].when.action: unknown action kind \"ftp\""},
    {R"({"rules":[{"when":{"action":["http","HTTP"]},"decision":"deny"}]})",
     "rules[0].when.action[1]: unknown action kind \"HTTP\""},
    {R"({"rules":[{"when":{"action":[]},"decision":"deny"}]})",
     "rules[0].when.action: must not be an empty list"},
    {R"({"rules":[{"when":{"action":7},"decision":"deny"}]})",
     "rules[0].when.action: must be a string or a list of strings, not a number"},
    {R"({"rules":[{"when":{"agent":""},"decision":"deny"}]})",
     "rules[0].when.agent: must not be an empty pattern"},
    {R"({"rules":[{"when":{"agent":["a",null]},"decision":"deny"}]})",
     "rules[0].when.agent[1]: must be a string, not null"},
    {R"({"rules":[{"when":{"destination":["x.org",""]},"decision":"deny"}]})",
     "rules[0].when.destination[1]: must not be an empty pattern"},
    {R"({"rules":[{"when":{"destination":")" + std::string(max_glob_bytes + 1, 'a') +
       R"("},"decision":"deny"}]})",
     "rules[0].when.destination: pattern of 257 bytes, more than the 256 allowed"},
    {R"({"rules":[{"when":{"destination":"a\u0000b"},"decision":"deny"}]})",
     "rules[0].when.destination: must not contain control characters"},
    {R"({"rules":[{"when":{"cost_over":-1},"decision":"deny"}]})",
     "rules[0].when.cost_over: must not be negative"},
    {R"({"rules":[{"when":{"cost_over":1.5},"decision":"deny"}]})",
     "rules[0].when.cost_over: must be a whole number of micro-USD, digits only, up to 18446744073709551615; got 1.5"},
    {R"({"rules":[{"when":{"cost_at_most":1e3},"decision":"deny"}]})",
     "rules[0].when.cost_at_most: must be a whole number of micro-USD, digits only, up to 18446744073709551615; got 1000"},
    {R"({"rules":[{"when":{"cost_at_most":"100"},"decision":"deny"}]})",
     "rules[0].when.cost_at_most: must be a whole number of micro-USD, not a string"},
    {R"({"rules":[{"when":{"cost_over":18446744073709551616},"decision":"deny"}]})",
     "rules[0].when.cost_over: must be a whole number of micro-USD"},
    {R"({"rules":[{"when":{"cost_over":10,"cost_at_most":10},"decision":"deny"}]})",
     "rules[0].when: cost_over (10) must be less than cost_at_most (10)"},
    {R"({"rules":[{"decision":"deny","reason":"Policy-Deny"}]})",
     "rules[0].reason: bad reason code \"Policy-Deny\""},
    {R"({"rules":[{"decision":"deny","reason":""}]})", "rules[0].reason: bad reason code \"\""},
    {R"({"rules":[{"decision":"deny","reason":")" + std::string(65, 'a') + R"("}]})",
     "rules[0].reason: bad reason code"},
    {R"({"rules":[{"decision":"deny","reason":5}]})",
     "rules[0].reason: must be a string, not a number"},
    {R"({"rules":[{"decision":"deny","comment":")" + std::string(max_comment_bytes + 1, 'c') +
       R"("}]})",
     "rules[0].comment: comment of 1025 bytes, more than the 1024 allowed"},
    {R"({"default":"maybe"})", "default: unknown decision \"maybe\""},
    {R"({"default":1})", "default: must be a decision or an object with decision and reason"},
    {R"({"default":{"reason":"x"}})", "default.decision: missing"},
    {R"({"default":{"decision":"deny","why":"x"}})", "default.why: unknown field"},
    {R"({"default":{"decision":"deny","reason":"No"}})", "default.reason: bad reason code"},
    {R"({"rules":[{"when":{"action":"http","action":"compute"},"decision":"deny"}]})",
     "rules[0].when.action: duplicate field"},
    {R"({"default":"deny","default":"allow"})", "default: duplicate field"},
    {R"({"rules":[{"decision":"deny","weird key\n":1}]})", R"(rules[0]["weird key\n"]: unknown field)"},
    {too_many, "rules: 1001 rules, more than the 1000 allowed"},
    {std::string(max_policy_bytes + 1, ' '), "policy: 65537 bytes, more than the 65536 allowed"},
    {std::string(100, '[') + std::string(100, ']'), "policy: not valid JSON"},
  };
  REQUIRE(cases.size() >= 25);
  for (const auto& c : cases) {
    INFO("policy: " << c.json.substr(0, 200));
    auto r = rules::parse(c.json);
    REQUIRE_FALSE(r);
    CHECK(r.code() == errc::invalid_argument);
    INFO("message: " << r.error_value().message());
    CHECK(r.error_value().message().find(c.fragment) != std::string::npos);
  }
}

TEST_CASE("parsing never crashes on truncated or mutated policies") {
  const std::string base = std::string{example};
  // Every prefix: none but the whole text is a policy.
  for (std::size_t n = 0; n < base.size(); ++n) {
    auto r = rules::parse(base.substr(0, n));
    CHECK_FALSE(r);
  }
  // Random byte flips, deterministic seed, bounded count: parse either
  // succeeds with a policy that prints and re-parses the same, or fails with
  // a path-prefixed invalid_argument.
  std::mt19937 rng{20261121};
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string s = base;
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f)
      s[rng() % s.size()] = static_cast<char>(rng() % 256);
    auto r = rules::parse(s);
    if (r) {
      ++accepted;
      auto again = rules::parse(r->to_json());
      REQUIRE(again);
      CHECK(*again == *r);
    } else {
      CHECK(r.code() == errc::invalid_argument);
      CHECK(r.error_value().message().find(": ") != std::string::npos);
    }
  }
  // Some flips land in reason codes or globs and still parse.
  CHECK(accepted > 0);
}

namespace {

// The ```json blocks of docs/policy.md, in order.
std::vector<std::string> doc_policies() {
  std::ifstream in{POLICY_MD};
  REQUIRE(in);
  std::vector<std::string> blocks;
  std::string line, block;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside && line == "```json") {
      inside = true;
      block.clear();
    } else if (inside && line == "```") {
      inside = false;
      blocks.push_back(block);
    } else if (inside) {
      block += line + "\n";
    }
  }
  return blocks;
}

}  // namespace

TEST_CASE("the policies of docs/policy.md parse and decide as documented") {
  auto blocks = doc_policies();
  REQUIRE(blocks.size() == 6);
  std::vector<rules> p;
  for (const auto& b : blocks)
    p.push_back(must_parse(b));

  // The introductory example is the one of these tests.
  CHECK(p[0] == must_parse(example));

  // 1. A spending cap that needs approval.
  CHECK(p[1].evaluate(act("compute", "a", "openai/gpt-4o", 80'000)) ==
        verdict{decision::allow, "policy_default_allow", -1});
  CHECK(p[1].evaluate(act("compute", "a", "openai/gpt-4o", 100'001)) ==
        verdict{decision::require_approval, "expensive_compute", 2});
  CHECK(p[1].evaluate(act("payment", "a", "bob", 10)) ==
        verdict{decision::require_approval, "payment_needs_approval", 1});
  CHECK(p[1].evaluate(act("container", "a", "/bin/sh", 6'000'000)) ==
        verdict{decision::deny, "over_hard_cap", 0});

  // 2. An HTTP host allowlist.
  CHECK(p[2].evaluate(act("http", "a", "API.GitHub.com")).what == decision::allow);
  CHECK(p[2].evaluate(act("http", "a", "docs.example.com")).what == decision::allow);
  CHECK(p[2].evaluate(act("http", "a", "example.com")).what == decision::allow);
  CHECK(p[2].evaluate(act("http", "a", "example.com.evil.net")).reason == "host_not_allowlisted");
  CHECK(p[2].evaluate(act("http", "a", "github.com")).reason == "host_not_allowlisted");
  CHECK(p[2].evaluate(act("compute", "a", "github.com")).what == decision::allow);

  // 3. No container sessions for one agent.
  CHECK(p[3].evaluate(act("container", "scraper", "/usr/bin/python3")).reason ==
        "containers_disabled");
  CHECK(p[3].evaluate(act("container", "sandbox-7", "/usr/bin/python3")).reason ==
        "containers_disabled");
  CHECK(p[3].evaluate(act("container", "alice", "/usr/bin/python3")).reason == "allowed_program");
  CHECK(p[3].evaluate(act("container", "alice", "/bin/sh")).reason == "program_not_allowed");
  CHECK(p[3].evaluate(act("http", "scraper", "x.org")).what == decision::allow);
  CHECK(p[3].list()[0].comment == "scraper leaked credentials once, 2026-10");

  // 4. Relay publishing only to named relays.
  action pub = act("nostr_publish", "alice", "relays");
  std::vector<std::string> named{"wss://relay.damus.io", "wss://nos.lol"};
  CHECK(p[4].evaluate_each(pub, named).what == decision::allow);
  std::vector<std::string> mixed{"wss://nos.lol", "wss://relay.example"};
  CHECK(p[4].evaluate_each(pub, mixed) == verdict{decision::deny, "relay_not_allowed", 1});
  CHECK(p[4].evaluate(act("payment")).what == decision::deny);

  // Outbound HTTP: private addresses first, an allowlist, approvals for some.
  CHECK(p[5].evaluate(act("http", "researcher-1", "127.0.0.1")).reason == "private_address");
  CHECK(p[5].evaluate(act("http", "a", "LOCALHOST")).reason == "private_address");
  CHECK(p[5].evaluate(act("http", "a", "169.254.169.254")).reason == "private_address");
  CHECK(p[5].evaluate(act("http", "a", "::1")).reason == "private_address");
  CHECK(p[5].evaluate(act("http", "a", "api.github.com")) ==
        verdict{decision::allow, "allowlisted_host", 1});
  CHECK(p[5].evaluate(act("http", "a", "docs.example.com")).what == decision::allow);
  CHECK(p[5].evaluate(act("http", "researcher-1", "news.example.org")) ==
        verdict{decision::require_approval, "new_host_needs_approval", 2});
  CHECK(p[5].evaluate(act("http", "writer", "news.example.org")) ==
        verdict{decision::deny, "host_not_allowlisted", 3});
  CHECK(p[5].evaluate(act("compute", "writer", "local/x")).what == decision::allow);
}
