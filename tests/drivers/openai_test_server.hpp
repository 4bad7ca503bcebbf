#pragma once

// A small OpenAI-compatible HTTP server for tests (Boost.Beast, one I/O
// thread, 127.0.0.1 only): POST /v1/chat/completions (streamed as SSE or
// not) and POST /v1/embeddings, with deterministic answers. It records every
// request it gets and can be scripted, request by request, to misbehave.
// Beast stays in openai_test_server.cpp so that tests compile fast.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "test_relay.hpp"  // test_tls, make_test_tls

namespace ticktock::test {

/// What the server does with one request. The default answers normally.
struct openai_behaviour {
  enum class kind {
    normal,          ///< the deterministic answer (after `delay`, if any)
    reply,           ///< status + body + headers as given
    malformed_json,  ///< 200 with a body that is not JSON
    truncated,       ///< Content-Length larger than the body sent, then close
    stream_cut,      ///< a streamed answer cut (connection closed) before [DONE]
    stream_no_done,  ///< a streamed answer that ends cleanly without [DONE]
    huge,            ///< a 200 body of `size` bytes, chunked, no Content-Length
    huge_declared,   ///< Content-Length: size, then bytes until the client leaves
    close,           ///< close the connection without answering
  };
  kind what = kind::normal;
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t size = 0;
  /// Wait this long before answering (any kind).
  std::chrono::milliseconds delay{0};

  static openai_behaviour answer() { return {}; }
  static openai_behaviour respond(int status, std::string body,
                                  std::vector<std::pair<std::string, std::string>> headers = {});
  /// {"error":{"message":message,"type":"invalid_request_error"}} with status.
  static openai_behaviour openai_error(int status, const std::string& message,
                                       std::vector<std::pair<std::string, std::string>> headers = {});
  /// 429 with Retry-After: seconds.
  static openai_behaviour rate_limited(int retry_after_seconds);
  static openai_behaviour of(kind k, std::size_t size = 0);
  /// The normal answer, after a delay.
  static openai_behaviour delayed(std::chrono::milliseconds d);
};

/// One request as the server received it. Header names are lower case.
struct recorded_request {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;
  std::string body;
};

struct openai_test_server_options {
  /// Serve HTTPS with this certificate instead of HTTP.
  std::optional<test_tls> tls;
  /// 0: an ephemeral port.
  std::uint16_t port = 0;
};

/// The deterministic answers:
/// - chat: content "Echo: " + the last user message's content; streamed as
///   one SSE chunk per word (each with the space before it), a chunk with
///   finish_reason "stop", the usage chunk when stream_options.include_usage
///   is set, then data: [DONE]. usage: prompt_tokens = 5 per message + 1 per
///   4 bytes of content (rounded up), completion_tokens = words in the answer.
/// - embeddings: per input, 8 numbers from its FNV-1a hash;
///   usage.prompt_tokens = 1 per 4 bytes of input (rounded up).
/// - model "test-error-500" answers 500, "test-error-400" a 400 OpenAI error,
///   "test-rate-limited" 429 with Retry-After: 0, whatever is queued.
/// - anything else (other paths, methods, bad JSON): an OpenAI-style error.
/// Every method is thread-safe.
class openai_test_server {
public:
  explicit openai_test_server(openai_test_server_options options = {});
  ~openai_test_server();
  openai_test_server(const openai_test_server&) = delete;
  openai_test_server& operator=(const openai_test_server&) = delete;

  std::uint16_t port() const;
  /// "http://host:port/v1" or "https://host:port/v1".
  std::string base_url(const std::string& host = "127.0.0.1") const;

  /// Queues a behaviour; each request takes the oldest queued one, and
  /// requests find the queue empty answer normally.
  void push(openai_behaviour b);
  /// Every request received so far, oldest first.
  std::vector<recorded_request> requests() const;
  std::size_t request_count() const;
  /// Connections accepted (including ones that sent no complete request).
  std::size_t accepted_connections() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

}  // namespace ticktock::test
