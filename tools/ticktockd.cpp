// ticktockd: the self-hosted ticktock server. This first version hosts the
// built-in agent types on an embedded RocksDB, creates demo agents with
// --demo, logs one line per tick, and shuts down cleanly on SIGINT/SIGTERM.

#include <boost/program_options.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>

#include <ticktock/ticktock.hpp>

#include "builtin_agents.hpp"

namespace po = boost::program_options;

namespace {

std::mutex log_mtx;

void log_line(const std::string& line) {
  std::lock_guard<std::mutex> guard{log_mtx};
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void create_demo(ticktock::node& n) {
  auto make = [&](const std::string& id, const std::string& type, std::string config) {
    auto err = n.create(id, type, std::move(config));
    if (err && err.code() != ticktock::errc::already_exists)
      log_line("event=demo_error agent=" + id + " error=\"" + err.to_string() + "\"");
    return !err;
  };
  make("demo-counter", "counter", "");
  make("demo-echo", "echo", "");
  make("demo-heartbeat", "heartbeat", "5");
  bool fresh = make("demo-ping", "player", "5");
  make("demo-pong", "player", "5");
  if (fresh) {
    ticktock::send_options from_pong;
    from_pong.from = "demo-pong";
    n.send("demo-ping", "serve", from_pong);
  }
  n.send("demo-counter", "hello");
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc{"ticktockd options"};
  std::string data, durability, missed;
  std::int64_t idle_ms = 60'000;
  std::size_t max_resident = 100'000, threads = 0;
  desc.add_options()
    ("help,h", "show this help")
    ("data", po::value(&data)->default_value("./ticktock-data"), "data directory")
    ("durability", po::value(&durability)->default_value("async"), "sync | async")
    ("idle-timeout", po::value(&idle_ms)->default_value(60'000), "idle timeout in ms")
    ("max-resident", po::value(&max_resident)->default_value(100'000), "most resident agents")
    ("threads", po::value(&threads)->default_value(0), "CAF scheduler threads (0: cores)")
    ("missed-alarms", po::value(&missed)->default_value("fire_once"), "fire_once | fire_all | skip")
    ("demo", "create the demo agents if missing")
    ("exit-after-ms", po::value<std::int64_t>(), "stop after this long (tests)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ticktockd: %s (see --help)\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  ticktock::node_options opts;
  opts.data_dir = data;
  if (durability == "sync")
    opts.durability = ticktock::durability::sync;
  else if (durability != "async") {
    std::fprintf(stderr, "ticktockd: --durability must be sync or async\n");
    return 2;
  }
  if (missed == "fire_all")
    opts.missed_alarms = ticktock::missed_alarm_policy::fire_all;
  else if (missed == "skip")
    opts.missed_alarms = ticktock::missed_alarm_policy::skip;
  else if (missed != "fire_once") {
    std::fprintf(stderr, "ticktockd: --missed-alarms must be fire_once, fire_all or skip\n");
    return 2;
  }
  opts.idle_timeout = std::chrono::milliseconds{idle_ms};
  opts.max_resident = max_resident;
  opts.threads = threads;

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto node = ticktock::node::open(opts, ticktock::builtin::registry());
  if (!node) {
    std::fprintf(stderr, "ticktockd: %s\n", node.error_value().to_string().c_str());
    return 1;
  }
  auto& n = **node;
  n.set_tick_observer([](const ticktock::tick_event& ev) {
    std::string line = "event=tick agent=" + ev.agent + " tick=" + std::to_string(ev.tick)
                       + " trigger=" + std::string{ticktock::to_string(ev.kind)}
                       + " seq=" + std::to_string(ev.trigger_seq)
                       + " outcome=" + std::string{ticktock::storage::to_string(ev.outcome)};
    if (!ev.error.empty())
      line += " error=\"" + ev.error + "\"";
    log_line(line);
  });
  log_line("event=start data=" + data + " agents=" + std::to_string(n.agent_count())
           + " durability=" + durability);
  if (vm.count("demo"))
    create_demo(n);

  int sig = 0;
  if (vm.count("exit-after-ms")) {
    timespec ts{};
    auto ms = vm["exit-after-ms"].as<std::int64_t>();
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1'000'000;
    sig = sigtimedwait(&stop_signals, nullptr, &ts);
    if (sig < 0)
      sig = 0;
  } else {
    sigwait(&stop_signals, &sig);
  }
  log_line("event=stop signal=" + std::to_string(sig));
  n.shutdown();
  log_line("event=stopped");
  return 0;
}
