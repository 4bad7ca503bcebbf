#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ticktock {

/// Every error code a ticktock call can return. The codes are stable: drivers
/// map them to HTTP statuses and JSON error codes.
enum class errc : std::uint8_t {
  ok = 0,
  invalid_id,         ///< An agent id does not match [a-z0-9][a-z0-9._-]{0,127}.
  unknown_type,       ///< No agent type is registered under the given name.
  already_exists,     ///< An agent with this id exists already.
  not_found,          ///< No such agent or record. An ordinary answer, not a fault.
  invalid_argument,   ///< A parameter is out of range or malformed.
  message_too_large,  ///< A message or event exceeds the configured size limit.
  inbox_full,         ///< The agent's inbox is at its depth limit.
  corrupt_record,     ///< A stored record failed to decode.
  storage_failure,    ///< RocksDB failed to read or write.
  agent_errored,      ///< The agent is marked errored and does not tick.
  tick_failed,        ///< The agent's on_trigger threw or called fail().
  shutting_down,      ///< The node is stopping and accepts no new work.
  timeout,            ///< A wait ran out of time.
  replayed,           ///< An envelope with this id was delivered before.
  idempotency_key_reused,  ///< An idempotency key came back with another message.
};

/// Returns the stable upper-case name of a code, e.g. "AGENT_NOT_FOUND".
std::string_view to_string(errc code) noexcept;

/// A code plus a human-readable message. A default-constructed error means
/// success; `if (err)` is true when something failed.
class error {
public:
  error() = default;
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  explicit operator bool() const noexcept { return code_ != errc::ok; }

  /// "CODE: message", for logs and test failures.
  std::string to_string() const;

private:
  errc code_ = errc::ok;
  std::string message_;
};

/// Either a value or an error (std::expected is C++23).
template <class T>
class expected {
public:
  expected(T value) : v_(std::move(value)) {}
  expected(error err) : v_(std::move(err)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  // By value, so `for (auto& x : *f())` does not dangle.
  T value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The error; only valid when !has_value().
  const error& error_value() const { return std::get<1>(v_); }
  errc code() const noexcept { return has_value() ? errc::ok : std::get<1>(v_).code(); }

private:
  std::variant<T, error> v_;
};

}  // namespace ticktock
