// The policy gate's caches of policies and limits against the store they
// cache: a lookup never keeps a value that a write installed after it read.

#include <catch2/catch.hpp>

#include <utility>

#include "../../actors/src/gate.hpp"
#include "../store_helpers.hpp"

using namespace ticktock;
using ticktock::detail::gate;
namespace setting = ticktock::detail::setting;

TEST_CASE("a setting written while a lookup reads the store is not overtaken by that read") {
  // Bug: a lookup that read the store before a write cached what it read
  // after the write's install(), so the old limits or policy held until the
  // next write of that setting.
  test::temp_dir dir;
  auto st = test::open_store(dir);
  node_options opts;
  gate g{*st, opts};
  // As node::set_setting: validate, commit, install.
  auto write = [&](const std::string& key, std::string_view value) {
    auto canonical = g.validate(key, value);
    REQUIRE(canonical);
    storage::service_op op;
    op.settings.emplace_back(key, *canonical);
    std::vector<storage::write_op> ops;
    ops.emplace_back(std::move(op));
    REQUIRE_FALSE(st->apply(ops).front().err);
    g.install(key, *canonical);
  };
  // The next lookup's read is overtaken by `later`, written between its
  // read of the store and its caching.
  auto overtake = [&](const std::string& key, std::string_view later) {
    g.after_read_for_test = [&, key, later, once = true]() mutable {
      if (std::exchange(once, false))
        write(key, later);
    };
  };

  SECTION("limits") {
    auto key = setting::agent_limits("a");
    write(key, R"({"ticks_per_minute":1})");
    overtake(key, R"({"ticks_per_minute":2})");
    CHECK(g.limits_for("a").ticks_per_minute == 1);  // what it read, this once
    CHECK(g.limits_for("a").ticks_per_minute == 2);
    CHECK(g.limits_for("a").ticks_per_minute == 2);
  }
  SECTION("policy") {
    auto key = std::string{setting::global_policy};
    std::vector<std::string> relays{"wss://relay.example"};
    write(key, R"({"rules":[],"default":"allow"})");
    overtake(key, R"({"rules":[],"default":"deny"})");
    CHECK(g.assess_publish("a", relays).what == policy::decision::allow);
    CHECK(g.assess_publish("a", relays).what == policy::decision::deny);
    CHECK(g.assess_publish("a", relays).what == policy::decision::deny);
  }
}
