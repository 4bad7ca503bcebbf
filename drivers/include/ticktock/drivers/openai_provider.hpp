#pragma once

// A compute provider for OpenAI-compatible APIs: chat completions (streaming
// and not) and embeddings, over HTTP or HTTPS (Boost.Beast + OpenSSL).
// docs/compute.md describes the configuration, retries and failure codes.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "ticktock/runtime/compute.hpp"
#include "ticktock/runtime/error.hpp"

namespace ticktock::drivers {

struct openai_options {
  /// Where the API lives, e.g. "https://api.openai.com/v1" or
  /// "http://127.0.0.1:8080/v1"; requests go to {base_url}/chat/completions
  /// and {base_url}/embeddings.
  std::string base_url = "https://api.openai.com/v1";
  /// Sent as "Authorization: Bearer <key>" when not empty. Never logged and
  /// never part of a failure message.
  std::string api_key;
  /// The name requests use in their "provider" field.
  std::string name = "openai";
  /// Per attempt: bounds connecting, the TLS handshake, sending the request
  /// and receiving the whole answer; for a streamed answer, each wait for the
  /// next piece of the stream instead of the whole answer.
  std::chrono::milliseconds timeout{60'000};
  /// Attempts after the first one for 429, 5xx, timeouts and connection
  /// failures. A streamed answer is not retried once a piece was delivered.
  unsigned max_retries = 3;
  /// The first retry waits about backoff, each later one twice as long as
  /// the one before, with random jitter (between half and all of it), never
  /// longer than max_backoff. A 429's Retry-After (seconds) replaces it,
  /// capped at max_backoff too.
  std::chrono::milliseconds backoff{200};
  std::chrono::milliseconds max_backoff{10'000};
  /// A larger answer body (or stream) fails with response_too_large.
  std::size_t max_response_bytes = 8u << 20;
  /// HTTPS: verify the server against the system CAs and, when set, the
  /// certificates in this PEM file.
  std::string ca_file;
  /// Called, when set, with each wait before a retry, just before waiting;
  /// on the thread that calls run(). For tests and logs.
  std::function<void(std::chrono::milliseconds)> on_retry_wait;

  /// The defaults, with base_url from OPENAI_BASE_URL and api_key from
  /// OPENAI_API_KEY when those are set and not empty.
  static openai_options from_env();
};

/// The OpenAI-compatible client. Each run() opens its own connection on the
/// calling thread and closes it before returning, so concurrent run() calls
/// from several threads are safe. run() never throws.
class openai_provider : public compute::provider {
public:
  /// Checks the options: base_url must be an absolute http:// or https://
  /// URL with a host, timeout and backoff positive, ca_file readable. Fails
  /// with invalid_argument naming the option.
  static expected<std::unique_ptr<openai_provider>> make(openai_options options);

  ~openai_provider() override;

  std::string_view name() const override;
  compute::outcome run(const compute::request& r,
                       const std::function<void(std::string_view delta)>& on_delta,
                       const std::atomic<bool>& cancelled) override;

  struct impl;

private:
  explicit openai_provider(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace ticktock::drivers
