#pragma once

// The outbound HTTP/1.1 client shared by the OpenAI-compatible compute
// provider and the http fetch executor: one request per connection, HTTP or
// HTTPS (Beast + OpenSSL, the peer verified against the system CAs and an
// optional CA file), a deadline over the whole exchange (or over each read of
// a streamed body), a cap on the answer's size, and cancellation. Beast stays
// in http_client.cpp: this header has none of it.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/fetch.hpp"

namespace ticktock::drivers::detail {

class http_client {
public:
  /// A client whose HTTPS connections trust the system CAs and, when not
  /// empty, the certificates in `ca_file` (PEM), TLS 1.2 at least. Fails
  /// with invalid_argument when ca_file cannot be loaded.
  static expected<std::shared_ptr<http_client>> make(const std::string& ca_file);
  ~http_client();

  struct request {
    std::string method = "GET";
    std::string target = "/";
    /// Sent as given; Host is set from the URL, Content-Length from body
    /// (unless the method is GET or HEAD with no body).
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
  };

  struct head {
    int status = 0;
    /// Names in lower case, in arrival order.
    std::vector<std::pair<std::string, std::string>> headers;
    std::string_view get(std::string_view lower_name) const;
  };

  enum class piece_result { more, done, fail };

  struct options {
    /// Bounds resolving, connecting, the TLS handshake, sending and receiving
    /// the whole answer; for a streamed body, each wait for its next piece.
    std::chrono::milliseconds timeout{60'000};
    /// A larger body fails with response_too_large.
    std::size_t max_response_bytes = 8u << 20;
    /// Called when the head arrived: true streams the body to on_piece
    /// (each read under its own timeout) instead of collecting it.
    std::function<bool(const head&)> stream_body;
    /// Each piece of a streamed body; done stops reading (the answer is
    /// complete), fail stops with code malformed_response.
    std::function<piece_result(std::string_view)> on_piece;
    /// The HEAD method: the answer has no body whatever its headers say.
    bool head_request = false;
    /// Connect only to public unicast addresses (address_filter.hpp): every
    /// resolved endpoint is checked and a refused one never connected to;
    /// when all are refused the exchange fails with address_not_allowed.
    /// Off for the admin-configured OpenAI provider (often a local server),
    /// on for agents' fetches unless the node allows private addresses.
    bool public_only = false;
  };

  struct result {
    /// Empty when an answer (head, and the body up to its end, its cut or
    /// on_piece's done) arrived; else timeout | network_error |
    /// response_too_large | malformed_response | cancelled |
    /// address_not_allowed (public_only), with `message`.
    std::string code;
    std::string message;
    head h;  ///< status 0 when no head arrived
    std::string body;  ///< collected (not streamed) body
    /// The body stopped before its announced end (connection closed).
    bool truncated = false;
    bool streamed = false;
  };

  /// Does one exchange with `to` on the calling thread, which it drives in
  /// short slices so that `cancelled` is seen within about 20 ms. Never
  /// throws; thread-safe (each call has its own connection).
  result exchange(const fetch::url& to, const request& req, const options& o,
                  const std::atomic<bool>& cancelled) const;

  struct impl;

private:
  explicit http_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Printable, bounded text of an untrusted answer for a failure message.
std::string excerpt(std::string_view s, std::size_t n = 300);

}  // namespace ticktock::drivers::detail
