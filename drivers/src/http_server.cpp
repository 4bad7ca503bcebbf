// The Boost.Beast side of the HTTP driver: accept, read with limits and a
// timeout, hand the request to the router (on a worker pool for the routes
// that may block on durability; agent routes answer through a callback),
// write the response, keep the connection alive. SSE streams stay on the
// connection and are woken by tick observers.
//
// Each I/O thread runs an io_context of its own; a connection is placed on
// one of them at accept (round-robin) and stays there, so its operations need
// no strand and the threads share no scheduler lock. Timeouts (read, write,
// an agent's reply) are deadlines that the thread's sweep checks a few times
// per timeout: a request arms no timer of its own.

#include "ticktock/drivers/http_server.hpp"
#include "ticktock/drivers/io_loops.hpp"
#include "ticktock/runtime/request_id.hpp"
#include "ticktock/runtime/text.hpp"

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "router.hpp"
#include "ticktock/actors/node.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace ticktock::drivers {

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using steady = std::chrono::steady_clock;
// How long stop() lets connections finish (answers being written, streams
// ending, WebSocket close handshakes) before it cuts them.
constexpr std::chrono::milliseconds shutdown_grace{1000};

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// RFC 9112, 6.1 and 6.3: a request body with Transfer-Encoding is delimited
// by its final coding, which must be chunked (else its length cannot be
// known: 400, and the connection closes, since where the next request starts
// is unknown too). Of the codings, only chunked is implemented: another
// before it (gzip, chunked) is 501. `beast_chunked` is the parser's own view,
// which must agree, so that the body read is the one checked here.
std::optional<response> check_framing(const http::fields& fields, bool beast_chunked) {
  auto [b, e] = fields.equal_range(http::field::transfer_encoding);
  if (b == e)
    return std::nullopt;
  std::vector<std::string> codings;
  for (auto i = b; i != e; ++i) {
    std::string_view v = i->value();
    for (;;) {
      auto comma = v.find(',');
      auto item = v.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t'))
        item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t'))
        item.remove_suffix(1);
      if (!item.empty())
        codings.push_back(lower(item));
      if (comma == std::string_view::npos)
        break;
      v.remove_prefix(comma + 1);
    }
  }
  if (codings.empty() || codings.back() != "chunked")
    return error_response(400, "BAD_REQUEST",
                          "malformed HTTP request: the final Transfer-Encoding must be chunked");
  codings.pop_back();
  if (std::find(codings.begin(), codings.end(), "chunked") != codings.end())
    return error_response(400, "BAD_REQUEST",
                          "malformed HTTP request: chunked applied more than once");
  if (!codings.empty())
    return error_response(501, "UNSUPPORTED_TRANSFER_CODING",
                          "transfer codings other than chunked are not implemented");
  if (!beast_chunked)
    return error_response(400, "BAD_REQUEST", "malformed HTTP request: bad Transfer-Encoding");
  return std::nullopt;
}

// RFC 9110, 6.6.1: the Date of a response ("Sun, 06 Nov 1994 08:49:37 GMT"),
// formatted once a second per thread.
std::string_view http_date() {
  thread_local std::time_t last = -1;
  thread_local char text[40] = {};
  auto now = std::time(nullptr);
  if (now != last) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                  tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    last = now;
  }
  return text;
}

// The authority of a request target in absolute form ("host:port" of
// "http://host:port/path"), which stands for Host (RFC 9112, 3.2.2); empty
// for any other form.
std::string_view absolute_authority(std::string_view target) {
  auto colon = target.find("://");
  if (target.starts_with('/') || colon == std::string_view::npos)
    return {};
  auto rest = target.substr(colon + 3);
  return rest.substr(0, rest.find_first_of("/?#"));
}

// RFC 9112, 3.2: Host is uri-host [":" port]: a name (letters, digits and
// -._~!$&'()*+,;=% ), an IPv4 address or an IP literal in brackets, and
// digits after a colon. No blanks, slashes or user info.
bool valid_host(std::string_view host) {
  if (host.empty())
    return true;  // HTTP/1.1 allows an empty Host for a URI without authority
  std::string_view name = host, port;
  if (host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string_view::npos)
      return false;
    name = host.substr(1, close - 1);
    auto rest = host.substr(close + 1);
    if (!rest.empty() && rest.front() != ':')
      return false;
    port = rest.empty() ? rest : rest.substr(1);
    if (name.empty() || name.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
      return false;
  } else {
    if (auto c = host.rfind(':'); c != std::string_view::npos) {
      name = host.substr(0, c);
      port = host.substr(c + 1);
      if (port.empty())
        return false;
    }
    constexpr std::string_view allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789-._~!$&'()*+,;=%";
    if (name.find_first_not_of(allowed) != std::string_view::npos)
      return false;
  }
  return port.size() <= 5 && port.find_first_not_of("0123456789") == std::string_view::npos;
}

// RFC 9112, 3.2.2: a server accepts a request target in absolute form
// ("http://host:port/path?query"), as if it were its origin form
// ("/path?query"); its authority stands for Host (absolute_authority).
std::string origin_form(std::string_view target) {
  auto colon = target.find("://");
  if (target.starts_with('/') || colon == std::string_view::npos)
    return std::string{target};
  auto scheme = lower(target.substr(0, colon));
  if (scheme != "http" && scheme != "https")
    return std::string{target};  // not one of ours: the router refuses it
  auto rest = target.substr(colon + 3);
  auto path = rest.find_first_of("/?#");
  if (path == std::string_view::npos || rest[path] == '#')
    return "/";
  return (rest[path] == '?' ? "/" : "") + std::string{rest.substr(path)};
}

// The head's fields as the router reads them, into `headers`; returns the
// name of a header the API reads as one value that is given twice (empty if
// none). Such a header is ambiguous (which Idempotency-Key deduplicates?
// which token?): the request is refused rather than the last one taken
// silently; two Hosts are, too (RFC 9112, 3.2). Other repeated headers: the
// last, but Cookie lines are one list (RFC 9113, 8.2.3: the first
// ticktock_token counts, as within one line). An absolute-form target's
// authority is the request's host: the same-origin check of the cookie
// compares Origin with it, not with a Host header the client sent beside it
// (RFC 9112, 3.2.2).
std::string collect_headers(const http::request_header<>& head,
                            std::map<std::string, std::string>& headers) {
  std::string repeated;
  for (auto& f : head) {
    auto name = lower(f.name_string());
    auto [it, fresh] = headers.try_emplace(name, std::string{f.value()});
    if (fresh)
      continue;
    if (name == "cookie") {
      it->second += "; ";
      it->second += f.value();
      continue;
    }
    it->second = std::string{f.value()};
    for (auto* single :
         {"Host", "Authorization", "Idempotency-Key", "Content-Type", "Last-Event-ID",
          "X-Request-Id", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version"})
      if (repeated.empty() && name == lower(single))
        repeated = single;
  }
  if (auto authority = absolute_authority(head.target()); !authority.empty())
    headers["host"] = std::string{authority};
  return repeated;
}

// The last UTF-8 sequence of `s`: its last lead byte and the continuation
// bytes (10xxxxxx, at most three) after it.
std::string_view last_character(std::string_view s) {
  auto start = s.size();
  while (start > 0 && s.size() - start < 3 && (static_cast<unsigned char>(s[start - 1]) & 0xC0) == 0x80)
    --start;
  return s.substr(start > 0 ? start - 1 : 0);
}

// A head over the limit whose request line had not ended within it. Beast
// sets the target once it has parsed the line, and then consumes the line
// from the buffer (so a long field after it leaves no newline there); until
// then the buffer holds the whole head, the line's end included if it came.
bool request_line_too_long(const http::request_parser<http::string_body>& parser,
                           const beast::flat_buffer& buffer) {
  auto data = buffer.data();
  std::string_view seen{static_cast<const char*>(data.data()), data.size()};
  return parser.get().target().empty() && seen.find('\n') == std::string_view::npos;
}

// RFC 9110, 10.1.1: an HTTP/1.1 request whose Expect is 100-continue (case
// insensitive); HTTP/1.0 clients do not wait for a 100.
bool expects_continue(const http::request<http::string_body>& req) {
  return req.version() >= 11 && lower(req[http::field::expect]) == "100-continue";
}

}  // namespace

struct connection_watch;

// One WebSocket connection. The reader coroutine and the writes run on the
// connection's I/O thread; writes are queued, one in flight (as in Beast's
// chat-multi example). The queue is bounded: a client that does not read
// what its agent sends would otherwise grow it without limit (see send).
struct ws_connection : std::enable_shared_from_this<ws_connection> {
  ws_connection(beast::tcp_stream&& s, std::string a, std::size_t limit,
                std::chrono::milliseconds wt)
    : ws(std::move(s)), agent(std::move(a)), queue_limit(limit), write_timeout(wt) {}
  websocket::stream<beast::tcp_stream> ws;
  const std::string agent;  // the agent the connection belongs to
  std::string id;           // ws-<start>-<n>, once open
  std::string request_id;   // of the upgrade: its triggers carry it
  std::deque<ws_message> queue;
  std::size_t queued = 0;  // bytes of the frames in `queue`, the one being written included
  std::size_t written = 0;  // bytes of the front frame written so far
  const std::size_t queue_limit;
  const std::chrono::milliseconds write_timeout;
  // The session's watch (null once the session ended): a frame not written
  // within the write timeout cuts the connection.
  connection_watch* watch = nullptr;
  bool writing = false;
  bool closed = false;
  bool close_queued = false;  // frames sent after it would never go out
  // The close frame the server sends: 1000 when the agent closes, 1001 when
  // the server stops or the agent is deleted, 1009 when a frame is too large
  // for the agent's inbox, 1008 when the client does not read (the queue
  // outgrew its limit).
  websocket::close_reason close_reason{websocket::close_code::normal};
  bool agent_gone = false;  // deleted: no more triggers go to its id
  // The open trigger was refused (the connection closes): the agent never
  // saw the connection, so it gets no close trigger either.
  std::atomic<bool> open_refused{false};
  std::atomic<bool> close_sent{false};  // the close trigger went out (once)
  // Called as the server's close frame goes out: the agent hears of the
  // close then, not once the client ends the TCP connection.
  std::function<void()> on_closing;

  // False when the frame would take the bytes queued past the limit: the
  // frames waiting are dropped (the one being written goes on) and a close
  // frame 1008 follows it; the write timeout cuts a client that does not
  // read even that. One frame alone is always queued, whatever its size.
  bool send(ws_message m) {
    if (closed || (close_queued && !m.close))
      return true;
    if (!m.close && !queue.empty() && queued + m.data.size() > queue_limit) {
      queue.erase(writing ? std::next(queue.begin()) : queue.begin(), queue.end());
      queued = queue.empty() ? 0 : queue.front().data.size();
      close_queued = false;  // a close waiting was dropped too
      close_with({websocket::close_code::policy_error,
                  "client too slow: over " + std::to_string(queue_limit) + " bytes queued"});
      return false;
    }
    close_queued = close_queued || m.close;
    queued += m.data.size();
    queue.push_back(std::move(m));
    if (!writing)
      write_next();
    return true;
  }

  void write_next();

  // The frames queued go first, then a close frame with `reason` (unless a
  // close is already on its way); the reader ends when the client answers it.
  void close_with(websocket::close_reason reason) {
    if (closed || close_queued)
      return;
    close_reason = std::move(reason);
    ws_message m;
    m.close = true;
    send(std::move(m));
  }

  // The server is stopping: close with 1001 going away.
  void go_away() { close_with(websocket::close_code::going_away); }
};

// One I/O thread: its io_context (run by this thread alone), the deadlines of
// its connections and the sweep that enforces them.
struct io_thread {
  std::optional<asio::io_context> own;  // unless the thread is one of io_loops'
  asio::io_context* io;
  // Keeps run() going while the thread has no connection (until stop()).
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::optional<asio::steady_timer> sweep;
  connection_watch* first = nullptr;  // this thread's connections
  bool sweeping = false;
  std::thread thread;

  explicit io_thread(asio::io_context* shared) {
    if (shared) {
      io = shared;
    } else {
      io = &own.emplace(1);  // concurrency hint: one thread runs it
      work.emplace(io->get_executor());
    }
    sweep.emplace(*io);
  }
  // Destroying the io_context destroys suspended sessions, whose watches
  // unlink themselves from `first`: so the context goes first.
  ~io_thread() {
    sweep.reset();
    work.reset();
    own.reset();
  }
};

// A connection's current deadline (read, write, or an agent's reply); used
// on the connection's I/O thread only. When the sweep finds it past, it gives
// up the reply (504) or cancels the socket's pending operation, and marks
// the watch expired.
struct connection_watch {
  io_thread& home;
  beast::tcp_stream* stream;
  connection_watch* prev = nullptr;
  connection_watch* next = nullptr;
  steady::time_point deadline = steady::time_point::max();
  std::shared_ptr<router::ticket> ticket;  // while waiting for an agent's reply
  bool expired = false;
  bool reading = false;  // while reading a request

  connection_watch(io_thread& h, beast::tcp_stream& s) : home(h), stream(&s) {
    next = home.first;
    if (next)
      next->prev = this;
    home.first = this;
  }
  ~connection_watch() {
    (prev ? prev->next : home.first) = next;
    if (next)
      next->prev = prev;
  }
  connection_watch(const connection_watch&) = delete;
  connection_watch& operator=(const connection_watch&) = delete;

  void arm(std::chrono::milliseconds timeout) {
    deadline = steady::now() + timeout;
    expired = false;
  }
  void disarm() { deadline = steady::time_point::max(); }
  void expire() {
    deadline = steady::time_point::max();
    expired = true;
    if (ticket) {
      auto t = std::move(ticket);
      t->cancel();  // its 504 is posted to this thread
      return;
    }
    beast::error_code ignored;
    // A write that made no progress: the close that follows resets the
    // connection, so that the kernel does not go on holding (and retrying)
    // what the client never read. (A read timeout gets its 408 first.)
    if (!reading)
      stream->socket().set_option(asio::socket_base::linger(true, 0), ignored);
    stream->socket().cancel(ignored);
  }
  // The server is stopping: a connection waiting for a request stops
  // reading (and closes); with `tickets`, a request waiting for its agent
  // gets 503 now (ticket::shut_down; without, it waits for its tick:
  // stop_accepting). Writes and streams are left to finish (streams end on
  // `closing`).
  void shut_down(bool tickets, bool drained) {
    if (ticket) {
      if (!tickets)
        return;
      disarm();
      auto t = std::move(ticket);
      t->shut_down(drained);  // posted here
      return;
    }
    if (reading) {
      beast::error_code ignored;
      stream->socket().cancel(ignored);
    }
  }
  // The grace is over: the socket closes, so that whatever the session
  // waits for completes and it ends.
  void cut() {
    disarm();
    if (auto t = std::move(ticket))
      t->cancel();
    beast::error_code ignored;
    stream->socket().close(ignored);
  }
};

void ws_connection::write_next() {
  if (queue.empty() || closed) {
    writing = false;
    return;
  }
  writing = true;
  auto& m = queue.front();
  auto self = shared_from_this();
  if (m.close) {
    closed = true;
    if (on_closing)
      on_closing();
    ws.async_close(close_reason, [self](beast::error_code) {});
    return;
  }
  // A frame goes out in pieces of at most 64 KiB (one WebSocket message in
  // fragments), each with the write timeout: a client that keeps reading a
  // large frame slowly is not cut, one that stops is.
  constexpr std::size_t piece = 65536;
  if (written == 0)
    ws.binary(m.binary);
  auto n = std::min(piece, m.data.size() - written);
  bool fin = written + n == m.data.size();
  if (watch)
    watch->arm(write_timeout);
  ws.async_write_some(fin, asio::buffer(m.data.data() + written, n),
                      [self, fin](beast::error_code ec, std::size_t sent) {
                        if (self->watch)
                          self->watch->disarm();
                        self->written += sent;
                        if (fin || ec) {
                          self->written = 0;
                          self->queued -= self->queue.front().data.size();
                          self->queue.pop_front();
                        }
                        if (ec) {
                          self->closed = true;
                          self->writing = false;
                          return;
                        }
                        self->write_next();
                      });
}

struct http_server::impl {
  node& n;
  http_options options;
  request_metrics metrics;
  router api;
  std::atomic<std::size_t> connections{0};
  // The accept loop and the sweeps: on io_loops, which run on after the
  // server, stop() waits for them to end.
  std::atomic<std::size_t> tasks{0};
  // stop() waits on this for the connections (and tasks) to end.
  std::mutex idle_mtx;
  std::condition_variable idle_cv;
  void task_done() {
    if (--tasks == 0) {
      std::lock_guard<std::mutex> lock{idle_mtx};
      idle_cv.notify_all();
    }
  }
  struct task_end {
    impl& self;
    ~task_end() { self.task_done(); }
  };
  std::atomic<std::uint64_t> next_request{1};
  // Request ids are "<start>-<n>": <start> is six random hex digits drawn at
  // every start, so ids do not repeat across restarts in one log.
  std::string request_prefix = [] {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%06x-", static_cast<unsigned>(std::random_device{}() & 0xffffff));
    return std::string{buf};
  }();
  std::string new_request_id() { return request_prefix + std::to_string(next_request++); }
  std::uint64_t observer = 0;

  // SSE followers, woken on ticks of their agent.
  std::mutex followers_mtx;
  struct follower {
    explicit follower(asio::any_io_executor ex) : timer(ex) {}
    asio::steady_timer timer;
    std::atomic<bool> dirty{false};  // a tick happened since the last read
  };
  std::multimap<std::string, std::shared_ptr<follower>> followers;

  // The event=http line of a request but its outcome (event, request id,
  // method, path), and when the request was read.
  struct request_log {
    std::string line;
    steady::time_point received;
  };

  // Open WebSocket connections by id.
  std::mutex ws_mtx;
  std::map<std::string, std::shared_ptr<ws_connection>> ws_conns;
  std::atomic<std::uint64_t> next_ws{1};
  // Connection ids are "ws-<start>-<n>", <start> 64 random bits drawn at
  // every start: a tick that runs after a restart (a frame that waited in the
  // inbox) and sends to a connection of the last start must not reach a new
  // client that got the same number.
  std::string ws_prefix = [] {
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "ws-%08x%08x-", static_cast<unsigned>(rd()), static_cast<unsigned>(rd()));
    return std::string{buf};
  }();

  // An agent reaches its own connections only: a connection id of another
  // agent's is as unknown to it as one that closed.
  void deliver_ws(const tick_event& ev) {
    std::lock_guard<std::mutex> guard{ws_mtx};
    for (auto& m : ev.ws) {
      auto i = ws_conns.find(m.connection);
      if (i == ws_conns.end() || i->second->agent != ev.agent)
        continue;  // closed meanwhile, or not this agent's: the frame is dropped
      auto c = i->second;
      asio::post(c->ws.get_executor(), [this, c, m]() mutable {
        if (!c->send(std::move(m)))
          log("event=ws_overflow agent=" + c->agent + " connection=" + c->id + " limit="
              + std::to_string(c->queue_limit) + " close=1008");
      });
    }
  }

  // The agent was deleted: its connections close (1001 going away), and no
  // trigger from them reaches a new agent of the same id.
  void close_ws_of(const std::string& agent) {
    std::lock_guard<std::mutex> guard{ws_mtx};
    for (auto& [id, c] : ws_conns)
      if (c->agent == agent)
        asio::post(c->ws.get_executor(), [c = c] {
          c->agent_gone = true;
          c->close_with(websocket::close_code::going_away);
        });
  }

  // A trigger the node refuses is not dropped in silence: the connection
  // closes with a code that says why. A frame over an agent's own
  // max_message_bytes gets 1009, as a frame over the read limit does; an
  // errored agent 1011; a storage failure 1013 (try again later); a deleted
  // agent or a stopping node 1001. A frame
  // over the inbox limit is not refused: it went to the deadletter. An open
  // over it is, with 1013 (try again later), and is not kept: the agent is
  // not told of a connection it could not be told of in order.
  static std::optional<websocket::close_reason> ws_refusal(const error& err) {
    using cc = websocket::close_code;
    std::string why{to_string(err.code())};
    switch (err.code()) {
      case errc::ok:
      case errc::inbox_full: return std::nullopt;
      case errc::message_too_large: return websocket::close_reason{cc::too_big, why};
      case errc::not_found:
      case errc::shutting_down: return websocket::close_reason{cc::going_away, why};
      case errc::storage_failure:
      case errc::timeout: return websocket::close_reason{cc::try_again_later, why};
      default: return websocket::close_reason{cc::internal_error, why};
    }
  }

  // The connection's close trigger, once: when its client's close frame
  // arrives, or when the connection ends without one.
  void ws_close_trigger(const std::shared_ptr<ws_connection>& conn) {
    if (!conn->close_sent.exchange(true))
      ws_trigger(conn, {ws_event::kind::close, conn->id, {}, false});
  }

  void ws_trigger(const std::shared_ptr<ws_connection>& conn, ws_event ev) {
    bool open = ev.event == ws_event::kind::open;
    bool close = ev.event == ws_event::kind::close;
    if (conn->agent_gone || (close && conn->open_refused))
      return;
    send_options opts;
    opts.kind = trigger_kind::ws;
    opts.request_id = conn->request_id;
    // The agent hears of the close of every connection whose open it was
    // given, over the inbox limit too: at most one per open connection.
    opts.ignore_depth_limit = close;
    // A refused open is not kept: requeued, it would open a connection the
    // client was told was refused, and whose close never comes.
    opts.refuse_when_full = open;
    opts.message_bytes = ev.data.size();
    n.send_async(conn->agent, ev.encode(), opts,
                 [this, open, weak = std::weak_ptr<ws_connection>(conn)](expected<send_receipt> r) {
                   if (r)
                     return;
                   auto reason = ws_refusal(r.error_value());
                   if (open && !reason)
                     reason = websocket::close_reason{websocket::close_code::try_again_later,
                                                      std::string{to_string(r.error_value().code())}};
                   auto c = weak.lock();
                   if (c && open)
                     c->open_refused = true;
                   if (!reason || !c)
                     return;
                   asio::post(c->ws.get_executor(), [this, c, reason = std::move(*reason)] {
                     log("event=ws_refused request_id=" + log_value(c->request_id) + " agent=" + c->agent
                         + " connection=" + c->id + " error="
                         + std::string{reason.reason.c_str()} + " close="
                         + std::to_string(reason.code));
                     c->close_with(reason);
                   });
                 });
  }

  using header_list = std::vector<std::pair<std::string, std::string>>;

  // The 101 (or the handshake's error) carries the Server header of every
  // response and the request's headers from the router (X-Request-Id).
  static websocket::stream_base::decorator decorate(header_list headers) {
    return websocket::stream_base::decorator([headers](websocket::response_type& res) {
      res.set(http::field::server, "ticktockd");
      res.set(http::field::date, http_date());
      for (auto& [k, v] : headers)
        res.set(k, v);
    });
  }

  // The limits of every WebSocket, an agent's or a stream's. A client quiet
  // for half the read timeout is pinged, and cut if nothing (not even the
  // pong) arrives in the other half: so a client that stalls in the middle
  // of a frame (it cannot send a pong until the frame is done) is cut like a
  // slow HTTP client, while an idle one that answers pings stays connected.
  // A message over the body limit closes the connection with 1009.
  void limit(websocket::stream<beast::tcp_stream>& ws) const {
    websocket::stream_base::timeout to;
    to.handshake_timeout = options.read_timeout;
    to.idle_timeout = options.read_timeout;
    to.keep_alive_pings = true;
    ws.set_option(to);
    ws.read_message_max(options.max_body_bytes);
  }

  // The bytes queued for one WebSocket client: a few of the largest messages
  // (--max-body), at least 1 MiB.
  std::size_t ws_queue_limit() const {
    constexpr std::size_t floor = std::size_t{1} << 20;
    auto most = options.max_body_bytes > SIZE_MAX / 4 ? SIZE_MAX : 4 * options.max_body_bytes;
    return std::max(most, floor);
  }

  asio::awaitable<void> ws_session(connection_watch& watch, beast::tcp_stream stream,
                                   http::request<http::string_body> msg, std::string agent,
                                   std::string request_id, header_list headers,
                                   request_log line, std::int64_t token_expires_unix) {
    stream.expires_never();
    auto conn = std::make_shared<ws_connection>(std::move(stream), agent, ws_queue_limit(),
                                                options.write_timeout);
    conn->request_id = std::move(request_id);
    // The watch follows the stream into the connection; the connection
    // forgets it when this session ends (the connection may live on a bit).
    watch.stream = &conn->ws.next_layer();
    conn->watch = &watch;
    struct forget {
      ws_connection& c;
      ~forget() { c.watch = nullptr; }
    } forget_watch{*conn};
    limit(conn->ws);
    conn->ws.set_option(decorate(std::move(headers)));
    auto [ec] = co_await conn->ws.async_accept(msg, use_nothrow);
    log_request(line, 101, ec);
    if (ec)
      co_return;
    auto id = ws_prefix + std::to_string(next_ws++);
    conn->id = id;
    {
      std::lock_guard<std::mutex> guard{ws_mtx};
      ws_conns.emplace(id, conn);
    }
    if (closing)
      conn->go_away();  // the server stops accepting: no new connection lasts
    log("event=ws_open request_id=" + log_value(conn->request_id) + " agent=" + agent + " connection=" + id);
    ws_trigger(conn, {ws_event::kind::open, id, {}, false});
    // The agent hears of the close as the client's close frame arrives, or
    // as the server's goes out: the read ends only after the TCP teardown,
    // which a client that keeps its socket open holds back until the read
    // timeout.
    conn->ws.control_callback([this, weak = std::weak_ptr<ws_connection>(conn)](
                                websocket::frame_type kind, beast::string_view) {
      if (auto c = weak.lock(); c && kind == websocket::frame_type::close)
        ws_close_trigger(c);
    });
    conn->on_closing = [this, weak = std::weak_ptr<ws_connection>(conn)] {
      if (auto c = weak.lock())
        ws_close_trigger(c);
    };
    // Opened with an agent token: the connection closes (1008) as it expires.
    asio::system_timer expiry{conn->ws.get_executor()};
    if (token_expires_unix > 0) {
      expiry.expires_at(std::chrono::system_clock::time_point{std::chrono::seconds{token_expires_unix}});
      expiry.async_wait([weak = std::weak_ptr<ws_connection>(conn)](const beast::error_code& ec) {
        if (auto c = weak.lock(); c && !ec)
          c->close_with({websocket::close_code::policy_error, "token expired"});
      });
    }
    beast::flat_buffer buffer;
    for (;;) {
      auto [rec, n_read] = co_await conn->ws.async_read(buffer, use_nothrow);
      (void)n_read;
      if (rec)
        break;
      auto message = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
      // RFC 6455, 8.1: a text message is UTF-8 (1007 otherwise). Beast checks
      // each fragment as it comes, but not the end of a message whose last
      // fragment is empty (a character cut short, "ok\xe2\x82" then ""):
      // only its last character needs a look.
      if (conn->ws.got_text() && !is_valid_utf8(last_character(message))) {
        conn->close_with({websocket::close_code::bad_payload, "invalid UTF-8"});
        continue;  // the read ends with the close handshake
      }
      if (conn->close_sent)
        continue;  // a frame that crossed the server's close: the agent heard of the close
      ws_trigger(conn, {ws_event::kind::frame, id, std::move(message), !conn->ws.got_text()});
    }
    conn->closed = true;
    {
      std::lock_guard<std::mutex> guard{ws_mtx};
      ws_conns.erase(id);
    }
    ws_close_trigger(conn);
    log("event=ws_close request_id=" + log_value(conn->request_id) + " agent=" + agent + " connection=" + id);
  }

  std::atomic<bool> closing{false};  // stop_accepting() ran
  bool keep = false;  // stop() could not end everything on the loops: never freed
  std::atomic<bool> stopped{false};  // stop() ran
  // How often each I/O thread checks its connections' deadlines: a timeout
  // is enforced at most this late.
  std::chrono::milliseconds sweep_every;

  // Declared last so they are destroyed first: destroying an io_context
  // destroys suspended session coroutines, which still use the members above.
  struct handler_pool {
    // Threads named tt-handler running one io_context, like the I/O threads
    // (asio::thread_pool's threads cannot be named).
    asio::io_context io;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{
      io.get_executor()};
    std::vector<std::thread> threads;
    explicit handler_pool(int n) {
      for (int i = 0; i < n; ++i)
        threads.emplace_back([this] {
          detail::name_this_thread("tt-handler");
          io.run();
        });
    }
    // Runs the work queued so far, then ends the threads.
    void join() {
      work.reset();
      for (auto& t : threads)
        if (t.joinable())
          t.join();
    }
    ~handler_pool() { join(); }
  } handlers{8};
  std::vector<std::unique_ptr<io_thread>> io_threads;
  std::optional<tcp::acceptor> acceptor;  // on the first I/O thread
  std::size_t next_thread = 0;            // used by the accept loop only

  impl(node& nd, http_options o)
    : n(nd), options(std::move(o)),
      api(nd,
          router_options{options.admin_token, options.node_key, options.reply_timeout,
                         options.max_body_bytes, options.nostr,
                         [this](const std::string& id) {
                           wake_followers(id);
                           close_ws_of(id);
                         }},
          metrics),
      sweep_every(std::clamp(std::min({options.read_timeout, options.reply_timeout,
                                       options.write_timeout})
                               / 10,
                             std::chrono::milliseconds{5}, std::chrono::milliseconds{250})) {
    if (options.loops)
      for (std::size_t i = 0; i < options.loops->size(); ++i)
        io_threads.push_back(std::make_unique<io_thread>(&options.loops->context(i)));
    else
      for (std::size_t i = 0; i < std::max<std::size_t>(1, options.threads); ++i)
        io_threads.push_back(std::make_unique<io_thread>(nullptr));
    acceptor.emplace(*io_threads.front()->io);
  }

  void log(const std::string& line) {
    if (options.log)
      options.log(line);
  }

  // On io_loops, which run on after the server (the node's actors), nothing
  // of the server may stay on them: the connections left after the grace
  // are cut, the sweeps and the accept loop end, then what was posted to the
  // loops meanwhile runs (two rounds: what a handler posts to its own loop
  // goes behind a barrier posted while it ran). False if that did not happen
  // within a bound.
  bool end_on_loops() {
    if (!options.loops->running())
      return connections == 0 && tasks == 0;  // nothing on them runs any more
    constexpr auto bound = std::chrono::seconds{10};
    for (auto& t : io_threads)
      asio::post(*t->io, [t = t.get()] {
        for (auto* w = t->first; w; w = w->next)
          w->cut();  // completes nothing inline: the list stays intact
        t->sweep->cancel();
      });
    {
      std::unique_lock<std::mutex> lock{idle_mtx};
      if (!idle_cv.wait_for(lock, bound, [&] { return connections == 0 && tasks == 0; }))
        return false;
    }
    for (int round = 0; round < 2; ++round)
      for (auto& t : io_threads) {
        auto ran = std::make_shared<std::promise<void>>();
        auto done = ran->get_future();
        asio::post(*t->io, [ran] { ran->set_value(); });
        if (done.wait_for(bound) != std::future_status::ready)
          return false;
      }
    return true;
  }

  // Written when the answer is out: an upgrade's once its handshake is done
  // (with why, if it failed).
  void log_request(const request_log& r, unsigned status, beast::error_code failed = {}) {
    if (!options.log)
      return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - r.received);
    log(r.line + " status=" + std::to_string(status) + " us=" + std::to_string(us.count())
        + (failed ? " error=" + log_value("websocket handshake: " + failed.message()) : std::string{}));
  }

  void wake_followers(const std::string& agent) {
    std::lock_guard<std::mutex> guard{followers_mtx};
    auto [b, e] = followers.equal_range(agent);
    for (auto i = b; i != e; ++i) {
      i->second->dirty = true;
      asio::post(i->second->timer.get_executor(), [f = i->second] { f->timer.cancel(); });
    }
  }

  asio::awaitable<void> accept_loop() {
    task_end counted{*this};
    for (;;) {
      // The socket belongs to the connection's I/O thread, so everything
      // posted to the connection (answers, WebSocket frames from ticks) runs
      // there, serialized with its coroutine.
      auto& home = *io_threads[next_thread++ % io_threads.size()];
      auto [ec, sock] = co_await acceptor->async_accept(home.io->get_executor(), use_nothrow);
      // Once stopping, whatever the error (an accept that completed just
      // before the close, then one on the closed acceptor), the loop ends.
      if (ec == asio::error::operation_aborted || closing)
        co_return;
      if (ec)
        continue;
      // Counted from here, not from the session's start: stop() waits for
      // every connection accepted, also one whose session is yet to start.
      ++connections;
      asio::co_spawn(home.io->get_executor(), session(home, beast::tcp_stream{std::move(sock)}),
                     asio::detached);
    }
  }

  // Runs on `t` while it has connections: gives up on the ones past their
  // deadline.
  asio::awaitable<void> sweep(io_thread& t) {
    task_end counted{*this};
    while (t.first) {
      t.sweep->expires_after(sweep_every);
      auto [ec] = co_await t.sweep->async_wait(use_nothrow);
      if (ec)
        break;
      auto now = steady::now();
      for (auto* w = t.first; w; w = w->next)
        if (w->deadline <= now)
          w->expire();  // completes nothing inline: the list stays intact
    }
    t.sweeping = false;
  }

  // Called on the connection's thread when it opens.
  void watch_started(io_thread& t) {
    if (t.sweeping)
      return;
    t.sweeping = true;
    ++tasks;
    asio::co_spawn(t.io->get_executor(), sweep(t), asio::detached);
  }

  // False if the response could not be written (the connection is then
  // closed: a late write is cancelled part-way). The answer to a HEAD has
  // the head of the GET's (its Content-Length, or chunked for a stream) and
  // no body (RFC 9110, 9.3.2), errors included.
  asio::awaitable<bool> write(beast::tcp_stream& stream, connection_watch& watch,
                              const response& r, bool keep_alive, unsigned version,
                              bool head = false) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::server, "ticktockd");
    res.set(http::field::date, http_date());
    // A 204 or 304 ends at its head: no body, so no Content-Length either
    // (RFC 9110, 8.6), and a 204 has no content to give a type.
    bool no_body = r.status == 204 || r.status == 304;
    if (!r.content_type.empty() && r.status != 204)
      res.set(http::field::content_type, r.content_type);
    if (r.stream != stream_kind::none) {  // a HEAD of a stream: stream_events' head
      res.set(http::field::content_type, "text/event-stream");
      res.set(http::field::cache_control, "no-cache");
    }
    for (auto& [k, v] : r.headers)
      res.set(k, v);
    res.keep_alive(keep_alive);
    if (r.stream != stream_kind::none) {
      if (version >= 11)
        res.chunked(true);  // HTTP/1.0 has no chunking: its stream ends with the connection
    } else if (r.body_file) {
      // A file is read as it is written, from a descriptor of its own (the
      // response may be copied, and a HEAD reads nothing).
      http::response<http::file_body> fres{std::move(res.base())};
      beast::error_code ec;
      beast::file f;
      f.native_handle(::fcntl(r.body_file->get(), F_DUPFD_CLOEXEC, 3));
      if (!f.is_open())
        ec = beast::error_code{errno, boost::system::system_category()};
      else
        f.seek(0, ec);
      if (!ec)
        fres.body().reset(std::move(f), ec);
      if (ec)
        co_return false;  // the connection closes: no head promised a body yet
      fres.prepare_payload();
      co_return co_await send(stream, watch, fres, head);
    } else if (!no_body) {
      res.body() = r.body;
      res.prepare_payload();
    }
    co_return co_await send(stream, watch, res, head);
  }

  template <class Body>
  asio::awaitable<bool> send(beast::tcp_stream& stream, connection_watch& watch,
                             http::response<Body>& res, bool head) {
    watch.arm(options.write_timeout);
    beast::error_code ec;
    if (head) {
      http::response_serializer<Body> sr{res};
      auto [hec, n] = co_await http::async_write_header(stream, sr, use_nothrow);
      (void)n;
      ec = hec;
    } else {
      auto [wec, n] = co_await http::async_write(stream, res, use_nothrow);
      (void)n;
      ec = wec;
    }
    watch.disarm();
    co_return !ec;
  }

  // CORS: the value of Access-Control-Allow-Origin for this request, if its
  // Origin may call this route (not /a/{id}/..., which the agent answers).
  std::optional<std::string> cors_origin(const request& req) const {
    auto origin = req.header("origin");
    if (options.cors_origins.empty() || origin.empty() || req.target.starts_with("/a/"))
      return std::nullopt;
    for (auto& o : options.cors_origins)
      if (o == "*" || o == origin)
        return std::string{o == "*" ? "*" : origin};
    return std::nullopt;
  }

  // The answer to a CORS preflight of an allowed origin: what the API takes.
  response preflight() {
    response r;
    r.status = 204;
    r.content_type.clear();
    r.route = "preflight";
    r.headers = {{"Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE"},
                 {"Access-Control-Allow-Headers",
                  "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"},
                 {"Access-Control-Max-Age", "600"}};
    metrics.count(r.route, r.status, std::chrono::microseconds{0});
    return r;
  }

  // Whether the answer to this request depends on its Origin: CORS with a
  // list of origins (not "*"), on a route the server answers for.
  bool varies_by_origin(const request& req) const {
    return !options.cors_origins.empty() && !req.target.starts_with("/a/")
           && std::find(options.cors_origins.begin(), options.cors_origins.end(), "*")
                == options.cors_origins.end();
  }

  static void allow_origin(response& r, const std::string& origin) {
    r.headers.emplace_back("Access-Control-Allow-Origin", origin);
    r.headers.emplace_back("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, Allow");
    if (origin != "*")
      r.headers.emplace_back("Vary", "Origin");
  }

  // A response to a request the router does not see (transport errors, the
  // connection limit, a server stopping): counted and logged like the
  // router's, with its own X-Request-Id; the connection then closes.
  asio::awaitable<void> refuse(beast::tcp_stream& stream, connection_watch& watch, response r,
                               std::string why, unsigned version, bool head,
                               const http::request_header<>* fields = nullptr) {
    // A head that was read keeps its client's X-Request-Id (one, and valid),
    // and its method and path are logged as for any request.
    std::string request_id, what;
    if (fields) {
      if (fields->count("X-Request-Id") == 1
          && valid_request_id((*fields)["X-Request-Id"]))
        request_id = std::string{(*fields)["X-Request-Id"]};
      auto target = fields->target();
      what = " method=" + std::string{fields->method_string()}
             + " path=" + log_value(target.substr(0, target.find_first_of("?#")));
    }
    if (request_id.empty())
      request_id = new_request_id();
    r.headers.emplace_back("X-Request-Id", request_id);
    metrics.count("transport", r.status, std::chrono::microseconds{0});
    log("event=http request_id=" + log_value(request_id) + what + " status="
        + std::to_string(r.status) + " error=" + log_value(why));
    co_await write(stream, watch, r, false, version, head);
  }

  // The router's answer to `req`. Routes that may block (durable writes,
  // store reads) run on the handler pool; the others are dispatched here and
  // answer through a callback (an agent's reply arrives from its tick's
  // commit), which resumes this coroutine on the connection's thread. The
  // watch gives up on the agent after the reply timeout (504).
  asio::awaitable<response> answer(const request& req, connection_watch& watch) {
    if (router::may_block(req))
      co_return co_await asio::co_spawn(
        handlers.io, [this, &req]() -> asio::awaitable<response> { co_return api.handle(req); },
        asio::use_awaitable);
    struct box {
      std::optional<response> r;
      std::function<void(response)> waiting;  // resumes the coroutine; on this thread only
      std::atomic<std::thread::id> caller;  // the thread inside api.handle, while it is
    };
    auto ex = co_await asio::this_coro::executor;
    auto b = std::make_shared<box>();
    b->caller = std::this_thread::get_id();
    auto t = api.handle(req, [b, ex](response r) {
      if (b->caller.load() == std::this_thread::get_id()) {
        b->r = std::move(r);  // answered at once, on this thread
        return;
      }
      asio::post(ex, [b, r = std::move(r)]() mutable {
        if (auto resume = std::exchange(b->waiting, nullptr))
          resume(std::move(r));  // owns the handler while the coroutine runs
        else
          b->r = std::move(r);
      });
    });
    b->caller = std::thread::id{};
    if (b->r)
      co_return std::move(*b->r);
    watch.ticket = std::move(t);
    watch.arm(options.reply_timeout);
    // The answer is posted to this thread, so it cannot arrive before this
    // coroutine suspends and installs its handler: the wake-up is never missed.
    // A named lambda: g++ 12 destroys the captures of a lambda temporary
    // twice when its full-expression contains a co_await.
    auto wait = [b](auto handler) {
      // Boost 1.81's any_completion_handler is not usable here (moving one
      // recurses); the handler is move-only, hence the shared_ptr.
      auto h = std::make_shared<decltype(handler)>(std::move(handler));
      b->waiting = [h](response r) { std::move(*h)(std::move(r)); };
    };
    auto r = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(response)>(
      wait, asio::use_awaitable);
    watch.ticket = nullptr;
    watch.disarm();
    co_return r;
  }

  asio::awaitable<void> session(io_thread& home, beast::tcp_stream stream) {
    struct counted {
      impl& self;
      ~counted() {
        if (--self.connections == 0 && self.closing) {
          std::lock_guard<std::mutex> lock{self.idle_mtx};  // stop() is waiting or about to
          self.idle_cv.notify_all();
        }
      }
    } guard{*this};
    connection_watch watch{home, stream};
    watch_started(home);
    beast::flat_buffer buffer;
    const auto unbounded = buffer.max_size();
    if (connections > options.max_connections) {
      auto full = error_response(503, "TOO_MANY_CONNECTIONS", "the server is at its connection limit");
      full.headers.emplace_back("Retry-After", "1");  // connections come and go
      co_await refuse(stream, watch, std::move(full), "connection limit", 11, false);
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      co_return;
    }
    // The read deadline is the watch's rather than the stream's expiry, which
    // would close the socket: a client that started a request and stalls
    // gets a 408 before the connection closes. The head is read first, so
    // that its framing is checked before any body is.
    bool skipped_empty_line = false;  // before the current request
    for (;;) {
      if (closing)
        break;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
      // No body limit while the head is read (Beast would check
      // Content-Length against it there): the limit of this request is set,
      // and Content-Length checked, once its head says what it is.
      parser.body_limit(boost::none);
      watch.arm(options.read_timeout);
      watch.reading = true;
      auto [ec, n_head] = co_await http::async_read_header(stream, buffer, parser, use_nothrow);
      (void)n_head;
      if (ec == http::error::bad_method && !skipped_empty_line) {
        // RFC 9112, 2.2: empty lines before a request line (a client that
        // ended its last body with CRLF) are skipped, once per request.
        auto data = buffer.data();
        std::string_view seen{static_cast<const char*>(data.data()), data.size()};
        auto blank = seen.find_first_not_of("\r\n");
        if (blank != 0) {
          buffer.consume(blank == std::string_view::npos ? seen.size() : blank);
          skipped_empty_line = true;
          continue;
        }
      }
      std::optional<response> refused;
      std::string refused_why = "bad Transfer-Encoding";
      std::size_t body_limit = options.max_body_bytes;
      // The head as the router reads it, for the checks made before the body
      // (none with a header given twice: the request gets its 400).
      auto head_request = [&]() -> std::optional<request> {
        request head;
        head.method = std::string{parser.get().method_string()};
        head.target = origin_form(parser.get().target());
        if (!collect_headers(parser.get().base(), head.headers).empty())
          return std::nullopt;
        return head;
      };
      if (!ec) {
        refused = check_framing(parser.get(), parser.chunked());
        if (!refused && !parser.is_done() && options.max_bundle_bytes != body_limit) {
          // An agent bundle outgrows --max-body with its history: the admin
          // imports it under its own limit, larger or smaller (only the
          // admin: the body is read before the router checks anything else).
          if (auto h = head_request(); h && api.admin_import(*h))
            body_limit = options.max_bundle_bytes;
        }
        if (!refused && !parser.is_done()) {
          parser.body_limit(body_limit);
          if (auto length = parser.content_length(); length && *length > body_limit)
            ec = http::error::body_limit;
        }
        if (!ec && !refused && !parser.is_done() && expects_continue(parser.get())) {
          // A client that waits to send its body hears at once that its
          // token is missing, invalid, or may not send it (RFC 9110, 10.1.1:
          // a final status instead of 100).
          if (auto h = head_request(); h && (refused = api.refused_early(*h)))
            refused_why = refused->status == 401 ? "no valid token (before the body)"
                                                 : "forbidden (before the body)";
        }
        if (!ec && !refused && !parser.is_done() && expects_continue(parser.get())) {
          // RFC 9110, 10.1.1: the client waits for this before it sends the
          // body (curl for a second, then sends it anyway). A body over the
          // limit was answered 413 above, without it.
          http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
          watch.arm(options.write_timeout);
          auto [cec, n_cont] = co_await http::async_write(stream, go_on, use_nothrow);
          (void)n_cont;
          ec = cec;
          watch.arm(options.read_timeout);
        }
        if (!ec && !refused && !parser.is_done()) {
          // Beast holds a chunked body's trailer section whole before it
          // parses it, and limits neither: the buffer is capped so that a
          // trailer cannot grow without bound (431 below). The body itself
          // is consumed as it arrives and needs no room.
          buffer.max_size(buffer.size() + options.max_header_bytes);
          auto [bec, n_body] = co_await http::async_read(stream, buffer, parser, use_nothrow);
          (void)n_body;
          ec = bec;
          buffer.max_size(unbounded);
        }
      }
      watch.reading = false;
      watch.disarm();
      if (ec && watch.expired)
        ec = beast::error::timeout;
      bool nothing = !parser.got_some() && buffer.size() == 0;
      if (ec == beast::error::timeout && nothing)
        break;  // an idle keep-alive connection: closed without a word
      if (ec == http::error::end_of_stream || ec == asio::error::eof
          || ec == asio::error::connection_reset)
        break;
      if (ec && closing && nothing)
        break;  // the server is stopping: an idle connection closes
      if (ec) {
        response r;
        if (ec == http::error::body_limit)
          r = error_response(413, "BODY_TOO_LARGE",
                             std::string{body_limit == options.max_bundle_bytes
                                             && body_limit != options.max_body_bytes
                                           ? "agent bundles"
                                           : "request bodies"}
                               + " are limited to " + std::to_string(body_limit) + " bytes");
        else if (ec == http::error::header_limit && request_line_too_long(parser, buffer))
          // RFC 9112, 3: a request-target longer than the server parses is 414.
          r = error_response(414, "URI_TOO_LONG",
                             "the request line alone is over the " + std::to_string(options.max_header_bytes)
                               + " bytes a request head may take");
        else if (ec == http::error::header_limit)
          r = error_response(431, "HEADERS_TOO_LARGE",
                             "request heads are limited to " + std::to_string(options.max_header_bytes)
                               + " bytes");
        else if (ec == http::error::buffer_overflow)
          r = error_response(431, "HEADERS_TOO_LARGE",
                             "a chunked body's chunk extensions and trailer section are limited to "
                               + std::to_string(options.max_header_bytes) + " bytes, as a head is");
        else if (ec == beast::error::timeout)
          r = error_response(408, "REQUEST_TIMEOUT", "the request did not arrive in time");
        else if (closing && ec == asio::error::operation_aborted)
          r = error_response(503, "SHUTTING_DOWN", "the server is stopping", R"({"applied":false})");
        else
          r = error_response(400, "BAD_REQUEST", "malformed HTTP request: " + ec.message());
        co_await refuse(stream, watch, std::move(r), ec.message(), 11, false,
                        parser.is_header_done() ? &parser.get().base() : nullptr);
        break;
      }
      bool head = parser.get().method() == http::verb::head;
      if (refused) {
        co_await refuse(stream, watch, std::move(*refused), refused_why,
                        parser.get().version(), head, &parser.get().base());
        break;
      }
      auto msg = parser.release();
      if (msg.version() >= 11 && msg.find(http::field::host) == msg.end()) {
        // RFC 9112, 3.2: a server answers 400 to an HTTP/1.1 request without Host.
        co_await refuse(stream, watch,
                        error_response(400, "MISSING_HOST", "HTTP/1.1 requests need a Host header"),
                        "no Host header", msg.version(), head, &msg.base());
        break;
      }
      if (!valid_host(msg[http::field::host]) || !valid_host(absolute_authority(msg.target()))) {
        co_await refuse(stream, watch,
                        error_response(400, "BAD_REQUEST",
                                       "Host (or a request target's authority) is HOST[:PORT], "
                                       "without blanks, slashes or user info"),
                        "a bad Host header", msg.version(), head, &msg.base());
        break;
      }
      if (buffer.size() > 0 && websocket::is_upgrade(msg)) {
        // Bytes that came with the upgrade request would be lost: the
        // WebSocket reads the socket, not this buffer. A client waits for
        // the handshake's answer before it sends a frame (RFC 6455, 4.1).
        co_await refuse(stream, watch,
                        error_response(400, "BAD_REQUEST",
                                       "data arrived after the WebSocket upgrade request, before "
                                       "its answer: a client sends frames only once the handshake "
                                       "is answered (RFC 6455, 4.1)"),
                        "data before the WebSocket handshake's answer", msg.version(), head,
                        &msg.base());
        break;
      }
      auto target = router::normalize_target(origin_form(msg.target()));
      if (!target) {
        co_await refuse(stream, watch,
                        error_response(400, "BAD_REQUEST",
                                       "a request target has no fragment (#...): it stays in the client"),
                        "a fragment in the request target", msg.version(), head, &msg.base());
        break;
      }
      request req;
      req.method = std::string{msg.method_string()};
      req.target = std::move(*target);
      auto repeated = collect_headers(msg.base(), req.headers);
      if (!repeated.empty()) {
        co_await refuse(stream, watch,
                        error_response(400, "DUPLICATE_HEADER",
                                       "the " + repeated + " header is given more than once"),
                        "a repeated " + repeated + " header", msg.version(), head, &msg.base());
        break;
      }
      req.body = std::move(msg.body());
      skipped_empty_line = false;  // a request was read: the next may skip one
      req.websocket_upgrade = websocket::is_upgrade(msg);
      // A caller's own request id (a proxy's, another node's fetch) is kept,
      // so one id follows the request across services; else a new one.
      if (auto given = req.header("x-request-id"); valid_request_id(given))
        req.request_id = given;
      else
        req.request_id = new_request_id();
      req.received = steady::now();
      // Handlers may block (durability, agent replies): run them off the I/O
      // threads; only the probes that never block are answered in place. A
      // server that is stopping takes no new request. (Not a conditional
      // expression: g++ 12 miscompiles a co_await in one.)
      response res;
      auto cors = cors_origin(req);
      if (closing)
        res = error_response(503, "SHUTTING_DOWN", "the server is stopping: this request was not run",
                             R"({"applied":false})");
      else if (cors && req.method == "OPTIONS" && !req.header("access-control-request-method").empty())
        res = preflight();
      else
        res = co_await answer(req, watch);
      if (cors)
        allow_origin(res, *cors);
      else if (varies_by_origin(req))
        res.headers.emplace_back("Vary", "Origin");  // a cache must not give it to an allowed one
      res.headers.emplace_back("X-Request-Id", req.request_id);
      request_log line{{}, *req.received};
      if (options.log)  // the admin token may be in the query: never log the query
        line.line = "event=http request_id=" + log_value(req.request_id) + " method=" + req.method
                    + " path=" + log_value(req.target.substr(0, req.target.find('?')));
      bool upgrade = websocket::is_upgrade(msg)
                     && (res.status == 101 || (res.stream != stream_kind::none && !head));
      if (!upgrade)  // an upgrade is logged once its handshake is done
        log_request(line, res.status);
      if (res.status == 101 && upgrade) {
        co_await ws_session(watch, std::move(stream), std::move(msg), res.stream_agent,
                            req.request_id, std::move(res.headers), std::move(line),
                            res.token_expires_unix);
        co_return;
      }
      if (res.stream != stream_kind::none && !head) {
        if (upgrade) {
          co_await stream_ws(watch, std::move(stream), std::move(msg), res, std::move(line));
          co_return;
        }
        co_await stream_events(stream, watch, res, msg.version());
        break;
      }
      // RFC 9112, 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
      // framing; the connection closes after it.
      bool keep = msg.keep_alive() && !closing
                  && !(msg.version() < 11 && msg.find(http::field::transfer_encoding) != msg.end());
      if (!co_await write(stream, watch, res, keep, msg.version(), head) || !keep)
        break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // Follows a stream (outbox, trace, hud) from r.stream_from on, handing
  // each batch of events to `send` (SSE chunks or WebSocket frames). Ticks of
  // the agent wake it; a quiet stream gets a keep-alive every 15 s.
  asio::awaitable<void> follow(const response& r, std::shared_ptr<follower> me,
                               const std::function<asio::awaitable<bool>(
                                 const std::vector<stream_event>&)>& send) {
    {
      std::lock_guard<std::mutex> guard{followers_mtx};
      followers.emplace(r.stream_agent, me);
    }
    struct unfollow {
      impl& self;
      std::shared_ptr<follower> t;
      std::string agent;
      ~unfollow() {
        std::lock_guard<std::mutex> guard{self.followers_mtx};
        auto [b, e] = self.followers.equal_range(agent);
        for (auto i = b; i != e; ++i)
          if (i->second == t) {
            self.followers.erase(i);
            break;
          }
      }
    } cleanup{*this, me, r.stream_agent};
    constexpr std::size_t page = 256;
    auto next = r.stream_from;
    // Opened with an agent token: the stream ends as the token expires.
    auto expires = r.token_expires_unix > 0
                     ? std::chrono::system_clock::time_point{std::chrono::seconds{r.token_expires_unix}}
                     : std::chrono::system_clock::time_point::max();
    for (;;) {
      if (std::chrono::system_clock::now() >= expires)
        co_return;
      me->dirty = false;
      auto events = api.read_stream(r, next, page);
      if (!events)
        co_return;  // the agent went away
      if (!events->empty())
        next = events->back().id + 1;
      if (!co_await send(*events))
        co_return;
      if (r.stream == stream_kind::job && !events->empty() && events->back().event == "end")
        co_return;  // the job ended: so does its stream
      if (events->size() == page || me->dirty)
        continue;  // more is waiting: no pause
      if (closing)
        co_return;  // stop() wakes the followers that wait, not the others
      // Job output arrives without ticks: poll it; other streams wake on ticks.
      std::chrono::steady_clock::duration wait = std::chrono::seconds{15};
      if (r.stream == stream_kind::job)
        wait = std::chrono::milliseconds{50};
      if (auto left = expires - std::chrono::system_clock::now(); left < wait)
        wait = std::max<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds{1});
      me->timer.expires_after(wait);
      co_await me->timer.async_wait(use_nothrow);
      if (closing)
        co_return;
    }
  }

  // Server-sent events, resumable with Last-Event-ID / from_seq. A stream
  // that ends (its job ended, its agent went away, the server is stopping)
  // ends its chunked body. HTTP/1.0 has no chunked coding (RFC 9112, 6.1: no
  // Transfer-Encoding in an answer to it): the events go as they are, and
  // the end of the connection ends the body.
  // A client that stops reading is cut when a write makes no progress for
  // the write timeout (so it does not hold its connection slot forever).
  asio::awaitable<void> stream_events(beast::tcp_stream& stream, connection_watch& watch,
                                      const response& r, unsigned version) {
    const bool chunked = version >= 11;
    http::response<http::empty_body> head{http::status::ok, version};
    head.set(http::field::server, "ticktockd");
    head.set(http::field::date, http_date());
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    for (auto& [k, v] : r.headers)
      head.set(k, v);
    if (chunked)
      head.chunked(true);
    else
      head.keep_alive(false);
    http::response_serializer<http::empty_body> sr{head};
    stream.expires_never();
    watch.arm(options.write_timeout);
    auto [ec, n_head] = co_await http::async_write_header(stream, sr, use_nothrow);
    (void)n_head;
    watch.disarm();
    if (ec)
      co_return;
    // Each write of the stream's: the deadline moves on as bytes go out.
    auto progress = [&watch, to = options.write_timeout, done = std::size_t{0}](
                      const beast::error_code& wec, std::size_t n) mutable -> std::size_t {
      if (wec)
        return 0;
      if (n > done) {
        done = n;
        watch.arm(to);
      }
      return 65536;
    };
    auto me = std::make_shared<follower>(co_await asio::this_coro::executor);
    bool broken = false;
    co_await follow(r, me, [&](const std::vector<stream_event>& events) -> asio::awaitable<bool> {
      std::string chunk;
      for (auto& e : events) {
        // SSE ends a line at CR, LF or CRLF: each of them in the data
        // starts a new data: line (a client joins them with LF), so that a
        // CR cannot cut the data short or turn its rest into fields.
        chunk += "id: " + std::to_string(e.id) + "\nevent: " + e.event + "\ndata: ";
        for (std::size_t i = 0; i < e.data.size(); ++i) {
          char c = e.data[i];
          if (c == '\r' && i + 1 < e.data.size() && e.data[i + 1] == '\n')
            continue;  // CRLF: one line break, at its LF
          if (c == '\r' || c == '\n')
            chunk += "\ndata: ";
          else
            chunk += c;
        }
        chunk += "\n\n";
      }
      if (chunk.empty())
        chunk = ": keep-alive\n\n";
      beast::error_code wec;
      watch.arm(options.write_timeout);
      if (chunked) {
        auto [cec, cn] = co_await asio::async_write(
          stream, http::make_chunk(asio::buffer(chunk)), progress, use_nothrow);
        (void)cn;
        wec = cec;
      } else {
        auto [rec, rn] = co_await asio::async_write(stream, asio::buffer(chunk), progress,
                                                    use_nothrow);
        (void)rn;
        wec = rec;
      }
      watch.disarm();
      if (wec && watch.expired)
        log("event=write_timeout agent=" + r.stream_agent + " stream=sse");
      broken = static_cast<bool>(wec);
      co_return !wec;
    });
    if (chunked && !broken) {
      watch.arm(options.write_timeout);
      auto [lec, ln] = co_await asio::async_write(stream, http::make_chunk_last(), use_nothrow);
      (void)lec;
      (void)ln;
      watch.disarm();
    }
  }

  // The same streams over a WebSocket: one text frame {"id","event","data"}
  // per event, resumable with ?from_seq=. A reader runs beside the writer so
  // that the client's close (or a drop) ends the stream at once.
  // A frame that is not written within the write timeout cuts the
  // connection, as a response's write does.
  asio::awaitable<void> stream_ws(connection_watch& watch, beast::tcp_stream stream,
                                  http::request<http::string_body> msg, const response& r,
                                  request_log line) {
    stream.expires_never();
    struct ws_state {
      explicit ws_state(beast::tcp_stream&& s) : ws(std::move(s)) {}
      websocket::stream<beast::tcp_stream> ws;
      bool closed = false;
    };
    auto st = std::make_shared<ws_state>(std::move(stream));
    watch.stream = &st->ws.next_layer();
    limit(st->ws);  // the client's frames are read (and dropped) under the same limits
    st->ws.set_option(decorate(r.headers));
    auto [ec] = co_await st->ws.async_accept(msg, use_nothrow);
    log_request(line, 101, ec);
    if (ec)
      co_return;
    // The reader wakes the follower when the connection ends. No co_await in
    // the co_spawn statement: g++ 12 destroys the captures of a lambda
    // temporary twice when its full-expression contains a co_await, which
    // dropped a reference to st (and me) and freed them under the writer.
    auto ex = co_await asio::this_coro::executor;
    auto me = std::make_shared<follower>(ex);
    asio::co_spawn(
      ex,
      [st, me]() -> asio::awaitable<void> {
        beast::flat_buffer b;
        for (;;) {
          auto [rec, n] = co_await st->ws.async_read(b, use_nothrow);
          (void)n;
          if (rec)
            break;
          b.consume(b.size());
        }
        st->closed = true;
        me->timer.cancel();
      },
      asio::detached);
    co_await follow(r, me, [&](const std::vector<stream_event>& events) -> asio::awaitable<bool> {
      if (st->closed)
        co_return false;
      for (auto& e : events) {
        auto frame = boost::json::serialize(
          boost::json::object{{"id", e.id}, {"event", e.event}, {"data", e.data}});
        watch.arm(options.write_timeout);
        auto [wec, wn] = co_await st->ws.async_write(asio::buffer(frame), use_nothrow);
        (void)wn;
        watch.disarm();
        if (wec)
          co_return false;
      }
      co_return !st->closed;
    });
    // The stream ended while the client still listens (the server is
    // stopping, the agent was deleted, the job ended, the token expired): a
    // close frame says so, as the last chunk ends an SSE stream; 1001 when
    // the server stops, 1008 when the token expired.
    if (!st->closed) {
      st->closed = true;
      websocket::close_reason why{websocket::close_code::normal};
      if (closing)
        why = websocket::close_code::going_away;
      else if (r.token_expires_unix > 0
               && std::chrono::system_clock::now()
                    >= std::chrono::system_clock::time_point{std::chrono::seconds{r.token_expires_unix}})
        why = {websocket::close_code::policy_error, "token expired"};
      auto [cec] = co_await st->ws.async_close(why, use_nothrow);
      (void)cec;
    }
  }
};

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_server::~http_server() {
  stop();
  if (impl_ && impl_->keep)
    (void)impl_.release();
}

error check_cors_origins(const std::vector<std::string>& origins) {
  for (auto& o : origins) {
    if (o == "*")
      continue;
    std::string_view rest{o};
    bool scheme = rest.starts_with("http://") || rest.starts_with("https://");
    rest.remove_prefix(scheme ? rest.find("//") + 2 : 0);
    bool ok = scheme && !rest.empty() && rest.size() <= 253 + 6  // a host name, ":65535"
              && std::all_of(rest.begin(), rest.end(), [](char c) {
                   return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                          || c == '-' || c == '.' || c == ':' || c == '[' || c == ']';
                 });
    // A port is 1 to 65535 without leading zeros (after an IPv6 address's
    // bracket, if any).
    auto colon = rest.rfind(':');
    auto bracket = rest.find(']');
    if (ok && colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
      auto port = rest.substr(colon + 1);
      unsigned value = 0;
      auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
      ok = !port.empty() && port.size() <= 5 && port.front() != '0' && ec == std::errc{}
           && end == port.data() + port.size() && value <= 65535;  // as a browser writes it
    }
    if (!ok)
      return error{errc::invalid_argument,
                   "CORS origin '" + o + "' is not \"*\" nor scheme://host[:port] "
                   "(http or https, no path), as a browser sends it in Origin"};
  }
  return {};
}

expected<std::unique_ptr<http_server>> http_server::start(node& n, http_options options) {
  if (options.admin_token.empty())
    return error{errc::invalid_argument, "the HTTP server needs an admin token"};
  if (auto err = check_cors_origins(options.cors_origins))
    return err;
  if (options.loops && !options.loops->running())
    return error{errc::invalid_argument,
                 "the HTTP server's io_loops do not run: make them the node's scheduler "
                 "(node_options::configure_caf = loops->scheduler())"};
  auto p = std::make_unique<impl>(n, std::move(options));
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(p->options.host, ec);
  if (ec)
    return error{errc::invalid_argument, "bad listen address '" + p->options.host + "'"};
  tcp::endpoint ep{addr, p->options.port};
  p->acceptor->open(ep.protocol(), ec);
  if (!ec)
    p->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    p->acceptor->bind(ep, ec);
  if (!ec)
    p->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return error{errc::invalid_argument, "cannot listen on " + p->options.host + ":"
                                           + std::to_string(p->options.port) + ": " + ec.message()};
  auto* raw = p.get();
  // Every tick may matter to a follower (outbox events, the trace).
  p->observer = n.add_tick_observer([raw](const tick_event& ev) {
    raw->wake_followers(ev.agent);
    if (!ev.ws.empty())
      raw->deliver_ws(ev);
  });
  ++p->tasks;
  asio::co_spawn(*p->io_threads.front()->io, p->accept_loop(), asio::detached);
  for (auto& t : p->io_threads)
    if (t->own)
      t->thread = std::thread{[t = t.get()] {
        detail::name_this_thread("tt-http");
        t->io->run();
      }};
  return std::unique_ptr<http_server>(new http_server(std::move(p)));
}

std::uint16_t http_server::port() const noexcept {
  return impl_->acceptor->local_endpoint().port();
}

void http_server::stop_accepting() {
  if (!impl_ || impl_->closing.exchange(true))
    return;
  auto& p = *impl_;
  asio::post(*p.io_threads.front()->io, [raw = &p] {
    boost::system::error_code ec;
    raw->acceptor->close(ec);
  });
  // Idle connections close; a request read from now on gets 503
  // SHUTTING_DOWN; a request waiting for its agent's tick still gets the
  // tick's reply.
  for (auto& t : p.io_threads)
    asio::post(*t->io, [t = t.get()] {
      for (auto* w = t->first; w; w = w->next)
        w->shut_down(false, false);  // completes nothing inline: the list stays intact
    });
}

void http_server::stop(bool drained) {
  if (!impl_ || impl_->stopped.exchange(true))
    return;
  stop_accepting();
  auto& p = *impl_;
  p.n.remove_tick_observer(p.observer);
  // Every connection ends, each on its own thread: requests still waiting
  // for an agent get 503 SHUTTING_DOWN (saying whether their tick ran),
  // answers being computed or written are written (Connection: close), SSE
  // streams end their chunked body and WebSockets get a close frame (1001
  // going away).
  for (auto& t : p.io_threads)
    asio::post(*t->io, [t = t.get(), drained] {
      for (auto* w = t->first; w; w = w->next)
        w->shut_down(true, drained);
    });
  {
    std::lock_guard<std::mutex> guard{p.followers_mtx};
    for (auto& [agent, f] : p.followers)
      asio::post(f->timer.get_executor(), [f = f] { f->timer.cancel(); });
  }
  {
    std::lock_guard<std::mutex> guard{p.ws_mtx};
    for (auto& [id, c] : p.ws_conns)
      asio::post(c->ws.get_executor(), [c = c] { c->go_away(); });
  }
  {
    // Bounded: a client that reads nothing (or never answers the close
    // frame) is cut when the I/O threads stop.
    std::unique_lock<std::mutex> lock{p.idle_mtx};
    p.idle_cv.wait_for(lock, shutdown_grace, [&] { return p.connections == 0; });
  }
  if (p.options.loops && !p.end_on_loops()) {
    // Something of the server may still run on the loops (misuse: the node
    // closed first, or stop() ran on a loop): the impl is kept, never freed.
    p.log("event=http_stop_incomplete reason=" + log_value("sessions still on the node's loops"));
    p.keep = true;
  }
  for (auto& t : p.io_threads)
    if (t->own)
      t->io->stop();
  for (auto& t : p.io_threads)
    if (t->thread.joinable())
      t->thread.join();
  // The handler pool is joined only now: a request that a session read just
  // before `closing` was set may hand its work to the pool after that, and
  // the work must still run (it is answered within the grace above, or, if
  // it outlasts it, finishes before the router is quiesced). Joined earlier,
  // the pool would take that work and never run it: the request would go
  // unanswered.
  p.handlers.join();
  {
    // A WebSocket whose client did not answer the close frame in the grace
    // was cut with its session, before its read loop could tell the agent:
    // the close trigger goes out here, so that the agent does not count the
    // connection as open for good.
    std::lock_guard<std::mutex> guard{p.ws_mtx};
    for (auto& [id, c] : p.ws_conns)
      p.ws_close_trigger(c);
    p.ws_conns.clear();
  }
  // No request arrives any more; requests still waiting for an agent (ones
  // that reached the router after the 503s went out) are dropped while the
  // io_context their answers would be posted to exists.
  impl_->api.quiesce();
}

}  // namespace ticktock::drivers
