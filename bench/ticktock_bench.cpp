// ticktock-bench: throughput, wake latency and density of a ticktock node,
// each beside a bare baseline doing the same work. Every scenario runs
// --runs times and reports the median and the spread (min..max), timing only
// the measured region.
//
//   ticktock-bench [SCENARIO...|--all] [--json] [--markdown FILE] [--agents N]
//                  [--messages N] [--runs R] [--dir DIR] [http and alarm options]
//   ticktock-bench soak [--seconds N] [--json] [--soak-agents N]
//
// Scenarios: tick, durable-tick, wake, density, alarm-skew, http (all when
// none is named; http only if a ticktockd binary is found). soak is a mode of
// its own (mixed load for --seconds, RSS and p99 over time).

#include <boost/json.hpp>

#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "scenarios.hpp"

namespace tb = ticktock::bench;

namespace {

const char* usage =
  "usage: ticktock-bench [SCENARIO...|--all] [--json] [--markdown FILE] [--agents N]\n"
  "                      [--messages N] [--runs R] [--dir DIR] [--tick-agents N]\n"
  "                      [--wake-agents N] [--alarms N] [--alarm-spread S]\n"
  "                      [--ticktockd PATH] [--ticktockd-arg ARG] [--connections N]\n"
  "                      [--http-agents N]\n"
  "                      [--seconds S] [--requests N] [--client-threads N] [--verbose]\n"
  "       ticktock-bench soak [--seconds S] [--json] [--soak-agents N] [--connections N]\n"
  "\n"
  "scenarios:\n"
  "  tick          no-op ticks/s over resident agents (async) vs bare CAF actors\n"
  "  durable-tick  the same with sync and async durability vs raw RocksDB batches\n"
  "  wake          send-to-committed-tick latency of hibernated agents vs CAF spawn +\n"
  "                RocksDB get\n"
  "  density       resident RSS and hibernated disk bytes per agent\n"
  "  alarm-skew    p50/p99 delay from due time to tick start of --alarms pending alarms\n"
  "                spread over --alarm-spread s vs asio timers due at the same offsets\n"
  "  http          req/s and p50/p99 of POST /a/{id}/ on counter agents of a ticktockd\n"
  "                child process (async durability), 1 agent and many, closed loop; then\n"
  "                p99 open loop at half that rate; GET /healthz (driver without a tick);\n"
  "                each vs a bare Beast server answering a constant\n"
  "  soak          (alone) mixed load for --seconds [60] on an in-process node and HTTP\n"
  "                server with hibernation churn: RSS, req/s and p50/p99 per tenth of the\n"
  "                run, and whether RSS stayed flat over the second half\n"
  "\n"
  "options:\n"
  "  --all              run every scenario (the default when none is named)\n"
  "  --json             one JSON object per line and scenario instead of a table\n"
  "  --markdown FILE    also write the figures as a Markdown section into FILE (e.g.\n"
  "                     docs/performance.md), between the lines <!-- bench:begin -->\n"
  "                     and <!-- bench:end --> (added before the first ## heading if\n"
  "                     missing); the rest of FILE is kept\n"
  "  --agents N         agents of density, and the cap of the other counts [100000]\n"
  "  --messages N       messages of the tick scenarios [100000]\n"
  "  --runs R           repetitions of every scenario [3]\n"
  "  --dir DIR          parent of the temporary data directories [/tmp]\n"
  "  --tick-agents N    resident agents of the tick scenarios [1000]\n"
  "  --wake-agents N    agents woken by the wake scenario [2000]\n"
  "  --ticktockd PATH   ticktockd binary of http [the one built with this bench]\n"
  "  --ticktockd-arg A  one more argument of that ticktockd (repeatable), e.g.\n"
  "                     --ticktockd-arg --threads=1\n"
  "  --connections N    keep-alive connections of http [32]\n"
  "  --http-agents N    counter agents of http's many-agent row [10000]\n"
  "  --seconds S        measured seconds of every http load run, after a warm-up\n"
  "                     of S/5 (at most 1 s) [3]; soak: its length [60]\n"
  "  --alarms N         pending alarms of alarm-skew [100000]\n"
  "  --alarm-spread S   seconds over which alarm-skew's due times spread [5]\n"
  "  --soak-agents N    agents of soak (max_resident a tenth of them) [2000]\n"
  "  --requests N       also end an http closed-loop run after N requests [no limit]\n"
  "  --client-threads N I/O threads of http's load generator [1]\n"
  "  --verbose          progress on stderr\n";

[[noreturn]] void bad_usage(const std::string& why) {
  std::cerr << "ticktock-bench: " << why << "\n\n" << usage;
  std::exit(2);
}

std::size_t parse_count(const std::string& flag, const char* value, std::size_t min) {
  if (!value)
    bad_usage(flag + " needs a value");
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoull(value, &end, 10);
  if (errno || end == value || *end || v < min || v > 100'000'000)
    bad_usage(flag + " needs a whole number from " + std::to_string(min) + " to 100000000, not '"
              + value + "'");
  return static_cast<std::size_t>(v);
}

// -- output ----------------------------------------------------------------------

// Large figures as integers, small ones rounded to 3 decimals.
boost::json::value number(double v) {
  if (std::fabs(v) >= 100 || (v == std::floor(v) && std::fabs(v) < 1e15))
    return static_cast<std::int64_t>(std::llround(v));
  return std::round(v * 1000) / 1000;
}

boost::json::value number_or_null(const std::optional<tb::summary>& s) {
  if (!s)
    return nullptr;
  return number(s->median);
}

boost::json::object to_json(const tb::row& r) {
  boost::json::object o;
  o["scenario"] = r.scenario;
  o["ops_per_s"] = number_or_null(r.ops_per_s);
  o["p50_us"] = number_or_null(r.p50_us);
  o["p99_us"] = number_or_null(r.p99_us);
  o["baseline"] = r.baseline;
  o["baseline_ops_per_s"] = number_or_null(r.baseline_ops_per_s);
  o["baseline_p50_us"] = number_or_null(r.baseline_p50_us);
  o["baseline_p99_us"] = number_or_null(r.baseline_p99_us);
  o["ratio_vs_baseline"] = r.ratio ? boost::json::value(std::round(*r.ratio * 10000) / 10000)
                                   : boost::json::value(nullptr);
  o["ratio_kind"] = r.ratio_kind;
  o["runs"] = r.runs;
  boost::json::object spread;
  auto add_spread = [&](const std::string& name, const std::optional<tb::summary>& s) {
    if (s)
      spread[name] = boost::json::object{{"min", number(s->min)}, {"max", number(s->max)}};
  };
  add_spread("ops_per_s", r.ops_per_s);
  add_spread("p50_us", r.p50_us);
  add_spread("p99_us", r.p99_us);
  add_spread("baseline_ops_per_s", r.baseline_ops_per_s);
  add_spread("baseline_p50_us", r.baseline_p50_us);
  add_spread("baseline_p99_us", r.baseline_p99_us);
  for (auto& [name, s] : r.extra) {
    o[name] = number(s.median);
    add_spread(name, s);
  }
  o["spread"] = std::move(spread);
  o["baseline_what"] = r.baseline_what;
  for (auto& [name, text] : r.notes)
    o[name] = text;
  return o;
}

// 1234567.8 -> "1,234,568"; small values keep a fraction.
std::string fmt(double v) {
  if (std::isnan(v))
    return "-";
  std::ostringstream out;
  if (std::fabs(v) < 100) {
    out << std::fixed << std::setprecision(std::fabs(v) < 10 ? 2 : 1) << v;
    return out.str();
  }
  auto n = static_cast<long long>(std::llround(v));
  auto digits = std::to_string(n < 0 ? -n : n);
  std::string grouped;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      grouped.push_back(',');
    grouped.push_back(digits[i]);
  }
  return (n < 0 ? "-" : "") + grouped;
}

std::string fmt(const tb::summary& s) {
  return fmt(s.median) + " [" + fmt(s.min) + ".." + fmt(s.max) + "]";
}

void print_header() {
  std::cout << std::left << std::setw(20) << "scenario" << std::setw(14) << "metric"
            << std::setw(34) << "ours median [min..max]" << std::setw(24) << "baseline"
            << std::setw(34) << "baseline median [min..max]" << "ratio\n"
            << std::string(130, '-') << "\n";
}

void print_line(const std::string& scenario, const std::string& metric,
                const std::optional<tb::summary>& ours, const std::string& baseline,
                const std::optional<tb::summary>& base, const std::string& ratio) {
  std::cout << std::left << std::setw(20) << scenario << std::setw(14) << metric << std::setw(34)
            << (ours ? fmt(*ours) : "-") << std::setw(24) << baseline << std::setw(34)
            << (base ? fmt(*base) : "-") << ratio << "\n";
}

std::optional<tb::summary> extra(const tb::row& r, const std::string& name) {
  if (auto i = r.extra.find(name); i != r.extra.end())
    return i->second;
  return std::nullopt;
}

void print_table(const tb::row& r) {
  auto ratio = r.ratio ? fmt(*r.ratio) : std::string{"-"};
  if (r.scenario == "density") {
    print_line(r.scenario, "resident B", extra(r, "bytes_per_resident_agent"), "bare-caf actor",
               extra(r, "baseline_bytes_per_resident_agent"), ratio + " ours/base");
    auto disk_ratio = extra(r, "disk_ratio_vs_baseline");
    print_line("", "disk B", extra(r, "bytes_per_hibernated_agent"), "raw-rocksdb id key",
               extra(r, "baseline_bytes_per_hibernated_agent"),
               (disk_ratio ? fmt(disk_ratio->median) : "-") + " ours/base");
    print_line("", "hib. RSS B", extra(r, "rss_bytes_per_hibernated_agent"), "", std::nullopt, "");
    print_line("", "creates/s", r.ops_per_s, "", std::nullopt, "");
  } else if (r.p99_us && r.ops_per_s) {
    print_line(r.scenario, "req/s", r.ops_per_s, r.baseline, r.baseline_ops_per_s,
               r.scenario == "http-half-rate" ? "" : ratio + " ours/base");
    print_line("", "p50 us", r.p50_us, "", r.baseline_p50_us, "");
    print_line("", "p99 us", r.p99_us, "", r.baseline_p99_us,
               r.scenario == "http-half-rate" ? ratio + " base/ours p99" : "");
    if (auto c = extra(r, "server_cpu_us_per_req"))
      print_line("", "srv CPU us/req", c, "", extra(r, "baseline_server_cpu_us_per_req"), "");
    if (auto c = extra(r, "server_switches_per_req"))
      print_line("", "srv cswch/req", c, "", extra(r, "baseline_server_switches_per_req"), "");
    if (auto c = extra(r, "trajectory_sign_us"))
      print_line("", "sign us", c, "", std::nullopt, "");
    if (auto c = extra(r, "server_p99_le_us"))
      print_line("", "srv p99 <= us", c, "", std::nullopt, "");
    if (auto c = extra(r, "server_within_2ms_pct"))
      print_line("", "srv <= 2 ms %", c, "", std::nullopt, "");
  } else if (r.p99_us) {
    print_line(r.scenario, "p50 us", r.p50_us, r.baseline, r.baseline_p50_us, "");
    print_line("", "p99 us", r.p99_us, "", r.baseline_p99_us, ratio + " base/ours p99");
    if (auto a = extra(r, "send_ack_p50_us"))
      print_line("", "ack p50 us", a, "", std::nullopt, "");
    if (auto a = extra(r, "send_ack_p99_us"))
      print_line("", "ack p99 us", a, "", std::nullopt, "");
  } else {
    print_line(r.scenario, "ticks/s", r.ops_per_s, r.baseline, r.baseline_ops_per_s,
               ratio + " ours/base");
    if (auto g = extra(r, "group_commits"))
      print_line("", "groups", g, "write(2) calls", extra(r, "baseline_write_syscalls"), "");
    if (auto w = extra(r, "wal_bytes_per_tick"))
      print_line("", "WAL B/tick", w, "", extra(r, "baseline_wal_bytes_per_tick"), "");
  }
  std::cout << std::flush;
}

// -- the Markdown report ------------------------------------------------------------

const std::string md_begin = "<!-- bench:begin -->";
const std::string md_end = "<!-- bench:end -->";

std::string read_first(const std::string& path, const std::string& prefix) {
  std::ifstream in{path};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0)
      return line.substr(prefix.size());
  return {};
}

std::string trim(std::string v) {
  auto b = v.find_first_not_of(" \t:");
  auto e = v.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string{} : v.substr(b, e - b + 1);
}

/// The first line `cmd` prints, or "" (popen).
std::string command_line_output(const std::string& cmd) {
  std::string out;
  if (auto* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    if (std::fgets(buf, sizeof buf, p))
      out = buf;
    pclose(p);
  }
  return trim(out);
}

std::string quote_shell(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_./=:,+") == std::string::npos)
    return a;
  std::string q = "'";
  for (char c : a)
    q += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return q + "'";
}

/// CPU model, cores, RAM, kernel and load average, from /proc.
std::string machine_line() {
  auto cpu = trim(read_first("/proc/cpuinfo", "model name"));
  auto mem = trim(read_first("/proc/meminfo", "MemTotal:"));
  double gib = mem.empty() ? 0 : std::strtod(mem.c_str(), nullptr) / (1024.0 * 1024.0);
  std::ostringstream o;
  o << (cpu.empty() ? "unknown CPU" : cpu) << ", " << std::thread::hardware_concurrency()
    << " cores, " << std::fixed << std::setprecision(1) << gib << " GiB RAM";
  utsname u{};
  if (uname(&u) == 0)
    o << ", Linux " << u.release;
  std::ifstream load{"/proc/loadavg"};
  std::string l1;
  if (load >> l1)
    o << "; load average " << l1 << " when the run started";
  return o.str();
}

std::string md_cell(const std::optional<tb::summary>& s, bool spread) {
  if (!s)
    return "";
  return spread && s->min != s->max ? fmt(s->median) + " [" + fmt(s->min) + "–" + fmt(s->max) + "]"
                                    : fmt(s->median);
}

/// A ratio with three significant digits (0.00031, 0.019, 1.06).
std::string md_ratio(const std::optional<double>& v) {
  if (!v)
    return {};
  std::ostringstream o;
  o << std::setprecision(3) << *v;
  return o.str();
}

std::string md_row(const tb::row& r) {
  std::ostringstream o;
  auto ratio = md_ratio(r.ratio);
  if (r.scenario == "density") {
    o << "| density | RSS bytes per resident agent | "
      << md_cell(extra(r, "bytes_per_resident_agent"), true) << " | bare CAF actor | "
      << md_cell(extra(r, "baseline_bytes_per_resident_agent"), false) << " | " << ratio
      << " (ours/base) |\n";
    auto disk_ratio = extra(r, "disk_ratio_vs_baseline");
    o << "| density | disk bytes per hibernated agent | "
      << md_cell(extra(r, "bytes_per_hibernated_agent"), true) << " | RocksDB key = id | "
      << md_cell(extra(r, "baseline_bytes_per_hibernated_agent"), false) << " | "
      << (disk_ratio ? md_ratio(disk_ratio->median) + " (ours/base)" : "") << " |\n";
    return o.str();
  }
  std::string metric, ours, base;
  auto join = [](std::string a, const std::string& b) { return a.empty() ? b : a + ", " + b; };
  if (r.ops_per_s) {
    metric = r.scenario.rfind("http", 0) == 0 ? "req/s" : "ticks/s";
    ours = md_cell(r.ops_per_s, true);
    base = md_cell(r.baseline_ops_per_s, false);
  }
  if (r.p99_us) {
    metric = join(metric, "p50 / p99 µs");
    ours = join(ours, md_cell(r.p50_us, false) + " / " + md_cell(r.p99_us, true));
    base = join(base, md_cell(r.baseline_p50_us, false) + " / " + md_cell(r.baseline_p99_us, false));
  }
  std::string kind = r.ratio_kind.substr(0, r.ratio_kind.find(" ("));
  o << "| " << r.scenario << " | " << metric << " | " << ours << " | " << r.baseline << " | "
    << base << " | " << ratio << (ratio.empty() ? "" : " (" + kind + ")") << " |\n";
  return o.str();
}

/// Replaces the bench section of `path` (or inserts it before the first
/// "## " heading, or appends it) with the figures of this run.
void write_markdown(const std::string& path, const std::vector<tb::row>& rows,
                    const tb::config& cfg, const std::string& command, const std::string& date,
                    const std::string& machine, double minutes) {
  std::ifstream in{path};
  if (!in)
    throw std::runtime_error("--markdown: cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  in.close();

  auto dir = std::filesystem::absolute(path).parent_path().string();
  auto commit = command_line_output("git -C " + quote_shell(dir) + " rev-parse --short HEAD 2>/dev/null");
  bool dirty = !command_line_output("git -C " + quote_shell(dir)
                                    + " status --porcelain --untracked-files=no 2>/dev/null")
                  .empty();
  std::ostringstream md;
  md << md_begin << "\n"
     << "## Latest full run\n\n"
     << "Written by `ticktock-bench --markdown` (this section is replaced at each run; the rest of "
        "the page is not).\n\n"
     << "- date: " << date << " (" << std::fixed << std::setprecision(1) << minutes
     << " min)\n"
     << "- commit: "
     << (commit.empty() ? std::string{"unknown (not a git tree)"}
                        : "`" + commit + "`" + (dirty ? " with uncommitted changes" : ""))
     << "\n"
     << "- machine: " << machine << "\n"
     << "- command: `" << command << "`\n\n"
     << "Median of " << cfg.runs << " run(s), [min–max] over the runs where they differ.\n\n"
     << "| scenario | metric | ticktock | baseline | baseline figure | ratio |\n"
     << "|---|---|---|---|---|---|\n";
  for (auto& r : rows)
    md << md_row(r);
  md << "\nWhat each baseline does and how each ratio is computed:\n\n";
  for (auto& r : rows) {
    md << "- `" << r.scenario << "` vs `" << r.baseline << "`: " << r.baseline_what
       << ". Ratio: " << r.ratio_kind << ".";
    if (auto w = r.notes.find("workload"); w != r.notes.end())
      md << " Workload: " << w->second << ".";
    auto within = extra(r, "server_within_2ms_pct");
    auto p99_le = extra(r, "server_p99_le_us");
    if (within && p99_le)
      md << " ticktockd's own histogram (request read → answer ready): " << md_cell(within, true)
         << " % answered within 2 ms, p99 at most " << md_cell(p99_le, true) << " µs.";
    md << "\n";
  }
  md << md_end << "\n";

  // The markers count only as whole lines (the page may quote them in prose).
  auto find_line = [&](const std::string& marker, std::size_t from) {
    for (auto p = text.find(marker, from); p != std::string::npos; p = text.find(marker, p + 1)) {
      auto end = p + marker.size();
      if ((p == 0 || text[p - 1] == '\n') && (end == text.size() || text[end] == '\n'))
        return p;
    }
    return std::string::npos;
  };
  auto b = find_line(md_begin, 0);
  auto e = b == std::string::npos ? std::string::npos : find_line(md_end, b);
  if (b != std::string::npos && e != std::string::npos) {
    auto after = e + md_end.size();
    if (after < text.size() && text[after] == '\n')
      ++after;
    text.replace(b, after - b, md.str());
  } else if (auto h = text.find("\n## "); h != std::string::npos) {
    text.insert(h + 1, md.str() + "\n");
  } else {
    text += "\n" + md.str();
  }
  auto tmp = path + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    out << text;
    if (!out)
      throw std::runtime_error("--markdown: cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

int main(int argc, char** argv) {
  tb::config cfg;
  bool json = false;
  std::vector<std::string> scenarios;
  const std::vector<std::string> known{"tick",    "durable-tick", "wake",
                                       "density", "alarm-skew",   "http"};
  bool all = false;
  bool soak = false;
  bool seconds_given = false;
  std::string markdown;
  std::string command;
  for (int i = 0; i < argc; ++i)
    command += (i ? " " : "") + quote_shell(argv[i]);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else if (a == "--all") {
      all = true;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--markdown") {
      auto v = value();
      if (!v || !*v)
        bad_usage("--markdown needs a file");
      markdown = v;
    } else if (a == "--alarms") {
      cfg.alarms = parse_count(a, value(), 1);
    } else if (a == "--soak-agents") {
      cfg.soak_agents = parse_count(a, value(), 10);
    } else if (a == "--alarm-spread") {
      auto v = value();
      char* end = nullptr;
      cfg.alarm_spread = v ? std::strtod(v, &end) : 0;
      if (!v || end == v || *end || !(cfg.alarm_spread >= 0.01 && cfg.alarm_spread <= 3600))
        bad_usage("--alarm-spread needs a number of seconds from 0.01 to 3600");
    } else if (a == "--verbose") {
      cfg.verbose = true;
    } else if (a == "--agents") {
      cfg.agents = parse_count(a, value(), 1);
    } else if (a == "--messages") {
      cfg.messages = parse_count(a, value(), 1);
    } else if (a == "--runs") {
      cfg.runs = parse_count(a, value(), 1);
    } else if (a == "--tick-agents") {
      cfg.tick_agents = parse_count(a, value(), 1);
    } else if (a == "--wake-agents") {
      cfg.wake_agents = parse_count(a, value(), 1);
    } else if (a == "--connections") {
      cfg.connections = parse_count(a, value(), 1);
    } else if (a == "--http-agents") {
      cfg.http_agents = parse_count(a, value(), 1);
    } else if (a == "--requests") {
      cfg.requests = parse_count(a, value(), 1);
    } else if (a == "--client-threads") {
      cfg.client_threads = parse_count(a, value(), 1);
    } else if (a == "--seconds") {
      auto v = value();
      char* end = nullptr;
      cfg.seconds = v ? std::strtod(v, &end) : 0;
      if (!v || end == v || *end || !(cfg.seconds >= 0.05 && cfg.seconds <= 86400))
        bad_usage("--seconds needs a number of seconds from 0.05 to 86400");
      seconds_given = true;
    } else if (a == "--ticktockd") {
      auto v = value();
      if (!v || !*v)
        bad_usage("--ticktockd needs a path");
      cfg.ticktockd = v;
    } else if (a == "--ticktockd-arg") {
      auto v = value();
      if (!v)
        bad_usage("--ticktockd-arg needs an argument");
      cfg.ticktockd_args.push_back(v);
    } else if (a == "--dir") {
      auto v = value();
      if (!v || !*v)
        bad_usage("--dir needs a directory");
      cfg.dir = v;
    } else if (a == "soak") {
      soak = true;
    } else if (!a.empty() && a[0] == '-') {
      bad_usage("unknown option " + a);
    } else if (std::find(known.begin(), known.end(), a) != known.end()) {
      if (std::find(scenarios.begin(), scenarios.end(), a) == scenarios.end())
        scenarios.push_back(a);
    } else {
      bad_usage("unknown scenario '" + a + "'");
    }
  }
  if (soak) {
    if (all || !scenarios.empty() || !markdown.empty())
      bad_usage("soak runs alone (no other scenario, --all or --markdown)");
    if (!seconds_given)
      cfg.seconds = 60;
    if (cfg.seconds < 1)
      bad_usage("soak needs --seconds of at least 1");
    try {
      return tb::run_soak(cfg, json);
    } catch (const std::exception& e) {
      std::cerr << "ticktock-bench: " << e.what() << "\n";
      return 1;
    }
  }
  if (all || scenarios.empty()) {
    // Every scenario; http only when there is a ticktockd to run.
    scenarios = known;
    if (!tb::ticktockd_available(cfg)) {
      std::cerr << "ticktock-bench: skipping http: no ticktockd found (pass --ticktockd PATH)\n";
      scenarios.erase(std::find(scenarios.begin(), scenarios.end(), "http"));
    }
  }
  auto started = std::chrono::system_clock::now();
  auto machine = machine_line();

  if (!json)
    print_header();
  std::vector<tb::row> printed;
  try {
    for (auto& s : scenarios) {
      std::vector<tb::row> rows;
      if (s == "tick")
        rows = tb::run_tick(cfg);
      else if (s == "durable-tick")
        rows = tb::run_durable_tick(cfg);
      else if (s == "wake")
        rows = tb::run_wake(cfg);
      else if (s == "http")
        rows = tb::run_http(cfg);
      else if (s == "alarm-skew")
        rows = tb::run_alarm_skew(cfg);
      else
        rows = tb::run_density(cfg);
      for (auto& r : rows) {
        if (json)
          std::cout << boost::json::serialize(to_json(r)) << std::endl;
        else
          print_table(r);
        printed.push_back(std::move(r));
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "ticktock-bench: " << e.what() << "\n";
    return 1;
  }
  if (!markdown.empty()) {
    auto t = std::chrono::system_clock::to_time_t(started);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &utc);
    auto minutes =
      std::chrono::duration<double>(std::chrono::system_clock::now() - started).count() / 60;
    try {
      write_markdown(markdown, printed, cfg, command, date, machine, minutes);
    } catch (const std::exception& e) {
      std::cerr << "ticktock-bench: " << e.what() << "\n";
      return 1;
    }
    std::cerr << "ticktock-bench: wrote the figures into " << markdown << "\n";
  }
  if (!json) {
    std::cout << "\nmedian of " << cfg.runs << " run(s), [min..max] over the runs\n";
    for (auto& r : printed) {
      std::cout << "\n" << r.scenario << ":\n";
      for (auto& [name, text] : r.notes)
        std::cout << "  " << name << ": " << text << "\n";
      std::cout << "  baseline " << r.baseline << ": " << r.baseline_what << "\n";
      std::cout << "  ratio: " << r.ratio_kind << "\n";
    }
  }
  return 0;
}
