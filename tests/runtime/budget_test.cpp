#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <limits>

#include "ticktock/runtime/budget.hpp"

using namespace ticktock;
using namespace ticktock::budget;
using std::chrono::days;
using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::sys_days;
using std::chrono::year_month_day;
using std::chrono::December;
using std::chrono::January;
using std::chrono::November;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();

time_point at(year_month_day ymd, hours h = hours{0}, minutes m = minutes{0}) {
  return time_point{sys_days{ymd} + h + m};
}

const time_point noon = at(2026y / November / 21d, hours{12});

}  // namespace

TEST_CASE("days and months are UTC calendar periods") {
  CHECK(day_of(time_point{}) == 0);
  CHECK(month_of(time_point{}) == 1970 * 12 + 1);
  CHECK(day_of(at(2026y / November / 21d, hours{23}, minutes{59})) ==
        day_of(at(2026y / November / 21d)));
  CHECK(day_of(at(2026y / November / 22d)) == day_of(at(2026y / November / 21d)) + 1);
  CHECK(month_of(at(2026y / December / 31d, hours{23})) == 2026 * 12 + 12);
  CHECK(month_of(at(2027y / January / 1d)) == 2027 * 12 + 1);
  // One microsecond before the epoch is the day before it.
  CHECK(day_of(time_point{microseconds{-1}}) == -1);
  CHECK(month_of(time_point{microseconds{-1}}) == 1969 * 12 + 12);
}

TEST_CASE("a ledger without limits reserves, settles and releases") {
  ledger l;
  REQUIRE(reserve(l, 1000, noon));
  CHECK(l.reserved == 1000);
  CHECK(l.day == day_of(noon));
  CHECK(l.month == month_of(noon));

  auto s = settle(l, 1000, 400, noon);
  CHECK(s.charged == 400);
  CHECK(s.released == 600);
  CHECK(s.excess == 0);
  CHECK(s.unmatched == 0);
  CHECK(l.reserved == 0);
  CHECK(l.spent_total == 400);
  CHECK(l.spent_day == 400);
  CHECK(l.spent_month == 400);

  REQUIRE(reserve(l, 50, noon));
  CHECK(release(l, 50) == 50);
  CHECK(l.reserved == 0);
  CHECK(l.spent_total == 400);
  CHECK(reserve(l, 0, noon));
  CHECK(l.reserved == 0);
}

TEST_CASE("a reservation that would pass a limit is refused and names it") {
  SECTION("total") {
    ledger l;
    l.limit_total = 1000;
    REQUIRE(reserve(l, 600, noon));
    settle(l, 600, 600, noon);
    REQUIRE(reserve(l, 300, noon));
    CHECK(reserve(l, 100, noon));  // exactly at the limit is allowed
    ledger before = l;
    auto r = reserve(l, 1, noon);
    REQUIRE_FALSE(r);
    CHECK(*r.refused == refusal{limit::total, 1000, 1000, 1});
    CHECK(r.refused->reason() == "budget_exceeded");
    CHECK(r.refused->message() ==
          "budget_exceeded: the total limit of 1000 micro-USD would be passed (1000 spent or "
          "reserved, 1 asked)");
    CHECK(l == before);
  }
  SECTION("day") {
    ledger l;
    l.limit_day = 500;
    l.limit_month = 10'000;
    REQUIRE(reserve(l, 300, noon));
    auto r = reserve(l, 201, noon);
    REQUIRE_FALSE(r);
    CHECK(r.refused->which == limit::day);
    CHECK(r.refused->message().find("the day limit of 500") != std::string::npos);
    CHECK(l.reserved == 300);
  }
  SECTION("month") {
    ledger l;
    l.limit_day = 500;
    l.limit_month = 700;
    REQUIRE(reserve(l, 500, noon));
    settle(l, 500, 500, noon);
    // The next day has room, the month does not.
    auto tomorrow = noon + days{1};
    auto r = reserve(l, 201, tomorrow);
    REQUIRE_FALSE(r);
    CHECK(r.refused->which == limit::month);
    CHECK(r.refused->committed == 500);
    CHECK(reserve(l, 200, tomorrow));
  }
  SECTION("total is reported before month and day") {
    ledger l;
    l.limit_total = 10;
    l.limit_month = 10;
    l.limit_day = 10;
    auto r = reserve(l, 11, noon);
    REQUIRE_FALSE(r);
    CHECK(r.refused->which == limit::total);
  }
}

TEST_CASE("reservations count against the limits until settled or released") {
  ledger l;
  l.limit_day = 1000;
  REQUIRE(reserve(l, 700, noon));
  CHECK_FALSE(reserve(l, 301, noon));
  CHECK(release(l, 700) == 700);
  CHECK(reserve(l, 1000, noon));
  CHECK(available(l, noon) == 0);
}

TEST_CASE("the daily and monthly spend roll over at UTC boundaries") {
  ledger l;
  l.limit_day = 100;
  l.limit_month = 250;
  auto last_minute = at(2026y / November / 30d, hours{23}, minutes{59});
  REQUIRE(reserve(l, 100, last_minute));
  settle(l, 100, 100, last_minute);
  CHECK_FALSE(reserve(l, 1, last_minute));

  auto next_day = at(2026y / December / 1d);
  REQUIRE(reserve(l, 100, next_day));
  CHECK(l.spent_day == 0);      // a new day
  CHECK(l.spent_month == 0);    // and a new month
  CHECK(l.spent_total == 100);  // the total never rolls over
  settle(l, 100, 60, next_day);
  CHECK(l.spent_day == 60);
  CHECK(available(l, next_day) == 40);

  // A clock that steps back keeps counting the later period.
  ledger before = l;
  roll_over(l, last_minute);
  CHECK(l == before);
  CHECK_FALSE(reserve(l, 41, last_minute));
  CHECK(l == before);

  CHECK(available(l, next_day + days{1}) == 100);
  CHECK(l.spent_day == 0);
  CHECK(l.spent_month == 60);
}

TEST_CASE("a cost above the reservation is not charged but reported") {
  ledger l;
  l.limit_total = 10'000;
  REQUIRE(reserve(l, 500, noon));
  auto s = settle(l, 500, 800, noon);
  CHECK(s.charged == 500);
  CHECK(s.excess == 300);
  CHECK(s.released == 0);
  CHECK(l.spent_total == 500);
  CHECK(l.reserved == 0);
}

TEST_CASE("settling or releasing more than is reserved clamps and reports it") {
  ledger l;
  REQUIRE(reserve(l, 100, noon));
  CHECK(release(l, 150) == 100);
  CHECK(l.reserved == 0);

  REQUIRE(reserve(l, 100, noon));
  auto s = settle(l, 250, 50, noon);
  CHECK(s.unmatched == 150);
  CHECK(s.charged == 50);
  CHECK(s.released == 200);
  CHECK(l.reserved == 0);
  CHECK(l.spent_total == 50);
}

TEST_CASE("ledger arithmetic never overflows") {
  ledger l;
  auto r = reserve(l, max_u64, noon);
  REQUIRE(r);
  CHECK(l.reserved == max_u64);
  auto more = reserve(l, 1, noon);
  REQUIRE_FALSE(more);
  CHECK(more.refused->which == limit::capacity);
  CHECK(more.refused->message().find("cannot hold more than 18446744073709551615") !=
        std::string::npos);
  CHECK(available(l, noon) == 0);
  auto s = settle(l, max_u64, max_u64, noon);
  CHECK(s.charged == max_u64);
  CHECK(l.spent_total == max_u64);
  CHECK(l.reserved == 0);
  CHECK_FALSE(reserve(l, 1, noon));

  // Limits near the top with large spends: no wrap-around or saturation
  // lets a request through.
  ledger big;
  big.limit_total = max_u64 - 1;
  big.spent_total = max_u64 - 10;
  big.limit_day = max_u64;
  big.spent_day = max_u64 - 5;
  big.day = day_of(noon);  // keep spent_day in force
  big.month = month_of(noon);
  auto day = reserve(big, 6, noon);
  REQUIRE_FALSE(day);
  CHECK(day.refused->which == limit::day);
  auto total = reserve(big, 10, noon);
  REQUIRE_FALSE(total);
  CHECK(total.refused->which == limit::total);
  auto cap = reserve(big, 11, noon);
  REQUIRE_FALSE(cap);
  CHECK(cap.refused->which == limit::capacity);
  CHECK(reserve(big, 5, noon));

  // A forged settle of the maximum on top of a full counter saturates.
  ledger full;
  full.spent_total = max_u64 - 1;
  full.spent_day = max_u64 - 1;
  full.spent_month = max_u64 - 1;
  full.day = day_of(noon);
  full.month = month_of(noon);
  auto f = settle(full, 5, 5, noon);
  CHECK(f.unmatched == 5);
  CHECK(full.spent_total == max_u64);
  CHECK(full.spent_day == max_u64);
  CHECK(full.spent_month == max_u64);
}

TEST_CASE("available is the room under the tightest limit") {
  ledger l;
  CHECK(available(l, noon) == max_u64);
  l.limit_total = 1000;
  l.limit_day = 300;
  CHECK(available(l, noon) == 300);
  REQUIRE(reserve(l, 250, noon));
  CHECK(available(l, noon) == 50);
  settle(l, 250, 250, noon);
  CHECK(available(l, noon + days{1}) == 300);
  l.spent_total = 900;
  CHECK(available(l, noon + days{1}) == 100);
  // Limits lowered below what is spent: nothing left, not a wrap.
  l.limit_total = 10;
  CHECK(available(l, noon) == 0);
}

TEST_CASE("limits print their names") {
  CHECK(to_string(limit::total) == "total");
  CHECK(to_string(limit::day) == "day");
  CHECK(to_string(limit::month) == "month");
  CHECK(to_string(limit::capacity) == "capacity");
}
