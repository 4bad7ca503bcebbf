#include "ticktock/drivers/io_loops.hpp"

#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/detail/thread_safe_actor_clock.hpp>
#include <caf/execution_unit.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

#include "ticktock/runtime/detail/event_loop.hpp"
#include "ticktock/runtime/detail/thread_name.hpp"
#include "ticktock/runtime/detail/cpus.hpp"

namespace ticktock::drivers {

namespace asio = boost::asio;

namespace {

class coordinator;

// One event loop and its thread; to CAF, the execution unit that runs the
// actors made ready on this thread; to the committer, where it defers a write.
struct loop final : caf::execution_unit, detail::event_loop {
  asio::io_context io{1};  // run by this loop's thread alone
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  coordinator* owner = nullptr;

  void attach(caf::actor_system& sys, coordinator& c) {
    system_ = &sys;
    owner = &c;
  }
  void exec_later(caf::resumable* job) override;
  void post(std::function<void()> fn) override { asio::post(io, std::move(fn)); }
};

// The loop whose thread this is, if any.
thread_local loop* current = nullptr;

// A ready actor, posted to a loop. A job that is never run (its loop
// destroyed with it queued) is cleaned up as CAF's own scheduler does.
struct run_job {
  loop* where;
  caf::resumable* job;
  run_job(loop* l, caf::resumable* j) noexcept : where(l), job(j) {}
  run_job(run_job&& o) noexcept : where(o.where), job(std::exchange(o.job, nullptr)) {}
  run_job(const run_job&) = delete;
  run_job& operator=(const run_job&) = delete;
  run_job& operator=(run_job&&) = delete;
  ~run_job() {
    if (job)
      caf::scheduler::abstract_coordinator::cleanup_and_release(job);
  }
  void operator()();
};

}  // namespace

struct io_loops::impl {
  std::vector<std::unique_ptr<loop>> loops;
  bool pin = false;
  // Claimed by a node's configure_caf, released when its scheduler stops (or
  // is destroyed without having started).
  std::atomic<bool> in_use{false};
  std::atomic<bool> started{false};  // the threads run
};

namespace {

class coordinator final : public caf::scheduler::abstract_coordinator {
public:
  coordinator(caf::actor_system& sys, std::shared_ptr<io_loops::impl> loops)
    : abstract_coordinator(sys), loops_(std::move(loops)) {}
  ~coordinator() override { loops_->in_use = false; }

  void init(caf::actor_system_config& cfg) override {
    abstract_coordinator::init(cfg);
    num_workers_ = loops_->loops.size();
  }

  void start() override {
    for (auto& l : loops_->loops) {
      l->attach(system(), *this);
      l->io.restart();  // after a node that used them before
      l->work.emplace(l->io.get_executor());
    }
    auto cpus = loops_->pin ? io_loops::cpus_for(loops_->loops.size()) : std::vector<int>{};
    for (std::size_t i = 0; i < loops_->loops.size(); ++i)
      loops_->loops[i]->thread = std::thread{[l = loops_->loops[i].get(),
                                              cpu = cpus.empty() ? -1 : cpus[i]] {
        detail::name_this_thread("tt-loop");
        if (cpu >= 0)
          detail::pin_this_thread(cpu);
        current = l;
        detail::set_this_thread_loop(l);
        l->io.run();
        detail::set_this_thread_loop(nullptr);
        current = nullptr;
      }};
    clock_thread_ = std::thread{[this] {
      detail::name_this_thread("caf.clock");
      clock_.run_dispatch_loop();
    }};
    loops_->started = true;
    abstract_coordinator::start();
  }

  // The actor system stops its scheduler last, once its actors are done.
  void stop() override {
    loops_->started = false;
    for (auto& l : loops_->loops) {
      l->work.reset();
      l->io.stop();
    }
    for (auto& l : loops_->loops)
      if (l->thread.joinable())
        l->thread.join();
    stop_actors();
    // Jobs still queued are cleaned up, as CAF's own scheduler does with
    // what its workers leave behind.
    stopped_ = true;
    for (auto& l : loops_->loops) {
      l->io.restart();
      l->io.poll();
    }
    clock_.cancel_dispatch_loop();
    if (clock_thread_.joinable())
      clock_thread_.join();
  }

  void enqueue(caf::resumable* job) override {
    if (stopped_) {
      cleanup_and_release(job);
      return;
    }
    auto* l = current && current->owner == this
                ? current
                : loops_->loops[next_worker_.fetch_add(1, std::memory_order_relaxed)
                                % loops_->loops.size()]
                    .get();
    post(*l, job);
  }

  void post(loop& l, caf::resumable* job) { asio::post(l.io, run_job{&l, job}); }

  void run(loop& l, caf::resumable* job) {
    if (stopped_) {
      cleanup_and_release(job);
      return;
    }
    switch (job->resume(&l, max_throughput_)) {
      case caf::resumable::resume_later:
        post(l, job);  // behind what the loop has queued meanwhile
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
        caf::intrusive_ptr_release(job);
        break;
      case caf::resumable::shutdown_execution_unit:
        break;
    }
  }

  caf::detail::thread_safe_actor_clock& clock() noexcept override { return clock_; }

private:
  std::shared_ptr<io_loops::impl> loops_;
  caf::detail::thread_safe_actor_clock clock_;
  std::thread clock_thread_;
  std::atomic<bool> stopped_{false};
};

void loop::exec_later(caf::resumable* job) { owner->post(*this, job); }

void run_job::operator()() { where->owner->run(*where, std::exchange(job, nullptr)); }

}  // namespace

std::shared_ptr<io_loops> io_loops::create(std::size_t threads, bool pin) {
  auto p = std::make_shared<impl>();
  p->pin = pin;
  if (threads == 0)
    threads = detail::usable_cpus();
  for (std::size_t i = 0; i < threads; ++i)
    p->loops.push_back(std::make_unique<loop>());
  return std::shared_ptr<io_loops>(new io_loops(std::move(p)));
}

std::vector<int> io_loops::cpus_for(std::size_t loops) {
  auto cpus = detail::allowed_cpus();
  if (cpus.size() < loops)
    return {};
  cpus.resize(loops);
  return cpus;
}

io_loops::io_loops(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
io_loops::~io_loops() = default;

std::size_t io_loops::size() const noexcept { return impl_->loops.size(); }

bool io_loops::running() const noexcept { return impl_->started; }

asio::io_context& io_loops::context(std::size_t i) noexcept { return impl_->loops[i]->io; }

std::function<void(caf::actor_system_config&)> io_loops::scheduler() {
  return [shared = impl_](caf::actor_system_config& cfg) {
    if (shared->in_use.exchange(true))
      throw std::logic_error{"io_loops: already the scheduler of an open node"};
    cfg.module_factories.push_back([shared](caf::actor_system& sys) -> caf::actor_system::module* {
      return new coordinator(sys, shared);
    });
  };
}

}  // namespace ticktock::drivers
