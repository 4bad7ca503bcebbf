#pragma once

// The outbound HTTP executor of the http service (ctx.fetch, http/new): does
// the real request over HTTP or HTTPS with the shared Beast + OpenSSL client
// (the one the OpenAI-compatible provider uses). One request per connection,
// no redirects followed, no retries. docs/http-fetch.md describes it.

#include <memory>
#include <string>

#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/fetch.hpp"

namespace ticktock::drivers {

struct http_fetch_options {
  /// HTTPS: verify servers against the system CAs and, when set, the
  /// certificates in this PEM file.
  std::string ca_file;
  /// Sent as User-Agent unless the request sets one ["ticktock"].
  std::string user_agent = "ticktock";
  /// False: connect only to public unicast addresses. The check is made on
  /// every address the host resolves to (so a name that resolves, or is
  /// rebound, to a private address is caught too) and only allowed ones are
  /// connected to; when none is, the fetch fails with address_not_allowed
  /// without a connection attempt. Refused: IPv4 0/8, 10/8, 100.64/10,
  /// 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.168/16, 198.18/15, 224/4
  /// and 240/4 (broadcast included); IPv6 ::, ::1, fc00::/7, fe80::/10,
  /// fec0::/10, ff00::/8, and IPv4-mapped, IPv4-compatible and 64:ff9b::/96
  /// addresses judged by their IPv4 address. True: any address
  /// (ticktockd --http-fetch-private).
  bool allow_private = false;
};

/// An executor for service_options::http_executor. Fails with
/// invalid_argument when ca_file cannot be loaded. The executor is
/// thread-safe: each run() opens its own connection on the calling thread
/// and closes it before returning.
expected<std::shared_ptr<fetch::executor>> make_http_fetch(http_fetch_options options = {});

}  // namespace ticktock::drivers
