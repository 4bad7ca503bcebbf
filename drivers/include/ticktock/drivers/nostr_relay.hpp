#pragma once

// A pool of Nostr relay connections (NIP-01 client side) over ws:// and
// wss://: persistent connections that reconnect with backoff, publishing
// with per-relay OK tracking, subscriptions re-sent after every reconnect and
// events deduplicated by id. Boost.Beast, Asio and OpenSSL stay inside
// drivers/src/nostr_relay.cpp. See docs/nostr-relays.md for the policies.
//
// The pool knows NIP-01 framing only: it parses just enough JSON to route a
// frame and to read an event's id. Signatures are NOT verified here; callers
// check every delivered event themselves.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/nostr.hpp"

namespace ticktock::drivers {

// relay_url and parse_relay_url live in ticktock/runtime/nostr.hpp, where the
// policy gate reads an agent's relays the way the pool does.
using nostr::relay_url;
using nostr::parse_relay_url;

/// Which deliveries count as duplicates of each other.
enum class dedupe_scope : std::uint8_t {
  /// Each subscription receives each event id at most once (two
  /// subscriptions whose filters overlap both receive the event).
  subscription,
  /// Each event id is delivered at most once by the whole pool, to whichever
  /// subscription it arrives on first.
  pool,
};

/// Where a published event stands on one relay.
enum class publish_state : std::uint8_t {
  pending,   ///< Queued or sent; no OK yet.
  accepted,  ///< The relay answered ["OK", id, true, msg].
  rejected,  ///< The relay answered ["OK", id, false, msg].
  dropped,   ///< Never delivered: the relay's queue was full or it was removed.
};

/// Returns "pending", "accepted", "rejected" or "dropped".
std::string_view to_string(publish_state s) noexcept;

/// The outcome of one publish on one relay.
struct relay_publish_status {
  std::string relay;  ///< Normalized relay URL.
  publish_state state = publish_state::pending;
  /// The relay's OK message (e.g. "duplicate: already have this event",
  /// "blocked: ..."), or why the event was dropped; empty otherwise.
  std::string message;
};

/// The connection state of one relay.
enum class relay_state : std::uint8_t {
  connecting,  ///< Resolving, connecting, TLS or WebSocket handshake.
  connected,   ///< The WebSocket is open.
  backoff,     ///< Waiting before the next attempt (see next_retry).
  closed,      ///< Removed from the pool or the pool is shutting down.
};

/// Returns "connecting", "connected", "backoff" or "closed".
std::string_view to_string(relay_state s) noexcept;

/// What one relay said about one subscription on the current connection.
struct relay_subscription_status {
  std::string sub_id;
  bool eose = false;            ///< The relay sent EOSE (stored events are done).
  bool closed = false;          ///< The relay ended it with CLOSED.
  std::string closed_message;   ///< The CLOSED message, e.g. "auth-required: ...".
};

/// A snapshot of one relay connection.
struct relay_status {
  std::string url;  ///< Normalized relay URL.
  relay_state state = relay_state::connecting;
  /// Connection attempts since the relay was added.
  std::uint64_t attempts = 0;
  /// Failed attempts or short-lived connections since the last stable one;
  /// the next backoff delay grows with it.
  std::uint64_t consecutive_failures = 0;
  /// Why the last connection failed or ended, e.g. "connect: Connection
  /// refused" or "TLS handshake: certificate verify failed (self-signed
  /// certificate)"; empty before the first failure.
  std::string last_error;
  /// When the current connection opened; empty unless connected.
  std::optional<std::chrono::system_clock::time_point> connected_since;
  /// When the next attempt starts; empty unless in backoff.
  std::optional<std::chrono::system_clock::time_point> next_retry;
  std::uint64_t messages_in = 0;         ///< Frames received (including dropped ones).
  std::uint64_t messages_out = 0;        ///< Frames written.
  std::uint64_t events_received = 0;     ///< Well-formed EVENT frames for active subscriptions.
  std::uint64_t duplicates_dropped = 0;  ///< Of those, dropped as already delivered.
  std::uint64_t oversized_dropped = 0;   ///< Frames above max_message_bytes.
  std::uint64_t malformed_dropped = 0;   ///< Frames that are not NIP-01 relay messages.
  std::uint64_t refused_dropped = 0;     ///< Events the options.accept hook refused.
  std::uint64_t notices = 0;             ///< NOTICE frames.
  std::string last_notice;               ///< The last NOTICE message.
  std::size_t queued_publishes = 0;      ///< Events waiting for a connection.
  /// Active subscriptions of the pool as seen on this relay, by sub id.
  std::vector<relay_subscription_status> subscriptions;
};

/// A snapshot of the whole pool, relays ordered by URL.
struct relay_pool_status {
  std::vector<relay_status> relays;

  /// A JSON object {"relays":[{...}]} with every field of relay_status;
  /// times are milliseconds since the Unix epoch, or null when absent.
  std::string to_json() const;
};

/// Called for each new event of a subscription: (relay URL, sub id, the
/// event object as JSON). The event's signature has NOT been verified.
using relay_event_handler =
  std::function<void(const std::string& relay, const std::string& sub_id, const std::string& event_json)>;

/// Called when a relay sends EOSE for a subscription: (relay URL, sub id).
using relay_eose_handler = std::function<void(const std::string& relay, const std::string& sub_id)>;

/// Called when a relay answers OK for a published event (accepted or rejected).
using relay_ok_handler =
  std::function<void(const std::string& event_id, const relay_publish_status& status)>;

struct relay_pool_options {
  /// I/O threads; callbacks run on them. With more than one thread, callbacks
  /// for different relays may run concurrently [1].
  std::size_t threads = 1;
  /// First reconnect delay; each further failure doubles it [250 ms].
  std::chrono::milliseconds backoff_initial{250};
  /// Upper bound of the reconnect delay [30 s].
  std::chrono::milliseconds backoff_max{30'000};
  /// A connection that stays open this long resets the backoff to
  /// backoff_initial; one that drops sooner counts as a failure, so a relay
  /// that accepts and hangs up at once is not hammered [10 s].
  std::chrono::milliseconds backoff_reset_after{10'000};
  /// Limit for each of: TCP connect, TLS handshake, WebSocket handshake; also
  /// bounds the WebSocket close handshake [10 s].
  std::chrono::milliseconds connect_timeout{10'000};
  /// A ping is sent after this much silence from the relay; a relay silent
  /// for twice as long is considered dead and the connection is reset.
  /// Zero disables pings and the idle check [30 s].
  std::chrono::milliseconds ping_interval{30'000};
  /// Largest frame accepted from a relay. Larger frames are skipped (read and
  /// discarded, counted in oversized_dropped) while the connection stays up;
  /// a frame above 16 times this resets the connection. At most 1 GiB
  /// [256 KiB].
  std::size_t max_message_bytes = std::size_t{256} << 10;
  /// Per relay, how many publishes may wait for a connection; beyond it a
  /// publish is marked dropped on that relay [1000]. Queued publishes are
  /// also where publishes wait while a connected relay reads slowly: at
  /// most 1 MiB of them is handed to the connection at a time.
  std::size_t max_queued_publishes = 1000;
  /// How many published events publish_status() remembers; the oldest are
  /// forgotten first [10,000].
  std::size_t max_tracked_publishes = 10'000;
  /// How many seen event ids the deduplication remembers (LRU) [100,000].
  std::size_t dedupe_capacity = 100'000;
  /// Duplicate detection per subscription or pool-wide [subscription].
  dedupe_scope dedupe = dedupe_scope::subscription;

  /// Verify relay certificates and host names for wss:// [true]. Turning
  /// this off makes wss:// open to any man in the middle.
  bool tls_verify = true;
  /// Directory of trusted CA certificates (OpenSSL hashed layout), used in
  /// addition to OpenSSL's default paths ["/etc/ssl/certs"]. Empty: none.
  std::string tls_ca_dir = "/etc/ssl/certs";
  /// A PEM file of extra trusted CA certificates, e.g. a test CA. Empty: none.
  std::string tls_ca_file;

  /// Host name overrides, like curl's --resolve: a relay whose host is a key
  /// is reached at the mapped IP address instead of the resolver's answer;
  /// TLS SNI and certificate checks still use the host name. Empty by default.
  std::map<std::string, std::string> resolve;
  /// Called on an I/O thread for each OK answer; may be empty.
  relay_ok_handler on_ok;
  /// Called on an I/O thread with each new event (its JSON) before it is
  /// remembered for deduplication, e.g. to check its signature; an event it
  /// refuses is dropped, counted in refused_dropped and not remembered, so a
  /// forged copy of an event (same id, bad signature) from one relay cannot
  /// suppress the genuine one from another. Copies of an event already
  /// accepted are dropped as duplicates without calling it. An exception
  /// counts as a refusal. Empty: every well-formed event is accepted.
  std::function<bool(const std::string& event_json)> accept;
};

/// A pool of relay connections.
///
/// Thread-safety: every public method may be called from any thread,
/// including from inside a callback. Callbacks run on the pool's I/O threads,
/// never while the pool holds a lock; they must not block for long (they hold
/// up that relay's connection) and must not destroy the pool. An exception
/// thrown by a callback is caught and discarded.
///
/// Destruction closes every connection (a WebSocket close handshake where a
/// connection is open, for at most 1 s in all, then the sockets are closed),
/// joins the I/O threads, and never waits for relays stuck in a handshake.
/// No callback runs after the destructor has returned.
class relay_pool {
public:
  /// Starts the I/O threads. Fails with errc::invalid_argument when an
  /// option is out of range or tls_ca_file cannot be loaded.
  static expected<std::unique_ptr<relay_pool>> create(relay_pool_options options = {});
  ~relay_pool();
  relay_pool(const relay_pool&) = delete;
  relay_pool& operator=(const relay_pool&) = delete;

  // -- relays --

  /// Adds a relay and starts connecting to it; returns its normalized URL.
  /// Active subscriptions are sent once it is connected; earlier publishes
  /// are not. Fails with errc::invalid_argument for a bad URL (see
  /// parse_relay_url), errc::already_exists if the pool has it, and
  /// errc::shutting_down during destruction.
  expected<std::string> add_relay(std::string_view url);

  /// Removes a relay: its connection is closed in the background, its
  /// pending publishes become dropped, and it leaves status(). Fails with
  /// errc::invalid_argument for a bad URL and errc::not_found if the pool
  /// does not have it.
  error remove_relay(std::string_view url);

  /// Normalized URLs of every relay, sorted.
  std::vector<std::string> relays() const;

  // -- publishing --

  /// Sends ["EVENT", event_json] to every relay of the pool now, through
  /// each relay's queue (bounded by max_queued_publishes): at once where
  /// connected, otherwise once connected. An event sent but not answered when a
  /// connection drops is sent again after the reconnect. Publishing an id
  /// again re-sends it to the relays that have not accepted it. Each relay's
  /// answer is reported through options.on_ok and publish_status().
  /// Fails with errc::invalid_argument when event_id is empty, event_json
  /// is not a JSON object or its "id" field differs from event_id, and with
  /// errc::shutting_down during destruction. The pool does not check the
  /// event's signature or size; relays may reject it (see publish_status).
  error publish(std::string event_id, std::string event_json);

  /// Per relay, where a published event stands (relays in URL order).
  /// errc::not_found when the id was never published or has been forgotten
  /// (see max_tracked_publishes).
  expected<std::vector<relay_publish_status>> publish_status(const std::string& event_id) const;

  // -- subscriptions --

  /// Opens (or, for an existing sub_id, replaces) a subscription on every
  /// relay, now and after every reconnect: ["REQ", sub_id, filter...].
  /// filter_json is one NIP-01 filter object or an array of them.
  /// on_event gets each matching event once (see dedupe_scope); on_eose, if
  /// set, gets each relay's EOSE. Fails with errc::invalid_argument for an
  /// empty or over-64-character sub_id, a filter that is not an object or a
  /// non-empty array of objects, or an empty on_event.
  error subscribe(std::string sub_id, std::string filter_json, relay_event_handler on_event,
                  relay_eose_handler on_eose = {});

  /// Closes a subscription on every relay (["CLOSE", sub_id]). A callback
  /// already being dispatched on an I/O thread may still finish after this
  /// returns; no new one starts. errc::not_found if there is no such sub_id.
  error unsubscribe(const std::string& sub_id);

  // -- status --

  /// A consistent snapshot of every relay.
  relay_pool_status status() const;

  struct impl;

private:
  explicit relay_pool(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace ticktock::drivers
