// The crash-safety proof: a child process (crash_child.cpp) sends numbered
// messages to counter agents on a durability::sync node and is SIGKILLed at
// random points, then restarted on the same data directory. The parent keeps
// the client's view: what was sent (SEND) and what was acknowledged (ACK).
// After every kill it re-sends what was sent but not acknowledged, with the
// same idempotency keys, as a client retrying would; it also re-sends a few
// acknowledged numbers, which must come back as duplicates. At the end every
// sent number must have been applied exactly once, every forwarded copy must
// have reached its sink exactly once, and every trajectory chain must verify.
//
// The kill schedule comes from a seeded generator. The seed is printed; set
// CRASH_SEED to repeat a schedule (timing still varies) and CRASH_CYCLES to
// change the number of killed cycles (default 30). Every wait is bounded: the
// cycles stop after 50 s, and the whole test stays under 120 s.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../temp_dir.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

constexpr int counter_agents = 8;  // as in crash_child.cpp

// -- running the child -------------------------------------------------------

/// When to SIGKILL the child; whichever comes first. Neither: let it finish.
struct kill_plan {
  std::optional<ms> after;                 ///< since the spawn
  std::optional<std::size_t> after_acks;   ///< once this many ACK lines arrived
};

struct child_run {
  std::vector<std::string> lines;  ///< complete lines, in order
  bool killed = false;             ///< SIGKILLed according to the plan
  bool timed_out = false;          ///< SIGKILLed because it missed its deadline
  int exit_code = -1;              ///< when it exited by itself
  int signal = 0;                  ///< when a signal ended it
  ms lifetime{0};
};

/// Runs crash_child with `args`, collecting its stdout lines. Every wait is
/// bounded: the child is killed at `deadline` at the latest, and reading
/// stops 10 s after the kill even if the pipe never closes.
child_run run_child(const std::vector<std::string>& args, const kill_plan& plan, ms deadline) {
  child_run out;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    FAIL("pipe2 failed: " << std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);  // dup2 clears O_CLOEXEC
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<std::string> argv_store{CRASH_CHILD_PATH};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_store)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  auto started = steady::now();
  int rc = ::posix_spawn(&pid, CRASH_CHILD_PATH, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    FAIL("cannot start " << CRASH_CHILD_PATH << ": " << std::strerror(rc));
  }

  std::string partial;
  std::size_t acks = 0;
  bool sent_kill = false;
  steady::time_point drain_until{};
  auto kill_now = [&](bool planned) {
    if (sent_kill)
      return;
    ::kill(pid, SIGKILL);
    sent_kill = true;
    out.killed = planned;
    out.timed_out = !planned;
    drain_until = steady::now() + 10s;
  };
  char buf[8192];
  for (;;) {
    auto now = steady::now();
    if (!sent_kill) {
      if (plan.after && now >= started + *plan.after)
        kill_now(true);
      else if (now >= started + deadline)
        kill_now(false);
    }
    steady::time_point wake = sent_kill ? drain_until : started + deadline;
    if (!sent_kill && plan.after)
      wake = std::min(wake, started + *plan.after);
    if (sent_kill && now >= drain_until)
      break;
    auto wait = std::chrono::duration_cast<ms>(wake - now).count() + 1;
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(wait, 0)));
    if (n < 0 && errno != EINTR)
      break;
    if (n <= 0)
      continue;
    auto got = ::read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;  // EOF: the child is gone (or closed stdout)
    partial.append(buf, static_cast<std::size_t>(got));
    std::size_t pos = 0;
    for (auto nl = partial.find('\n'); nl != std::string::npos; nl = partial.find('\n', pos)) {
      out.lines.push_back(partial.substr(pos, nl - pos));
      pos = nl + 1;
      // Lines that arrive after the kill were written before it: keep them.
      if (!sent_kill && out.lines.back().rfind("ACK ", 0) == 0 && plan.after_acks
          && ++acks >= *plan.after_acks)
        kill_now(true);
    }
    partial.erase(0, pos);
  }
  ::close(fds[0]);
  int status = 0;
  pid_t reaped = 0;
  if (!sent_kill) {
    // EOF without a kill: the child is exiting; give it a bounded moment.
    for (int i = 0; i < 1000 && (reaped = ::waitpid(pid, &status, WNOHANG)) == 0; ++i)
      ::usleep(10'000);
    if (reaped == 0)
      kill_now(false);
  }
  if (reaped == 0)
    ::waitpid(pid, &status, 0);
  out.lifetime = std::chrono::duration_cast<ms>(steady::now() - started);
  if (WIFEXITED(status))
    out.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    out.signal = WTERMSIG(status);
  return out;
}

// -- parsing ------------------------------------------------------------------

std::optional<std::uint64_t> number(std::string_view s) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty())
    return std::nullopt;
  return n;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t pos = 0;
  for (;;) {
    auto next = s.find(sep, pos);
    parts.push_back(s.substr(pos, next == std::string_view::npos ? next : next - pos));
    if (next == std::string_view::npos)
      return parts;
    pos = next + 1;
  }
}

/// One AGENT line of `crash_child verify`.
struct agent_report {
  std::string id;
  std::vector<std::uint64_t> applied;
  bool applied_ok = true;  ///< the applied list parsed
  std::string chain;
  std::string depth;
  std::string dead;
  std::string errored;
};

std::optional<agent_report> parse_agent(std::string_view line) {
  auto words = split(line, ' ');
  if (words.size() < 2 || words[0] != "AGENT")
    return std::nullopt;
  agent_report r;
  r.id = std::string{words[1]};
  for (std::size_t i = 2; i < words.size(); ++i) {
    auto eq = words[i].find('=');
    if (eq == std::string_view::npos)
      continue;
    auto key = words[i].substr(0, eq);
    auto value = words[i].substr(eq + 1);
    if (key == "applied") {
      if (!value.empty())
        for (auto part : split(value, ',')) {
          if (auto n = number(part))
            r.applied.push_back(*n);
          else
            r.applied_ok = false;
        }
    } else if (key == "chain") {
      r.chain = std::string{value};
    } else if (key == "depth") {
      r.depth = std::string{value};
    } else if (key == "dead") {
      r.dead = std::string{value};
    } else if (key == "errored") {
      r.errored = std::string{value};
    }
  }
  return r;
}

bool has_line(const child_run& r, std::string_view line) {
  return std::find(r.lines.begin(), r.lines.end(), line) != r.lines.end();
}

std::string describe(const child_run& r) {
  std::ostringstream s;
  s << r.lines.size() << " lines in " << r.lifetime.count() << " ms, ";
  if (r.killed)
    s << "killed as planned";
  else if (r.timed_out)
    s << "KILLED AT ITS DEADLINE";
  else if (r.signal)
    s << "died of signal " << r.signal;
  else
    s << "exited with " << r.exit_code;
  return s.str();
}

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  if (auto* v = std::getenv(name))
    if (auto n = number(v))
      return *n;
  return fallback;
}

}  // namespace

TEST_CASE("every acknowledged trigger survives SIGKILL exactly once") {
  const std::uint64_t seed = env_or("CRASH_SEED", std::random_device{}());
  const std::uint64_t kills_wanted = env_or("CRASH_CYCLES", 30);
  const std::uint64_t max_cycles = 2 * kills_wanted;  // cycles may end before their kill
  const auto cycle_budget = 50s;
  const std::uint64_t per_cycle = 6000;  // more than a child sends before its kill
  // Sends wanted over the whole test. A kill timed before the child is up
  // (its start takes a few hundred ms in a sanitizer build) sends nothing, so
  // the cycles go on past kills_wanted until this many were sent.
  const std::size_t min_sent = 1000;
  std::fprintf(stderr, "crash test: seed %llu, %llu killed cycles (CRASH_SEED=%llu to repeat)\n",
               static_cast<unsigned long long>(seed), static_cast<unsigned long long>(kills_wanted),
               static_cast<unsigned long long>(seed));
  INFO("CRASH_SEED=" << seed);
  std::mt19937_64 rng{seed};
  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>{lo, hi}(rng);
  };

  ticktock::test::temp_dir tmp;
  const auto data = (tmp.path() / "data").string();
  const auto resend_file = (tmp.path() / "resend.txt").string();
  const auto test_start = steady::now();

  // The client's view across all cycles.
  std::set<std::uint64_t> sent;
  std::set<std::uint64_t> acked;
  std::vector<std::uint64_t> acked_order;  // for sampling numbers to re-send
  std::vector<std::string> problems;
  auto problem = [&](std::string what) { problems.push_back(std::move(what)); };

  std::size_t killed_cycles = 0;
  std::size_t kills_with_unacked = 0;  // kills that left sent-but-unacked numbers
  std::size_t resent_unacked = 0;      // re-sends of unacked numbers...
  std::size_t resent_found = 0;        // ...that the node had committed (duplicate)
  std::size_t resent_acked = 0;        // deliberate re-sends of acked numbers

  // Records SEND/ACK/FAIL lines; `must_dup` are acked numbers re-sent on
  // purpose, whose acknowledgement must say duplicate.
  auto absorb = [&](const child_run& r, const std::set<std::uint64_t>& must_dup,
                    const std::set<std::uint64_t>& unacked_before, const std::string& what) {
    for (auto& line : r.lines) {
      auto words = split(line, ' ');
      if (words[0] == "SEND" && words.size() == 2) {
        if (auto n = number(words[1]))
          sent.insert(*n);
        else
          problem(what + ": bad line '" + line + "'");
      } else if (words[0] == "ACK" && words.size() == 3) {
        auto n = number(words[1]);
        if (!n || !sent.count(*n)) {
          problem(what + ": ACK of a number never sent: '" + line + "'");
          continue;
        }
        bool dup = words[2] == "1";
        if (must_dup.count(*n) && !dup)
          problem(what + ": acknowledged number " + std::to_string(*n)
                  + " was re-sent with its idempotency key and accepted as new");
        if (unacked_before.count(*n)) {
          ++resent_unacked;
          if (dup)
            ++resent_found;
        }
        if (acked.insert(*n).second)
          acked_order.push_back(*n);
      } else if (words[0] == "FAIL") {
        problem(what + ": send failed: '" + line + "'");
      }
    }
  };

  auto write_resend = [&](const std::vector<std::uint64_t>& numbers) {
    std::ofstream f{resend_file, std::ios::trunc};
    for (auto n : numbers)
      f << n << '\n';
    f.close();
    REQUIRE(f);
  };

  std::uint64_t next_number = 1;
  std::uint64_t cycle = 0;
  for (; cycle < max_cycles && (killed_cycles < kills_wanted || sent.size() <= min_sent)
         && steady::now() - test_start < cycle_budget;
       ++cycle) {
    // Re-send what the last child sent but never acknowledged, plus a few
    // numbers that were acknowledged: those must be recognised as duplicates.
    std::set<std::uint64_t> unacked;
    std::set_difference(sent.begin(), sent.end(), acked.begin(), acked.end(),
                        std::inserter(unacked, unacked.end()));
    std::vector<std::uint64_t> resend(unacked.begin(), unacked.end());
    std::set<std::uint64_t> must_dup;
    for (int i = 0; i < 8 && !acked_order.empty(); ++i)
      must_dup.insert(acked_order[uniform(0, acked_order.size() - 1)]);
    resend.insert(resend.end(), must_dup.begin(), must_dup.end());
    resent_acked += must_dup.size();
    std::shuffle(resend.begin(), resend.end(), rng);
    write_resend(resend);

    kill_plan plan;
    std::string plan_text;
    if (uniform(0, 2) == 0) {
      plan.after_acks = uniform(1, 400);
      plan.after = ms{3000};  // in case the ACKs never come
      plan_text = "after " + std::to_string(*plan.after_acks) + " ACKs";
    } else {
      plan.after = ms{uniform(20, 400)};
      plan_text = "after " + std::to_string(plan.after->count()) + " ms";
    }
    auto start = next_number;
    next_number += per_cycle;
    auto r = run_child({"run", data, std::to_string(start), std::to_string(per_cycle), resend_file},
                       plan, 10s);
    auto what = "cycle " + std::to_string(cycle) + " (kill " + plan_text + ")";
    absorb(r, must_dup, unacked, what);
    std::size_t left_unacked = 0;
    for (auto n : sent)
      left_unacked += !acked.count(n);
    std::fprintf(stderr, "%s: %s, resent %zu, now %zu sent / %zu acked\n", what.c_str(),
                 describe(r).c_str(), resend.size(), sent.size(), acked.size());
    if (r.killed) {
      ++killed_cycles;
      if (left_unacked > 0)
        ++kills_with_unacked;
    } else if (r.timed_out || r.exit_code != 0) {
      problem(what + ": " + describe(r));
    } else if (!has_line(r, "IDLE 1")) {
      problem(what + ": the child finished but its node never became idle");
    }
  }

  // Let one child run to the end: it re-sends everything still unacknowledged.
  std::set<std::uint64_t> unacked;
  std::set_difference(sent.begin(), sent.end(), acked.begin(), acked.end(),
                      std::inserter(unacked, unacked.end()));
  write_resend({unacked.begin(), unacked.end()});
  auto final_run = run_child({"run", data, std::to_string(next_number), "0", resend_file},
                             kill_plan{}, 25s);
  std::fprintf(stderr, "final run: %s, resent %zu\n", describe(final_run).c_str(), unacked.size());
  absorb(final_run, {}, unacked, "final run");
  if (final_run.exit_code != 0 || final_run.timed_out)
    problem("final run: " + describe(final_run));
  if (!has_line(final_run, "IDLE 1"))
    problem("final run: the node never became idle");
  for (auto n : sent)
    if (!acked.count(n))
      problem("number " + std::to_string(n) + " was sent but never acknowledged");

  auto verify = run_child({"verify", data}, kill_plan{}, 25s);
  std::fprintf(stderr, "verify: %s\n", describe(verify).c_str());
  if (verify.exit_code != 0 || verify.timed_out)
    problem("verify: " + describe(verify));
  if (!has_line(verify, "IDLE 1"))
    problem("verify: the node never became idle");
  if (!has_line(verify, "DONE"))
    problem("verify: no DONE line");

  std::map<std::string, agent_report> agents;
  for (auto& line : verify.lines)
    if (auto a = parse_agent(line))
      agents[a->id] = std::move(*a);
  std::vector<std::string> expected_ids;
  for (int i = 0; i < counter_agents; ++i) {
    expected_ids.push_back("c" + std::to_string(i));
    expected_ids.push_back("s" + std::to_string(i));
  }

  std::map<std::uint64_t, int> applied;       // number -> times applied by a counter
  std::map<std::uint64_t, int> sink_applied;  // number -> times received by a sink
  for (auto& id : expected_ids) {
    auto it = agents.find(id);
    if (it == agents.end()) {
      problem("verify: no agent " + id);
      continue;
    }
    auto& a = it->second;
    if (!a.applied_ok)
      problem(id + ": applied list does not parse");
    if (a.chain != "ok")
      problem(id + ": trajectory chain " + a.chain);
    if (a.depth != "0")
      problem(id + ": queue depth " + a.depth + " after idle");
    if (a.dead != "0")
      problem(id + ": " + a.dead + " deadletter entries");
    if (a.errored != "0")
      problem(id + ": errored");
    const bool sink = id[0] == 's';
    for (auto n : a.applied) {
      ++(sink ? sink_applied : applied)[n];
      if (id.substr(1) != std::to_string(n % counter_agents))
        problem(id + " applied " + std::to_string(n) + ", which was meant for another agent");
    }
  }

  for (auto [n, times] : applied) {
    if (times != 1)
      problem("number " + std::to_string(n) + " was applied " + std::to_string(times) + " times");
    if (!sent.count(n))
      problem("number " + std::to_string(n) + " was applied but never sent");
  }
  for (auto n : sent)
    if (!applied.count(n))
      problem("number " + std::to_string(n) + " was sent"
              + (acked.count(n) ? " and acknowledged" : "") + " but never applied");
  for (auto [n, times] : sink_applied) {
    if (times != 1)
      problem("a sink received " + std::to_string(n) + " " + std::to_string(times) + " times");
    if (!applied.count(n))
      problem("a sink received " + std::to_string(n) + ", which no counter applied");
  }
  for (auto [n, times] : applied)
    if (!sink_applied.count(n))
      problem("the forward of " + std::to_string(n) + " never reached its sink");

  auto elapsed = std::chrono::duration_cast<ms>(steady::now() - test_start);
  std::fprintf(stderr,
               "crash test: %zu of %llu cycles killed (%zu left unacknowledged sends); "
               "%zu sent, %zu re-sent after a kill (%zu had been committed), %zu acknowledged "
               "ones re-sent on purpose; %zu problems; %lld ms\n",
               killed_cycles, static_cast<unsigned long long>(cycle), kills_with_unacked,
               sent.size(), resent_unacked, resent_found, resent_acked, problems.size(),
               static_cast<long long>(elapsed.count()));

  for (std::size_t i = 0; i < problems.size() && i < 30; ++i)
    UNSCOPED_INFO(problems[i]);
  CHECK(problems.empty());
  CHECK(killed_cycles >= kills_wanted);
  CHECK(sent.size() > min_sent);
  CHECK(elapsed < 120s);
}
