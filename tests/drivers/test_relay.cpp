// The test relay: a Beast WebSocket server (plain or TLS) speaking enough
// NIP-01 for the relay pool's tests. All relay state lives on its single I/O
// thread; public methods run their work there and wait for it.

#include "test_relay.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/json.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace ticktock::test {

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using plain_ws = websocket::stream<beast::tcp_stream>;
using tls_ws = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

// -- certificates ---------------------------------------------------------------

[[noreturn]] void openssl_failed(const char* what) {
  throw std::runtime_error(std::string{"OpenSSL: "} + what + " failed");
}

struct pkey_deleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct x509_deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct bio_deleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;
using x509_ptr = std::unique_ptr<X509, x509_deleter>;
using bio_ptr = std::unique_ptr<BIO, bio_deleter>;

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext)
    openssl_failed("X509V3_EXT_conf_nid");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// issuer == nullptr: self-signed.
x509_ptr make_certificate(EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, const std::string& cn,
                          bool ca, const std::string& san) {
  x509_ptr cert{X509_new()};
  if (!cert)
    openssl_failed("X509_new");
  X509_set_version(cert.get(), 2);
  std::uint32_t serial = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(serial >> 1));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  auto* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  auto* signer = issuer ? issuer : cert.get();
  add_extension(cert.get(), signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_extension(cert.get(), signer, NID_key_usage,
                ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  if (!ca) {
    add_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    add_extension(cert.get(), signer, NID_subject_alt_name, san);
  }
  if (!X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()))
    openssl_failed("X509_sign");
  return cert;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  auto n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string cert_pem(X509* cert) {
  bio_ptr bio{BIO_new(BIO_s_mem())};
  if (!bio || !PEM_write_bio_X509(bio.get(), cert))
    openssl_failed("PEM_write_bio_X509");
  return bio_text(bio.get());
}

std::string key_pem(EVP_PKEY* key) {
  bio_ptr bio{BIO_new(BIO_s_mem())};
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
    openssl_failed("PEM_write_bio_PrivateKey");
  return bio_text(bio.get());
}

// -- filters --------------------------------------------------------------------

bool contains(const json::value& list, const json::value& v) {
  if (!list.is_array())
    return false;
  auto& a = list.as_array();
  return std::find(a.begin(), a.end(), v) != a.end();
}

bool matches(const json::object& filter, const json::object& ev) {
  for (auto& [k, v] : filter) {
    if (k == "ids") {
      if (!ev.contains("id") || !contains(v, ev.at("id")))
        return false;
    } else if (k == "authors") {
      if (!ev.contains("pubkey") || !contains(v, ev.at("pubkey")))
        return false;
    } else if (k == "kinds") {
      if (!ev.contains("kind") || !contains(v, ev.at("kind")))
        return false;
    } else if (k == "since") {
      if (!ev.contains("created_at") || ev.at("created_at").to_number<std::int64_t>() < v.to_number<std::int64_t>())
        return false;
    } else if (k == "until") {
      if (!ev.contains("created_at") || ev.at("created_at").to_number<std::int64_t>() > v.to_number<std::int64_t>())
        return false;
    } else if (k.size() == 2 && k[0] == '#') {
      bool found = false;
      if (auto* tags = ev.if_contains("tags"); tags && tags->is_array())
        for (auto& t : tags->as_array())
          if (t.is_array() && t.as_array().size() >= 2 && t.as_array()[0].is_string()
              && t.as_array()[0].as_string() == k.substr(1) && contains(v, t.as_array()[1]))
            found = true;
      if (!found)
        return false;
    }
  }
  return true;
}

std::int64_t created_at(const json::object& ev) {
  auto* c = ev.if_contains("created_at");
  return c && c->is_number() ? c->to_number<std::int64_t>() : 0;
}

// -- sessions -------------------------------------------------------------------

struct session_base : std::enable_shared_from_this<session_base> {
  explicit session_base(asio::any_io_executor ex) : wake(ex) {}
  virtual ~session_base() = default;
  virtual void send(std::string frame, bool binary = false) = 0;
  virtual void drop() = 0;
  std::map<std::string, json::array> subs;  // sub id -> filters
  bool paused = false;       // stop reading after the frame being read
  asio::steady_timer wake;   // a paused reader waits on it until drop()
};

template <class WS>
struct session final : session_base {
  template <class... Args>
  explicit session(tcp::socket&& sock, Args&&... args)
    : session_base(sock.get_executor()), ws(std::move(sock), std::forward<Args>(args)...) {}

  WS ws;
  std::deque<std::pair<std::string, bool>> queue;
  bool writing = false;
  bool open = false;

  void send(std::string frame, bool binary) override {
    if (!open)
      return;
    queue.emplace_back(std::move(frame), binary);
    if (!writing)
      write_next();
  }

  void write_next() {
    if (queue.empty() || !open) {
      writing = false;
      return;
    }
    writing = true;
    ws.binary(queue.front().second);
    ws.async_write(asio::buffer(queue.front().first),
                   [self = shared_from_this()](beast::error_code ec, std::size_t) {
                     auto& me = static_cast<session&>(*self);
                     me.queue.pop_front();
                     if (ec) {
                       me.writing = false;
                       me.drop();
                       return;
                     }
                     me.write_next();
                   });
  }

  void drop() override {
    open = false;
    wake.cancel();
    beast::get_lowest_layer(ws).close();
  }
};

}  // namespace

test_tls make_test_tls(const std::vector<std::string>& dns_names, const std::vector<std::string>& ips) {
  pkey_ptr ca_key{EVP_EC_gen("P-256")};
  pkey_ptr server_key{EVP_EC_gen("P-256")};
  if (!ca_key || !server_key)
    openssl_failed("EVP_EC_gen");
  std::string san;
  for (auto& d : dns_names)
    san += (san.empty() ? "" : ",") + std::string{"DNS:"} + d;
  for (auto& ip : ips)
    san += (san.empty() ? "" : ",") + std::string{"IP:"} + ip;
  auto ca = make_certificate(ca_key.get(), nullptr, nullptr, "ticktock test CA", true, {});
  auto server = make_certificate(server_key.get(), ca.get(), ca_key.get(), "ticktock test relay",
                                 false, san);
  return {cert_pem(ca.get()), cert_pem(server.get()), key_pem(server_key.get())};
}

test_event make_event(int kind, const std::string& content, std::int64_t created_at,
                      const std::string& pubkey, const std::vector<std::vector<std::string>>& tags) {
  json::array tag_list;
  for (auto& t : tags) {
    json::array one;
    for (auto& s : t)
      one.push_back(json::string(s));
    tag_list.push_back(std::move(one));
  }
  auto canonical = json::serialize(json::array{0, pubkey, created_at, kind, tag_list, content});
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(canonical.data()), canonical.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string id;
  for (auto b : digest) {
    id += hex[b >> 4];
    id += hex[b & 15];
  }
  json::object ev{{"id", id},     {"pubkey", pubkey},       {"created_at", created_at},
                  {"kind", kind}, {"tags", std::move(tag_list)}, {"content", content},
                  {"sig", std::string(128, '0')}};
  return {id, json::serialize(ev)};
}

// -- test_relay -------------------------------------------------------------------

struct test_relay::impl {
  explicit impl(test_relay_options o) : options(std::move(o)) {
    if (options.tls) {
      tls.emplace(ssl::context::tls_server);
      tls->use_certificate_chain(asio::buffer(options.tls->server_cert_pem));
      tls->use_private_key(asio::buffer(options.tls->server_key_pem), ssl::context::pem);
    }
  }

  test_relay_options options;
  std::optional<ssl::context> tls;  // outlives the streams destroyed with io
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{io};
  std::uint16_t port = 0;
  std::thread thread;

  // -- on the I/O thread only --
  std::uint64_t generation = 0;  // of the accept loop: stop/start must not leave two
  std::string reject_message;
  std::vector<json::object> events;
  std::set<std::string> stored_ids;
  std::set<std::shared_ptr<session_base>> sessions;
  std::map<std::string, std::size_t> reqs, closes, event_frames;
  std::size_t accepted = 0;
  std::string last_sni;

  // Runs f on the I/O thread and returns its result.
  template <class F>
  auto call(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task{std::move(f)};
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    return result.get();
  }

  void listen() {
    tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), port};
    acceptor.open(ep.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen();
    port = acceptor.local_endpoint().port();
    asio::co_spawn(io, accept_loop(++generation), asio::detached);
  }

  void close_all() {
    boost::system::error_code ec;
    acceptor.close(ec);
    for (auto& s : sessions)
      s->drop();
  }

  asio::awaitable<void> accept_loop(std::uint64_t gen) {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_nothrow);
      if (gen != generation || !acceptor.is_open())
        co_return;
      if (ec)
        continue;
      ++accepted;
      if (tls)
        asio::co_spawn(io, serve<tls_ws>(std::move(sock)), asio::detached);
      else
        asio::co_spawn(io, serve<plain_ws>(std::move(sock)), asio::detached);
    }
  }

  template <class WS>
  asio::awaitable<void> serve(tcp::socket sock) {
    std::shared_ptr<session<WS>> s;
    if constexpr (std::is_same_v<WS, tls_ws>) {
      s = std::make_shared<session<WS>>(std::move(sock), *tls);
      sessions.insert(s);
      beast::get_lowest_layer(s->ws).expires_after(std::chrono::seconds{10});
      auto [hec] = co_await s->ws.next_layer().async_handshake(ssl::stream_base::server, use_nothrow);
      if (hec) {
        sessions.erase(s);
        co_return;
      }
      if (auto* name = SSL_get_servername(s->ws.next_layer().native_handle(),
                                          TLSEXT_NAMETYPE_host_name))
        last_sni = name;
    } else {
      s = std::make_shared<session<WS>>(std::move(sock));
      sessions.insert(s);
    }
    beast::get_lowest_layer(s->ws).expires_never();
    s->ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    s->ws.read_message_max(std::size_t{1} << 20);
    auto [aec] = co_await s->ws.async_accept(use_nothrow);
    if (aec) {
      sessions.erase(s);
      co_return;
    }
    s->open = true;
    beast::flat_buffer buffer;
    for (;;) {
      auto [rec, n] = co_await s->ws.async_read(buffer, use_nothrow);
      (void)n;
      if (rec)
        break;
      handle(*s, beast::buffers_to_string(buffer.data()));
      buffer.consume(buffer.size());
      if (s->paused && s->open) {
        // No read pending: pings go unanswered, like a relay that hangs.
        s->wake.expires_at(asio::steady_timer::time_point::max());
        co_await s->wake.async_wait(use_nothrow);
        break;
      }
    }
    s->open = false;
    sessions.erase(s);
  }

  static std::string frame(json::array a) { return json::serialize(a); }

  void handle(session_base& s, const std::string& text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_array() || v.as_array().empty() || !v.as_array()[0].is_string()) {
      s.send(frame({"NOTICE", "invalid: not a NIP-01 message"}));
      return;
    }
    auto& msg = v.as_array();
    auto type = std::string{msg[0].as_string()};
    if (type == "EVENT" && msg.size() == 2 && msg[1].is_object()) {
      auto& ev = msg[1].as_object();
      auto* idv = ev.if_contains("id");
      std::string id = idv && idv->is_string() ? std::string{idv->as_string()} : std::string{};
      ++event_frames[id];
      if (!reject_message.empty()) {
        s.send(frame({"OK", id, false, reject_message}));
        return;
      }
      if (stored_ids.count(id)) {
        s.send(frame({"OK", id, true, "duplicate: already have this event"}));
        return;
      }
      s.send(frame({"OK", id, true, ""}));
      add(ev);
    } else if (type == "REQ" && msg.size() >= 3 && msg[1].is_string()) {
      std::string sub{msg[1].as_string()};
      ++reqs[sub];
      json::array filters;
      for (std::size_t i = 2; i < msg.size(); ++i)
        if (msg[i].is_object())
          filters.push_back(msg[i]);
      s.subs[sub] = filters;
      // Each filter's limit applies to its own initial query (newest first).
      std::set<std::string> sent;
      std::vector<const json::object*> out;
      for (auto& f : filters) {
        std::vector<const json::object*> hits;
        for (auto& ev : events)
          if (matches(f.as_object(), ev))
            hits.push_back(&ev);
        std::stable_sort(hits.begin(), hits.end(), [](auto* a, auto* b) {
          return created_at(*a) > created_at(*b);
        });
        if (auto* limit = f.as_object().if_contains("limit"); limit && limit->is_number())
          hits.resize(std::min<std::size_t>(hits.size(), limit->to_number<std::size_t>()));
        for (auto* h : hits)
          if (sent.insert(std::string{h->at("id").as_string()}).second)
            out.push_back(h);
      }
      for (auto* ev : out)
        s.send(frame({"EVENT", sub, *ev}));
      s.send(frame({"EOSE", sub}));
    } else if (type == "CLOSE" && msg.size() == 2 && msg[1].is_string()) {
      std::string sub{msg[1].as_string()};
      ++closes[sub];
      s.subs.erase(sub);
    } else {
      s.send(frame({"NOTICE", "invalid: unsupported message " + type}));
    }
  }

  void add(const json::object& ev) {
    auto* idv = ev.if_contains("id");
    if (!idv || !idv->is_string() || !stored_ids.insert(std::string{idv->as_string()}).second)
      return;
    events.push_back(ev);
    for (auto& s : sessions)
      for (auto& [sub, filters] : s->subs)
        for (auto& f : filters)
          if (matches(f.as_object(), ev)) {
            s->send(frame({"EVENT", sub, ev}));
            break;
          }
  }
};

test_relay::test_relay(test_relay_options options) : impl_(std::make_unique<impl>(std::move(options))) {
  impl_->listen();
  impl_->work.emplace(asio::make_work_guard(impl_->io));
  impl_->thread = std::thread([p = impl_.get()] { p->io.run(); });
}

test_relay::~test_relay() {
  impl_->call([p = impl_.get()] { p->close_all(); });
  impl_->work.reset();
  impl_->io.stop();
  impl_->thread.join();
  impl_->sessions.clear();
}

std::uint16_t test_relay::port() const { return impl_->port; }

std::string test_relay::url(const std::string& host) const {
  return std::string{impl_->tls ? "wss://" : "ws://"} + host + ":" + std::to_string(impl_->port) + "/";
}

void test_relay::reject_events(const std::string& message) {
  impl_->call([p = impl_.get(), message] { p->reject_message = message; });
}

void test_relay::store(const std::string& event_json) {
  auto v = json::parse(event_json);
  impl_->call([p = impl_.get(), &v] { p->add(v.as_object()); });
}

void test_relay::send_raw(const std::string& frame, bool binary) {
  impl_->call([p = impl_.get(), &frame, binary] {
    for (auto& s : p->sessions)
      s->send(frame, binary);
  });
}

void test_relay::drop_connections() {
  impl_->call([p = impl_.get()] {
    for (auto& s : p->sessions)
      s->drop();
  });
}

void test_relay::pause_reading() {
  impl_->call([p = impl_.get()] {
    for (auto& s : p->sessions)
      s->paused = true;
  });
}

void test_relay::stop() {
  impl_->call([p = impl_.get()] { p->close_all(); });
}

void test_relay::start() {
  impl_->call([p = impl_.get()] { p->listen(); });
}

std::size_t test_relay::open_connections() const {
  return impl_->call([p = impl_.get()] { return p->sessions.size(); });
}

std::size_t test_relay::accepted_connections() const {
  return impl_->call([p = impl_.get()] { return p->accepted; });
}

std::size_t test_relay::req_count(const std::string& sub_id) const {
  return impl_->call([p = impl_.get(), &sub_id] {
    auto i = p->reqs.find(sub_id);
    return i == p->reqs.end() ? std::size_t{0} : i->second;
  });
}

std::size_t test_relay::close_count(const std::string& sub_id) const {
  return impl_->call([p = impl_.get(), &sub_id] {
    auto i = p->closes.find(sub_id);
    return i == p->closes.end() ? std::size_t{0} : i->second;
  });
}

std::size_t test_relay::event_count(const std::string& event_id) const {
  return impl_->call([p = impl_.get(), &event_id] {
    auto i = p->event_frames.find(event_id);
    return i == p->event_frames.end() ? std::size_t{0} : i->second;
  });
}

std::vector<std::string> test_relay::stored_events() const {
  return impl_->call([p = impl_.get()] {
    std::vector<std::string> out;
    for (auto& ev : p->events)
      out.push_back(json::serialize(ev));
    return out;
  });
}

std::string test_relay::last_server_name() const {
  return impl_->call([p = impl_.get()] { return p->last_sni; });
}

// -- silent_listener ----------------------------------------------------------------

struct silent_listener::impl {
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint{asio::ip::make_address("127.0.0.1"), 0}};
  std::uint16_t port = acceptor.local_endpoint().port();
  std::vector<tcp::socket> held;
  std::atomic<std::size_t> accepted{0};
  std::thread thread;

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_nothrow);
      if (!acceptor.is_open())
        co_return;
      if (ec)
        continue;
      held.push_back(std::move(sock));
      ++accepted;
    }
  }
};

silent_listener::silent_listener() : impl_(std::make_unique<impl>()) {
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([p = impl_.get()] { p->io.run(); });
}

silent_listener::~silent_listener() {
  asio::post(impl_->io, [p = impl_.get()] {
    boost::system::error_code ec;
    p->acceptor.close(ec);
    p->held.clear();
  });
  impl_->thread.join();
}

std::uint16_t silent_listener::port() const { return impl_->port; }

std::size_t silent_listener::accepted() const { return impl_->accepted; }

}  // namespace ticktock::test
