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
};

/// An executor for service_options::http_executor. Fails with
/// invalid_argument when ca_file cannot be loaded. The executor is
/// thread-safe: each run() opens its own connection on the calling thread
/// and closes it before returning.
expected<std::shared_ptr<fetch::executor>> make_http_fetch(http_fetch_options options = {});

}  // namespace ticktock::drivers
