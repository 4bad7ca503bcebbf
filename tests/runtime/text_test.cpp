// Text helpers: log field values, JSON text.

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "ticktock/runtime/text.hpp"

using ticktock::log_value;

TEST_CASE("log_value leaves a plain token as it is", "[text]") {
  CHECK(log_value("c1") == "c1");
  CHECK(log_value("/v1/agents/c1/fs/status") == "/v1/agents/c1/fs/status");
}

TEST_CASE("log_value quotes what could end a line or forge a field", "[text]") {
  CHECK(log_value("") == "\"\"");
  CHECK(log_value("a b") == "\"a b\"");
  CHECK(log_value("a=b") == "\"a=b\"");
  CHECK(log_value("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(log_value("back\\slash") == "\"back\\\\slash\"");
  // A newline would start a forged line: it stays inside the value.
  auto v = log_value("1'\nevent=forged x=1");
  CHECK(v == "\"1'\\nevent=forged x=1\"");
  CHECK(v.find('\n') == std::string::npos);
  CHECK(log_value(std::string_view{"\r\t\x01\x7f", 4}) == "\"\\r\\t\\x01\\x7f\"");
  CHECK(log_value(std::string_view{"a\0b", 3}) == "\"a\\x00b\"");
  // UTF-8 is kept as it is, quoted.
  CHECK(log_value("h\xc3\xa9") == "\"h\xc3\xa9\"");
}

TEST_CASE("json_text writes doubles as Python's repr does, the rest as Boost.JSON", "[text]") {
  using ticktock::json_text;
  namespace json = boost::json;
  // Bug: a config of {"n":10.0} reached the agent as {"n":1E1}, a
  // temperature of 0 showed as 0E0, embeddings as [5E-1,-5E-1].
  CHECK(json_text(json::parse(R"({"n":10.0,"t":0.0,"e":[0.5,-0.5]})")) == R"({"n":10.0,"t":0.0,"e":[0.5,-0.5]})");
  CHECK(json_text(json::value(0.1)) == "0.1");
  CHECK(json_text(json::value(-0.0)) == "-0.0");
  CHECK(json_text(json::value(1e-4)) == "0.0001");
  CHECK(json_text(json::value(2.5e-7)) == "2.5e-07");
  CHECK(json_text(json::value(123456789012345.0)) == "123456789012345.0");
  CHECK(json_text(json::value(1e16)) == "1e+16");
  CHECK(json_text(json::value(1.7976931348623157e308)) == "1.7976931348623157e+308");
  // Every double reads back as the same double.
  for (double d : {0.1, 1.0 / 3, 2.0 / 3e-9, 6.02214076e23, 5e-324, 123.456, -1e-5}) {
    auto back = json::parse(json_text(json::value(d)));
    REQUIRE(back.is_double());
    CHECK(back.get_double() == d);
  }
  // Without a double, byte for byte what Boost.JSON writes.
  auto plain = json::parse(R"({"a":[1,-2,18446744073709551615,"x\"y\u0001",true,null],"b":{}})");
  CHECK(json_text(plain) == json::serialize(plain));
  // With one, strings and keys are escaped the same way.
  auto mixed = json::parse(R"({"k\"ey":["\u0000\n",1.5,{"z":[]}]})");
  CHECK(json_text(mixed) == R"({"k\"ey":["\u0000\n",1.5,{"z":[]}]})");
}
