#pragma once

// The compute, containers and outbound HTTP services of a node: they run the jobs that
// ticks admitted (after the tick's commit), stream their output, and commit
// each job's end with its ledger settlement and the result trigger in one
// write. At open, jobs a crashed process left open are reconciled: their
// reservations are released and their agents told. See docs/compute.md.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gate.hpp"
#include "ticktock/runtime/compute.hpp"
#include "ticktock/runtime/fetch.hpp"
#include "ticktock/runtime/sandbox.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::detail {

struct node_core;

class service_runner {
public:
  explicit service_runner(node_core& core);
  ~service_runner();

  /// Starts a job a tick admitted (status queued), after its commit.
  void start(const storage::job_record& job);
  /// Releases the reservations of jobs left queued by an earlier process and
  /// ends them as failed (`interrupted`), telling their agents. Returns how
  /// many. With `agent`, only that agent's, and those awaiting approval too:
  /// one just imported, whose jobs (and approvals) stayed behind.
  std::size_t reconcile(const std::string& agent = {});
  /// Cancels every running job (the kill switch), or only those of `agent`
  /// (a terminated agent).
  void cancel_all(const std::string& reason, const std::string& agent = {});
  /// Cancels one job; false if it is not running here.
  bool cancel(const std::string& agent, const std::string& job);

  /// Output of a job so far (stream deltas or container output) from chunk
  /// `from`; `done` tells whether more can come. Empty if the job is not known
  /// here (the caller falls back to the stored result).
  std::vector<std::string> output(const std::string& agent, const std::string& job,
                                  std::size_t from, bool& known, bool& done) const;

  std::vector<std::string> providers() const;
  std::size_t running() const;
  /// Stops taking jobs, cancels running ones and waits for them.
  void stop();

private:
  struct live;
  struct work {
    storage::job_record job;
    std::shared_ptr<live> out;
  };
  void compute_loop();
  void run_compute(work& w);
  void run_fetch(work& w);
  void cancelled_because(const live& out, storage::job_record& job) const;
  void run_container(const storage::job_record& job, std::shared_ptr<live> out);
  /// Commits the job's end: record, settlement, result trigger.
  void finish(storage::job_record job, std::uint64_t actual);
  std::shared_ptr<live> track(const storage::job_record& job);

  node_core& core_;
  std::map<std::string, std::shared_ptr<compute::provider>> providers_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<work> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  // Live jobs by "agent\0job" (kept a while after they end, for streams).
  std::map<std::string, std::shared_ptr<live>> live_;
  std::deque<std::string> ended_;
  std::unique_ptr<sandbox::pool> pool_;
};

}  // namespace ticktock::detail
