// alarm-skew: how late alarms start their ticks. `--alarms` one-shot alarms
// (100,000 by default) are pending at once, their due times spread evenly over
// `--alarm-spread` seconds; each is set by an agent's tick (alarm k belongs to
// agent k mod tick_agents, so every agent holds alarms across the whole span).
// The delay of an alarm is the wall-clock time from its due time to the start
// of its tick (on_trigger, whose trigger time is the due time). The baseline
// in the same run: one thread running an asio io_context with the same number
// of system_timers due at the same offsets, each handler recording the same
// delay. The ratio is baseline p99 / ours p99.

#include <boost/asio.hpp>

#include <thread>

#include "scenarios.hpp"

namespace ticktock::bench {

namespace {

using namespace std::chrono_literals;
using sys = std::chrono::system_clock;

/// The run the skew agents report into (one at a time).
struct skew_run {
  std::vector<std::int64_t> due_us;    ///< by alarm index, since the epoch
  std::vector<std::int64_t> delay_us;  ///< by alarm index, written once by its tick
  std::size_t agents = 1;
  latch_counter fired;
};

std::atomic<skew_run*> current{nullptr};

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(sys::now().time_since_epoch())
    .count();
}

struct skew_state {};

/// A message sets every alarm k of the run with k mod agents == this agent's
/// number; an alarm trigger records its delay.
struct skew_agent : agent<skew_state> {
  void on_trigger(context& ctx, const trigger& t) override {
    auto start = now_us();
    auto* run = current.load(std::memory_order_acquire);
    if (!run)
      return;
    if (t.kind == trigger_kind::alarm) {
      auto k = std::stoull(t.alarm.substr(1));
      run->delay_us.at(k) = start - t.time.time_since_epoch().count();
      run->fired.bump();
    } else if (t.kind == trigger_kind::message) {
      auto me = std::stoull(ctx.self().substr(1));
      for (auto k = me; k < run->due_us.size(); k += run->agents)
        ctx.set_alarm("k" + std::to_string(k), time_point{duration{run->due_us[k]}});
    }
  }
};

struct delays {
  double p50 = 0, p99 = 0, max = 0;
};

delays summarize_delays(const std::vector<std::int64_t>& us) {
  std::vector<double> v(us.begin(), us.end());
  return {percentile(v, 0.50), percentile(v, 0.99), *std::max_element(v.begin(), v.end())};
}

/// Due times: `n` instants from base to base + spread, evenly spaced.
std::vector<std::int64_t> due_times(std::int64_t base_us, std::size_t n, double spread_s) {
  std::vector<std::int64_t> due(n);
  for (std::size_t k = 0; k < n; ++k)
    due[k] = base_us
             + static_cast<std::int64_t>(spread_s * 1e6 * static_cast<double>(k)
                                         / static_cast<double>(n));
  return due;
}

/// Time to set everything up before the first alarm is due.
std::chrono::microseconds lead(std::size_t alarms) {
  return 1s + std::chrono::microseconds{40 * alarms};
}

delays run_ours(const config& cfg, std::size_t alarms, std::size_t agents) {
  temp_dir dir{cfg.dir};
  node_options opts;
  opts.data_dir = dir.path() / "data";
  opts.durability = durability::async;
  opts.idle_timeout = std::chrono::hours{1};
  opts.max_resident = agents + 1000;
  opts.limits.inbox_limit = 0;
  auto registry = bench_registry();
  if (auto err = registry.add<skew_agent>("skew"))
    throw bench_error{"registering the skew agent: " + err.to_string()};
  auto opened = node::open(opts, std::move(registry));
  if (!opened)
    throw bench_error{"node::open: " + opened.error_value().to_string()};
  auto& n = **opened;
  for (std::size_t i = 0; i < agents; ++i)
    if (auto err = n.create(agent_name(i), "skew"))
      throw bench_error{"create " + agent_name(i) + ": " + err.to_string()};
  if (!n.wait_idle(60s + std::chrono::milliseconds{agents}))
    throw bench_error{"alarm-skew: init ticks did not finish"};

  skew_run run;
  run.agents = agents;
  auto base = now_us() + lead(alarms).count();
  run.due_us = due_times(base, alarms, cfg.alarm_spread);
  run.delay_us.assign(alarms, 0);
  run.fired.reset(alarms);
  current.store(&run, std::memory_order_release);
  struct clear {
    ~clear() { current.store(nullptr, std::memory_order_release); }
  } clear_current;
  for (std::size_t i = 0; i < agents; ++i)
    if (auto r = n.send(agent_name(i), "set"); !r)
      throw bench_error{"send to " + agent_name(i) + ": " + r.error_value().to_string()};
  if (!n.wait_idle(60s))
    throw bench_error{"alarm-skew: the ticks setting the alarms did not finish"};
  auto set_done = now_us();
  if (set_done > base - 100'000)
    throw bench_error{"alarm-skew: setting " + std::to_string(alarms) + " alarms took until "
                      + std::to_string((set_done - base) / 1000)
                      + " ms from the first due time (too slow a machine for this count)"};
  progress(cfg, "alarm-skew: " + std::to_string(alarms) + " alarms set, first due in "
                  + std::to_string((base - set_done) / 1000) + " ms");
  run.fired.wait(std::chrono::duration_cast<std::chrono::milliseconds>(
                   lead(alarms) + std::chrono::duration<double>(cfg.alarm_spread) + 120s),
                 "alarm-skew: alarm ticks");
  auto d = summarize_delays(run.delay_us);
  n.shutdown();
  return d;
}

delays run_baseline(const config& cfg, std::size_t alarms) {
  boost::asio::io_context io;
  auto base = now_us() + lead(alarms).count();
  auto due = due_times(base, alarms, cfg.alarm_spread);
  std::vector<std::int64_t> delay(alarms, 0);
  std::vector<std::unique_ptr<boost::asio::system_timer>> timers;
  timers.reserve(alarms);
  for (std::size_t k = 0; k < alarms; ++k) {
    auto at = sys::time_point{std::chrono::duration_cast<sys::duration>(
      std::chrono::microseconds{due[k]})};
    auto& t = *timers.emplace_back(std::make_unique<boost::asio::system_timer>(io, at));
    t.async_wait([&, k](boost::system::error_code ec) {
      if (!ec)
        delay[k] = now_us() - due[k];
    });
  }
  if (now_us() > base - 100'000)
    throw bench_error{"alarm-skew baseline: setting the timers took too long"};
  io.run();  // one thread, until every timer fired
  return summarize_delays(delay);
}

}  // namespace

std::vector<row> run_alarm_skew(const config& cfg) {
  auto alarms = cfg.alarms;
  auto agents = std::max<std::size_t>(1, std::min({cfg.tick_agents, cfg.agents, alarms}));
  std::vector<double> p50, p99, mx, b50, b99, bmx;
  for (std::size_t i = 0; i < cfg.runs; ++i) {
    auto ours = run_ours(cfg, alarms, agents);
    auto base = run_baseline(cfg, alarms);
    progress(cfg, "alarm-skew run " + std::to_string(i + 1) + ": p50/p99/max delay "
                    + std::to_string(std::llround(ours.p50)) + "/"
                    + std::to_string(std::llround(ours.p99)) + "/"
                    + std::to_string(std::llround(ours.max)) + " us; bare timer "
                    + std::to_string(std::llround(base.p50)) + "/"
                    + std::to_string(std::llround(base.p99)) + "/"
                    + std::to_string(std::llround(base.max)) + " us");
    p50.push_back(ours.p50);
    p99.push_back(ours.p99);
    mx.push_back(ours.max);
    b50.push_back(base.p50);
    b99.push_back(base.p99);
    bmx.push_back(base.max);
  }
  row r;
  r.scenario = "alarm-skew";
  r.baseline = "asio-timers";
  r.baseline_what = "one thread running a boost::asio io_context with " + std::to_string(alarms)
                    + " system_timers due at the same offsets from their own start, each "
                      "handler recording now - due with the same clock";
  r.p50_us = summarize(p50);
  r.p99_us = summarize(p99);
  r.baseline_p50_us = summarize(b50);
  r.baseline_p99_us = summarize(b99);
  // A floor of 1 us keeps the ratio finite if the bare timer is exact.
  r.ratio = std::max(1.0, r.baseline_p99_us->median) / std::max(1.0, r.p99_us->median);
  r.ratio_kind = "baseline_p99/ours_p99 delay (higher is better; 1 would mean no overhead)";
  r.runs = cfg.runs;
  r.extra["alarms"] = summarize({static_cast<double>(alarms)});
  r.extra["agents"] = summarize({static_cast<double>(agents)});
  r.extra["spread_s"] = summarize({cfg.alarm_spread});
  r.extra["max_delay_us"] = summarize(mx);
  r.extra["baseline_max_delay_us"] = summarize(bmx);
  r.notes["workload"] = std::to_string(alarms) + " one-shot alarms pending at once, due evenly over "
                        + std::to_string(cfg.alarm_spread) + " s, set by the ticks of "
                        + std::to_string(agents) + " agents (alarm k on agent k mod "
                        + std::to_string(agents) + "), async durability; delay = wall clock at "
                          "the start of the alarm's on_trigger minus its due time";
  return {r};
}

}  // namespace ticktock::bench
