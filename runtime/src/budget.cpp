#include "ticktock/runtime/budget.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

namespace ticktock::budget {

namespace {

constexpr std::uint64_t max_amount = std::numeric_limits<std::uint64_t>::max();

std::uint64_t add_sat(std::uint64_t a, std::uint64_t b) noexcept {
  return b > max_amount - a ? max_amount : a + b;
}

}  // namespace

std::string_view to_string(limit l) noexcept {
  switch (l) {
    case limit::total: return "total";
    case limit::day: return "day";
    case limit::month: return "month";
    case limit::capacity: return "capacity";
  }
  return "total";
}

std::string refusal::message() const {
  std::string out{exceeded_reason};
  if (which == limit::capacity) {
    out += ": the ledger cannot hold more than " + std::to_string(max_amount) + " micro-USD (" +
           std::to_string(committed) + " spent or reserved, " + std::to_string(amount) +
           " asked)";
    return out;
  }
  out += ": the " + std::string{to_string(which)} + " limit of " + std::to_string(limit_value) +
         " micro-USD would be passed (" + std::to_string(committed) + " spent or reserved, " +
         std::to_string(amount) + " asked)";
  return out;
}

std::int64_t day_of(time_point t) noexcept {
  return std::chrono::floor<std::chrono::days>(t).time_since_epoch().count();
}

std::int64_t month_of(time_point t) noexcept {
  std::chrono::year_month_day ymd{std::chrono::floor<std::chrono::days>(t)};
  return static_cast<std::int64_t>(static_cast<int>(ymd.year())) * 12 +
         static_cast<unsigned>(ymd.month());
}

void roll_over(ledger& l, time_point now) noexcept {
  std::int64_t d = day_of(now);
  if (d > l.day) {
    l.day = d;
    l.spent_day = 0;
  }
  std::int64_t m = month_of(now);
  if (m > l.month) {
    l.month = m;
    l.spent_month = 0;
  }
}

reserve_result reserve(ledger& l, std::uint64_t amount, time_point now) noexcept {
  roll_over(l, now);
  if (amount == 0)
    return {};
  // spent_total + reserved never overflows: every reservation is checked
  // against the capacity left here, and a settle charges at most what was
  // reserved.
  std::uint64_t held = add_sat(l.spent_total, l.reserved);
  if (amount > max_amount - held)
    return {refusal{limit::capacity, max_amount, held, amount}};
  struct check {
    limit which;
    std::uint64_t limit_value;
    std::uint64_t spent;
  };
  const check checks[] = {{limit::total, l.limit_total, l.spent_total},
                          {limit::month, l.limit_month, l.spent_month},
                          {limit::day, l.limit_day, l.spent_day}};
  for (const auto& c : checks) {
    if (c.limit_value == 0)
      continue;
    // Not add_sat(committed, amount) > limit: at limit UINT64_MAX a
    // saturated sum would equal the limit and pass.
    std::uint64_t committed = add_sat(c.spent, l.reserved);
    if (committed > c.limit_value || amount > c.limit_value - committed)
      return {refusal{c.which, c.limit_value, committed, amount}};
  }
  l.reserved += amount;
  return {};
}

settlement settle(ledger& l, std::uint64_t reserved_amount, std::uint64_t actual,
                  time_point now) noexcept {
  roll_over(l, now);
  settlement s;
  s.unmatched = reserved_amount > l.reserved ? reserved_amount - l.reserved : 0;
  l.reserved -= reserved_amount - s.unmatched;
  s.charged = std::min(actual, reserved_amount);
  s.released = reserved_amount - s.charged;
  s.excess = actual - s.charged;
  l.spent_total = add_sat(l.spent_total, s.charged);
  l.spent_day = add_sat(l.spent_day, s.charged);
  l.spent_month = add_sat(l.spent_month, s.charged);
  return s;
}

std::uint64_t release(ledger& l, std::uint64_t amount) noexcept {
  std::uint64_t released = std::min(amount, l.reserved);
  l.reserved -= released;
  return released;
}

std::uint64_t available(ledger& l, time_point now) noexcept {
  roll_over(l, now);
  std::uint64_t left = max_amount - add_sat(l.spent_total, l.reserved);
  auto room = [&](std::uint64_t limit_value, std::uint64_t spent) {
    if (limit_value == 0)
      return;
    std::uint64_t committed = add_sat(spent, l.reserved);
    left = std::min(left, committed >= limit_value ? 0 : limit_value - committed);
  };
  room(l.limit_total, l.spent_total);
  room(l.limit_month, l.spent_month);
  room(l.limit_day, l.spent_day);
  return left;
}

}  // namespace ticktock::budget
