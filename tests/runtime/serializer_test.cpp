#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ticktock/runtime/serializer.hpp"

using namespace ticktock;

namespace {

struct inner {
  std::int32_t x = 0;
  std::string label;
};

struct outer {
  std::uint64_t count = 0;
  double ratio = 0;
  bool on = false;
  std::string name;
  std::vector<inner> items;
  std::map<std::string, std::int64_t> totals;
  std::optional<std::string> note;
  std::chrono::milliseconds timeout{0};
};

struct v1 {
  std::uint64_t a = 0;
};
struct v2 {
  std::uint64_t a = 0;
  std::string b = "default";
};

// A type with its own encoding through the serializer hook.
struct celsius {
  double degrees = 0;
};

}  // namespace

template <>
struct ticktock::serializer<celsius> {
  static void save(encoder& e, const celsius& c) { e.put_bytes(std::to_string(c.degrees)); }
  static bool load(decoder& d, celsius& c) {
    std::string s;
    if (!d.get_bytes(s))
      return false;
    c.degrees = std::stod(s);
    return true;
  }
};

namespace {
struct weather {
  celsius today;
  std::vector<celsius> week;
};
}  // namespace

TEST_CASE("aggregates round-trip through the default serializer") {
  outer o;
  o.count = 42;
  o.ratio = 0.5;
  o.on = true;
  o.name = "hello";
  o.items = {{1, "a"}, {-7, "b"}};
  o.totals = {{"x", 1}, {"y", -2}};
  o.note = "n";
  o.timeout = std::chrono::milliseconds{1500};
  auto bytes = to_bytes(o);
  outer back;
  REQUIRE(from_bytes(bytes, back));
  CHECK(back.count == 42);
  CHECK(back.ratio == 0.5);
  CHECK(back.on);
  CHECK(back.name == "hello");
  REQUIRE(back.items.size() == 2);
  CHECK(back.items[1].x == -7);
  CHECK(back.items[1].label == "b");
  CHECK(back.totals.at("y") == -2);
  CHECK(back.note == std::optional<std::string>{"n"});
  CHECK(back.timeout.count() == 1500);
}

TEST_CASE("fields appended to a state struct load from older bytes with their defaults") {
  auto bytes = to_bytes(v1{7});
  v2 newer;
  REQUIRE(from_bytes(bytes, newer));
  CHECK(newer.a == 7);
  CHECK(newer.b == "default");
  // The other way round is refused: v1 cannot hold v2's extra field.
  v1 older;
  CHECK_FALSE(from_bytes(to_bytes(v2{1, "x"}), older));
}

TEST_CASE("truncated or garbage bytes are rejected, never read past the end") {
  outer o;
  o.name = std::string(100, 'z');
  o.items = {{1, "a"}};
  auto bytes = to_bytes(o);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    outer back;
    CHECK_FALSE(from_bytes(std::string_view{bytes}.substr(0, n), back));
  }
  outer back;
  CHECK_FALSE(from_bytes(bytes + "x", back));
  CHECK_FALSE(from_bytes(std::string(16, '\xff'), back));
}

TEST_CASE("a bool encoded as anything but 0 or 1 is rejected") {
  // Regression (found by UBSan): bools were loaded by copying the stored byte
  // into the bool, so a corrupt state byte of, say, 8 loaded "successfully"
  // into a bool holding an invalid value, whose every use is undefined
  // behaviour, instead of failing the decode (and marking the agent errored).
  outer o;
  o.on = true;
  auto bytes = to_bytes(o);
  // The bool is the byte after the field count, the u64 and the double.
  auto at = std::size_t{1 + 8 + 8};
  REQUIRE(bytes[at] == '\x01');
  outer back;
  REQUIRE(from_bytes(bytes, back));
  CHECK(back.on);
  bytes[at] = '\x00';
  REQUIRE(from_bytes(bytes, back));
  CHECK_FALSE(back.on);
  for (char bad : {'\x02', '\x08', '\xff'}) {
    bytes[at] = bad;
    CHECK_FALSE(from_bytes(bytes, back));
  }
  std::vector<bool> flags{true, false, true};
  auto fb = to_bytes(flags);
  fb.back() = '\x07';
  std::vector<bool> flags_back;
  CHECK_FALSE(from_bytes(fb, flags_back));
}

TEST_CASE("a custom serializer specialization is used inside aggregates") {
  weather w{{21.5}, {{1.0}, {2.0}}};
  weather back;
  REQUIRE(from_bytes(to_bytes(w), back));
  CHECK(back.today.degrees == 21.5);
  REQUIRE(back.week.size() == 2);
  CHECK(back.week[1].degrees == 2.0);
}
