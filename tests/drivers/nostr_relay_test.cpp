// The Nostr relay pool against the test relay (ws:// and wss://) on 127.0.0.1.
// Nothing sleeps for a fixed time: every wait polls a condition with a deadline.

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include <boost/json.hpp>

#include "../temp_dir.hpp"
#include "test_relay.hpp"
#include "ticktock/drivers/nostr_relay.hpp"

using namespace ticktock;
using namespace ticktock::drivers;
using ticktock::test::make_event;
using ticktock::test::test_relay;
using namespace std::chrono_literals;

namespace {

// Polls f every few milliseconds until it holds or the limit passes.
template <class F>
bool eventually(F&& f, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f())
      return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

relay_pool_options fast_options() {
  relay_pool_options o;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  o.connect_timeout = 5s;
  o.ping_interval = 1s;
  return o;
}

std::unique_ptr<relay_pool> make_pool(relay_pool_options o = fast_options()) {
  auto p = relay_pool::create(std::move(o));
  REQUIRE(p);
  return std::move(*p);
}

relay_status status_of(const relay_pool& pool, const std::string& url) {
  for (auto& r : pool.status().relays)
    if (r.url == url)
      return r;
  FAIL("no relay " << url << " in the pool's status");
  return {};
}

bool connected(const relay_pool& pool, const std::string& url) {
  return status_of(pool, url).state == relay_state::connected;
}

bool eose(const relay_pool& pool, const std::string& url, const std::string& sub) {
  for (auto& s : status_of(pool, url).subscriptions)
    if (s.sub_id == sub)
      return s.eose;
  return false;
}

std::optional<relay_publish_status> publish_state_on(const relay_pool& pool, const std::string& id,
                                                     const std::string& url) {
  auto all = pool.publish_status(id);
  if (!all)
    return std::nullopt;
  for (auto& s : *all)
    if (s.relay == url)
      return s;
  return std::nullopt;
}

// Collects what the pool's callbacks deliver; declared before the pool so
// that it outlives the I/O threads.
struct inbox {
  struct delivery {
    std::string relay, sub_id, event_id, json;
  };
  mutable std::mutex mtx;
  std::vector<delivery> events;
  std::vector<std::pair<std::string, std::string>> eoses;  // relay, sub

  relay_event_handler on_event() {
    return [this](const std::string& relay, const std::string& sub, const std::string& json) {
      auto v = boost::json::parse(json);
      std::lock_guard<std::mutex> guard{mtx};
      events.push_back({relay, sub, std::string{v.at("id").as_string()}, json});
    };
  }
  relay_eose_handler on_eose() {
    return [this](const std::string& relay, const std::string& sub) {
      std::lock_guard<std::mutex> guard{mtx};
      eoses.emplace_back(relay, sub);
    };
  }
  std::size_t count(const std::string& event_id, const std::string& sub = {}) const {
    std::lock_guard<std::mutex> guard{mtx};
    return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](auto& d) {
      return d.event_id == event_id && (sub.empty() || d.sub_id == sub);
    }));
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> guard{mtx};
    return events.size();
  }
};

}  // namespace

TEST_CASE("relay URLs parse with default ports and paths, and normalize", "[relay]") {
  auto a = parse_relay_url("ws://relay.example.com");
  REQUIRE(a);
  CHECK_FALSE(a->tls);
  CHECK(a->host == "relay.example.com");
  CHECK(a->port == 80);
  CHECK(a->target == "/");
  CHECK(a->to_string() == "ws://relay.example.com/");

  auto b = parse_relay_url("WSS://Relay.Example.COM:443/nostr?x=1");
  REQUIRE(b);
  CHECK(b->tls);
  CHECK(b->port == 443);
  CHECK(b->target == "/nostr?x=1");
  CHECK(b->to_string() == "wss://relay.example.com/nostr?x=1");

  auto c = parse_relay_url("wss://[::1]:7777");
  REQUIRE(c);
  CHECK(c->host == "::1");
  CHECK(c->port == 7777);
  CHECK(c->to_string() == "wss://[::1]:7777/");

  auto zoned = parse_relay_url("ws://[fe80::1%25eth0]:7777");
  REQUIRE(zoned);
  CHECK(zoned->host == "fe80::1%25eth0");
  CHECK_FALSE(parse_relay_url("ws://[fe80::1%]:7777"));

  auto d = parse_relay_url("ws://127.0.0.1:8080?relay=1");
  REQUIRE(d);
  CHECK(d->target == "/?relay=1");
  CHECK(d->to_string() == "ws://127.0.0.1:8080/?relay=1");
}

TEST_CASE("an agent's relays are each valid one once, normalized, and named so in policies", "[relay]") {
  using ticktock::nostr::relay_policy_name;
  using ticktock::nostr::relays_in_config;
  CHECK(relays_in_config(R"({"nostr":{"relays":["WSS://Relay.Damus.io:443","wss://relay.damus.io/",)"
                         R"("http://not.a.relay",7,"ws://[::1]:7777/x?y=1","ws://a..b"]}})")
        == std::vector<std::string>{"wss://relay.damus.io/", "ws://[::1]:7777/x?y=1"});
  for (auto* none : {"", "[]", "{}", R"({"nostr":1})", R"({"nostr":{"relays":"wss://r"}})", "{"})
    CHECK(relays_in_config(none).empty());
  CHECK(relay_policy_name("wss://relay.damus.io/") == "wss://relay.damus.io");
  CHECK(relay_policy_name("ws://[::1]:7777/") == "ws://[::1]:7777");
  CHECK(relay_policy_name("wss://relay.example/nostr") == "wss://relay.example/nostr");
  CHECK(relay_policy_name("wss://relay.example/?x=1") == "wss://relay.example/?x=1");
}

TEST_CASE("invalid relay URLs are rejected with a reason", "[relay]") {
  for (auto* url : {"", "relay.example.com", "http://relay.example.com", "wss//relay", "ws://",
                    "ws://:80", "ws://host:0", "ws://host:65536", "ws://host:", "ws://host:8a",
                    "ws://user@host", "ws://ho st", "ws://host/#frag", "ws://[::1", "ws://[zz]:1",
                    "ws://a..b", "ws://.", "ws://host\n"}) {
    INFO("url: " << url);
    auto r = parse_relay_url(url);
    REQUIRE_FALSE(r);
    CHECK(r.code() == errc::invalid_argument);
    CHECK(r.error_value().message().find("invalid relay URL") != std::string::npos);
  }
  auto pool = make_pool();
  auto bad = pool->add_relay("https://relay.example.com");
  REQUIRE_FALSE(bad);
  CHECK(bad.code() == errc::invalid_argument);
  CHECK(bad.error_value().message().find("scheme must be ws or wss") != std::string::npos);
  CHECK(pool->relays().empty());
}

TEST_CASE("a relay is added once and removed by any spelling of its URL", "[relay]") {
  test_relay relay;
  auto pool = make_pool();
  auto url = pool->add_relay(relay.url());
  REQUIRE(url);
  CHECK(*url == relay.url());
  auto again = pool->add_relay("WS://127.0.0.1:" + std::to_string(relay.port()));
  REQUIRE_FALSE(again);
  CHECK(again.code() == errc::already_exists);
  CHECK(pool->relays() == std::vector<std::string>{*url});
  CHECK(pool->remove_relay("ws://127.0.0.1:1").code() == errc::not_found);
  CHECK_FALSE(pool->remove_relay("ws://127.0.0.1:" + std::to_string(relay.port())));
  CHECK(pool->relays().empty());
  CHECK(pool->status().relays.empty());
  CHECK(eventually([&] { return relay.open_connections() == 0; }));
}

TEST_CASE("create rejects options out of range and an unreadable CA file", "[relay]") {
  auto o = fast_options();
  o.threads = 0;
  CHECK(relay_pool::create(o).code() == errc::invalid_argument);
  o = fast_options();
  o.backoff_max = 1ms;
  CHECK(relay_pool::create(o).code() == errc::invalid_argument);
  o = fast_options();
  o.tls_ca_file = "/nonexistent/ca.pem";
  auto r = relay_pool::create(o);
  REQUIRE_FALSE(r);
  CHECK(r.error_value().message().find("tls_ca_file") != std::string::npos);
  o = fast_options();
  o.resolve["relay.test"] = "not-an-ip";
  CHECK(relay_pool::create(o).code() == errc::invalid_argument);
}

TEST_CASE("a published event reaches the relay and its OK is tracked per relay", "[relay]") {
  std::mutex ok_mtx;
  std::vector<std::pair<std::string, relay_publish_status>> oks;
  test_relay relay;
  auto o = fast_options();
  o.on_ok = [&](const std::string& id, const relay_publish_status& s) {
    std::lock_guard<std::mutex> guard{ok_mtx};
    oks.emplace_back(id, s);
  };
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE(eventually([&] { return connected(*pool, url); }));

  auto e1 = make_event(1, "hello");
  REQUIRE_FALSE(pool->publish(e1.id, e1.json));
  REQUIRE(eventually([&] {
    auto s = publish_state_on(*pool, e1.id, url);
    return s && s->state == publish_state::accepted;
  }));
  CHECK(relay.event_count(e1.id) == 1);
  {
    std::lock_guard<std::mutex> guard{ok_mtx};
    REQUIRE(oks.size() == 1);
    CHECK(oks[0].first == e1.id);
    CHECK(oks[0].second.relay == url);
    CHECK(oks[0].second.state == publish_state::accepted);
  }

  relay.reject_events("blocked: not on the list");
  auto e2 = make_event(1, "spam");
  REQUIRE_FALSE(pool->publish(e2.id, e2.json));
  REQUIRE(eventually([&] {
    auto s = publish_state_on(*pool, e2.id, url);
    return s && s->state == publish_state::rejected;
  }));
  CHECK(publish_state_on(*pool, e2.id, url)->message == "blocked: not on the list");
  auto st = status_of(*pool, url);
  CHECK(st.messages_out >= 2);
  CHECK(st.messages_in >= 2);

  CHECK(pool->publish_status(std::string(64, 'f')).code() == errc::not_found);
  CHECK(pool->publish(e1.id, "not json").code() == errc::invalid_argument);
  CHECK(pool->publish(e1.id, "[1,2]").code() == errc::invalid_argument);
  CHECK(pool->publish(e2.id, e1.json).code() == errc::invalid_argument);  // ids differ
  CHECK(pool->publish("", e1.json).code() == errc::invalid_argument);
}

TEST_CASE("a subscription delivers stored events, then EOSE, then live events", "[relay]") {
  inbox got;
  test_relay relay;
  auto old1 = make_event(1, "stored note");
  auto old7 = make_event(7, "stored reaction");
  relay.store(old1.json);
  relay.store(old7.json);
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("notes", R"({"kinds":[1]})", got.on_event(), got.on_eose()));
  REQUIRE(eventually([&] { return eose(*pool, url, "notes"); }));
  CHECK(got.count(old1.id, "notes") == 1);
  CHECK(got.count(old7.id) == 0);
  {
    std::lock_guard<std::mutex> guard{got.mtx};
    REQUIRE(got.eoses.size() == 1);
    CHECK(got.eoses[0] == std::make_pair(url, std::string{"notes"}));
    CHECK(got.events[0].relay == url);
    // The raw event JSON reaches the callback intact.
    CHECK(boost::json::parse(got.events[0].json) == boost::json::parse(old1.json));
  }

  auto live1 = make_event(1, "live note", 1'700'000'100);
  auto live7 = make_event(7, "live reaction", 1'700'000'100);
  relay.store(live7.json);
  relay.store(live1.json);
  REQUIRE(eventually([&] { return got.count(live1.id) == 1; }));
  CHECK(got.count(live7.id) == 0);
  CHECK(got.size() == 2);
  CHECK(status_of(*pool, url).events_received == 2);
}

TEST_CASE("filters: several per subscription, with authors, #p tags, since and limit", "[relay]") {
  inbox got;
  test_relay relay;
  std::string alice(64, 'a'), bob(64, 'b'), carol(64, 'c');
  auto by_bob_old = make_event(1, "bob old", 1'000, bob);
  auto by_bob_new = make_event(1, "bob new", 3'000, bob);
  auto mentions_carol = make_event(1, "hi carol", 2'000, alice, {{"p", carol}});
  auto by_alice_old = make_event(1, "alice old", 500, alice);
  for (auto* e : {&by_bob_old, &by_bob_new, &mentions_carol, &by_alice_old})
    relay.store(e->json);
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  auto filters = R"([{"authors":[")" + bob + R"("],"limit":1},{"#p":[")" + carol
                 + R"("],"since":1500}])";
  REQUIRE_FALSE(pool->subscribe("mixed", filters, got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "mixed"); }));
  CHECK(got.count(by_bob_new.id) == 1);
  CHECK(got.count(by_bob_old.id) == 0);  // beyond the limit
  CHECK(got.count(mentions_carol.id) == 1);
  CHECK(got.count(by_alice_old.id) == 0);
  CHECK(got.size() == 2);

  CHECK(pool->subscribe("", "{}", got.on_event()).code() == errc::invalid_argument);
  CHECK(pool->subscribe(std::string(65, 'x'), "{}", got.on_event()).code() == errc::invalid_argument);
  CHECK(pool->subscribe("s", "[]", got.on_event()).code() == errc::invalid_argument);
  CHECK(pool->subscribe("s", "[{},1]", got.on_event()).code() == errc::invalid_argument);
  CHECK(pool->subscribe("s", "{", got.on_event()).code() == errc::invalid_argument);
  CHECK(pool->subscribe("s", "{}", nullptr).code() == errc::invalid_argument);
}

TEST_CASE("an event carried by two relays is delivered once", "[relay]") {
  inbox got;
  test_relay a, b;
  auto shared = make_event(1, "on both relays");
  a.store(shared.json);
  b.store(shared.json);
  auto o = fast_options();
  o.threads = 2;  // the two relays' frames may be handled at the same time
  auto pool = make_pool(o);
  auto url_a = *pool->add_relay(a.url());
  auto url_b = *pool->add_relay(b.url());
  REQUIRE_FALSE(pool->subscribe("feed", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url_a, "feed") && eose(*pool, url_b, "feed"); }));
  CHECK(got.count(shared.id) == 1);

  auto live = make_event(1, "live on both", 1'700'000'200);
  a.store(live.json);
  b.store(live.json);
  REQUIRE(eventually([&] {
    return status_of(*pool, url_a).events_received + status_of(*pool, url_b).events_received == 4;
  }));
  CHECK(got.count(live.id) == 1);
  CHECK(status_of(*pool, url_a).duplicates_dropped + status_of(*pool, url_b).duplicates_dropped == 2);
  CHECK(got.size() == 2);
}

TEST_CASE("overlapping subscriptions each get the event once, and pool scope delivers it once", "[relay]") {
  inbox got;
  test_relay relay;
  auto e = make_event(1, "for two subscriptions");
  relay.store(e.json);
  SECTION("dedupe per subscription (the default)") {
    auto pool = make_pool();
    auto url = *pool->add_relay(relay.url());
    REQUIRE_FALSE(pool->subscribe("x", R"({"kinds":[1]})", got.on_event()));
    REQUIRE_FALSE(pool->subscribe("y", R"({"ids":[")" + e.id + R"("]})", got.on_event()));
    REQUIRE(eventually([&] { return eose(*pool, url, "x") && eose(*pool, url, "y"); }));
    CHECK(got.count(e.id, "x") == 1);
    CHECK(got.count(e.id, "y") == 1);
  }
  SECTION("dedupe across the pool") {
    auto o = fast_options();
    o.dedupe = dedupe_scope::pool;
    auto pool = make_pool(o);
    auto url = *pool->add_relay(relay.url());
    REQUIRE_FALSE(pool->subscribe("x", R"({"kinds":[1]})", got.on_event()));
    REQUIRE_FALSE(pool->subscribe("y", R"({"ids":[")" + e.id + R"("]})", got.on_event()));
    REQUIRE(eventually([&] { return eose(*pool, url, "x") && eose(*pool, url, "y"); }));
    CHECK(got.count(e.id) == 1);
    CHECK(status_of(*pool, url).duplicates_dropped == 1);
  }
}

TEST_CASE("after the relay drops its connections the pool reconnects, re-sends "
          "subscriptions and events flow again",
          "[relay]") {
  inbox got;
  test_relay relay;
  auto stored = make_event(1, "stored before the drop");
  relay.store(stored.json);
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("feed", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "feed"); }));
  CHECK(relay.req_count("feed") == 1);

  relay.drop_connections();
  REQUIRE(eventually([&] { return relay.req_count("feed") == 2 && eose(*pool, url, "feed"); }));
  auto st = status_of(*pool, url);
  CHECK(st.state == relay_state::connected);
  CHECK(st.attempts == 2);
  CHECK_FALSE(st.last_error.empty());
  // The stored event came again with the re-sent REQ and was dropped.
  CHECK(got.count(stored.id) == 1);
  CHECK(st.duplicates_dropped == 1);

  auto after = make_event(1, "after the reconnect", 1'700'000'300);
  relay.store(after.json);
  CHECK(eventually([&] { return got.count(after.id) == 1; }));
}

TEST_CASE("while a relay is down its status shows backoff that doubles up to the maximum",
          "[relay]") {
  test_relay relay;
  auto o = fast_options();
  o.backoff_initial = 20ms;
  o.backoff_max = 160ms;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE(eventually([&] { return connected(*pool, url); }));

  relay.stop();
  auto down_since = std::chrono::steady_clock::now();
  // Each wait is jittered within [d/2, d] for d = 20, 40, 80, 160 ms, so five
  // failures take at least 10 + 20 + 40 + 80 ms; without doubling, 40 ms.
  bool capped = true;
  REQUIRE(eventually([&] {
    auto st = status_of(*pool, url);
    if (st.state == relay_state::backoff) {
      REQUIRE(st.next_retry);
      capped = capped && *st.next_retry - std::chrono::system_clock::now() <= o.backoff_max;
      CHECK_FALSE(st.last_error.empty());
    }
    return st.consecutive_failures >= 5;
  }));
  CHECK(std::chrono::steady_clock::now() - down_since >= 150ms);
  CHECK(capped);
  auto st = status_of(*pool, url);
  CHECK(st.last_error.find("connect") != std::string::npos);
  CHECK_FALSE(st.connected_since);
  CHECK(pool->status().to_json().find("\"consecutive_failures\"") != std::string::npos);

  relay.start();
  REQUIRE(eventually([&] { return connected(*pool, url); }));
  st = status_of(*pool, url);
  CHECK(st.connected_since);
  CHECK_FALSE(st.next_retry);
}

TEST_CASE("publishes made while a relay is unreachable are sent once it is up", "[relay]") {
  test_relay relay;
  relay.stop();
  auto o = fast_options();
  o.max_queued_publishes = 2;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  auto e1 = make_event(1, "queued 1");
  auto e2 = make_event(1, "queued 2");
  auto e3 = make_event(1, "over the queue limit");
  for (auto* e : {&e1, &e2, &e3})
    REQUIRE_FALSE(pool->publish(e->id, e->json));
  CHECK(publish_state_on(*pool, e1.id, url)->state == publish_state::pending);
  auto dropped = publish_state_on(*pool, e3.id, url);
  REQUIRE(dropped);
  CHECK(dropped->state == publish_state::dropped);
  CHECK(dropped->message.find("queue is full") != std::string::npos);
  CHECK(status_of(*pool, url).queued_publishes == 2);

  relay.start();
  REQUIRE(eventually([&] {
    return publish_state_on(*pool, e1.id, url)->state == publish_state::accepted
           && publish_state_on(*pool, e2.id, url)->state == publish_state::accepted;
  }));
  CHECK(relay.event_count(e3.id) == 0);
  CHECK(status_of(*pool, url).queued_publishes == 0);

  // Publishing the dropped event again sends it.
  REQUIRE_FALSE(pool->publish(e3.id, e3.json));
  CHECK(eventually(
    [&] { return publish_state_on(*pool, e3.id, url)->state == publish_state::accepted; }));
}

TEST_CASE("oversized and malformed frames are dropped and counted while the connection keeps "
          "working",
          "[relay]") {
  inbox got;
  test_relay relay;
  auto o = fast_options();
  o.max_message_bytes = 4096;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("feed", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "feed"); }));

  auto id = std::string(64, '1');
  std::string deep(200, '[');
  deep += std::string(200, ']');
  std::vector<std::string> malformed = {
    "not json",
    "{}",
    "[]",
    "[1]",
    R"(["EVENT"])",
    R"(["EVENT","feed",{"id":42}])",
    R"(["EVENT","feed",{"id":"XYZ"}])",
    R"(["EVENT","feed",{"content":"no id"}])",
    R"(["OK","abc"])",
    R"(["OK","abc","yes","msg"])",
    R"(["EOSE"])",
    R"(["NOTICE",7])",
    R"(["WHAT","is this"])",
    deep,
  };
  for (auto& f : malformed)
    relay.send_raw(f);
  relay.send_raw(R"(["NOTICE","binary frames are not NIP-01"])", true);
  // A well-formed event, but above the size limit: skipped.
  auto big = make_event(1, std::string(10'000, 'x'));
  relay.send_raw(R"(["EVENT","feed",)" + big.json + "]");
  relay.send_raw(R"(["NOTICE","still here"])");
  REQUIRE(eventually([&] { return status_of(*pool, url).notices == 1; }));
  auto st = status_of(*pool, url);
  CHECK(st.malformed_dropped == malformed.size() + 1);
  CHECK(st.oversized_dropped == 1);
  CHECK(st.last_notice == "still here");
  CHECK(st.attempts == 1);  // the same connection
  CHECK(got.count(big.id) == 0);

  auto fine = make_event(1, "after the garbage", 1'700'000'400);
  relay.store(fine.json);
  REQUIRE(eventually([&] { return got.count(fine.id) == 1; }));
  CHECK(status_of(*pool, url).attempts == 1);

  // Far above the limit (16 times): the connection is reset, and comes back.
  relay.send_raw(R"(["NOTICE",")" + std::string(100'000, 'y') + "\"]");
  REQUIRE(eventually([&] {
    auto s = status_of(*pool, url);
    return s.attempts == 2 && s.state == relay_state::connected && eose(*pool, url, "feed");
  }));
  st = status_of(*pool, url);
  CHECK(st.oversized_dropped == 2);
  CHECK(st.last_error.find("reset the connection") != std::string::npos);
  auto later = make_event(1, "after the reset", 1'700'000'500);
  relay.store(later.json);
  CHECK(eventually([&] { return got.count(later.id) == 1; }));
}

TEST_CASE("NOTICE and CLOSED from a relay are recorded in status", "[relay]") {
  inbox got;
  test_relay relay;
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("paid", R"({"kinds":[4]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "paid"); }));
  relay.send_raw(R"(["CLOSED","paid","auth-required: pay first"])");
  relay.send_raw(R"(["NOTICE","rate limited"])");
  REQUIRE(eventually([&] { return status_of(*pool, url).notices == 1; }));
  auto st = status_of(*pool, url);
  CHECK(st.last_notice == "rate limited");
  REQUIRE(st.subscriptions.size() == 1);
  CHECK(st.subscriptions[0].closed);
  CHECK(st.subscriptions[0].closed_message == "auth-required: pay first");
  CHECK(st.malformed_dropped == 0);
}

TEST_CASE("unsubscribe sends CLOSE and stops delivery", "[relay]") {
  inbox got;
  test_relay relay;
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("gone", R"({"kinds":[1]})", got.on_event()));
  REQUIRE_FALSE(pool->subscribe("stays", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "gone") && eose(*pool, url, "stays"); }));
  REQUIRE_FALSE(pool->unsubscribe("gone"));
  CHECK(pool->unsubscribe("gone").code() == errc::not_found);
  REQUIRE(eventually([&] { return relay.close_count("gone") == 1; }));
  auto e = make_event(1, "after unsubscribe");
  relay.store(e.json);
  // The relay handles frames in order: once "stays" has the event, "gone"
  // would have had it too.
  REQUIRE(eventually([&] { return got.count(e.id, "stays") == 1; }));
  CHECK(got.count(e.id, "gone") == 0);
  auto st = status_of(*pool, url);
  REQUIRE(st.subscriptions.size() == 1);
  CHECK(st.subscriptions[0].sub_id == "stays");
}

TEST_CASE("replacing a subscription sends a new REQ with the new filter", "[relay]") {
  inbox got;
  test_relay relay;
  auto note = make_event(1, "a note");
  auto reaction = make_event(7, "a reaction");
  relay.store(note.json);
  relay.store(reaction.json);
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("s", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return got.count(note.id) == 1; }));
  REQUIRE_FALSE(pool->subscribe("s", R"({"kinds":[7]})", got.on_event()));
  REQUIRE(eventually([&] { return got.count(reaction.id) == 1; }));
  CHECK(relay.req_count("s") == 2);
  CHECK(relay.close_count("s") == 0);
}

TEST_CASE("removing a relay drops its pending publishes and closes its connection", "[relay]") {
  test_relay relay;
  relay.stop();
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  auto e = make_event(1, "never sent");
  REQUIRE_FALSE(pool->publish(e.id, e.json));
  REQUIRE_FALSE(pool->remove_relay(url));
  auto s = publish_state_on(*pool, e.id, url);
  REQUIRE(s);
  CHECK(s->state == publish_state::dropped);
  CHECK(s->message == "the relay was removed");
  CHECK(pool->status().relays.empty());
}

TEST_CASE("wss with the test CA verifies the relay, sends SNI and works", "[relay]") {
  inbox got;
  test::temp_dir dir;
  auto tls = test::make_test_tls({"relay.test"}, {"127.0.0.1"});
  auto ca_file = (dir.path() / "ca.pem").string();
  std::ofstream{ca_file} << tls.ca_cert_pem;
  test_relay relay{{tls}};
  auto o = fast_options();
  o.tls_ca_file = ca_file;
  o.resolve["relay.test"] = "127.0.0.1";
  auto pool = make_pool(o);
  auto url = *pool->add_relay("wss://relay.test:" + std::to_string(relay.port()));
  CHECK(url == relay.url("relay.test"));
  REQUIRE(eventually([&] { return connected(*pool, url); }));
  CHECK(relay.last_server_name() == "relay.test");

  auto e = make_event(1, "over TLS");
  REQUIRE_FALSE(pool->publish(e.id, e.json));
  REQUIRE_FALSE(pool->subscribe("tls", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return got.count(e.id) == 1; }));
  CHECK(publish_state_on(*pool, e.id, url)->state == publish_state::accepted);

  // The IP address is in the certificate too; no SNI is sent for it.
  auto by_ip = *pool->add_relay(relay.url("127.0.0.1"));
  REQUIRE(eventually([&] { return connected(*pool, by_ip); }));
}

TEST_CASE("wss fails verification without the test CA or with the wrong host name", "[relay]") {
  test::temp_dir dir;
  auto tls = test::make_test_tls({"relay.test"}, {});
  auto ca_file = (dir.path() / "ca.pem").string();
  std::ofstream{ca_file} << tls.ca_cert_pem;
  test_relay relay{{tls}};

  SECTION("no CA: the system store does not know the test CA") {
    auto o = fast_options();
    o.resolve["relay.test"] = "127.0.0.1";
    auto pool = make_pool(o);
    auto url = *pool->add_relay(relay.url("relay.test"));
    REQUIRE(eventually([&] { return status_of(*pool, url).consecutive_failures >= 2; }));
    auto st = status_of(*pool, url);
    CHECK(st.state != relay_state::connected);
    CHECK(st.last_error.find("TLS handshake: certificate verify failed") != std::string::npos);
    CHECK(st.last_error.find("unable to get local issuer certificate") != std::string::npos);
    CHECK(eventually([&] { return relay.open_connections() == 0; }));
  }
  SECTION("the CA, but a host name the certificate does not name") {
    auto o = fast_options();
    o.tls_ca_file = ca_file;
    o.resolve["other.test"] = "127.0.0.1";
    auto pool = make_pool(o);
    auto url = *pool->add_relay(relay.url("other.test"));
    REQUIRE(eventually([&] { return status_of(*pool, url).consecutive_failures >= 1; }));
    CHECK(status_of(*pool, url).last_error.find("hostname mismatch") != std::string::npos);
  }
  SECTION("verification off connects anyway") {
    auto o = fast_options();
    o.tls_verify = false;
    o.resolve["other.test"] = "127.0.0.1";
    auto pool = make_pool(o);
    auto url = *pool->add_relay(relay.url("other.test"));
    CHECK(eventually([&] { return connected(*pool, url); }));
  }
}

TEST_CASE("the destructor returns promptly when a relay never completes the WebSocket handshake",
          "[relay]") {
  test::silent_listener silent;
  test_relay relay;
  auto o = fast_options();
  o.connect_timeout = 60s;
  auto pool = make_pool(o);
  auto stuck = *pool->add_relay("ws://127.0.0.1:" + std::to_string(silent.port()));
  auto fine = *pool->add_relay(relay.url());
  REQUIRE(eventually([&] { return silent.accepted() >= 1 && connected(*pool, fine); }));
  CHECK(status_of(*pool, stuck).state == relay_state::connecting);
  auto started = std::chrono::steady_clock::now();
  pool.reset();
  CHECK(std::chrono::steady_clock::now() - started < 500ms);
  CHECK(eventually([&] { return relay.open_connections() == 0; }));
}

TEST_CASE("status JSON carries every field", "[relay]") {
  test_relay relay;
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("s", "{}", [](auto&, auto&, auto&) {}));
  REQUIRE(eventually([&] { return eose(*pool, url, "s"); }));
  auto v = boost::json::parse(pool->status().to_json());
  auto& relays = v.at("relays").as_array();
  REQUIRE(relays.size() == 1);
  auto& r = relays[0].as_object();
  CHECK(r.at("url").as_string() == url);
  CHECK(r.at("state").as_string() == "connected");
  CHECK(r.at("connected_since").is_int64());
  CHECK(r.at("next_retry").is_null());
  for (auto* k : {"attempts", "consecutive_failures", "messages_in", "messages_out",
                  "events_received", "duplicates_dropped", "oversized_dropped",
                  "malformed_dropped", "refused_dropped", "notices", "queued_publishes"})
    CHECK(r.at(k).is_number());
  CHECK(r.at("last_error").is_string());
  CHECK(r.at("last_notice").is_string());
  auto& subs = r.at("subscriptions").as_array();
  REQUIRE(subs.size() == 1);
  CHECK(subs[0].at("sub_id").as_string() == "s");
  CHECK(subs[0].at("eose").as_bool());
  CHECK_FALSE(subs[0].at("closed").as_bool());
}

TEST_CASE("callbacks may call back into the pool", "[relay]") {
  inbox got;
  test_relay relay;
  auto first = make_event(1, "first");
  auto second = make_event(7, "second");
  relay.store(first.json);
  relay.store(second.json);
  auto pool = make_pool();
  auto url = *pool->add_relay(relay.url());
  auto* p = pool.get();
  auto chain = got.on_event();
  REQUIRE_FALSE(pool->subscribe("one", R"({"kinds":[1]})",
                                [p, chain](const std::string& r, const std::string& s,
                                           const std::string& j) {
                                  chain(r, s, j);
                                  (void)p->unsubscribe("one");
                                  (void)p->subscribe("two", R"({"kinds":[7]})", chain);
                                }));
  REQUIRE(eventually([&] { return got.count(second.id, "two") == 1; }));
  CHECK(got.count(first.id, "one") == 1);
  CHECK(eventually([&] { return relay.close_count("one") == 1; }));
}

TEST_CASE("a relay that stops answering pings is detected and reconnected", "[relay]") {
  inbox got;
  test_relay relay;
  auto o = fast_options();
  o.ping_interval = 100ms;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("feed", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "feed"); }));
  // Quiet for several ping intervals: the pongs keep the connection up.
  REQUIRE(eventually([&] { return status_of(*pool, url).messages_in >= 1; }));
  auto e = make_event(1, "the last frame the hung relay reads");
  relay.pause_reading();
  REQUIRE_FALSE(pool->publish(e.id, e.json));
  REQUIRE(eventually([&] {
    auto st = status_of(*pool, url);
    return st.attempts >= 2 && st.state == relay_state::connected;
  }));
  auto st = status_of(*pool, url);
  CHECK(st.last_error.find("stopped answering") != std::string::npos);
  // The new connection works: the subscription was re-sent.
  REQUIRE(eventually([&] { return relay.req_count("feed") >= 2; }));
  auto live = make_event(1, "after the hang", 1'700'000'600);
  relay.store(live.json);
  CHECK(eventually([&] { return got.count(live.id) == 1; }));
}

TEST_CASE("pings keep a quiet connection open", "[relay]") {
  test_relay relay;
  auto o = fast_options();
  o.ping_interval = 150ms;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE(eventually([&] { return connected(*pool, url); }));
  auto since = std::chrono::steady_clock::now();
  // Three times the idle limit (2 x 150 ms) without a single frame.
  while (std::chrono::steady_clock::now() - since < 900ms) {
    REQUIRE(status_of(*pool, url).attempts == 1);
    std::this_thread::sleep_for(10ms);
  }
  auto st = status_of(*pool, url);
  CHECK(st.state == relay_state::connected);
  CHECK(st.messages_in == 0);
}

TEST_CASE("publish_status forgets the oldest events beyond max_tracked_publishes", "[relay]") {
  auto o = fast_options();
  o.max_tracked_publishes = 2;
  auto pool = make_pool(o);
  auto e1 = make_event(1, "one"), e2 = make_event(1, "two"), e3 = make_event(1, "three");
  for (auto* e : {&e1, &e2, &e3})
    REQUIRE_FALSE(pool->publish(e->id, e->json));
  CHECK(pool->publish_status(e1.id).code() == errc::not_found);
  REQUIRE(pool->publish_status(e3.id));
  CHECK(pool->publish_status(e3.id)->empty());  // no relays
}

TEST_CASE("the dedupe set is bounded: ids beyond its capacity are forgotten, oldest first",
          "[relay]") {
  inbox got;
  test_relay relay;
  auto older = make_event(1, "older", 1'000);
  auto newer = make_event(1, "newer", 2'000);
  relay.store(older.json);
  relay.store(newer.json);
  auto o = fast_options();
  o.dedupe_capacity = 1;
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE_FALSE(pool->subscribe("feed", "{}", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, url, "feed"); }));
  REQUIRE(got.size() == 2);
  // The relay sends newest first, so only "older" is remembered. After a
  // reconnect "newer" arrives again as new and evicts "older", which then
  // arrives again as new as well.
  relay.drop_connections();
  REQUIRE(eventually([&] { return relay.req_count("feed") == 2 && eose(*pool, url, "feed"); }));
  CHECK(got.count(newer.id) == 2);
  CHECK(got.count(older.id) == 2);
}

TEST_CASE("publishes wait in the queue while a hung relay does not read, and go out on the "
          "new connection after the ping timeout",
          "[relay]") {
  test_relay relay;
  auto o = fast_options();
  o.ping_interval = 1s;  // the hang is noticed after 2 to 3 s
  auto pool = make_pool(o);
  auto url = *pool->add_relay(relay.url());
  REQUIRE(eventually([&] { return connected(*pool, url); }));
  relay.pause_reading();
  // 30 MB: more than the sockets' buffers plus the pool's 1 MiB send window.
  std::vector<test::test_event> events;
  for (int i = 0; i < 300; ++i)
    events.push_back(make_event(1, std::string(100'000, 'z'), 1'700'001'000 + i));
  for (auto& e : events)
    REQUIRE_FALSE(pool->publish(e.id, e.json));
  // Without the send window every publish would sit in the connection's
  // write queue at once and none in the pool's.
  REQUIRE(eventually([&] { return status_of(*pool, url).queued_publishes > 0; }));
  REQUIRE(eventually([&] { return status_of(*pool, url).attempts >= 2; }));
  CHECK(status_of(*pool, url).last_error.find("stopped answering") != std::string::npos);
  CHECK(eventually([&] {
    for (auto& e : events)
      if (publish_state_on(*pool, e.id, url)->state != publish_state::accepted)
        return false;
    return true;
  }));
  CHECK(status_of(*pool, url).queued_publishes == 0);
}

TEST_CASE("an event the accept hook refuses is dropped without hiding a later genuine copy",
          "[relay]") {
  inbox got;
  std::atomic<int> calls{0};
  test_relay honest, evil;
  auto genuine = make_event(1, "the real thing");
  auto forged_value = boost::json::parse(genuine.json);
  forged_value.as_object()["content"] = "forged";
  auto forged = boost::json::serialize(forged_value);
  auto o = fast_options();
  o.accept = [&](const std::string& json) {
    ++calls;
    return boost::json::parse(json).at("content").as_string() != "forged";
  };
  auto pool = make_pool(o);
  auto evil_url = *pool->add_relay(evil.url());
  auto honest_url = *pool->add_relay(honest.url());
  REQUIRE_FALSE(pool->subscribe("feed", R"({"kinds":[1]})", got.on_event()));
  REQUIRE(eventually([&] { return eose(*pool, evil_url, "feed") && eose(*pool, honest_url, "feed"); }));

  evil.store(forged);
  REQUIRE(eventually([&] { return status_of(*pool, evil_url).refused_dropped == 1; }));
  CHECK(got.size() == 0);
  honest.store(genuine.json);
  REQUIRE(eventually([&] { return got.count(genuine.id) == 1; }));
  CHECK(boost::json::parse(got.events[0].json).at("content").as_string() == "the real thing");
  CHECK(got.events[0].relay == honest_url);
  // The second copy of an accepted event is a duplicate: the hook is not asked again.
  auto again = make_event(1, "another");
  evil.store(again.json);
  honest.store(again.json);
  REQUIRE(eventually([&] {
    return status_of(*pool, evil_url).events_received + status_of(*pool, honest_url).events_received
           == 4;
  }));
  CHECK(got.count(again.id) == 1);
  CHECK(calls == 3);  // forged, genuine, the first copy of "another"
  CHECK(status_of(*pool, evil_url).duplicates_dropped + status_of(*pool, honest_url).duplicates_dropped
        == 1);
}
