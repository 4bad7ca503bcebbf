// The Nostr relay pool. Each relay has one coroutine on its own strand that
// connects (resolve, TCP, TLS, WebSocket handshake), serves the connection
// and, after any drop, waits out a backoff delay and starts again. The pool's
// bookkeeping (subscriptions, publishes, dedupe, per-relay counters) sits
// behind one mutex; a relay's strand reconciles its connection with it in
// sync(): REQ for every subscription the connection has not seen, CLOSE for
// every one it should no longer have, and every queued publish. Callbacks run
// on the strand with no lock held.

#include "ticktock/drivers/nostr_relay.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/json.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <list>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace ticktock::drivers {

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using strand_type = asio::strand<asio::io_context::executor_type>;
using plain_ws = websocket::stream<beast::tcp_stream>;
using tls_ws = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;
using system_clock = std::chrono::system_clock;
using steady_clock = std::chrono::steady_clock;

// How long the destructor waits for close handshakes before it closes the
// remaining sockets.
constexpr std::chrono::milliseconds shutdown_grace{1000};

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

bool is_event_id(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::int64_t unix_ms(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A bounded set of keys; inserting beyond the capacity forgets the least
// recently seen key.
class lru_set {
public:
  explicit lru_set(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

  // True when key is present (it becomes the most recently seen).
  bool touch(const std::string& key) {
    auto i = index_.find(key);
    if (i == index_.end())
      return false;
    order_.splice(order_.begin(), order_, i->second);
    return true;
  }

  // Inserts key; false when it was present already (it becomes the most
  // recently seen).
  bool insert(const std::string& key) {
    auto i = index_.find(key);
    if (i != index_.end()) {
      order_.splice(order_.begin(), order_, i->second);
      return false;
    }
    order_.push_front(key);
    index_.emplace(order_.front(), order_.begin());
    while (index_.size() > capacity_) {
      index_.erase(order_.back());
      order_.pop_back();
    }
    return true;
  }

private:
  std::size_t capacity_;
  std::list<std::string> order_;
  // Keys view the strings in order_, whose nodes never move.
  std::unordered_map<std::string_view, std::list<std::string>::iterator> index_;
};

// A publish waiting for a connection, or sent and waiting for its OK.
struct queued_publish {
  std::string event_id;
  std::shared_ptr<const std::string> frame;
};

struct relay_conn;

// Publishes move from a relay's queue to its connection only while fewer
// than this many bytes wait to be written there, so that a relay that reads
// slowly (or not at all) holds them in the bounded queue, not in memory of
// its connection. A hung relay is then found by the ping timeout.
constexpr std::size_t send_window_bytes = std::size_t{1} << 20;

// One WebSocket (opening, open or closing) with its write queue, one write
// in flight (as in Beast's chat-multi example). Held by the session
// coroutine and by every pending handler, so the stream outlives its
// operations. Used only on its relay's strand.
struct connection_base {
  virtual ~connection_base() = default;
  virtual void send(std::string frame) = 0;
  // A close handshake when open (bounded by the handshake timeout), else abort().
  virtual void close() = 0;
  // Closes the socket: every pending operation completes with an error.
  virtual void abort() = 0;
  bool open = false;  // the WebSocket handshake is done and no close was started
  std::string failure;  // why writing failed, if it did
  std::size_t queued_bytes = 0;  // waiting to be written, including the one in flight
};

}  // namespace

// -- relay_url ----------------------------------------------------------------

std::string_view to_string(publish_state s) noexcept {
  switch (s) {
    case publish_state::pending: return "pending";
    case publish_state::accepted: return "accepted";
    case publish_state::rejected: return "rejected";
    case publish_state::dropped: return "dropped";
  }
  return "unknown";
}

std::string_view to_string(relay_state s) noexcept {
  switch (s) {
    case relay_state::connecting: return "connecting";
    case relay_state::connected: return "connected";
    case relay_state::backoff: return "backoff";
    case relay_state::closed: return "closed";
  }
  return "unknown";
}

std::string relay_pool_status::to_json() const {
  auto time = [](const std::optional<system_clock::time_point>& t) -> json::value {
    if (!t)
      return nullptr;
    return unix_ms(*t);
  };
  json::array list;
  for (auto& r : relays) {
    json::array subs;
    for (auto& s : r.subscriptions)
      subs.push_back(json::object{{"sub_id", s.sub_id},
                                  {"eose", s.eose},
                                  {"closed", s.closed},
                                  {"closed_message", s.closed_message}});
    list.push_back(json::object{{"url", r.url},
                                {"state", to_string(r.state)},
                                {"attempts", r.attempts},
                                {"consecutive_failures", r.consecutive_failures},
                                {"last_error", r.last_error},
                                {"connected_since", time(r.connected_since)},
                                {"next_retry", time(r.next_retry)},
                                {"messages_in", r.messages_in},
                                {"messages_out", r.messages_out},
                                {"events_received", r.events_received},
                                {"duplicates_dropped", r.duplicates_dropped},
                                {"oversized_dropped", r.oversized_dropped},
                                {"malformed_dropped", r.malformed_dropped},
                                {"refused_dropped", r.refused_dropped},
                                {"notices", r.notices},
                                {"last_notice", r.last_notice},
                                {"queued_publishes", r.queued_publishes},
                                {"subscriptions", std::move(subs)}});
  }
  return json::serialize(json::object{{"relays", std::move(list)}});
}

// -- the pool's shared state --------------------------------------------------

struct relay_pool::impl {
  struct subscription {
    std::string req_frame;  // ["REQ", sub_id, filter...]
    relay_event_handler on_event;
    relay_eose_handler on_eose;
    std::uint64_t generation = 0;  // changes when the subscription is replaced
  };
  struct publish_record {
    std::map<std::string, relay_publish_status> per_relay;  // by relay URL
  };

  explicit impl(relay_pool_options o)
    : options(std::move(o)), seen(options.dedupe_capacity) {}

  ~impl() {
    // The threads are joined. Relays whose coroutines have ended die here;
    // the others die with the suspended coroutines in the io_context's
    // destructor, while its services still exist.
    relays.clear();
    io.reset();
  }

  void shutdown();

  // Loads OpenSSL's default CA locations and tls_ca_dir into the TLS
  // context, once, before the first TLS connection: parsing the system
  // bundle takes tens of milliseconds, which pools without wss:// relays
  // should not pay. Called with mtx held.
  void load_system_cas() {
    if (system_cas_loaded || !options.tls_verify)
      return;
    system_cas_loaded = true;
    boost::system::error_code ec;
    tls.set_default_verify_paths(ec);  // a system without defaults still has tls_ca_dir
    std::error_code fec;
    if (!options.tls_ca_dir.empty() && std::filesystem::is_directory(options.tls_ca_dir, fec))
      tls.add_verify_path(options.tls_ca_dir, ec);
  }

  relay_pool_options options;
  ssl::context tls{ssl::context::tls_client};
  std::unique_ptr<asio::io_context> io = std::make_unique<asio::io_context>();
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  // -- guarded by mtx --
  mutable std::mutex mtx;
  std::condition_variable idle;
  std::size_t running = 0;  // relay coroutines that have not ended
  bool stopping = false;
  bool system_cas_loaded = false;
  std::map<std::string, std::shared_ptr<relay_conn>> relays;  // by normalized URL
  std::map<std::string, std::shared_ptr<const subscription>> subs;
  std::uint64_t next_generation = 1;
  std::unordered_map<std::string, publish_record> publishes;
  std::deque<std::string> publish_order;  // oldest first, for forgetting
  lru_set seen;
};

namespace {

// One relay: its connection loop, strand and bookkeeping.
struct relay_conn : std::enable_shared_from_this<relay_conn> {
  relay_conn(relay_pool::impl& p, relay_url u, std::string k)
    : pool(p), url(std::move(u)), key(std::move(k)), strand(asio::make_strand(*p.io)),
      timer(strand), rng(std::random_device{}()) {
    st.url = key;
  }

  relay_pool::impl& pool;
  const relay_url url;
  const std::string key;  // normalized URL
  strand_type strand;
  asio::steady_timer timer;

  // -- used on the strand only --
  std::shared_ptr<connection_base> current;
  std::optional<tcp::resolver> resolver;
  bool stop_requested = false;
  std::map<std::string, std::uint64_t> sent_subs;  // sub id -> generation sent on this connection
  bool window_full = false;  // sync() left publishes queued for lack of send window
  std::mt19937_64 rng;

  // -- guarded by pool.mtx --
  relay_status st;
  bool removed = false;
  std::deque<queued_publish> unsent;     // waiting for a connection
  std::deque<queued_publish> in_flight;  // sent on this connection, no OK yet
  std::map<std::string, relay_subscription_status> sub_status;  // answers on this connection

  // -- connection loop --

  asio::awaitable<void> run(std::shared_ptr<relay_conn> self);
  template <class WS>
  asio::awaitable<std::string> session(steady_clock::duration& uptime);
  std::chrono::milliseconds next_delay(bool stable);

  // Sends what the connection lacks: subscriptions, CLOSEs, publishes.
  void sync();
  void stop(bool graceful);
  void handle_frame(std::string_view text, bool binary);
  // After each write: count it, and move more publishes to the connection
  // if sync() had to stop for lack of window.
  void written(std::size_t backlog) {
    {
      std::lock_guard<std::mutex> guard{pool.mtx};
      ++st.messages_out;
    }
    if (window_full && backlog < send_window_bytes / 2)
      sync();
  }
};

template <class WS>
struct connection final : connection_base, std::enable_shared_from_this<connection<WS>> {
  template <class... Args>
  explicit connection(std::weak_ptr<relay_conn> r, Args&&... args)
    : relay(std::move(r)), ws(std::forward<Args>(args)...) {}

  std::weak_ptr<relay_conn> relay;
  WS ws;
  std::deque<std::string> queue;
  bool writing = false;

  void send(std::string frame) override {
    if (!open)
      return;
    queued_bytes += frame.size();
    queue.push_back(std::move(frame));
    if (!writing)
      write_next();
  }

  void write_next() {
    if (queue.empty() || !open) {
      writing = false;
      return;
    }
    writing = true;
    ws.async_write(asio::buffer(queue.front()),
                   [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                     self->queued_bytes -= self->queue.front().size();
                     self->queue.pop_front();
                     if (ec) {
                       self->writing = false;
                       if (self->failure.empty() && ec != asio::error::operation_aborted)
                         self->failure = "write: " + ec.message();
                       self->abort();  // the reader sees the drop
                       return;
                     }
                     self->write_next();
                     if (auto r = self->relay.lock())
                       r->written(self->queued_bytes);
                   });
  }

  void close() override {
    if (!open) {
      abort();
      return;
    }
    open = false;
    // The pending read ends with websocket::error::closed when the relay
    // answers, or with a timeout.
    ws.async_close(websocket::close_code::normal,
                   [self = this->shared_from_this()](beast::error_code ec) {
                     if (ec)
                       self->abort();
                   });
  }

  void abort() override {
    open = false;
    beast::get_lowest_layer(ws).close();
  }
};

std::string describe_tls_failure(SSL* ssl, const beast::error_code& ec) {
  std::string out = ec.message();
  auto result = SSL_get_verify_result(ssl);
  if (result != X509_V_OK)
    out += std::string{" ("} + X509_verify_cert_error_string(result) + ")";
  return out;
}

asio::awaitable<void> relay_conn::run(std::shared_ptr<relay_conn> self) {
  (void)self;  // keeps this relay alive while the loop runs
  while (!stop_requested) {
    {
      std::lock_guard<std::mutex> guard{pool.mtx};
      ++st.attempts;
      st.state = relay_state::connecting;
      st.next_retry.reset();
    }
    steady_clock::duration uptime{};
    std::string why;
    if (url.tls)
      why = co_await session<tls_ws>(uptime);
    else
      why = co_await session<plain_ws>(uptime);
    if (stop_requested)
      break;
    auto delay = next_delay(uptime >= pool.options.backoff_reset_after);
    {
      std::lock_guard<std::mutex> guard{pool.mtx};
      st.last_error = why;
      st.state = relay_state::backoff;
      st.next_retry = system_clock::now() + delay;
    }
    timer.expires_after(delay);
    co_await timer.async_wait(use_nothrow);
  }
  std::lock_guard<std::mutex> guard{pool.mtx};
  st.state = relay_state::closed;
  st.next_retry.reset();
  st.connected_since.reset();
  if (--pool.running == 0)
    pool.idle.notify_all();
}

std::chrono::milliseconds relay_conn::next_delay(bool stable) {
  std::lock_guard<std::mutex> guard{pool.mtx};
  if (stable)
    st.consecutive_failures = 0;
  ++st.consecutive_failures;
  auto doublings = std::min<std::uint64_t>(st.consecutive_failures - 1, 40);
  auto initial = static_cast<double>(pool.options.backoff_initial.count());
  auto base = std::min(static_cast<double>(pool.options.backoff_max.count()),
                       initial * static_cast<double>(std::uint64_t{1} << doublings));
  // Jitter: a uniform pick from [base/2, base], so relays that dropped
  // together do not all come back at the same instant.
  std::uniform_real_distribution<double> jitter{0.5, 1.0};
  return std::chrono::milliseconds{std::max<std::int64_t>(1, static_cast<std::int64_t>(base * jitter(rng)))};
}

template <class WS>
asio::awaitable<std::string> relay_conn::session(steady_clock::duration& uptime) {
  constexpr bool secure = std::is_same_v<WS, tls_ws>;
  auto& opts = pool.options;
  std::shared_ptr<connection<WS>> c;
  if constexpr (secure)
    c = std::make_shared<connection<WS>>(weak_from_this(), strand, pool.tls);
  else
    c = std::make_shared<connection<WS>>(weak_from_this(), strand);
  current = c;
  auto& ws = c->ws;
  auto& stream = beast::get_lowest_layer(ws);
  struct reset_current {
    relay_conn& r;
    ~reset_current() {
      if (r.current)
        r.current->abort();
      r.current.reset();
    }
  } cleanup{*this};

  // -- resolve --
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code aec;
  auto over = opts.resolve.find(url.host);
  auto literal = asio::ip::make_address(over != opts.resolve.end() ? over->second : url.host, aec);
  if (!aec) {
    endpoints.emplace_back(literal, url.port);
  } else {
    resolver.emplace(strand);
    auto [rec, results] =
      co_await resolver->async_resolve(url.host, std::to_string(url.port), use_nothrow);
    resolver.reset();
    if (stop_requested)
      co_return "stopped";
    if (rec)
      co_return "resolve " + url.host + ": " + rec.message();
    for (auto& r : results)
      endpoints.push_back(r.endpoint());
  }

  // -- connect --
  stream.expires_after(opts.connect_timeout);
  auto [cec, ep] = co_await stream.async_connect(endpoints, use_nothrow);
  (void)ep;
  if (stop_requested)
    co_return "stopped";
  if (cec)
    co_return "connect: " + cec.message();

  // -- TLS --
  if constexpr (secure) {
    auto* ssl = ws.next_layer().native_handle();
    // SNI carries host names only (RFC 6066), never IP addresses.
    if (!is_ip_literal(url.host) && !SSL_set_tlsext_host_name(ssl, url.host.c_str()))
      co_return "TLS: cannot set the server name";
    if (opts.tls_verify) {
      // OpenSSL checks the name against the certificate, so that a mismatch
      // has its own verify error ("hostname mismatch").
      auto* param = SSL_get0_param(ssl);
      int ok = is_ip_literal(url.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str())
                                       : X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
      if (ok != 1)
        co_return "TLS: cannot set the expected host name";
    }
    stream.expires_after(opts.connect_timeout);
    auto [hec] = co_await ws.next_layer().async_handshake(ssl::stream_base::client, use_nothrow);
    if (stop_requested)
      co_return "stopped";
    if (hec)
      co_return "TLS handshake: " + describe_tls_failure(ssl, hec);
  }

  // -- WebSocket handshake --
  stream.expires_never();
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = opts.connect_timeout;
  if (opts.ping_interval.count() > 0) {
    timeouts.idle_timeout = opts.ping_interval * 2;  // a ping goes out at half of it
    timeouts.keep_alive_pings = true;
  } else {
    timeouts.idle_timeout = websocket::stream_base::none();
    timeouts.keep_alive_pings = false;
  }
  ws.set_option(timeouts);
  ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
    req.set(beast::http::field::user_agent, "ticktock-relay-pool");
  }));
  // Frames above the limit are skipped below; far bigger ones reset the
  // connection rather than being streamed through.
  auto hard_max = opts.max_message_bytes * 16;
  ws.read_message_max(hard_max);
  ws.text(true);
  auto host_header = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != (url.tls ? 443 : 80))
    host_header += ":" + std::to_string(url.port);
  auto [wec] = co_await ws.async_handshake(host_header, url.target, use_nothrow);
  if (stop_requested)
    co_return "stopped";
  if (wec)
    co_return "WebSocket handshake: " + wec.message();

  // -- open --
  c->open = true;
  auto opened = steady_clock::now();
  {
    std::lock_guard<std::mutex> guard{pool.mtx};
    st.state = relay_state::connected;
    st.connected_since = system_clock::now();
  }
  sent_subs.clear();
  sync();

  // Messages are read in pieces so that an oversized one can be skipped
  // without buffering it.
  std::string why;
  beast::flat_buffer buffer;
  bool skipping = false;
  auto piece = std::min<std::size_t>(opts.max_message_bytes + 1, std::size_t{64} << 10);
  for (;;) {
    auto [rec, n] = co_await ws.async_read_some(buffer, piece, use_nothrow);
    (void)n;
    if (rec) {
      if (rec == websocket::error::closed) {
        auto& reason = ws.reason();
        why = "closed by the relay (code " + std::to_string(static_cast<unsigned>(reason.code));
        if (!reason.reason.empty())
          why += ", " + std::string{reason.reason.data(), reason.reason.size()};
        why += ")";
      } else if (rec == websocket::error::message_too_big) {
        why = "a frame above " + std::to_string(hard_max) + " bytes reset the connection";
        std::lock_guard<std::mutex> guard{pool.mtx};
        ++st.messages_in;
        ++st.oversized_dropped;
      } else if (rec == beast::error::timeout)
        why = "the relay stopped answering (no data for twice the ping interval)";
      else if (!c->failure.empty())
        why = c->failure;  // a failed write closed the socket under the read
      else
        why = "read: " + rec.message();
      break;
    }
    if (!skipping && buffer.size() > opts.max_message_bytes)
      skipping = true;
    if (skipping)
      buffer.clear();
    if (!ws.is_message_done())
      continue;
    if (skipping) {
      skipping = false;
      std::lock_guard<std::mutex> guard{pool.mtx};
      ++st.messages_in;
      ++st.oversized_dropped;
      continue;
    }
    auto data = buffer.data();
    handle_frame(std::string_view{static_cast<const char*>(data.data()), data.size()},
                 !ws.got_text());
    buffer.clear();
  }
  uptime = steady_clock::now() - opened;
  {
    // Unanswered publishes go out again on the next connection.
    std::lock_guard<std::mutex> guard{pool.mtx};
    st.connected_since.reset();
    for (auto i = in_flight.rbegin(); i != in_flight.rend(); ++i)
      unsent.push_front(std::move(*i));
    in_flight.clear();
    sub_status.clear();
  }
  sent_subs.clear();
  co_return stop_requested ? std::string{"stopped"} : why;
}

void relay_conn::sync() {
  if (!current || !current->open)
    return;
  std::vector<std::string> frames;
  {
    std::lock_guard<std::mutex> guard{pool.mtx};
    if (removed)
      return;
    for (auto& [id, sub] : pool.subs) {
      auto i = sent_subs.find(id);
      if (i != sent_subs.end() && i->second == sub->generation)
        continue;
      frames.push_back(sub->req_frame);
      sent_subs[id] = sub->generation;
      sub_status[id] = relay_subscription_status{id};
    }
    for (auto i = sent_subs.begin(); i != sent_subs.end();) {
      if (pool.subs.count(i->first)) {
        ++i;
        continue;
      }
      frames.push_back(json::serialize(json::array{"CLOSE", i->first}));
      sub_status.erase(i->first);
      i = sent_subs.erase(i);
    }
    window_full = false;
    auto backlog = current->queued_bytes;
    while (!unsent.empty()) {
      auto size = unsent.front().frame->size();
      if (backlog > 0 && backlog + size > send_window_bytes) {
        window_full = true;
        break;
      }
      backlog += size;
      frames.push_back(*unsent.front().frame);
      in_flight.push_back(std::move(unsent.front()));
      unsent.pop_front();
    }
    // A relay that never answers OK must not grow this without bound; the
    // oldest stay pending but are not sent again after a reconnect.
    while (in_flight.size() > pool.options.max_tracked_publishes)
      in_flight.pop_front();
  }
  for (auto& f : frames)
    current->send(std::move(f));
}

void relay_conn::stop(bool graceful) {
  stop_requested = true;
  timer.cancel();
  if (resolver)
    resolver->cancel();
  if (current) {
    if (graceful)
      current->close();
    else
      current->abort();
  }
}

// Routes one frame from the relay. Anything that is not a NIP-01 relay
// message of a known shape is counted and dropped.
void relay_conn::handle_frame(std::string_view text, bool binary) {
  std::unique_lock<std::mutex> lock{pool.mtx};
  ++st.messages_in;
  auto malformed = [&] { ++st.malformed_dropped; };
  if (removed)
    return;
  if (binary)
    return malformed();
  lock.unlock();
  boost::system::error_code ec;
  auto parsed = json::parse(text, ec);
  lock.lock();
  if (ec || !parsed.is_array() || parsed.as_array().empty() || !parsed.as_array()[0].is_string())
    return malformed();
  auto& msg = parsed.as_array();
  std::string_view type = msg[0].as_string();

  if (type == "EVENT") {
    if (msg.size() != 3 || !msg[1].is_string() || !msg[2].is_object())
      return malformed();
    auto& event = msg[2].as_object();
    auto* id = event.if_contains("id");
    if (!id || !id->is_string() || !is_event_id(id->as_string()))
      return malformed();
    std::string sub_id{msg[1].as_string()};
    auto sub = pool.subs.find(sub_id);
    if (sub == pool.subs.end())
      return;  // closed meanwhile
    ++st.events_received;
    std::string event_id{id->as_string()};
    auto dedupe_key =
      pool.options.dedupe == dedupe_scope::subscription ? sub_id + " " + event_id : event_id;
    // Copies of a delivered event are dropped before the accept hook (which
    // may check a signature) sees them. Only accepted events are remembered,
    // so a refused copy (a forgery with the same id) cannot hide the genuine
    // event arriving later from another relay.
    if (pool.seen.touch(dedupe_key)) {
      ++st.duplicates_dropped;
      return;
    }
    auto event_json = json::serialize(event);
    if (pool.options.accept) {
      lock.unlock();
      bool accepted = false;
      try {
        accepted = pool.options.accept(event_json);
      } catch (...) {
      }
      lock.lock();
      if (removed)
        return;
      if (!accepted) {
        ++st.refused_dropped;
        return;
      }
      sub = pool.subs.find(sub_id);
      if (sub == pool.subs.end())
        return;
    }
    if (!pool.seen.insert(dedupe_key)) {
      ++st.duplicates_dropped;  // another relay's copy was accepted meanwhile
      return;
    }
    auto handler = sub->second;
    lock.unlock();
    try {
      handler->on_event(key, sub_id, event_json);
    } catch (...) {
      // A callback's exception must not end the connection loop.
    }
    return;
  }

  if (type == "OK") {
    if (msg.size() < 3 || msg.size() > 4 || !msg[1].is_string() || !msg[2].is_bool()
        || (msg.size() == 4 && !msg[3].is_string()))
      return malformed();
    std::string event_id{msg[1].as_string()};
    auto i = std::find_if(in_flight.begin(), in_flight.end(),
                          [&](const queued_publish& q) { return q.event_id == event_id; });
    if (i != in_flight.end())
      in_flight.erase(i);
    auto record = pool.publishes.find(event_id);
    if (record == pool.publishes.end())
      return;
    auto entry = record->second.per_relay.find(key);
    if (entry == record->second.per_relay.end() || entry->second.state != publish_state::pending)
      return;
    entry->second.state = msg[2].as_bool() ? publish_state::accepted : publish_state::rejected;
    entry->second.message = msg.size() == 4 ? std::string{msg[3].as_string()} : std::string{};
    auto status = entry->second;
    auto handler = pool.options.on_ok;
    lock.unlock();
    if (handler) {
      try {
        handler(event_id, status);
      } catch (...) {
      }
    }
    return;
  }

  if (type == "EOSE") {
    if (msg.size() != 2 || !msg[1].is_string())
      return malformed();
    std::string sub_id{msg[1].as_string()};
    auto sub = pool.subs.find(sub_id);
    if (sub == pool.subs.end())
      return;
    sub_status[sub_id].sub_id = sub_id;
    sub_status[sub_id].eose = true;
    auto handler = sub->second;
    lock.unlock();
    if (handler->on_eose) {
      try {
        handler->on_eose(key, sub_id);
      } catch (...) {
      }
    }
    return;
  }

  if (type == "CLOSED") {
    if (msg.size() < 2 || msg.size() > 3 || !msg[1].is_string()
        || (msg.size() == 3 && !msg[2].is_string()))
      return malformed();
    std::string sub_id{msg[1].as_string()};
    if (!pool.subs.count(sub_id))
      return;
    auto& s = sub_status[sub_id];
    s.sub_id = sub_id;
    s.closed = true;
    s.closed_message = msg.size() == 3 ? std::string{msg[2].as_string()} : std::string{};
    return;
  }

  if (type == "NOTICE") {
    if (msg.size() != 2 || !msg[1].is_string())
      return malformed();
    ++st.notices;
    st.last_notice = std::string{msg[1].as_string()};
    return;
  }

  // Valid NIP-42 / NIP-45 messages this pool does not act on.
  if (type == "AUTH" || type == "COUNT")
    return;
  malformed();
}

}  // namespace

// -- relay_pool -----------------------------------------------------------------

void relay_pool::impl::shutdown() {
  std::vector<std::shared_ptr<relay_conn>> all;
  {
    std::lock_guard<std::mutex> guard{mtx};
    if (stopping)
      return;
    stopping = true;
    for (auto& [url, r] : relays)
      all.push_back(r);
  }
  for (auto& r : all)
    asio::post(r->strand, [r] { r->stop(true); });
  {
    // Relays removed earlier may still be closing: `running` counts them too.
    std::unique_lock<std::mutex> lock{mtx};
    idle.wait_for(lock, shutdown_grace, [&] { return running == 0; });
  }
  // Whatever has not finished (a relay that ignores the close handshake) is
  // abandoned: its sockets close when the io_context is destroyed.
  work.reset();
  io->stop();
  for (auto& t : threads)
    t.join();
  threads.clear();
}

relay_pool::relay_pool(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

relay_pool::~relay_pool() {
  if (impl_)
    impl_->shutdown();
}

expected<std::unique_ptr<relay_pool>> relay_pool::create(relay_pool_options options) {
  auto invalid = [](const std::string& what) { return error{errc::invalid_argument, what}; };
  if (options.threads == 0)
    return invalid("relay pool: threads must be at least 1");
  if (options.backoff_initial.count() <= 0 || options.backoff_max < options.backoff_initial)
    return invalid("relay pool: need 0 < backoff_initial <= backoff_max");
  if (options.connect_timeout.count() <= 0)
    return invalid("relay pool: connect_timeout must be positive");
  if (options.ping_interval.count() < 0)
    return invalid("relay pool: ping_interval must not be negative");
  if (options.max_message_bytes > (std::size_t{1} << 30))
    return invalid("relay pool: max_message_bytes must be at most 1 GiB");
  if (options.max_message_bytes == 0 || options.max_tracked_publishes == 0
      || options.dedupe_capacity == 0)
    return invalid("relay pool: max_message_bytes, max_tracked_publishes and dedupe_capacity "
                   "must be positive");
  for (auto& [host, ip] : options.resolve)
    if (!is_ip_literal(ip))
      return invalid("relay pool: resolve maps '" + host + "' to '" + ip
                     + "', which is not an IP address");

  auto p = std::make_unique<impl>(std::move(options));
  auto& o = p->options;
  SSL_CTX_set_min_proto_version(p->tls.native_handle(), TLS1_2_VERSION);
  if (o.tls_verify) {
    boost::system::error_code ec;
    p->tls.set_verify_mode(ssl::verify_peer);
    // The system store is loaded with the first wss:// relay (see
    // load_system_cas); a bad CA file is reported here.
    if (!o.tls_ca_file.empty()) {
      p->tls.load_verify_file(o.tls_ca_file, ec);
      if (ec)
        return invalid("relay pool: cannot load tls_ca_file '" + o.tls_ca_file
                       + "': " + ec.message());
    }
  } else {
    p->tls.set_verify_mode(ssl::verify_none);
  }

  p->work.emplace(asio::make_work_guard(*p->io));
  auto* raw = p.get();
  for (std::size_t i = 0; i < o.threads; ++i)
    p->threads.emplace_back([raw] {
      detail::name_this_thread("tt-relay");
      raw->io->run();
    });
  return std::unique_ptr<relay_pool>(new relay_pool(std::move(p)));
}

expected<std::string> relay_pool::add_relay(std::string_view url) {
  auto parsed = parse_relay_url(url);
  if (!parsed)
    return parsed.error_value();
  auto key = parsed->to_string();
  std::shared_ptr<relay_conn> r;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->stopping)
      return error{errc::shutting_down, "the relay pool is shutting down"};
    if (impl_->relays.count(key))
      return error{errc::already_exists, "the pool has relay " + key + " already"};
    if (parsed->tls)
      impl_->load_system_cas();
    r = std::make_shared<relay_conn>(*impl_, std::move(*parsed), key);
    impl_->relays.emplace(key, r);
    ++impl_->running;
  }
  asio::co_spawn(r->strand, r->run(r), asio::detached);
  return key;
}

error relay_pool::remove_relay(std::string_view url) {
  auto parsed = parse_relay_url(url);
  if (!parsed)
    return parsed.error_value();
  auto key = parsed->to_string();
  std::shared_ptr<relay_conn> r;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    auto i = impl_->relays.find(key);
    if (i == impl_->relays.end())
      return error{errc::not_found, "the pool has no relay " + key};
    r = i->second;
    impl_->relays.erase(i);
    r->removed = true;
    for (auto* q : {&r->unsent, &r->in_flight})
      for (auto& p : *q) {
        auto rec = impl_->publishes.find(p.event_id);
        if (rec == impl_->publishes.end())
          continue;
        auto e = rec->second.per_relay.find(key);
        if (e != rec->second.per_relay.end() && e->second.state == publish_state::pending)
          e->second = {key, publish_state::dropped, "the relay was removed"};
      }
    r->unsent.clear();
    r->in_flight.clear();
  }
  asio::post(r->strand, [r] { r->stop(true); });
  return {};
}

std::vector<std::string> relay_pool::relays() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  std::vector<std::string> out;
  for (auto& [url, r] : impl_->relays)
    out.push_back(url);
  return out;
}

error relay_pool::publish(std::string event_id, std::string event_json) {
  if (event_id.empty())
    return error{errc::invalid_argument, "publish: the event id is empty"};
  boost::system::error_code ec;
  auto parsed = json::parse(event_json, ec);
  if (ec || !parsed.is_object())
    return error{errc::invalid_argument, "publish: the event is not a JSON object"};
  if (auto* id = parsed.as_object().if_contains("id");
      id && (!id->is_string() || id->as_string() != event_id))
    return error{errc::invalid_argument, "publish: the event's id field differs from " + event_id};
  auto frame = std::make_shared<const std::string>("[\"EVENT\"," + event_json + "]");

  std::vector<std::shared_ptr<relay_conn>> targets;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->stopping)
      return error{errc::shutting_down, "the relay pool is shutting down"};
    auto [rec, inserted] = impl_->publishes.try_emplace(event_id);
    if (inserted)
      impl_->publish_order.push_back(event_id);
    for (auto& [url, r] : impl_->relays) {
      auto& s = rec->second.per_relay[url];
      s.relay = url;
      if (s.state == publish_state::accepted)
        continue;
      s.state = publish_state::pending;
      s.message.clear();
      auto& q = r->unsent;
      q.erase(std::remove_if(q.begin(), q.end(),
                             [&](const queued_publish& p) { return p.event_id == event_id; }),
              q.end());
      if (q.size() >= impl_->options.max_queued_publishes) {
        s.state = publish_state::dropped;
        s.message = "the relay's queue is full ("
                    + std::to_string(impl_->options.max_queued_publishes)
                    + " events wait for a connection)";
        continue;
      }
      q.push_back({event_id, frame});
      targets.push_back(r);
    }
    while (impl_->publish_order.size() > impl_->options.max_tracked_publishes) {
      impl_->publishes.erase(impl_->publish_order.front());
      impl_->publish_order.pop_front();
    }
  }
  for (auto& r : targets)
    asio::post(r->strand, [r] { r->sync(); });
  return {};
}

expected<std::vector<relay_publish_status>>
relay_pool::publish_status(const std::string& event_id) const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  auto rec = impl_->publishes.find(event_id);
  if (rec == impl_->publishes.end())
    return error{errc::not_found, "no tracked publish of event " + event_id};
  std::vector<relay_publish_status> out;
  for (auto& [url, s] : rec->second.per_relay)
    out.push_back(s);
  return out;
}

error relay_pool::subscribe(std::string sub_id, std::string filter_json,
                            relay_event_handler on_event, relay_eose_handler on_eose) {
  if (sub_id.empty() || sub_id.size() > 64)
    return error{errc::invalid_argument, "subscribe: the sub id must have 1 to 64 characters"};
  if (!on_event)
    return error{errc::invalid_argument, "subscribe: on_event is empty"};
  boost::system::error_code ec;
  auto parsed = json::parse(filter_json, ec);
  if (ec)
    return error{errc::invalid_argument, "subscribe: the filter is not JSON: " + ec.message()};
  json::array filters;
  if (parsed.is_object())
    filters.push_back(std::move(parsed));
  else if (parsed.is_array() && !parsed.as_array().empty()
           && std::all_of(parsed.as_array().begin(), parsed.as_array().end(),
                          [](const json::value& v) { return v.is_object(); }))
    filters = std::move(parsed.as_array());
  else
    return error{errc::invalid_argument,
                 "subscribe: the filter must be an object or a non-empty array of objects"};
  json::array req{"REQ", sub_id};
  for (auto& f : filters)
    req.push_back(std::move(f));

  auto sub = std::make_shared<impl::subscription>();
  sub->req_frame = json::serialize(req);
  sub->on_event = std::move(on_event);
  sub->on_eose = std::move(on_eose);
  std::vector<std::shared_ptr<relay_conn>> targets;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->stopping)
      return error{errc::shutting_down, "the relay pool is shutting down"};
    sub->generation = impl_->next_generation++;
    impl_->subs[sub_id] = std::move(sub);
    for (auto& [url, r] : impl_->relays)
      targets.push_back(r);
  }
  for (auto& r : targets)
    asio::post(r->strand, [r] { r->sync(); });
  return {};
}

error relay_pool::unsubscribe(const std::string& sub_id) {
  std::vector<std::shared_ptr<relay_conn>> targets;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (!impl_->subs.erase(sub_id))
      return error{errc::not_found, "no subscription " + sub_id};
    for (auto& [url, r] : impl_->relays)
      targets.push_back(r);
  }
  for (auto& r : targets)
    asio::post(r->strand, [r] { r->sync(); });
  return {};
}

relay_pool_status relay_pool::status() const {
  relay_pool_status out;
  std::lock_guard<std::mutex> guard{impl_->mtx};
  for (auto& [url, r] : impl_->relays) {
    auto s = r->st;
    s.queued_publishes = r->unsent.size();
    for (auto& [id, sub] : impl_->subs) {
      auto i = r->sub_status.find(id);
      s.subscriptions.push_back(i != r->sub_status.end() ? i->second
                                                         : relay_subscription_status{id});
    }
    out.relays.push_back(std::move(s));
  }
  return out;
}

}  // namespace ticktock::drivers
