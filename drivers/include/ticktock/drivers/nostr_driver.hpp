#pragma once

// The Nostr driver: connects agents to Nostr relays. An agent created with
// `{"nostr":{"relays":["wss://..."]}}` in its JSON config (or watched through
// watch()) gets a relay connection set; the events its ticks publish
// (ctx.nostr_publish, outbox topic "nostr") are sent to its relays, and the
// events that mention it or are gift-wrapped direct messages to it arrive as
// `message` triggers. See docs/nostr.md.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ticktock/actors/node.hpp"
#include "ticktock/drivers/nostr_relay.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/error.hpp"

namespace ticktock::drivers {

struct nostr_driver_options {
  /// Options of each agent's relay connections.
  relay_pool_options pool;
  /// How far back a subscription asks for stored events; gift wraps carry
  /// timestamps up to two days in the past [3 days].
  std::chrono::seconds lookback{3 * 24 * 3600};
  /// On start, how many of each agent's latest published events are sent
  /// again (relays keep one copy per event id) [100].
  std::size_t republish_last = 100;
  /// Largest event accepted from a relay, in bytes of JSON [128 KiB].
  std::size_t max_event_bytes = std::size_t{128} << 10;
};

/// Counters since the driver started (for /metrics).
struct nostr_metrics {
  std::uint64_t received = 0;        ///< events relays delivered (after deduplication)
  std::uint64_t delivered = 0;       ///< of those, newly in an agent's inbox
  std::uint64_t duplicates = 0;      ///< already in the inbox (the event id was seen)
  std::uint64_t malformed = 0;       ///< refused: not a valid event, or too large
  std::uint64_t bad_signature = 0;   ///< refused: id or signature does not verify
  std::uint64_t published = 0;       ///< events sent to relays
  std::uint64_t unexpected = 0;      ///< refused: not a kind 1 or 1059 event that p-tags the agent
};

class nostr_driver {
public:
  /// Watches every agent whose config names relays, and every agent created
  /// later with such a config.
  static expected<std::unique_ptr<nostr_driver>> start(node& n, nostr_driver_options options = {});
  ~nostr_driver();
  nostr_driver(const nostr_driver&) = delete;
  nostr_driver& operator=(const nostr_driver&) = delete;

  /// Connects agent `id` to `relays` (ws:// or wss:// URLs), replacing its
  /// earlier set; an empty list disconnects it. invalid_argument for a bad URL.
  error watch(const std::string& id, const std::vector<std::string>& relays);
  /// The relays of agent `id` (empty if not watched).
  std::vector<std::string> relays(const std::string& id) const;
  /// The `nostr/relays` file: each relay's connection state and counters as
  /// JSON; not_found if the agent has no relays.
  expected<std::string> status_json(const std::string& id) const;
  /// The `nostr/publish` file: signs `note` with the agent's BIP-340 key and
  /// sends it to its relays. Returns the signed event as JSON.
  expected<std::string> publish(const std::string& id, const nostr_note& note);

  nostr_metrics metrics() const;

  struct impl;

private:
  explicit nostr_driver(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The relay URLs in an agent config (ticktock/runtime/nostr.hpp).
using nostr::relays_in_config;

}  // namespace ticktock::drivers
