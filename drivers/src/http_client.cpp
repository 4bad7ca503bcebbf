// The shared outbound HTTP client. Each exchange runs on a private
// io_context that the calling thread drives in short slices, so that it can
// close the connection as soon as the caller cancels; Beast's tcp_stream
// deadlines bound every network wait. The answer is read through a
// buffer_body parser, piece by piece: streamed to a callback, or collected
// up to max_response_bytes.

#include "http_client.hpp"

#include "address_filter.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <exception>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady_clock = std::chrono::steady_clock;

namespace ticktock::drivers::detail {

namespace fc = fetch::failure_code;

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
// How often exchange() looks at the cancelled flag while it is under way.
constexpr std::chrono::milliseconds cancel_poll{20};
constexpr std::size_t max_head_bytes = 64 * 1024;

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

http_client::result failed(std::string_view code, std::string message) {
  http_client::result r;
  r.code = std::string{code};
  r.message = std::move(message);
  return r;
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

std::string excerpt(std::string_view s, std::size_t n) {
  std::string out;
  for (char c : s.substr(0, n))
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  if (s.size() > n)
    out += "...";
  return out;
}

std::string_view http_client::head::get(std::string_view lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name)
      return v;
  return {};
}

struct http_client::impl {
  ssl::context tls{ssl::context::tls_client};

  template <class Stream>
  asio::awaitable<result> run(Stream& s, tcp::resolver& resolver, const fetch::url& to,
                              const http::request<http::string_body>& req, const options& o,
                              const std::atomic<bool>& cancelled);
};

template <class Stream>
asio::awaitable<http_client::result> http_client::impl::run(
  Stream& s, tcp::resolver& resolver, const fetch::url& to,
  const http::request<http::string_body>& req, const options& o,
  const std::atomic<bool>& cancelled) {
  auto& stream = beast::get_lowest_layer(s);
  const auto& peer = to.host_header;
  auto stopped = [&](const beast::error_code& ec) -> std::optional<result> {
    if (cancelled)
      return failed(fc::cancelled, "the request was cancelled");
    if (ec == beast::error::timeout)
      return failed(fc::timeout, "no answer from " + peer + " within "
                                   + std::to_string(o.timeout.count()) + " ms");
    return std::nullopt;
  };

  // -- connect --
  auto [rec, results] = co_await resolver.async_resolve(to.host, to.port, use_nothrow);
  if (auto s2 = stopped(rec))
    co_return *s2;
  if (rec)
    co_return failed(fc::network_error, "cannot resolve " + to.host + ": " + rec.message());
  // Only the endpoints the filter allows are ever connected to: checking
  // the resolved addresses (not the name) also catches names that resolve,
  // or are rebound, to private addresses.
  std::vector<tcp::endpoint> allowed;
  std::string refused;
  for (const auto& entry : results) {
    auto endpoint = entry.endpoint();
    if (!o.public_only || is_public_address(endpoint.address()))
      allowed.push_back(endpoint);
    else if (refused.empty())
      refused = endpoint.address().to_string();
  }
  if (allowed.empty() && !refused.empty())
    co_return failed(fc::address_not_allowed,
                     is_ip_literal(to.host)
                       ? refused + " is not a public address"
                       : to.host + " resolves to " + refused + ", which is not a public address");
  stream.expires_after(o.timeout);
  auto [cec, ep] = co_await stream.async_connect(allowed, use_nothrow);
  (void)ep;
  if (auto s2 = stopped(cec))
    co_return *s2;
  if (cec)
    co_return failed(fc::network_error, "cannot connect to " + peer + ": " + cec.message());

  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    auto* native = s.native_handle();
    // SNI carries host names only (RFC 6066), never IP addresses.
    if (!is_ip_literal(to.host) && !SSL_set_tlsext_host_name(native, to.host.c_str()))
      co_return failed(fc::network_error, "TLS: cannot set the server name");
    auto* param = SSL_get0_param(native);
    int ok = is_ip_literal(to.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, to.host.c_str())
                                    : X509_VERIFY_PARAM_set1_host(param, to.host.c_str(), 0);
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
      co_return failed(fc::network_error, "TLS handshake with " + peer + ": " + why);
    }
  }

  // -- request --
  auto [wec, wn] = co_await http::async_write(s, req, use_nothrow);
  (void)wn;
  if (auto s2 = stopped(wec))
    co_return *s2;
  if (wec)
    co_return failed(fc::network_error, "cannot send the request to " + peer + ": " + wec.message());

  // -- answer --
  beast::flat_buffer buffer;
  std::optional<http::response_parser<http::buffer_body>> answer;
  // Interim answers (100 Continue, 103 Early Hints) come before the final
  // one and are skipped (RFC 9110, 15.2); a few at most.
  for (int interim = 0;; ++interim) {
    answer.emplace();
    answer->header_limit(max_head_bytes);
    answer->body_limit(o.max_response_bytes);
    if (o.head_request)
      answer->skip(true);
    auto [hrec, hn] = co_await http::async_read_header(s, buffer, *answer, use_nothrow);
    (void)hn;
    if (auto s2 = stopped(hrec))
      co_return *s2;
    if (hrec == http::error::header_limit || hrec == http::error::buffer_overflow)
      co_return failed(fc::response_too_large, "the answer headers from " + peer + " exceed 64 KiB");
    if (hrec == http::error::body_limit)
      co_return failed(fc::response_too_large, peer + " announces an answer of more than "
                                                 + std::to_string(o.max_response_bytes) + " bytes");
    if (hrec == http::error::end_of_stream || hrec == asio::error::eof
        || hrec == asio::error::connection_reset || hrec == ssl::error::stream_truncated)
      co_return failed(fc::network_error, peer + " closed the connection before answering");
    if (hrec)
      co_return failed(fc::malformed_response, "unreadable answer headers from " + peer + ": "
                                                 + hrec.message());
    auto code = answer->get().result_int();
    if (code < 100 || code > 199 || code == 101)
      break;
    if (interim == 8)
      co_return failed(fc::malformed_response, peer + " sent interim answers and no final one");
  }
  auto& parser = *answer;

  result out;
  out.h.status = static_cast<int>(parser.get().result_int());
  for (auto& f : parser.get())
    out.h.headers.emplace_back(lower({f.name_string().data(), f.name_string().size()}),
                               std::string{f.value().data(), f.value().size()});
  out.streamed = o.stream_body && o.stream_body(out.h);
  std::vector<char> chunk(16 * 1024);
  while (!parser.is_done()) {
    if (out.streamed)
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
      if (out.streamed) {
        auto what = o.on_piece(piece);
        if (what == piece_result::fail) {
          auto f = failed(fc::malformed_response, "the streamed answer from " + peer + " is malformed");
          f.h = std::move(out.h);
          f.streamed = true;
          co_return f;
        }
        if (what == piece_result::done)
          break;
      } else {
        out.body.append(piece);
      }
    }
    if (bec) {
      if (auto s2 = stopped(bec)) {
        s2->h = std::move(out.h);
        s2->streamed = out.streamed;
        co_return *s2;
      }
      if (bec == http::error::body_limit) {
        auto f = failed(fc::response_too_large, "the answer from " + peer + " exceeds "
                                                  + std::to_string(o.max_response_bytes) + " bytes");
        f.h = std::move(out.h);
        f.streamed = out.streamed;
        co_return f;
      }
      // partial_message, end_of_stream, a reset or a TLS truncation: the
      // body stopped before its announced end.
      out.truncated = true;
      break;
    }
  }
  co_return out;
}

expected<std::shared_ptr<http_client>> http_client::make(const std::string& ca_file) {
  auto p = std::make_unique<impl>();
  SSL_CTX_set_min_proto_version(p->tls.native_handle(), TLS1_2_VERSION);
  p->tls.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  p->tls.set_default_verify_paths(ec);  // a system without defaults may still have ca_file
  if (!ca_file.empty()) {
    p->tls.load_verify_file(ca_file, ec);
    if (ec)
      return error{errc::invalid_argument, "cannot load ca_file '" + ca_file + "': " + ec.message()};
  }
  return std::shared_ptr<http_client>{new http_client{std::move(p)}};
}

http_client::http_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_client::~http_client() = default;

http_client::result http_client::exchange(const fetch::url& to, const request& r,
                                          const options& o,
                                          const std::atomic<bool>& cancelled) const {
  http::request<http::string_body> req;
  http::verb verb = http::string_to_verb(r.method);
  if (verb == http::verb::unknown)
    return failed(fc::bad_request, "unknown method '" + excerpt(r.method, 20) + "'");
  req.method(verb);
  req.target(r.target);
  req.version(11);
  req.set(http::field::host, to.host_header);
  for (auto& [k, v] : r.headers)
    req.insert(k, v);
  req.body() = r.body;
  if (!r.body.empty() || (verb != http::verb::get && verb != http::verb::head))
    req.prepare_payload();
  req.keep_alive(false);

  asio::io_context io;
  tcp::resolver resolver{io};
  std::optional<result> done;
  auto finish = [&](std::exception_ptr e, result a) {
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
  if (to.tls) {
    secure.emplace(io, impl_->tls);
    close = [&] { beast::get_lowest_layer(*secure).close(); };
    asio::co_spawn(io, impl_->run(*secure, resolver, to, req, o, cancelled), finish);
  } else {
    plain.emplace(io);
    close = [&] { plain->close(); };
    asio::co_spawn(io, impl_->run(*plain, resolver, to, req, o, cancelled), finish);
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
  if (closed && !cancelled && !done->code.empty() && done->code != fc::timeout)
    return failed(fc::timeout, "no answer from " + to.host_header + " in time");
  return std::move(*done);
}

}  // namespace ticktock::drivers::detail
