// The OpenAI-compatible compute provider. run() does each attempt on a
// private io_context that the calling thread drives in short slices, so that
// it can close the connection as soon as the job is cancelled; Beast's
// tcp_stream deadlines bound every network wait. An attempt reads the answer
// through a buffer_body parser, piece by piece: a streamed answer (SSE) is
// parsed as it arrives, anything else is collected up to max_response_bytes.

#include "ticktock/drivers/openai_provider.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/src.hpp>  // Boost.URL header-only: Debian packages no libboost_url for 1.81's -dev

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using steady_clock = std::chrono::steady_clock;

namespace ticktock::drivers {

using compute::failure;
using compute::make_failure;
using compute::outcome;
namespace fc = compute::failure_code;

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
// How often run() looks at the cancelled flag while an attempt is under way.
constexpr std::chrono::milliseconds cancel_poll{20};

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Printable, bounded text of an untrusted answer for a failure message.
std::string excerpt(std::string_view s, std::size_t n = 300) {
  std::string out;
  for (char c : s.substr(0, n))
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  if (s.size() > n)
    out += "...";
  return out;
}

struct target {
  bool tls = false;
  std::string host;       // for connecting, SNI and the certificate check (no brackets)
  std::string port;
  std::string host_header;
  std::string prefix;     // the base URL's path, without a trailing '/'
};

// What one attempt ended with.
struct attempt {
  std::optional<compute::result> ok;
  failure fail;
  std::optional<std::chrono::milliseconds> retry_after;
  bool delivered = false;  // some stream piece reached on_delta
  bool estimate_usage = false;  // a stream without a usage chunk
};

attempt failed(std::string_view code, std::string message, int status = 0) {
  attempt a;
  a.fail = make_failure(code, std::move(message), status);
  return a;
}

// -- answers -----------------------------------------------------------------

std::string_view sv(const json::string& s) { return {s.data(), s.size()}; }

// A token count field: a non-negative integer.
bool read_count(const json::object& o, std::string_view key, std::uint64_t& out) {
  auto* v = o.if_contains(key);
  if (!v)
    return false;
  if (v->is_uint64()) {
    out = v->as_uint64();
    return true;
  }
  if (v->is_int64() && v->as_int64() >= 0) {
    out = static_cast<std::uint64_t>(v->as_int64());
    return true;
  }
  return false;
}

// Reads {"prompt_tokens","completion_tokens"}; completion_tokens may be absent
// (embeddings).
bool read_usage(const json::value& v, compute::usage& u) {
  if (!v.is_object())
    return false;
  auto& o = v.as_object();
  if (!read_count(o, "prompt_tokens", u.prompt_tokens))
    return false;
  if (o.contains("completion_tokens") && !read_count(o, "completion_tokens", u.completion_tokens))
    return false;
  return true;
}

std::optional<json::value> parse_json(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(json::string_view{text.data(), text.size()}, ec);
  if (ec)
    return std::nullopt;
  return v;
}

// The provider's own error message: {"error":{"message":...}} or the body.
std::string provider_message(std::string_view body) {
  if (auto v = parse_json(body); v && v->is_object())
    if (auto* e = v->as_object().if_contains("error")) {
      if (e->is_object())
        if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
          return excerpt(sv(m->as_string()), 1000);
      if (e->is_string())
        return excerpt(sv(e->as_string()), 1000);
    }
  return body.empty() ? std::string{"(empty body)"} : excerpt(body);
}

attempt malformed(std::string why) {
  return failed(fc::malformed_response, "malformed answer from the provider: " + why, 200);
}

attempt read_chat(std::string_view body) {
  auto v = parse_json(body);
  if (!v)
    return malformed("not valid JSON: " + excerpt(body, 100));
  if (!v->is_object())
    return malformed("not a JSON object");
  auto& o = v->as_object();
  auto* choices = o.if_contains("choices");
  if (!choices || !choices->is_array() || choices->as_array().empty()
      || !choices->as_array()[0].is_object())
    return malformed("choices[0] missing");
  auto& c0 = choices->as_array()[0].as_object();
  auto* msg = c0.if_contains("message");
  if (!msg || !msg->is_object())
    return malformed("choices[0].message missing");
  compute::result r;
  auto* content = msg->as_object().if_contains("content");
  if (!content || !(content->is_string() || content->is_null()))
    return malformed("choices[0].message.content missing or not a string");
  if (content->is_string())
    r.content = std::string{sv(content->as_string())};
  if (auto* f = c0.if_contains("finish_reason"); f && f->is_string())
    r.finish_reason = std::string{sv(f->as_string())};
  auto* u = o.if_contains("usage");
  if (!u || !read_usage(*u, r.used))
    return malformed("usage missing or not token counts");
  if (auto* m = o.if_contains("model"); m && m->is_string())
    r.model = std::string{sv(m->as_string())};
  attempt a;
  a.ok = std::move(r);
  return a;
}

attempt read_embeddings(std::string_view body, std::size_t inputs) {
  auto v = parse_json(body);
  if (!v)
    return malformed("not valid JSON: " + excerpt(body, 100));
  if (!v->is_object())
    return malformed("not a JSON object");
  auto& o = v->as_object();
  auto* data = o.if_contains("data");
  if (!data || !data->is_array())
    return malformed("data missing");
  auto& arr = data->as_array();
  if (arr.size() != inputs)
    return malformed(std::to_string(arr.size()) + " embeddings for " + std::to_string(inputs)
                     + " inputs");
  compute::result r;
  r.embeddings.resize(inputs);
  std::vector<bool> seen(inputs);
  for (std::size_t i = 0; i < arr.size(); ++i) {
    auto where = "data[" + std::to_string(i) + "]";
    if (!arr[i].is_object())
      return malformed(where + " not an object");
    auto& item = arr[i].as_object();
    std::size_t index = i;
    if (auto* ix = item.if_contains("index")) {
      if (!ix->is_int64() || ix->as_int64() < 0 || static_cast<std::uint64_t>(ix->as_int64()) >= inputs)
        return malformed(where + ".index out of range");
      index = static_cast<std::size_t>(ix->as_int64());
    }
    if (seen[index])
      return malformed(where + ".index repeats an earlier one");
    seen[index] = true;
    auto* e = item.if_contains("embedding");
    if (!e || !e->is_array())
      return malformed(where + ".embedding missing");
    auto& vec = r.embeddings[index];
    for (auto& x : e->as_array()) {
      if (!x.is_number())
        return malformed(where + ".embedding has a value that is not a number");
      vec.push_back(x.to_number<double>());
    }
  }
  auto* u = o.if_contains("usage");
  if (!u || !read_usage(*u, r.used))
    return malformed("usage missing or not token counts");
  if (auto* m = o.if_contains("model"); m && m->is_string())
    r.model = std::string{sv(m->as_string())};
  attempt a;
  a.ok = std::move(r);
  return a;
}

// Server-sent events of a streamed chat completion: "data: {json}" lines,
// events separated by blank lines, "data: [DONE]" at the end.
class sse_reader {
public:
  explicit sse_reader(const std::function<void(std::string_view)>& on_delta) : on_delta_(on_delta) {}

  // Feeds bytes; returns a failure message when the stream is malformed.
  std::optional<std::string> feed(std::string_view bytes) {
    pending_.append(bytes);
    std::size_t start = 0;
    for (;;) {
      auto nl = pending_.find('\n', start);
      if (nl == std::string::npos)
        break;
      std::string_view line{pending_.data() + start, nl - start};
      start = nl + 1;
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      if (auto err = on_line(line)) {
        pending_.clear();
        return err;
      }
      if (done_)
        break;
    }
    pending_.erase(0, start);
    return std::nullopt;
  }

  bool done() const { return done_; }
  bool delivered() const { return delivered_; }
  compute::result& result() { return result_; }
  bool has_usage() const { return has_usage_; }

private:
  std::optional<std::string> on_line(std::string_view line) {
    if (line.empty())
      return dispatch();
    if (line.front() == ':')
      return std::nullopt;  // a comment
    if (line.substr(0, 5) == "data:") {
      auto value = line.substr(5);
      if (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      if (!data_.empty())
        data_ += '\n';
      data_.append(value);
    }
    return std::nullopt;  // event:, id:, retry: are of no use here
  }

  std::optional<std::string> dispatch() {
    if (data_.empty())
      return std::nullopt;
    std::string data = std::move(data_);
    data_.clear();
    if (data == "[DONE]") {
      done_ = true;
      return std::nullopt;
    }
    auto v = parse_json(data);
    if (!v || !v->is_object())
      return "a stream event is not a JSON object: " + excerpt(data, 100);
    auto& o = v->as_object();
    if (o.contains("error"))
      return "the provider reported an error in the stream: " + provider_message(data);
    if (auto* m = o.if_contains("model"); m && m->is_string())
      result_.model = std::string{sv(m->as_string())};
    if (auto* u = o.if_contains("usage"); u && !u->is_null()) {
      if (!read_usage(*u, result_.used))
        return std::string{"a stream event's usage is not token counts"};
      has_usage_ = true;
    }
    auto* choices = o.if_contains("choices");
    if (!choices)
      return std::nullopt;
    if (!choices->is_array())
      return std::string{"a stream event's choices is not an array"};
    if (choices->as_array().empty())
      return std::nullopt;  // the usage chunk
    auto& c0 = choices->as_array()[0];
    if (!c0.is_object())
      return std::string{"a stream event's choices[0] is not an object"};
    if (auto* f = c0.as_object().if_contains("finish_reason"); f && f->is_string())
      result_.finish_reason = std::string{sv(f->as_string())};
    auto* delta = c0.as_object().if_contains("delta");
    if (!delta)
      return std::nullopt;
    if (!delta->is_object())
      return std::string{"a stream event's choices[0].delta is not an object"};
    auto* content = delta->as_object().if_contains("content");
    if (!content || content->is_null())
      return std::nullopt;
    if (!content->is_string())
      return std::string{"a stream event's choices[0].delta.content is not a string"};
    auto piece = sv(content->as_string());
    if (piece.empty())
      return std::nullopt;
    result_.content.append(piece);
    delivered_ = true;
    if (on_delta_)
      on_delta_(piece);
    return std::nullopt;
  }

  const std::function<void(std::string_view)>& on_delta_;
  std::string pending_;
  std::string data_;
  compute::result result_;
  bool done_ = false;
  bool delivered_ = false;
  bool has_usage_ = false;
};

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view v) {
  while (!v.empty() && v.front() == ' ')
    v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ')
    v.remove_suffix(1);
  if (v.empty() || v.size() > 7 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;  // an HTTP date, or nonsense: use the computed backoff
  return std::chrono::seconds{std::strtoul(std::string{v}.c_str(), nullptr, 10)};
}

std::chrono::milliseconds backoff_delay(const openai_options& o, unsigned retry,
                                        std::optional<std::chrono::milliseconds> retry_after) {
  if (retry_after)
    return std::min(*retry_after, o.max_backoff);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  auto base = o.backoff.count();
  long long full = base;
  for (unsigned i = 0; i < retry && full < o.max_backoff.count(); ++i)
    full *= 2;
  full = std::min<long long>(full, o.max_backoff.count());
  std::uniform_int_distribution<long long> jitter{full / 2, full};
  return std::chrono::milliseconds{jitter(rng)};
}

}  // namespace

// -- options -------------------------------------------------------------------

openai_options openai_options::from_env() {
  openai_options o;
  if (const char* url = std::getenv("OPENAI_BASE_URL"); url && *url)
    o.base_url = url;
  if (const char* key = std::getenv("OPENAI_API_KEY"); key && *key)
    o.api_key = key;
  return o;
}

// -- the provider ----------------------------------------------------------------

struct openai_provider::impl {
  openai_options o;
  target t;
  ssl::context tls{ssl::context::tls_client};

  attempt exchange_once(const http::request<http::string_body>& req, bool streaming,
                        std::size_t inputs, const std::function<void(std::string_view)>& on_delta,
                        const std::atomic<bool>& cancelled);

  template <class Stream>
  asio::awaitable<attempt> exchange(Stream& s, tcp::resolver& resolver,
                                    const http::request<http::string_body>& req, bool streaming,
                                    std::size_t inputs,
                                    const std::function<void(std::string_view)>& on_delta,
                                    const std::atomic<bool>& cancelled);
};

template <class Stream>
asio::awaitable<attempt> openai_provider::impl::exchange(
  Stream& s, tcp::resolver& resolver, const http::request<http::string_body>& req, bool streaming,
  std::size_t inputs, const std::function<void(std::string_view)>& on_delta,
  const std::atomic<bool>& cancelled) {
  auto& stream = beast::get_lowest_layer(s);
  auto stopped = [&](const beast::error_code& ec) -> std::optional<attempt> {
    if (cancelled)
      return failed(fc::cancelled, "the job was cancelled");
    if (ec == beast::error::timeout)
      return failed(fc::timeout, "no answer from " + t.host_header + " within "
                                   + std::to_string(o.timeout.count()) + " ms");
    return std::nullopt;
  };

  // -- connect --
  auto [rec, results] = co_await resolver.async_resolve(t.host, t.port, use_nothrow);
  if (auto s2 = stopped(rec))
    co_return *s2;
  if (rec)
    co_return failed(fc::network_error, "cannot resolve " + t.host + ": " + rec.message());
  stream.expires_after(o.timeout);
  auto [cec, ep] = co_await stream.async_connect(results, use_nothrow);
  (void)ep;
  if (auto s2 = stopped(cec))
    co_return *s2;
  if (cec)
    co_return failed(fc::network_error, "cannot connect to " + t.host_header + ": " + cec.message());

  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    auto* native = s.native_handle();
    // SNI carries host names only (RFC 6066), never IP addresses.
    if (!is_ip_literal(t.host) && !SSL_set_tlsext_host_name(native, t.host.c_str()))
      co_return failed(fc::network_error, "TLS: cannot set the server name");
    auto* param = SSL_get0_param(native);
    int ok = is_ip_literal(t.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, t.host.c_str())
                                   : X509_VERIFY_PARAM_set1_host(param, t.host.c_str(), 0);
    if (ok != 1)
      co_return failed(fc::network_error, "TLS: cannot set the expected host name");
    auto [hec] = co_await s.async_handshake(ssl::stream_base::client, use_nothrow);
    if (auto s2 = stopped(hec))
      co_return *s2;
    if (hec) {
      std::string why = hec.message();
      auto verify = SSL_get_verify_result(native);
      if (verify != X509_V_OK)
        why += std::string{" ("} + X509_verify_cert_error_string(verify) + ")";
      co_return failed(fc::network_error, "TLS handshake with " + t.host_header + ": " + why);
    }
  }

  // -- request --
  auto [wec, wn] = co_await http::async_write(s, req, use_nothrow);
  (void)wn;
  if (auto s2 = stopped(wec))
    co_return *s2;
  if (wec)
    co_return failed(fc::network_error, "cannot send the request to " + t.host_header + ": " + wec.message());

  // -- answer --
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.header_limit(64 * 1024);
  parser.body_limit(o.max_response_bytes);
  auto [hrec, hn] = co_await http::async_read_header(s, buffer, parser, use_nothrow);
  (void)hn;
  if (auto s2 = stopped(hrec))
    co_return *s2;
  if (hrec == http::error::header_limit || hrec == http::error::buffer_overflow)
    co_return failed(fc::response_too_large, "the provider's answer headers exceed 64 KiB");
  if (hrec == http::error::body_limit)
    co_return failed(fc::response_too_large, "the provider announces an answer of more than "
                                               + std::to_string(o.max_response_bytes) + " bytes");
  if (hrec == http::error::end_of_stream || hrec == asio::error::eof
      || hrec == asio::error::connection_reset || hrec == ssl::error::stream_truncated)
    co_return failed(fc::network_error, t.host_header + " closed the connection before answering");
  if (hrec)
    co_return failed(fc::malformed_response, "unreadable answer headers from " + t.host_header + ": "
                                               + hrec.message());

  int status = static_cast<int>(parser.get().result_int());
  std::optional<std::chrono::milliseconds> retry_after;
  if (auto it = parser.get().find(http::field::retry_after); it != parser.get().end())
    retry_after = parse_retry_after({it->value().data(), it->value().size()});
  bool sse = streaming && status == 200;
  std::optional<sse_reader> events;
  if (sse)
    events.emplace(on_delta);
  std::string body;
  std::vector<char> chunk(16 * 1024);
  bool truncated = false;
  while (!parser.is_done()) {
    if (sse)
      stream.expires_after(o.timeout);  // streams: the timeout bounds each wait
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    auto [bec, bn] = co_await http::async_read(s, buffer, parser, use_nothrow);
    (void)bn;
    std::size_t got = chunk.size() - parser.get().body().size;
    if (bec == http::error::need_buffer)
      bec = {};
    if (got > 0) {
      std::string_view piece{chunk.data(), got};
      if (sse) {
        if (auto err = events->feed(piece)) {
          auto a = malformed(*err);
          a.delivered = events->delivered();
          co_return a;
        }
        if (events->done())
          break;
      } else {
        body.append(piece);
      }
    }
    if (bec) {
      if (auto s2 = stopped(bec)) {
        s2->delivered = sse && events->delivered();
        co_return *s2;
      }
      if (bec == http::error::body_limit) {
        attempt a = failed(fc::response_too_large, "the provider's answer exceeds "
                                                     + std::to_string(o.max_response_bytes) + " bytes",
                           status);
        a.delivered = sse && events->delivered();
        co_return a;
      }
      // partial_message, end_of_stream, a reset or a TLS truncation: the
      // body stopped before its announced end.
      truncated = true;
      break;
    }
  }

  if (sse) {
    if (!events->done()) {
      auto a = malformed(truncated ? "the stream was cut before data: [DONE]"
                                   : "the stream ended without data: [DONE]");
      a.delivered = events->delivered();
      co_return a;
    }
    attempt a;
    a.delivered = events->delivered();
    a.ok = std::move(events->result());
    a.estimate_usage = !events->has_usage();
    co_return a;
  }
  if (truncated)
    co_return failed(fc::malformed_response, "the answer from " + t.host_header
                                               + " was cut off before the end of its body",
                     status);
  if (status == 429) {
    auto a = failed(fc::rate_limited, "HTTP 429 from the provider: " + provider_message(body), status);
    a.retry_after = retry_after;
    co_return a;
  }
  if (status >= 500)
    co_return failed(fc::provider_error, "HTTP " + std::to_string(status)
                                           + " from the provider: " + provider_message(body),
                     status);
  if (status >= 400)
    co_return failed(fc::bad_request, "HTTP " + std::to_string(status)
                                        + " from the provider: " + provider_message(body),
                     status);
  if (status < 200 || status >= 300)
    co_return failed(fc::malformed_response, "unexpected HTTP status " + std::to_string(status)
                                               + " from the provider",
                     status);
  auto a = inputs > 0 ? read_embeddings(body, inputs) : read_chat(body);
  a.fail.http_status = status;
  co_return a;
}

attempt openai_provider::impl::exchange_once(const http::request<http::string_body>& req,
                                             bool streaming, std::size_t inputs,
                                             const std::function<void(std::string_view)>& on_delta,
                                             const std::atomic<bool>& cancelled) {
  asio::io_context io;
  tcp::resolver resolver{io};
  std::optional<attempt> done;
  auto finish = [&](std::exception_ptr e, attempt a) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        a = failed(fc::network_error, std::string{"the request failed: "} + ex.what());
      } catch (...) {
        a = failed(fc::network_error, "the request failed");
      }
    }
    done = std::move(a);
  };
  std::function<void()> close;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  if (t.tls) {
    secure.emplace(io, tls);
    close = [&] {
      beast::get_lowest_layer(*secure).close();
    };
    asio::co_spawn(io, exchange(*secure, resolver, req, streaming, inputs, on_delta, cancelled), finish);
  } else {
    plain.emplace(io);
    close = [&] { plain->close(); };
    asio::co_spawn(io, exchange(*plain, resolver, req, streaming, inputs, on_delta, cancelled), finish);
  }
  // The resolver has no deadline of its own.
  auto resolve_deadline = steady_clock::now() + o.timeout;
  bool closed = false;
  while (!done && !io.stopped()) {
    io.run_for(cancel_poll);
    if (done || closed)
      continue;
    if (cancelled || steady_clock::now() > resolve_deadline + o.timeout) {
      // Cancelled, or stuck far past any deadline: end every operation.
      closed = true;
      resolver.cancel();
      close();
    }
  }
  if (!done)
    return failed(fc::network_error, "the request ended without an answer");
  if (closed && !cancelled && !done->ok && done->fail.code != fc::timeout)
    return failed(fc::timeout, "no answer from " + t.host_header + " in time");
  return std::move(*done);
}

expected<std::unique_ptr<openai_provider>> openai_provider::make(openai_options options) {
  auto p = std::make_unique<impl>();
  p->o = std::move(options);
  auto& o = p->o;
  auto parsed = boost::urls::parse_absolute_uri(o.base_url);
  if (!parsed)
    return invalid("openai provider: base_url '" + excerpt(o.base_url, 200)
                   + "' is not an absolute URL");
  auto& url = *parsed;
  if (url.scheme() == "https")
    p->t.tls = true;
  else if (url.scheme() != "http")
    return invalid("openai provider: base_url must start with http:// or https://");
  if (!url.has_authority() || url.host_address().empty())
    return invalid("openai provider: base_url has no host");
  if (url.has_userinfo() || url.has_query() || url.has_fragment())
    return invalid("openai provider: base_url must not have user info, a query or a fragment");
  p->t.host = url.host_address();
  p->t.port = url.has_port() ? std::string{url.port()} : std::string{p->t.tls ? "443" : "80"};
  if (p->t.port.empty())
    return invalid("openai provider: base_url has an empty port");
  p->t.host_header = url.encoded_host_and_port();
  p->t.prefix = url.encoded_path();
  while (!p->t.prefix.empty() && p->t.prefix.back() == '/')
    p->t.prefix.pop_back();
  if (o.name.empty())
    return invalid("openai provider: name must not be empty");
  if (o.timeout.count() <= 0)
    return invalid("openai provider: timeout must be positive");
  if (o.backoff.count() <= 0 || o.max_backoff.count() <= 0)
    return invalid("openai provider: backoff and max_backoff must be positive");
  if (o.max_response_bytes == 0)
    return invalid("openai provider: max_response_bytes must be positive");
  for (char c : o.api_key)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return invalid("openai provider: api_key contains a control character");

  SSL_CTX_set_min_proto_version(p->tls.native_handle(), TLS1_2_VERSION);
  p->tls.set_verify_mode(ssl::verify_peer);
  if (p->t.tls) {
    boost::system::error_code ec;
    p->tls.set_default_verify_paths(ec);  // a system without defaults may still have ca_file
    if (!o.ca_file.empty()) {
      p->tls.load_verify_file(o.ca_file, ec);
      if (ec)
        return invalid("openai provider: cannot load ca_file '" + o.ca_file + "': " + ec.message());
    }
  }
  return std::unique_ptr<openai_provider>{new openai_provider{std::move(p)}};
}

openai_provider::openai_provider(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

openai_provider::~openai_provider() = default;

std::string_view openai_provider::name() const { return impl_->o.name; }

compute::outcome openai_provider::run(const compute::request& r,
                                      const std::function<void(std::string_view)>& on_delta,
                                      const std::atomic<bool>& cancelled) {
  auto& p = *impl_;
  bool chat = r.kind == compute::request_kind::chat;
  bool streaming = chat && r.stream;

  json::object body;
  body["model"] = r.model;
  if (chat) {
    json::array msgs;
    for (auto& m : r.messages)
      msgs.push_back(json::object{{"role", m.role}, {"content", m.content}});
    body["messages"] = std::move(msgs);
    body["max_tokens"] = r.max_tokens;
    body["temperature"] = r.temperature;
    body["stream"] = streaming;
    if (streaming)
      body["stream_options"] = json::object{{"include_usage", true}};
  } else {
    json::array in;
    for (auto& s : r.input)
      in.push_back(json::string(s));
    body["input"] = std::move(in);
  }

  http::request<http::string_body> req{http::verb::post,
                                       p.t.prefix + (chat ? "/chat/completions" : "/embeddings"), 11};
  req.set(http::field::host, p.t.host_header);
  req.set(http::field::user_agent, "ticktock");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, streaming ? "text/event-stream" : "application/json");
  if (!p.o.api_key.empty())
    req.set(http::field::authorization, "Bearer " + p.o.api_key);
  req.body() = json::serialize(body);
  req.prepare_payload();

  std::size_t inputs = chat ? 0 : r.input.size();
  if (!chat && inputs == 0)
    return make_failure(fc::bad_request, "an embeddings request needs at least one input");

  for (unsigned retry = 0;; ++retry) {
    if (cancelled)
      return make_failure(fc::cancelled, "the job was cancelled");
    attempt a = p.exchange_once(req, streaming, inputs, on_delta, cancelled);
    if (a.ok) {
      if (a.ok->model.empty())
        a.ok->model = r.model;
      if (a.estimate_usage) {
        // A provider that ignores stream_options.include_usage: bill estimates.
        a.ok->used.prompt_tokens = compute::estimate_prompt_tokens(r);
        a.ok->used.completion_tokens = compute::estimate_tokens(a.ok->content);
      }
      return std::move(*a.ok);
    }
    if (!a.fail.retryable || a.delivered || retry >= p.o.max_retries) {
      if (a.fail.retryable && retry > 0)
        a.fail.message += " (after " + std::to_string(retry + 1) + " attempts)";
      return a.fail;
    }
    // Wait out the backoff, looking at the cancelled flag as we go.
    auto delay = backoff_delay(p.o, retry, a.retry_after);
    if (p.o.on_retry_wait)
      p.o.on_retry_wait(delay);
    auto until = steady_clock::now() + delay;
    while (steady_clock::now() < until) {
      if (cancelled)
        return make_failure(fc::cancelled, "the job was cancelled");
      std::this_thread::sleep_for(std::min<steady_clock::duration>(cancel_poll, until - steady_clock::now()));
    }
  }
}

}  // namespace ticktock::drivers
