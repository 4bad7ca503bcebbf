#include <catch2/catch.hpp>

#include "ticktock/runtime/agent.hpp"
#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/runtime/trigger.hpp"

using namespace ticktock;

namespace {

struct notes_state {
  std::uint64_t n = 0;
};

struct notes_agent : agent<notes_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    ++ctx.state<notes_state>().n;
    ctx.set_goal("g", t.payload);
    ctx.emit("e");
    ctx.send("peer", "hi");
    ctx.set_alarm("once", ctx.now() + std::chrono::seconds{5});
    ctx.cancel_alarm("old");
    ctx.put_memory("kv", "k", "v");
    ctx.log("line");
  }
};

struct no_reader : record_reader {
  std::optional<std::string> read_goal(std::string_view) const override { return "stored"; }
  std::optional<std::string> read_memory(std::string_view, std::string_view) const override {
    return std::nullopt;
  }
};

}  // namespace

TEST_CASE("agent ids follow [a-z0-9][a-z0-9._-]{0,127}") {
  using namespace std::string_literals;
  for (auto ok : {"a"s, "0"s, "agent-1"s, "a.b_c-d"s, std::string(128, 'x')})
    CHECK(is_valid_agent_id(ok));
  for (auto bad : {""s, "A"s, "-a"s, ".a"s, "a/b"s, "a b"s, "a\0b"s, "ä"s, "a:b"s, "../x"s})
    CHECK_FALSE(is_valid_agent_id(bad));
  CHECK_FALSE(is_valid_agent_id(std::string(129, 'x')));
  auto err = check_agent_id("Bad/Id");
  CHECK(err.code() == errc::invalid_id);
  CHECK(err.message().find("[a-z0-9]") != std::string::npos);
}

TEST_CASE("a context stages every effect and reads its own goal writes first") {
  notes_agent a;
  trigger t;
  t.payload = "p";
  t.time = time_point{std::chrono::seconds{100}};
  no_reader reader;
  std::string config = "cfg";
  context ctx{"me", config, t, a, &reader};
  CHECK(ctx.goal("g") == std::optional<std::string>{"stored"});
  a.on_trigger(ctx, t);
  CHECK(a.state().n == 1);
  CHECK(ctx.now() == t.time);
  CHECK(ctx.config() == "cfg");
  CHECK(ctx.goal("g") == std::optional<std::string>{"p"});
  CHECK(ctx.memory("kv", "k") == std::optional<std::string>{"v"});
  auto& fx = ctx.staged();
  CHECK(fx.outbox.size() == 1);
  CHECK(fx.messages.size() == 1);
  CHECK(fx.messages[0].to == "peer");
  REQUIRE(fx.alarms.size() == 2);
  CHECK(fx.alarms[0].due == t.time + std::chrono::seconds{5});
  CHECK(fx.alarms[1].cancel);
  CHECK(fx.logs == std::vector<std::string>{"line"});
  CHECK_FALSE(fx.failure);
}

TEST_CASE("ctx.state<T> with the wrong type throws instead of aliasing memory") {
  notes_agent a;
  trigger t;
  std::string config;
  context ctx{"me", config, t, a, nullptr};
  CHECK_THROWS_AS(ctx.state<int>(), std::logic_error);
}

TEST_CASE("ctx.ws_send refuses a text frame that is not UTF-8, and sends it as binary") {
  // RFC 6455, 8.1. Bug: the bytes went out as a text frame, which a client
  // must fail the connection for.
  notes_agent a;
  trigger t;
  std::string config;
  context ctx{"me", config, t, a, nullptr};
  CHECK_THROWS_AS(ctx.ws_send("ws-1", "bad\xff\xfeutf"), std::invalid_argument);
  CHECK_THROWS_AS(ctx.ws_send("ws-1", "ok\xe2\x82"), std::invalid_argument);
  CHECK_NOTHROW(ctx.ws_send("ws-1", "bad\xff\xfeutf", true));
  CHECK_NOTHROW(ctx.ws_send("ws-1", "ok \xe2\x82\xac"));
}

TEST_CASE("ctx.reply refuses a status that is not final and headers that would break the response") {
  // Bug: a reply header's value with CR LF went out as two header lines (and
  // a whole forged response), a Content-Length or Transfer-Encoding of the
  // agent's framed the body instead of the server's, and a status of 101
  // went out as a protocol switch.
  notes_agent a;
  trigger t;
  std::string config;
  context ctx{"me", config, t, a, nullptr};
  for (std::uint16_t status : {0, 99, 100, 101, 199, 600, 999})
    CHECK_THROWS_AS(ctx.reply(status, ""), std::invalid_argument);
  for (std::uint16_t status : {200, 204, 304, 404, 599})
    CHECK_NOTHROW(ctx.reply(status, ""));
  for (http_headers bad : {http_headers{{"X-A", "1\r\nSet-Cookie: s=1"}}, http_headers{{"X-A", "1\n"}},
                           http_headers{{"X-A", std::string{"a\0b", 3}}}, http_headers{{"X-A", "\x7f"}},
                           http_headers{{"", "v"}}, http_headers{{"X A", "v"}}, http_headers{{"X:A", "v"}},
                           http_headers{{"Content-Length", "5"}}, http_headers{{"transfer-encoding", "chunked"}},
                           http_headers{{"Connection", "close"}}, http_headers{{"Upgrade", "websocket"}}}) {
    INFO(bad[0].first);
    CHECK_THROWS_AS(ctx.reply(200, "", bad), std::invalid_argument);
    CHECK_THROWS_AS(ctx.reply_to(1, 200, "", bad), std::invalid_argument);
  }
  CHECK_NOTHROW(ctx.reply(200, "", {{"X-Ok", "a\tb c \xc3\xa9"}, {"Set-Cookie", "s=1; Path=/"},
                                    {"Content-Type", "text/plain"}}));
}

TEST_CASE("the registry refuses duplicates and names the known types for unknown ones") {
  agent_registry r;
  CHECK_FALSE(r.add<notes_agent>("notes"));
  CHECK(r.add<notes_agent>("notes").code() == errc::already_exists);
  CHECK(r.make("notes"));
  CHECK_FALSE(r.make("nope"));
  auto err = r.check("nope");
  CHECK(err.code() == errc::unknown_type);
  CHECK(err.message().find("notes") != std::string::npos);
}

TEST_CASE("trigger kinds have stable names") {
  CHECK(to_string(trigger_kind::approval_decision) == "approval_decision");
  // The numbers are on disk: http_result came after goal_changed.
  CHECK(static_cast<int>(trigger_kind::goal_changed) == 9);
  CHECK(static_cast<int>(trigger_kind::http_result) == 10);
  CHECK(to_string(trigger_kind::http_result) == "http_result");
  CHECK(parse_trigger_kind("http_result") == trigger_kind::http_result);
  CHECK(parse_trigger_kind("alarm") == trigger_kind::alarm);
  CHECK_FALSE(parse_trigger_kind("bogus"));
}

#include <dlfcn.h>
#include <sodium.h>
#include <unistd.h>

#include <filesystem>

#include "ticktock/runtime/plugin.hpp"

TEST_CASE("a plugin registers its agent types through the C entry point") {
  agent_registry r;
  REQUIRE_FALSE(load_plugin(TICKTOCK_EXAMPLE_PLUGIN, r));
  CHECK(r.contains("greeter"));
  auto a = r.make("greeter");
  REQUIRE(a);
  // Loading it again into the same registry is refused, naming the type.
  auto again = load_plugin(TICKTOCK_EXAMPLE_PLUGIN, r);
  CHECK(again.code() == errc::invalid_argument);
  CHECK_THAT(again.message(), Catch::Contains("'greeter', which is already registered"));
  // A type of that name registered first (a built-in one) stays, and the
  // plugin is refused with the name, not with the plugin's own return code.
  agent_registry builtin;
  REQUIRE_FALSE(builtin.add("greeter", [] { return std::unique_ptr<agent_base>{}; }));
  auto taken = load_plugin(TICKTOCK_EXAMPLE_PLUGIN, builtin);
  CHECK_THAT(taken.message(), Catch::Contains("'greeter', which is already registered"));
  CHECK(builtin.make("greeter") == nullptr);  // still the first one
  auto missing = load_plugin("/nonexistent/libnothing.so", r);
  CHECK(missing.code() == errc::invalid_argument);
  CHECK(missing.message().find("/nonexistent/libnothing.so") != std::string::npos);
  // A library without the entry point is refused with a clear reason.
  Dl_info sodium{};
  REQUIRE(dladdr(reinterpret_cast<void*>(&sodium_init), &sodium) != 0);
  auto not_plugin = load_plugin(sodium.dli_fname, r);
  CHECK(not_plugin.message().find("ticktock_plugin_register") != std::string::npos);
  // An entry point that throws is refused, not the end of the program.
  auto throws = load_plugin(TICKTOCK_THROWING_PLUGIN, r);
  CHECK(throws.code() == errc::invalid_argument);
  CHECK_THAT(throws.message(), Catch::Contains("threw while registering: boom"));
}

TEST_CASE("a plugin named without a directory is the file in the working directory") {
  // Bug: dlopen looked a bare name up in the system's library path, so
  // `--plugin lib.so` (as the guide writes it) was not found, or found
  // another file of that name.
  if (std::string{TICKTOCK_EXAMPLE_PLUGIN}.empty())
    return;
  auto dir = std::filesystem::temp_directory_path()
             / ("ticktock-plugin-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(TICKTOCK_EXAMPLE_PLUGIN, dir / "lib.so",
                             std::filesystem::copy_options::overwrite_existing);
  auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir);
  agent_registry r;
  auto err = load_plugin("lib.so", r);
  auto missing = load_plugin("libc.so.6", r);  // on the system path, not here
  std::filesystem::current_path(cwd);
  std::filesystem::remove_all(dir);
  CHECK_FALSE(err);
  CHECK(r.contains("greeter"));
  CHECK(missing.code() == errc::invalid_argument);
  // The message names the file once.
  CHECK(missing.message().find("libc.so.6") == missing.message().rfind("libc.so.6"));
}

TEST_CASE("agent type names are letters, digits and -_.: only") {
  agent_registry r;
  auto none = [] { return std::unique_ptr<agent_base>{}; };
  for (const char* good : {"counter", "llm-chat", "nostr_echo", "v1.2", "ns:type"})
    CHECK_FALSE(r.add(good, none));
  for (const char* bad : {"", "x\nevent=forged", "Bad Name!", "a/b", "quote\"d"}) {
    auto err = r.add(bad, none);
    CHECK(err.code() == errc::invalid_argument);
    CHECK(err.message().find('\n') == std::string::npos);
  }
  CHECK(r.add(std::string(65, 'a'), none).code() == errc::invalid_argument);
}

#include "ticktock/runtime/http.hpp"

TEST_CASE("a ws payload's head is its event and connection, read without its data") {
  using ticktock::ws_event;
  auto payload = ws_event{ws_event::kind::close, "ws-7", std::string(1000, 'x'), true}.encode();
  auto h = ws_event::head(payload);
  REQUIRE(h);
  CHECK(h->event == ws_event::kind::close);
  CHECK(h->connection == "ws-7");
  CHECK(h->data.empty());
  CHECK_FALSE(ws_event::head(""));
  CHECK_FALSE(ws_event::head("\x07"));
}
