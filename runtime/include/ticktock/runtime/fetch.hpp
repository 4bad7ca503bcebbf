#pragma once

// The outbound HTTP service's pure layer: the request an agent writes to
// http/new (or passes to ctx.fetch), its validation against the node's
// limits, the URL parts the policy gate and the executor need, the response
// or failure a fetch ends with, and the executor interface (the Beast client
// that does the real request lives in ticktock::drivers). docs/http-fetch.md
// describes the formats.
//
// Everything here is pure logic: no sockets, no threads, no storage. Fallible
// calls return ticktock::expected with errc::invalid_argument naming the
// field (or errc::message_too_large for input above a size limit) and never
// throw.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::fetch {

// -- URLs --------------------------------------------------------------------

/// An absolute http:// or https:// URL, split for connecting.
struct url {
  bool tls = false;          ///< https
  std::string host;          ///< lower case; an IPv6 literal without brackets
  std::string port;          ///< as written, else "80" / "443"
  std::string host_header;   ///< the Host header: host[:port] as written (brackets kept)
  std::string path;          ///< the encoded path, "" when none
  std::string target;        ///< the request target: path (or "/") plus "?query"
  bool has_userinfo = false;
  bool has_query = false;
  bool has_fragment = false;
};

/// Parses an absolute URL (RFC 3986) whose scheme is http or https (any
/// case) and that names a host. The fragment is not part of `target`.
/// Fails with invalid_argument saying what is wrong; never throws.
expected<url> parse_url(std::string_view text);

// -- requests ----------------------------------------------------------------

/// What a node allows fetch requests to ask for (service_options::http_limits).
struct limits {
  /// timeout_ms when a request names none [10 s], and the most it may ask [60 s].
  std::chrono::milliseconds default_timeout{10'000};
  std::chrono::milliseconds max_timeout{60'000};
  /// max_response_bytes when a request names none [1 MiB], and the most [8 MiB].
  std::size_t default_response_bytes = std::size_t{1} << 20;
  std::size_t max_response_bytes = std::size_t{8} << 20;
  /// The largest request body [1 MiB].
  std::size_t max_body_bytes = std::size_t{1} << 20;
};

/// The most request headers, and the longest URL, name and value.
inline constexpr std::size_t max_headers = 64;
inline constexpr std::size_t max_url_bytes = 8192;
inline constexpr std::size_t max_header_name_bytes = 256;
inline constexpr std::size_t max_header_value_bytes = 8192;

/// One fetch, as an agent asks for it.
struct request {
  std::string method = "GET";
  std::string url;  ///< as given (the fragment dropped)
  fetch::url parts;
  /// In order; names as given (HTTP compares them case-insensitively).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{10'000};
  std::size_t max_response_bytes = std::size_t{1} << 20;
  /// The request id of the tick that asked for the fetch (not part of the
  /// JSON): the executor sends it as X-Request-Id unless a header sets one.
  std::string request_id;
};

/// Parses and validates a fetch request: a JSON object with "url"
/// (required; absolute http/https, a host, no user info, at most 8 KiB),
/// "method" (GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS),
/// "headers" (an object of string values; at most 64; names are HTTP
/// tokens, values have no CR, LF, NUL or other control characters but tab;
/// Host, Content-Length, Transfer-Encoding, Connection, Upgrade, TE, Trailer,
/// Keep-Alive and Proxy-* are set by the executor and refused), "body" (a
/// UTF-8 string) or "body_base64" (bytes), at most lim.max_body_bytes,
/// "timeout_ms" (1..lim.max_timeout, default lim.default_timeout) and
/// "max_response_bytes" (1..lim.max_response_bytes, default
/// lim.default_response_bytes). Unknown fields and wrong types fail with
/// invalid_argument naming the field.
expected<request> parse_request(std::string_view json, const limits& lim = {});

/// The request as JSON in the format parse_request reads (every field
/// written; the body as "body", or "body_base64" when it is not UTF-8).
std::string to_json(const request& r);

// -- results -----------------------------------------------------------------

/// The answer a server gave, whatever its status: a 404 or a 302 is a
/// response too (redirects are not followed; Location is in the headers).
struct response {
  int status = 0;
  /// Names in lower case, in arrival order; repeated names kept.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// {"status","headers":{name: value},"body"} (a repeated header's values
/// joined with ", "); the body as "body_base64" instead when it is not UTF-8.
std::string to_json(const response& r);

/// The failure codes, as failure::code holds them.
namespace failure_code {
inline constexpr std::string_view timeout = "timeout";
inline constexpr std::string_view network_error = "network_error";
inline constexpr std::string_view response_too_large = "response_too_large";
inline constexpr std::string_view malformed_response = "malformed_response";
inline constexpr std::string_view bad_request = "bad_request";
inline constexpr std::string_view cancelled = "cancelled";
inline constexpr std::string_view unavailable = "unavailable";
/// Every address the host resolves to is private, loopback, link-local or
/// otherwise not public, and the node does not allow such fetches.
inline constexpr std::string_view address_not_allowed = "address_not_allowed";
}  // namespace failure_code

/// A fetch that got no (complete, acceptable) answer.
struct failure {
  std::string code;
  std::string message;
};

/// {"code","message"}
std::string to_json(const failure& f);

using outcome = std::variant<response, failure>;

/// Does fetches. run() is blocking and is called on a service worker thread;
/// implementations must allow concurrent run() calls. run() never throws.
class executor {
public:
  virtual ~executor();

  /// Does one request to its end: never follows redirects, never retries.
  /// Returns failure{"cancelled"} soon after `cancelled` becomes true,
  /// failure{"timeout"} when the whole exchange takes longer than
  /// r.timeout, failure{"response_too_large"} when the body (or the head)
  /// passes r.max_response_bytes (or 64 KiB).
  virtual outcome run(const request& r, const std::atomic<bool>& cancelled) = 0;
};

}  // namespace ticktock::fetch
