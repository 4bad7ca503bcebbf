#pragma once

// Budget ledger arithmetic in micro-USD. Pure functions on a plain struct
// that the caller stores (one per agent) and updates in the same write as
// the effect that reserves, settles or releases. Service jobs reserve their
// maximum cost first, settle the real cost after, and release the rest.
//
// Periods are UTC calendar days and months. A reservation counts against
// every limit at once: it must fit under the total limit, under the current
// day's and under the current month's, counting what is already spent in
// that period plus everything reserved and not yet settled. None of these
// functions throw; every sum saturates instead of wrapping.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ticktock/runtime/clock.hpp"

namespace ticktock::budget {

/// The reason code a refused reservation reaches the agent with.
inline constexpr std::string_view exceeded_reason = "budget_exceeded";

/// One agent's ledger. All amounts in micro-USD.
struct ledger {
  std::uint64_t limit_total = 0;  ///< 0: no total limit
  std::uint64_t limit_day = 0;    ///< 0: no daily limit
  std::uint64_t limit_month = 0;  ///< 0: no monthly limit
  std::uint64_t spent_total = 0;
  std::uint64_t spent_day = 0;    ///< spent in the UTC day `day`
  std::uint64_t spent_month = 0;  ///< spent in the UTC month `month`
  std::uint64_t reserved = 0;     ///< reserved and neither settled nor released
  std::int64_t day = 0;    ///< days since 1970-01-01 (UTC) that spent_day counts
  std::int64_t month = 0;  ///< year * 12 + month (1..12), UTC, that spent_month counts

  friend bool operator==(const ledger&, const ledger&) = default;
};

/// Which limit a reservation would pass.
enum class limit : std::uint8_t {
  total = 0,
  day = 1,
  month = 2,
  capacity = 3,  ///< the 64-bit counters themselves would overflow
};

/// "total", "day", "month" or "capacity".
std::string_view to_string(limit l) noexcept;

/// A refused reservation: which limit, and the numbers behind it.
struct refusal {
  limit which = limit::total;
  std::uint64_t limit_value = 0;  ///< the limit passed (UINT64_MAX for capacity)
  std::uint64_t committed = 0;    ///< spent in that period plus reserved, before this request
  std::uint64_t amount = 0;       ///< what was asked for

  /// Always exceeded_reason.
  std::string_view reason() const noexcept { return exceeded_reason; }
  /// A sentence for the agent and the trajectory, e.g. "budget_exceeded: the
  /// day limit of 1000000 micro-USD would be passed (900000 spent or
  /// reserved, 200000 asked)".
  std::string message() const;

  friend bool operator==(const refusal&, const refusal&) = default;
};

/// The result of reserve: success, or the refusal. `if (r)` is true on
/// success.
struct reserve_result {
  std::optional<refusal> refused;
  explicit operator bool() const noexcept { return !refused; }
};

/// What settle did.
struct settlement {
  std::uint64_t charged = 0;   ///< added to the spent counters: min(actual, reserved_amount)
  std::uint64_t released = 0;  ///< returned from the reservation unspent
  /// actual - reserved_amount when the real cost passed the reservation: not
  /// charged; the caller reserves it anew (and may be refused) or writes it off.
  std::uint64_t excess = 0;
  /// How much of reserved_amount was not held in `reserved` (a caller bug or
  /// a double settle); 0 normally. The charge is made regardless.
  std::uint64_t unmatched = 0;
};

/// The UTC day (days since 1970-01-01) and month (year * 12 + month 1..12)
/// of `t`.
std::int64_t day_of(time_point t) noexcept;
std::int64_t month_of(time_point t) noexcept;

/// Starts a new day or month when `now` is in a later one than the ledger's
/// (spent_day or spent_month goes back to 0). A `now` in an earlier period
/// (the clock went back) changes nothing: the later period keeps counting.
/// reserve and settle call it; call it before showing a balance.
void roll_over(ledger& l, time_point now) noexcept;

/// Reserves `amount` if spent-in-period + reserved + amount stays at or
/// under every set limit (checked in the order total, month, day; the first
/// passed is reported). On success `reserved` grows by `amount`; on refusal
/// the ledger is only rolled over. A zero amount always succeeds.
reserve_result reserve(ledger& l, std::uint64_t amount, time_point now) noexcept;

/// Ends a reservation of `reserved_amount` whose real cost was `actual`:
/// the reservation leaves `reserved`, min(actual, reserved_amount) is added
/// to spent_total, spent_day and spent_month (of the period of `now`), the
/// rest is released. A cost above the reservation is never charged here; it
/// is reported as `excess`.
settlement settle(ledger& l, std::uint64_t reserved_amount, std::uint64_t actual,
                  time_point now) noexcept;

/// Returns `amount` of reservation unspent (a job cancelled or failed before
/// it cost anything). Returns what was released: less than `amount` only if
/// less was reserved, which is a caller bug.
std::uint64_t release(ledger& l, std::uint64_t amount) noexcept;

/// What may still be reserved now before the first limit is reached:
/// min over the set limits of (limit - spent-in-period - reserved), 0 when
/// one is reached; UINT64_MAX - reserved - spent_total when none is set.
/// Rolls the ledger over first.
std::uint64_t available(ledger& l, time_point now) noexcept;

}  // namespace ticktock::budget
