#include "services.hpp"

#include <unistd.h>

#include <boost/json.hpp>

#include <fstream>
#include <future>

#include "agent_host.hpp"
#include "node_core.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"

namespace ticktock::detail {

namespace json = boost::json;

namespace {

constexpr std::size_t max_ended_kept = 256;
constexpr std::size_t max_live_bytes = 16u << 20;

std::string live_key(const std::string& agent, const std::string& job) {
  return agent + '\0' + job;
}

}  // namespace

struct service_runner::live {
  mutable std::mutex mtx;
  std::vector<std::string> chunks;
  std::size_t bytes = 0;
  bool done = false;
  std::atomic<bool> cancelled{false};
  // Its agent was terminated: the job's end is not committed (a later agent
  // of the same id must not get its result, record or ledger entry).
  std::atomic<bool> orphaned{false};
  std::string cancel_reason;
  std::uint64_t session = 0;  // container pool id

  void add(std::string_view s) {
    std::lock_guard<std::mutex> guard{mtx};
    if (bytes + s.size() > max_live_bytes)
      return;
    bytes += s.size();
    chunks.emplace_back(s);
  }
};

service_runner::service_runner(node_core& core) : core_(core) {
  auto& svc = core_.options.services;
  providers_ = svc.providers;
  if (!providers_.count("local"))
    providers_["local"] = std::make_shared<compute::local_provider>();
  auto workers = std::max<std::size_t>(1, svc.compute_workers);
  for (std::size_t i = 0; i < workers; ++i)
    workers_.emplace_back([this] { compute_loop(); });
  sandbox::pool::options po;
  po.uid_base = svc.container_uid_base;
  pool_ = std::make_unique<sandbox::pool>(std::max<std::size_t>(1, svc.container_concurrency), po);
}

service_runner::~service_runner() { stop(); }

void service_runner::stop() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stopping_ && workers_.empty())
      return;
    stopping_ = true;
    for (auto& [k, l] : live_)
      l->cancelled = true;
  }
  cv_.notify_all();
  for (auto& t : workers_)
    t.join();
  workers_.clear();
  if (pool_)
    pool_->shutdown();
}

std::shared_ptr<service_runner::live> service_runner::track(const storage::job_record& job) {
  auto out = std::make_shared<live>();
  std::lock_guard<std::mutex> guard{mtx_};
  live_[live_key(job.agent, job.id)] = out;
  return out;
}

void service_runner::start(const storage::job_record& job) {
  {
    std::lock_guard<std::mutex> guard{core_.idle_mtx};
    ++core_.outstanding;  // the job's result trigger is still to come
  }
  auto out = track(job);
  if (!core_.dir->known(job.agent)) {
    // Terminated after the tick that asked for the job committed.
    out->orphaned = true;
    auto j = job;
    j.status = "cancelled";
    j.error = "agent_terminated";
    finish(std::move(j), 0);
    return;
  }
  if (job.service == "containers") {
    run_container(job, std::move(out));
    return;
  }
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!stopping_) {
      queue_.push_back({job, std::move(out)});
      cv_.notify_one();
      return;
    }
  }
  auto j = job;
  j.status = "cancelled";
  j.error = "shutting_down";
  finish(std::move(j), 0);
}

void service_runner::compute_loop() {
  detail::name_this_thread("tt-services");
  for (;;) {
    work w;
    {
      std::unique_lock<std::mutex> lock{mtx_};
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty())
        return;
      w = std::move(queue_.front());
      queue_.pop_front();
    }
    if (w.job.service == "http")
      run_fetch(w);
    else
      run_compute(w);
  }
}

void service_runner::run_fetch(work& w) {
  auto& job = w.job;
  auto& svc = core_.options.services;
  namespace fc = fetch::failure_code;
  auto req = fetch::parse_request(job.request, svc.http_limits);
  fetch::outcome result = fetch::failure{std::string{fc::bad_request},
                                         req ? std::string{} : req.error_value().message()};
  if (req) {
    req->request_id = job.request_id;
    if (w.out->cancelled || core_.gate->killed())
      result = fetch::failure{std::string{fc::cancelled}, core_.gate->killed()
                                                            ? "cancelled by the kill switch"
                                                            : "cancelled before it started"};
    else if (!svc.http_executor)
      result = fetch::failure{std::string{fc::unavailable},
                              "this node has no outbound HTTP executor"};
    else
      result = svc.http_executor->run(*req, w.out->cancelled);
  }
  if (auto* r = std::get_if<fetch::response>(&result)) {
    job.status = "done";
    job.result = fetch::to_json(*r);
  } else {
    auto& f = std::get<fetch::failure>(result);
    job.status = f.code == fc::cancelled ? "cancelled" : "failed";
    job.error = f.code;
    job.error_message = f.message;
    job.result = fetch::to_json(f);
    if (job.status == "cancelled")
      cancelled_because(*w.out, job);
  }
  // A fetch costs its flat price (its reservation) once a request went out,
  // whatever came back; one that never started (refused addresses included)
  // costs nothing.
  bool attempted = job.status == "done"
                   || (job.status == "failed" && job.error != fc::bad_request
                       && job.error != fc::unavailable && job.error != fc::address_not_allowed);
  auto actual = attempted ? job.reserved : 0;
  finish(std::move(job), actual);
}

// A cancelled job's reason: the one cancel() was given, else the kill switch
// (engaged before the job reached a worker).
void service_runner::cancelled_because(const live& out, storage::job_record& job) const {
  std::lock_guard<std::mutex> guard{out.mtx};
  if (!out.cancel_reason.empty())
    job.error = out.cancel_reason;
  else if (core_.gate->killed())
    job.error = "kill_switch";
}

void service_runner::run_compute(work& w) {
  auto& job = w.job;
  auto req = compute::parse_request(job.request);
  compute::outcome result = compute::make_failure(compute::failure_code::bad_request,
                                                  req ? "" : req.error_value().message());
  if (req) {
    if (w.out->cancelled || core_.gate->killed()) {
      result = compute::make_failure(compute::failure_code::cancelled, "cancelled by the kill switch");
    } else if (auto p = providers_.find(req->provider); p == providers_.end()) {
      result = compute::make_failure(compute::failure_code::unknown_provider,
                                     "no provider '" + req->provider + "' on this node");
    } else {
      result = p->second->run(*req, [&](std::string_view d) { w.out->add(d); }, w.out->cancelled);
    }
  }
  std::uint64_t actual = 0;
  if (auto* r = std::get_if<compute::result>(&result)) {
    job.status = "done";
    job.result = compute::to_json(*r);
    auto cost = core_.gate->prices()->cost(req->model, r->used);
    // A model priced at reservation time is priced now; if the table changed
    // in between and lost it, the job costs what it reserved.
    actual = cost ? *cost : job.reserved;
  } else {
    auto& f = std::get<compute::failure>(result);
    job.status = f.code == compute::failure_code::cancelled ? "cancelled" : "failed";
    job.error = f.code;
    job.error_message = f.message;
    job.result = compute::to_json(f);
    if (job.status == "cancelled")
      cancelled_because(*w.out, job);
  }
  finish(std::move(job), actual);
}

void service_runner::run_container(const storage::job_record& job, std::shared_ptr<live> out) {
  auto& svc = core_.options.services;
  auto spec = sandbox::parse_request(job.request, svc.container_maxima, svc.container_defaults);
  if (!spec || core_.gate->killed()) {
    auto j = job;
    j.status = spec ? "cancelled" : "failed";
    j.error = spec ? "kill_switch" : "bad_request";
    j.error_message = spec ? "cancelled by the kill switch" : spec.error_value().message();
    finish(std::move(j), 0);
    return;
  }
  auto dir = core_.options.containers_root() / job.agent;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  spec->workdir = dir / job.id;
  // Every session starts in an empty directory. Job ids repeat across
  // incarnations of an agent id (they follow its ticks), and terminate's
  // removal of the agent's directory may have been cut short by a crash:
  // what is left there belongs to another session.
  std::filesystem::remove_all(spec->workdir, ec);
  spec->iso = svc.isolation;
  auto log_path = dir / (job.id + ".out");
  std::filesystem::remove(log_path, ec);  // a new file, never what a link there points to
  auto log = std::make_shared<std::ofstream>(log_path, std::ios::binary | std::ios::trunc);
  // The server's alone: the sessions of other agents share the sandbox uid.
  std::filesystem::permissions(log_path, std::filesystem::perms::owner_read
                                           | std::filesystem::perms::owner_write, ec);
  auto price = svc.container_price_per_cpu_second;
  sandbox::callbacks cb;
  cb.on_output = [out, log](sandbox::stream, std::string_view chunk) {
    out->add(chunk);
    log->write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    log->flush();
  };
  cb.on_exit = [this, job, out, log, price, workdir = spec->workdir](const sandbox::outcome& o) {
    log->close();
    // The session's directory goes back to root: the sandbox uid is shared
    // by the sessions of every agent (unless --container-uid-base), and a
    // later one could otherwise enter it and change what files/ serves
    // (which reads it as root). Its parent is root's, so the path is ours.
    if (::geteuid() == 0)
      (void)::lchown(workdir.c_str(), 0, 0);
    auto j = job;
    j.result = sandbox::to_json(o);
    if (o.status == "killed" && out->cancelled) {
      j.status = "cancelled";
      j.error = out->cancel_reason.empty() ? "cancelled" : out->cancel_reason;
    } else if (o.status == "exited" && o.exit_code == 0) {
      j.status = "done";
    } else {
      j.status = "failed";
      j.error = o.status;
      j.error_message = o.error;
    }
    // micro-USD per CPU second, rounded up, never above the reservation
    auto us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, o.cpu.count()));
    auto whole = us / 1'000'000, rest = us % 1'000'000;
    std::uint64_t actual = price == 0 ? 0
                           : whole > UINT64_MAX / price ? UINT64_MAX
                                                         : whole * price + (rest * price + 999'999) / 1'000'000;
    finish(std::move(j), actual);
  };
  out->session = pool_->submit(std::move(*spec), std::move(cb));
}

void service_runner::finish(storage::job_record job, std::uint64_t actual) {
  auto now = core_.clock->now();
  job.finished = now;
  job.cost = std::min(actual, job.reserved);
  storage::service_op op;
  op.ledger.push_back({job.agent, storage::ledger_change::kind::settle, job.service, job.id,
                       job.reserved, job.cost, job.status, now});
  op.triggers.push_back(result_trigger(job, now));
  auto key = live_key(job.agent, job.id);
  auto ok = job.status == "done";
  bool orphaned = false;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (auto i = live_.find(key); i != live_.end())
      orphaned = i->second->orphaned;
  }
  op.jobs.push_back(std::move(job));
  auto* core = &core_;
  auto done = [this, core, key, ok](storage::op_result& r) {
    if (!r.err)
      core->deliver(r);
    {
      std::lock_guard<std::mutex> guard{core->metrics_mtx};
      ++(ok ? core->metrics.jobs_done : core->metrics.jobs_failed);
    }
    std::shared_ptr<live> l;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (auto i = live_.find(key); i != live_.end()) {
        l = i->second;
        ended_.push_back(key);
        while (ended_.size() > max_ended_kept) {
          live_.erase(ended_.front());
          ended_.pop_front();
        }
      }
    }
    if (l) {
      std::lock_guard<std::mutex> guard{l->mtx};
      l->done = true;
    }
    core->consumed(1);
  };
  if (orphaned) {
    storage::op_result none;
    none.err = error{errc::not_found, "the job's agent was terminated"};
    done(none);
  } else if (!core_.commits->submit(std::move(op), done)) {
    core_.consumed(1);  // shutting down: reconciled at the next open
  }
}

std::size_t service_runner::reconcile(const std::string& agent) {
  // An imported agent's jobs awaiting approval end too: their approvals
  // stayed with the node that exported it.
  auto open = agent.empty() ? core_.store->open_jobs() : core_.store->list_jobs(agent);
  if (!agent.empty())
    std::erase_if(open, [](const storage::job_record& j) {
      return j.status != "queued" && j.status != "awaiting_approval";
    });
  if (open.empty())
    return 0;
  auto now = core_.clock->now();
  storage::service_op op;
  for (auto& j : open) {
    bool parked = j.status == "awaiting_approval";  // holds no reservation
    j.status = "failed";
    j.error = "interrupted";
    j.error_message = agent.empty()
                        ? "the server stopped while the job was queued or running; its reservation "
                          "was released"
                        : "the agent was exported while the job was queued, running or awaiting "
                          "approval, and it runs nowhere after the import; its reservation was "
                          "released";
    j.finished = now;
    j.cost = 0;
    if (!parked)
      op.ledger.push_back({j.agent, storage::ledger_change::kind::release, j.service, j.id,
                           j.reserved, 0, "interrupted", now});
    op.triggers.push_back(result_trigger(j, now));
    op.jobs.push_back(std::move(j));
  }
  auto n = op.jobs.size();
  std::promise<storage::op_result> p;
  auto f = p.get_future();
  if (!core_.commits->submit(std::move(op), [&p](storage::op_result& r) { p.set_value(std::move(r)); }))
    return 0;
  auto r = f.get();
  if (r.err)
    return 0;
  core_.deliver(r);
  return n;
}

void service_runner::cancel_all(const std::string& reason, const std::string& agent) {
  std::vector<std::shared_ptr<live>> all;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    // Keys are agent '\0' job: an agent's jobs are adjacent.
    auto prefix = agent.empty() ? std::string{} : agent + '\0';
    for (auto i = live_.lower_bound(prefix); i != live_.end() && i->first.starts_with(prefix); ++i)
      all.push_back(i->second);
  }
  for (auto& l : all) {
    bool done;
    {
      std::lock_guard<std::mutex> guard{l->mtx};
      done = l->done;
      if (!done && l->cancel_reason.empty())
        l->cancel_reason = reason;
    }
    if (done)
      continue;
    if (!agent.empty())
      l->orphaned = true;
    l->cancelled = true;
    if (l->session)
      pool_->cancel(l->session);
  }
}

bool service_runner::cancel(const std::string& agent, const std::string& job) {
  std::shared_ptr<live> l;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = live_.find(live_key(agent, job));
    if (i == live_.end())
      return false;
    l = i->second;
  }
  {
    std::lock_guard<std::mutex> guard{l->mtx};
    if (l->done)
      return false;
    if (l->cancel_reason.empty())
      l->cancel_reason = "cancelled";
  }
  l->cancelled = true;
  if (l->session)
    pool_->cancel(l->session);
  return true;
}

std::vector<std::string> service_runner::output(const std::string& agent, const std::string& job,
                                                std::size_t from, bool& known, bool& done) const {
  std::shared_ptr<live> l;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = live_.find(live_key(agent, job));
    known = i != live_.end();
    if (!known) {
      done = true;
      return {};
    }
    l = i->second;
  }
  std::lock_guard<std::mutex> guard{l->mtx};
  done = l->done;
  if (from >= l->chunks.size())
    return {};
  return {l->chunks.begin() + static_cast<std::ptrdiff_t>(from), l->chunks.end()};
}

std::vector<std::string> service_runner::providers() const {
  std::vector<std::string> out;
  for (auto& [name, p] : providers_)
    out.push_back(name);
  return out;
}

std::size_t service_runner::running() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return live_.size() - ended_.size();
}

}  // namespace ticktock::detail
