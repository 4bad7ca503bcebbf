#include <catch2/catch.hpp>

#include "ticktock/runtime/detail/json_check.hpp"

using ticktock::detail::scan_json;

TEST_CASE("scan_json names the first key an object repeats, at any depth") {
  CHECK(scan_json(R"({"a":1,"a":2})").duplicate == "a");
  CHECK(scan_json(R"({"a":{"b":[0,{"c":1,"c":1}]}})").duplicate == "a.b[1].c");
  CHECK(scan_json(R"({"x":{"odd key":1,"odd key":2}})").duplicate == R"(x["odd key"])");
  // The same key in sibling objects, or once per nesting level, is no repeat.
  auto ok = scan_json(R"({"a":{"a":1},"b":[{"a":1},{"a":2}]})");
  CHECK(ok.duplicate.empty());
  CHECK(ok.error.empty());
  // Keys are compared byte for byte, after unescaping.
  CHECK(scan_json(R"({"A":1,"a":2})").duplicate.empty());
  CHECK(scan_json(R"({"a":1,"\u0061":2})").duplicate == "a");
}

TEST_CASE("scan_json says where text stops being JSON") {
  auto r = scan_json(R"({"a":1,)");
  CHECK(r.duplicate.empty());
  CHECK_FALSE(r.error.empty());
  CHECK(r.error.find("at byte") != std::string::npos);
  CHECK_FALSE(scan_json("").error.empty());
  CHECK_FALSE(scan_json("{'a':1}").error.empty());
  CHECK(scan_json("[1,2,3]").error.empty());
}
