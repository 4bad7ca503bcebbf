#include "router.hpp"
#include "fs_path.hpp"
#include "web_assets.hpp"

#include <boost/json.hpp>
#include <sodium.h>

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <future>
#include <limits>
#include <thread>
#include <sstream>

#include "ticktock/actors/node.hpp"
#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/detail/json_check.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/runtime/nostr.hpp"
#include "ticktock/runtime/text.hpp"
#include "ticktock/storage/store.hpp"
#include "ticktock/drivers/nostr_driver.hpp"

namespace json = boost::json;

namespace ticktock::drivers {

namespace {

std::string to_json(const json::value& v) { return json_text(v); }

response json_response(unsigned status, const json::value& v, std::string route = {}) {
  response r;
  r.status = status;
  r.body = to_json(v);
  r.route = std::move(route);
  return r;
}

std::int64_t micros(time_point t) { return t.time_since_epoch().count(); }

json::object status_json(const agent_status& s) {
  json::object o;
  o["id"] = s.id;
  o["type"] = s.type;
  o["state"] = std::string{to_string(s.state)};
  o["last_tick"] = s.last_tick;
  o["last_tick_time_us"] = micros(s.last_tick_time);
  o["queue_depth"] = s.queue_depth;
  o["trajectory_records"] = s.trajectory_records;
  o["outbox_next"] = s.outbox_next;
  if (!s.error.empty())
    o["error"] = s.error;
  auto throttled = s.throttled_until > ticktock::system_clock{}.now();
  o["throttled"] = throttled;
  if (throttled)
    o["throttled_until_us"] = micros(s.throttled_until);
  json::object hits;
  for (auto& [k, v] : s.limits_hit)
    hits[k] = v;
  o["limits_hit"] = std::move(hits);
  json::value summary = json::object{};
  if (!s.summary.empty()) {
    boost::system::error_code ec;
    auto v = json::parse(s.summary, ec);
    summary = ec ? json::value(s.summary) : v;
  }
  o["summary"] = summary;
  return o;
}

// A WebSocket upgrade the server cannot accept, as a JSON error (rather than
// Beast's plain-text answer): no Sec-WebSocket-Key, or a version but 13.
std::optional<response> websocket_handshake_error(const request& req) {
  if (!req.websocket_upgrade)
    return std::nullopt;
  // RFC 6455, 4.1: the key is 16 bytes in base64, 24 characters ending in
  // "==" (Beast checks less, and its own refusal would be plain text).
  auto key = req.header("sec-websocket-key");
  auto b64 = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/'; };
  if (key.size() != 24 || !key.ends_with("==")
      || !std::all_of(key.begin(), key.end() - 2, b64))
    return error_response(400, "BAD_REQUEST",
                          "a WebSocket upgrade needs Sec-WebSocket-Key: 16 bytes in base64");
  if (req.header("sec-websocket-version") != "13") {
    auto r = error_response(426, "UPGRADE_REQUIRED", "only WebSocket version 13 is supported");
    r.headers.emplace_back("Sec-WebSocket-Version", "13");
    return r;
  }
  return std::nullopt;
}

// Bytes that are valid UTF-8 go out as JSON strings; anything else as
// {"base64": "..."}, so a binary payload never breaks the JSON.
json::value payload_json(const std::string& bytes) {
  if (is_valid_utf8(bytes))
    return json::value(bytes);
  std::string b64(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  b64.resize(std::strlen(b64.c_str()));
  return json::object{{"base64", b64}};
}

json::object trajectory_json(const storage::trajectory_record& r) {
  json::object o;
  o["index"] = r.index;
  o["tick"] = r.tick;
  o["attempt"] = r.attempt;
  o["trigger"] = std::string{to_string(r.kind)};
  o["trigger_seq"] = r.trigger_seq;
  if (!r.request_id.empty())
    o["request_id"] = r.request_id;
  if (!r.alarm.empty())
    o["alarm"] = r.alarm;
  if (!r.ws_event.empty())
    o["ws_event"] = r.ws_event;
  if (!r.connection.empty())
    o["connection"] = r.connection;
  o["trigger_digest"] = storage::to_hex(r.trigger_digest);
  o["start_us"] = micros(r.start);
  o["duration_ns"] = r.duration_ns;
  o["outcome"] = std::string{storage::to_string(r.outcome)};
  if (!r.error.empty())
    o["error"] = r.error;
  o["effects"] = json::object{{"state_bytes", r.effects.state_bytes},
                              {"state_changed", r.effects.state_changed},
                              {"outbox", r.effects.outbox},
                              {"messages", r.effects.messages},
                              {"alarms_set", r.effects.alarms_set},
                              {"alarms_cancelled", r.effects.alarms_cancelled},
                              {"goals", r.effects.goals},
                              {"memory", r.effects.memory},
                              {"ws", r.effects.ws}};
  o["state_hash"] = storage::to_hex(r.state_hash);
  o["prev_hash"] = storage::to_hex(r.prev_hash);
  json::array logs;
  for (auto& l : r.logs)
    logs.emplace_back(l);
  o["logs"] = std::move(logs);
  // The policy gate's decisions on the effects this attempt asked for, and
  // the limits it hit: only when there are any.
  if (!r.decisions.empty()) {
    json::array decisions;
    for (auto& d : r.decisions)
      decisions.push_back(json::object{{"action", d.action},
                                       {"job", d.job},
                                       {"decision", d.decision},
                                       {"reason", d.reason},
                                       {"cost_micro_usd", d.cost},
                                       {"destination", d.destination}});
    o["decisions"] = std::move(decisions);
  }
  if (!r.limits.empty()) {
    json::array limits;
    for (auto& l : r.limits)
      limits.emplace_back(l);
    o["limits"] = std::move(limits);
  }
  if (r.corrupt)
    o["corrupt"] = true;
  return o;
}

json::object outbox_json(const storage::outbox_event& e) {
  json::object o{{"seq", e.seq}, {"tick", e.tick}, {"time_us", micros(e.time)},
                 {"payload", payload_json(e.payload)}};
  if (!e.topic.empty())
    o["topic"] = e.topic;
  return o;
}

// The query without its `token` parameters (credentials the agent must not
// see, like the Authorization and Cookie headers); the rest as it came.
std::string query_without_token(std::string_view q) {
  std::string out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    auto key = router::query_decode(part.substr(0, part.find('=')));
    if (part.empty() || (key && *key == "token"))
      continue;
    if (!out.empty())
      out += '&';
    out += part;
  }
  return out;
}

/// The query's parameters; `repeated` gets the first name given twice.
std::map<std::string, std::string> parse_query(std::string_view q, bool& ok, std::string& repeated) {
  std::map<std::string, std::string> out;
  ok = true;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    auto k = router::query_decode(part.substr(0, eq));
    auto v = router::query_decode(eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
    if (!k || !v) {
      ok = false;
      return out;
    }
    auto [it, fresh] = out.emplace(std::move(*k), std::move(*v));
    if (!fresh && repeated.empty())
      repeated = it->first;
  }
  return out;
}

/// The query of a request's head, for the checks made before its body: nullopt
/// when it is malformed or names a parameter twice (the request gets its 400).
std::optional<std::map<std::string, std::string>> head_query(std::string_view target) {
  auto qpos = target.find('?');
  bool ok = true;
  std::string repeated;
  auto query = parse_query(qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1),
                           ok, repeated);
  if (!ok || !repeated.empty())
    return std::nullopt;
  return query;
}

/// 401 with its challenge, for a request without a valid token.
response unauthorized(std::string_view problem, std::string route) {
  auto r = error_response(401, "UNAUTHORIZED", problem);
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  r.route = std::move(route);
  return r;
}

/// A switch of the query: absent, `false` or `0` is off; `true`, `1` or no
/// value (`?verify`) on; any other value is nullopt (400), so `?secrets=no`
/// never means yes.
std::optional<bool> query_flag(const std::map<std::string, std::string>& query, const char* name) {
  auto i = query.find(name);
  if (i == query.end() || i->second == "false" || i->second == "0")
    return false;
  if (i->second.empty() || i->second == "true" || i->second == "1")
    return true;
  return std::nullopt;
}

response bad_flag(const char* name) {
  return error_response(400, "BAD_QUERY", std::string{name} + " is true, false, 1, 0 or empty (true)");
}

bool token_equal(std::string_view a, std::string_view b) {
  // Compare digests so the comparison time depends on neither length nor content.
  auto ha = storage::blake2b(a);
  auto hb = storage::blake2b(b);
  return sodium_memcmp(ha.data(), hb.data(), ha.size()) == 0 && !b.empty();
}

std::string_view next_segment(std::string_view& path) {
  if (!path.empty() && path.front() == '/')
    path.remove_prefix(1);
  auto slash = path.find('/');
  auto seg = path.substr(0, slash);
  path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  return seg;
}

}  // namespace

bool accepts_event_stream(std::string_view accept) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
      s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
      s.remove_suffix(1);
    return s;
  };
  auto same = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
  };
  while (!accept.empty()) {
    auto comma = accept.find(',');
    auto range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    auto semi = range.find(';');
    if (!same(trim(range.substr(0, semi)), "text/event-stream"))
      continue;
    bool refused = false;  // q=0, 0.0, 0.00, 0.000: "not acceptable"
    for (auto params = semi == std::string_view::npos ? std::string_view{} : range.substr(semi + 1);
         !params.empty();) {
      auto next = params.find(';');
      auto p = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
      if (p.size() >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
        auto q = p.substr(2);
        refused = !q.empty() && q.find_first_not_of("0.") == std::string_view::npos;
      }
    }
    if (!refused)
      return true;
  }
  return false;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  // from_chars takes no sign, space or prefix for an unsigned type.
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size()
      || v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return std::nullopt;
  return v;
}

std::optional<std::uint64_t> query_u64(const std::map<std::string, std::string>& query,
                                       const std::string& name, std::uint64_t dflt) {
  auto i = query.find(name);
  return i == query.end() ? std::optional<std::uint64_t>{dflt} : parse_u64(i->second);
}

// -- reply hub -----------------------------------------------------------------

reply_hub::reply_hub(node& n) : node_(n) {
  observer_ = node_.add_tick_observer([this](const tick_event& ev) { on_tick(ev); });
}

reply_hub::~reply_hub() { node_.remove_tick_observer(observer_); }

void reply_hub::on_tick(const tick_event& ev) {
  if (ev.outcome != storage::outcome::ok || ev.late_replies.empty())
    return;
  std::vector<std::pair<callback, tick_event>> ready;
  std::vector<callback> expired;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    // Each answer goes to its request as if that request's own tick had
    // replied; one whose requester gave up is dropped.
    for (auto& [seq, reply] : ev.late_replies) {
      key k{ev.agent, seq};
      auto i = waiting_.find(k);
      if (i == waiting_.end())
        continue;
      auto [b, e] = deadlines_.equal_range(i->second.deadline);
      for (auto d = b; d != e; ++d)
        if (d->second == k) {
          deadlines_.erase(d);
          break;
        }
      tick_event late;
      late.agent = ev.agent;
      late.tick = ev.tick;
      late.kind = trigger_kind::http;
      late.trigger_seq = seq;
      late.outcome = storage::outcome::ok;
      late.reply = reply;
      ready.emplace_back(std::move(i->second.cb), std::move(late));
      waiting_.erase(i);
    }
    sweep(clock::now(), expired);
  }
  for (auto& [cb, e] : ready)
    cb(std::move(e));
  for (auto& cb : expired)
    cb(std::nullopt);
}

void reply_hub::sweep(clock::time_point now, std::vector<callback>& expired) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    if (auto i = waiting_.find(deadlines_.begin()->second); i != waiting_.end()) {
      expired.push_back(std::move(i->second.cb));
      waiting_.erase(i);
    }
    deadlines_.erase(deadlines_.begin());
  }
}

void reply_hub::await(const key& k, clock::time_point deadline, callback cb) {
  std::vector<callback> expired;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    sweep(clock::now(), expired);
    if (!waiting_.contains(k)) {
      waiting_.emplace(k, waiter{deadline, std::move(cb)});
      deadlines_.emplace(deadline, k);
    } else {
      expired.push_back(std::move(cb));  // one waiter per request
    }
  }
  for (auto& e : expired)
    e(std::nullopt);
}

void reply_hub::drop_waiters() {
  std::map<key, waiter> dropped;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    dropped.swap(waiting_);
    deadlines_.clear();
  }
}

// -- tickets -------------------------------------------------------------------

void router::ticket::finish(response r) {
  reply_fn done;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    done = std::move(done_);
    done_ = nullptr;
  }
  if (!done)
    return;
  if (r.route.empty())
    r.route = "other";
  metrics_.count(r.route, r.status,
                 std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::steady_clock::now() - started_));
  done(std::move(r));
}

void router::ticket::deferred(std::uint64_t seq) {
  std::lock_guard<std::mutex> guard{mtx_};
  seq_ = seq;
}

void router::ticket::cancel() {
  std::optional<std::uint64_t> seq;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    seq = seq_;
  }
  auto r = seq ? error_response(504, "REPLY_TIMEOUT",
                                "the agent deferred its reply to this request (seq "
                                  + std::to_string(*seq)
                                  + ") and did not answer within the reply timeout")
               : error_response(504, "REPLY_TIMEOUT",
                                "the agent did not run this request within the reply timeout; "
                                "it may still run");
  r.route = "/a/{id}";
  finish(std::move(r));
}

void router::ticket::shut_down(bool drained) {
  std::optional<std::uint64_t> seq;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    seq = seq_;
  }
  auto [why, applied] =
    seq       ? std::pair{"the agent ran this request (seq " + std::to_string(*seq)
                            + ") and deferred its reply, which is lost",
                          "true"}
    : drained ? std::pair{std::string{"the agent did not run this request, and will not"}, "false"}
              : std::pair{std::string{"the agent has not answered this request, which may still run"},
                          "null"};
  auto r = error_response(503, "SHUTTING_DOWN", "the server is stopping: " + why,
                          std::string{R"({"applied":)"} + applied + "}");
  r.route = "/a/{id}";
  finish(std::move(r));
}

// -- errors ------------------------------------------------------------------

response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string details_json) {
  // A message may repeat what the client sent (an id, a name): kept to a
  // length one reads, whatever was sent.
  constexpr std::size_t max_message_bytes = 1024;
  auto text = to_valid_utf8(message);
  if (text.size() > max_message_bytes)
    text = std::string{utf8_prefix(text, max_message_bytes)} + "...";
  response r;
  r.status = status;
  boost::system::error_code ec;
  auto details = json::parse(details_json, ec);
  r.body = to_json(json::object{
    {"error", json::object{{"code", code}, {"message", text},
                           {"details", ec ? json::value(json::object{}) : details}}}});
  return r;
}

std::optional<response> duplicate_field(std::string_view body) {
  auto scan = detail::scan_json(body);
  if (scan.duplicate.empty())
    return std::nullopt;
  return error_response(400, "DUPLICATE_FIELD",
                        "the body names '" + scan.duplicate + "' twice",
                        to_json(json::object{{"field", scan.duplicate}}));
}

response error_response(const error& err) {
  unsigned status = 500;
  switch (err.code()) {
    case errc::ok: status = 200; break;
    case errc::invalid_id:
    case errc::unknown_type:
    case errc::invalid_argument: status = 400; break;
    case errc::not_found: status = 404; break;
    case errc::already_exists:
    case errc::replayed:
    case errc::agent_errored: status = 409; break;
    case errc::message_too_large: status = 413; break;
    // draft-ietf-httpapi-idempotency-key-header, 2.7: a key reused with
    // another payload is 422.
    case errc::idempotency_key_reused: status = 422; break;
    case errc::inbox_full: status = 429; break;
    case errc::storage_failure:
    case errc::shutting_down: status = 503; break;
    case errc::timeout: status = 504; break;
    case errc::corrupt_record:
    case errc::tick_failed: status = 500; break;
  }
  auto r = error_response(status, to_string(err.code()), err.message());
  // A full inbox drains; a storage failure clears once the disk takes
  // writes again (the store recovers by itself).
  if (err.code() == errc::inbox_full || err.code() == errc::storage_failure)
    r.headers.emplace_back("Retry-After", "1");
  return r;
}

// HEAD is allowed wherever GET is (RFC 9110, 9.3.2; see router::handle).
response method_not_allowed(std::string_view allowed) {
  std::string allow{allowed};
  if (auto get = allow.find("GET"); get != std::string::npos && allow.find("HEAD") == std::string::npos)
    allow.insert(get + 3, ", HEAD");
  auto r = error_response(405, "METHOD_NOT_ALLOWED", "method not allowed here; allowed: " + allow);
  r.headers.emplace_back("Allow", std::move(allow));
  return r;
}

// -- metrics -----------------------------------------------------------------

void request_metrics::count(const std::string& route, unsigned status,
                            std::chrono::microseconds took) {
  auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, took.count()));
  auto bucket = static_cast<std::size_t>(std::lower_bound(bounds_us.begin(), bounds_us.end(), us)
                                         - bounds_us.begin());
  std::lock_guard<std::mutex> guard{mtx_};
  auto r = routes_.find(route);
  if (r == routes_.end())
    r = routes_.emplace(route, route_stats{}).first;
  auto& st = r->second;
  ++st.by_status[status];
  if (bucket < bounds_us.size())
    ++st.buckets[bucket];  // past the last bound: in +Inf only
  st.sum_us += us;
  ++st.count;
}

// Microseconds as seconds with all six decimals: a stream's default six
// significant digits made a long-running sum coarse (whole seconds past 10^6 s).
static std::string seconds_text(std::uint64_t us) {
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%06llu", static_cast<unsigned long long>(us % 1'000'000));
  return std::to_string(us / 1'000'000) + frac;
}

std::string request_metrics::prometheus() const {
  std::ostringstream out;
  std::lock_guard<std::mutex> guard{mtx_};
  out << "# HELP ticktock_http_requests_total HTTP requests by route and status.\n"
         "# TYPE ticktock_http_requests_total counter\n";
  for (auto& [route, st] : routes_)
    for (auto& [status, n] : st.by_status)
      out << "ticktock_http_requests_total{route=\"" << route << "\",status=\"" << status
          << "\"} " << n << "\n";
  out << "# HELP ticktock_http_request_duration_seconds From a request having been read to its "
         "answer being ready (an agent route: its committed tick), by route.\n"
         "# TYPE ticktock_http_request_duration_seconds histogram\n";
  for (auto& [route, st] : routes_) {
    auto series = "ticktock_http_request_duration_seconds";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_us.size(); ++i) {
      cumulative += st.buckets[i];
      out << series << "_bucket{route=\"" << route << "\",le=\""
          << static_cast<double>(bounds_us[i]) / 1e6 << "\"} " << cumulative << "\n";
    }
    out << series << "_bucket{route=\"" << route << "\",le=\"+Inf\"} " << st.count << "\n"
        << series << "_sum{route=\"" << route << "\"} " << seconds_text(st.sum_us) << "\n"
        << series << "_count{route=\"" << route << "\"} " << st.count << "\n";
  }
  return out.str();
}

// -- router ------------------------------------------------------------------

router::router(node& n, router_options options, request_metrics& metrics)
  : node_(n), options_(std::move(options)), authority_(options_.node_key), metrics_(metrics),
    replies_(n) {}

std::vector<std::string> router::routes() {
  std::vector<std::string> list{
    "GET /",
    "GET /ui/{file}",
    "GET /healthz",
    "HEAD /healthz",
    "GET /metrics",
    "GET /v1/agents",
    "POST /v1/agents",
    "POST /v1/agents/import",
    "POST /v1/tokens",
    "GET /v1/agents/{id}/ws",
    "GET /v1/agents/{id}",
    "DELETE /v1/agents/{id}",
    "POST /v1/agents/{id}/inbox",
    "GET /v1/agents/{id}/fs/",
    "GET /v1/agents/{id}/fs/{path}",
    "PUT /v1/agents/{id}/fs/{path}",
    "POST /v1/agents/{id}/fs/{path}",
    "DELETE /v1/agents/{id}/fs/{path}",
    "GET /v1/approvals",
    "GET /v1/approvals/{approval}",
    "POST /v1/approvals/{approval}/decide",
    "GET /v1/killswitch",
    "PUT /v1/killswitch",
    "GET /v1/policy",
    "PUT /v1/policy",
    "GET /v1/compute/prices",
    "PUT /v1/compute/prices",
    "GET /a/{id}/{path}",
    "POST /a/{id}/{path}",
    "PUT /a/{id}/{path}",
    "PATCH /a/{id}/{path}",
    "DELETE /a/{id}/{path}",
    "HEAD /a/{id}/{path}",
    "OPTIONS /a/{id}/{path}",
  };
  // HEAD wherever GET (router::handle answers it as a GET without the body).
  std::vector<std::string> heads;
  for (auto& r : list)
    if (r.starts_with("GET ") && !r.starts_with("GET /a/") && r != "GET /healthz")
      heads.push_back("HEAD " + r.substr(4));
  list.insert(list.end(), heads.begin(), heads.end());
  return list;
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size())
        return std::nullopt;
      int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi < 0 || lo < 0)
        return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> router::url_decode(std::string_view s) { return percent_decode(s, false); }

std::optional<std::string> router::query_decode(std::string_view s) { return percent_decode(s, true); }

std::optional<std::string> router::normalize_target(std::string target) {
  if (target.find('#') != std::string::npos)
    return std::nullopt;
  auto path_end = std::min(target.find('?'), target.size());
  if (target.find('%') >= path_end)
    return target;  // the common case: nothing escaped in the path
  std::string out;
  out.reserve(target.size());
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < path_end) {
      int hi = hex_digit(target[i + 1]), lo = hex_digit(target[i + 2]);
      auto c = static_cast<char>(hi * 16 + lo);
      if (hi >= 0 && lo >= 0
          && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~')) {
        out += c;
        i += 2;
        continue;
      }
    }
    out += target[i];
  }
  return out;
}

namespace {

// A browser names the page that made a request in Origin; a request whose
// Origin is not this server (or is "null") comes from another site's page,
// which must not ride on the cookie the browser holds for this one (CSRF,
// cross-site WebSocket hijacking). A browser leaves Origin out of a
// cross-site navigation (a link to a GET), but says where it came from in
// Sec-Fetch-Site: only "same-origin" and "none" (typed, a bookmark) are this
// server's own. Clients without either are not browsers (or older ones).
bool from_other_origin(const request& req) {
  if (!req.headers.count("origin")) {
    if (!req.headers.count("sec-fetch-site"))
      return false;
    auto site = req.header("sec-fetch-site");
    return !(strcasecmp(std::string{site}.c_str(), "same-origin") == 0
             || strcasecmp(std::string{site}.c_str(), "none") == 0);
  }
  auto origin = req.header("origin");
  auto scheme = origin.find("://");
  if (scheme == std::string_view::npos)
    return true;
  auto site = origin.substr(scheme + 3);
  auto host = req.header("host");
  return host.empty() || site.size() != host.size()
         || strncasecmp(site.data(), host.data(), site.size()) != 0;
}

}  // namespace

router::principal router::authenticate(const request& req,
                                       const std::map<std::string, std::string>& query) const {
  principal p;
  std::string_view token;
  auto auth = req.header("authorization");
  // The scheme is case-insensitive (RFC 9110, 11.1).
  if (auth.size() > 7 && strncasecmp(auth.data(), "Bearer ", 7) == 0)
    token = auth.substr(7);
  if (token.empty()) {
    auto cookie = req.header("cookie");
    for (auto pos = cookie.find("ticktock_token="); pos != std::string_view::npos;
         pos = cookie.find("ticktock_token=", pos + 1))
      if (pos == 0 || cookie[pos - 1] == ' ' || cookie[pos - 1] == ';') {
        auto v = cookie.substr(pos + 15);
        token = v.substr(0, v.find(';'));
        p.cross_site_cookie = !token.empty() && from_other_origin(req);
        break;
      }
  }
  if (token.empty())
    if (auto i = query.find("token"); i != query.end())
      token = i->second;
  if (token.empty()) {
    p.problem = "a token is required (Authorization: Bearer, the ticktock_token cookie, or ?token=)";
    if (!auth.empty() && (auth.size() <= 7 || strncasecmp(auth.data(), "Bearer ", 7) != 0))
      // (The header is not repeated: it may be the token itself.)
      p.problem = "the Authorization header must be 'Bearer <token>'; no other scheme is accepted";
    return p;
  }
  if (token_equal(token, options_.admin_token)) {
    p.authenticated = p.admin = true;
    return p;
  }
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  auto claims = authority_.verify(token, now);
  if (!claims) {
    p.problem = "invalid token: " + claims.error_value().message();
    return p;
  }
  p.authenticated = true;
  p.claims = std::move(*claims);
  return p;
}

namespace {

// The ctl command in a ctl write's body.
// A ctl write's command, without the blanks around it (`echo tick`, a CRLF).
std::string_view ctl_command(std::string_view body) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!body.empty() && blank(body.back()))
    body.remove_suffix(1);
  while (!body.empty() && blank(body.front()))
    body.remove_prefix(1);
  return body;
}

// The scope an agent token needs for `method` on /v1/agents/{id}{rest} with
// `body`; "admin" means only the admin token may.
std::string required_scope(std::string_view method, std::string_view rest, std::string_view body) {
  bool read = method == "GET" || method == "HEAD";
  // A method no route takes changes nothing: whoever may read the agent
  // gets the route's 405 and its Allow, not a 403 for a scope.
  if (!read && method != "POST" && method != "PUT" && method != "DELETE")
    return "read";
  if (rest.empty() || rest == "/")
    return read ? "read" : "admin";
  if (rest == "/inbox")
    return "write:inbox";
  if (rest == "/ws")
    return "ws";
  if (rest.substr(0, 4) != "/fs/" && rest != "/fs")
    return "admin";
  // The rules read the path as the filesystem will serve it, decoded: on the
  // raw path, "memory/%65xport" would pass for a file a read token may read.
  auto parts = split_fs_path(rest.substr(3));
  if (!parts)
    return "read";  // answered 400 BAD_PATH, to anyone who may see the agent
  std::string path;
  for (auto& p : *parts)
    path += (path.empty() ? "" : "/") + p;
  if (path.starts_with("memory/export"))
    return "admin";  // a bundle holds every record of the agent
  if (read)
    return "read";
  // Policies are admin-written, agent-readable. (A goal may have "policy" in
  // its key: only the three policy files are meant.)
  if (path == "compute/policy" || path == "containers/policy" || path == "http/policy")
    return "admin";
  // Jobs are external effects; the gate and the budget still apply.
  if (path == "compute/new" || (path.starts_with("compute/jobs/") && path.ends_with("/cancel")))
    return "compute";
  if (path == "containers/new"
      || (path.starts_with("containers/sessions/") && path.ends_with("/cancel")))
    return "containers";
  // Outbound HTTP (http/new); "http" is the scope of the agent's own routes.
  if (path == "http/new" || (path.starts_with("http/jobs/") && path.ends_with("/cancel")))
    return "fetch";
  if (path == "ctl")  // terminate is DELETE /v1/agents/{id}: admin only
    return ctl_command(body) == "terminate" ? "admin" : "write:ctl";
  if (path == "inbox")
    return "write:inbox";
  if (path.starts_with("goals/"))
    return "write:goals";
  if (path == "deadletter")
    return "write:deadletter";
  // Anyone who may read may verify and encrypt; signing and decrypting act
  // with the agent's secret key.
  if (path == "identity/verify" || path == "identity/encrypt")
    return "read";
  if (path == "identity/sign" || path == "identity/decrypt" || path == "identity/envelope"
      || path == "nostr/publish")
    return "identity";
  return "admin";
}

// The 403 for a token that came in the cookie of another origin's request,
// whatever it asks for.
response cross_site_cookie(std::string_view route) {
  auto r = error_response(403, "FORBIDDEN",
                          "the ticktock_token cookie is not accepted from a page of another origin "
                          "(Origin does not match Host, or Sec-Fetch-Site is not same-origin); "
                          "send the token as Authorization: Bearer");
  r.route = route;
  return r;
}

}  // namespace

std::shared_ptr<router::ticket> router::handle(const request& req, reply_fn done) {
  auto t = std::make_shared<ticket>(
    metrics_, req.received.value_or(std::chrono::steady_clock::now()), std::move(done));
  std::string_view target = req.target;
  auto qpos = target.find('?');
  auto path = target.substr(0, qpos);
  auto raw_query = qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1);
  bool ok = true;
  std::string repeated;
  auto query = parse_query(raw_query, ok, repeated);
  response r;
  if (!ok || path.empty() || path.front() != '/')
    r = error_response(400, "BAD_REQUEST", "malformed request target");
  else if (!repeated.empty() && (repeated == "token" || !path.starts_with("/a/")))
    // Which one would count? An agent's own routes take what they like,
    // but one token.
    r = error_response(400, "BAD_QUERY", "the query parameter '" + repeated + "' is given twice");
  else if (path.find("/../") != std::string_view::npos || path.ends_with("/..")
           || path.find("/./") != std::string_view::npos || path.ends_with("/."))
    r = error_response(400, "BAD_PATH", "dot segments are not allowed in paths");
  else if (req.method == "HEAD" && (path.starts_with("/v1/") || path == "/metrics")) {
    // RFC 9110, 9.3.2: HEAD is GET without the content; the server writes
    // the head only (a stream's too: it does not start). /v1 routes answer
    // at once, so the copy outlives its use. (/a/ routes get HEAD as it is:
    // the agent answers it.)
    auto get = req;
    get.method = "GET";
    r = dispatch(get, path, query, t);
  } else
    r = dispatch(req, path, query, t);
  if (r.status == 0)
    return t;  // answered through the ticket
  t->finish(std::move(r));
  return nullptr;
}

std::optional<response> router::refused_early(const request& req) const {
  std::string_view target = req.target;
  auto path = target.substr(0, target.find('?'));
  if (!path.starts_with("/v1/") && !path.starts_with("/a/"))
    return std::nullopt;
  auto query = head_query(target);
  if (!query)
    return std::nullopt;  // answered 400 with the request
  auto who = authenticate(req, *query);
  if (!who.authenticated)
    return unauthorized(who.problem, path.starts_with("/a/") ? "/a/{id}" : "/v1");
  if (who.cross_site_cookie)
    return cross_site_cookie(path.starts_with("/a/") ? "/a/{id}" : "/v1");
  auto resolved = resolve(req, path);
  auto* to = std::get_if<route>(&resolved);
  if (!to)
    return std::nullopt;  // answered with the request
  return refusal(*to, who, req.method, {});
}

bool router::admin_import(const request& req) const {
  std::string_view target = req.target;
  if (req.method != "POST" || target.substr(0, target.find('?')) != "/v1/agents/import")
    return false;
  auto query = head_query(target);
  return query && authenticate(req, *query).admin;
}

response router::handle(const request& req) {
  auto p = std::make_shared<std::promise<response>>();
  auto f = p->get_future();
  auto t = handle(req, [p](response r) { p->set_value(std::move(r)); });
  if (t && f.wait_for(options_.reply_timeout) != std::future_status::ready)
    t->cancel();
  return f.get();
}

void router::quiesce() {
  {
    std::lock_guard<std::recursive_mutex> guard{life_->mtx};
    life_->open = false;
  }
  replies_.drop_waiters();
}

bool router::may_block(const request& req) {
  std::string_view path = req.target;
  path = path.substr(0, path.find('?'));
  return !(path == "/healthz" || path == "/metrics" || path.starts_with("/a/") || path == "/"
           || path.starts_with("/ui/"));
}

namespace {

// The Control Center's page and files: public (they hold no data; the page
// asks for the token and calls the API with it), never cached without a
// check, and confined by a policy that loads nothing from elsewhere and
// runs no inline script.
response web_file(const request& req, std::string_view path) {
  auto label = path == "/" ? "/" : "/ui/{file}";
  response r;
  const web_asset* file = nullptr;
  if (req.method != "GET" && req.method != "HEAD")
    r = method_not_allowed("GET");
  else if (file = find_web_asset(path == "/" ? "/index.html" : path.substr(3)); !file)
    r = error_response(404, "ROUTE_NOT_FOUND", "no file " + std::string{path});
  else {
    r.content_type = std::string{file->content_type};
    r.body = std::string{file->body};
    r.headers = {{"Cache-Control", "no-cache"},
                 {"X-Content-Type-Options", "nosniff"},
                 {"Referrer-Policy", "no-referrer"},
                 {"Content-Security-Policy",
                  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                  "img-src 'self' data:; base-uri 'none'; form-action 'self'; "
                  "frame-ancestors 'none'"}};
  }
  r.route = label;
  return r;
}

}  // namespace

response router::dispatch(const request& req, std::string_view path,
                          const std::map<std::string, std::string>& query,
                          const std::shared_ptr<ticket>& t) {
  if (path == "/healthz") {
    if (req.method != "GET" && req.method != "HEAD")
      return method_not_allowed("GET, HEAD");
    // Not ok while storage refuses writes: nothing would be acknowledged.
    // The node retries the store on its own meanwhile (no write needed).
    if (auto failure = node_.store().write_failure()) {
      auto r = error_response(error{errc::storage_failure, "storage refuses writes: " + *failure});
      r.route = "/healthz";
      return r;
    }
    return json_response(200, json::object{{"status", "ok"}}, "/healthz");
  }
  if (path == "/metrics") {
    if (req.method != "GET")
      return method_not_allowed("GET");
    auto r = metrics_text();
    r.route = "/metrics";
    return r;
  }
  if (path == "/" || path.starts_with("/ui/"))
    return web_file(req, path);
  auto rest = path;
  auto first = next_segment(rest);
  if (first != "v1" && first != "a")
    return error_response(404, "ROUTE_NOT_FOUND", "no route for " + std::string{path});
  auto who = authenticate(req, query);
  if (!who.authenticated)
    return unauthorized(who.problem, first == "a" ? "/a/{id}" : "/v1");
  if (who.cross_site_cookie)
    return cross_site_cookie(first == "a" ? "/a/{id}" : "/v1");
  auto resolved = resolve(req, path);
  if (auto* failed = std::get_if<response>(&resolved))
    return std::move(*failed);
  const auto& target = std::get<route>(resolved);
  if (auto refused = refusal(target, who, req.method, req.body))
    return std::move(*refused);
  response r;
  switch (target.what) {
    case route::kind::agent_route: {
      auto qpos = req.target.find('?');
      agent_route(req, target.id, target.rest.empty() ? "/" : target.rest,
                  qpos == std::string::npos ? std::string_view{}
                                            : std::string_view{req.target}.substr(qpos + 1),
                  t);
      r.status = 0;  // answered later
      return r;
    }
    case route::kind::tokens:
      r = req.method == "POST" ? tokens(req) : method_not_allowed("POST");
      break;
    case route::kind::control:
      return control(req, target.second, target.rest, query);
    case route::kind::agents:
      r = agents(req, query);
      break;
    case route::kind::import:
      r = import_bundle(req);
      break;
    case route::kind::agent:
      r = agent(req, target.id, target.rest, query);
      if (!who.admin)
        r.token_expires_unix = who.claims.exp;  // access ends with the token, open streams too
      return r;
  }
  r.route = target.label;
  return r;
}

// The route of a request under /v1/ or /a/ from its method and path alone
// (the body is not needed); 400 for an invalid agent id, 404 for no route.
std::variant<router::route, response> router::resolve(const request& req, std::string_view path) {
  auto rest = path;
  auto first = next_segment(rest);
  auto bad_id = [&](std::string_view raw, const std::optional<std::string>& id,
                    const char* label) -> std::optional<response> {
    if (id && is_valid_agent_id(*id))
      return std::nullopt;
    auto r = error_response(check_agent_id(id.value_or(std::string{raw})));
    r.route = label;
    return r;
  };
  if (first == "a") {
    auto raw_id = next_segment(rest);
    auto id = url_decode(raw_id);
    if (auto r = bad_id(raw_id, id, "/a/{id}"))
      return std::move(*r);
    return route{route::kind::agent_route, std::move(*id), {}, rest, "/a/{id}"};
  }
  auto second = next_segment(rest);
  if (second == "tokens" && rest.empty())
    return route{route::kind::tokens, {}, second, rest, "/v1/tokens"};
  if (second == "approvals" || second == "killswitch" || second == "policy"
      || (second == "compute" && rest == "/prices"))
    return route{route::kind::control, {}, second, rest, "/v1/" + std::string{second}};
  if (second != "agents")
    return error_response(404, "ROUTE_NOT_FOUND", "no route for " + std::string{path});
  if (rest.empty() || rest == "/")
    return route{route::kind::agents, {}, second, rest, "/v1/agents"};
  auto raw_id = next_segment(rest);
  // A POST there imports; other methods reach an agent called `import`
  // (which POST /v1/agents refuses, but a bundle or an in-process create can
  // still name so; an agent takes no POST itself).
  if (raw_id == "import" && rest.empty() && req.method == "POST")
    return route{route::kind::import, {}, second, rest, "/v1/agents/import"};
  auto id = url_decode(raw_id);
  if (auto r = bad_id(raw_id, id, "/v1/agents/{id}"))
    return std::move(*r);
  return route{route::kind::agent, std::move(*id), second, rest, "/v1/agents/{id}"};
}

// The 403 for `who` on `to`, or nullopt if it may. With the body not read
// yet (empty), a token is refused only if it would be with any body.
std::optional<response> router::refusal(const route& to, const principal& who,
                                        std::string_view method, std::string_view body) const {
  auto forbidden = [&](std::string_view why) {
    auto r = error_response(403, "FORBIDDEN", why);
    r.route = to.label;
    return r;
  };
  if (who.admin)
    return std::nullopt;
  // An agent token reaches its own agent's tree only, within its scopes.
  auto agent_scope = [&](const std::string& scope, std::string_view what) -> std::optional<response> {
    if (who.claims.agent != to.id)
      return forbidden("this token is for agent '" + who.claims.agent + "', not '" + to.id + "'");
    if (scope == "admin" || !who.claims.scopes.count(scope))
      return forbidden("this token may not " + std::string{what} + " agent '" + to.id + "' (needs "
                       + (scope == "admin" ? "the admin token" : "scope " + scope) + ")");
    return std::nullopt;
  };
  switch (to.what) {
    case route::kind::agent_route: return agent_scope("http", "call");
    case route::kind::tokens: return forbidden("only the admin token issues tokens");
    case route::kind::control: return forbidden("only the admin token may do that");
    case route::kind::agents:
      return forbidden("listing and creating agents needs the admin token");
    case route::kind::import: return forbidden("importing agents needs the admin token");
    case route::kind::agent:
      return agent_scope(required_scope(method, to.rest, body), "do that on");
  }
  return std::nullopt;
}

response router::metrics_text() {
  auto m = node_.metrics();
  std::ostringstream out;
  out << "# HELP ticktock_ticks_total Committed tick attempts by outcome.\n"
         "# TYPE ticktock_ticks_total counter\n"
      << "ticktock_ticks_total{outcome=\"ok\"} " << m.ticks_ok << "\n"
      << "ticktock_ticks_total{outcome=\"failed\"} " << m.ticks_failed << "\n"
      << "ticktock_ticks_total{outcome=\"deadlettered\"} " << m.deadlettered << "\n"
      << "# HELP ticktock_tick_writes_total Writes that committed tick attempts (an agent's "
         "waiting triggers run as one batch, committed in one write).\n"
         "# TYPE ticktock_tick_writes_total counter\n"
      << "ticktock_tick_writes_total " << m.tick_writes << "\n"
      << "# HELP ticktock_deadletters_total Triggers moved to a deadletter by failing ticks.\n"
         "# TYPE ticktock_deadletters_total counter\n"
      << "ticktock_deadletters_total " << m.deadlettered << "\n"
      << "# HELP ticktock_envelopes_refused_total Agent-to-agent messages refused, by reason.\n"
         "# TYPE ticktock_envelopes_refused_total counter\n"
      << "ticktock_envelopes_refused_total{reason=\"bad_signature\"} " << m.bad_signatures << "\n"
      << "ticktock_envelopes_refused_total{reason=\"undecryptable\"} " << m.undecryptable << "\n"
      << "ticktock_envelopes_refused_total{reason=\"replayed\"} " << m.replayed_envelopes << "\n"
      << "# HELP ticktock_limit_hits_total Limits hit by ticks, by limit.\n"
         "# TYPE ticktock_limit_hits_total counter\n"
      << "ticktock_limit_hits_total{limit=\"inbox_limit\"} " << m.inbox_overflows << "\n"
      << "ticktock_limit_hits_total{limit=\"ticks_per_minute\"} " << m.throttled << "\n"
      << "ticktock_limit_hits_total{limit=\"tick_wall_time\"} " << m.slow_ticks << "\n"
      << "ticktock_limit_hits_total{limit=\"state_size\"} " << m.state_too_large << "\n"
      << "ticktock_limit_hits_total{limit=\"outbox_retention\"} " << m.outbox_trimmed << "\n"
      << "# HELP ticktock_policy_decisions_total Policy-gate decisions, by decision.\n"
         "# TYPE ticktock_policy_decisions_total counter\n"
      << "ticktock_policy_decisions_total{decision=\"allow\"} " << m.decisions_allow << "\n"
      << "ticktock_policy_decisions_total{decision=\"deny\"} " << m.decisions_deny << "\n"
      << "ticktock_policy_decisions_total{decision=\"require_approval\"} " << m.decisions_approval << "\n"
      << "# HELP ticktock_jobs_total Service jobs that ended, by result.\n"
         "# TYPE ticktock_jobs_total counter\n"
      << "ticktock_jobs_total{result=\"done\"} " << m.jobs_done << "\n"
      << "ticktock_jobs_total{result=\"failed\"} " << m.jobs_failed << "\n"
      << "# HELP ticktock_kill_switch 1 while the kill switch is engaged.\n"
         "# TYPE ticktock_kill_switch gauge\n"
      << "ticktock_kill_switch " << (node_.kill_switch() ? 1 : 0) << "\n"
      << "# HELP ticktock_storage_failing 1 while storage refuses writes after a failed write.\n"
         "# TYPE ticktock_storage_failing gauge\n"
      << "ticktock_storage_failing " << (node_.store().write_failure() ? 1 : 0) << "\n"
      ;
  if (options_.nostr) {
    auto nm = options_.nostr->metrics();
    out << "# HELP ticktock_nostr_events_total Events relays delivered, by what became of them.\n"
           "# TYPE ticktock_nostr_events_total counter\n"
        << "ticktock_nostr_events_total{outcome=\"delivered\"} " << nm.delivered << "\n"
        << "ticktock_nostr_events_total{outcome=\"duplicate\"} " << nm.duplicates << "\n"
        << "ticktock_nostr_events_total{outcome=\"malformed\"} " << nm.malformed << "\n"
        << "ticktock_nostr_events_total{outcome=\"bad_signature\"} " << nm.bad_signature << "\n"
        << "ticktock_nostr_events_total{outcome=\"unexpected\"} " << nm.unexpected << "\n"
        << "# HELP ticktock_nostr_published_total Events sent to relays.\n"
           "# TYPE ticktock_nostr_published_total counter\n"
        << "ticktock_nostr_published_total " << nm.published << "\n";
  }
  out
      << "# HELP ticktock_tick_latency_seconds From the start of a tick attempt to its commit.\n"
         "# TYPE ticktock_tick_latency_seconds histogram\n";
  for (std::size_t i = 0; i < m.bounds_us.size(); ++i)
    out << "ticktock_tick_latency_seconds_bucket{le=\"" << static_cast<double>(m.bounds_us[i]) / 1e6
        << "\"} " << m.latency_buckets[i] << "\n";
  out << "ticktock_tick_latency_seconds_bucket{le=\"+Inf\"} " << m.latency_count << "\n"
      << "ticktock_tick_latency_seconds_sum " << seconds_text(m.latency_sum_us) << "\n"
      << "ticktock_tick_latency_seconds_count " << m.latency_count << "\n"
      << "# HELP ticktock_agents Agents by residency.\n# TYPE ticktock_agents gauge\n"
      << "ticktock_agents{state=\"resident\"} " << m.resident << "\n"
      << "ticktock_agents{state=\"errored\"} " << m.errored << "\n"
      << "ticktock_agents{state=\"hibernated\"} "
      << (m.agents - std::min(m.agents, m.resident + m.errored))
      << "\n"
      << "# HELP ticktock_inbox_pending Inbox entries accepted and not yet consumed.\n"
         "# TYPE ticktock_inbox_pending gauge\n"
      << "ticktock_inbox_pending " << m.inbox_pending << "\n"
      << metrics_.prometheus();
  response r;
  r.body = out.str();
  r.content_type = "text/plain; version=0.0.4";
  return r;
}

// -- /v1/agents ----------------------------------------------------------------

response router::agents(const request& req, const std::map<std::string, std::string>& query) {
  if (req.method == "GET") {
    auto wanted = query_u64(query, "limit", 100);
    if (!wanted || *wanted == 0 || *wanted > 1000)
      return error_response(400, "BAD_QUERY", "limit must be 1 to 1000");
    auto limit = static_cast<std::size_t>(*wanted);
    std::string after;
    if (auto i = query.find("after"); i != query.end())
      after = i->second;
    auto list = node_.list(after, limit + 1);
    json::array items;
    for (std::size_t i = 0; i < list.size() && i < limit; ++i)
      items.push_back(status_json(list[i]));
    json::value next = nullptr;
    if (list.size() > limit)
      next = list[limit - 1].id;
    return json_response(200, json::object{{"agents", std::move(items)}, {"next", next}});
  }
  if (req.method != "POST")
    return method_not_allowed("GET, POST");
  if (auto dup = duplicate_field(req.body))
    return *dup;
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  if (ec)
    return error_response(400, "BAD_JSON", "the body must be a JSON object {\"id\",\"type\",\"config\"}: "
                                             + ec.message());
  if (!body.is_object())
    return error_response(400, "BAD_JSON", "the body must be a JSON object {\"id\",\"type\",\"config\"}");
  auto& o = body.as_object();
  for (auto& [k, v] : o)
    if (k != "id" && k != "type" && k != "config")
      return error_response(400, "UNKNOWN_FIELD", "unknown field '" + std::string{k} + "'");
  auto* id = o.if_contains("id");
  auto* type = o.if_contains("type");
  for (auto [name, field] : {std::pair{"id", id}, std::pair{"type", type}})
    if (!field || !field->is_string())
      return error_response(400, "BAD_FIELD", "\"" + std::string{name} + "\" "
                                                + (field ? "must be a string" : "is missing"),
                            to_json(json::object{{"field", name}}));
  std::string config;
  if (auto* c = o.if_contains("config"); c && !c->is_null())
    config = c->is_string() ? std::string{c->as_string()} : to_json(*c);
  std::string sid{id->as_string()}, stype{type->as_string()};
  // `POST /v1/agents/import` imports a bundle: an agent of that name could
  // not be told from the route by a client generated from openapi.yaml.
  if (sid == "import")
    return error_response(400, "INVALID_ID", "the agent id 'import' is reserved (POST /v1/agents/import "
                                             "imports a bundle)");
  if (auto err = node_.create(sid, stype, std::move(config), req.request_id))
    return error_response(err);
  // Created: a delete that came right after it does not make this a 404.
  auto s = node_.status(sid);
  auto r = json_response(201, status_json(s ? *s : agent_status{sid, stype, agent_state::terminated}));
  r.headers.emplace_back("Location", "/v1/agents/" + sid);
  return r;
}

namespace {

// The node remembers agents terminated since it started (status() says
// `terminated`); over HTTP a deleted agent is gone, as after a restart.
expected<agent_status> live_status(const node& n, const std::string& id) {
  auto s = n.status(id);
  if (s && s->state == agent_state::terminated)
    return error{errc::not_found, "no agent '" + id + "' (it was deleted)"};
  return s;
}

}  // namespace

response router::agent(const request& req, const std::string& id, std::string_view rest,
                       const std::map<std::string, std::string>& query) {
  if (rest.empty() || rest == "/") {
    response r;
    if (req.method == "GET") {
      auto s = live_status(node_, id);
      r = s ? json_response(200, status_json(*s)) : error_response(s.error_value());
    } else if (req.method == "DELETE") {
      auto err = terminate(id);
      r = err ? error_response(err)
              : json_response(200, json::object{{"id", id}, {"state", "terminated"}});
    } else {
      r = method_not_allowed("GET, DELETE");
    }
    r.route = "/v1/agents/{id}";
    return r;
  }
  auto seg = next_segment(rest);
  if (seg == "inbox" && rest.empty()) {
    auto r = req.method == "POST" ? enqueue(req, id) : method_not_allowed("POST");
    r.route = "/v1/agents/{id}/inbox";
    return r;
  }
  if (seg == "ws" && rest.empty()) {
    response r;
    auto status = live_status(node_, id);
    if (req.method != "GET")
      r = method_not_allowed("GET");
    else if (!status)
      r = error_response(status.error_value());
    else if (status->state == agent_state::errored)
      // Its triggers would be refused: say so before upgrading.
      r = error_response(error{errc::agent_errored, "agent '" + id + "' is errored: "
                                                      + status->error});
    else if (auto bad = websocket_handshake_error(req))
      r = std::move(*bad);
    else if (req.websocket_upgrade) {
      r.status = 101;  // the server upgrades the connection
      r.stream_agent = id;
    } else {
      r = error_response(426, "UPGRADE_REQUIRED", "this is a WebSocket endpoint");
      r.headers.emplace_back("Upgrade", "websocket");
    }
    r.route = "/v1/agents/{id}/ws";
    return r;
  }
  if (seg == "fs") {
    auto r = fs(req, id, rest, query);
    if (r.route.empty())
      r.route = "/v1/agents/{id}/fs";
    return r;
  }
  return error_response(404, "ROUTE_NOT_FOUND", "no route for this agent path");
}

response router::tokens(const request& req) {
  if (auto dup = duplicate_field(req.body))
    return *dup;
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  if (ec || !body.is_object())
    return error_response(400, "BAD_JSON",
                          "the body must be {\"agent\",\"scopes\":[...],\"expires_in\":seconds}");
  auto& o = body.as_object();
  for (auto& [k, v] : o)
    if (k != "agent" && k != "scopes" && k != "expires_in")
      return error_response(400, "UNKNOWN_FIELD", "unknown field '" + std::string{k} + "'");
  auto* agent = o.if_contains("agent");
  auto* scopes = o.if_contains("scopes");
  auto* expires = o.if_contains("expires_in");
  if (!agent || !agent->is_string() || !scopes || !scopes->is_array())
    return error_response(400, "BAD_FIELD", "\"agent\" is a string and \"scopes\" an array");
  token_claims c;
  c.agent = std::string{agent->as_string()};
  if (auto err = check_agent_id(c.agent))
    return error_response(err);
  for (auto& s : scopes->as_array()) {
    if (!s.is_string() || !known_scopes.count(s.as_string()))
      return error_response(400, "BAD_SCOPE",
                            "scopes are read, write:inbox, write:ctl, write:goals, "
                            "write:deadletter, http, ws, identity, compute, containers, fetch");
    c.scopes.insert(std::string{s.as_string()});
  }
  std::int64_t ttl = 3600;
  if (expires) {
    if (!expires->is_int64() || expires->as_int64() <= 0 || expires->as_int64() > 366 * 86400)
      return error_response(400, "BAD_FIELD", "expires_in is 1 to 31622400 seconds");
    ttl = expires->as_int64();
  }
  c.exp = std::chrono::duration_cast<std::chrono::seconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count()
          + ttl;
  return json_response(201, json::object{{"token", authority_.issue(c)}, {"agent", c.agent},
                                         {"expires_at", c.exp}});
}

response router::import_bundle(const request& req) {
  auto id = node_.import_bundle(req.body);
  if (!id)
    return error_response(id.error_value());
  // Imported: a delete that came right after it does not make this a 404.
  auto s = node_.status(*id);
  auto r = json_response(201, status_json(s ? *s : agent_status{*id, {}, agent_state::terminated}));
  r.headers.emplace_back("Location", "/v1/agents/" + *id);
  return r;
}

namespace {

// -- identity -------------------------------------------------------------------

// Content type of POST .../inbox bodies that are signed envelopes.
constexpr std::string_view envelope_content_type = "application/ticktock-envelope+json";

// Whether a Content-Type names the envelope type: its media type, before any
// parameters, compared without regard to case (RFC 9110, 8.3.1).
bool is_envelope(std::string_view content_type) {
  auto type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
    type.remove_suffix(1);
  return type.size() == envelope_content_type.size()
         && strncasecmp(type.data(), envelope_content_type.data(), type.size()) == 0;
}

std::string hex_of(std::string_view bytes) {
  return identity::to_hex(
    std::span{reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
}

// Bytes given as {"data": "text"} or {"data_base64": "..."} in `o`.
expected<std::string> data_field(const json::object& o, std::string_view name) {
  auto b64 = std::string{name} + "_base64";
  if (auto* v = o.if_contains(b64)) {
    if (!v->is_string())
      return error{errc::invalid_argument, "\"" + b64 + "\" is a base64 string"};
    auto bytes = identity::from_base64(v->as_string());
    if (!bytes)
      return error{errc::invalid_argument, "\"" + b64 + "\" is not valid base64"};
    return bytes;
  }
  if (auto* v = o.if_contains(name)) {
    if (!v->is_string())
      return error{errc::invalid_argument, "\"" + std::string{name} + "\" is a string"};
    return std::string{v->as_string()};
  }
  return error{errc::invalid_argument,
               "give \"" + std::string{name} + "\" (text) or \"" + b64 + "\" (base64)"};
}

expected<std::string> hex_field(const json::object& o, std::string_view name, std::size_t bytes) {
  auto* v = o.if_contains(name);
  if (!v || !v->is_string())
    return error{errc::invalid_argument, "\"" + std::string{name} + "\" is a hex string"};
  auto raw = identity::from_hex(v->as_string());
  if (!raw || raw->size() != bytes)
    return error{errc::invalid_argument, "\"" + std::string{name} + "\" must be "
                                           + std::to_string(bytes * 2) + " hex digits"};
  return raw;
}

// A 32-byte Ed25519 public key given as hex in field `name`.
expected<identity::public_key> key_field(const json::object& o, std::string_view name) {
  auto raw = hex_field(o, name, 32);
  if (!raw)
    return raw.error_value();
  identity::public_key key{};
  std::memcpy(key.data(), raw->data(), key.size());
  return key;
}

json::object envelope_json(const envelope& e) {
  json::object o{{"id", hex_of(e.id)},
                 {"from", e.from},
                 {"to", e.to},
                 {"time_us", micros(e.time)},
                 {"encrypted", e.encrypted},
                 {"signature", identity::to_hex(e.signature)},
                 {"sender_key", identity::to_hex(e.sender_key)}};
  // Text as "payload"; ciphertext and other bytes that are not UTF-8 as
  // "payload_base64", the form envelope_from_json reads back.
  if (e.encrypted || !is_valid_utf8(e.payload))
    o["payload_base64"] = identity::to_base64(e.payload);
  else
    o["payload"] = e.payload;
  return o;
}

expected<envelope> envelope_from_json(const json::value& v, const std::string& to) {
  static const std::set<std::string_view> fields = {
    "id", "from", "to", "time_us", "encrypted", "payload", "payload_base64", "signature", "sender_key"};
  if (!v.is_object())
    return error{errc::invalid_argument, "an envelope is a JSON object"};
  auto& o = v.as_object();
  for (auto& [k, _] : o)
    if (!fields.count(k))
      return error{errc::invalid_argument, "unknown envelope field \"" + std::string{k} + "\""};
  envelope e;
  auto id = o.if_contains("id");
  if (!id || !id->is_string())
    return error{errc::invalid_argument, "\"id\" is a hex string"};
  auto raw_id = identity::from_hex(id->as_string());
  if (!raw_id || raw_id->size() < 16 || raw_id->size() > 64)
    return error{errc::invalid_argument, "\"id\" is 32 to 128 hex digits"};
  e.id = std::move(*raw_id);
  auto from = o.if_contains("from");
  if (!from || !from->is_string())
    return error{errc::invalid_argument, "\"from\" is the sender's agent id"};
  e.from = std::string{from->as_string()};
  if (auto* t = o.if_contains("to"); t && (!t->is_string() || t->as_string() != to))
    return error{errc::invalid_argument, "\"to\" names another agent than this inbox's"};
  e.to = to;
  auto* time = o.if_contains("time_us");
  if (!time || !time->is_int64() || time->as_int64() < 1)
    return error{errc::invalid_argument,
                 "\"time_us\" is an integer, microseconds since the Unix epoch (from 1)"};
  e.time = time_point{duration{time->as_int64()}};
  if (auto* enc = o.if_contains("encrypted")) {
    if (!enc->is_bool())
      return error{errc::invalid_argument, "\"encrypted\" is true or false"};
    e.encrypted = enc->as_bool();
  }
  if (o.if_contains("payload") && o.if_contains("payload_base64"))
    return error{errc::invalid_argument, "give \"payload\" or \"payload_base64\", not both"};
  auto payload = o.if_contains("payload") && o.at("payload").is_object()
                   ? expected<std::string>{error{errc::invalid_argument,
                                                 "give binary payloads as \"payload_base64\""}}
                   : data_field(o, "payload");
  if (!payload)
    return payload.error_value();
  e.payload = std::move(*payload);
  auto sig = hex_field(o, "signature", 64);
  if (!sig)
    return sig.error_value();
  std::memcpy(e.signature.data(), sig->data(), 64);
  auto key = key_field(o, "sender_key");
  if (!key)
    return key.error_value();
  e.sender_key = *key;
  return e;
}

}  // namespace

response router::nostr_file(const request& req, const std::string& id,
                            const std::vector<std::string>& parts) {
  const auto& m = req.method;
  if (parts.size() == 1) {
    if (m != "GET")
      return method_not_allowed("GET");
    return json_response(200, json::object{{"entries", json::array{"relays", "publish"}}});
  }
  if (parts.size() != 2 || (parts[1] != "relays" && parts[1] != "publish"))
    return error_response(404, "NO_SUCH_FILE", "nostr/ has relays and publish");
  if (!options_.nostr)
    return error_response(404, "NOT_YET_AVAILABLE", "this server runs without the Nostr driver");
  if (parts[1] == "relays") {
    if (m != "GET")
      return method_not_allowed("GET");
    auto st = options_.nostr->status_json(id);
    if (!st)
      return st.code() == errc::not_found ? error_response(404, "NO_RELAYS", st.error_value().message())
                                          : error_response(st.error_value());
    response r;
    r.body = std::move(*st);
    return r;
  }
  if (m != "POST")
    return method_not_allowed("POST");
  if (auto dup = duplicate_field(req.body))
    return *dup;
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  if (ec || !body.is_object())
    return error_response(400, "BAD_JSON", "publish takes {\"content\", \"kind\"?, \"tags\"?}");
  auto& o = body.as_object();
  for (auto& [k, _] : o)
    if (k != "content" && k != "kind" && k != "tags")
      return error_response(400, "UNKNOWN_FIELD", "unknown field \"" + std::string{k} + "\"");
  nostr_note note;
  auto* content = o.if_contains("content");
  if (!content || !content->is_string())
    return error_response(400, "BAD_FIELD", "\"content\" is a string");
  note.content = std::string{content->as_string()};
  if (auto* kind = o.if_contains("kind")) {
    if (!kind->is_int64() || kind->as_int64() < 0 || kind->as_int64() > nostr::max_kind)
      return error_response(400, "BAD_FIELD", "\"kind\" is an integer from 0 to 65535");
    note.kind = static_cast<int>(kind->as_int64());
  }
  if (auto* tags = o.if_contains("tags")) {
    bool ok = tags->is_array();
    for (std::size_t i = 0; ok && i < tags->as_array().size(); ++i) {
      auto& t = tags->as_array()[i];
      ok = t.is_array();
      auto& row = note.tags.emplace_back();
      for (std::size_t k = 0; ok && k < t.as_array().size(); ++k) {
        ok = t.as_array()[k].is_string();
        if (ok)
          row.emplace_back(t.as_array()[k].as_string());
      }
    }
    if (!ok)
      return error_response(400, "BAD_FIELD", "\"tags\" is an array of arrays of strings");
  }
  // A publish leaves the runtime: the gate judges it, as it does a tick's.
  // An approval parks only what a tick publishes (ctx.nostr_publish).
  auto verdict = node_.assess_publish(id, options_.nostr->relays(id));
  if (verdict.what == policy::decision::deny)
    return error_response(403, verdict.reason == "kill_switch" ? "KILL_SWITCH" : "POLICY_DENIED",
                          "the policy gate denies this publish (" + verdict.reason + ")");
  if (verdict.what == policy::decision::require_approval)
    return error_response(403, "APPROVAL_REQUIRED",
                          "the policy requires an approval for this publish (" + verdict.reason
                            + "): publish from a tick, which parks it until an admin decides");
  auto published = options_.nostr->publish(id, note);
  if (!published)
    return published.code() == errc::not_found
             ? error_response(404, "NO_RELAYS", published.error_value().message())
             : error_response(published.error_value());
  response r;
  r.status = 202;
  r.body = std::move(*published);
  return r;
}

response router::identity_file(const request& req, const std::string& id,
                               const std::vector<std::string>& parts) {
  static const std::vector<std::string> files = {"pubkey", "sign", "verify", "encrypt", "decrypt",
                                                 "envelope"};
  const auto& m = req.method;
  if (parts.size() == 1) {
    if (m != "GET")
      return method_not_allowed("GET");
    json::array names;
    for (auto& f : files)
      names.emplace_back(f);
    return json_response(200, json::object{{"entries", std::move(names)}});
  }
  if (parts.size() != 2 || std::find(files.begin(), files.end(), parts[1]) == files.end())
    return error_response(404, "NO_SUCH_FILE", "identity/ has pubkey, sign, verify, encrypt, "
                                               "decrypt and envelope");
  auto& file = parts[1];
  if (file == "pubkey") {
    if (m != "GET")
      return method_not_allowed("GET");
    auto keys = node_.public_keys(id);
    if (!keys)
      return error_response(keys.error_value());
    return json_response(200, json::object{{"ed25519", identity::to_hex(keys->ed25519)},
                                           {"nostr", identity::to_hex(keys->nostr)},
                                           {"npub", nostr::npub(keys->nostr)}});
  }
  if (m != "POST")
    return method_not_allowed("POST");
  if (file == "sign") {  // the body's bytes, as they are
    auto sig = node_.sign(id, req.body);
    if (!sig)
      return error_response(sig.error_value());
    return json_response(200, json::object{{"signature", identity::to_hex(*sig)},
                                           {"pubkey", identity::to_hex(node_.public_keys(id)->ed25519)}});
  }
  if (auto dup = duplicate_field(req.body))
    return *dup;
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  if (ec)
    return error_response(400, "BAD_JSON", "the body must be a JSON object: " + ec.message());
  if (!body.is_object())
    return error_response(400, "BAD_JSON", "the body must be a JSON object");
  auto& o = body.as_object();
  auto bad = [](const error& e) { return error_response(400, "BAD_FIELD", e.message()); };
  // Each file's fields; a field it does not know, or two that say the same
  // thing, is refused rather than one of them taken silently.
  static const std::map<std::string, std::vector<std::string_view>> fields = {
    {"verify", {"data", "data_base64", "signature", "pubkey"}},
    {"encrypt", {"data", "data_base64", "to", "pubkey"}},
    {"decrypt", {"ciphertext"}},
    {"envelope", {"to", "payload", "payload_base64", "encrypted", "pubkey"}}};
  auto& known = fields.at(file);
  for (auto& [k, v] : o)
    if (std::find(known.begin(), known.end(), std::string_view{k}) == known.end())
      return error_response(400, "UNKNOWN_FIELD", "identity/" + file + " has no field \"" + std::string{k} + "\"");
  for (auto [a, b] : {std::pair{"data", "data_base64"}, std::pair{"payload", "payload_base64"}})
    if (o.contains(a) && o.contains(b))
      return error_response(400, "BAD_FIELD", "give \"" + std::string{a} + "\" or \"" + b + "\", not both");
  if (file == "verify") {
    auto data = data_field(o, "data");
    auto sig = hex_field(o, "signature", 64);
    if (!data)
      return bad(data.error_value());
    if (!sig)
      return bad(sig.error_value());
    identity::public_key key{};
    if (o.contains("pubkey")) {
      auto k = key_field(o, "pubkey");
      if (!k)
        return bad(k.error_value());
      key = *k;
    } else {
      auto keys = node_.public_keys(id);
      if (!keys)
        return error_response(keys.error_value());
      key = keys->ed25519;
    }
    bool valid = identity::verify(
      key, *data, std::span{reinterpret_cast<const std::uint8_t*>(sig->data()), sig->size()});
    return json_response(200, json::object{{"valid", valid}});
  }
  if (file == "encrypt") {
    auto data = data_field(o, "data");
    if (!data)
      return bad(data.error_value());
    expected<std::string> sealed = error{};
    if (o.contains("to") && o.contains("pubkey"))
      return error_response(400, "BAD_FIELD", "give \"to\" or \"pubkey\", not both");
    if (auto* to = o.if_contains("to"); to && to->is_string()) {
      sealed = node_.encrypt_for(std::string{to->as_string()}, *data);
    } else if (o.contains("pubkey")) {
      auto k = key_field(o, "pubkey");
      if (!k)
        return bad(k.error_value());
      sealed = identity::encrypt_to(*k, *data);
    } else {
      return error_response(400, "BAD_FIELD", "give \"to\" (an agent id) or \"pubkey\" (hex)");
    }
    if (!sealed)
      return error_response(sealed.error_value());
    return json_response(200, json::object{{"ciphertext", identity::to_base64(*sealed)}});
  }
  if (file == "decrypt") {
    auto* c = o.if_contains("ciphertext");
    auto raw = c && c->is_string() ? identity::from_base64(c->as_string())
                                   : expected<std::string>{error{errc::invalid_argument, ""}};
    if (!raw)
      return error_response(400, "BAD_FIELD", "\"ciphertext\" is base64");
    auto plain = node_.decrypt(id, *raw);
    if (!plain)
      return error_response(plain.error_value());
    return json_response(200, json::object{{"plaintext", payload_json(*plain)}});
  }
  // envelope: a message signed (and optionally encrypted) by this agent, for
  // delivery to another node's inbox.
  auto* to = o.if_contains("to");
  if (!to || !to->is_string())
    return error_response(400, "BAD_FIELD", "\"to\" is the recipient's agent id");
  auto data = data_field(o, "payload");
  if (!data)
    return bad(data.error_value());
  bool encrypted = false;
  if (auto* enc = o.if_contains("encrypted")) {
    if (!enc->is_bool())
      return error_response(400, "BAD_FIELD", "\"encrypted\" is true or false");
    encrypted = enc->as_bool();
  }
  // "pubkey": the recipient's Ed25519 key, for one on another node.
  std::optional<identity::public_key> recipient;
  if (o.contains("pubkey")) {
    auto k = key_field(o, "pubkey");
    if (!k)
      return bad(k.error_value());
    if (!encrypted)
      return error_response(400, "BAD_FIELD", "\"pubkey\" is for \"encrypted\":true envelopes");
    recipient = *k;
  }
  auto env = node_.make_envelope(id, std::string{to->as_string()}, std::move(*data), encrypted, recipient);
  if (!env)
    return error_response(env.error_value());
  // An envelope is posted to an inbox as a request body: one over the
  // body limit would be refused there (base64 and the signature add a
  // third and more to the payload).
  auto out = json_response(200, envelope_json(*env));
  if (out.body.size() > options_.max_body_bytes)
    return error_response(413, "BODY_TOO_LARGE",
                          "the envelope would be " + std::to_string(out.body.size())
                            + " bytes, over the " + std::to_string(options_.max_body_bytes)
                            + " bytes (--max-body) an inbox takes: send a smaller payload");
  return out;
}

response router::enqueue(const request& req, const std::string& id) {
  boost::system::error_code ec;
  auto body = json::parse(req.body, ec);
  bool envelope = is_envelope(req.header("content-type"));
  if (ec && envelope)
    return error_response(400, "BAD_ENVELOPE", "an envelope is a JSON object: " + ec.message());
  if (ec)
    return error_response(400, "BAD_JSON", "the message must be JSON: " + ec.message());
  if (envelope) {
    // A field named twice would be read one way here and maybe another by
    // whatever else reads the envelope (a proxy, a log).
    if (auto dup = duplicate_field(req.body))
      return *dup;
    auto env = envelope_from_json(body, id);
    if (!env)
      return error_response(400, "BAD_ENVELOPE", env.error_value().message());
    auto r = node_.deliver(*env, req.request_id);
    if (!r && r.error_value().code() == errc::invalid_argument)  // its sender or id
      return error_response(400, "BAD_ENVELOPE", r.error_value().message());
    if (!r)
      return error_response(r.error_value());
    return json_response(202, json::object{{"seq", r->seq}, {"duplicate", false}});
  }
  send_options opts;
  opts.idempotency_key = std::string{req.header("idempotency-key")};
  opts.request_id = req.request_id;
  auto r = node_.send(id, req.body, opts);
  if (!r)
    return error_response(r.error_value());
  return json_response(202, json::object{{"seq", r->seq}, {"duplicate", r->duplicate}});
}

// -- the agent filesystem ------------------------------------------------------

std::optional<std::vector<std::string>> split_fs_path(std::string_view path) {
  std::vector<std::string> parts;
  for (auto rest = path; !rest.empty() && rest != "/";) {
    auto seg = next_segment(rest);
    auto dec = router::url_decode(seg);
    if (!dec || dec->empty() || *dec == "." || *dec == ".."
        || dec->find('/') != std::string::npos || dec->find('\0') != std::string::npos
        || !is_valid_utf8(*dec))
      return std::nullopt;
    parts.push_back(std::move(*dec));
  }
  return parts;
}

response router::fs(const request& req, const std::string& id, std::string_view path,
                    const std::map<std::string, std::string>& query) {
  auto status = live_status(node_, id);
  if (!status)
    return error_response(status.error_value());
  auto split = split_fs_path(path);
  if (!split) {
    for (auto rest = path; !rest.empty();)
      if (!url_decode(next_segment(rest)))
        return error_response(400, "BAD_REQUEST", "malformed URL escape in agent path");
    return error_response(400, "BAD_PATH", "bad segment in agent path");
  }
  auto& parts = *split;
  const auto& m = req.method;
  if (auto bad = websocket_handshake_error(req))
    return *bad;
  auto want_stream = accepts_event_stream(req.header("accept"))
                     || req.websocket_upgrade;
  auto from_seq = [&](std::uint64_t dflt) { return stream_start(req, query, dflt); };
  auto limit = [&]() -> std::optional<std::size_t> {
    auto v = query_u64(query, "limit", 1000);
    if (!v || *v == 0 || *v > 10000)
      return std::nullopt;
    return static_cast<std::size_t>(*v);
  };
  // A stream of trajectory records (trace, hud): live from the next record
  // unless from_seq / Last-Event-ID say where to resume.
  auto follow = [&](stream_kind kind) -> response {
    if (!want_stream)
      return error_response(406, "STREAM_ONLY",
                            "this is a stream: send Accept: text/event-stream or open a WebSocket");
    auto meta = node_.store().get_agent(id);
    auto from = from_seq(meta ? meta->trajectory_next : 0);
    if (!from)
      return error_response(400, "BAD_QUERY", bad_stream_start);
    return stream_of(kind, id, *from);
  };
  static const std::vector<std::string> top = {
    "ctl", "status", "inbox", "outbox", "goals", "alarms", "memory", "identity", "nostr", "wallet",
    "compute", "containers", "http", "limits", "hud", "metrics", "deadletter", "logs", "mounts"};

  if (parts.empty()) {
    if (m != "GET")
      return method_not_allowed("GET");
    json::array names;
    for (auto& n : top)
      names.emplace_back(n);
    return json_response(200, json::object{{"entries", std::move(names)}}, "/v1/agents/{id}/fs/");
  }
  auto& name = parts[0];
  // The metrics label: a file of the tree, or "{other}" for any other name
  // (a label made of what a client sent would add series without bound and
  // could inject lines into /metrics).
  auto known = std::find(top.begin(), top.end(), name) != top.end();
  auto route = [&, label = "/v1/agents/{id}/fs/" + (known ? name : std::string{"{other}"})](response r) {
    r.route = label;
    return r;
  };

  if (name == "ctl" && parts.size() == 1) {
    if (m != "PUT" && m != "POST")
      return route(method_not_allowed("PUT, POST"));
    auto cmd = ctl_command(req.body);
    if (cmd == "tick") {
      auto r = node_.tick(id, req.request_id);
      return route(r ? json_response(202, json::object{{"seq", r->seq}}) : error_response(r.error_value()));
    }
    error err;
    if (cmd == "hibernate")
      err = node_.hibernate(id);
    else if (cmd == "wake")
      err = node_.wake(id);
    else if (cmd == "terminate")
      err = terminate(id);
    else
      return route(error_response(400, "BAD_CTL", "ctl takes tick, hibernate, wake or terminate"));
    return route(err ? error_response(err) : json_response(200, json::object{{"ok", cmd}}));
  }
  if (name == "status" && parts.size() == 1) {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    auto o = status_json(*status);
    if (auto l = node_.wallet(id))
      o["budget"] = json::object{{"limit_total", l->limit_total}, {"limit_day", l->limit_day},
                                 {"limit_month", l->limit_month}, {"spent_total", l->spent_total},
                                 {"reserved", l->reserved}};
    return route(json_response(200, o));
  }
  if (name == "inbox" && parts.size() == 1) {
    if (m == "GET")
      return route(json_response(200, json::object{{"pending", status->queue_depth}}));
    if (m == "POST" || m == "PUT")
      return route(enqueue(req, id));
    return route(method_not_allowed("GET, POST, PUT"));
  }
  if (name == "outbox" && parts.size() == 1) {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    auto from = from_seq(0);
    if (!from)
      return route(error_response(400, "BAD_QUERY", bad_stream_start));
    auto lim = limit();
    if (!lim)
      return route(error_response(400, "BAD_QUERY", "limit is 1 to 10000"));
    if (want_stream)
      return route(stream_of(stream_kind::outbox, id, *from));
    auto events = node_.outbox(id, *from, *lim);
    if (!events)
      return route(error_response(events.error_value()));
    json::array arr;
    for (auto& e : *events)
      arr.push_back(outbox_json(e));
    return route(json_response(200, json::object{{"events", std::move(arr)}}));
  }
  if (name == "goals") {
    if (parts.size() == 1) {
      if (m != "GET")
        return route(method_not_allowed("GET"));
      auto goals = node_.goals(id);
      if (!goals)
        return route(error_response(goals.error_value()));
      json::object o;
      for (auto& [k, v] : *goals)
        o[k] = payload_json(v);
      return route(json_response(200, json::object{{"goals", std::move(o)}}));
    }
    if (parts.size() != 2)
      return route(error_response(404, "NO_SUCH_FILE", "goals/ has one level of keys"));
    if (m == "GET") {
      auto v = node_.store().get_goal(id, parts[1]);
      if (!v)
        return route(error_response(404, "NO_SUCH_FILE", "no goal '" + parts[1] + "'"));
      return route(json_response(200, json::object{{"key", parts[1]}, {"value", payload_json(*v)}}));
    }
    std::optional<std::string> value;
    if (m == "PUT" || m == "POST")
      value = req.body;
    else if (m != "DELETE")
      return route(method_not_allowed("GET, PUT, POST, DELETE"));
    auto r = node_.change_goal(id, parts[1], std::move(value), req.request_id);
    return route(r ? json_response(202, json::object{{"seq", r->seq}}) : error_response(r.error_value()));
  }
  if (name == "memory" && parts.size() == 2 && parts[1] == "export") {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    auto secrets = query_flag(query, "secrets");
    auto allow_broken = query_flag(query, "allow_broken");
    if (!secrets || !allow_broken)
      return route(bad_flag(secrets ? "allow_broken" : "secrets"));
    auto bundle = node_.export_bundle(id, *secrets, *allow_broken);
    if (!bundle)
      return route(error_response(bundle.error_value()));
    response r;
    r.body = std::move(*bundle);
    r.content_type = "application/octet-stream";
    r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + id + ".ttbundle\"");
    return route(r);
  }
  if (name == "memory") {
    if (m != "GET")  // memory changes only in ticks
      return route(method_not_allowed("GET"));
    auto space = parts.size() >= 2 ? parts[1] : std::string{"kv"};
    if (parts.size() == 3) {
      auto v = node_.store().get_memory(id, space, parts[2]);
      if (!v)
        return route(error_response(404, "NO_SUCH_FILE", "no memory key '" + parts[2] + "'"));
      return route(json_response(200, json::object{{"key", parts[2]}, {"value", payload_json(*v)}}));
    }
    if (parts.size() > 3)
      return route(error_response(404, "NO_SUCH_FILE", "memory/<namespace>/<key>"));
    auto entries = node_.memory(id, space);
    if (!entries)
      return route(error_response(entries.error_value()));
    json::object o;
    for (auto& [k, v] : *entries)
      o[k] = payload_json(v);
    return route(json_response(200, json::object{{"namespace", space}, {"entries", std::move(o)}}));
  }
  if (name == "deadletter" && parts.size() == 1) {
    if (m == "GET") {
      auto lim = limit();
      if (!lim)
        return route(error_response(400, "BAD_QUERY", "limit is 1 to 10000"));
      // Pages: from the entry id `from` on (the last page's last id + 1).
      auto from = query_u64(query, "from", 0);
      if (!from)
        return route(error_response(400, "BAD_QUERY", "from is an entry id"));
      auto dl = node_.deadletter(id, *lim, *from);
      if (!dl)
        return route(error_response(dl.error_value()));
      json::array arr;
      for (auto& d : *dl) {
        json::object o{{"id", d.id},
                       {"seq", d.seq},
                       {"reason", d.reason},
                       {"error", d.error},
                       {"time_us", micros(d.time)},
                       {"attempts", d.attempts},
                       {"trigger", std::string{to_string(d.entry.kind)}},
                       {"request_id", d.entry.request_id},
                       {"payload", payload_json(d.entry.payload)}};
        if (!d.entry.alarm.empty())
          o["alarm"] = d.entry.alarm;  // which alarm's trigger it was
        arr.push_back(std::move(o));
      }
      return route(json_response(200, json::object{{"entries", std::move(arr)}}));
    }
    if (m != "POST")
      return route(method_not_allowed("GET, POST"));
    std::optional<std::vector<std::uint64_t>> ids;  // an empty body: all of them
    if (!req.body.empty()) {
      if (auto dup = duplicate_field(req.body))
        return route(std::move(*dup));
      boost::system::error_code ec;
      auto body = json::parse(req.body, ec);
      auto* arr = !ec && body.is_object() ? body.as_object().if_contains("ids") : nullptr;
      if (!arr || !arr->is_array())
        return route(error_response(400, "BAD_JSON", "requeue takes {\"ids\":[...]} or an empty body"));
      ids.emplace();
      for (auto& v : arr->as_array()) {
        if (!v.is_uint64() && !(v.is_int64() && v.as_int64() >= 0))
          return route(error_response(400, "BAD_JSON", "ids are non-negative integers"));
        ids->push_back(v.to_number<std::uint64_t>());
      }
    }
    auto n = node_.requeue(id, ids);
    return route(n ? json_response(200, json::object{{"requeued", *n}}) : error_response(n.error_value()));
  }
  if (name == "wallet" || name == "compute" || name == "containers" || name == "http"
      || name == "limits")
    return route(services_file(req, id, parts, query));
  if (name == "identity")
    return route(identity_file(req, id, parts));
  if (name == "nostr")
    return route(nostr_file(req, id, parts));
  if (name == "logs" && parts.size() == 1) {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    return route(json_response(200, json::object{{"entries", json::array{"trace", "trajectory"}}}));
  }
  if (name == "logs" && parts.size() >= 2) {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    if (parts[1] == "trajectory" && parts.size() == 2) {
      auto verify = query_flag(query, "verify");
      if (!verify)
        return route(bad_flag("verify"));
      // Checked with verify too (which reads the whole chain): a bad value
      // is a mistake either way.
      auto from = query_u64(query, "from", 0);
      if (!from)
        return route(error_response(400, "BAD_QUERY", "from is a number"));
      auto lim = limit();
      if (!lim)
        return route(error_response(400, "BAD_QUERY", "limit is 1 to 10000"));
      if (*verify) {
        auto rep = node_.verify(id);
        if (!rep)
          return route(error_response(rep.error_value()));
        json::object o{{"ok", rep->ok}, {"records", rep->records}};
        if (rep->first_bad)
          o["first_bad"] = *rep->first_bad;
        if (!rep->reason.empty())
          o["reason"] = rep->reason;
        return route(json_response(200, o));
      }
      auto recs = node_.trajectory(id, *from, *lim);
      if (!recs)
        return route(error_response(recs.error_value()));
      json::array arr;
      for (auto& r : *recs)
        arr.push_back(trajectory_json(r));
      return route(json_response(200, json::object{{"records", std::move(arr)}}));
    }
    if (parts[1] == "trace" && parts.size() == 2)
      return route(follow(stream_kind::trace));
  }
  if (name == "hud" && parts.size() == 2 && parts[1] == "stream") {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    return route(follow(stream_kind::hud));
  }
  if (name == "alarms" && parts.size() == 1) {  // set and cancelled by ticks only
    if (m != "GET")
      return route(method_not_allowed("GET"));
    auto alarms = node_.alarms(id);
    if (!alarms)
      return route(error_response(alarms.error_value()));
    std::sort(alarms->begin(), alarms->end(), [](auto& a, auto& b) { return a.due < b.due; });
    json::array arr;
    for (auto& a : *alarms) {
      json::object o{{"name", a.name}, {"due_us", micros(a.due)}};
      if (a.period.count() > 0)
        o["period_us"] = a.period.count();
      arr.push_back(std::move(o));
    }
    return route(json_response(200, json::object{{"alarms", std::move(arr)}}));
  }
  if (name == "mounts" && parts.size() == 1) {
    if (m != "GET")
      return route(method_not_allowed("GET"));
    json::array arr;
    for (auto& n : top)
      arr.push_back(json::object{{"path", "/" + n}, {"source", "ticktock"}});
    return route(json_response(200, json::object{{"mounts", std::move(arr)}}));
  }
  if (name == "metrics" || name == "hud")  // hud/stream is served above
    return route(error_response(404, "NOT_YET_AVAILABLE",
                                "'" + name + "' is part of the agent tree but not served by this version"));
  std::string file;
  for (auto& p : parts)
    file += (file.empty() ? "" : "/") + p;
  return route(error_response(404, "NO_SUCH_FILE", "no file '" + file + "' in the agent tree"));
}

// -- streams -------------------------------------------------------------------

// Last-Event-ID wins over from_seq: a browser's EventSource reconnects to the
// URL it was given (from_seq and all) with the last id it received, so
// from_seq is where a stream starts and Last-Event-ID where it resumes. Both
// are checked, whichever is used. (At most 19 digits: the + 1 cannot wrap.)
std::optional<std::uint64_t> router::stream_start(const request& req,
                                                  const std::map<std::string, std::string>& query,
                                                  std::uint64_t dflt) {
  std::optional<std::uint64_t> from = dflt;
  if (auto i = query.find("from_seq"); i != query.end())
    from = parse_u64(i->second);
  if (auto le = req.header("last-event-id"); !le.empty()) {
    auto v = parse_u64(le);
    if (!v || !from)
      return std::nullopt;
    return *v + 1;
  }
  return from;
}

error router::terminate(const std::string& id) {
  auto err = node_.terminate(id);
  if (!err && options_.on_deleted)
    options_.on_deleted(id);
  return err;
}

response router::stream_of(stream_kind kind, const std::string& agent, std::uint64_t from) const {
  response r;
  r.stream = kind;
  r.stream_agent = agent;
  r.stream_from = from;
  if (auto meta = node_.store().get_agent(agent)) {
    r.stream_created_us = micros(meta->created);
    // Which agent of the id this is: a client that reconnects can tell
    // whether it still follows the same one.
    r.headers.emplace_back("X-Agent-Created", std::to_string(r.stream_created_us));
  }
  return r;
}

expected<std::vector<stream_event>> router::read_stream(const response& r, std::uint64_t from,
                                                        std::size_t limit) {
  auto kind = r.stream;
  const auto& agent = r.stream_agent;
  if (kind == stream_kind::job)
    return read_job_stream(agent, from, limit);
  if (auto meta = node_.store().get_agent(agent); !meta || micros(meta->created) != r.stream_created_us)
    return error{errc::not_found, "no agent '" + agent + "' (the stream's agent was deleted)"};
  std::vector<stream_event> out;
  if (kind == stream_kind::outbox) {
    auto events = node_.outbox(agent, from, limit);
    if (!events)
      return events.error_value();
    for (auto& e : *events)
      out.push_back({e.seq, "outbox", std::move(e.payload)});
    return out;
  }
  auto recs = node_.trajectory(agent, from, limit);
  if (!recs)
    return recs.error_value();
  for (auto& r : *recs) {
    if (kind == stream_kind::trace) {
      out.push_back({r.index, "tick", to_json(trajectory_json(r))});
      continue;
    }
    // The HUD shows that and how the agent works, never what it works on:
    // no payloads, errors, logs or hashes.
    out.push_back({r.index, "tick",
                   to_json(json::object{{"tick", r.tick},
                                        {"trigger", std::string{to_string(r.kind)}},
                                        {"outcome", std::string{storage::to_string(r.outcome)}},
                                        {"start_us", micros(r.start)},
                                        {"duration_ns", r.duration_ns},
                                        {"outbox", r.effects.outbox},
                                        {"messages", r.effects.messages}})});
  }
  return out;
}

// -- agent-handled routes -------------------------------------------------------

namespace {

// The response of an http trigger's committed tick (or of its deadletter).
response reply_of(const tick_event& ev) {
  if (ev.outcome == storage::outcome::deadlettered)
    return error_response(500, "TICK_FAILED", ev.error);
  response r;
  if (!ev.reply) {
    r.status = 204;
    return r;
  }
  r.status = ev.reply->status;
  r.body = ev.reply->body;
  r.content_type = "text/plain; charset=utf-8";
  for (auto& [k, v] : ev.reply->headers) {
    if (k.size() == 12 && strncasecmp(k.c_str(), "content-type", 12) == 0)
      r.content_type = v;
    else
      r.headers.emplace_back(k, v);
  }
  return r;
}

}  // namespace

// Nothing here blocks: the request goes to the agent's actor as a direct
// trigger (no inbox write: its tick's commit makes it durable) and the
// ticket answers from the committed tick, or through the hub from the later
// tick that answers a deferred reply.
void router::agent_route(const request& req, const std::string& id, std::string_view rest,
                         std::string_view query, const std::shared_ptr<ticket>& t) {
  http_request hr;
  hr.method = req.method;
  hr.path = std::string{rest};
  hr.query = query_without_token(query);
  for (auto& [k, v] : req.headers)
    if (k != "authorization" && k != "cookie")
      hr.headers.emplace_back(k, v);
  hr.body = req.body;
  send_options opts;
  opts.kind = trigger_kind::http;
  opts.message_bytes = hr.body.size();  // the head is limited by --max-header
  opts.request_id = req.request_id;
  node_.run_trigger(id, hr.encode(), opts, [this, t, id, life = life_](expected<tick_event> ev) {
    std::lock_guard<std::recursive_mutex> guard{life->mtx};
    if (!life->open)
      return;  // the server stopped: nobody to answer
    auto answer = [t](response r) {
      r.route = "/a/{id}";
      t->finish(std::move(r));
    };
    if (!ev) {
      answer(error_response(ev.error_value()));
    } else if (ev->reply_deferred && ev->outcome == storage::outcome::ok) {
      // Registered before the agent's next tick can commit the late reply.
      t->deferred(ev->trigger_seq);
      replies_.await({id, ev->trigger_seq}, reply_hub::clock::now() + options_.reply_timeout,
                     [t, life, answer](std::optional<tick_event> late) {
                       std::lock_guard<std::recursive_mutex> g{life->mtx};
                       if (!life->open)
                         return;
                       if (late)
                         answer(reply_of(*late));
                       else
                         t->cancel();
                     });
    } else {
      answer(reply_of(*ev));
    }
  });
}

}  // namespace ticktock::drivers
