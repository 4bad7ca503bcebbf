#pragma once

// The ticktock CLI's HTTP client: one synchronous request per connection, and
// a server-sent-events reader, over plain HTTP. Beast stays in cli_http.cpp.
// Nothing here throws: transport failures come back as values.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ticktock::cli {

/// Where the server is: from a URL like http://127.0.0.1:7070[/prefix].
struct server_address {
  std::string host;
  std::string port = "80";
  std::string base_path;  ///< without a trailing slash; "" for none
};

/// Parses an http:// URL; nullopt with `why` set when it is not one.
std::optional<server_address> parse_url(std::string_view url, std::string& why);

/// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
std::string url_encode(std::string_view s);

using header_list = std::vector<std::pair<std::string, std::string>>;

/// A complete HTTP answer, whatever its status.
struct http_answer {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

/// The result of one request: an answer, or the transport failure that
/// prevented one (`why` says what: cannot resolve, refused, timed out, ...).
struct http_result {
  std::optional<http_answer> answer;
  std::string why;
};

/// One server-sent event. `id` is empty when the event had none.
struct sse_event {
  std::string id;
  std::string event;
  std::string data;
};

/// How a stream() call ended.
enum class stream_end {
  deadline,      ///< the deadline passed (or on_event asked to stop)
  dropped,       ///< the connection broke or the server ended the stream
  refused,       ///< no connection could be made
  http_error,    ///< the server answered something other than 200
  stopped,       ///< on_open declined the stream
};

struct stream_result {
  stream_end end = stream_end::dropped;
  /// The server answered 200 and the stream began: a drop after this is a
  /// drop of a working stream, one before it (connected, but no answer
  /// before the timeout) means the server could not be reached.
  bool opened = false;
  std::optional<http_answer> answer;  ///< set for http_error
  std::string why;
};

class http_client {
public:
  using clock = std::chrono::steady_clock;

  /// `token` goes out as `Authorization: Bearer` when not empty; `timeout`
  /// bounds each request from connect to the last byte of the answer.
  http_client(server_address address, std::string token, std::chrono::milliseconds timeout);

  /// Sends one request (target is the path and query below base_path) and
  /// reads the whole answer. Blocks up to the timeout.
  http_result request(std::string_view method, std::string_view target, std::string body = {},
                      const header_list& headers = {}) const;

  /// Opens an SSE stream (Accept: text/event-stream) and calls on_event for
  /// each event until the deadline, the connection drops (also when nothing,
  /// not even a keep-alive comment, arrives for `idle`), or on_event returns
  /// false (reported as stream_end::deadline). on_open, if set, is called
  /// once the server has answered 200, before the first event, with the
  /// answer's X-Agent-Created (which agent of the id the stream follows);
  /// if it returns false the stream is not read (stream_end::stopped).
  stream_result stream(std::string_view target, const header_list& headers,
                       clock::time_point deadline, std::chrono::milliseconds idle,
                       const std::function<bool(const sse_event&)>& on_event,
                       const std::function<bool(std::string_view)>& on_open = {}) const;

  /// "http://host:port" plus the base path, for messages.
  std::string url() const;

  /// `X-Request-Id` of every request from now on (empty: the server's own).
  void set_request_id(std::string id) { request_id_ = std::move(id); }

private:
  server_address address_;
  std::string token_;
  std::string request_id_;
  std::chrono::milliseconds timeout_;
};

/// Splits SSE bytes into events; feed it the stream in pieces of any size.
class sse_parser {
public:
  /// Parses what `bytes` completes and calls on_event per finished event;
  /// stops early (returning false) when on_event returns false.
  bool feed(std::string_view bytes, const std::function<bool(const sse_event&)>& on_event);

private:
  bool line(std::string_view l, const std::function<bool(const sse_event&)>& on_event);

  std::string pending_;
  sse_event current_;
  bool has_field_ = false;
  bool has_data_ = false;
};

}  // namespace ticktock::cli
