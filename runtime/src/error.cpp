#include "ticktock/runtime/error.hpp"

namespace ticktock {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::ok: return "OK";
    case errc::invalid_id: return "INVALID_ID";
    case errc::unknown_type: return "UNKNOWN_TYPE";
    case errc::already_exists: return "ALREADY_EXISTS";
    case errc::not_found: return "AGENT_NOT_FOUND";
    case errc::invalid_argument: return "INVALID_ARGUMENT";
    case errc::message_too_large: return "MESSAGE_TOO_LARGE";
    case errc::inbox_full: return "INBOX_FULL";
    case errc::corrupt_record: return "CORRUPT_RECORD";
    case errc::storage_failure: return "STORAGE_FAILURE";
    case errc::agent_errored: return "AGENT_ERRORED";
    case errc::tick_failed: return "TICK_FAILED";
    case errc::shutting_down: return "SHUTTING_DOWN";
    case errc::timeout: return "TIMEOUT";
    case errc::replayed: return "REPLAYED_ENVELOPE";
    case errc::idempotency_key_reused: return "IDEMPOTENCY_KEY_REUSED";
  }
  return "UNKNOWN";
}

std::string error::to_string() const {
  std::string out{ticktock::to_string(code_)};
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace ticktock
