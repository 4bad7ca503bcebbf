#pragma once

// The HTTP API without the transport: requests and responses as plain
// structs, so routing and handlers can be tested (and fuzzed) without a
// socket. http_server.cpp adapts Beast to this.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <variant>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/actors/options.hpp"
#include "ticktock/runtime/detail/unique_fd.hpp"
#include "ticktock/runtime/error.hpp"
#include "tokens.hpp"

namespace ticktock {
class node;
}

namespace ticktock::drivers {

class nostr_driver;

struct request {
  std::string method;  ///< upper case
  std::string target;  ///< path and query, as received
  std::map<std::string, std::string> headers;  ///< names lower-cased
  std::string body;
  std::string request_id;
  /// When the server had read it (the duration metric starts here); a
  /// request built elsewhere (tests, fuzzers) starts when it is handled.
  std::optional<std::chrono::steady_clock::time_point> received;
  /// A WebSocket upgrade: HTTP/1.1 with Connection: upgrade and
  /// Upgrade: websocket (beast::websocket::is_upgrade).
  bool websocket_upgrade = false;

  std::string_view header(const std::string& name) const {
    auto i = headers.find(name);
    return i == headers.end() ? std::string_view{} : std::string_view{i->second};
  }
};

/// Which event stream a streaming response follows.
enum class stream_kind : std::uint8_t {
  none,
  outbox,  ///< fs/outbox: events by outbox seq
  trace,   ///< fs/logs/trace: trajectory records as they commit, by index
  hud,     ///< fs/hud/stream: the same, redacted for public viewers
  job,     ///< compute/jobs/{id}/stream, containers/sessions/{id}/output: output
           ///< chunks by index, then one "end" event; stream_agent is "agent\0job"
};

/// One event of a stream, for SSE ("id:", "event:", "data:") or a WebSocket
/// frame ({"id","event","data"}).
struct stream_event {
  std::uint64_t id = 0;
  std::string event;
  std::string data;
};

struct response {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// A file to send as the body instead of `body` (an open descriptor, read
  /// from its start as the response is written, never whole into memory).
  std::shared_ptr<const detail::unique_fd> body_file;
  std::string content_type = "application/json";
  /// For SSE: the stream to follow, the agent, and the first seq to send.
  stream_kind stream = stream_kind::none;
  std::string stream_agent;
  std::uint64_t stream_from = 0;
  /// When the followed agent was created (microseconds since the epoch): the
  /// stream ends with that agent, not with an agent created later under its id.
  std::int64_t stream_created_us = 0;
  /// A label of the matched route for metrics ("/v1/agents/{id}").
  std::string route;
  /// A stream or WebSocket opened with an agent token ends when the token
  /// expires (unix seconds); 0: never (the admin token).
  std::int64_t token_expires_unix = 0;
};

/// The API's error body: {"error":{"code","message","details"}}.
response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string details_json = "{}");
/// Maps a ticktock error to its HTTP status and body.
response error_response(const error& err);
/// A query's number: decimal digits and nothing else (no sign, no space), at
/// most 2^63 - 1 (the API's numbers are int64); nullopt otherwise.
std::optional<std::uint64_t> parse_u64(std::string_view s);
/// The query parameter `name` read by parse_u64: `dflt` when it is absent,
/// nullopt when it is there but not such a number (a 400).
std::optional<std::uint64_t> query_u64(const std::map<std::string, std::string>& query,
                                       const std::string& name, std::uint64_t dflt);
/// The 400 message of a from_seq or Last-Event-ID that is not such a number.
inline constexpr std::string_view bad_stream_start =
  "from_seq and Last-Event-ID are whole numbers from 0 to 9223372036854775807";
/// Whether an Accept header asks for text/event-stream: a media range of
/// that type (case-insensitive, RFC 9110 8.3.1) whose q is not 0. A
/// wildcard does not: a stream is answered only to a client that asks for one.
bool accepts_event_stream(std::string_view accept);
/// 405 METHOD_NOT_ALLOWED with an Allow header; HEAD is added wherever GET
/// is allowed (router::handle answers it as a GET without the body).
response method_not_allowed(std::string_view allowed);
/// 400 DUPLICATE_FIELD (details: the field's path) if an object in the JSON
/// text `body` names a field twice, which boost::json::parse would hide by
/// keeping the last; nullopt otherwise (also for text that is not JSON,
/// which the caller's parse reports).
std::optional<response> duplicate_field(std::string_view body);

/// Per-route request counters for /metrics.
class request_metrics {
public:
  /// Upper bounds of the request duration histogram, in microseconds.
  static constexpr std::array<std::uint64_t, 12> bounds_us{
    100, 250, 500, 1000, 2000, 5000, 10000, 25000, 100000, 1000000, 10000000, 60000000};
  /// One answered request: its route, status and time from its having been
  /// read to its answer being ready (a route handled without a ticket, such
  /// as a transport error, passes 0).
  void count(const std::string& route, unsigned status, std::chrono::microseconds took);
  std::string prometheus() const;

private:
  struct route_stats {
    std::map<unsigned, std::uint64_t> by_status;
    std::array<std::uint64_t, bounds_us.size()> buckets{};  // not cumulative
    std::uint64_t sum_us = 0, count = 0;
  };
  mutable std::mutex mtx_;
  std::map<std::string, route_stats, std::less<>> routes_;
};

/// Hands late replies to the HTTP requests whose ticks deferred them
/// (ctx.defer_reply): the later tick that answers with ctx.reply_to commits
/// them by the request's trigger seq. One tick observer for all requests,
/// keyed by (agent, seq); waiting is a callback, so that no thread is parked
/// per request.
class reply_hub {
public:
  using key = std::pair<std::string, std::uint64_t>;
  using clock = std::chrono::steady_clock;
  /// Gets an event whose `reply` answers request `k`, or nullopt once
  /// `deadline` passed.
  using callback = std::function<void(std::optional<tick_event>)>;
  explicit reply_hub(node& n);
  ~reply_hub();
  /// Calls `cb` once, from the thread of the tick that commits the reply
  /// (it must not block); wait before that tick can commit. A waiter past
  /// its deadline is dropped, with cb(nullopt), the next time the hub is
  /// used; whoever waits keeps its own timer.
  void await(const key& k, clock::time_point deadline, callback cb);
  /// Drops every waiter without calling it (the server is going away).
  void drop_waiters();

private:
  struct waiter {
    clock::time_point deadline;
    callback cb;
  };
  void on_tick(const tick_event& ev);
  // Moves the waiters past their deadline into `expired`. Under mtx_.
  void sweep(clock::time_point now, std::vector<callback>& expired);

  node& node_;
  std::uint64_t observer_ = 0;
  std::mutex mtx_;
  std::map<key, waiter> waiting_;
  std::multimap<clock::time_point, key> deadlines_;
};

struct router_options {
  std::string admin_token;
  /// Ed25519 secret key (64 bytes) that signs capability tokens; empty: an
  /// ephemeral key.
  std::string node_key;
  std::chrono::milliseconds reply_timeout{30'000};
  std::size_t max_body_bytes = std::size_t{1} << 20;
  /// Serves the nostr/ files when set.
  nostr_driver* nostr = nullptr;
  /// Called after the router terminated an agent (its streams then end).
  std::function<void(const std::string&)> on_deleted;
};

class router {
public:
  router(node& n, router_options options, request_metrics& metrics);

  /// Handles one request; `done` gets the response exactly once, before
  /// handle returns or later from another thread (an agent's reply after its
  /// tick commits). Requests for which may_block() is true may block the
  /// calling thread (durable writes, store reads): call them off the I/O
  /// threads. While a request waits for an agent, the returned ticket can
  /// give up waiting (its cancel answers 504 at once); else it is null.
  using reply_fn = std::function<void(response)>;
  class ticket;
  std::shared_ptr<ticket> handle(const request& req, reply_fn done);
  /// Blocking form, for tests and fuzzers: waits up to the reply timeout.
  response handle(const request& req);
  /// False for the routes that never block: /healthz, /metrics and the
  /// agent-handled /a/{id} (which waits through a callback).
  static bool may_block(const request& req);
  /// Whether `req` (its head is enough) is an import of a bundle by the
  /// admin: POST /v1/agents/import with the admin token. Its body may be
  /// larger than other bodies.
  bool admin_import(const request& req) const;
  /// The 401 or 403 for `req` (its head is enough) if its route needs a
  /// token and it carries no valid one, or one that may not send it whatever
  /// the body; nullopt otherwise (the probes, and requests the router
  /// answers otherwise). For a body not sent yet.
  std::optional<response> refused_early(const request& req) const;
  /// For the server's stop, once no request can arrive: drops the requests
  /// still waiting for agents without answering them (their answers would
  /// go to I/O threads that are gone). Returns once no answer is under way.
  void quiesce();

  /// Up to `limit` events of the stream `r` names, from id `from` on;
  /// not_found once its agent is gone.
  expected<std::vector<stream_event>> read_stream(const response& r, std::uint64_t from,
                                                  std::size_t limit);

  /// Every route as "METHOD /path/{param}", for the OpenAPI check.
  static std::vector<std::string> routes();

  /// Percent-decodes a path segment (`+` is itself); nullopt on bad escapes.
  static std::optional<std::string> url_decode(std::string_view s);
  /// Decodes a query name or value: as url_decode, and `+` is a space
  /// (application/x-www-form-urlencoded, as browsers and curl -G send it).
  static std::optional<std::string> query_decode(std::string_view s);
  /// A request target (origin form) as routes are matched on it: the
  /// percent-encoded unreserved characters of its path decoded (RFC 3986,
  /// 6.2.2.2: `%69nbox` is `inbox`, `%2E%2E` is `..`); other escapes (`%2F`,
  /// `%25`, ...) stay, for url_decode segment by segment. Nullopt for a
  /// target with a fragment, which RFC 9112, 3.2 does not allow.
  static std::optional<std::string> normalize_target(std::string target);
  /// Where a stream starts: after Last-Event-ID if the request has one (a
  /// client resuming), else at from_seq, else at `dflt`; nullopt if either is
  /// not a number.
  static std::optional<std::uint64_t> stream_start(const request& req,
                                                   const std::map<std::string, std::string>& query,
                                                   std::uint64_t dflt);

private:
  // Answers through `t` (and returns an empty response) or returns the
  // response.
  response dispatch(const request& req, std::string_view path,
                    const std::map<std::string, std::string>& query,
                    const std::shared_ptr<ticket>& t);
  struct principal {
    bool authenticated = false;
    bool admin = false;
    token_claims claims;
    std::string problem;
    bool cross_site_cookie = false;  ///< the token came in the cookie of another origin's request
  };
  principal authenticate(const request& req, const std::map<std::string, std::string>& query) const;
  /// Where a request under /v1 or /a goes, from its method and path alone.
  /// The views point into the request's target.
  struct route {
    enum class kind { agent_route, tokens, control, agents, import, agent } what;
    std::string id;           ///< agent_route, agent
    std::string_view second;  ///< the segment after /v1
    std::string_view rest;    ///< after the id (agent, agent_route) or `second`
    std::string label;        ///< the route's name in metrics
  };
  /// The route of `req`, or its 400 (invalid agent id) or 404.
  static std::variant<route, response> resolve(const request& req, std::string_view path);
  /// The 403 for `who` on `to`, or nullopt if it may.
  std::optional<response> refusal(const route& to, const principal& who,
                                  std::string_view method, std::string_view body) const;
  response tokens(const request& req);
  response import_bundle(const request& req);
  response agents(const request& req, const std::map<std::string, std::string>& query);
  response agent(const request& req, const std::string& id, std::string_view rest,
                 const std::map<std::string, std::string>& query);
  /// node::terminate, then options_.on_deleted.
  error terminate(const std::string& id);
  /// The answer that opens a stream of `kind` on `agent` from `from`.
  response stream_of(stream_kind kind, const std::string& agent, std::uint64_t from) const;
  response fs(const request& req, const std::string& id, std::string_view path,
              const std::map<std::string, std::string>& query);
  void agent_route(const request& req, const std::string& id, std::string_view rest,
                   std::string_view query, const std::shared_ptr<ticket>& t);
  response enqueue(const request& req, const std::string& id);
  response identity_file(const request& req, const std::string& id,
                         const std::vector<std::string>& parts);
  response nostr_file(const request& req, const std::string& id,
                      const std::vector<std::string>& parts);
  // router_services.cpp: wallet/, compute/, containers/, limits, and the
  // admin's /v1/approvals, /v1/killswitch, /v1/policy, /v1/compute/prices.
  response services_file(const request& req, const std::string& id,
                         const std::vector<std::string>& parts,
                         const std::map<std::string, std::string>& query);
  response control(const request& req, std::string_view second, std::string_view rest,
                   const std::map<std::string, std::string>& query);
  expected<std::vector<stream_event>> read_job_stream(const std::string& key, std::uint64_t from,
                                                      std::size_t limit);
  response metrics_text();

  node& node_;
  router_options options_;
  token_authority authority_;
  request_metrics& metrics_;
  reply_hub replies_;
  // Open until quiesce(): an agent's answer reaches its ticket only while
  // open, under the lock (recursive: answering a deferred request waits in
  // the hub, which may answer expired requests on the spot).
  struct life {
    std::recursive_mutex mtx;
    bool open = true;
  };
  std::shared_ptr<life> life_ = std::make_shared<life>();
};

/// A request that waits for an agent's reply (see router::handle). Thread
/// safe; the first answer wins.
class router::ticket {
public:
  ticket(request_metrics& metrics, std::chrono::steady_clock::time_point started, reply_fn done)
    : metrics_(metrics), started_(started), done_(std::move(done)) {}
  /// Gives up waiting: answers 504 REPLY_TIMEOUT now, unless answered already.
  /// A request the agent has not run yet may still run.
  void cancel();
  /// The server is stopping: answers 503 SHUTTING_DOWN now, unless answered
  /// already, with `details.applied`: true if the agent ran the request and
  /// deferred its reply, false if it did not run it and will not (`drained`:
  /// node::drain completed, so no tick runs any more), null if it may still
  /// run.
  void shut_down(bool drained);
  /// Answers (counted in the route metrics); later answers are dropped.
  void finish(response r);
  /// The agent's tick deferred its reply to request `seq` (ctx.defer_reply).
  void deferred(std::uint64_t seq);

private:
  request_metrics& metrics_;
  std::chrono::steady_clock::time_point started_;
  std::mutex mtx_;
  reply_fn done_;
  std::optional<std::uint64_t> seq_;
};

}  // namespace ticktock::drivers
