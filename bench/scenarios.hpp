#pragma once

// The scenarios of ticktock-bench. Each runs `runs` times and returns one
// row per reported figure: our figure and a bare baseline of the same work,
// as medians with their spread over the runs.

#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "ticktock/ticktock.hpp"

namespace ticktock::bench {

struct config {
  /// Agents of the density scenario; also caps the other agent counts [100000].
  std::size_t agents = 100'000;
  /// Resident agents of the tick scenarios [1000].
  std::size_t tick_agents = 1'000;
  /// Hibernated agents woken one by one by the wake scenario [2000].
  std::size_t wake_agents = 2'000;
  /// Messages of the tick scenarios [100000].
  std::size_t messages = 100'000;
  /// Repetitions of every scenario [3].
  std::size_t runs = 3;
  /// Parent of the temporary data directories [/tmp].
  std::filesystem::path dir = "/tmp";
  /// Progress lines on stderr.
  bool verbose = false;
  /// The ticktockd binary of the http scenario; empty: the one built with
  /// this bench (see find_ticktockd in http_bench.cpp).
  std::filesystem::path ticktockd;
  /// Extra arguments of that ticktockd (--ticktockd-arg, repeatable).
  std::vector<std::string> ticktockd_args;
  /// Keep-alive connections of the http scenario [32].
  std::size_t connections = 32;
  /// Counter agents of the http scenario's many-agent row [10000].
  std::size_t http_agents = 10'000;
  /// Measured seconds of every http load run, after a warm-up of a fifth of
  /// it (at most 1 s) [3].
  double seconds = 3;
  /// If not 0, an http closed-loop run also ends after this many measured
  /// requests [0].
  std::size_t requests = 0;
  /// Client I/O threads of the http scenario [1].
  std::size_t client_threads = 1;
  /// Pending one-shot alarms of the alarm-skew scenario [100000].
  std::size_t alarms = 100'000;
  /// Seconds over which the alarm-skew due times are spread [5].
  double alarm_spread = 5;
  /// Agents of the soak (capped by `agents`) [2000].
  std::size_t soak_agents = 2'000;
};

/// One reported row. Metrics are absent when they do not apply.
struct row {
  std::string scenario;
  std::string baseline;
  /// What the baseline does, in one sentence (for the table and the JSON).
  std::string baseline_what;
  std::optional<summary> ops_per_s, baseline_ops_per_s;
  std::optional<summary> p50_us, p99_us, baseline_p50_us, baseline_p99_us;
  std::optional<double> ratio;
  /// How `ratio` is computed, e.g. "ours/baseline ops_per_s (higher is better)".
  std::string ratio_kind;
  std::size_t runs = 0;
  /// Further metrics (density bytes, group commits, record sizes...).
  std::map<std::string, summary> extra;
  std::map<std::string, std::string> notes;
};

/// The no-op agent type every scenario registers as "noop".
agent_registry bench_registry();

/// Opens a node on `dir` for a scenario; throws bench_error on failure.
std::unique_ptr<node> open_node(const std::filesystem::path& dir, durability d,
                                std::size_t max_resident);

/// Creates agents agent_name(0..n-1) of type "noop" and waits until their
/// init ticks ran; throws bench_error on failure or timeout.
void create_agents(node& n, std::size_t count, const config& cfg);

/// tick: no-op ticks/s across resident agents (async) vs bare CAF actors.
std::vector<row> run_tick(const config& cfg);
/// durable-tick-sync and durable-tick-async vs raw RocksDB WriteBatches.
std::vector<row> run_durable_tick(const config& cfg);
/// wake: latency to wake a hibernated agent vs spawning a CAF actor that
/// reads one RocksDB key.
std::vector<row> run_wake(const config& cfg);
/// density: resident RSS and hibernated disk bytes per agent.
std::vector<row> run_density(const config& cfg);

/// http: HTTP-triggered durable ticks against a ticktockd child process vs a
/// bare Beast server returning a constant.
std::vector<row> run_http(const config& cfg);
/// alarm-skew: delay from due time to tick start of many pending alarms vs
/// asio timers due at the same offsets.
std::vector<row> run_alarm_skew(const config& cfg);

/// soak: mixed load on an in-process node and HTTP server for cfg.seconds;
/// prints RSS and latency per tenth of the run and a memory verdict (a table,
/// or one JSON object with `json`). Returns the exit status.
int run_soak(const config& cfg, bool json);

/// Whether the http scenario can find a ticktockd binary.
bool ticktockd_available(const config& cfg);

/// Prints a progress line on stderr when cfg.verbose.
void progress(const config& cfg, const std::string& line);

}  // namespace ticktock::bench
