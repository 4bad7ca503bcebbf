// ticktock: the command-line client of ticktockd's HTTP API.
//
//   ticktock [--url URL] [--token TOKEN] [--json] COMMAND [ARGS] [OPTIONS]
//
// Exit codes: 0 ok, 1 the server answered an error (one line on stderr:
// "ticktock: CODE: message"), 2 usage error, 3 cannot reach the server.
// docs/cli.md documents every command.

#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_http.hpp"
#include "ticktock/runtime/request_id.hpp"
#include "ticktock/runtime/text.hpp"

namespace po = boost::program_options;
namespace json = boost::json;
using namespace ticktock::cli;

namespace {

// -- exit codes and failures ---------------------------------------------------

enum exit_code : int { exit_ok = 0, exit_server = 1, exit_usage = 2, exit_unreachable = 3 };

int fail(int code, const std::string& line) {
  std::fprintf(stderr, "ticktock: %s\n", line.c_str());
  return code;
}

// One line, whatever the message holds: line breaks and other control
// characters (an escape sequence from a server's message) become spaces.
std::string one_line(std::string s) {
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = ' ';
  return s;
}

// "CODE: message" from the API's error body, or a stand-in for a body that
// is not one (a proxy's page, an empty 405).
std::string error_line(const http_answer& a) {
  boost::system::error_code ec;
  auto v = json::parse(a.body, ec);
  if (!ec && v.is_object())
    if (auto* e = v.as_object().if_contains("error"); e && e->is_object()) {
      auto& o = e->as_object();
      auto* code = o.if_contains("code");
      auto* msg = o.if_contains("message");
      if (code && code->is_string())
        return one_line(std::string{code->as_string()} + ": "
                        + (msg && msg->is_string() ? std::string{msg->as_string()} : ""));
    }
  auto text = a.body.substr(0, 200);
  return one_line("HTTP_" + std::to_string(a.status) + ": "
                  + (text.empty() ? "the server answered " + std::to_string(a.status) : text));
}

// -- numeric options -------------------------------------------------------------

// A count, seq or index option: decimal digits only. Program_options' own
// unsigned parsing takes "-1" as the largest value, which turned
// `--limit=-1` into "no limit" and `--after=-1` into a confusing server error.
struct whole {
  std::uint64_t n = 0;
};

void validate(boost::any& out, const std::vector<std::string>& values, whole*, int) {
  po::validators::check_first_occurrence(out);
  const auto& s = po::validators::get_single_string(values);
  whole w;
  bool ok = !s.empty() && s.size() <= 20
            && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (ok) {
    errno = 0;
    char* end = nullptr;
    auto v = std::strtoull(s.c_str(), &end, 10);
    // The API's numbers are int64.
    ok = errno == 0 && end == s.c_str() + s.size() && v <= 9223372036854775807ull;
    w.n = v;
  }
  if (!ok) {
    po::error_with_option_name e{
      "the argument ('%value%') for option '%canonical_option%' must be a whole number "
      "from 0 to 9223372036854775807"};
    e.set_substitute("value", s);
    throw e;
  }
  out = w;
}

std::uint64_t whole_value(const po::variables_map& vm, const char* name) {
  return vm[name].as<whole>().n;
}

// -- output helpers ------------------------------------------------------------

void pretty(std::ostream& os, const json::value& v, std::string& indent) {
  switch (v.kind()) {
    case json::kind::object: {
      auto& o = v.get_object();
      if (o.empty()) {
        os << "{}";
        return;
      }
      os << "{\n";
      indent += "  ";
      for (auto i = o.begin(); i != o.end(); ++i) {
        os << indent << json::serialize(json::value(i->key())) << ": ";
        pretty(os, i->value(), indent);
        if (std::next(i) != o.end())
          os << ",";
        os << "\n";
      }
      indent.resize(indent.size() - 2);
      os << indent << "}";
      return;
    }
    case json::kind::array: {
      auto& a = v.get_array();
      if (a.empty()) {
        os << "[]";
        return;
      }
      os << "[\n";
      indent += "  ";
      for (auto i = a.begin(); i != a.end(); ++i) {
        os << indent;
        pretty(os, *i, indent);
        if (std::next(i) != a.end())
          os << ",";
        os << "\n";
      }
      indent.resize(indent.size() - 2);
      os << indent << "]";
      return;
    }
    default:
      os << ticktock::json_text(v);
  }
}

std::string pretty(const json::value& v) {
  std::ostringstream os;
  std::string indent;
  pretty(os, v, indent);
  return os.str();
}

// A field as text for tables: strings bare, the rest as JSON, "-" if absent.
std::string text(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null())
    return "-";
  if (v->is_string())
    return std::string{v->as_string()};
  return ticktock::json_text(*v);
}

std::int64_t number(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v)
    return 0;
  if (v->is_int64())
    return v->as_int64();
  if (v->is_uint64())
    return static_cast<std::int64_t>(v->as_uint64());
  return 0;
}

// Microseconds since the epoch as "2024-05-01T12:00:00.123456Z"; "-" for 0.
std::string timestamp(std::int64_t us) {
  if (us <= 0)
    return "-";
  std::time_t secs = us / 1'000'000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%s.%06lldZ", buf, static_cast<long long>(us % 1'000'000));
  return out;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      width.resize(std::max(width.size(), r.size()));
      width[i] = std::max(width[i], r[i].size());
    }
  for (auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size())
        line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    std::cout << line << "\n";
  }
}

std::optional<std::string> read_input(const std::string& name, std::string& why) {
  std::ostringstream ss;
  if (name == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  // A directory opens as a stream but reads as nothing: refuse it rather
  // than send an empty body.
  std::error_code ec;
  if (std::filesystem::is_directory(name, ec)) {
    why = "cannot read " + name + ": it is a directory";
    return std::nullopt;
  }
  errno = 0;
  std::ifstream in{name, std::ios::binary};
  if (!in) {
    why = "cannot read " + name + (errno ? std::string{": "} + std::strerror(errno) : "");
    return std::nullopt;
  }
  ss << in.rdbuf();
  if (in.bad()) {
    why = "cannot read " + name;
    return std::nullopt;
  }
  return ss.str();
}

// -- commands ------------------------------------------------------------------

struct invocation;
using handler = int (*)(invocation&);

struct command {
  const char* name;     ///< "agents ls"
  const char* args;     ///< "ID TYPE", for the usage line
  std::size_t min_args;
  std::size_t max_args;
  const char* summary;  ///< one line
  const char* details;  ///< more lines for --help, may be ""
  void (*options)(po::options_description&);
  handler run;
};

struct invocation {
  const command& cmd;
  po::variables_map vm;
  std::vector<std::string> args;
  bool json = false;
  std::optional<http_client> client;
  bool has_token = false;

  const std::string& arg(std::size_t i) const { return args.at(i); }

  // The server's one-line reason; a 401 to a request without a token says
  // how the CLI takes one rather than how HTTP carries it.
  std::string reason(const http_answer& a) const {
    if (a.status == 401 && !has_token)
      return "UNAUTHORIZED: no token given: pass --token TOKEN or set TICKTOCK_TOKEN (ticktockd "
             "writes its admin token to DATA/admin.token)";
    return error_line(a);
  }

  int usage(const std::string& why) const {
    return fail(exit_usage, "usage: " + why + " (see ticktock " + cmd.name + " --help)");
  }

  // A local file that cannot be read or written: exit 2 like a bad argument.
  int local(const std::string& why) const { return fail(exit_usage, one_line(why)); }

  // Sends a request; on a 2xx answer returns it, otherwise prints the
  // one-line reason and sets rc.
  std::optional<http_answer> call(std::string_view method, const std::string& target, int& rc,
                                  std::string body = {}, const header_list& headers = {}) {
    auto r = client->request(method, target, std::move(body), headers);
    if (!r.answer) {
      rc = fail(exit_unreachable, "cannot reach " + client->url() + ": " + one_line(r.why));
      return std::nullopt;
    }
    if (r.answer->status < 200 || r.answer->status >= 300) {
      rc = fail(exit_server, reason(*r.answer));
      return std::nullopt;
    }
    return std::move(r.answer);
  }

  // call() and parse the answer as JSON.
  std::optional<json::value> call_json(std::string_view method, const std::string& target, int& rc,
                                       std::string body = {}, const header_list& headers = {}) {
    auto a = call(method, target, rc, std::move(body), headers);
    if (!a)
      return std::nullopt;
    boost::system::error_code ec;
    auto v = json::parse(a->body, ec);
    if (ec) {
      rc = fail(exit_server, "BAD_ANSWER: the server's answer is not JSON: " + ec.message());
      return std::nullopt;
    }
    return v;
  }

  // --json: the server's answer, one line.
  void print_json(const json::value& v) const { std::cout << ticktock::json_text(v) << "\n"; }
};

// An agent path "ID/seg/seg" as its API target "/v1/agents/ID/fs/seg/seg".
struct agent_path {
  std::string id;
  std::vector<std::string> segments;

  std::string target() const {
    std::string t = "/v1/agents/" + url_encode(id) + "/fs/";
    for (std::size_t i = 0; i < segments.size(); ++i)
      t += (i ? "/" : "") + url_encode(segments[i]);
    return t;
  }
  std::string joined() const {
    std::string s;
    for (auto& seg : segments)
      s += (s.empty() ? "" : "/") + seg;
    return s;
  }
};

std::optional<agent_path> split_path(std::string_view p) {
  while (!p.empty() && p.front() == '/')
    p.remove_prefix(1);
  agent_path out;
  auto slash = p.find('/');
  out.id = std::string{p.substr(0, slash)};
  if (out.id.empty())
    return std::nullopt;
  auto rest = slash == std::string_view::npos ? std::string_view{} : p.substr(slash + 1);
  while (!rest.empty()) {
    auto s = rest.find('/');
    auto seg = rest.substr(0, s);
    if (!seg.empty())
      out.segments.emplace_back(seg);
    rest = s == std::string_view::npos ? std::string_view{} : rest.substr(s + 1);
  }
  return out;
}

std::string agent_target(const std::string& id) { return "/v1/agents/" + url_encode(id); }

void print_status(const json::object& s) {
  std::vector<std::vector<std::string>> rows{
    {"id", text(s, "id")},
    {"type", text(s, "type")},
    {"state", text(s, "state")},
    {"last_tick", text(s, "last_tick")},
    {"last_tick_time", timestamp(number(s, "last_tick_time_us"))},
    {"queue_depth", text(s, "queue_depth")},
    {"summary", text(s, "summary")}};
  if (s.contains("error"))
    rows.push_back({"error", one_line(text(s, "error"))});
  print_table(rows);
}

// -- agents ls | create | rm ----------------------------------------------------

void agents_ls_options(po::options_description& d) {
  d.add_options()("limit", po::value<whole>(), "show at most N agents (default: all)")(
    "after", po::value<std::string>(), "start after this agent id");
}

// Every agent after `after` (up to `limit`), following the server's pages.
std::optional<json::array> list_agents(invocation& in, std::optional<std::size_t> limit,
                                       std::string after, int& rc) {
  json::array all;
  // Pages of up to 1000; each page is bounded, and `next` only moves forward.
  for (;;) {
    std::size_t page = std::min<std::size_t>(1000, limit ? *limit - all.size() : 1000);
    if (page == 0)
      break;
    std::string target = "/v1/agents?limit=" + std::to_string(page);
    if (!after.empty())
      target += "&after=" + url_encode(after);
    auto v = in.call_json("GET", target, rc);
    if (!v)
      return std::nullopt;
    auto& o = v->as_object();
    for (auto& a : o.at("agents").as_array())
      all.push_back(a);
    auto& next = o.at("next");
    if (!next.is_string() || std::string{next.as_string()} <= after)
      break;
    after = std::string{next.as_string()};
  }
  return all;
}

int agents_ls(invocation& in) {
  int rc = exit_ok;
  std::optional<std::size_t> limit;
  if (in.vm.count("limit"))
    limit = whole_value(in.vm, "limit");
  auto list =
    list_agents(in, limit, in.vm.count("after") ? in.vm["after"].as<std::string>() : "", rc);
  if (!list)
    return rc;
  auto& all = *list;
  if (in.json) {
    in.print_json(json::object{{"agents", all}});
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows{{"ID", "TYPE", "STATE", "TICKS", "QUEUE", "SUMMARY"}};
  for (auto& a : all) {
    auto& o = a.as_object();
    rows.push_back({text(o, "id"), text(o, "type"), text(o, "state"), text(o, "last_tick"),
                    text(o, "queue_depth"), text(o, "summary")});
  }
  print_table(rows);
  return exit_ok;
}

void agents_create_options(po::options_description& d) {
  d.add_options()("config", po::value<std::string>(), "the agent's config string (often JSON)");
}

int agents_create(invocation& in) {
  int rc = exit_ok;
  json::object body{{"id", in.arg(0)}, {"type", in.arg(1)}};
  if (in.vm.count("config"))
    body["config"] = in.vm["config"].as<std::string>();
  auto v = in.call_json("POST", "/v1/agents", rc, ticktock::json_text(body),
                        {{"Content-Type", "application/json"}});
  if (!v)
    return rc;
  if (in.json) {
    in.print_json(*v);
    return exit_ok;
  }
  auto& o = v->as_object();
  std::cout << "created " << text(o, "id") << " (type " << text(o, "type") << ", state "
            << text(o, "state") << ")\n";
  return exit_ok;
}

int agents_rm(invocation& in) {
  int rc = exit_ok;
  auto v = in.call_json("DELETE", agent_target(in.arg(0)), rc);
  if (!v)
    return rc;
  if (in.json)
    in.print_json(*v);
  else
    std::cout << "terminated " << in.arg(0) << "\n";
  return exit_ok;
}

// -- status, send, tick ----------------------------------------------------------

int status(invocation& in) {
  int rc = exit_ok;
  auto v = in.call_json("GET", agent_target(in.arg(0)), rc);
  if (!v)
    return rc;
  if (in.json)
    in.print_json(*v);
  else
    print_status(v->as_object());
  return exit_ok;
}

void send_options(po::options_description& d) {
  d.add_options()("idempotency-key", po::value<std::string>(),
                  "deduplicates retries: a repeat gets the first send's seq")(
    "envelope", po::bool_switch(),
    "JSON is a signed envelope (from another node's ID/identity/envelope): checked, and "
    "refused as REPLAYED_ENVELOPE the second time");
}

int send(invocation& in) {
  int rc = exit_ok;
  std::string why;
  auto body = in.arg(1) == "-" ? read_input("-", why) : std::optional<std::string>{in.arg(1)};
  if (!body)
    return in.local(why);
  bool envelope = in.vm["envelope"].as<bool>();
  if (envelope && in.vm.count("idempotency-key"))
    return in.usage("an envelope's id is its idempotency key: --envelope takes no --idempotency-key");
  header_list headers{
    {"Content-Type", envelope ? "application/ticktock-envelope+json" : "application/json"}};
  if (in.vm.count("idempotency-key"))
    headers.emplace_back("Idempotency-Key", in.vm["idempotency-key"].as<std::string>());
  auto v = in.call_json("POST", agent_target(in.arg(0)) + "/inbox", rc, std::move(*body), headers);
  if (!v)
    return rc;
  if (in.json) {
    in.print_json(*v);
    return exit_ok;
  }
  auto& o = v->as_object();
  if (auto* d = o.if_contains("duplicate"); d && d->is_bool() && d->as_bool())
    std::cout << "duplicate of seq " << text(o, "seq") << " (already accepted)\n";
  else
    std::cout << "accepted seq " << text(o, "seq") << "\n";
  return exit_ok;
}

int tick(invocation& in) {
  int rc = exit_ok;
  auto v = in.call_json("PUT", agent_target(in.arg(0)) + "/fs/ctl", rc, "tick",
                        {{"Content-Type", "text/plain"}});
  if (!v)
    return rc;
  if (in.json)
    in.print_json(*v);
  else
    std::cout << "tick queued (seq " << text(v->as_object(), "seq") << ")\n";
  return exit_ok;
}

// -- the agent filesystem: cat, write, ls ----------------------------------------

void cat_options(po::options_description& d) {
  d.add_options()("query,q", po::value<std::vector<std::string>>()->composing(),
                  "KEY=VALUE added to the query (repeatable), e.g. -q from_seq=3 -q limit=10");
}

std::optional<std::string> query_string(const invocation& in, std::string& why) {
  std::string q;
  if (!in.vm.count("query"))
    return q;
  for (auto& kv : in.vm["query"].as<std::vector<std::string>>()) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      why = "--query takes KEY=VALUE, got '" + kv + "'";
      return std::nullopt;
    }
    q += (q.empty() ? "?" : "&") + url_encode(kv.substr(0, eq)) + "=" + url_encode(kv.substr(eq + 1));
  }
  return q;
}

// Prints a file's content: JSON pretty (or as received with --json); a
// {"key","value"} file as its value when that is text; other bytes raw.
void print_file(const invocation& in, const http_answer& a) {
  boost::system::error_code ec;
  auto v = a.content_type.starts_with("application/json") ? json::parse(a.body, ec) : json::value{};
  if (a.content_type.starts_with("application/json") && !ec) {
    if (in.json) {
      in.print_json(v);
      return;
    }
    if (v.is_object() && v.as_object().size() == 2 && v.as_object().contains("key")) {
      if (auto* val = v.as_object().if_contains("value"); val && val->is_string()) {
        std::string s{val->as_string()};
        std::cout << s << (s.ends_with('\n') ? "" : "\n");
        return;
      }
    }
    std::cout << pretty(v) << "\n";
    return;
  }
  std::cout << a.body;
  std::cout.flush();
}

int cat(invocation& in) {
  int rc = exit_ok;
  auto p = split_path(in.arg(0));
  if (!p)
    return in.usage("PATH is ID/path, e.g. demo-counter/status");
  std::string why;
  auto q = query_string(in, why);
  if (!q)
    return in.usage(why);
  auto a = in.call("GET", p->target() + *q, rc);
  if (!a)
    return rc;
  print_file(in, *a);
  return exit_ok;
}

void write_options(po::options_description& d) {
  d.add_options()("method", po::value<std::string>()->default_value("PUT"),
                  "PUT or POST (deadletter requeue is POST)");
}

int write(invocation& in) {
  int rc = exit_ok;
  auto p = split_path(in.arg(0));
  if (!p || p->segments.empty())
    return in.usage("PATH is ID/file, e.g. demo-counter/ctl");
  auto method = in.vm["method"].as<std::string>();
  std::transform(method.begin(), method.end(), method.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (method != "PUT" && method != "POST")
    return in.usage("--method is PUT or POST");
  std::string why;
  auto body = in.arg(1) == "-" ? read_input("-", why) : std::optional<std::string>{in.arg(1)};
  if (!body)
    return in.local(why);
  boost::system::error_code ec;
  json::parse(*body, ec);
  auto a = in.call(method, p->target(), rc, std::move(*body),
                   {{"Content-Type", ec ? "text/plain" : "application/json"}});
  if (!a)
    return rc;
  print_file(in, *a);
  return exit_ok;
}

// Every entry of a paged listing (the outbox: from_seq, "events", "seq"; the
// trajectory: from, "records", "index") as one {"<field>":[...]} object. Each
// page asks from one past the last key seen, so it only moves forward.
std::optional<json::value> list_pages(invocation& in, const std::string& target,
                                      std::string_view from_param, std::string_view field,
                                      std::string_view key, int& rc) {
  constexpr std::size_t page = 1000;
  json::array all;
  std::uint64_t from = 0;
  for (;;) {
    auto v = in.call_json("GET",
                          target + "?" + std::string{from_param} + "=" + std::to_string(from)
                            + "&limit=" + std::to_string(page),
                          rc);
    if (!v)
      return std::nullopt;
    auto& got = v->as_object().at(field).as_array();
    std::uint64_t next = from;
    for (auto& e : got) {
      next = static_cast<std::uint64_t>(number(e.as_object(), key)) + 1;
      all.push_back(e);
    }
    if (got.size() < page || next <= from)
      break;
    from = next;
  }
  return json::object{{field, std::move(all)}};
}

int ls(invocation& in) {
  int rc = exit_ok;
  if (in.args.empty()) {  // the agents' ids
    auto all = list_agents(in, std::nullopt, "", rc);
    if (!all)
      return rc;
    if (in.json) {
      in.print_json(json::object{{"agents", *all}});
      return exit_ok;
    }
    for (auto& a : *all)
      std::cout << text(a.as_object(), "id") << "/\n";
    return exit_ok;
  }
  auto p = split_path(in.arg(0));
  if (!p)
    return in.usage("PATH is ID/ or ID/path");
  // The outbox and the trajectory come a page at a time (1000 by default):
  // follow the pages so that ls shows every entry.
  auto what = p->joined();
  std::optional<json::value> v;
  if (what == "outbox")
    v = list_pages(in, p->target(), "from_seq", "events", "seq", rc);
  else if (what == "logs/trajectory")
    v = list_pages(in, p->target(), "from", "records", "index", rc);
  else
    v = in.call_json("GET", p->target(), rc);
  if (!v)
    return rc;
  if (in.json) {
    in.print_json(*v);
    return exit_ok;
  }
  std::vector<std::string> names;
  auto add_keys = [&](const json::value* x) {
    if (x && x->is_object())
      for (auto& [k, val] : x->as_object())
        names.emplace_back(k);
    return x && x->is_object();
  };
  auto add_field = [&](const json::value* x, std::string_view field) {
    if (!x || !x->is_array())
      return false;
    for (auto& e : x->as_array()) {
      if (e.is_string())
        names.emplace_back(e.as_string());
      else if (e.is_object())
        names.push_back(text(e.as_object(), field));
    }
    return true;
  };
  auto& o = v->as_object();
  bool listed = add_field(o.if_contains("entries"), "id") || add_keys(o.if_contains("entries"))
                || add_keys(o.if_contains("goals")) || add_field(o.if_contains("mounts"), "path")
                || add_field(o.if_contains("events"), "seq")
                || add_field(o.if_contains("records"), "index");
  if (!listed)  // a plain file lists as its own name
    names.push_back(p->segments.empty() ? p->id : p->segments.back());
  for (auto& n : names)
    std::cout << n << "\n";
  return exit_ok;
}

// -- tail ------------------------------------------------------------------------

void tail_options(po::options_description& d) {
  d.add_options()("from", po::value<whole>(), "first seq (outbox) or index (logs/trace) to show "
                                              "(default 0: all)")(
    "after", po::value<whole>(),
    "show the events after this seq or index (sent as Last-Event-ID)")(
    "max-seconds", po::value<double>(), "stop after this long, exit 0 (default: follow forever)")(
    "max-events", po::value<whole>(), "stop after this many events, exit 0");
}

int tail(invocation& in) {
  using clock = http_client::clock;
  auto p = split_path(in.arg(0));
  auto what = p ? p->joined() : std::string{};
  if (!p || (what != "outbox" && what != "logs/trace"))
    return in.usage("tail follows ID/outbox or ID/logs/trace");
  if (in.vm.count("from") && in.vm.count("after"))
    return in.usage("--from and --after exclude each other");
  auto deadline = clock::time_point::max();
  if (in.vm.count("max-seconds")) {
    auto s = in.vm["max-seconds"].as<double>();
    if (!(s > 0) || s > 1e7)
      return in.usage("--max-seconds must be more than 0 and at most 10000000");
    deadline = clock::now() + std::chrono::microseconds{static_cast<std::int64_t>(s * 1e6)};
  }
  std::optional<std::uint64_t> max_events;
  if (in.vm.count("max-events"))
    max_events = whole_value(in.vm, "max-events");
  if (max_events && *max_events == 0)
    return exit_ok;

  // The last event id seen drives resumption: it goes out as Last-Event-ID
  // on every reconnect, and anything at or below it is never printed again.
  std::optional<std::uint64_t> last;
  if (in.vm.count("after"))
    last = whole_value(in.vm, "after");
  std::uint64_t shown = 0;
  bool delivered = false;
  auto on_event = [&](const sse_event& ev) {
    std::optional<std::uint64_t> id;
    if (!ev.id.empty() && std::all_of(ev.id.begin(), ev.id.end(), [](char c) { return c >= '0' && c <= '9'; })
        && ev.id.size() <= 19)
      id = std::stoull(ev.id);
    if (id && last && *id <= *last)
      return true;
    delivered = true;
    if (in.json) {
      json::object o;
      o["id"] = id ? json::value(*id) : json::value(ev.id);
      o["event"] = ev.event;
      o["data"] = ev.data;
      std::cout << ticktock::json_text(o) << "\n";
    } else {
      std::cout << (ev.id.empty() ? "-" : ev.id) << "  " << ev.data << "\n";
    }
    if (!std::cout.flush())
      return false;  // main reports the failed write
    if (id)
      last = id;
    ++shown;
    return !(max_events && shown >= *max_events);
  };

  const auto base = p->target();
  const std::chrono::milliseconds idle{45'000};  // three of the server's keep-alive periods
  std::chrono::milliseconds backoff{100};
  bool connected_once = false;
  // "stream dropped; reconnecting" waits for the reconnection's outcome: it
  // is said when that opens a stream or fails in transport, and not when it
  // gets an error answer (the agent was deleted), which alone then ends tail
  // with its one line.
  std::optional<std::string> dropped_notice;
  auto say_dropped = [&] {
    if (dropped_notice)
      std::fprintf(stderr, "ticktock: stream dropped (%s); reconnecting\n",
                   dropped_notice->c_str());
    dropped_notice.reset();
  };
  // Which agent of the id the stream follows (X-Agent-Created): a
  // reconnection that finds another (deleted and created again meanwhile)
  // ends tail, rather than going on with the new one's events past `last`.
  std::optional<std::string> created;
  auto on_open = [&](std::string_view agent_created) {
    if (created && !agent_created.empty() && *created != agent_created)
      return false;
    if (!agent_created.empty())
      created = std::string{agent_created};
    say_dropped();
    return true;
  };
  for (;;) {
    auto target = base;
    header_list headers;
    if (last)
      headers.emplace_back("Last-Event-ID", std::to_string(*last));
    else if (in.vm.count("from"))
      target += "?from_seq=" + std::to_string(whole_value(in.vm, "from"));
    delivered = false;
    auto r = in.client->stream(target, headers, deadline, idle, on_event, on_open);
    // The first attempt decides whether the server can be reached at all: a
    // refused connection, or one that gets no answer (not even an error)
    // before the timeout or --max-seconds, exits 3. Later attempts retry.
    if (!connected_once && !r.opened && r.end != stream_end::http_error) {
      auto why = r.end == stream_end::deadline && r.why.empty() ? "no answer within --max-seconds"
                                                                 : r.why;
      return fail(exit_unreachable, "cannot reach " + in.client->url() + ": " + one_line(why));
    }
    bool first = !connected_once;
    connected_once = connected_once || r.opened;
    switch (r.end) {
      case stream_end::deadline:
        say_dropped();
        return exit_ok;
      case stream_end::http_error:
        // An answer, not a transport failure (the agent is gone, the token
        // is refused, ...): retrying would get the same answer again.
        return fail(exit_server, in.reason(*r.answer));
      case stream_end::stopped:
        return fail(exit_server, "AGENT_REPLACED: agent '" + p->id
                                   + "' was deleted while the stream was down, and another was "
                                     "created under its id: its stream ended");
      case stream_end::refused:
        say_dropped();
        break;
      case stream_end::dropped:
        say_dropped();
        // Said once per working stream that drops, not on every failed retry.
        if (r.opened && (first || delivered))
          dropped_notice = one_line(r.why);
        break;
    }
    if (delivered)
      backoff = std::chrono::milliseconds{100};
    auto now = clock::now();
    if (now >= deadline) {
      say_dropped();
      return exit_ok;
    }
    auto wait = deadline == clock::time_point::max()
                  ? backoff
                  : std::min<clock::duration>(backoff, deadline - now);
    std::this_thread::sleep_for(wait);
    backoff = std::min(backoff * 2, std::chrono::milliseconds{5'000});
  }
}

// -- trajectory and verify ---------------------------------------------------------

void trajectory_options(po::options_description& d) {
  d.add_options()("from", po::value<whole>(), "first record index (default 0)")(
    "limit", po::value<whole>(), "at most N records (default: all)");
}

int trajectory(invocation& in) {
  int rc = exit_ok;
  std::uint64_t from = in.vm.count("from") ? whole_value(in.vm, "from") : 0;
  std::optional<std::size_t> limit;
  if (in.vm.count("limit"))
    limit = whole_value(in.vm, "limit");
  json::array records;
  for (;;) {
    std::size_t page = std::min<std::size_t>(1000, limit ? *limit - records.size() : 1000);
    if (page == 0)
      break;
    auto v = in.call_json("GET",
                          agent_target(in.arg(0)) + "/fs/logs/trajectory?from=" + std::to_string(from)
                            + "&limit=" + std::to_string(page),
                          rc);
    if (!v)
      return rc;
    auto& got = v->as_object().at("records").as_array();
    std::uint64_t next = from;
    for (auto& r : got) {
      next = static_cast<std::uint64_t>(number(r.as_object(), "index")) + 1;
      records.push_back(r);
    }
    if (got.size() < page || next <= from)
      break;
    from = next;
  }
  if (in.json) {
    in.print_json(json::object{{"records", records}});
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows{
    {"INDEX", "TICK", "ATTEMPT", "TRIGGER", "SEQ", "REQUEST", "OUTCOME", "DURATION", "STATE_HASH",
     "LOGS"}};
  for (auto& r : records) {
    auto& o = r.as_object();
    auto outcome = text(o, "outcome");
    if (o.contains("error"))
      outcome += " (" + one_line(text(o, "error")) + ")";
    if (o.contains("corrupt"))
      outcome += " CORRUPT";
    std::string logs;
    if (auto* l = o.if_contains("logs"); l && l->is_array())
      for (auto& e : l->as_array())
        logs += (logs.empty() ? "" : " | ") + one_line(e.is_string() ? std::string{e.as_string()}
                                                                    : ticktock::json_text(e));
    auto hash = text(o, "state_hash");
    char dur[32];
    std::snprintf(dur, sizeof dur, "%.1fus", static_cast<double>(number(o, "duration_ns")) / 1000.0);
    auto request = o.contains("request_id") ? text(o, "request_id") : std::string{"-"};
    auto trigger = text(o, "trigger");
    if (o.contains("alarm"))  // alarm:NAME
      trigger += ":" + one_line(text(o, "alarm"));
    else if (o.contains("ws_event"))  // ws:open, ws:frame, ws:close
      trigger += ":" + one_line(text(o, "ws_event"));
    rows.push_back({text(o, "index"), text(o, "tick"), text(o, "attempt"), trigger,
                    text(o, "trigger_seq"), request, outcome, dur, hash.substr(0, 16), logs});
  }
  print_table(rows);
  return exit_ok;
}

int verify(invocation& in) {
  int rc = exit_ok;
  auto v = in.call_json("GET", agent_target(in.arg(0)) + "/fs/logs/trajectory?verify=1", rc);
  if (!v)
    return rc;
  auto& o = v->as_object();
  auto* okv = o.if_contains("ok");
  bool ok = okv && okv->is_bool() && okv->as_bool();
  if (in.json)
    in.print_json(*v);
  if (!ok) {
    std::string line = "CHAIN_BROKEN: ";
    if (o.contains("first_bad"))
      line += "first bad record " + text(o, "first_bad");
    else
      line += "the chain does not verify";
    if (o.contains("reason"))
      line += ": " + text(o, "reason");
    return fail(exit_server, one_line(line));
  }
  if (!in.json)
    std::cout << "ok: " << text(o, "records") << " trajectory records verified\n";
  return exit_ok;
}

// -- export and import ---------------------------------------------------------------

void export_options(po::options_description& d) {
  d.add_options()("secrets", po::bool_switch(),
                  "include the agent's secret keys, in the clear, so the importing node keeps "
                  "its keys (guard the file)")(
    "allow-broken", po::bool_switch(),
    "write the bundle even if its trajectory does not verify (import refuses such a bundle; "
    "for inspecting a damaged agent)");
}

// Writes `bytes` to a fresh file beside `file` (a symlink's target), created
// exclusively (mkstemp: never through a link an attacker left there), then
// renames it over, so `file` is never half written. Mode 0600 for `secret`
// bytes; otherwise the mode the file had, or 0666 less the umask. A path that
// is there and is not a regular file (a device, a FIFO) is refused: '-' is
// standard output. Returns why it failed, or "".
// The file `file` names: a symlink's target (followed link by link, so that a
// link to a file not there yet names where it will be), or `file` itself.
// Sets `why` if it cannot be written there: a directory that is not there or
// not writable, or something that is not a regular file.
std::filesystem::path output_path(const std::string& file, std::string& why) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target = file;
  for (int hops = 0; fs::is_symlink(target, ec); ++hops) {
    auto next = fs::read_symlink(target, ec);
    if (ec || hops == 40) {
      why = "cannot write " + file + ": " + (ec ? ec.message() : "too many levels of symbolic links");
      return target;
    }
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    why = "cannot write " + file + ": not a regular file (use - for standard output)";
    return target;
  }
  auto dir = target.parent_path().empty() ? fs::path{"."} : target.parent_path();
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    why = "cannot write " + file + ": " + std::strerror(errno);
  return target;
}

std::string write_file_atomically(const std::string& file, const std::string& bytes, bool secret) {
  namespace fs = std::filesystem;
  std::string checked;
  fs::path target = output_path(file, checked);
  if (!checked.empty())
    return checked;
  struct stat st {};
  bool existed = ::stat(target.c_str(), &st) == 0;
  mode_t mode;
  if (secret) {
    mode = 0600;
  } else if (existed) {
    mode = st.st_mode & 07777;
  } else {
    mode_t mask = ::umask(0);
    ::umask(mask);
    mode = 0666 & ~mask;
  }
  auto dir = target.parent_path();
  std::string temp = (dir.empty() ? fs::path{"."} : dir) / ("." + target.filename().string() + ".XXXXXX");
  int fd = ::mkstemp(temp.data());
  if (fd < 0)
    return "cannot write " + file + ": " + std::strerror(errno);
  std::string why;
  for (std::size_t done = 0; why.empty() && done < bytes.size();) {
    auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno != EINTR)
      why = std::strerror(errno);
    else if (n > 0)
      done += static_cast<std::size_t>(n);
  }
  if (why.empty() && ::fchmod(fd, mode) != 0)
    why = std::strerror(errno);
  if (why.empty() && ::fsync(fd) != 0)
    why = std::strerror(errno);
  if (::close(fd) != 0 && why.empty())
    why = std::strerror(errno);
  if (why.empty() && ::rename(temp.c_str(), target.c_str()) != 0)
    why = std::strerror(errno);
  if (why.empty())
    return "";
  ::unlink(temp.c_str());
  return "cannot write " + file + ": " + why;
}

int export_bundle(invocation& in) {
  int rc = exit_ok;
  std::string query;
  if (in.vm["secrets"].as<bool>())
    query += "&secrets=true";
  if (in.vm["allow-broken"].as<bool>())
    query += "&allow_broken=true";
  if (!query.empty())
    query[0] = '?';
  const auto& file = in.arg(1);
  if (file.empty())
    return in.usage("FILE is empty ('-' is standard output)");
  if (std::string why; file != "-" && (output_path(file, why), !why.empty()))
    return in.local(why);  // before the bundle is fetched
  auto a = in.call("GET", agent_target(in.arg(0)) + "/fs/memory/export" + query, rc, {},
                   {{"Accept", "application/octet-stream"}});
  if (!a)
    return rc;
  if (!a->content_type.starts_with("application/octet-stream"))
    return fail(exit_server, "BAD_ANSWER: expected a bundle (application/octet-stream), got '"
                               + a->content_type + "'; does this server support export?");
  if (file == "-") {
    std::cout.write(a->body.data(), static_cast<std::streamsize>(a->body.size()));
    std::cout.flush();
    return exit_ok;
  }
  if (auto why = write_file_atomically(file, a->body, in.vm["secrets"].as<bool>()); !why.empty())
    return in.local(why);
  if (in.json)
    in.print_json(json::object{{"id", in.arg(0)}, {"file", file}, {"bytes", a->body.size()}});
  else
    std::cout << "exported " << in.arg(0) << " to " << file << " (" << a->body.size() << " bytes)\n";
  return exit_ok;
}

int import_bundle(invocation& in) {
  int rc = exit_ok;
  std::string why;
  auto bytes = read_input(in.arg(0), why);
  if (!bytes)
    return in.local(why);
  auto v = in.call_json("POST", "/v1/agents/import", rc, std::move(*bytes),
                        {{"Content-Type", "application/octet-stream"}});
  if (!v)
    return rc;
  if (in.json) {
    in.print_json(*v);
    return exit_ok;
  }
  if (!v->is_object())
    return fail(exit_server, "BAD_ANSWER: the import answer is not the agent's status");
  auto& o = v->as_object();
  std::cout << "imported " << text(o, "id") << " (type " << text(o, "type") << ", state "
            << text(o, "state") << ")\n";
  return exit_ok;
}

// -- the command table -----------------------------------------------------------------

void no_options(po::options_description&) {}

const std::vector<command>& commands() {
  static const std::vector<command> table = {
    {"agents ls", "", 0, 0, "list agents (id, type, state, ticks, queue, summary)",
     "Follows the server's pages until every agent is listed.", agents_ls_options, agents_ls},
    {"agents create", "ID TYPE", 2, 2, "create an agent of a registered type",
     "Types built into ticktockd: counter, echo, fetcher, heartbeat, llm-chat, player,\n"
     "timer.",
     agents_create_options, agents_create},
    {"agents rm", "ID", 1, 1, "terminate an agent and delete its records", "", no_options,
     agents_rm},
    {"status", "ID", 1, 1, "show an agent's status", "", no_options, status},
    {"send", "ID JSON", 2, 2, "put a JSON message in an agent's inbox",
     "JSON '-' reads the message from stdin. Prints the durable inbox seq.", send_options, send},
    {"tick", "ID", 1, 1, "queue a manual tick (writes 'tick' to ID/ctl)", "", no_options, tick},
    {"cat", "PATH", 1, 1, "print a file of the agent filesystem",
     "PATH is ID/file: ID/status, ID/outbox, ID/goals, ID/goals/KEY, ID/memory/NS/KEY,\n"
     "ID/deadletter, ID/logs/trajectory, ID/mounts, ...",
     cat_options, cat},
    {"write", "PATH DATA", 2, 2, "write DATA to a file of the agent filesystem (PUT)",
     "ID/ctl takes tick | hibernate | wake | terminate; ID/goals/KEY takes the goal;\n"
     "ID/inbox takes a JSON message. DATA '-' reads stdin.",
     write_options, write},
    {"ls", "[PATH]", 0, 1, "list a directory of the agent filesystem",
     "'ls ID/' lists an agent's tree; 'ls' alone lists the agents.", no_options, ls},
    {"tail", "PATH", 1, 1, "follow ID/outbox or ID/logs/trace (server-sent events)",
     "Reconnects after a dropped connection, with backoff, resuming after the last\n"
     "event seen (Last-Event-ID), so no outbox event is lost or shown twice.\n"
     "Prints 'ID  DATA' per event, or one JSON object per line with --json.",
     tail_options, tail},
    {"trajectory", "ID", 1, 1, "print an agent's trajectory records", "", trajectory_options,
     trajectory},
    {"verify", "ID", 1, 1, "verify an agent's trajectory: hash chain and signatures",
     "Exits 1 naming the first bad record when the chain or a signature does not verify.",
     no_options, verify},
    {"export", "ID FILE", 2, 2, "save an agent bundle to FILE ('-' for stdout)",
     "Without --secrets the bundle holds the agent's public keys only: the importing\n"
     "node gives it new keys and keeps the old public key to verify old records.\n"
     "Fails (exit 1, nothing written) if the bundle would not import: a trajectory\n"
     "that does not verify; --allow-broken writes it anyway.",
     export_options, export_bundle},
    {"import", "FILE", 1, 1, "create an agent from a bundle file ('-' for stdin)", "", no_options,
     import_bundle},
  };
  return table;
}

// -- argument parsing ------------------------------------------------------------------

po::options_description global_options() {
  po::options_description d{"global options"};
  d.add_options()("help,h", "show help")(
    "url", po::value<std::string>(), "server URL (env TICKTOCK_URL, default http://127.0.0.1:7070)")(
    "token", po::value<std::string>(),
    "the admin token, or an agent's capability token (env TICKTOCK_TOKEN)")(
    "request-id", po::value<std::string>(),
    "X-Request-Id of every request, so the server's log lines and the ticks they set off "
    "carry it (env TICKTOCK_REQUEST_ID; 1 to 128 letters, digits and -_.:/+=@)")(
    "json", po::bool_switch(), "machine output: the server's JSON, one document per line")(
    "timeout", po::value<double>()->default_value(30), "seconds to wait for each answer");
  return d;
}

bool takes_value(std::string_view opt) {
  return opt == "--url" || opt == "--token" || opt == "--request-id" || opt == "--timeout";
}

// Whether some command takes the option `--name` (or `-n`).
bool known_option(std::string_view opt) {
  // Long names are looked up without their dashes, short ones with theirs.
  auto name = opt.starts_with("--") ? opt.substr(2) : opt;
  for (auto& c : commands()) {
    po::options_description own;
    c.options(own);
    if (own.find_nothrow(std::string{name}, false))
      return true;
  }
  return false;
}

void print_main_help(std::ostream& os) {
  os << "usage: ticktock [--url URL] [--token TOKEN] [--json] COMMAND [ARGS] [OPTIONS]\n\n"
        "commands:\n";
  std::size_t w = 0;
  for (auto& c : commands())
    w = std::max(w, std::string{c.name}.size() + 1 + std::string{c.args}.size());
  for (auto& c : commands()) {
    std::string head = std::string{c.name} + (*c.args ? " " : "") + c.args;
    os << "  " << head << std::string(w - head.size() + 2, ' ') << c.summary << "\n";
  }
  os << "\n" << global_options() << "\n"
     << "'ticktock COMMAND --help' shows a command's options.\n"
        "exit codes: 0 ok, 1 the server answered an error, 2 usage error, 3 cannot reach the "
        "server\n";
}

// `ticktock agents --help`: the agents sub-commands.
void print_agents_help(std::ostream& os) {
  os << "usage: ticktock agents ls|create|rm [ARGS] [OPTIONS]\n\n"
        "commands:\n";
  std::size_t w = 0;
  for (auto& c : commands())
    if (std::string_view{c.name}.starts_with("agents "))
      w = std::max(w, std::string{c.name}.size() + 1 + std::string{c.args}.size());
  for (auto& c : commands()) {
    if (!std::string_view{c.name}.starts_with("agents "))
      continue;
    std::string head = std::string{c.name} + (*c.args ? " " : "") + c.args;
    os << "  " << head << std::string(w - head.size() + 2, ' ') << c.summary << "\n";
  }
  os << "\n'ticktock agents COMMAND --help' shows a command's options.\n";
}

void print_command_help(std::ostream& os, const command& c, const po::options_description& own) {
  os << "usage: ticktock " << c.name << (*c.args ? " " : "") << c.args << " [OPTIONS]\n\n"
     << c.summary << "\n";
  if (*c.details)
    os << c.details << "\n";
  os << "\n";
  if (!own.options().empty())
    os << own << "\n";
  os << global_options();
}

int run(int argc, char** argv) {
  std::vector<std::string> tokens(argv + 1, argv + argc);
  // Find the command words: the first one or two tokens that are neither
  // options nor values of the global options that take one.
  std::vector<std::size_t> words;
  auto more_words = [&] {
    if (words.empty())
      return true;
    auto& first = tokens[words[0]];
    if (first == "agents")
      return words.size() < 2;
    if (first == "help")
      return words.size() < 2 || (words.size() < 3 && tokens[words[1]] == "agents");
    return false;
  };
  for (std::size_t i = 0; i < tokens.size() && more_words(); ++i) {
    auto& t = tokens[i];
    if (t == "--")
      break;
    if (t.size() > 1 && t[0] == '-') {
      if (takes_value(t))
        ++i;
      continue;
    }
    words.push_back(i);
  }
  // An option before the command that no command takes is named as such,
  // not taken for a missing or unknown command.
  auto stray_option = [&](std::size_t before) -> std::optional<std::string> {
    for (std::size_t i = 0; i < before && i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (t == "--")
        break;
      std::string_view name{t};
      name = name.substr(0, name.find('='));
      if (t.size() < 2 || t[0] != '-')
        continue;
      if (takes_value(name)) {
        i += t.find('=') == std::string::npos;
        continue;
      }
      if (name != "--json" && name != "--help" && name != "-h" && !known_option(name))
        return t;
    }
    return std::nullopt;
  };
  if (words.empty()) {
    bool help = std::find_if(tokens.begin(), tokens.end(), [](auto& t) {
                  return t == "--help" || t == "-h";
                }) != tokens.end();
    if (std::find(tokens.begin(), tokens.end(), "--version") != tokens.end()) {
      std::cout << "ticktock " << TICKTOCK_VERSION << "\n";
      return exit_ok;
    }
    if (auto stray = stray_option(tokens.size()); stray && !help)
      return fail(exit_usage, "usage: unknown option '" + *stray + "' (see ticktock --help)");
    if (!help)
      return fail(exit_usage, "usage: no command given (see ticktock --help)");
    print_main_help(std::cout);
    return exit_ok;
  }
  std::string name = tokens[words[0]];
  bool help_command = name == "help";
  if (help_command) {
    if (words.size() < 2) {
      print_main_help(std::cout);
      return exit_ok;
    }
    name = tokens[words[1]];
    words.erase(words.begin());
  }
  if (name == "agents") {
    if (words.size() < 2) {
      bool help = help_command || std::any_of(tokens.begin(), tokens.end(), [](auto& t) {
                    return t == "--help" || t == "-h";
                  });
      if (!help)
        return fail(exit_usage, "usage: agents takes ls, create or rm (see ticktock agents --help)");
      print_agents_help(std::cout);
      return exit_ok;
    }
    name += " " + tokens[words[1]];
  }
  auto& table = commands();
  auto it = std::find_if(table.begin(), table.end(), [&](auto& c) { return c.name == name; });
  if (it == table.end()) {
    if (auto stray = stray_option(words[0]))
      return fail(exit_usage, "usage: unknown option '" + *stray + "' (see ticktock --help)");
    if (words[0] > 0 && tokens[words[0] - 1].starts_with("-"))
      // `--limit 5 ls`: the value of a command's option, taken for the command.
      return fail(exit_usage, "usage: unknown command '" + name + "' after '" + tokens[words[0] - 1]
                                + "' (a command's options go after the command; see ticktock --help)");
    return fail(exit_usage, "usage: unknown command '" + name + "' (see ticktock --help)");
  }
  const command& cmd = *it;

  po::options_description own{"options of '" + std::string{cmd.name} + "'"};
  cmd.options(own);
  if (help_command) {
    print_command_help(std::cout, cmd, own);
    return exit_ok;
  }
  for (auto i = words.rbegin(); i != words.rend(); ++i)
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(*i));

  po::options_description hidden;
  hidden.add_options()("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(global_options()).add(own).add(hidden);
  po::positional_options_description positional;
  positional.add("args", -1);
  invocation in{cmd, {}, {}, false, std::nullopt};
  try {
    po::store(po::command_line_parser(tokens)
                .options(all)
                .positional(positional)
                .style(po::command_line_style::default_style
                       & ~po::command_line_style::allow_guessing)
                .run(),
              in.vm);
    po::notify(in.vm);
  } catch (const std::exception& e) {
    return in.usage(e.what());
  }
  if (in.vm.count("help")) {
    print_command_help(std::cout, cmd, own);
    return exit_ok;
  }
  if (in.vm.count("args"))
    in.args = in.vm["args"].as<std::vector<std::string>>();
  if (in.args.size() < cmd.min_args || in.args.size() > cmd.max_args)
    return in.usage(std::string{in.args.size() < cmd.min_args ? "missing" : "too many"}
                    + " arguments: ticktock " + cmd.name + (*cmd.args ? " " : "") + cmd.args);
  if (std::string_view{cmd.args}.starts_with("ID") && in.args[0].empty())
    return in.usage("the agent ID is empty");
  in.json = in.vm["json"].as<bool>();

  auto env = [](const char* n) -> std::string {
    auto* v = std::getenv(n);
    return v ? v : "";
  };
  if (in.vm.count("url") && in.vm["url"].as<std::string>().empty())
    return in.usage("--url is empty");
  std::string url = in.vm.count("url") ? in.vm["url"].as<std::string>() : env("TICKTOCK_URL");
  if (url.empty())
    url = "http://127.0.0.1:7070";
  std::string token = in.vm.count("token") ? in.vm["token"].as<std::string>() : env("TICKTOCK_TOKEN");
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  // Sent as a header: a CR or LF in it would smuggle in other headers.
  auto header_safe = [](std::string_view v) {
    return std::all_of(v.begin(), v.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
  };
  if (!header_safe(token))
    return in.usage("the token has a control character (such as a line break) in it");
  if (in.vm.count("idempotency-key") && !header_safe(in.vm["idempotency-key"].as<std::string>()))
    return in.usage("--idempotency-key has a control character (such as a line break) in it");
  if (in.vm.count("idempotency-key") && in.vm["idempotency-key"].as<std::string>().empty())
    // A script's unset $KEY would lose the deduplication without a word.
    return in.usage("--idempotency-key is empty");
  auto timeout = in.vm["timeout"].as<double>();
  if (!(timeout > 0) || timeout > 86400)
    return in.usage("--timeout must be more than 0 and at most 86400 seconds");
  std::string why;
  auto address = parse_url(url, why);
  if (!address)
    return in.usage(why);
  auto request_id = in.vm.count("request-id") ? in.vm["request-id"].as<std::string>()
                                              : env("TICKTOCK_REQUEST_ID");
  if ((in.vm.count("request-id") || !request_id.empty()) && !ticktock::valid_request_id(request_id))
    return in.usage("--request-id is 1 to 128 letters, digits and -_.:/+=@ (the server would "
                    "ignore another)");
  in.has_token = !token.empty();
  in.client.emplace(*address, token,
                    std::chrono::milliseconds{static_cast<std::int64_t>(timeout * 1000)});
  in.client->set_request_id(request_id);
  return cmd.run(in);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    auto rc = run(argc, argv);
    // Output that did not get out (a full disk, a closed pipe) is a failure.
    if (!std::cout.flush())
      return fail(exit_usage, "cannot write to standard output");
    return rc;
  } catch (const std::exception& e) {
    // An answer of an unexpected shape (json::value::at, as_object, ...).
    return fail(exit_server, one_line(std::string{"BAD_ANSWER: unexpected answer from the server: "}
                                      + e.what()));
  }
}
