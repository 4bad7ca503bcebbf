// Text helpers: log field values.

#include <catch2/catch.hpp>

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
