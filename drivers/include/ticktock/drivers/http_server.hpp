#pragma once

// The HTTP driver: control plane under /v1, the agent filesystem under
// /v1/agents/{id}/fs/..., agent-handled routes under /a/{id}/..., /healthz
// and /metrics. Boost.Beast stays inside the driver's .cpp files.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ticktock/runtime/error.hpp"

namespace ticktock {
class node;
}

namespace ticktock::drivers {

class nostr_driver;
class io_loops;

struct http_options {
  /// Address to bind [127.0.0.1].
  std::string host = "127.0.0.1";
  /// Port to bind; 0 picks a free one (see http_server::port) [7070].
  std::uint16_t port = 7070;
  /// Token required by every route but /healthz and /metrics. Must not be empty.
  std::string admin_token;
  /// Ed25519 secret key (64 bytes, libsodium layout) that signs capability
  /// tokens; empty: an ephemeral key, so tokens die with the process.
  std::string node_key;
  /// Largest request body; larger ones get 413 [1 MiB].
  std::size_t max_body_bytes = std::size_t{1} << 20;
  /// Largest body of an admin's POST /v1/agents/import (an agent bundle,
  /// which grows with its history); larger ones get 413 [256 MiB].
  std::size_t max_bundle_bytes = std::size_t{256} << 20;
  /// Largest request head; larger ones get 431 [16 KiB].
  std::size_t max_header_bytes = std::size_t{16} << 10;
  /// A request must arrive completely within this; slow clients are cut [10 s].
  std::chrono::milliseconds read_timeout{10'000};
  /// A response or WebSocket frame not written within this, or an SSE
  /// stream's write that makes no progress for this long, cuts the
  /// connection [30 s].
  std::chrono::milliseconds write_timeout{30'000};
  /// Connections beyond this are refused with 503 [1024].
  std::size_t max_connections = 1024;
  /// How long /a/{id}/... waits for the agent's committed reply [30 s].
  std::chrono::milliseconds reply_timeout{30'000};
  /// I/O threads [2].
  std::size_t threads = 2;
  /// Runs the connections on these loops, which must be the node's
  /// scheduler (node_options::configure_caf), instead of `threads` threads
  /// of the server's own [nullptr].
  std::shared_ptr<io_loops> loops;
  /// Origins ("https://ui.example:8443", or "*" for any) whose pages may call
  /// the API and the probes from a browser (CORS): their preflights get 204
  /// and their answers Access-Control-Allow-Origin. Never credentials: a page
  /// sends the token as Authorization: Bearer. /a/{id}/... is the agent's own
  /// to answer, preflights included. Empty: none [].
  std::vector<std::string> cors_origins;
  /// Serves each agent's nostr/ files when set (it must outlive the server).
  nostr_driver* nostr = nullptr;
  /// One line per request (with a request id); nullptr: no logging.
  std::function<void(const std::string&)> log;
};

/// Checks http_options::cors_origins: each is "*" or an origin as browsers
/// send it, http:// or https:// then a host and an optional port, no path.
error check_cors_origins(const std::vector<std::string>& origins);

/// A running HTTP server. Thread-safe; stop() (or the destructor) closes the
/// listener and every connection and waits for the I/O threads.
class http_server {
public:
  static expected<std::unique_ptr<http_server>> start(node& n, http_options options);
  ~http_server();

  /// The bound port (useful with options.port = 0).
  std::uint16_t port() const noexcept;
  /// The first half of a graceful stop: the listener and idle connections
  /// close, streams end, and requests read from now on get 503
  /// SHUTTING_DOWN, but a request waiting for its agent's tick still gets
  /// its reply. Then node::drain lets the running ticks commit (and
  /// answer), and stop(true) answers the requests still waiting 503, with
  /// `details.applied` false for one whose trigger never ran (true for one
  /// whose tick ran and deferred its reply; null without a completed drain:
  /// it may still run).
  void stop_accepting();
  void stop(bool drained = false);

  struct impl;

private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace ticktock::drivers
