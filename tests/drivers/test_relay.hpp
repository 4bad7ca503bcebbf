#pragma once

// A minimal NIP-01 relay for tests (Boost.Beast, one I/O thread, 127.0.0.1
// only), a listener that never answers, and helpers for test events and
// certificates. Beast stays in test_relay.cpp so that tests compile fast.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ticktock::test {

/// PEM text of a fresh test CA and of a server certificate it signed.
struct test_tls {
  std::string ca_cert_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
};

/// Generates, with OpenSSL's C API, an EC P-256 CA and a server certificate
/// whose subjectAltName lists dns_names and ips; both valid for one day.
/// Throws std::runtime_error when OpenSSL fails.
test_tls make_test_tls(const std::vector<std::string>& dns_names,
                       const std::vector<std::string>& ips);

/// An unsigned NIP-01 event: its id is the SHA-256 of the serialized
/// [0,pubkey,created_at,kind,tags,content]; "sig" is zeros.
struct test_event {
  std::string id;
  std::string json;
};

test_event make_event(int kind, const std::string& content, std::int64_t created_at = 1'700'000'000,
                      const std::string& pubkey = std::string(64, 'a'),
                      const std::vector<std::vector<std::string>>& tags = {});

struct test_relay_options {
  /// Serve wss:// with this certificate instead of ws://.
  std::optional<test_tls> tls;
};

/// A NIP-01 relay on 127.0.0.1 with an ephemeral port. It stores EVENTs
/// (OK true, or OK false while reject_events is set), answers REQ with the
/// matching stored events (filters: ids, authors, kinds, #<letter> tags,
/// since, until, limit), EOSE, then live events until CLOSE. Every method
/// is thread-safe and waits until the relay's I/O thread has done the work.
class test_relay {
public:
  explicit test_relay(test_relay_options options = {});
  ~test_relay();
  test_relay(const test_relay&) = delete;
  test_relay& operator=(const test_relay&) = delete;

  std::uint16_t port() const;
  /// "ws://host:port/" or "wss://host:port/".
  std::string url(const std::string& host = "127.0.0.1") const;

  /// Answers every following EVENT with ["OK", id, false, message]; an empty
  /// message accepts again.
  void reject_events(const std::string& message);
  /// Stores an event as if another client had published it, and sends it to
  /// the matching live subscriptions.
  void store(const std::string& event_json);
  /// Sends a frame as is to every open connection.
  void send_raw(const std::string& frame, bool binary = false);
  /// Closes every connection's socket at once (no close handshake).
  void drop_connections();
  /// The open connections handle the next frame they receive, then stop
  /// reading: they no longer answer pings, like a relay that hangs. Later
  /// connections are not affected.
  void pause_reading();
  /// Closes the listener and every connection; the port stays reserved for start().
  void stop();
  /// Listens again on the same port.
  void start();

  std::size_t open_connections() const;
  std::size_t accepted_connections() const;
  /// How many REQ / CLOSE frames arrived for a sub id, over all connections.
  std::size_t req_count(const std::string& sub_id) const;
  std::size_t close_count(const std::string& sub_id) const;
  /// How many EVENT frames arrived carrying this event id.
  std::size_t event_count(const std::string& event_id) const;
  /// Every stored event, as JSON, in the order stored.
  std::vector<std::string> stored_events() const;
  /// The TLS server name (SNI) of the last TLS handshake; empty if none.
  std::string last_server_name() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

/// Accepts TCP connections on 127.0.0.1 and never reads or writes a byte.
class silent_listener {
public:
  silent_listener();
  ~silent_listener();
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;

  std::uint16_t port() const;
  std::size_t accepted() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

}  // namespace ticktock::test
