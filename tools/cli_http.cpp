// Beast side of the CLI's HTTP client. Each operation is started
// asynchronously and run to completion on a private io_context, so that the
// tcp_stream's expiry gives every connect, write and read a deadline while
// the caller sees a plain blocking call.

#include "cli_http.hpp"

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace ticktock::cli {

namespace {

constexpr std::string_view user_agent = "ticktock-cli/0.1";
// Bodies larger than this are sent after the server's 100 Continue.
constexpr std::size_t expect_continue_above = 64 * 1024;

// Runs the io_context until the operation started on it completes.
beast::error_code run(asio::io_context& io, beast::error_code& ec) {
  io.restart();
  io.run();
  return ec;
}

std::string describe(const beast::error_code& ec) {
  if (ec == beast::error::timeout)
    return "timed out";
  if (ec == http::error::partial_message || ec == asio::error::eof)
    return "the server closed the connection";
  return ec.message();
}

// A connected stream with its io_context and read buffer.
struct connection {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;

  // Resolves and connects before `deadline`; returns why not on failure.
  std::optional<std::string> open(const server_address& a, http_client::clock::time_point deadline) {
    tcp::resolver resolver{io};
    beast::error_code ec;
    tcp::resolver::results_type results;
    resolver.async_resolve(a.host, a.port, [&](beast::error_code e, tcp::resolver::results_type r) {
      ec = e;
      results = std::move(r);
    });
    if (run(io, ec))
      return "cannot resolve " + a.host + ": " + describe(ec);
    stream.expires_at(deadline);
    stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    if (run(io, ec))
      return "cannot connect to " + a.host + ":" + a.port + ": " + describe(ec);
    return std::nullopt;
  }

  template <class Request>
  std::optional<std::string> send(Request& req, http_client::clock::time_point deadline) {
    beast::error_code ec;
    stream.expires_at(deadline);
    http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
    if (run(io, ec))
      return "cannot send the request: " + describe(ec);
    return std::nullopt;
  }

  void close() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
  }
};

http::request<http::string_body> make_request(const server_address& a, const std::string& token,
                                              const std::string& request_id,
                                              std::string_view method, std::string_view target,
                                              std::string body, const header_list& headers) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(a.base_path + std::string{target});
  req.version(11);
  // An IPv6 address is written in brackets (RFC 9110, 7.2; RFC 3986, 3.2.2).
  auto host = a.host.find(':') == std::string::npos ? a.host : "[" + a.host + "]";
  req.set(http::field::host, a.port == "80" ? host : host + ":" + a.port);
  req.set(http::field::user_agent, user_agent);
  if (!token.empty())
    req.set(http::field::authorization, "Bearer " + token);
  if (!request_id.empty())
    req.set("X-Request-Id", request_id);
  for (auto& [k, v] : headers)
    req.set(k, v);
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.body() = std::move(body);
    req.prepare_payload();
  }
  return req;
}

}  // namespace

// -- URLs --------------------------------------------------------------------

std::optional<server_address> parse_url(std::string_view url, std::string& why) {
  constexpr std::string_view scheme = "http://";
  if (std::any_of(url.begin(), url.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    why = "the URL has a space or a control character in it";
    return std::nullopt;
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    why = "the URL may not have a query or a fragment (got '" + std::string{url} + "')";
    return std::nullopt;
  }
  if (url.substr(0, scheme.size()) != scheme) {
    why = "the URL must start with http:// (got '" + std::string{url} + "')";
    return std::nullopt;
  }
  url.remove_prefix(scheme.size());
  auto slash = url.find('/');
  auto authority = url.substr(0, slash);
  server_address a;
  if (slash != std::string_view::npos) {
    a.base_path = std::string{url.substr(slash)};
    while (!a.base_path.empty() && a.base_path.back() == '/')
      a.base_path.pop_back();
  }
  if (authority.find('@') != std::string_view::npos) {
    why = "user info in the URL is not supported; use --token";
    return std::nullopt;
  }
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      why = "unterminated IPv6 address in the URL";
      return std::nullopt;
    }
    a.host = std::string{authority.substr(1, close - 1)};
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') {
      why = "garbage after the IPv6 address in the URL";
      return std::nullopt;
    }
  } else {
    auto colon = authority.rfind(':');
    a.host = std::string{authority.substr(0, colon)};
    authority = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
  }
  if (!authority.empty()) {
    auto port = authority.substr(1);
    if (port.empty() || port.size() > 5
        || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })
        || std::stoul(std::string{port}) > 65535) {
      why = "bad port in the URL";
      return std::nullopt;
    }
    a.port = std::string{port};
  }
  if (a.host.empty()) {
    why = "no host in the URL";
    return std::nullopt;
  }
  return a;
}

std::string url_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
        || c == '.' || c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// -- requests ----------------------------------------------------------------

http_client::http_client(server_address address, std::string token,
                         std::chrono::milliseconds timeout)
  : address_(std::move(address)), token_(std::move(token)), timeout_(timeout) {}

std::string http_client::url() const {
  auto host = address_.host.find(':') == std::string::npos ? address_.host : "[" + address_.host + "]";
  return "http://" + host + ":" + address_.port + address_.base_path;
}

http_result http_client::request(std::string_view method, std::string_view target,
                                 std::string body, const header_list& headers) const {
  http_result result;
  auto deadline = clock::now() + timeout_;
  connection c;
  if (auto why = c.open(address_, deadline)) {
    result.why = *why;
    return result;
  }
  auto req = make_request(address_, token_, request_id_, method, target, std::move(body), headers);
  req.keep_alive(false);
  // A large body waits for the server's go-ahead (RFC 9110, 10.1.1): a
  // server that refuses it (413 over --max-body, 401, ...) answers at once
  // and closes, where sending it all would end in a broken pipe before the
  // answer could be read.
  bool expect = req.body().size() > expect_continue_above;
  if (expect)
    req.set(http::field::expect, "100-continue");
  http::request_serializer<http::string_body> sr{req};
  beast::error_code ec;
  c.stream.expires_at(deadline);
  http::async_write_header(c.stream, sr, [&](beast::error_code e, std::size_t) { ec = e; });
  if (run(c.io, ec)) {
    result.why = "cannot send the request: " + describe(ec);
    return result;
  }
  std::optional<http::response_parser<http::string_body>> parser;
  auto fresh_parser = [&] {
    parser.emplace();
    parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  };
  fresh_parser();
  bool answered_early = false;
  if (expect) {
    // At most a second for it; a server that says nothing gets the body.
    bool readable = false;
    c.stream.socket().async_wait(tcp::socket::wait_read,
                                 [&](beast::error_code e) { readable = !e; });
    c.io.restart();
    c.io.run_for(std::chrono::seconds{1});
    if (!readable) {
      c.stream.socket().cancel();
      c.io.restart();
      c.io.run();
    } else {
      c.stream.expires_at(deadline);
      http::async_read_header(c.stream, c.buffer, *parser,
                              [&](beast::error_code e, std::size_t) { ec = e; });
      if (run(c.io, ec)) {
        result.why = "no complete answer: " + describe(ec);
        return result;
      }
      answered_early = parser->get().result_int() / 100 != 1;  // the answer, before the body
      if (!answered_early)
        fresh_parser();  // that was the 100 Continue
    }
  }
  if (!answered_early) {
    c.stream.expires_at(deadline);
    http::async_write(c.stream, sr, [&](beast::error_code e, std::size_t) { ec = e; });
    if (run(c.io, ec)) {
      result.why = "cannot send the request: " + describe(ec);
      return result;
    }
  }
  for (;;) {
    c.stream.expires_at(deadline);
    http::async_read(c.stream, c.buffer, *parser, [&](beast::error_code e, std::size_t) { ec = e; });
    if (run(c.io, ec)) {
      result.why = "no complete answer: " + describe(ec);
      return result;
    }
    if (parser->get().result_int() / 100 != 1)
      break;
    fresh_parser();  // an interim answer (a late 100 Continue): the answer follows
  }
  auto res = parser->release();
  http_answer a;
  a.status = res.result_int();
  a.content_type = std::string{res[http::field::content_type]};
  a.body = std::move(res.body());
  result.answer = std::move(a);
  c.close();
  return result;
}

// -- server-sent events ------------------------------------------------------

stream_result http_client::stream(std::string_view target, const header_list& headers,
                                  clock::time_point deadline, std::chrono::milliseconds idle,
                                  const std::function<bool(const sse_event&)>& on_event,
                                  const std::function<bool(std::string_view)>& on_open) const {
  stream_result result;
  auto expiry = [&] { return std::min(deadline, clock::now() + idle); };
  // A deadline that passes while waiting is the caller's end, not a failure.
  auto timed_out = [&](const beast::error_code& ec) {
    return ec == beast::error::timeout && clock::now() >= deadline;
  };
  connection c;
  if (auto why = c.open(address_, std::min(deadline, clock::now() + timeout_))) {
    result.end = clock::now() >= deadline ? stream_end::deadline : stream_end::refused;
    result.why = *why;
    return result;
  }
  auto req = make_request(address_, token_, request_id_, "GET", target, {}, headers);
  req.set(http::field::accept, "text/event-stream");
  req.set(http::field::cache_control, "no-cache");
  if (auto why = c.send(req, std::min(deadline, clock::now() + timeout_))) {
    result.end = clock::now() >= deadline ? stream_end::deadline : stream_end::dropped;
    result.why = *why;
    return result;
  }
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  beast::error_code ec;
  c.stream.expires_at(std::min(deadline, clock::now() + timeout_));
  http::async_read_header(c.stream, c.buffer, parser,
                          [&](beast::error_code e, std::size_t) { ec = e; });
  if (run(c.io, ec)) {
    result.end = timed_out(ec) ? stream_end::deadline : stream_end::dropped;
    result.why = "no answer: " + describe(ec);
    return result;
  }
  bool ok = parser.get().result_int() == 200;
  result.opened = ok;
  if (ok && on_open && !on_open(parser.get()["X-Agent-Created"])) {
    result.end = stream_end::stopped;
    c.close();
    return result;
  }
  std::string error_body;
  sse_parser sse;
  char chunk[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    c.stream.expires_at(ok ? expiry() : std::min(deadline, clock::now() + timeout_));
    // read_some: hand over each chunk as it arrives, not when the buffer fills.
    http::async_read_some(c.stream, c.buffer, parser,
                          [&](beast::error_code e, std::size_t) { ec = e; });
    run(c.io, ec);
    if (ec == http::error::need_buffer)
      ec = {};
    auto n = sizeof chunk - parser.get().body().size;
    if (ok) {
      if (!sse.feed(std::string_view{chunk, n}, on_event)) {
        result.end = stream_end::deadline;
        c.close();
        return result;
      }
    } else {
      error_body.append(chunk, n);
    }
    if (ec) {
      result.end = timed_out(ec) ? stream_end::deadline : stream_end::dropped;
      result.why = ec == beast::error::timeout ? "nothing received for "
                                                   + std::to_string(idle.count() / 1000) + " s"
                                               : describe(ec);
      if (!ok && result.end == stream_end::dropped)
        result.why = "incomplete error answer: " + result.why;
      return result;
    }
  }
  if (!ok) {
    result.end = stream_end::http_error;
    http_answer a;
    a.status = parser.get().result_int();
    a.content_type = std::string{parser.get()[http::field::content_type]};
    a.body = std::move(error_body);
    result.answer = std::move(a);
  } else {
    result.end = stream_end::dropped;
    result.why = "the server ended the stream";
  }
  c.close();
  return result;
}

// -- SSE parsing -------------------------------------------------------------

bool sse_parser::feed(std::string_view bytes,
                      const std::function<bool(const sse_event&)>& on_event) {
  pending_.append(bytes);
  std::size_t start = 0;
  for (;;) {
    auto nl = pending_.find('\n', start);
    if (nl == std::string::npos)
      break;
    auto l = std::string_view{pending_}.substr(start, nl - start);
    start = nl + 1;
    if (!line(l, on_event)) {
      pending_.erase(0, start);
      return false;
    }
  }
  pending_.erase(0, start);
  return true;
}

bool sse_parser::line(std::string_view l, const std::function<bool(const sse_event&)>& on_event) {
  if (l.empty()) {
    if (!has_field_)
      return true;
    auto ev = std::move(current_);
    current_ = {};
    has_field_ = false;
    has_data_ = false;
    return on_event(ev);
  }
  if (l.front() == ':')
    return true;  // a comment, e.g. the server's keep-alive
  auto colon = l.find(':');
  auto field = l.substr(0, colon);
  auto value = colon == std::string_view::npos ? std::string_view{} : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ')
    value.remove_prefix(1);
  if (field == "data") {
    if (has_data_)
      current_.data.push_back('\n');
    current_.data.append(value);
    has_data_ = true;
  } else if (field == "id") {
    current_.id = std::string{value};
  } else if (field == "event") {
    current_.event = std::string{value};
  } else {
    return true;  // "retry" and unknown fields
  }
  has_field_ = true;
  return true;
}

}  // namespace ticktock::cli
