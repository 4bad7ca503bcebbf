// The budget, services and policy parts of the HTTP API: an agent's wallet/,
// compute/, containers/, http/ and limits files, and the admin's approvals, kill
// switch, global policy and price table. See docs/compute.md, docs/policy.md
// and docs/openapi.yaml.

#include <boost/json.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <utility>

#include "router.hpp"
#include "ticktock/actors/node.hpp"
#include "ticktock/runtime/detail/unique_fd.hpp"
#include "ticktock/runtime/text.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::drivers {

namespace json = boost::json;

namespace {

response json_ok(unsigned status, const json::value& v) {
  response r;
  r.status = status;
  r.body = json_text(v);
  return r;
}

json::value parsed_or_text(const std::string& text) {
  if (text.empty())
    return nullptr;
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  return ec ? json::value(text) : v;
}

// A fetch's request as served: the values of headers that usually carry
// credentials (Authorization, Cookie, anything naming a key, token, secret
// or password) are replaced, so a `read` token does not learn the agent's
// secrets. The stored request keeps them: the executor needs them.
json::value served_request(const storage::job_record& j) {
  auto v = parsed_or_text(j.request);
  if (j.service != "http" || !v.is_object())
    return v;
  auto* hs = v.as_object().if_contains("headers");
  if (!hs || !hs->is_object())
    return v;
  for (auto& [k, val] : hs->as_object()) {
    std::string name{k};
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool secret = name == "authorization" || name == "cookie" || name.find("key") != std::string::npos
                  || name.find("token") != std::string::npos || name.find("secret") != std::string::npos
                  || name.find("password") != std::string::npos || name.find("auth") != std::string::npos;
    if (secret)
      val = "(redacted)";
  }
  return v;
}

json::object job_json(const storage::job_record& j, bool with_result) {
  json::object o{{"id", j.id},
                 {"service", j.service},
                 {"status", j.status},
                 {"destination", j.destination},
                 {"reserved_micro_usd", j.reserved},
                 {"cost_micro_usd", j.cost},
                 {"created_us", j.created.time_since_epoch().count()}};
  if (!j.error.empty())
    o["reason"] = j.error;
  if (!j.error_message.empty())
    o["message"] = j.error_message;
  if (!j.approval.empty())
    o["approval"] = j.approval;
  if (j.finished.time_since_epoch().count() != 0)
    o["finished_us"] = j.finished.time_since_epoch().count();
  if (!j.request_id.empty())
    o["request_id"] = j.request_id;
  o["request"] = served_request(j);
  if (with_result && !j.result.empty())
    o["result"] = parsed_or_text(j.result);
  return o;
}

json::object approval_json(const storage::approval_record& a) {
  json::object o{{"id", a.id},         {"agent", a.agent},   {"job", a.job},
                 {"action", a.action}, {"destination", a.destination},
                 {"cost_micro_usd", a.cost}, {"reason", a.reason}, {"status", a.status},
                 {"created_us", a.created.time_since_epoch().count()}};
  if (a.status != "pending") {
    o["decided_us"] = a.decided.time_since_epoch().count();
    o["note"] = a.note;
  }
  return o;
}

json::object ledger_json(const storage::ledger_record& l) {
  auto left = l.available(ticktock::system_clock{}.now());
  return json::object{
    {"limits", json::object{{"total", l.limit_total}, {"day", l.limit_day}, {"month", l.limit_month}}},
    {"spent", json::object{{"total", l.spent_total}, {"day", l.spent_day}, {"month", l.spent_month}}},
    {"reserved", l.reserved},
    {"available", left == UINT64_MAX ? json::value(nullptr) : json::value(left)},
    {"currency", "micro-usd"}};
}

// Reads {"total","day","month"} (non-negative integers, each optional).
expected<std::array<std::optional<std::uint64_t>, 3>> parse_budget(std::string_view body) {
  std::array<std::optional<std::uint64_t>, 3> given;
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object())
    return error{errc::invalid_argument, "limits are {\"total\",\"day\",\"month\"} in micro-USD"};
  for (auto& [k, x] : v.as_object()) {
    int i = k == "total" ? 0 : k == "day" ? 1 : k == "month" ? 2 : -1;
    if (i < 0)
      return error{errc::invalid_argument, std::string{k} + ": unknown field (total, day, month)"};
    if (!(x.is_uint64() || (x.is_int64() && x.as_int64() >= 0)))
      return error{errc::invalid_argument, std::string{k} + ": a non-negative integer of micro-USD"};
    given[static_cast<std::size_t>(i)] = x.to_number<std::uint64_t>();
  }
  return given;
}

// The status of a refused job: 402 over budget, 403 by policy or kill switch.
response refused_job(const storage::job_record& j) {
  auto budget = j.error == "budget_exceeded";
  auto code = budget ? "BUDGET_EXCEEDED" : j.error == "kill_switch" ? "KILL_SWITCH" : "POLICY_DENIED";
  return error_response(budget ? 402 : 403, code,
                        j.error_message.empty() ? j.error : j.error_message,
                        json_text(json::object{{"job", job_json(j, false)}}));
}


// -- a session's files: never a symlink, never outside its directory -----------

using ticktock::detail::unique_fd;

// Opens the entry `name` of the directory `dir`, one component only and
// never through a symlink (O_NOFOLLOW: a symlink fails with ELOOP). "", ".",
// ".." and names holding '/' or NUL are refused (ENOENT), so the walk can
// only go down. O_NONBLOCK keeps a FIFO from blocking the open.
unique_fd open_entry(int dir, const std::string& name, int flags) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos
      || name.find('\0') != std::string::npos) {
    errno = ENOENT;
    return unique_fd{};
  }
  return unique_fd{::openat(dir, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)};
}

// Walks from `root` (the containers directory, trusted: the server's own
// configuration) down `path`, opening each component relative to the one
// before it without following symlinks. Every component but the last must
// be a directory; the last is opened with `last_flags`. The session decides
// what is in its directory, so a symlink anywhere on the way (`x -> /`,
// then files/x/etc/passwd) or in place of the session directory itself is
// refused here instead of being followed: checking only the final component
// (what symlink_status does) lets a symlinked directory earlier in the path
// lead out of the session. On failure errno says why (ELOOP: a symlink).
unique_fd open_beneath(const std::filesystem::path& root, const std::vector<std::string>& path,
                       int last_flags) {
  unique_fd cur{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  for (std::size_t i = 0; cur && i < path.size(); ++i) {
    bool last = i + 1 == path.size();
    auto next = open_entry(cur.get(), path[i], last ? last_flags : O_RDONLY | O_DIRECTORY);
    int err = errno;  // closing the parent must not hide why the open failed
    struct stat st {};
    // A symlink opened as a directory fails with ENOTDIR: say ELOOP for it.
    if (!next && err == ENOTDIR && ::fstatat(cur.get(), path[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0
        && S_ISLNK(st.st_mode))
      err = ELOOP;
    cur = std::move(next);
    errno = err;
  }
  return cur;
}

// Lists the regular files under the directory `dir` (recursively, at most
// `max` of them and 64 levels deep), with paths relative to it; symlinks and
// anything else that is neither a file nor a directory are left out.
void list_files(unique_fd dir, const std::string& prefix, int depth, std::size_t max,
                json::array& out) {
  DIR* d = ::fdopendir(dir.get());
  if (!d)
    return;
  dir.release();  // closedir closes it
  std::vector<std::string> subdirs;
  while (out.size() < max) {
    errno = 0;
    auto* e = ::readdir(d);
    if (!e)
      break;
    std::string name = e->d_name;
    if (name == "." || name == "..")
      continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      continue;
    if (S_ISREG(st.st_mode))
      out.push_back(json::object{{"path", prefix + name},
                                 {"bytes", static_cast<std::uint64_t>(st.st_size)}});
    else if (S_ISDIR(st.st_mode) && depth < 64)
      subdirs.push_back(std::move(name));
  }
  for (auto& name : subdirs) {
    if (out.size() >= max)
      break;
    auto sub = open_entry(::dirfd(d), name, O_RDONLY | O_DIRECTORY);
    if (sub)
      list_files(std::move(sub), prefix + name + "/", depth + 1, max, out);
  }
  ::closedir(d);
}

}  // namespace

response router::services_file(const request& req, const std::string& id,
                               const std::vector<std::string>& parts,
                               const std::map<std::string, std::string>& query) {
  const auto& m = req.method;
  const auto& name = parts[0];
  auto stream_wanted = accepts_event_stream(req.header("accept"));

  if (name == "limits") {
    if (parts.size() != 1)
      return error_response(404, "NO_SUCH_FILE", "limits is a file");
    if (m == "GET") {
      auto l = node_.limits(id);
      if (!l)
        return error_response(l.error_value());
      json::object o{{"ticks_per_minute", l->ticks_per_minute},
                     {"tick_wall_ms", l->tick_wall_time.count()},
                     {"max_state_bytes", l->max_state_bytes},
                     {"outbox_retention", l->outbox_retention},
                     {"max_attempts", l->max_attempts},
                     {"inbox_limit", l->inbox_limit}};
      return json_ok(200, o);
    }
    if (m != "PUT")
      return method_not_allowed("GET, PUT");
    auto err = node_.set_setting("limits/" + id, req.body);
    if (err)
      return err.code() == errc::invalid_argument ? error_response(400, "BAD_LIMITS", err.message())
                                                  : error_response(err);
    return json_ok(200, json::object{{"ok", true}});
  }

  if (name == "wallet") {
    if (parts.size() == 1) {
      if (m != "GET")
        return method_not_allowed("GET");
      return json_ok(200, json::object{{"entries", json::array{"balance", "history", "limits"}}});
    }
    if (parts.size() != 2)
      return error_response(404, "NO_SUCH_FILE", "wallet/balance, wallet/history, wallet/limits");
    if (parts[1] == "balance" || (parts[1] == "limits" && m == "GET")) {
      if (m != "GET")
        return method_not_allowed("GET");
      auto l = node_.wallet(id);
      if (!l)
        return error_response(l.error_value());
      auto o = ledger_json(*l);
      return json_ok(200, parts[1] == "limits" ? o["limits"] : json::value(o));
    }
    if (parts[1] == "limits") {
      if (m != "PUT")
        return method_not_allowed("GET, PUT");
      if (auto dup = duplicate_field(req.body))
        return *dup;
      auto b = parse_budget(req.body);
      if (!b)
        return error_response(400, "BAD_LIMITS", b.error_value().message());
      if (auto err = node_.set_budget(id, (*b)[0], (*b)[1], (*b)[2]))
        return error_response(err);
      auto after = node_.wallet(id);
      if (!after)
        return error_response(after.error_value());
      return json_ok(200, ledger_json(*after));
    }
    if (parts[1] == "history") {
      if (m != "GET")
        return method_not_allowed("GET");
      auto from = query_u64(query, "from", 0);
      if (!from)
        return error_response(400, "BAD_QUERY", "from is a number");
      auto h = node_.wallet_history(id, *from, 1000);
      if (!h)
        return error_response(h.error_value());
      json::array arr;
      for (auto& e : *h)
        arr.push_back(json::object{{"seq", e.seq},
                                   {"time_us", e.time.time_since_epoch().count()},
                                   {"kind", e.kind},
                                   {"service", e.service},
                                   {"job", e.job},
                                   {"amount_micro_usd", e.amount},
                                   {"reason", e.reason}});
      return json_ok(200, json::object{{"entries", std::move(arr)}});
    }
    return error_response(404, "NO_SUCH_FILE", "wallet/balance, wallet/history, wallet/limits");
  }

  // compute/, containers/ and http/ (outbound fetches) share their shape;
  // http/ has no providers and no output stream.
  const bool compute = name == "compute";
  const bool fetch = name == "http";
  const std::string service = compute ? "compute" : fetch ? "http" : "containers";
  const std::string jobs_dir = compute || fetch ? "jobs" : "sessions";
  if (parts.size() == 1) {
    if (m != "GET")
      return method_not_allowed("GET");
    if (fetch)
      return json_ok(200, json::object{{"entries", json::array{"new", "jobs", "policy", "usage"}}});
    return json_ok(200, json::object{{"entries", json::array{"providers", "new", jobs_dir.c_str(),
                                                             "policy", "usage"}}});
  }
  const auto& file = parts[1];
  if (file == "providers" && parts.size() == 2 && !fetch) {
    if (m != "GET")
      return method_not_allowed("GET");
    json::array arr;
    if (compute)
      for (auto& p : node_.compute_providers())
        arr.emplace_back(p);
    else {
      // The mode --container-isolation sets; automatic: what sessions get,
      // bubblewrap where it works here and the sandbox uid can reach the
      // containers directory (the deepest part of it there is yet).
      const auto& services = node_.options().services;
      auto iso = services.isolation;
      if (iso == sandbox::isolation::automatic) {
        auto dir = node_.options().containers_root();
        std::error_code ec;
        while (!std::filesystem::exists(dir, ec) && dir.has_parent_path() && dir != dir.parent_path())
          dir = dir.parent_path();
        auto uid = services.container_uid_base.value_or(sandbox::spec{}.uid);
        iso = sandbox::automatic_isolation(dir / "session", uid, uid);
      }
      arr.emplace_back(std::string{sandbox::to_string(iso)});
    }
    return json_ok(200, json::object{{"providers", std::move(arr)}});
  }
  if (file == "policy" && parts.size() == 2) {
    auto key = "policy/" + id + "/" + service;
    if (m == "GET") {
      auto v = node_.setting(key);
      if (!v && v.error_value().code() != errc::not_found)
        return error_response(v.error_value());
      response r;
      r.body = v ? *v : R"({"rules":[],"default":"allow"})";
      return r;
    }
    if (m != "PUT")
      return method_not_allowed("GET, PUT");
    auto err = node_.set_setting(key, req.body);
    if (err)
      return err.code() == errc::invalid_argument ? error_response(400, "BAD_POLICY", err.message())
                                                  : error_response(err);
    return json_ok(200, json::object{{"ok", true}});
  }
  if (file == "usage" && parts.size() == 2) {
    if (m != "GET")
      return method_not_allowed("GET");
    auto l = node_.wallet(id);
    if (!l)
      return error_response(l.error_value());
    auto jobs = node_.jobs(id, service);
    json::object by_status;
    if (jobs)
      for (auto& j : *jobs)
        by_status[j.status] = by_status.contains(j.status) ? by_status[j.status].as_int64() + 1 : 1;
    return json_ok(200, json::object{
                          {"reserved_micro_usd", compute ? l->compute_reserved
                                                 : fetch ? l->http_reserved
                                                         : l->containers_reserved},
                          {"spent_micro_usd", compute ? l->compute_spent
                                              : fetch ? l->http_spent
                                                      : l->containers_spent},
                          {jobs_dir.c_str(), std::move(by_status)}});
  }
  if (file == "new" && parts.size() == 2) {
    if (m != "POST" && m != "PUT")
      return method_not_allowed("POST, PUT");
    if (req.body.size() > options_.max_body_bytes)
      return error_response(413, "BODY_TOO_LARGE", "the request is too large");
    if (auto dup = duplicate_field(req.body))
      return *dup;
    auto j = node_.submit_job(id, service, req.body, req.request_id);
    if (!j) {
      if (j.error_value().code() == errc::invalid_argument)
        return error_response(400, "BAD_REQUEST_BODY", j.error_value().message());
      return error_response(j.error_value());
    }
    if (j->status == "denied")
      return refused_job(*j);
    auto r = json_ok(202, job_json(*j, false));
    r.headers.emplace_back("Location", "/v1/agents/" + id + "/fs/" + service + "/" + jobs_dir + "/" + j->id);
    return r;
  }
  if (file == jobs_dir) {
    if (parts.size() == 2) {
      if (m != "GET")
        return method_not_allowed("GET");
      auto jobs = node_.jobs(id, service);
      if (!jobs)
        return error_response(jobs.error_value());
      json::array arr;
      for (auto& j : *jobs)
        arr.push_back(job_json(j, false));
      return json_ok(200, json::object{{jobs_dir.c_str(), std::move(arr)}});
    }
    auto job = node_.job(id, parts[2]);
    if (!job)
      return error_response(job.error_value());
    if (!*job || (*job)->service != service)
      return error_response(404, "NO_SUCH_JOB", "no " + std::string{compute || fetch ? "job" : "session"}
                                                  + " '" + parts[2] + "'");
    auto& j = **job;
    auto leaf = parts.size() == 3 ? std::string{} : parts[3];
    if (parts.size() > 4 && leaf != "files")
      return error_response(404, "NO_SUCH_FILE", "no such file");
    if (leaf.empty()) {
      if (m != "GET")
        return method_not_allowed("GET");
      json::array entries{"status", "result"};
      if (!fetch)
        entries.emplace_back(compute ? "stream" : "output");
      if (!compute && !fetch)
        entries.emplace_back("files");
      entries.emplace_back("cancel");
      return json_ok(200, json::object{{"entries", std::move(entries)}});
    }
    if (leaf == "cancel") {
      if (m != "POST")
        return method_not_allowed("POST");
      auto ok = node_.cancel_job(id, j.id);
      if (!ok)
        return error_response(ok.error_value());
      if (!*ok)
        return error_response(409, "NOT_RUNNING", "'" + j.id + "' is not running (" + j.status + ")");
      return json_ok(202, json::object{{"cancelling", j.id}});
    }
    if (m != "GET")
      return method_not_allowed("GET");
    if (leaf == "status")
      return json_ok(200, job_json(j, false));
    if (leaf == "result") {
      if (j.open())
        return error_response(409, "NOT_FINISHED", "'" + j.id + "' is " + j.status);
      return json_ok(200, job_json(j, true));
    }
    if ((leaf == "stream" || leaf == "output") && !fetch) {
      if (stream_wanted) {
        response r;
        r.stream = stream_kind::job;
        r.stream_agent = id + '\0' + j.id;
        auto from = stream_start(req, query, 0);
        if (!from)
          return error_response(400, "BAD_QUERY", bad_stream_start);
        r.stream_from = *from;
        return r;
      }
      if (!compute) {
        // The whole output so far, as the session wrote it.
        auto root = node_.options().containers_root();
        response r;
        r.content_type = "application/octet-stream";
        auto out = std::make_shared<const detail::unique_fd>(
          ::open((root / id / (j.id + ".out")).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (*out)
          r.body_file = std::move(out);
        return r;
      }
      // The chunks from from_seq on (default 0), as the stream would send them.
      auto from = query_u64(query, "from_seq", 0);
      if (!from)
        return error_response(400, "BAD_QUERY", bad_stream_start);
      bool done = false;
      auto chunks = node_.job_output(id, j.id, static_cast<std::size_t>(*from), done);
      if (!chunks)
        return error_response(chunks.error_value());
      json::array arr;
      for (auto& c : *chunks)
        arr.emplace_back(c);
      return json_ok(200, json::object{{"chunks", std::move(arr)}, {"done", done}});
    }
    if (leaf == "files" && !compute && !fetch) {
      auto root = node_.options().containers_root();
      // Every component below the containers directory, the session's own
      // directory included, is opened without following symlinks.
      std::vector<std::string> path{id, j.id};
      if (parts.size() == 4) {
        auto dir = open_beneath(root, path, O_RDONLY | O_DIRECTORY);
        json::array arr;
        if (dir)
          list_files(std::move(dir), "", 0, 10'000, arr);
        return json_ok(200, json::object{{"files", std::move(arr)}});
      }
      std::string rel;
      for (std::size_t i = 4; i < parts.size(); ++i) {
        path.push_back(parts[i]);
        rel += (rel.empty() ? "" : "/") + parts[i];
      }
      auto fd = open_beneath(root, path, O_RDONLY);
      struct stat st {};
      if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        auto why = !fd && errno == ELOOP ? " (a symbolic link on the way: files/ never follows links)"
                                         : "";
        return error_response(404, "NO_SUCH_FILE",
                              "no file '" + rel + "' in the session" + std::string{why});
      }
      response r;
      r.body_file = std::make_shared<const detail::unique_fd>(std::move(fd));
      r.content_type = "application/octet-stream";
      return r;
    }
  }
  std::string path;  // all of it: "jobs/j1/x", not "jobs"
  for (std::size_t i = 1; i < parts.size(); ++i)
    path += (i > 1 ? "/" : "") + parts[i];
  return error_response(404, "NO_SUCH_FILE", "no file '" + path + "' in " + name + "/");
}

expected<std::vector<stream_event>> router::read_job_stream(const std::string& key,
                                                            std::uint64_t from, std::size_t limit) {
  auto nul = key.find('\0');
  auto agent = key.substr(0, nul), job = key.substr(nul + 1);
  bool done = false;
  auto chunks = node_.job_output(agent, job, static_cast<std::size_t>(from), done);
  if (!chunks)
    return chunks.error_value();
  std::vector<stream_event> out;
  for (std::size_t i = 0; i < chunks->size() && out.size() < limit; ++i)
    out.push_back({from + i, "chunk", (*chunks)[i]});
  if (done && out.size() == chunks->size()) {
    auto j = node_.job(agent, job);
    auto status = j && *j ? (*j)->status : std::string{"unknown"};
    out.push_back({from + chunks->size(), "end", json::serialize(json::object{{"status", status}})});
  }
  return out;
}

response router::control(const request& req, std::string_view second, std::string_view rest,
                         const std::map<std::string, std::string>& query) {
  const auto& m = req.method;
  auto route = [&](response r, std::string label) {
    r.route = std::move(label);
    return r;
  };
  if (second == "killswitch") {
    if (!rest.empty())
      return route(error_response(404, "ROUTE_NOT_FOUND", "no such route"), "/v1/killswitch");
    if (m == "GET")
      return route(json_ok(200, json::object{{"engaged", node_.kill_switch()}}), "/v1/killswitch");
    if (m != "PUT")
      return route(method_not_allowed("GET, PUT"), "/v1/killswitch");
    if (auto dup = duplicate_field(req.body))
      return route(std::move(*dup), "/v1/killswitch");
    boost::system::error_code ec;
    auto v = json::parse(req.body, ec);
    auto* e = !ec && v.is_object() && v.as_object().size() == 1 ? v.as_object().if_contains("engaged")
                                                                 : nullptr;
    if (!e || !e->is_bool())
      return route(error_response(400, "BAD_JSON", "the body is {\"engaged\": true|false}"),
                   "/v1/killswitch");
    if (auto err = node_.set_kill_switch(e->as_bool()))
      return route(error_response(err), "/v1/killswitch");
    return route(json_ok(200, json::object{{"engaged", e->as_bool()}}), "/v1/killswitch");
  }
  if (second == "policy" || second == "compute") {
    auto key = second == "policy" ? std::string{"policy"} : std::string{"prices"};
    auto label = second == "policy" ? "/v1/policy" : "/v1/compute/prices";
    if (second == "policy" && !rest.empty())
      return route(error_response(404, "ROUTE_NOT_FOUND", "no such route"), label);
    if (m == "GET") {
      auto v = node_.setting(key);
      response r;
      r.body = v ? *v : R"({"rules":[],"default":"allow"})";
      return route(r, label);
    }
    if (m != "PUT")
      return route(method_not_allowed("GET, PUT"), label);
    if (auto err = node_.set_setting(key, req.body))
      return route(err.code() == errc::invalid_argument
                     ? error_response(400, key == "policy" ? "BAD_POLICY" : "BAD_PRICES", err.message())
                     : error_response(err),
                   label);
    return route(json_ok(200, json::object{{"ok", true}}), label);
  }
  // approvals
  auto seg_end = rest.find('/', 1);
  auto approval_id = rest.empty() ? std::string{} : std::string{rest.substr(1, seg_end == std::string_view::npos ? std::string_view::npos : seg_end - 1)};
  auto tail = seg_end == std::string_view::npos ? std::string_view{} : rest.substr(seg_end);
  if (approval_id.empty() && !rest.empty())
    return route(error_response(404, "ROUTE_NOT_FOUND", "no such route"), "/v1/approvals/{approval}");
  if (approval_id.empty()) {
    if (m != "GET")
      return route(method_not_allowed("GET"), "/v1/approvals");
    std::string status;
    if (auto q = query.find("status"); q != query.end())
      status = q->second;
    if (!status.empty() && status != "pending" && status != "approved" && status != "denied"
        && status != "cancelled")
      return route(error_response(400, "BAD_QUERY", "status is pending, approved, denied or cancelled"),
                   "/v1/approvals");
    auto wanted = query_u64(query, "limit", 1000);
    if (!wanted || *wanted == 0 || *wanted > 1000)
      return route(error_response(400, "BAD_QUERY", "limit must be 1 to 1000"), "/v1/approvals");
    // A page ends at an approval's created time and id: "US.ID", as `next` says.
    std::optional<std::pair<time_point, std::string>> after;
    if (auto q = query.find("after"); q != query.end() && !q->second.empty()) {
      auto dot = q->second.find('.');
      auto us = dot == std::string::npos ? std::nullopt
                                         : parse_u64(std::string_view{q->second}.substr(0, dot));
      if (!us)
        return route(error_response(400, "BAD_QUERY",
                                    "after is the `next` of a previous page (CREATED_US.ID)"),
                     "/v1/approvals");
      after.emplace(time_point{std::chrono::microseconds{static_cast<std::int64_t>(*us)}},
                    q->second.substr(dot + 1));
    }
    auto limit = static_cast<std::size_t>(*wanted);
    auto list = node_.approvals(status, after, limit + 1);
    json::array arr;
    for (std::size_t i = 0; i < list.size() && i < limit; ++i)
      arr.push_back(approval_json(list[i]));
    json::value next = nullptr;
    if (list.size() > limit)
      next = json::string{std::to_string(list[limit - 1].created.time_since_epoch().count()) + "."
                          + list[limit - 1].id};
    return route(json_ok(200, json::object{{"approvals", std::move(arr)}, {"next", next}}),
                 "/v1/approvals");
  }
  if (tail.empty()) {
    if (m != "GET")
      return route(method_not_allowed("GET"), "/v1/approvals/{approval}");
    auto a = node_.approval(approval_id);
    if (!a)
      return route(a.error_value().code() == errc::not_found
                     ? error_response(404, "NO_SUCH_APPROVAL", a.error_value().message())
                     : error_response(a.error_value()),
                   "/v1/approvals/{approval}");
    return route(json_ok(200, approval_json(*a)), "/v1/approvals/{approval}");
  }
  if (tail != "/decide")
    return route(error_response(404, "ROUTE_NOT_FOUND", "no such route"), "/v1/approvals/{approval}");
  if (m != "POST")
    return route(method_not_allowed("POST"), "/v1/approvals/{approval}/decide");
  if (auto dup = duplicate_field(req.body))
    return route(std::move(*dup), "/v1/approvals/{approval}/decide");
  boost::system::error_code ec;
  auto v = json::parse(req.body, ec);
  const json::object* o = !ec && v.is_object() ? &v.as_object() : nullptr;
  auto* d = o ? o->if_contains("decision") : nullptr;
  auto* note = o ? o->if_contains("note") : nullptr;
  bool fields_ok = o && d && d->is_string()
                   && (d->as_string() == "approve" || d->as_string() == "deny")
                   && (!note || note->is_string()) && o->size() == (note ? 2u : 1u);
  if (!fields_ok)
    return route(error_response(400, "BAD_JSON",
                                "the body is {\"decision\": \"approve\"|\"deny\", \"note\"?: \"...\"}"),
                 "/v1/approvals/{approval}/decide");
  auto a = node_.decide(approval_id, d->as_string() == "approve",
                        note ? std::string{note->as_string()} : std::string{}, req.request_id);
  if (!a) {
    auto& err = a.error_value();
    auto r = err.code() == errc::not_found       ? error_response(404, "NO_SUCH_APPROVAL", err.message())
             : err.code() == errc::already_exists ? error_response(409, "ALREADY_DECIDED", err.message())
                                                  : error_response(err);
    return route(r, "/v1/approvals/{approval}/decide");
  }
  return route(json_ok(200, approval_json(*a)), "/v1/approvals/{approval}/decide");
}

}  // namespace ticktock::drivers
