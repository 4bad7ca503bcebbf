// The OpenAI-compatible test server: one Beast coroutine per connection on a
// single I/O thread, one request per connection (answers carry
// "Connection: close"). Scripted behaviours are taken from a queue as
// requests arrive.

#include "openai_test_server.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <openssl/ssl.h>

#include <deque>
#include <mutex>
#include <thread>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace ticktock::test {

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

json::object error_body(const std::string& message, const std::string& type = "invalid_request_error") {
  return json::object{{"error", json::object{{"message", message}, {"type", type}, {"code", nullptr}}}};
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::uint64_t quarter_tokens(std::size_t bytes) { return (bytes + 3) / 4; }

// The answer split into pieces of a stream: each word with the spaces before it.
std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    auto start = text.find_first_not_of(' ', i);
    auto end = start == std::string::npos ? text.size() : text.find(' ', start);
    if (end == std::string::npos)
      end = text.size();
    out.push_back(text.substr(i, end - i));
    i = end;
  }
  return out;
}

// What the server makes of a request body it answers normally.
struct parsed_call {
  bool chat = true;
  bool stream = false;
  bool include_usage = false;
  std::string model;
  std::string reply;  // chat
  std::vector<std::string> inputs;
  std::uint64_t prompt_tokens = 0;
};

std::optional<std::string> parse_call(const std::string& target, const std::string& body, parsed_call& c) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object())
    return "the body is not a JSON object";
  auto& o = v.as_object();
  auto* model = o.if_contains("model");
  if (!model || !model->is_string() || model->as_string().empty())
    return "you must provide a model parameter";
  c.model = std::string{model->as_string()};
  if (target == "/v1/chat/completions") {
    auto* msgs = o.if_contains("messages");
    if (!msgs || !msgs->is_array() || msgs->as_array().empty())
      return "messages must be a non-empty array";
    std::string last_user;
    for (auto& m : msgs->as_array()) {
      if (!m.is_object() || !m.as_object().contains("role") || !m.as_object().at("role").is_string()
          || !m.as_object().contains("content") || !m.as_object().at("content").is_string())
        return "each message needs a string role and content";
      auto& content = m.as_object().at("content").as_string();
      c.prompt_tokens += 5 + quarter_tokens(content.size());
      if (m.as_object().at("role").as_string() == "user")
        last_user = std::string{content};
    }
    c.reply = "Echo: " + last_user;
    if (auto* s = o.if_contains("stream"); s && s->is_bool())
      c.stream = s->as_bool();
    if (auto* so = o.if_contains("stream_options"); so && so->is_object())
      if (auto* iu = so->as_object().if_contains("include_usage"); iu && iu->is_bool())
        c.include_usage = iu->as_bool();
    return std::nullopt;
  }
  c.chat = false;
  auto* in = o.if_contains("input");
  if (in && in->is_string())
    c.inputs.emplace_back(in->as_string());
  else if (in && in->is_array() && !in->as_array().empty()) {
    for (auto& s : in->as_array()) {
      if (!s.is_string())
        return "input must be a string or an array of strings";
      c.inputs.emplace_back(s.as_string());
    }
  } else {
    return "input must be a string or a non-empty array of strings";
  }
  for (auto& s : c.inputs)
    c.prompt_tokens += quarter_tokens(s.size());
  return std::nullopt;
}

json::object chat_usage(const parsed_call& c) {
  auto completion = static_cast<std::uint64_t>(words(c.reply).size());
  return json::object{{"prompt_tokens", c.prompt_tokens},
                      {"completion_tokens", completion},
                      {"total_tokens", c.prompt_tokens + completion}};
}

json::object chunk(const parsed_call& c, json::object delta, json::value finish) {
  return json::object{{"id", "chatcmpl-test"},
                      {"object", "chat.completion.chunk"},
                      {"created", 1700000000},
                      {"model", c.model},
                      {"choices", json::array{json::object{{"index", 0},
                                                           {"delta", std::move(delta)},
                                                           {"finish_reason", std::move(finish)}}}}};
}

std::string sse(const json::object& o) { return "data: " + json::serialize(o) + "\n\n"; }

}  // namespace

// -- behaviours ------------------------------------------------------------------

openai_behaviour openai_behaviour::respond(int status, std::string body,
                                           std::vector<std::pair<std::string, std::string>> headers) {
  openai_behaviour b;
  b.what = kind::reply;
  b.status = status;
  b.body = std::move(body);
  b.headers = std::move(headers);
  return b;
}

openai_behaviour openai_behaviour::openai_error(int status, const std::string& message,
                                                std::vector<std::pair<std::string, std::string>> headers) {
  return respond(status, json::serialize(error_body(message)), std::move(headers));
}

openai_behaviour openai_behaviour::rate_limited(int retry_after_seconds) {
  return openai_error(429, "Rate limit reached for requests",
                      {{"Retry-After", std::to_string(retry_after_seconds)}});
}

openai_behaviour openai_behaviour::of(kind k, std::size_t size) {
  openai_behaviour b;
  b.what = k;
  b.size = size;
  return b;
}

openai_behaviour openai_behaviour::delayed(std::chrono::milliseconds d) {
  openai_behaviour b;
  b.delay = d;
  return b;
}

// -- the server ------------------------------------------------------------------

struct openai_test_server::impl {
  explicit impl(openai_test_server_options o) : options(std::move(o)) {
    if (options.tls) {
      tls.emplace(ssl::context::tls_server);
      tls->use_certificate_chain(asio::buffer(options.tls->server_cert_pem));
      tls->use_private_key(asio::buffer(options.tls->server_key_pem), ssl::context::pem);
    }
  }

  openai_test_server_options options;
  std::optional<ssl::context> tls;  // outlives the streams destroyed with io
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::uint16_t port = 0;
  std::thread thread;

  mutable std::mutex mtx;
  std::deque<openai_behaviour> queue;
  std::vector<recorded_request> received;
  std::size_t accepted = 0;

  openai_behaviour next(const std::string& body) {
    std::lock_guard<std::mutex> guard{mtx};
    if (!queue.empty()) {
      auto b = std::move(queue.front());
      queue.pop_front();
      return b;
    }
    // Models that misbehave without scripting, for tests that run the server
    // as a process.
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    if (!ec && v.is_object())
      if (auto* m = v.as_object().if_contains("model"); m && m->is_string()) {
        if (m->as_string() == "test-error-500")
          return openai_behaviour::openai_error(500, "The server had an error while processing your request.");
        if (m->as_string() == "test-error-400")
          return openai_behaviour::openai_error(400, "This model's maximum context length is exceeded.");
        if (m->as_string() == "test-rate-limited")
          return openai_behaviour::rate_limited(0);
      }
    return {};
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_nothrow);
      if (!acceptor.is_open())
        co_return;
      if (ec)
        continue;
      {
        std::lock_guard<std::mutex> guard{mtx};
        ++accepted;
      }
      if (tls)
        asio::co_spawn(io, serve_tls(std::move(sock)), asio::detached);
      else
        asio::co_spawn(io, serve(beast::tcp_stream{std::move(sock)}), asio::detached);
    }
  }

  asio::awaitable<void> serve_tls(tcp::socket sock) {
    tls_stream s{std::move(sock), *tls};
    beast::get_lowest_layer(s).expires_after(std::chrono::seconds{30});
    auto [hec] = co_await s.async_handshake(ssl::stream_base::server, use_nothrow);
    if (hec)
      co_return;
    co_await serve(std::move(s));
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream s) {
    auto& lowest = beast::get_lowest_layer(s);
    lowest.expires_after(std::chrono::seconds{30});
    beast::flat_buffer buffer;
    http::request_parser<http::string_body> parser;
    parser.body_limit(16u << 20);
    auto [rec, rn] = co_await http::async_read(s, buffer, parser, use_nothrow);
    (void)rn;
    if (rec)
      co_return;
    auto req = parser.release();
    recorded_request r;
    r.method = std::string{req.method_string()};
    r.target = std::string{req.target()};
    for (auto& f : req) {
      std::string name{f.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string{f.value()};
    }
    r.body = req.body();
    {
      std::lock_guard<std::mutex> guard{mtx};
      received.push_back(r);
    }
    auto b = next(r.body);
    lowest.expires_never();
    if (b.delay.count() > 0) {
      asio::steady_timer timer{co_await asio::this_coro::executor};
      timer.expires_after(b.delay);
      co_await timer.async_wait(use_nothrow);
    }
    lowest.expires_after(std::chrono::seconds{30});
    co_await answer(s, r, b);
    beast::error_code ec;
    lowest.socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest.close();
  }

  template <class Stream>
  asio::awaitable<void> write_response(Stream& s, int status, const std::string& body,
                                       const std::vector<std::pair<std::string, std::string>>& headers,
                                       const std::string& content_type = "application/json") {
    http::response<http::string_body> res{http::int_to_status(static_cast<unsigned>(status)), 11};
    res.set(http::field::server, "ticktock-test-openai");
    res.set(http::field::content_type, content_type);
    for (auto& [k, v] : headers)
      res.set(k, v);
    res.keep_alive(false);
    res.body() = body;
    res.prepare_payload();
    co_await http::async_write(s, res, use_nothrow);
  }

  template <class Stream>
  asio::awaitable<void> write_chunk(Stream& s, const std::string& data) {
    co_await asio::async_write(s, http::make_chunk(asio::buffer(data)), use_nothrow);
  }

  template <class Stream>
  asio::awaitable<void> answer(Stream& s, const recorded_request& r, const openai_behaviour& b) {
    using k = openai_behaviour::kind;
    switch (b.what) {
      case k::reply:
        co_await write_response(s, b.status, b.body, b.headers);
        co_return;
      case k::malformed_json:
        co_await write_response(s, 200, "{\"choices\": [{\"message\": {\"content\": \"unterminated", {});
        co_return;
      case k::close:
        co_return;
      case k::truncated: {
        http::response<http::string_body> res{http::status::ok, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"cut";
        // Announces more than it sends; the connection closes after.
        res.set(http::field::content_length, std::to_string(res.body().size() + 100));
        http::response_serializer<http::string_body> sr{res};
        co_await http::async_write(s, sr, use_nothrow);
        co_return;
      }
      case k::huge:
      case k::huge_declared: {
        http::response<http::empty_body> res{http::status::ok, 11};
        res.set(http::field::content_type, "application/json");
        res.keep_alive(false);
        if (b.what == k::huge)
          res.chunked(true);
        else
          res.content_length(b.size);
        http::response_serializer<http::empty_body> sr{res};
        auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow);
        (void)n;
        if (ec)
          co_return;
        std::string piece(64 * 1024, 'a');
        for (std::size_t sent = 0; sent < b.size;) {
          auto len = std::min(piece.size(), b.size - sent);
          boost::system::error_code wec;
          if (b.what == k::huge)
            std::tie(wec, std::ignore) = co_await asio::async_write(
              s, http::make_chunk(asio::buffer(piece.data(), len)), use_nothrow);
          else
            std::tie(wec, std::ignore) = co_await asio::async_write(s, asio::buffer(piece.data(), len),
                                                                   use_nothrow);
          if (wec)
            co_return;  // the client gave up, as it should
          sent += len;
        }
        if (b.what == k::huge)
          co_await asio::async_write(s, asio::buffer("0\r\n\r\n", 5), use_nothrow);  // the last chunk
        co_return;
      }
      case k::normal:
      case k::stream_cut:
      case k::stream_no_done:
        break;
    }

    if (r.method != "POST" || (r.target != "/v1/chat/completions" && r.target != "/v1/embeddings")) {
      co_await write_response(s, 404, json::serialize(error_body("Unknown request URL: " + r.method + " "
                                                                 + r.target)),
                              {});
      co_return;
    }
    parsed_call c;
    if (auto err = parse_call(r.target, r.body, c)) {
      co_await write_response(s, 400, json::serialize(error_body(*err)), {});
      co_return;
    }
    if (!c.chat) {
      json::array data;
      for (std::size_t i = 0; i < c.inputs.size(); ++i) {
        json::array vec;
        for (int j = 0; j < 8; ++j)
          vec.push_back(static_cast<double>(fnv1a(c.inputs[i] + static_cast<char>('0' + j)) % 2001) / 1000.0
                        - 1.0);
        data.push_back(json::object{{"object", "embedding"}, {"index", i}, {"embedding", std::move(vec)}});
      }
      json::object out{{"object", "list"},
                       {"data", std::move(data)},
                       {"model", c.model},
                       {"usage", json::object{{"prompt_tokens", c.prompt_tokens},
                                              {"total_tokens", c.prompt_tokens}}}};
      co_await write_response(s, 200, json::serialize(out), {});
      co_return;
    }
    if (!c.stream) {
      json::object out{
        {"id", "chatcmpl-test"},
        {"object", "chat.completion"},
        {"created", 1700000000},
        {"model", c.model},
        {"choices", json::array{json::object{
                      {"index", 0},
                      {"message", json::object{{"role", "assistant"}, {"content", c.reply}}},
                      {"finish_reason", "stop"}}}},
        {"usage", chat_usage(c)}};
      co_await write_response(s, 200, json::serialize(out), {});
      co_return;
    }

    // -- a streamed answer --
    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(false);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    auto [hec, hn] = co_await http::async_write_header(s, sr, use_nothrow);
    (void)hn;
    if (hec)
      co_return;
    // (GCC 12 cannot keep an initializer list alive across a co_await: build
    // each chunk before awaiting its write.)
    auto first = sse(chunk(c, json::object{{"role", "assistant"}, {"content", ""}}, nullptr));
    co_await write_chunk(s, first);
    auto pieces = words(c.reply);
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      auto piece = sse(chunk(c, json::object{{"content", pieces[i]}}, nullptr));
      co_await write_chunk(s, piece);
      if (b.what == openai_behaviour::kind::stream_cut && i == 0)
        co_return;  // the caller closes the connection: no [DONE], no last chunk
    }
    co_await write_chunk(s, sse(chunk(c, json::object{}, "stop")));
    if (c.include_usage) {
      json::object u{{"id", "chatcmpl-test"},
                     {"object", "chat.completion.chunk"},
                     {"created", 1700000000},
                     {"model", c.model},
                     {"choices", json::array{}},
                     {"usage", chat_usage(c)}};
      co_await write_chunk(s, sse(u));
    }
    if (b.what != openai_behaviour::kind::stream_no_done)
      co_await write_chunk(s, "data: [DONE]\n\n");
    co_await asio::async_write(s, asio::buffer("0\r\n\r\n", 5), use_nothrow);  // the last chunk
  }
};

openai_test_server::openai_test_server(openai_test_server_options options)
  : impl_(std::make_unique<impl>(std::move(options))) {
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), impl_->options.port};
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([p = impl_.get()] { p->io.run(); });
}

openai_test_server::~openai_test_server() {
  asio::post(impl_->io, [p = impl_.get()] {
    boost::system::error_code ec;
    p->acceptor.close(ec);
    p->io.stop();
  });
  impl_->thread.join();
}

std::uint16_t openai_test_server::port() const { return impl_->port; }

std::string openai_test_server::base_url(const std::string& host) const {
  return std::string{impl_->tls ? "https://" : "http://"} + host + ":" + std::to_string(impl_->port) + "/v1";
}

void openai_test_server::push(openai_behaviour b) {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  impl_->queue.push_back(std::move(b));
}

std::vector<recorded_request> openai_test_server::requests() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->received;
}

std::size_t openai_test_server::request_count() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->received.size();
}

std::size_t openai_test_server::accepted_connections() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->accepted;
}

}  // namespace ticktock::test
