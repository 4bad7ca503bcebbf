// The HTTP server over real sockets on 127.0.0.1, with a Beast client.

#include <catch2/catch.hpp>

#include <sched.h>

#include <future>
#include <regex>
#include <set>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>

#include "../temp_dir.hpp"
#include "../tick_log.hpp"
#include "ticktock/drivers/http_server.hpp"
#include "ticktock/drivers/io_loops.hpp"
#include "ticktock/ticktock.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using namespace ticktock;
using namespace std::chrono_literals;

namespace {

struct ws_echo_state {
  std::uint64_t frames = 0;
  std::vector<std::string> events;
};
// Records a connection's open and close events in the agent's state.
void record_open_close(ws_echo_state& s, const ws_event& ev) {
  if (ev.event == ws_event::kind::open)
    s.events.push_back("open");
  if (ev.event == ws_event::kind::close)
    s.events.push_back("close");
}

// Echoes frames upper-cased; records open/close.
struct ws_echo : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto ev = ws_event::from(t);
    if (!ev)
      return;
    record_open_close(state(), *ev);
    if (ev->event == ws_event::kind::frame) {
      ++state().frames;
      auto up = ev->data;
      for (auto& c : up)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      ctx.ws_send(ev->connection, up);
      if (ev->data == "bye")
        ctx.ws_close(ev->connection);
    }
  }
};

// Sends each connection its id when it opens; a frame "to:ID:TEXT" sends
// TEXT to connection ID (its own or any other).
struct ws_relay : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto ev = ws_event::from(t);
    if (!ev)
      return;
    if (ev->event == ws_event::kind::open)
      ctx.ws_send(ev->connection, ev->connection);
    if (ev->event == ws_event::kind::frame && ev->data.starts_with("to:")) {
      auto rest = ev->data.substr(3);
      auto colon = rest.find(':');
      ctx.ws_send(rest.substr(0, colon), rest.substr(colon + 1));
    }
  }
};

// Answers /a/{id}/say with the request body; defers (and never answers)
// /a/{id}/silent; answers /a/{id}/status?N with status N, the body and a
// Content-Type.
struct sayer : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto req = http_request::from(t);
    if (!req)
      return;
    if (req->path == "/status")
      ctx.reply(static_cast<std::uint16_t>(std::stoi(req->query)), req->body,
                {{"Content-Type", "text/plain"}});
    else if (req->path == "/silent") {
      ++state().frames;  // counts the requests left waiting
      ctx.defer_reply();
    } else
      ctx.reply(200, req->body);
  }
};

// Sleeps for the query's ms in each http tick, then answers "done"; counts
// the ticks begun.
std::atomic<int> slow_ticks{0};
struct slow_sayer : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto req = http_request::from(t);
    if (!req)
      return;
    ++slow_ticks;
    ++state().frames;
    std::this_thread::sleep_for(std::chrono::milliseconds{std::stoi(req->query)});
    ctx.reply(200, "done");
  }
};

// A frame "flood" makes the agent send 40 frames of 256 KiB back at once;
// "big" one frame of 8 MiB.
struct ws_flood : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto ev = ws_event::from(t);
    if (!ev)
      return;
    record_open_close(state(), *ev);
    if (ev->event == ws_event::kind::frame && ev->data == "flood")
      for (int i = 0; i < 40; ++i)
        ctx.ws_send(ev->connection, std::string(256 << 10, static_cast<char>('a' + i % 26)));
    if (ev->event == ws_event::kind::frame && ev->data == "big")
      ctx.ws_send(ev->connection, std::string(8 << 20, 'b'));
  }
};

// Answers every HTTP request with the name of the thread its tick ran on.
struct thread_namer : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (!http_request::from(t))
      return;
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof name);
    ctx.reply(200, name);
  }
};

// Every message tick fails (so the message ends in the deadletter).
struct failer : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::message)
      ctx.fail("asked to fail");
  }
};

// Its first tick puts 96 events of 100 KB in its outbox.
struct emitter : agent<ws_echo_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    if (t.kind == trigger_kind::init)
      for (int i = 0; i < 96; ++i)
        ctx.emit(std::string(100'000, static_cast<char>('a' + i % 26)));
  }
};

// Waits (bounded: state changes are asynchronous) until `id` is in `state`.
bool reaches(node& n, const std::string& id, agent_state state) {
  for (int i = 0; i < 400; ++i) {
    if (auto s = n.status(id); s && s->state == state)
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// The server's log lines, for a test to wait on.
struct log_lines {
  std::mutex mtx;
  std::vector<std::string> lines;
  void operator()(const std::string& line) {
    std::lock_guard<std::mutex> guard{mtx};
    lines.push_back(line);
  }
  bool wait_for(const std::string& what, std::chrono::milliseconds most) {
    for (auto end = std::chrono::steady_clock::now() + most;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(10ms)) {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& l : lines)
        if (l.find(what) != std::string::npos)
          return true;
    }
    return false;
  }
};

// A node and its HTTP server; by default (`shared`) on io_loops, as
// ticktockd runs them, else on CAF's scheduler and threads of the server's.
struct server_fixture {
  test::temp_dir dir;
  std::unique_ptr<node> n;
  std::unique_ptr<drivers::http_server> server;

  explicit server_fixture(std::size_t max_connections = 1024,
                          std::chrono::milliseconds reply_timeout = 30s,
                          std::function<void(drivers::http_options&)> tweak = nullptr,
                          bool shared = true) {
    agent_registry r;
    r.add<ws_echo>("ws-echo");
    r.add<ws_flood>("ws-flood");
    r.add<emitter>("emitter");
    r.add<sayer>("sayer");
    r.add<slow_sayer>("slow-sayer");
    r.add<ws_relay>("ws-relay");
    r.add<failer>("failer");
    r.add<thread_namer>("thread-namer");
    node_options o;
    o.data_dir = dir.path();
    o.threads = 2;
    drivers::http_options h;
    if (shared) {
      h.loops = drivers::io_loops::create(2);
      o.configure_caf = h.loops->scheduler();
    }
    n = *node::open(o, std::move(r));
    h.port = 0;
    h.admin_token = "secret";
    h.max_body_bytes = 4096;
    h.read_timeout = 500ms;
    h.max_connections = max_connections;
    h.reply_timeout = reply_timeout;
    if (tweak)
      tweak(h);
    server = *drivers::http_server::start(*n, h);
  }
};

// A WebSocket to `agent` whose client has a 4 KiB receive buffer: what the
// server sends beyond the socket buffers waits for the client's reads.
std::unique_ptr<websocket::stream<tcp::socket>> slow_reader_ws(asio::io_context& io,
                                                               std::uint16_t port,
                                                               const std::string& agent) {
  auto ws = std::make_unique<websocket::stream<tcp::socket>>(io);
  ws->next_layer().open(tcp::v4());
  ws->next_layer().set_option(asio::socket_base::receive_buffer_size(4096));
  ws->next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  ws->handshake("127.0.0.1", "/v1/agents/" + agent + "/ws?token=secret");
  return ws;
}

http::response<http::string_body> roundtrip(std::uint16_t port, http::request<http::string_body> req) {
  asio::io_context io;
  beast::tcp_stream s{io};
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  req.set(http::field::host, "127.0.0.1");
  req.prepare_payload();
  http::write(s, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  return res;
}

}  // namespace

TEST_CASE("a WebSocket connection outlives its agent's hibernation and wakes it") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  asio::io_context io;
  websocket::stream<tcp::socket> ws{io};
  ws.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
    req.set(http::field::authorization, "Bearer secret");
  }));
  ws.handshake("127.0.0.1", "/v1/agents/w/ws");
  beast::flat_buffer buf;
  ws.write(asio::buffer(std::string{"hello"}));
  ws.read(buf);
  CHECK(beast::buffers_to_string(buf.data()) == "HELLO");
  buf.consume(buf.size());

  REQUIRE_FALSE(f.n->hibernate("w"));
  REQUIRE(reaches(*f.n, "w", agent_state::hibernated));

  ws.write(asio::buffer(std::string{"again"}));
  ws.read(buf);
  CHECK(beast::buffers_to_string(buf.data()) == "AGAIN");
  buf.consume(buf.size());

  ws.write(asio::buffer(std::string{"bye"}));
  ws.read(buf);
  CHECK(beast::buffers_to_string(buf.data()) == "BYE");
  beast::error_code ec;
  ws.read(buf, ec);  // the agent closed the connection
  CHECK(ec == websocket::error::closed);
  // The close trigger is sent when the server's read loop ends, after the
  // client saw the close: wait for it (bounded).
  for (int i = 0; i < 400 && f.n->state<ws_echo_state>("w")->events.size() < 2; ++i) {
    f.n->wait_idle(10s);
    std::this_thread::sleep_for(5ms);
  }
  auto s = f.n->state<ws_echo_state>("w");
  CHECK(s->frames == 3);
  CHECK(s->events == std::vector<std::string>{"open", "close"});
}

TEST_CASE("an agent sends to its own WebSocket connections only") {
  // Bug: a tick's ws_send went to any open connection of the server with
  // that id, so an agent could write to another agent's clients.
  server_fixture f;
  REQUIRE_FALSE(f.n->create("a", "ws-relay"));
  REQUIRE_FALSE(f.n->create("b", "ws-relay"));
  asio::io_context io;
  auto open = [&](const std::string& agent, std::string& id) {
    auto ws = std::make_unique<websocket::stream<tcp::socket>>(io);
    ws->next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
    ws->handshake("127.0.0.1", "/v1/agents/" + agent + "/ws?token=secret");
    beast::flat_buffer buf;
    ws->read(buf);  // the agent says the connection's id
    id = beast::buffers_to_string(buf.data());
    return ws;
  };
  std::string ida, idb;
  auto wa = open("a", ida);
  auto wb = open("b", idb);
  REQUIRE(ida != idb);
  auto say = [](websocket::stream<tcp::socket>& ws, const std::string& text) {
    ws.write(asio::buffer(text));
  };
  auto next = [](websocket::stream<tcp::socket>& ws) {
    beast::flat_buffer buf;
    ws.read(buf);
    return beast::buffers_to_string(buf.data());
  };
  // b's tick sends to a's connection, then to its own: only the second arrives.
  say(*wb, "to:" + ida + ":intruder");
  say(*wb, "to:" + idb + ":mine");
  CHECK(next(*wb) == "mine");
  // a's client gets what its own agent sends, and nothing from b before it.
  say(*wa, "to:" + ida + ":own");
  CHECK(next(*wa) == "own");
  wa->close(websocket::close_code::normal);
  wb->close(websocket::close_code::normal);
}

TEST_CASE("frames to an errored agent close its WebSocket with 1011, and an upgrade to it gets 409") {
  // Bug: the node refused the frames of an errored agent (agent_errored) and
  // the server dropped them without a word, the connection left open.
  auto log = std::make_shared<log_lines>();
  server_fixture f{1024, 30s, [log](drivers::http_options& h) {
                     h.log = [log](const std::string& l) { (*log)(l); };
                   }};
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  asio::io_context io;
  websocket::stream<tcp::socket> ws{io};
  ws.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  ws.handshake("127.0.0.1", "/v1/agents/w/ws?token=secret");
  beast::flat_buffer buf;
  ws.write(asio::buffer(std::string{"hello"}));
  ws.read(buf);
  CHECK(beast::buffers_to_string(buf.data()) == "HELLO");
  buf.consume(buf.size());

  // Hibernated with a state it cannot load: the next frame wakes it and it
  // errors; the frames after that are refused.
  REQUIRE_FALSE(f.n->hibernate("w"));
  REQUIRE(reaches(*f.n, "w", agent_state::hibernated));
  REQUIRE_FALSE(f.n->store().raw_put("state", storage::keys::agent("w"), "\x05garbage"));
  ws.write(asio::buffer(std::string{"wake"}));
  REQUIRE(reaches(*f.n, "w", agent_state::errored));
  ws.write(asio::buffer(std::string{"refused"}));
  beast::error_code ec;
  ws.read(buf, ec);
  CHECK(ec == websocket::error::closed);
  CHECK(ws.reason().code == websocket::close_code::internal_error);
  CHECK(std::string{ws.reason().reason.c_str()} == "AGENT_ERRORED");
  // With the upgrade's request id, as the connection's open and close.
  CHECK(log->wait_for("event=ws_refused request_id=", 10s));
  CHECK(log->wait_for(" agent=w connection=ws-", 10s));
  CHECK(log->wait_for("event=ws_open request_id=", 10s));
  CHECK(log->wait_for("error=AGENT_ERRORED close=1011", 10s));
  // The upgrade was logged once its handshake was done.
  CHECK(log->wait_for("method=GET path=/v1/agents/w/ws status=101 us=", 10s));

  // A new connection is refused before the upgrade.
  websocket::stream<tcp::socket> again{io};
  again.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  websocket::response_type res;
  again.handshake(res, "127.0.0.1", "/v1/agents/w/ws?token=secret", ec);
  CHECK(ec);
  CHECK(res.result_int() == 409);
  CHECK(boost::json::parse(res.body()).at("error").at("code").as_string() == "AGENT_ERRORED");
}

TEST_CASE("a WebSocket client that does not read is closed with 1008 once its queue is full") {
  // The queue holds max(4 x --max-body, 1 MiB) = 1 MiB here; the agent sends
  // 10 MiB at once to a client whose small receive buffer fills at once.
  auto log = std::make_shared<log_lines>();
  server_fixture f{1024, 30s, [log](drivers::http_options& h) {
                     h.log = [log](const std::string& l) { (*log)(l); };
                     h.read_timeout = 30s;  // no idle ping in the way
                   }};
  REQUIRE_FALSE(f.n->create("w", "ws-flood"));
  asio::io_context io;
  auto client = slow_reader_ws(io, f.server->port(), "w");
  auto& ws = *client;
  ws.write(asio::buffer(std::string{"flood"}));
  // Not reading until the server gave up on the queue (bounded wait).
  CHECK(log->wait_for("event=ws_overflow agent=w", 10s));
  // What was on its way arrives, then the close frame: far less than 40 frames.
  beast::flat_buffer buf;
  beast::error_code ec;
  int frames = 0;
  for (int i = 0; i < 40 && !ec; ++i) {
    ws.read(buf, ec);
    if (!ec)
      ++frames;
    buf.consume(buf.size());
  }
  CHECK(ec == websocket::error::closed);
  CHECK(ws.reason().code == websocket::close_code::policy_error);
  CHECK(frames < 40);
  // The agent hears the close as any other.
  for (int i = 0; i < 400 && f.n->state<ws_echo_state>("w")->events.size() < 2; ++i) {
    f.n->wait_idle(10s);
    std::this_thread::sleep_for(5ms);
  }
  CHECK(f.n->state<ws_echo_state>("w")->events == std::vector<std::string>{"open", "close"});
}

TEST_CASE("a stream whose client stops reading is cut after the write timeout") {
  // One connection allowed: the stuck stream holds it until it is cut.
  // (The read timeout is long: a WebSocket client quiet for it is cut anyway.)
  server_fixture f{1, 30s, [](drivers::http_options& h) {
                     h.write_timeout = 300ms;
                     h.read_timeout = 30s;
                   }};
  REQUIRE_FALSE(f.n->create("e", "emitter"));
  REQUIRE(f.n->wait_idle(10s));
  asio::io_context io;
  auto open = [&] {
    auto s = std::make_unique<tcp::socket>(io);
    s->open(tcp::v4());
    s->set_option(asio::socket_base::receive_buffer_size(4096));
    s->connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
    return s;
  };
  // Each kind of stream: SSE (9.6 MB of events) and WebSocket.
  for (auto* head : {"GET /v1/agents/e/fs/outbox?from_seq=0 HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer secret\r\nAccept: text/event-stream\r\n\r\n",
                     "GET /v1/agents/e/fs/outbox?from_seq=0&token=secret HTTP/1.1\r\nHost: x\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"}) {
    CAPTURE(head);
    auto stuck = open();
    asio::write(*stuck, asio::buffer(std::string{head}));
    char some[4096];
    stuck->read_some(asio::buffer(some));  // the stream started: it holds the connection
    // While the stream holds the only connection, others get 503; once the
    // server cut it, a request goes through (bounded wait).
    int status = 0;
    for (int i = 0; i < 200 && status != 200; ++i) {
      http::request<http::string_body> ok{http::verb::get, "/healthz", 11};
      status = static_cast<int>(roundtrip(f.server->port(), ok).result_int());
      if (status != 200)
        std::this_thread::sleep_for(50ms);
    }
    CHECK(status == 200);
  }
  // An agent's WebSocket whose client reads nothing of a frame larger than
  // the socket buffers: its write makes no progress. (The server may not
  // have seen the last /healthz connection close yet: its handshake gets
  // 503 until it has.)
  REQUIRE_FALSE(f.n->create("w", "ws-flood"));
  std::unique_ptr<websocket::stream<tcp::socket>> client;
  for (int i = 0; i < 200 && !client; ++i) {
    try {
      client = slow_reader_ws(io, f.server->port(), "w");
    } catch (const boost::system::system_error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  REQUIRE(client);
  auto& ws = *client;
  ws.write(asio::buffer(std::string{"big"}));
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    http::request<http::string_body> ok{http::verb::get, "/healthz", 11};
    status = static_cast<int>(roundtrip(f.server->port(), ok).result_int());
    if (status != 200)
      std::this_thread::sleep_for(50ms);
  }
  CHECK(status == 200);
}

TEST_CASE("a WebSocket client that keeps reading a large frame slowly is not cut") {
  // The write timeout bounds a write that makes no progress, not the time a
  // whole frame takes: 8 MiB at most 6.4 MiB/s outlasts 300 ms (the socket
  // buffers take a few MiB at once).
  server_fixture f{1024, 30s, [](drivers::http_options& h) {
                     h.write_timeout = 300ms;
                     h.read_timeout = 30s;
                   }};
  REQUIRE_FALSE(f.n->create("w", "ws-flood"));
  asio::io_context io;
  auto client = slow_reader_ws(io, f.server->port(), "w");
  auto& ws = *client;
  ws.write(asio::buffer(std::string{"big"}));
  std::size_t got = 0;
  beast::error_code ec;
  auto started = std::chrono::steady_clock::now();
  do {
    beast::flat_buffer b;
    auto before = got;
    got += ws.read_some(b, 16384, ec);
    if (got / 65536 != before / 65536)
      std::this_thread::sleep_for(10ms);
  } while (!ec && !ws.is_message_done() && std::chrono::steady_clock::now() - started < 60s);
  CHECK_FALSE(ec);
  CHECK(got == std::size_t{8} << 20);
  CHECK(std::chrono::steady_clock::now() - started > 300ms);  // it did take longer
}

TEST_CASE("a WebSocket upgrade needs a token and a known agent") {
  server_fixture f;
  f.n->create("w", "ws-echo");
  asio::io_context io;
  websocket::stream<tcp::socket> ws{io};
  ws.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  beast::error_code ec;
  websocket::response_type res;
  ws.handshake(res, "127.0.0.1", "/v1/agents/w/ws", ec);
  CHECK(ec);
  CHECK(res.result_int() == 401);
  http::request<http::string_body> plain{http::verb::get, "/v1/agents/w/ws?token=secret", 11};
  CHECK(roundtrip(f.server->port(), plain).result_int() == 426);
}

TEST_CASE("transport limits: body size, header size, slow clients") {
  server_fixture f;
  f.n->create("w", "ws-echo");
  http::request<http::string_body> big{http::verb::post, "/v1/agents/w/inbox", 11};
  big.set(http::field::authorization, "Bearer secret");
  big.body() = std::string(5000, 'x');
  CHECK(roundtrip(f.server->port(), big).result_int() == 413);

  http::request<http::string_body> heavy{http::verb::get, "/healthz", 11};
  heavy.set("X-Filler", std::string(20000, 'y'));
  CHECK(roundtrip(f.server->port(), heavy).result_int() == 431);

  // Half a request, then silence: after the read timeout the server answers
  // 408 REQUEST_TIMEOUT and closes the connection.
  asio::io_context io;
  tcp::socket s{io};
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  asio::write(s, asio::buffer(std::string{"GET /healthz HTTP/1.1\r\nHost: x\r\n"}));
  beast::flat_buffer b;
  http::response<http::string_body> res;
  beast::error_code ec;
  http::read(s, b, res, ec);
  REQUIRE_FALSE(ec);
  CHECK(res.result_int() == 408);
  CHECK(res.body().find("REQUEST_TIMEOUT") != std::string::npos);
  CHECK_FALSE(res.keep_alive());
  CHECK_FALSE(res["X-Request-Id"].empty());
  http::read(s, b, res, ec);
  CHECK(ec);  // then closed

  // An idle connection that sends nothing is closed without a response.
  tcp::socket idle{io};
  idle.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  char byte;
  idle.read_some(asio::buffer(&byte, 1), ec);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));

  http::request<http::string_body> ok{http::verb::get, "/healthz", 11};
  CHECK(roundtrip(f.server->port(), ok).result_int() == 200);

  // HTTP/1.1 without Host: 400, and the connection closes; HTTP/1.0 may omit it.
  for (auto [head, status] : {std::pair{"GET /healthz HTTP/1.1\r\n\r\n", 400},
                              std::pair{"GET /healthz HTTP/1.0\r\n\r\n", 200}}) {
    tcp::socket raw{io};
    raw.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
    asio::write(raw, asio::buffer(std::string{head}));
    beast::flat_buffer rb;
    http::response<http::string_body> hr;
    http::read(raw, rb, hr, ec);
    REQUIRE_FALSE(ec);
    CHECK(static_cast<int>(hr.result_int()) == status);
    if (status == 400) {
      CHECK(hr.body().find("MISSING_HOST") != std::string::npos);
      CHECK_FALSE(hr.keep_alive());
    }
  }
}

TEST_CASE("a WebSocket stream closed by its client frees its state once") {
  // Regression (found by ASan: heap-use-after-free in stream_ws, now and then
  // in the test below): the reader coroutine of a streamed WebSocket was
  // spawned in a statement that also did co_await. g++ 12 destroys the
  // captures of a lambda temporary in such a full-expression twice, so the
  // connection's state lost a reference: when the client closed, the reader
  // freed it and the stream's writer then used and released freed memory.
  server_fixture f{1};  // one connection at a time: the next waits for the last to end
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE(f.n->wait_idle(10s));
  asio::io_context io;
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), f.server->port()};
  for (int i = 0; i < 5; ++i) {
    // Until the previous stream's session has ended, the upgrade gets a 503.
    std::unique_ptr<websocket::stream<tcp::socket>> ws;
    for (int attempt = 0; attempt < 400 && !ws; ++attempt) {
      auto s = std::make_unique<websocket::stream<tcp::socket>>(io);
      s->next_layer().connect(ep);
      beast::error_code ec;
      s->handshake("127.0.0.1", "/v1/agents/w/fs/logs/trace?from_seq=0&token=secret", ec);
      if (!ec)
        ws = std::move(s);
      else
        std::this_thread::sleep_for(5ms);  // bounded, as above
    }
    REQUIRE(ws);
    beast::flat_buffer buf;
    ws->read(buf);
    auto frame = boost::json::parse(beast::buffers_to_string(buf.data())).as_object();
    CHECK(frame.at("id").as_int64() == 0);
    ws->close(websocket::close_code::normal);
  }
  // The last session ends too before the server stops.
  auto healthz = [&] {
    http::request<http::string_body> req{http::verb::get, "/healthz", 11};
    return roundtrip(f.server->port(), req).result_int();
  };
  auto status = healthz();
  for (int attempt = 0; attempt < 400 && status == 503; ++attempt) {
    std::this_thread::sleep_for(5ms);
    status = healthz();
  }
  CHECK(status == 200);
}

TEST_CASE("streams are served over WebSocket too, and the HUD is redacted") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE(f.n->wait_idle(10s));
  asio::io_context io;
  auto open = [&](const std::string& target) {
    auto ws = std::make_unique<websocket::stream<tcp::socket>>(io);
    ws->next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
    ws->handshake("127.0.0.1", target);
    return ws;
  };
  auto trace = open("/v1/agents/w/fs/logs/trace?from_seq=0&token=secret");
  beast::flat_buffer buf;
  trace->read(buf);
  auto frame = boost::json::parse(beast::buffers_to_string(buf.data())).as_object();
  CHECK(frame.at("id").as_int64() == 0);
  auto full = boost::json::parse(frame.at("data").as_string()).as_object();
  CHECK(full.at("trigger").as_string() == "init");
  CHECK(full.contains("state_hash"));

  auto hud = open("/v1/agents/w/fs/hud/stream?from_seq=0&token=secret");
  buf.consume(buf.size());
  hud->read(buf);
  auto hframe = boost::json::parse(beast::buffers_to_string(buf.data())).as_object();
  auto redacted = boost::json::parse(hframe.at("data").as_string()).as_object();
  CHECK(redacted.at("trigger").as_string() == "init");
  CHECK_FALSE(redacted.contains("state_hash"));
  CHECK_FALSE(redacted.contains("logs"));
  CHECK_FALSE(redacted.contains("error"));
  trace->close(websocket::close_code::normal);
  hud->close(websocket::close_code::normal);
}

TEST_CASE("a graceful stop answers a request whose tick commits, and tells a 503 that did not run") {
  // Bug: at SIGTERM every request waiting for its agent got 503
  // SHUTTING_DOWN, also one whose tick was running and then committed
  // during the drain: the client, told it failed, would send it again.
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "slow-sayer"));
  REQUIRE_FALSE(f.n->create("d", "sayer"));
  REQUIRE(f.n->wait_idle(10s));
  slow_ticks = 0;
  // The status and body, or 0 if the connection closed unanswered (a
  // request not read before the stop: not applied either).
  auto post = [&](const std::string& target) -> std::pair<unsigned, std::string> {
    try {
      http::request<http::string_body> req{http::verb::post, target, 11};
      req.set(http::field::authorization, "Bearer secret");
      auto res = roundtrip(f.server->port(), std::move(req));
      return {res.result_int(), res.body()};
    } catch (const std::exception&) {
      return {0, {}};
    }
  };
  std::pair<unsigned, std::string> first, second, deferred;
  std::thread c{[&] { deferred = post("/a/d/silent"); }};
  for (int i = 0; i < 400 && f.n->state<ws_echo_state>("d")->frames == 0; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(f.n->state<ws_echo_state>("d")->frames == 1);  // its tick committed, deferring
  std::thread a{[&] { first = post("/a/s/?400"); }};
  for (int i = 0; i < 400 && slow_ticks == 0; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(slow_ticks == 1);
  // The second waits behind the first tick; it will not run.
  std::thread b{[&] { second = post("/a/s/?0"); }};
  std::this_thread::sleep_for(100ms);
  f.server->stop_accepting();
  CHECK(f.n->drain(10s));
  f.server->stop(true);
  a.join();
  b.join();
  c.join();
  CHECK(first == std::pair<unsigned, std::string>{200, "done"});
  if (second.first != 0) {
    CHECK(second.first == 503);
    CHECK(second.second.find(R"("applied":false)") != std::string::npos);
  }
  CHECK(deferred.first == 503);
  CHECK(deferred.second.find(R"("applied":true)") != std::string::npos);
  CHECK(slow_ticks == 1);
  CHECK(f.n->state<ws_echo_state>("s")->frames == 1);
}

TEST_CASE("a 204 or 304 reply ends at its head, and the connection goes on") {
  // RFC 9110, 8.6 and 15.4.5. Bug: a 204 carried Content-Length: 0 and a
  // Content-Type, and a 304 with a body sent it: a client, which reads no
  // body after a 304, took those bytes for the next response.
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  asio::io_context io;
  beast::tcp_stream s{io};
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  beast::flat_buffer b;
  auto ask = [&](const std::string& target, const std::string& body) {
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer secret");
    req.body() = body;
    req.prepare_payload();
    http::write(s, req);
    http::response<http::string_body> res;
    http::read(s, b, res);
    return res;
  };
  for (auto status : {"204", "304"}) {
    INFO(status);
    auto res = ask("/a/s/status?" + std::string{status}, "not sent");
    CHECK(static_cast<int>(res.result_int()) == std::stoi(status));
    CHECK(res.find(http::field::content_length) == res.end());
    CHECK(res.body().empty());
    CHECK(res.keep_alive());
    // The next response on the connection is read from its first byte.
    auto next = ask("/a/s/say", "next");
    CHECK(next.result_int() == 200);
    CHECK(next.body() == "next");
  }
  auto res = ask("/a/s/status?204", "");
  CHECK(res.find(http::field::content_type) == res.end());
  CHECK(ask("/a/s/status?304", "").at(http::field::content_type) == "text/plain");
  // A reply whose status is not final fails its tick (ctx.reply throws).
  CHECK(ask("/a/s/status?101", "").result_int() == 500);
}

TEST_CASE("agent routes: concurrent requests get their own replies, and an unanswered one gets 504") {
  server_fixture f{1024, 400ms, nullptr, GENERATE(true, false)};
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  REQUIRE_FALSE(f.n->create("t", "sayer"));
  // 4 keep-alive connections, 25 requests each, to two agents: every reply
  // carries the body of its own request (the replies cross threads).
  std::vector<std::thread> clients;
  std::atomic<int> right{0};
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      asio::io_context io;
      beast::tcp_stream s{io};
      s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
      beast::flat_buffer b;
      for (int i = 0; i < 25; ++i) {
        http::request<http::string_body> req{http::verb::post, c % 2 ? "/a/s/say" : "/a/t/say", 11};
        req.set(http::field::host, "127.0.0.1");
        req.set(http::field::authorization, "Bearer secret");
        req.body() = "c" + std::to_string(c) + "-" + std::to_string(i);
        req.prepare_payload();
        http::write(s, req);
        http::response<http::string_body> res;
        http::read(s, b, res);
        if (res.result_int() == 200 && res.body() == req.body() && res.keep_alive())
          ++right;
      }
    });
  for (auto& t : clients)
    t.join();
  CHECK(right == 100);

  // Errors found before the inbox write are answered at once.
  http::request<http::string_body> nobody{http::verb::get, "/a/nobody/say", 11};
  nobody.set(http::field::authorization, "Bearer secret");
  CHECK(roundtrip(f.server->port(), nobody).result_int() == 404);
  http::request<http::string_body> anon{http::verb::get, "/a/s/say", 11};
  CHECK(roundtrip(f.server->port(), anon).result_int() == 401);

  // The agent defers and never answers: 504 at the reply timeout, naming the
  // seq the request keeps in the inbox; the connection stays usable.
  asio::io_context io;
  beast::tcp_stream s{io};
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  http::request<http::string_body> silent{http::verb::post, "/a/s/silent", 11};
  silent.set(http::field::host, "127.0.0.1");
  silent.set(http::field::authorization, "Bearer secret");
  silent.prepare_payload();
  auto started = std::chrono::steady_clock::now();
  http::write(s, silent);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  CHECK(std::chrono::steady_clock::now() - started >= 400ms);
  CHECK(res.result_int() == 504);
  CHECK(res.body().find("REPLY_TIMEOUT") != std::string::npos);
  CHECK(res.body().find("seq ") != std::string::npos);
  http::request<http::string_body> again{http::verb::post, "/a/s/say", 11};
  again.set(http::field::host, "127.0.0.1");
  again.set(http::field::authorization, "Bearer secret");
  again.body() = "still here";
  again.prepare_payload();
  http::write(s, again);
  http::response<http::string_body> res2;
  http::read(s, b, res2);
  CHECK(res2.result_int() == 200);
  CHECK(res2.body() == "still here");

  // Stopping (and destroying) the server with a request still waiting for
  // its agent answers it 503 SHUTTING_DOWN, closes the connection and leaves
  // nothing behind (ASan checks the latter).
  beast::tcp_stream w{io};
  w.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  http::write(w, silent);
  std::this_thread::sleep_for(100ms);
  f.server.reset();
  http::response<http::string_body> last;
  beast::flat_buffer wb;
  beast::error_code ec;
  http::read(w, wb, last, ec);
  REQUIRE_FALSE(ec);
  CHECK(last.result_int() == 503);
  CHECK(last.body().find("SHUTTING_DOWN") != std::string::npos);
  CHECK_FALSE(last.keep_alive());
  http::read(w, wb, last, ec);
  CHECK(ec);  // then closed
}

namespace {

// Sends `text` on a new connection and reads the first response, or nullopt
// if none arrives.
std::optional<http::response<http::string_body>> raw_exchange(std::uint16_t port,
                                                              const std::string& text,
                                                              beast::tcp_stream& s,
                                                              beast::flat_buffer& b) {
  s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port});
  asio::write(s.socket(), asio::buffer(text));
  http::response<http::string_body> res;
  beast::error_code ec;
  http::read(s, b, res, ec);
  if (ec)
    return std::nullopt;
  return res;
}

}  // namespace

TEST_CASE("a Transfer-Encoding that does not end in chunked is refused, not read past") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  // The "body" is a second request: were the request accepted with its body
  // ignored, the smuggled GET would be answered too.
  const std::string smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (auto [te, status] :
       {std::pair{"gzip", 400}, std::pair{"chunked, gzip", 400}, std::pair{"identity", 400},
        std::pair{"chunked;x=1", 400}, std::pair{"", 400}, std::pair{"chunked, chunked", 400},
        std::pair{"gzip, chunked", 501}, std::pair{"gzip\r\nContent-Length: 34", 400}}) {
    INFO("Transfer-Encoding: " << te);
    asio::io_context io;
    beast::tcp_stream s{io};
    beast::flat_buffer b;
    auto res = raw_exchange(f.server->port(),
                            std::string{"POST /a/s/say HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                        "secret\r\nTransfer-Encoding: "}
                              + te + "\r\n\r\n" + smuggled,
                            s, b);
    REQUIRE(res);
    CHECK(static_cast<int>(res->result_int()) == status);
    auto body = boost::json::parse(res->body()).as_object();
    CHECK(body.at("error").as_object().at("code").as_string()
          == (status == 501 ? "UNSUPPORTED_TRANSFER_CODING" : "BAD_REQUEST"));
    CHECK(body.at("error").as_object().contains("details"));
    CHECK_FALSE(res->keep_alive());
    CHECK_FALSE((*res)["X-Request-Id"].empty());
    http::response<http::string_body> next;
    beast::error_code ec;
    http::read(s, b, next, ec);
    CHECK(ec);  // closed: the smuggled request got no answer
  }
  // chunked (in any case) still works, and the connection stays open.
  asio::io_context io;
  beast::tcp_stream s{io};
  beast::flat_buffer b;
  auto res = raw_exchange(f.server->port(),
                          "POST /a/s/say HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
                          "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                            + smuggled,
                          s, b);
  REQUIRE(res);
  CHECK(res->result_int() == 200);
  CHECK(res->body() == "hello");
  CHECK(res->keep_alive());
  http::response<http::string_body> next;
  http::read(s, b, next);
  CHECK(next.result_int() == 200);
  CHECK(next.body() == R"({"status":"ok"})");
}

TEST_CASE("a HEAD response has the GET's head and no body, errors included") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE(f.n->wait_idle(10s));
  // Each HEAD is followed on its connection by a GET: had the HEAD's answer a
  // body, it would be read as the start of the GET's.
  struct probe {
    std::string target;
    std::string extra;
    int status;
  };
  for (auto& p : {probe{"/healthz", "", 200}, probe{"/metrics", "", 200},
                  probe{"/a/nobody/", "Authorization: Bearer secret\r\n", 404},
                  probe{"/a/s/", "", 401}, probe{"/a/s/", "Authorization: Bearer secret\r\n", 200},
                  probe{"/v1/agents/w/fs/logs/trace?from_seq=0",  // the stream's head only
                        "Authorization: Bearer secret\r\nAccept: text/event-stream\r\n", 200},
                  probe{"/v1/agents/nobody", "Authorization: Bearer secret\r\n", 404}}) {
    INFO("HEAD " << p.target);
    asio::io_context io;
    beast::tcp_stream s{io};
    s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
    asio::write(s.socket(), asio::buffer("HEAD " + p.target + " HTTP/1.1\r\nHost: x\r\n" + p.extra
                                         + "\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    beast::flat_buffer b;
    http::response_parser<http::string_body> head;
    head.skip(true);  // a HEAD's answer: no body follows its head
    http::read(s, b, head);
    CHECK(static_cast<int>(head.get().result_int()) == p.status);
    CHECK_FALSE(head.get()["X-Request-Id"].empty());
    if (p.status != 200) {
      CHECK(head.get()[http::field::content_type] == "application/json");
      CHECK(head.get()[http::field::content_length] != "0");  // the GET's would-be body
    }
    http::response<http::string_body> get;
    beast::error_code ec;
    http::read(s, b, get, ec);
    REQUIRE_FALSE(ec);
    CHECK(get.result_int() == 200);
    CHECK(get.body() == R"({"status":"ok"})");
  }
}

TEST_CASE("every response carries X-Request-Id: SSE streams, WebSocket upgrades, the connection limit") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE(f.n->wait_idle(10s));
  asio::io_context io;
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), f.server->port()};
  {
    beast::tcp_stream s{io};
    s.connect(ep);
    http::request<http::string_body> req{http::verb::get, "/v1/agents/w/fs/logs/trace?from_seq=0", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer secret");
    req.set(http::field::accept, "text/event-stream");
    http::write(s, req);
    beast::flat_buffer b;
    http::response_parser<http::string_body> p;
    http::read_header(s, b, p);
    CHECK(p.get().result_int() == 200);
    CHECK(p.get()[http::field::content_type] == "text/event-stream");
    CHECK_FALSE(p.get()["X-Request-Id"].empty());
    CHECK(p.get()[http::field::server] == "ticktockd");
  }
  for (std::string target : {"/v1/agents/w/ws?token=secret",
                             "/v1/agents/w/fs/logs/trace?from_seq=0&token=secret"}) {
    INFO(target);
    websocket::stream<tcp::socket> ws{io};
    ws.next_layer().connect(ep);
    websocket::response_type res;
    ws.handshake(res, "127.0.0.1", target);
    CHECK(res.result_int() == 101);
    CHECK_FALSE(res["X-Request-Id"].empty());
    CHECK(res[http::field::server] == "ticktockd");
    ws.close(websocket::close_code::normal);
  }

  server_fixture one{1};
  beast::tcp_stream first{io};
  first.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), one.server->port()});
  http::request<http::string_body> ok{http::verb::get, "/healthz", 11};
  ok.set(http::field::host, "127.0.0.1");
  http::write(first, ok);
  beast::flat_buffer fb;
  http::response<http::string_body> fres;
  http::read(first, fb, fres);
  REQUIRE(fres.result_int() == 200);  // the connection is open and counted
  auto second = roundtrip(one.server->port(), ok);
  CHECK(second.result_int() == 503);
  CHECK(second.body().find("TOO_MANY_CONNECTIONS") != std::string::npos);
  CHECK_FALSE(second["X-Request-Id"].empty());
}

TEST_CASE("a create racing a delete of the same id answers 201 or 409, and the node stays consistent") {
  // Bugs: a create whose agent a delete removed right after answered 404;
  // and a delete could finish its bookkeeping after a create of the same id
  // had committed, marking the new agent terminated.
  server_fixture f;
  auto call = [&](http::verb v, std::string target, std::string body = {}) {
    http::request<http::string_body> req{v, target, 11};
    req.set(http::field::authorization, "Bearer secret");
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    return roundtrip(f.server->port(), std::move(req)).result_int();
  };
  for (int round = 0; round < 400; ++round) {
    unsigned deleted = 0;
    std::thread t{[&] { deleted = call(http::verb::delete_, "/v1/agents/r"); }};
    auto created = call(http::verb::post, "/v1/agents", R"({"id":"r","type":"sayer"})");
    t.join();
    CHECK((created == 201 || created == 409));
    CHECK((deleted == 200 || deleted == 404));
    // Whichever won: the API shows the agent exactly when the store has it.
    auto stored = f.n->store().agent_exists("r");
    CHECK(call(http::verb::get, "/v1/agents/r") == (stored ? 200u : 404u));
  }
}

TEST_CASE("request ids do not repeat across server starts") {
  http::request<http::string_body> req{http::verb::get, "/healthz", 11};
  req.set(http::field::host, "127.0.0.1");
  std::vector<std::string> ids;
  for (int start = 0; start < 2; ++start) {
    server_fixture f;
    for (int i = 0; i < 2; ++i)
      ids.emplace_back(roundtrip(f.server->port(), req)["X-Request-Id"]);
  }
  for (auto& id : ids)
    CHECK(std::regex_match(id, std::regex{"[0-9a-f]{6}-[0-9]+"}));
  CHECK(ids[0] != ids[1]);
  CHECK(ids[0] != ids[2]);  // the first request of each start
  CHECK(ids[1] != ids[3]);
}

TEST_CASE("stopping: waiting requests get 503, SSE streams end cleanly, WebSockets get 1001") {
  server_fixture f{1024, 30s, nullptr, GENERATE(true, false)};
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE(f.n->wait_idle(10s));
  asio::io_context io;
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), f.server->port()};

  // A request the agent leaves waiting.
  beast::tcp_stream waiting{io};
  waiting.connect(ep);
  http::request<http::string_body> silent{http::verb::post, "/a/s/silent", 11};
  silent.set(http::field::host, "127.0.0.1");
  silent.set(http::field::authorization, "Bearer secret");
  silent.prepare_payload();
  http::write(waiting, silent);
  for (int i = 0; i < 400 && f.n->state<ws_echo_state>("s")->frames < 1; ++i)
    std::this_thread::sleep_for(5ms);  // bounded: until the agent has deferred it
  REQUIRE(f.n->state<ws_echo_state>("s")->frames == 1);

  // An SSE stream, past its first event.
  beast::tcp_stream sse{io};
  sse.connect(ep);
  http::request<http::string_body> follow{http::verb::get, "/v1/agents/w/fs/logs/trace?from_seq=0",
                                          11};
  follow.set(http::field::host, "127.0.0.1");
  follow.set(http::field::authorization, "Bearer secret");
  follow.set(http::field::accept, "text/event-stream");
  http::write(sse, follow);
  beast::flat_buffer sb;
  http::response_parser<http::string_body> sp;
  sp.body_limit(boost::none);
  http::read_header(sse, sb, sp);
  REQUIRE(sp.get().result_int() == 200);
  for (int i = 0; i < 100 && sp.get().body().find("\n\n") == std::string::npos; ++i)
    http::read_some(sse, sb, sp);
  REQUIRE(sp.get().body().find("id: 0\n") != std::string::npos);

  // A WebSocket to the agent, and a stream over a WebSocket.
  auto open = [&](const std::string& target) {
    auto ws = std::make_unique<websocket::stream<beast::tcp_stream>>(io);
    ws->next_layer().connect(ep);
    ws->handshake("127.0.0.1", target);
    return ws;
  };
  auto agent_ws = open("/v1/agents/w/ws?token=secret");
  agent_ws->write(asio::buffer(std::string{"hi"}));
  beast::flat_buffer ab;
  agent_ws->read(ab);
  REQUIRE(beast::buffers_to_string(ab.data()) == "HI");
  auto stream_ws = open("/v1/agents/w/fs/logs/trace?from_seq=0&token=secret");
  beast::flat_buffer tb;
  stream_ws->read(tb);

  // Every client reads on its own thread while the server stops (and is
  // destroyed, which closes whatever stop() left open).
  http::response<http::string_body> answer;
  beast::error_code answer_ec, sse_ec, agent_ec, stream_ec;
  std::vector<std::thread> readers;
  readers.emplace_back([&] {
    beast::flat_buffer b;
    http::read(waiting, b, answer, answer_ec);
  });
  readers.emplace_back([&] { http::read(sse, sb, sp, sse_ec); });
  readers.emplace_back([&] {
    for (int i = 0; i < 100 && !agent_ec; ++i)
      agent_ws->read(ab, agent_ec);
  });
  readers.emplace_back([&] {
    for (int i = 0; i < 100 && !stream_ec; ++i)
      stream_ws->read(tb, stream_ec);
  });
  f.server.reset();
  for (auto& t : readers)
    t.join();

  REQUIRE_FALSE(answer_ec);
  CHECK(answer.result_int() == 503);
  CHECK(answer.body().find("SHUTTING_DOWN") != std::string::npos);
  CHECK_FALSE(answer.keep_alive());
  CHECK_FALSE(answer["X-Request-Id"].empty());
  CHECK_FALSE(sse_ec);  // the chunked body ended with its last chunk
  CHECK(sp.is_done());
  CHECK(agent_ec == websocket::error::closed);
  CHECK(agent_ws->reason().code == websocket::close_code::going_away);
  CHECK(stream_ec == websocket::error::closed);
  CHECK(stream_ws->reason().code == websocket::close_code::going_away);
}

TEST_CASE("a tick names the HTTP request that delivered its trigger") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  REQUIRE_FALSE(f.n->create("w", "ws-echo"));
  REQUIRE_FALSE(f.n->create("x", "failer"));
  REQUIRE(f.n->wait_idle(10s));
  test::tick_log log{*f.n};
  auto call = [&](http::verb verb, const std::string& target, std::string body) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::authorization, "Bearer secret");
    req.body() = std::move(body);
    auto res = roundtrip(f.server->port(), std::move(req));
    INFO(target << " " << res.body());
    CHECK(res.result_int() < 300);
    return std::string{res["X-Request-Id"]};
  };
  auto routed = call(http::verb::post, "/a/s/say", "hi");
  auto inbox = call(http::verb::post, "/v1/agents/s/inbox", R"({"m":1})");
  auto ctl = call(http::verb::put, "/v1/agents/s/fs/ctl", "tick");
  auto goal = call(http::verb::put, "/v1/agents/s/fs/goals/g", "ship it");
  auto failed = call(http::verb::post, "/v1/agents/x/inbox", R"({"m":2})");
  REQUIRE_FALSE(f.n->create("late", "sayer"));

  asio::io_context io;
  websocket::stream<tcp::socket> ws{io};
  ws.next_layer().connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), f.server->port()});
  websocket::response_type upgrade;
  ws.handshake(upgrade, "127.0.0.1", "/v1/agents/w/ws?token=secret");
  std::string upgraded{upgrade["X-Request-Id"]};
  ws.write(asio::buffer(std::string{"hi"}));
  beast::flat_buffer b;
  ws.read(b);
  CHECK(beast::buffers_to_string(b.data()) == "HI");
  ws.close(websocket::close_code::normal);
  // The server sends the close trigger once its read of the close frame
  // ends, which may be after the client's close returned (bounded wait).
  for (int i = 0; i < 400 && log.kinds_of(upgraded).size() < 3; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(f.n->wait_idle(10s));

  std::set<std::string> ids{routed, inbox, ctl, goal, failed, upgraded};
  REQUIRE(ids.size() == 6);  // each request has its own id
  REQUIRE_FALSE(ids.contains(""));
  CHECK(log.kinds_of(routed) == std::multiset<std::string>{"s:http"});
  CHECK(log.kinds_of(inbox) == std::multiset<std::string>{"s:message"});
  CHECK(log.kinds_of(ctl) == std::multiset<std::string>{"s:ctl"});
  CHECK(log.kinds_of(goal) == std::multiset<std::string>{"s:goal_changed"});
  // Every attempt of the failing tick, and the open, frame and close of the WebSocket.
  CHECK(log.kinds_of(failed) == std::multiset<std::string>{"x:message", "x:message", "x:message"});
  CHECK(log.kinds_of(upgraded) == std::multiset<std::string>{"w:ws", "w:ws", "w:ws"});

  // The message that failed is in the deadletter with its request's id.
  http::request<http::string_body> dl{http::verb::get, "/v1/agents/x/fs/deadletter", 11};
  dl.set(http::field::authorization, "Bearer secret");
  auto entries = boost::json::parse(roundtrip(f.server->port(), std::move(dl)).body())
                   .at("entries")
                   .as_array();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].at("request_id").as_string() == failed);
  // An agent created over HTTP gets its init trigger with the create's id;
  // one created in process, with none.
  http::request<http::string_body> create{http::verb::post, "/v1/agents", 11};
  create.set(http::field::authorization, "Bearer secret");
  create.body() = R"({"id":"made","type":"sayer"})";
  auto made = roundtrip(f.server->port(), std::move(create));
  CHECK(made.result_int() == 201);
  REQUIRE(f.n->wait_idle(10s));
  auto seen = log.events();
  auto init_of = [&](const std::string& agent) {
    auto i = std::find_if(seen.begin(), seen.end(), [&](const tick_event& ev) {
      return ev.agent == agent && ev.kind == trigger_kind::init;
    });
    REQUIRE(i != seen.end());
    return i->request_id;
  };
  CHECK(init_of("made") == std::string{made["X-Request-Id"]});
  CHECK(init_of("late").empty());
}

TEST_CASE("a request that brings its own X-Request-Id keeps it, into the ticks it sets off") {
  server_fixture f;
  REQUIRE_FALSE(f.n->create("s", "sayer"));
  REQUIRE_FALSE(f.n->create("t", "sayer"));
  REQUIRE(f.n->wait_idle(10s));
  test::tick_log log{*f.n};
  auto call = [&](const std::string& target, std::string body,
                  std::vector<std::string> ids, std::string type = {}) {
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::authorization, "Bearer secret");
    for (auto& id : ids)
      req.insert("X-Request-Id", id);
    if (!type.empty())
      req.set(http::field::content_type, type);
    req.body() = std::move(body);
    return roundtrip(f.server->port(), std::move(req));
  };
  const std::string mine = "trace-7f3a.b:c/d+e=f@g_h";
  auto routed = call("/a/s/say", "hi", {mine});
  CHECK(routed.result_int() == 200);
  CHECK(routed["X-Request-Id"] == mine);
  // A signed envelope delivered to another agent's inbox keeps the id too.
  auto env = call("/v1/agents/s/fs/identity/envelope", R"({"to":"t","payload":"{\"m\":1}"})", {});
  REQUIRE(env.result_int() == 200);
  auto delivered = call("/v1/agents/t/inbox", env.body(), {"env-1"},
                        "application/ticktock-envelope+json");
  CHECK(delivered.result_int() == 202);
  CHECK(delivered["X-Request-Id"] == "env-1");
  // Ids a log line would have to quote, or too long, are not taken.
  for (auto bad : {std::string{"has space"}, std::string{"quote\"d"}, std::string(129, 'a')}) {
    auto res = call("/a/s/say", "hi", {bad});
    CHECK(res.result_int() == 200);
    CHECK_FALSE(res["X-Request-Id"].empty());
    CHECK(res["X-Request-Id"] != bad);
  }
  CHECK(call("/a/s/say", "hi", {std::string(128, 'a')})["X-Request-Id"] == std::string(128, 'a'));
  // Two are ambiguous: refused, and nothing ticks.
  auto two = call("/a/s/say", "hi", {"one", "two"});
  CHECK(two.result_int() == 400);
  CHECK(two.body().find("DUPLICATE_HEADER") != std::string::npos);
  REQUIRE(f.n->wait_idle(10s));
  CHECK(log.kinds_of(mine) == std::multiset<std::string>{"s:http"});
  CHECK(log.kinds_of("env-1") == std::multiset<std::string>{"t:message"});
  CHECK(log.kinds_of("one").empty());
  CHECK(log.kinds_of("two").empty());
}

TEST_CASE("CORS: allowed origins get preflights and Access-Control-Allow-Origin, others and /a/ do not") {
  auto ask = [](server_fixture& f, http::verb verb, const std::string& target,
                const std::string& origin, bool preflight = false, bool token = true) {
    http::request<http::string_body> req{verb, target, 11};
    if (token)
      req.set(http::field::authorization, "Bearer secret");
    if (!origin.empty())
      req.set(http::field::origin, origin);
    if (preflight) {
      req.set(http::field::access_control_request_method, "POST");
      req.set(http::field::access_control_request_headers, "authorization, content-type");
    }
    return roundtrip(f.server->port(), std::move(req));
  };
  const std::string ui = "https://ui.example:8443";

  SECTION("an origin in the list") {
    server_fixture f{1024, 30s, [&](drivers::http_options& h) { h.cors_origins = {ui}; }};
    REQUIRE_FALSE(f.n->create("s", "sayer"));
    auto pre = ask(f, http::verb::options, "/v1/agents/s/inbox", ui, true, false);
    CHECK(pre.result_int() == 204);
    CHECK(pre[http::field::access_control_allow_origin] == ui);
    CHECK(pre[http::field::access_control_allow_methods].find("POST") != std::string::npos);
    CHECK(pre[http::field::access_control_allow_headers].find("Authorization") != std::string::npos);
    CHECK(pre[http::field::vary] == "Origin");
    CHECK(pre[http::field::content_type].empty());
    CHECK(pre.body().empty());
    CHECK_FALSE(pre[http::field::access_control_allow_credentials] == "true");
    // Answers, errors included, can be read by the page.
    auto list = ask(f, http::verb::get, "/v1/agents", ui);
    CHECK(list.result_int() == 200);
    CHECK(list[http::field::access_control_allow_origin] == ui);
    CHECK(list[http::field::access_control_expose_headers].find("X-Request-Id") != std::string::npos);
    auto no_token = ask(f, http::verb::get, "/v1/agents", ui, false, false);
    CHECK(no_token.result_int() == 401);
    CHECK(no_token[http::field::access_control_allow_origin] == ui);
    CHECK(ask(f, http::verb::get, "/healthz", ui)[http::field::access_control_allow_origin] == ui);
    // Another origin: no CORS headers, and OPTIONS stays 405.
    auto other = ask(f, http::verb::options, "/v1/agents", "https://evil.example", true);
    CHECK(other.result_int() == 405);
    CHECK(other[http::field::access_control_allow_origin].empty());
    auto evil = ask(f, http::verb::get, "/v1/agents", "https://evil.example");
    CHECK(evil[http::field::access_control_allow_origin].empty());
    CHECK(evil[http::field::vary] == "Origin");  // a cache must not serve it to the allowed one
    // OPTIONS without Access-Control-Request-Method is not a preflight.
    CHECK(ask(f, http::verb::options, "/v1/agents", ui).result_int() == 405);
    // /a/{id}/...: the agent answers, preflights included (the sayer echoes).
    auto agent = ask(f, http::verb::options, "/a/s/x", ui, true);
    CHECK(agent.result_int() == 200);
    CHECK(agent[http::field::access_control_allow_origin].empty());
    // Preflights are counted.
    auto metrics = ask(f, http::verb::get, "/metrics", "").body();
    CHECK(metrics.find("route=\"preflight\",status=\"204\"") != std::string::npos);
  }
  SECTION("any origin") {
    server_fixture f{1024, 30s, [&](drivers::http_options& h) { h.cors_origins = {"*"}; }};
    auto pre = ask(f, http::verb::options, "/v1/agents", "http://127.0.0.1:5173", true, false);
    CHECK(pre.result_int() == 204);
    CHECK(pre[http::field::access_control_allow_origin] == "*");
    CHECK(pre[http::field::vary].empty());
  }
  SECTION("no origins: no CORS") {
    server_fixture f;
    auto pre = ask(f, http::verb::options, "/v1/agents", ui, true);
    CHECK(pre.result_int() == 405);
    CHECK(pre[http::field::access_control_allow_origin].empty());
    CHECK(ask(f, http::verb::get, "/v1/agents", ui)[http::field::vary].empty());
  }
  SECTION("bad origins are refused at start") {
    for (auto bad : {"ui.example", "https://ui.example/", "ftp://x", "https://", "https://a b"})
      CHECK(drivers::check_cors_origins({bad}));
    CHECK_FALSE(drivers::check_cors_origins({"*", ui, "http://127.0.0.1:5173", "http://[::1]:80"}));
  }
}

TEST_CASE("on io_loops an agent's tick runs on an event-loop thread, and on CAF's workers without") {
  for (bool shared : {true, false}) {
    server_fixture f{1024, 30s, nullptr, shared};
    REQUIRE_FALSE(f.n->create("x", "thread-namer"));
    http::request<http::string_body> req{http::verb::post, "/a/x/", 11};
    req.set(http::field::authorization, "Bearer secret");
    auto res = roundtrip(f.server->port(), req);
    REQUIRE(res.result_int() == 200);
    // (CAF 0.17 names its workers caf.multiplexer.)
    CHECK(res.body() == (shared ? "tt-loop" : "caf.multiplexer"));
  }
}

TEST_CASE("on io_loops, a stop cuts a client that reads nothing, and the node closes after it") {
  // The loops go on running the node's actors after the server stops, so
  // the server cannot end its connections by stopping them: a connection
  // still writing after the grace is cut.
  auto f = std::make_unique<server_fixture>(
    1024, 30s, [](drivers::http_options& h) { h.read_timeout = 30s; });  // no idle ping
  REQUIRE_FALSE(f->n->create("fl", "ws-flood"));
  REQUIRE(f->n->wait_idle(10s));
  asio::io_context io;
  auto ws = slow_reader_ws(io, f->server->port(), "fl");
  ws->write(asio::buffer(std::string{"big"}));  // 8 MiB back, never read
  REQUIRE(f->n->wait_idle(10s));
  std::this_thread::sleep_for(100ms);  // the frame's write is under way
  auto started = std::chrono::steady_clock::now();
  f->server.reset();
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  // The node's actors still run on the loops, then the node closes.
  REQUIRE_FALSE(f->n->create("after", "sayer"));
  REQUIRE(f->n->wait_idle(10s));
  f->n.reset();
  beast::flat_buffer b;
  beast::error_code ec;
  for (int i = 0; i < 1000 && !ec; ++i)
    ws->read(b, ec);  // what was sent, then the cut
  CHECK(ec);
}

TEST_CASE("an HTTP server refuses io_loops that are not its node's scheduler") {
  test::temp_dir dir;
  node_options o;
  o.data_dir = dir.path();
  auto n = *node::open(o, agent_registry{});
  drivers::http_options h;
  h.port = 0;
  h.admin_token = "secret";
  h.loops = drivers::io_loops::create(1);
  auto server = drivers::http_server::start(*n, h);
  REQUIRE_FALSE(server);
  CHECK(server.error_value().to_string().find("io_loops do not run") != std::string::npos);
}

TEST_CASE("io_loops serve one node at a time, and the next one after it closes") {
  // One per CPU this process may use (its affinity), not per CPU online.
  cpu_set_t mine;
  CPU_ZERO(&mine);
  REQUIRE(sched_getaffinity(0, sizeof mine, &mine) == 0);
  CHECK(drivers::io_loops::create(0)->size() == static_cast<std::size_t>(CPU_COUNT(&mine)));
  auto loops = drivers::io_loops::create(2);
  for (int round = 0; round < 2; ++round) {
    test::temp_dir dir, other;
    agent_registry r;
    r.add<sayer>("sayer");
    node_options o;
    o.data_dir = dir.path();
    o.configure_caf = loops->scheduler();
    auto n = *node::open(o, std::move(r));
    CHECK(loops->running());
    // A second node cannot have them meanwhile.
    o.data_dir = other.path();
    auto second = node::open(o, agent_registry{});
    REQUIRE_FALSE(second);
    CHECK(second.error_value().to_string().find("already the scheduler") != std::string::npos);
    REQUIRE_FALSE(n->create("s", "sayer"));
    REQUIRE(n->wait_idle(10s));
    n.reset();
    CHECK_FALSE(loops->running());
  }
}

namespace {

// The CPUs the calling thread may run on.
std::set<int> thread_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  std::set<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set))
      cpus.insert(c);
  return cpus;
}

// The CPUs loop i's thread may run on, asked on that thread.
std::set<int> loop_cpus(drivers::io_loops& loops, std::size_t i) {
  std::promise<std::set<int>> p;
  boost::asio::post(loops.context(i), [&] { p.set_value(thread_cpus()); });
  auto f = p.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  return f.get();
}

}  // namespace

TEST_CASE("pinned io_loops run each on a CPU of its own, unpinned ones where the process may") {
  auto mine = thread_cpus();
  for (bool pin : {true, false}) {
    // As many loops as this process has CPUs (at most 4), and one more.
    for (auto count : {std::min<std::size_t>(mine.size(), 4), mine.size() + 1}) {
      CAPTURE(pin, count, mine.size());
      auto loops = drivers::io_loops::create(count, pin);
      test::temp_dir dir;
      node_options o;
      o.data_dir = dir.path();
      o.configure_caf = loops->scheduler();
      auto n = *node::open(o, agent_registry{});
      auto planned = drivers::io_loops::cpus_for(count);
      CHECK(planned.size() == (count <= mine.size() ? count : 0));
      std::set<int> used;
      for (std::size_t i = 0; i < count; ++i) {
        auto cpus = loop_cpus(*loops, i);
        if (pin && count <= mine.size()) {
          REQUIRE(cpus.size() == 1);
          CHECK(*cpus.begin() == planned[i]);  // loop i on the i-th CPU
          CHECK(mine.count(*cpus.begin()) == 1);
          used.insert(*cpus.begin());
        } else {
          CHECK(cpus == mine);  // more loops than CPUs: not pinned at all
        }
      }
      if (pin && count <= mine.size())
        CHECK(used.size() == count);  // each on a different CPU
    }
  }
}

TEST_CASE("on io_loops, connections arriving while the server stops end with it") {
  // Clients connect in a tight loop while the server stops: a connection
  // accepted at the last moment is still waited for, and the accept loop
  // ends however its last accept fails (a crash or a hang otherwise, and
  // ASan's use-after-free report).
  for (int round = 0; round < 5; ++round) {
    server_fixture f;
    auto port = f.server->port();
    std::atomic<bool> done{false};
    std::thread clients{[&] {
      asio::io_context io;
      for (int i = 0; i < 2000 && !done; ++i) {
        tcp::socket s{io};
        beast::error_code ec;
        s.connect(tcp::endpoint{asio::ip::make_address("127.0.0.1"), port}, ec);
      }
    }};
    std::this_thread::sleep_for(std::chrono::milliseconds{5 * round});
    auto started = std::chrono::steady_clock::now();
    f.server.reset();
    done = true;
    clients.join();
    CHECK(std::chrono::steady_clock::now() - started < 10s);
    REQUIRE_FALSE(f.n->create("s", "sayer"));  // the loops still run the node's actors
    REQUIRE(f.n->wait_idle(10s));
  }
}
