#pragma once

// Key encodings of every column family. Integers are big-endian so RocksDB's
// bytewise order is numeric order; agent ids never contain '\0', so
// "<id>\0" is a prefix owned by exactly one agent.

#include <cstdint>
#include <string>
#include <string_view>

#include "ticktock/runtime/clock.hpp"

namespace ticktock::storage::keys {

inline void put_be64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}

inline std::uint64_t get_be64(std::string_view in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8 && i < static_cast<int>(in.size()); ++i)
    v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

// Signed microseconds biased so that negative times sort before positive.
inline std::uint64_t bias(time_point t) {
  return static_cast<std::uint64_t>(t.time_since_epoch().count()) ^ (std::uint64_t{1} << 63);
}
inline time_point unbias(std::uint64_t v) {
  return time_point{duration{static_cast<std::int64_t>(v ^ (std::uint64_t{1} << 63))}};
}

/// "<id>\0": every per-agent key of inbox, outbox, trajectory, deadletter,
/// goals and memory starts with it.
inline std::string prefix(std::string_view id) {
  std::string k{id};
  k.push_back('\0');
  return k;
}
/// One past the last key with prefix(id).
inline std::string prefix_end(std::string_view id) {
  std::string k{id};
  k.push_back('\1');
  return k;
}

inline std::string seq(std::string_view id, std::uint64_t n) {
  auto k = prefix(id);
  put_be64(k, n);
  return k;
}

inline std::string goal(std::string_view id, std::string_view key) {
  auto k = prefix(id);
  k.append(key);
  return k;
}

inline std::string memory(std::string_view id, std::string_view space, std::string_view key) {
  auto k = prefix(id);
  k.append(space);
  k.push_back('\0');
  k.append(key);
  return k;
}

// -- ledger column family: per agent, so terminate and export cover it ------

inline std::string ledger(std::string_view id) { return prefix(id) + "b"; }
inline std::string ledger_history(std::string_view id, std::uint64_t n) {
  auto k = prefix(id) + "h";
  put_be64(k, n);
  return k;
}
inline std::string ledger_history_prefix(std::string_view id) { return prefix(id) + "h"; }
inline std::string job(std::string_view id, std::string_view job) {
  return prefix(id) + "j" + std::string{job};
}
inline std::string job_prefix(std::string_view id) { return prefix(id) + "j"; }

// -- approvals column family: "<agent>\0<approval id>", with an index in meta

inline std::string approval(std::string_view agent, std::string_view id) {
  return prefix(agent) + std::string{id};
}
/// meta: approval id -> agent id.
inline std::string approval_index(std::string_view id) { return "a" + std::string{id}; }
/// meta: node-wide settings (kill switch, policies, prices, limits).
inline std::string setting(std::string_view name) { return "s" + std::string{name}; }

// -- alarms column family: due-time order plus a per-agent index ------------

inline std::string alarm_due(time_point due, std::string_view id, std::string_view name) {
  std::string k{"d"};
  put_be64(k, bias(due));
  k.append(id);
  k.push_back('\0');
  k.append(name);
  return k;
}
inline std::string alarm_index(std::string_view id, std::string_view name) {
  std::string k{"i"};
  k.append(id);
  k.push_back('\0');
  k.append(name);
  return k;
}
inline std::string alarm_index_prefix(std::string_view id) { return "i" + prefix(id); }

// -- meta column family -------------------------------------------------------

/// Counters of an agent: next inbox seq and next deadletter id (2 x be64).
inline std::string counters(std::string_view id) { return "c" + std::string{id}; }
/// The errored mark of an agent (value: reason).
inline std::string errored(std::string_view id) { return "e" + std::string{id}; }
/// Idempotency key of an inbox write (value: be64 seq).
inline std::string idempotency(std::string_view id, std::string_view key) {
  return "k" + prefix(id) + std::string{key};
}
inline std::string idempotency_prefix(std::string_view id) { return "k" + prefix(id); }
inline std::string idempotency_prefix_end(std::string_view id) { return "k" + prefix_end(id); }
/// A WebSocket connection whose open trigger an agent was given and whose
/// close it was not yet (value: empty).
inline std::string ws_open(std::string_view id, std::string_view connection) {
  return "w" + prefix(id) + std::string{connection};
}
inline std::string ws_open_prefix(std::string_view id) { return "w" + prefix(id); }
inline std::string ws_open_prefix_end(std::string_view id) { return "w" + prefix_end(id); }

}  // namespace ticktock::storage::keys
